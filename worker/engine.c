/*
 * The engine: every claimed job is a state machine on the loop thread. Its
 * phase and the moves between phases are jobsm.c's table; this file carries
 * them out — starts the steps a phase starts (independent steps at once; in
 * a rollback, in reverse dependency order), applies each move's rows, and
 * frees a job once its last row committed. One attempt of a step is
 * step_run.c's. Transitions go to the writer (group commit); only the job's
 * last row is waited for, and the id is acked after it commits. See
 * worker/README.md.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "limits.h"
#include "tq/log.h"
#include "tq/status.h"
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
    wk_pipeline_release(j->pref);
    free(j->ss);
    free(j);
    e->closing--;
    atomic_fetch_add(e->free_slots, 1);
    atomic_fetch_sub(&wk_metrics.in_flight, 1);
    if (e->on_slot_free)
        e->on_slot_free(e->arg);
    /* Idle once no job is left and none is still closing (a later
       handle_closed would read the engine the caller may free after). */
    if (e->draining && e->njobs == 0 && e->closing == 0 && e->drained_cb)
        e->drained_cb(e->drained_arg);
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
        enum wk_st s = j->ss[d->needs[k]].st;
        if (s != WK_S_SUCCEEDED && s != WK_S_WARNED && s != WK_S_SKIPPED)
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
            enum wk_st s = j->ss[k].st;
            if (s != WK_S_COMPENSATED && s != WK_S_NOTHING && s != WK_S_SKIPPED)
                return false;
        }
    }
    return true;
}

/*
 * Entering a rollback from a forward phase: every step that may have had an
 * effect is to be undone — succeeded, warned, or failed with an attempt that
 * may have reached its server; a step none of whose attempts did, or that
 * never started, has nothing to undo.
 */
static void mark_for_undo(struct wk_job *j)
{
    atomic_fetch_add(&wk_metrics.rollbacks, 1);
    for (size_t i = 0; i < j->pl->nsteps; i++) {
        struct stepstate *ss = &j->ss[i];
        bool tried = ss->attempts > 0 && ss->reached == RCH_MAYBE;
        switch (ss->st) {
        case WK_S_SUCCEEDED:
        case WK_S_WARNED:
            ss->st = WK_S_UNDO_PENDING;
            break;
        case WK_S_FAILED:
        case WK_S_PENDING:
        case WK_S_WAIT_RETRY:
            ss->st = tried ? WK_S_UNDO_PENDING : WK_S_NOTHING;
            if (!tried && ss->st == WK_S_NOTHING && ss->attempts > 0)
                tq_info("job %" PRId64 " (%s): step %s needs no undo: none of its %d attempt(s) "
                        "reached its server", j->cl.c.job_id, j->cl.c.tenant_id,
                        j->pl->steps[i].name, ss->attempts);
            break;
        default:
            break;
        }
    }
    tq_warn("job %" PRId64 " (%s): rolling back: %s", j->cl.c.job_id, j->cl.c.tenant_id,
            j->reason[0] ? j->reason : "cancelled by an operator");
}

/*
 * The job's last row committed (the writer said so): metrics and its log
 * line. Never earlier: a row the epoch fence refuses was not the job's
 * outcome, another worker's is. Nobody is told from here: the audit event
 * in that row is what dispatch.c notifies, once it is committed.
 */
