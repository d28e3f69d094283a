/*
 * The engine: every claimed job is a state machine on the loop thread.
 * Forward, it starts each step whose needs have succeeded (independent steps
 * run at once), retries failures under the step's policy, and applies the
 * step's validation class when a step fails for good. Rollback undoes, in
 * reverse dependency order, every step that succeeded or may have partly
 * run. Transitions go to the writer (group commit); only the job's last row
 * is waited for, and the id is acked after it commits. See worker/README.md.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "limits.h"
#include "tq/log.h"
#include "tq/util.h"

struct wk_metrics wk_metrics;

/* ------------------------------------------------------------ job life */

static void handle_closed(uv_handle_t *h)
{
    struct stepstate *ss = h->data;
    struct wk_job *j = ss->job;
    if (--j->open_handles > 0)
        return;
    struct wk_engine *e = j->eng;
    json_decref(j->cl.steps);
    free(j->ss);
    free(j);
    e->closing--;
    atomic_fetch_add(e->free_slots, 1);
    atomic_fetch_sub(&wk_metrics.in_flight, 1);
    if (e->on_slot_free)
        e->on_slot_free(e->arg);
    /* Drained once no job is left and none is still closing: the callback
       may free the engine, which a later handle_closed would still read. */
    if (e->draining && e->njobs == 0 && e->closing == 0 && e->drained_cb) {
        void (*cb)(void *) = e->drained_cb;
        e->drained_cb = NULL;
        if (e->grace_armed)
            uv_timer_stop(&e->grace);
        cb(e->drained_arg);
    }
}

static void job_free(struct wk_job *j)
{
    struct wk_engine *e = j->eng;
    wk_limits_forget(j);   /* fleet-wide permits it waited for (worker/limits.c) */
    if (j->prev)
        j->prev->next = j->next;
    else
        e->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    e->njobs--;
    e->closing++;
    j->open_handles = (int)(2 * j->pl->nsteps);
    for (size_t i = 0; i < j->pl->nsteps; i++) {
        uv_close((uv_handle_t *)&j->ss[i].retry_timer, handle_closed);
        uv_close((uv_handle_t *)&j->ss[i].timeout_timer, handle_closed);
    }
}

static bool needs_met(const struct wk_job *j, size_t i)
{
    const struct tq_pipeline_step *d = &j->pl->steps[i];
    for (size_t k = 0; k < d->nneeds; k++) {
        enum st s = j->ss[d->needs[k]].st;
        if (s != S_SUCCEEDED && s != S_WARNED && s != S_SKIPPED)
            return false;
    }
    return true;
}

/* Every step depending on i is settled for rollback (undone or never ran). */
static bool dependents_undone(const struct wk_job *j, size_t i)
{
    for (size_t k = 0; k < j->pl->nsteps; k++) {
        const struct tq_pipeline_step *d = &j->pl->steps[k];
        for (size_t n = 0; n < d->nneeds; n++) {
            if (d->needs[n] != i)
                continue;
            enum st s = j->ss[k].st;
            if (s != S_COMPENSATED && s != S_NOTHING && s != S_SKIPPED)
                return false;
        }
    }
    return true;
}

static void begin_rollback(struct wk_job *j)
{
    j->rollback = true;
    atomic_fetch_add(&wk_metrics.rollbacks, 1);
    for (size_t i = 0; i < j->pl->nsteps; i++) {
        enum st s = j->ss[i].st;
        /* succeeded, failed (may have partly run), warned: undo; never started: nothing */
        if (s == S_SUCCEEDED || s == S_FAILED || s == S_WARNED)
            j->ss[i].st = S_UNDO_PENDING;
        else if (s == S_PENDING || s == S_WAIT_RETRY)
            j->ss[i].st = j->ss[i].attempts > 0 ? S_UNDO_PENDING : S_NOTHING;
    }
    tq_warn("job %" PRId64 " (%s): rolling back: %s", j->cl.c.job_id, j->cl.c.tenant_id,
            j->cancel ? "cancelled by an operator" : j->reason);
    wk_job_emit_job(j, "running", "rolling_back", "rollback_started",
             j->cancel && !j->reason[0] ? "cancelled by an operator" : j->reason, false, WK_NONE, 0);
}

/* Tell people about outcomes that need them (failures, blocks, warnings). */
void wk_job_notify(struct wk_job *j, const char *event, const char *text)
{
    wk_notify(j->eng->set.curl, &j->cl.c, event, text, getenv("TQ_NOTIFY_WEBHOOK_URL"),
              getenv("TQ_SMTP_URL"), NULL, NULL);
}