static void outcome(struct wk_job *j, const struct wk_move *m, const char *reason)
{
    enum tq_tenant_status ts = m->tenant;
    bool bad = ts == TQ_TS_FAILED || ts == TQ_TS_ROLLBACK_FAILED || ts == TQ_TS_BLOCKED;
    if (ts == TQ_TS_ROLLBACK_FAILED)
        wk_metrics_rollback_failed(j->cl.c.tier);
    if (j->kind == WK_KIND_PROVISION && ts == TQ_TS_ACTIVE)
        wk_metrics_provisioned(j->cl.c.tier, j->cl.c.region,
                               (double)(tq_mono_ms() - j->started_mono_ms) / 1000.0);
    else if (j->kind == WK_KIND_PROVISION && bad)
        wk_metrics_failed(j->cl.c.tier, j->failed_step);
    if (m->job == TQ_JS_SUCCEEDED)
        atomic_fetch_add(&wk_metrics.jobs_succeeded, 1);
    else if (m->act == WK_RELEASE || m->act == WK_PARK)
        atomic_fetch_add(&wk_metrics.jobs_released, 1);
    else
        atomic_fetch_add(&wk_metrics.jobs_failed, 1);
    if (j->kind == WK_KIND_REVALIDATE && m->job == TQ_JS_SUCCEEDED)
        wk_metrics_revalidated(reason != NULL);
    const char *what = ts ? tq_tenant_status_name(ts) : m->audit ? m->audit
                                                                 : tq_job_status_name(m->job);
    /* drift is something an operator must look at; a clean revalidation is routine */
    tq_log(m->audit && strcmp(m->audit, "drift_detected") == 0 ? TQ_LOG_WARN : TQ_LOG_INFO,
           "job %" PRId64 " (%s): %s%s%s", j->cl.c.job_id, j->cl.c.tenant_id, what,
           reason ? ": " : "", reason ? reason : "");
}

/* The job's last word (its last row, or its drop) is with the writer. */
static bool last_word_queued(const struct wk_job *j)
{
    return j->end.next == WK_PH_ENDED;
}

/* The lease is lost: stale, or already ended by dropping the id. */
static bool lost(const struct wk_job *j)
{
    return j->phase == WK_PH_STALE || (last_word_queued(j) && j->end.act == WK_DROP);
}

/* Let go at the drain's final deadline with its last row unconfirmed. */
static void unconfirmed(const struct wk_job *j)
{
    if (lost(j) || !last_word_queued(j))
        return;
    tq_info("job %" PRId64 " (%s): exiting before its last row (%s) was confirmed; if it was "
            "not written, the job returns to the queue when its lease ends", j->cl.c.job_id,
            j->cl.c.tenant_id,
            j->end.tenant ? tq_tenant_status_name(j->end.tenant)
            : j->end.audit ? j->end.audit : tq_job_status_name(j->end.job));
}

/* The reason a move's row carries, if any. */
static const char *move_reason(const struct wk_job *j, const struct wk_move *m)
{
    switch (m->next) {
    case WK_PH_ROLLBACK:
    case WK_PH_CANCEL_ROLLBACK:
        return j->reason[0] ? j->reason : "cancelled by an operator";
    case WK_PH_ENDED:
        if (m->job == TQ_JS_CANCELLED)
            return "cancelled by an operator";
        if (m->job == TQ_JS_SUCCEEDED && m->audit && strcmp(m->audit, "drift_detected") != 0)
            return NULL;
        if (m->job == TQ_JS_QUEUED)
            return NULL;
        return j->reason[0] ? j->reason : NULL;
    default:
        return NULL;
    }
}

/* Take one move: phase, rows, and what entering the new phase means. */
static void take(struct wk_job *j, enum wk_event ev, const struct wk_move *m)
{
    enum wk_phase from = j->phase;
    tq_debug("job %" PRId64 ": %s --%s--> %s", j->cl.c.job_id, wk_phase_name(from),
             wk_event_name(ev), wk_phase_name(m->next));
    j->phase = m->next;
    if (wk_phase_starts(m->next) == WK_START_NONE)
        wk_step_stop_waits(j);
    if (m->next == WK_PH_STALE) {
        atomic_fetch_add(&wk_metrics.jobs_stale, 1);
        if (from == WK_PH_ENDED)
            tq_warn("job %" PRId64 " (%s): lease lost to another worker before its last row "
                    "committed; the fence refused it (%s), another worker's outcome stands",
                    j->cl.c.job_id, j->cl.c.tenant_id,
                    j->end.tenant ? tq_tenant_status_name(j->end.tenant)
                    : j->end.audit ? j->end.audit : tq_job_status_name(j->end.job));
        else
            tq_warn("job %" PRId64 " (%s): lease lost to another worker; abandoning it without "
                    "further writes", j->cl.c.job_id, j->cl.c.tenant_id);
        for (size_t i = 0; i < j->pl->nsteps; i++)
            if (j->ss[i].cur)
                wk_step_cancel(j->ss[i].cur);
        return;
    }
    if ((m->next == WK_PH_ROLLBACK || m->next == WK_PH_CANCEL_ROLLBACK) &&
        strcmp(wk_phase_stored(from), "forward") == 0)
        mark_for_undo(j);
    if (m->next == WK_PH_CHECK_CANCEL || m->next == WK_PH_CANCELLING)
        tq_info("job %" PRId64 " (%s): cancel requested; stopping at the next step boundary",
                j->cl.c.job_id, j->cl.c.tenant_id);
    const char *reason = move_reason(j, m);
    if (m->act == WK_DROP) {
        j->end = *m;
        wk_writer_drop(j->eng->w, j, j->id);
        if (j->eng->abandoned)
            job_free(j);
        return;
    }
    if (m->job != TQ_JS_NONE)
        wk_job_emit_job(j, m->job, m->tenant, m->audit, reason, m->act,
                        m->act == WK_PARK ? j->park_due_ms : 0);
    if (m->next == WK_PH_ENDED) {
        j->end = *m;
        j->end_reason = reason;
        if (j->eng->abandoned) {
            unconfirmed(j);
            job_free(j);   /* past the final deadline: no report will come for it */
        }
    }
}

void wk_job_event(struct wk_job *j, enum wk_event ev)
{
    struct wk_move m;
    if (ev != WK_EV_NONE && wk_decide(j->phase, ev, j->kind != WK_KIND_REVALIDATE, &m))
        take(j, ev, &m);
    wk_job_advance(j);
}

/*
 * Start what the phase starts, until a pass starts nothing more (a step
 * skipped or finished at once may meet another's needs). Returns the event
 * an attempt ended with at once, WK_EV_NONE otherwise.
 */
static enum wk_event start_steps(struct wk_job *j)
{
    size_t n = j->pl->nsteps;
    enum wk_starts what = wk_phase_starts(j->phase);
    bool again = what != WK_START_NONE;
    while (again) {
        again = false;
        for (size_t k = 0; k < n; k++) {
            /* undos run in reverse dependency order */
            size_t i = what == WK_START_UNDO ? j->pl->order[n - 1 - k] : k;
            bool ready = what == WK_START_RUN
                             ? j->ss[i].st == WK_S_PENDING && needs_met(j, i)
                             : j->ss[i].st == WK_S_UNDO_PENDING && dependents_undone(j, i);
            if (!ready)
                continue;
            again = true;
            if (!wk_step_enabled(j, i)) {
                wk_step_skip(j, i);   /* undo too: e.g. no S3 endpoint, no bucket to remove */
                continue;
            }
            enum wk_event ev = wk_step_start(j, i, what == WK_START_UNDO);
            if (ev != WK_EV_NONE)
                return ev;
        }
    }
    return WK_EV_NONE;
}

/*
 * Move j on until it waits for something: start what its phase starts; an
 * attempt that ended at once may be an event; once idle, what its steps add
 * up to is one. Each pass either changes a step or the phase, so it ends.
 */
void wk_job_advance(struct wk_job *j)
{
    bool lifecycle = j->kind != WK_KIND_REVALIDATE;
    /* A job whose last word is queued moves only on the writer's report: a
       last row the fence refused makes it STALE, with its id acked by the
       writer already and one WK_R_ENDED coming (a drop would be a second). */
    while (j->phase != WK_PH_ENDED && !last_word_queued(j)) {
        struct wk_move m;
        enum wk_event ev = start_steps(j);
        if (ev != WK_EV_NONE) {
            if (wk_decide(j->phase, ev, lifecycle, &m))
                take(j, ev, &m);
            continue;
        }
        if (j->running > 0)
            return;
        enum wk_st st[j->pl->nsteps];
        for (size_t i = 0; i < j->pl->nsteps; i++)
            st[i] = j->ss[i].st;
        ev = wk_job_settle(j->phase, st, j->pl->nsteps);
        if (ev == WK_EV_NONE)
            return;
        /* Every phase but ENDED has a row for being idle (test_jobsm checks it):
           a miss is a bug in the DAG logic, e.g. a step whose needs never settle. */
        bool ok = wk_decide(j->phase, ev, lifecycle, &m);
        TQ_ASSERT(ok);
        take(j, ev, &m);
        /* Entering a phase that starts steps while the worker drains: hand back instead. */
        if (j->eng->draining && wk_phase_starts(j->phase) != WK_START_NONE &&
            wk_decide(j->phase, WK_EV_DRAIN, lifecycle, &m))
            take(j, WK_EV_DRAIN, &m);
    }
}