static void end_job(struct wk_job *j, const char *jstatus, const char *tstatus, const char *event,
                    const char *reason, enum wk_redis_act act, uint64_t due_ms)
{
    j->ended = true;
    if (tstatus && (strcmp(tstatus, "failed") == 0 || strcmp(tstatus, "rollback_failed") == 0 ||
                    strcmp(tstatus, "blocked") == 0))
        wk_job_notify(j, tstatus, reason);
    if (strcmp(j->cl.c.kind, "provision") == 0 && tstatus) {
        if (strcmp(tstatus, "active") == 0)
            wk_metrics_provisioned(j->cl.c.tier, j->cl.c.region,
                                   (double)(tq_mono_ms() - j->started_mono_ms) / 1000.0);
        else if (strcmp(tstatus, "failed") == 0 || strcmp(tstatus, "rollback_failed") == 0 ||
                 strcmp(tstatus, "blocked") == 0)
            wk_metrics_failed(j->cl.c.tier, j->failed_step);
    }
    wk_job_emit_job(j, jstatus, tstatus, event, reason, true, act, due_ms);
    if (strcmp(jstatus, "succeeded") == 0)
        atomic_fetch_add(&wk_metrics.jobs_succeeded, 1);
    else if (act == WK_RELEASE || act == WK_PARK)
        atomic_fetch_add(&wk_metrics.jobs_released, 1);
    else
        atomic_fetch_add(&wk_metrics.jobs_failed, 1);
    tq_info("job %" PRId64 " (%s): %s%s%s", j->cl.c.job_id, j->cl.c.tenant_id,
            tstatus ? tstatus : jstatus, reason ? ": " : "", reason ? reason : "");
}

static void release(struct wk_job *j, uint64_t due_ms)
{
    const char *tstatus = j->deprovision ? "deprovisioning"
                          : j->rollback  ? "rolling_back"
                                         : "queued";
    end_job(j, "queued", tstatus, due_ms ? "retry_scheduled" : "handed_back", NULL,
            due_ms ? WK_PARK : WK_RELEASE, due_ms);
}

static void advance_once(struct wk_job *j)
{
    size_t n = j->pl->nsteps;
    if (j->ended)
        return;
    if (j->stale) {
        if (j->running == 0) {
            j->ended = true;
            wk_writer_drop(j->eng->w, j, j->id);
        }
        return;
    }
    if (!j->rollback) {
        if (!j->stopping)
            for (size_t i = 0; i < n; i++)
                if (j->ss[i].st == S_PENDING && needs_met(j, i)) {
                    if (wk_step_enabled(j, i))
                        wk_step_start(j, i, false);
                    else
                        wk_step_skip(j, i);
                }
        if (j->running > 0 || j->ended)
            return;
        bool waiting = false, all_done = true;
        for (size_t i = 0; i < n; i++) {
            enum st s = j->ss[i].st;
            waiting |= s == S_WAIT_RETRY;
            all_done &= s == S_SUCCEEDED || s == S_WARNED || s == S_SKIPPED;
        }
        if (j->need_rollback || j->cancel) {
            for (size_t i = 0; i < n; i++)   /* pending retries will not happen */
                uv_timer_stop(&j->ss[i].retry_timer);
            begin_rollback(j);
            advance_once(j);
            return;
        }
        if (j->draining) {
            for (size_t i = 0; i < n; i++)
                uv_timer_stop(&j->ss[i].retry_timer);
            release(j, 0);
            return;
        }
        if (waiting)
            return;
        if (all_done && j->revalidate) {
            if (j->drifted) {
                wk_job_notify(j, "drift_detected", j->reason);
                end_job(j, "succeeded", NULL, "drift_detected", j->reason, WK_ACK, 0);
            } else {
                end_job(j, "succeeded", NULL, "revalidated", NULL, WK_ACK, 0);
            }
            return;
        }
        if (all_done) {
            if (j->deprovision)
                return;
            end_job(j, "succeeded", "active", j->warned ? "active_with_warnings" : "active", NULL,
                    WK_ACK, 0);
            return;
        }
        if (j->blocked) {
            end_job(j, "blocked", "blocked", "blocked", j->reason, WK_ACK, 0);
            return;
        }
        if (j->park_due_ms) {
            release(j, j->park_due_ms);
            return;
        }
        /* Steps left pending whose needs can never be met: a bug in the DAG logic. */
        TQ_ASSERT(!"forward phase stuck");
        return;
    }

    /* rollback */
    if (!j->comp_failed && !j->draining)
        for (size_t k = n; k-- > 0;) {
            size_t i = j->pl->order[k];
            if (j->ss[i].st == S_UNDO_PENDING && dependents_undone(j, i)) {
                if (wk_step_enabled(j, i))
                    wk_step_start(j, i, true);
                else
                    wk_step_skip(j, i);   /* e.g. no S3 endpoint: there is no bucket to remove */
            }
        }
    if (j->running > 0 || j->ended)
        return;
    bool waiting = false, left = false;
    for (size_t i = 0; i < n; i++) {
        waiting |= j->ss[i].st == S_UNDO_WAIT;
        left |= j->ss[i].st == S_UNDO_PENDING;
    }
    if (j->comp_failed) {
        for (size_t i = 0; i < n; i++)
            uv_timer_stop(&j->ss[i].retry_timer);
        end_job(j, "rollback_failed", "rollback_failed", "rollback_failed", j->reason, WK_ACK, 0);
        return;
    }
    if (j->draining && (waiting || left)) {
        for (size_t i = 0; i < n; i++)
            uv_timer_stop(&j->ss[i].retry_timer);
        release(j, 0);
        return;
    }
    if (waiting || left)
        return;
    if (j->deprovision)
        end_job(j, "succeeded", "deprovisioned", "deprovisioned", NULL, WK_ACK, 0);
    else if (j->cancel)
        end_job(j, "cancelled", "cancelled", "cancelled", "cancelled by an operator", WK_ACK, 0);
    else
        end_job(j, "failed", "failed", "failed", j->reason, WK_ACK, 0);
}