static enum wk_st initial(const char *status, bool rollback)
{
    enum tq_step_status s = tq_step_status_parse(status);
    if (s == TQ_SS_SKIPPED)
        return WK_S_SKIPPED;
    if (!rollback)
        return s == TQ_SS_SUCCEEDED ? WK_S_SUCCEEDED : WK_S_PENDING;
    if (s == TQ_SS_COMPENSATED)
        return WK_S_COMPENSATED;
    if (s == TQ_SS_NONE || s == TQ_SS_PENDING)
        return WK_S_NOTHING;
    return WK_S_UNDO_PENDING; /* succeeded, failed, running, compensation_failed */
}

static enum wk_st first_state(const struct wk_job *j, size_t i, const char *was)
{
    enum tq_step_status st = tq_step_status_parse(was);
    switch (j->kind) {
    case WK_KIND_REVALIDATE:
        /* validation steps are those with a class; the rest made resources */
        return j->pl->steps[i].cls == TQ_CLASS_NONE ? WK_S_SKIPPED
               : st == TQ_SS_SUCCEEDED              ? WK_S_SUCCEEDED
                                                    : WK_S_PENDING;
    case WK_KIND_DEPROVISION:
        /* a deprovision job undoes everything its own rows do not show undone */
        return st == TQ_SS_COMPENSATED ? WK_S_COMPENSATED : WK_S_UNDO_PENDING;
    default:
        return initial(was, j->cl.rollback);
    }
}

void wk_engine_run(struct wk_engine *e, struct wk_claimed *c)
{
    struct wk_job *j = tq_xcalloc(1, sizeof(*j));
    j->eng = e;
    j->cl = c->cl;
    j->pl = c->pl;
    j->pref = c->pref;
    memcpy(j->id, c->id, sizeof(j->id));
    free(c);
    j->kind = strcmp(j->cl.c.kind, "deprovision") == 0 ? WK_KIND_DEPROVISION
              : strcmp(j->cl.c.kind, "revalidate") == 0 ? WK_KIND_REVALIDATE
                                                         : WK_KIND_PROVISION;
    j->phase = wk_first_phase(j->cl.c.kind, j->cl.rollback, j->cl.cancel_requested);
    j->ss = tq_xcalloc(j->pl->nsteps, sizeof(*j->ss));
    j->started_mono_ms = tq_mono_ms();
    for (size_t i = 0; i < j->pl->nsteps; i++) {
        struct stepstate *ss = &j->ss[i];
        const json_t *rec = json_object_get(j->cl.steps, j->pl->steps[i].name);
        const char *was = json_string_value(json_object_get(rec, "status"));
        /* attempts count across deliveries: a retry policy is not reset by a crash */
        ss->attempts = (int)json_integer_value(json_object_get(rec, "attempts"));
        ss->undo_attempts = (int)json_integer_value(json_object_get(rec, "undo_attempts"));
        /* ... and so does the outage's share, which the policy does not count */
        ss->outage_attempts = (int)json_integer_value(json_object_get(rec, "outage_attempts"));
        ss->undo_outage_attempts =
            (int)json_integer_value(json_object_get(rec, "undo_outage_attempts"));
        /* unknown (no record of it): an earlier attempt may have reached its server */
        const json_t *reached = json_object_get(rec, "reached");
        ss->reached = json_is_false(reached) ? RCH_NEVER : RCH_MAYBE;
        if (ss->attempts == 0)
            ss->reached = RCH_NEVER;
        ss->st = first_state(j, i, was);
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
    bool rollback = strcmp(wk_phase_stored(j->phase), "rollback") == 0;
    /* A first delivery's claim is routine (its outcome line follows); a
       redelivery or a resumed rollback is what an operator looks for. */
    tq_log(j->cl.c.attempt > 1 || rollback ? TQ_LOG_INFO : TQ_LOG_DEBUG,
           "job %" PRId64 " (%s): claimed (%s%s, epoch %" PRId64 ", delivery %d)",
           j->cl.c.job_id, j->cl.c.tenant_id, j->cl.c.kind, rollback ? ", rollback" : "",
           j->cl.c.epoch, j->cl.c.attempt);
    /* The tenant shows the job from its first recorded transition on: this
       row travels with the first step rows, and the writer folds it into the
       job's next row when both wait in the same flush (the claim itself does
       not write the tenant). A revalidation never touches the tenant. */
    if (j->kind != WK_KIND_REVALIDATE)
        wk_job_emit_job(j, TQ_JS_RUNNING,
                        j->kind == WK_KIND_DEPROVISION ? TQ_TS_DEPROVISIONING
                        : rollback                     ? TQ_TS_ROLLING_BACK
                                                       : TQ_TS_PROVISIONING,
                        NULL, NULL, WK_NONE, 0);
    if (j->phase == WK_PH_CANCELLING)
        snprintf(j->reason, sizeof(j->reason), "cancelled by an operator");
    wk_job_event(j, e->draining ? WK_EV_DRAIN : WK_EV_NONE);
}

void wk_engine_report(struct wk_engine *e, struct wk_report *r)
{
    struct wk_job *j = r->job;
    switch (r->what) {
    case WK_R_STALE:
        /* Once: a job lost in one flush may have rows refused in the next. */
        if (!lost(j))
            wk_job_event(j, WK_EV_LEASE_LOST);
        break;
    case WK_R_CANCEL:
        wk_engine_cancel(e, j->cl.c.job_id);
        break;
    case WK_R_ENDED:
        /* The last row committed (a refused one reported WK_R_STALE first). */
        if (!lost(j))
            outcome(j, &j->end, j->end_reason);
        job_free(j);
        break;
    }
    free(r);
}

void wk_engine_cancel(struct wk_engine *e, int64_t job_id)
{
    struct wk_job *next;
    for (struct wk_job *j = e->jobs; j; j = next) {
        next = j->next;
        if (j->cl.c.job_id == job_id)
            wk_job_event(j, WK_EV_CANCEL);
    }
}

static void on_grace(uv_timer_t *t)
{
    struct wk_engine *e = t->data;
    if (e->njobs > 0)
        tq_warn("drain grace period over: cancelling %d job(s)' running steps", e->njobs);
    for (struct wk_job *j = e->jobs; j; j = j->next)
        for (size_t i = 0; i < j->pl->nsteps; i++)
            if (j->ss[i].cur)
                wk_step_cancel(j->ss[i].cur);
}

void wk_engine_drain(struct wk_engine *e, uint32_t grace_ms, void (*cb)(void *), void *arg)
{
    e->draining = true;
    e->drained_cb = cb;
    e->drained_arg = arg;
    /* jobs the fetcher still delivers are handed back; the grace covers them too */
    uv_timer_start(&e->grace, on_grace, grace_ms, 0);
    struct wk_job *next;
    for (struct wk_job *j = e->jobs; j; j = next) {
        next = j->next;
        wk_job_event(j, WK_EV_DRAIN);
    }
    if (e->njobs == 0 && e->closing == 0)
        cb(arg);
}

bool wk_engine_idle(const struct wk_engine *e)
{
    return e->njobs == 0 && e->closing == 0;
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
        if (j->phase != WK_PH_STALE)
            out[n++] = j->cl.c.job_id;
    return n;
}

int wk_engine_jobs(const struct wk_engine *e)
{
    return e->njobs;
}

void wk_engine_abandon(struct wk_engine *e)
{
    e->abandoned = true;
    struct wk_job *next;
    for (struct wk_job *j = e->jobs; j; j = next) {
        next = j->next;
        if (last_word_queued(j)) {   /* ENDED, or STALE after a refused last row */
            unconfirmed(j);
            job_free(j);
        }
    }
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