/* Re-entrant: a step that fails to start calls back into advance. */
void wk_job_advance(struct wk_job *j)
{
    if (j->in_advance) {
        j->again = true;
        return;
    }
    j->in_advance = 1;
    do {
        j->again = false;
        advance_once(j);
    } while (j->again);
    j->in_advance = 0;
}

static enum st initial(const char *status, bool rollback)
{
    if (!status)
        return rollback ? S_NOTHING : S_PENDING;
    if (strcmp(status, "skipped") == 0)
        return S_SKIPPED;
    if (!rollback)
        return strcmp(status, "succeeded") == 0 ? S_SUCCEEDED : S_PENDING;
    if (strcmp(status, "compensated") == 0)
        return S_COMPENSATED;
    if (strcmp(status, "pending") == 0)
        return S_NOTHING;
    return S_UNDO_PENDING; /* succeeded, failed, running, compensation_failed */
}

void wk_engine_run(struct wk_engine *e, struct wk_claimed *c)
{
    struct wk_job *j = tq_xcalloc(1, sizeof(*j));
    j->eng = e;
    j->cl = c->cl;
    j->pl = c->pl;
    memcpy(j->id, c->id, sizeof(j->id));
    free(c);
    j->deprovision = strcmp(j->cl.c.kind, "deprovision") == 0;
    j->revalidate = strcmp(j->cl.c.kind, "revalidate") == 0;
    j->rollback = j->cl.rollback || j->deprovision;
    j->cancel = j->cl.cancel_requested;
    j->ss = tq_xcalloc(j->pl->nsteps, sizeof(*j->ss));
    j->started_mono_ms = tq_mono_ms();
    for (size_t i = 0; i < j->pl->nsteps; i++) {
        struct stepstate *ss = &j->ss[i];
        const json_t *rec = json_object_get(j->cl.steps, j->pl->steps[i].name);
        const char *was = json_string_value(json_object_get(rec, "status"));
        /* attempts count across deliveries: a retry policy is not reset by a crash */
        ss->attempts = (int)json_integer_value(json_object_get(rec, "attempts"));
        ss->undo_attempts = (int)json_integer_value(json_object_get(rec, "undo_attempts"));
        /* a deprovision job undoes everything its own rows do not show undone */
        if (j->revalidate)
            /* validation steps are those with a class; the rest made resources */
            ss->st = j->pl->steps[i].cls == TQ_CLASS_NONE ? S_SKIPPED
                     : was && strcmp(was, "succeeded") == 0          ? S_SUCCEEDED
                                                                     : S_PENDING;
        else
            ss->st = j->deprovision ? (was && strcmp(was, "compensated") == 0 ? S_COMPENSATED
                                                                               : S_UNDO_PENDING)
                                    : initial(was, j->rollback);
        ss->job = j;
        ss->index = i;
        uv_timer_init(e->loop, &ss->retry_timer);
        uv_timer_init(e->loop, &ss->timeout_timer);
        ss->retry_timer.data = ss->timeout_timer.data = ss;
    }
    j->next = e->jobs;
    if (e->jobs)
        e->jobs->prev = j;
    e->jobs = j;
    e->njobs++;
    atomic_fetch_add(&wk_metrics.in_flight, 1);
    /* A first delivery's claim is routine (its outcome line follows); a
       redelivery or a resumed rollback is what an operator looks for. */
    tq_log(j->cl.c.attempt > 1 || j->rollback ? TQ_LOG_INFO : TQ_LOG_DEBUG,
           "job %" PRId64 " (%s): claimed (%s%s, epoch %" PRId64 ", delivery %d)",
           j->cl.c.job_id, j->cl.c.tenant_id, j->cl.c.kind, j->rollback ? ", rollback" : "",
           j->cl.c.epoch, j->cl.c.attempt);
    /* The tenant shows the job from its first recorded transition on: this
       row travels with the first step rows, and the writer folds it into the
       job's next row when both wait in the same flush (the claim itself does
       not write the tenant). */
    if (!j->revalidate)
        wk_job_emit_job(j, "running", j->deprovision ? "deprovisioning"
                                      : j->rollback  ? "rolling_back"
                                                     : "provisioning",
                        NULL, NULL, false, WK_NONE, 0);
    if (j->cancel && !j->rollback) {
        j->stopping = true;
        snprintf(j->reason, sizeof(j->reason), "cancelled by an operator");
    }
    if (e->draining) {
        j->draining = j->stopping = true;
    }
    wk_job_advance(j);
}

void wk_engine_report(struct wk_engine *e, struct wk_report *r)
{
    struct wk_job *j = r->job;
    switch (r->what) {
    case WK_R_STALE:
        if (!j->stale) {
            j->stale = true;
            atomic_fetch_add(&wk_metrics.jobs_stale, 1);
            tq_warn("job %" PRId64 " (%s): lease lost to another worker; abandoning it without "
                    "further writes", j->cl.c.job_id, j->cl.c.tenant_id);
            for (size_t i = 0; i < j->pl->nsteps; i++) {
                uv_timer_stop(&j->ss[i].retry_timer);
                struct wk_step *s = j->ss[i].cur;
                const struct wk_step_ops *ops = s ? wk_step_lookup(s->def->kind) : NULL;
                if (s && !s->cancelled && ops && ops->cancel) {
                    s->cancelled = true;
                    ops->cancel(s);
                }
            }
            if (!j->ended)
                wk_job_advance(j);
        }
        break;
    case WK_R_CANCEL:
        wk_engine_cancel(e, j->cl.c.job_id);
        break;
    case WK_R_ENDED:
        job_free(j);
        break;
    }
    free(r);
}

void wk_engine_cancel(struct wk_engine *e, int64_t job_id)
{
    for (struct wk_job *j = e->jobs; j; j = j->next) {
        if (j->cl.c.job_id != job_id || j->cancel || j->ended || j->deprovision)
            continue;
        j->cancel = true;
        j->stopping = true;
        tq_info("job %" PRId64 " (%s): cancel requested; stopping at the next step boundary",
                j->cl.c.job_id, j->cl.c.tenant_id);
        wk_job_advance(j);
    }
}

static void on_grace(uv_timer_t *t)
{
    struct wk_engine *e = t->data;
    tq_warn("drain grace period over: cancelling %d job(s)' running steps", e->njobs);
    for (struct wk_job *j = e->jobs; j; j = j->next)
        for (size_t i = 0; i < j->pl->nsteps; i++) {
            struct wk_step *s = j->ss[i].cur;
            const struct wk_step_ops *ops = s ? wk_step_lookup(s->def->kind) : NULL;
            if (s && !s->cancelled && ops && ops->cancel) {
                s->cancelled = true;
                ops->cancel(s);
            }
        }
}

void wk_engine_drain(struct wk_engine *e, void (*cb)(void *), void *arg)
{
    e->draining = true;
    e->drained_cb = cb;
    e->drained_arg = arg;
    if (e->njobs == 0 && e->closing == 0) {
        e->drained_cb = NULL;
        cb(arg);
        return;
    }
    uv_timer_start(&e->grace, on_grace, e->set.grace_ms, 0);
    e->grace_armed = true;
    struct wk_job *next;
    for (struct wk_job *j = e->jobs; j; j = next) {
        next = j->next;
        j->draining = j->stopping = true;
        wk_job_advance(j);
    }
}

struct wk_engine *wk_engine_new(uv_loop_t *loop, const struct wk_settings *set,
                                struct wk_writer *w, atomic_int *free_slots,
                                void (*on_slot_free)(void *), void *arg)
{
    struct wk_engine *e = tq_xcalloc(1, sizeof(*e));
    e->loop = loop;
    e->set = *set;
    e->w = w;
    e->free_slots = free_slots;
    e->on_slot_free = on_slot_free;
    e->arg = arg;
    uv_timer_init(loop, &e->grace);
    e->grace.data = e;
    return e;
}

size_t wk_engine_job_ids(const struct wk_engine *e, int64_t *out, size_t cap)
{
    size_t n = 0;
    for (const struct wk_job *j = e->jobs; j && n < cap; j = j->next)
        if (!j->stale)
            out[n++] = j->cl.c.job_id;
    return n;
}

int wk_engine_jobs(const struct wk_engine *e)
{
    return e->njobs;
}

static void engine_closed(uv_handle_t *h)
{
    free(h->data);
}

void wk_engine_free(struct wk_engine *e)
{
    if (e)
        uv_close((uv_handle_t *)&e->grace, engine_closed);
}
