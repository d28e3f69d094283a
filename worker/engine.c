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

#include "tq/log.h"
#include "tq/retry.h"
#include "tq/util.h"
#include "worker.h"

struct wk_metrics wk_metrics;

enum st {
    S_PENDING,       /* forward: not started (or waiting for a long retry) */
    S_RUNNING,
    S_WAIT_RETRY,    /* timer armed */
    S_SUCCEEDED,
    S_WARNED,        /* performance check failed: counts as done, with a warning */
    S_FAILED,        /* failed for good */
    S_UNDO_PENDING,
    S_UNDOING,
    S_UNDO_WAIT,
    S_COMPENSATED,
    S_COMP_FAILED,
    S_NOTHING,       /* never ran: nothing to undo */
    S_SKIPPED,       /* disabled by its "enabled" condition: counts as done */
};

struct stepstate {
    enum st st;
    int attempts;        /* run attempts in this delivery */
    int undo_attempts;
    uint64_t due_ms;     /* long retry: not before */
    struct wk_step *cur;
    uv_timer_t retry_timer;
    uv_timer_t timeout_timer;
    bool timed_out;
    struct wk_job *job;
    size_t index;
};

struct wk_job {
    struct wk_engine *eng;
    struct tq_claimed cl;
    const struct tq_pipeline *pl;
    char id[24];
    struct stepstate *ss;
    bool rollback;           /* phase */
    bool deprovision;
    bool revalidate;         /* re-run the checks only; never touch resources */
    int drifted;             /* checks that failed on revalidation */
    bool stopping;           /* start no new forward steps */
    bool need_rollback;
    bool blocked;
    bool cancel;
    bool draining;
    bool stale;
    bool ended;              /* last row queued; waiting for the writer */
    bool comp_failed;
    bool warned;
    int running;
    int open_handles;
    int in_advance;
    bool again;
    uint64_t park_due_ms;
    char reason[512];
    char failed_step[TQ_STEP_NAME_MAX + 1];
    struct wk_job *prev, *next;
};

struct wk_engine {
    uv_loop_t *loop;
    struct wk_settings set;
    struct wk_writer *w;
    atomic_int *free_slots;
    void (*on_slot_free)(void *);
    void *arg;
    struct wk_job *jobs;
    int njobs;
    bool draining;
    void (*drained_cb)(void *);
    void *drained_arg;
    uv_timer_t grace;
    bool grace_armed;
};

static void advance(struct wk_job *j);
static void notify(struct wk_job *j, const char *event, const char *text);

/* ------------------------------------------------------------ helpers */

static const char *st_name(enum st s)
{
    switch (s) {
    case S_RUNNING:
        return "running";
    case S_SUCCEEDED:
        return "succeeded";
    case S_WARNED:
    case S_FAILED:
        return "failed";
    case S_UNDOING:
        return "running";
    case S_COMPENSATED:
        return "compensated";
    case S_COMP_FAILED:
        return "compensation_failed";
    case S_SKIPPED:
        return "skipped";
    default:
        return "pending";
    }
}

static void emit_step(struct wk_job *j, size_t i, enum st st, int ad, int ud, uint64_t started,
                      uint64_t finished, const char *error, const char *output, bool progress)
{
    if (j->stale)
        return;
    struct tq_step_row r = {
        .job_id = j->cl.c.job_id,
        .epoch = j->cl.c.epoch,
        .step = j->pl->steps[i].name,
        .status = st_name(st),
        .attempts_delta = ad,
        .undo_attempts_delta = ud,
        .started_ms = (int64_t)started,
        .finished_ms = (int64_t)finished,
        .error = error,
        .output = output,
        .progress = progress,
    };
    wk_writer_step(j->eng->w, j, &r);
}

static void emit_attempt(struct wk_job *j, struct wk_step *s, bool ok, const char *error)
{
    if (j->stale)
        return;
    struct tq_attempt_row r = {
        .job_id = j->cl.c.job_id,
        .epoch = j->cl.c.epoch,
        .step = s->def->name,
        .phase = s->undo ? "undo" : "run",
        .attempt = s->attempt,
        .status = ok ? "succeeded" : "failed",
        .started_ms = (int64_t)s->started_ms,
        .finished_ms = (int64_t)tq_now_ms(),
        .error = error,
    };
    wk_writer_attempt(j->eng->w, j, &r);
}

static void emit_job(struct wk_job *j, const char *jstatus, const char *tstatus, const char *event,
                     const char *reason, bool last, enum wk_redis_act act, uint64_t due_ms)
{
    if (j->stale)
        return;
    struct tq_job_row r = {
        .job_id = j->cl.c.job_id,
        .epoch = j->cl.c.epoch,
        .job_status = jstatus,
        .tenant_status = tstatus,
        .phase = j->rollback ? "rollback" : "forward",
        .event = event,
        .reason = reason,
        .failed_step = j->failed_step[0] ? j->failed_step : NULL,
        .not_before_ms = (int64_t)due_ms,
        .release_lease = last,
    };
    wk_writer_job(j->eng->w, j, &r, last ? act : WK_NONE, j->id, due_ms);
}

/* Template values for the running job. */
static const char *lookup(const char *var, void *arg)
{
    const struct tq_claim *c = arg;
    static _Thread_local char buf[64];
    if (strcmp(var, "tenant.id") == 0)
        return c->tenant_id;
    if (strcmp(var, "tenant.ident") == 0) {
        tq_tenant_ident(c->tenant_id, buf, sizeof(buf));
        return buf;
    }
    if (strcmp(var, "tenant.name") == 0)
        return c->name;
    if (strcmp(var, "tenant.tier") == 0)
        return c->tier;
    if (strcmp(var, "tenant.region") == 0)
        return c->region;
    if (strcmp(var, "tenant.owner") == 0)
        return c->owner;
    if (strcmp(var, "job.id") == 0) {
        snprintf(buf, sizeof(buf), "%" PRId64, c->job_id);
        return buf;
    }
    if (strncmp(var, "tier.", 5) == 0) {
        const struct tq_tier_info *t = tq_tier_lookup(c->tier);
        if (!t)
            return NULL;
        const char *f = var + 5;
        if (strcmp(f, "model") == 0)
            return t->model;
        if (strcmp(f, "cost_center") == 0) {
            snprintf(buf, sizeof(buf), "rag-platform-%s", t->name);
            for (char *p = buf; *p; p++)
                *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
            return buf;
        }
        int v = strcmp(f, "documents_per_month") == 0 ? t->documents_per_month
              : strcmp(f, "queries_per_minute") == 0  ? t->queries_per_minute
              : strcmp(f, "vector_replicas") == 0     ? t->vector_replicas
              : strcmp(f, "archive_after_days") == 0  ? t->archive_after_days
              : strcmp(f, "p95_sla_ms") == 0          ? t->p95_sla_ms
                                                      : -1;
        if (v < 0)
            return NULL;
        snprintf(buf, sizeof(buf), "%d", v);
        return buf;
    }
    if (strncmp(var, "env.", 4) == 0) {
        const char *v = getenv(var + 4);
        return v ? v : "";   /* unset reads as empty: "enabled" turns the step off */
    }
    return NULL;
}

static json_t *render(const json_t *v, const struct tq_claim *c, char *errbuf, size_t errlen)
{
    if (json_is_string(v)) {
        const char *in = json_string_value(v);
        char *s = tq_template_render(in, lookup, (void *)c, errbuf, errlen);
        if (!s)
            return NULL;
        /* "${tier.vector_replicas}" alone: a number, as APIs expect */
        json_t *out = NULL;
        if (strncmp(in, "${tier.", 7) == 0 && strchr(in, '}') == in + strlen(in) - 1 &&
            *s && strspn(s, "0123456789") == strlen(s))
            out = json_integer(strtoll(s, NULL, 10));
        if (!out)
            out = json_string(s);
        free(s);
        return out;
    }
    if (json_is_object(v)) {
        json_t *o = json_object();
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            json_t *r = render(x, c, errbuf, errlen);
            if (!r) {
                json_decref(o);
                return NULL;
            }
            json_object_set_new(o, k, r);
        }
        return o;
    }
    if (json_is_array(v)) {
        json_t *a = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            json_t *r = render(x, c, errbuf, errlen);
            if (!r) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, r);
        }
        return a;
    }
    return json_deep_copy(v);
}

/* ------------------------------------------------------------ steps */

static void on_timeout(uv_timer_t *t)
{
    struct stepstate *ss = t->data;
    struct wk_step *s = ss->cur;
    if (!s || s->done)
        return;
    ss->timed_out = true;
    if (s->cancelled)
        return;
    tq_warn("job %" PRId64 " (%s): step %s timed out after %u ms; cancelling it",
            ss->job->cl.c.job_id, ss->job->cl.c.tenant_id, s->def->name, s->def->timeout_ms);
    s->cancelled = true;
    const struct wk_step_ops *ops = wk_step_lookup(s->def->kind);
    if (ops && ops->cancel)
        ops->cancel(s);
}

/* A step whose "enabled" template renders empty, "false" or "0" is skipped. */
static bool step_enabled(struct wk_job *j, size_t i)
{
    const char *cond = j->pl->steps[i].enabled;
    if (!cond)
        return true;
    char err[256];
    char *v = tq_template_render(cond, lookup, &j->cl.c, err, sizeof(err));
    bool on = v && *v && strcmp(v, "false") != 0 && strcmp(v, "0") != 0;
    free(v);
    return on;
}

static void skip_step(struct wk_job *j, size_t i)
{
    uint64_t now = tq_now_ms();
    j->ss[i].st = S_SKIPPED;
    emit_step(j, i, S_SKIPPED, 0, 0, now, now, NULL, "{\"reason\":\"disabled by its enabled condition\"}",
              false);
}

static void start_step(struct wk_job *j, size_t i, bool undo)
{
    struct stepstate *ss = &j->ss[i];
    const struct tq_pipeline_step *def = &j->pl->steps[i];
    struct wk_step *s = tq_xcalloc(1, sizeof(*s));
    s->loop = j->eng->loop;
    s->cfg = j->eng->set.cfg;
    s->claim = &j->cl.c;
    s->curl = j->eng->set.curl;
    s->def = def;
    s->undo = undo;
    s->job = j;
    s->index = i;
    s->started_ms = tq_now_ms();
    s->output = json_object();
    s->refs = 1;
    pthread_mutex_init(&s->cancel_mu, NULL);
    s->attempt = undo ? ++ss->undo_attempts : ++ss->attempts;
    ss->st = undo ? S_UNDOING : S_RUNNING;
    ss->cur = s;
    ss->timed_out = false;
    j->running++;
    emit_step(j, i, ss->st, undo ? 0 : 1, undo ? 1 : 0, s->started_ms, 0, NULL, NULL, false);

    const json_t *src = def->params;
    if (undo && def->undo && json_is_object(json_object_get(def->undo, "params")))
        src = json_object_get(def->undo, "params");
    char rerr[256] = "";
    s->params = render(src, &j->cl.c, rerr, sizeof(rerr));
    const struct wk_step_ops *ops = wk_step_lookup(def->kind);
    /* Armed first: a kind may finish inside start(), and done() stops it. */
    uv_timer_start(&ss->timeout_timer, on_timeout, def->timeout_ms, 0);
    enum tq_err err;
    if (!ops) {
        err = TQ_EBADJOB;
        snprintf(s->errstr, sizeof(s->errstr), "this worker has no step kind \"%s\"", def->kind);
    } else if (!s->params) {
        err = TQ_EINVALID;
        snprintf(s->errstr, sizeof(s->errstr), "params: %s", rerr);
    } else {
        err = ops->start(s);
    }
    if (err) {
        if (!s->errstr[0])
            snprintf(s->errstr, sizeof(s->errstr), "%s", tq_strerror(err));
        wk_step_done(s, err);
    }
}

static void on_retry_timer(uv_timer_t *t)
{
    struct stepstate *ss = t->data;
    struct wk_job *j = ss->job;
    if (ss->st == S_WAIT_RETRY)
        ss->st = S_PENDING;
    else if (ss->st == S_UNDO_WAIT)
        ss->st = S_UNDO_PENDING;
    advance(j);
}

static void fail_for_good(struct wk_job *j, size_t i, const char *error)
{
    const struct tq_pipeline_step *def = &j->pl->steps[i];
    if (j->revalidate) {
        /* drift: recorded and reported, the active tenant is left alone */
        j->ss[i].st = S_WARNED;
        j->drifted++;
        size_t l = strlen(j->reason);
        snprintf(j->reason + l, sizeof(j->reason) - l, "%s%s (%s): %s", l ? "; " : "", def->name,
                 tq_step_class_name(def->cls), error);
        return;
    }
    switch (def->cls) {
    case TQ_CLASS_PERFORMANCE:
        j->ss[i].st = S_WARNED;
        j->warned = true;
        tq_warn("job %" PRId64 " (%s): performance check %s failed: %s; activating with a warning",
                j->cl.c.job_id, j->cl.c.tenant_id, def->name, error);
        {
            char why[400];
            snprintf(why, sizeof(why), "step %s: %s", def->name, error);
            emit_job(j, "running", NULL, "performance_warning", why, false, WK_NONE, 0);
            notify(j, "performance_warning", why);
        }
        return;
    case TQ_CLASS_COMPLIANCE:
        j->ss[i].st = S_FAILED;
        if (!j->need_rollback) {
            j->blocked = true;
            snprintf(j->failed_step, sizeof(j->failed_step), "%s", def->name);
            snprintf(j->reason, sizeof(j->reason), "step %s (compliance): %s", def->name, error);
        }
        j->stopping = true;
        return;
    default:
        j->ss[i].st = S_FAILED;
        if (!j->need_rollback) {
            j->need_rollback = true;
            j->blocked = false;
            snprintf(j->failed_step, sizeof(j->failed_step), "%s", def->name);
            snprintf(j->reason, sizeof(j->reason), "step %s failed after %d attempt%s: %s",
                     def->name, j->ss[i].attempts, j->ss[i].attempts == 1 ? "" : "s", error);
        }
        j->stopping = true;
        return;
    }
}

void wk_step_done(struct wk_step *s, enum tq_err err)
{
    TQ_ASSERT(!s->done);
    s->done = true;
    struct wk_job *j = s->job;
    struct stepstate *ss = &j->ss[s->index];
    const struct tq_pipeline_step *def = s->def;
    uv_timer_stop(&ss->timeout_timer);
    if (err && ss->timed_out) {
        err = TQ_ETIMEOUT;
        snprintf(s->errstr, sizeof(s->errstr), "timed out after %u ms", def->timeout_ms);
    }
    if (err && !s->errstr[0])
        snprintf(s->errstr, sizeof(s->errstr), "%s", tq_strerror(err));
    uint64_t now = tq_now_ms();
    json_object_set_new(s->output, "duration_ms", json_integer((json_int_t)(now - s->started_ms)));
    ss->cur = NULL;
    j->running--;
    emit_attempt(j, s, err == TQ_OK, err ? s->errstr : NULL);

    bool interrupted = err && s->cancelled && !ss->timed_out;   /* drain or lost lease */
    if (interrupted) {
        /* not a failure of the step: it runs again on the next delivery */
        ss->st = s->undo ? S_UNDO_PENDING : S_PENDING;
        emit_step(j, s->index, S_PENDING, 0, 0, 0, 0, "interrupted", NULL, false);
    } else if (!s->undo) {
        if (!err) {
            ss->st = S_SUCCEEDED;
            if (s->warning[0]) {
                char why[400];
                snprintf(why, sizeof(why), "step %s: %s", def->name, s->warning);
                tq_warn("job %" PRId64 " (%s): %s", j->cl.c.job_id, j->cl.c.tenant_id, why);
                emit_job(j, "running", NULL, "step_warning", why, false, WK_NONE, 0);
            }
            char *out = json_dumps(s->output, JSON_COMPACT);
            emit_step(j, s->index, S_SUCCEEDED, 0, 0, 0, now, NULL, out, true);
            free(out);
            tq_debug("job %" PRId64 " (%s): step %s succeeded", j->cl.c.job_id,
                     j->cl.c.tenant_id, def->name);
        } else {
            /* security checks roll back at once; everything else retries first */
            bool retry = def->cls != TQ_CLASS_SECURITY && tq_err_retryable(err) &&
                         ss->attempts < (int)def->retry.max_attempts && !j->stopping && !j->stale;
            if (retry) {
                uint32_t delay = tq_retry_delay_ms(&def->retry, (uint32_t)ss->attempts,
                                                   tq_random_unit());
                atomic_fetch_add(&wk_metrics.step_retries, 1);
                tq_warn("job %" PRId64 " (%s): step %s attempt %d failed: %s; retry in %u ms",
                        j->cl.c.job_id, j->cl.c.tenant_id, def->name, ss->attempts, s->errstr, delay);
                emit_step(j, s->index, S_PENDING, 0, 0, 0, 0, s->errstr, NULL, false);
                if (delay > j->eng->set.long_wait_ms) {
                    /* long wait: hand the job to the delayed queue instead of holding a slot */
                    ss->st = S_PENDING;
                    ss->due_ms = now + delay;
                    if (!j->park_due_ms || ss->due_ms < j->park_due_ms)
                        j->park_due_ms = ss->due_ms;
                    j->stopping = true;
                } else {
                    ss->st = S_WAIT_RETRY;
                    uv_timer_start(&ss->retry_timer, on_retry_timer, delay, 0);
                }
            } else if (j->stopping && !j->need_rollback && !j->blocked && !j->cancel &&
                       tq_err_retryable(err) && ss->attempts < (int)def->retry.max_attempts) {
                /* interrupted by a drain or a park: run again next delivery */
                ss->st = S_PENDING;
                emit_step(j, s->index, S_PENDING, 0, 0, 0, 0, s->errstr, NULL, false);
            } else {
                /* keep what the step measured: a failed check's findings matter most */
                char *out = json_dumps(s->output, JSON_COMPACT);
                emit_step(j, s->index, S_FAILED, 0, 0, 0, now, s->errstr, out, false);
                free(out);
                fail_for_good(j, s->index, s->errstr);
            }
        }
    } else {
        if (!err) {
            ss->st = S_COMPENSATED;
            emit_step(j, s->index, S_COMPENSATED, 0, 0, 0, now, NULL, NULL, true);
        } else {
            const struct tq_retry_policy *p = &def->retry;
            bool retry = tq_err_retryable(err) && ss->undo_attempts < (int)p->max_attempts &&
                         !j->draining && !j->stale;
            if (retry) {
                uint32_t delay = tq_retry_delay_ms(p, (uint32_t)ss->undo_attempts, tq_random_unit());
                if (delay > j->eng->set.long_wait_ms)
                    delay = j->eng->set.long_wait_ms;
                ss->st = S_UNDO_WAIT;
                tq_warn("job %" PRId64 " (%s): undo of %s attempt %d failed: %s; retry in %u ms",
                        j->cl.c.job_id, j->cl.c.tenant_id, def->name, ss->undo_attempts, s->errstr,
                        delay);
                uv_timer_start(&ss->retry_timer, on_retry_timer, delay, 0);
            } else if (j->draining && tq_err_retryable(err)) {
                ss->st = S_UNDO_PENDING;
            } else {
                ss->st = S_COMP_FAILED;
                j->comp_failed = true;
                emit_step(j, s->index, S_COMP_FAILED, 0, 0, 0, now, s->errstr, NULL, false);
                tq_error("ALERT job %" PRId64 " (%s): undo of step %s failed for good: %s",
                         j->cl.c.job_id, j->cl.c.tenant_id, def->name, s->errstr);
                if (strlen(j->reason) < sizeof(j->reason) / 2) {
                    size_t l = strlen(j->reason);
                    snprintf(j->reason + l, sizeof(j->reason) - l, "%sundo of %s failed: %s",
                             l ? "; " : "", def->name, s->errstr);
                }
            }
        }
    }
    wk_step_unref(s);
    advance(j);
}

void wk_step_unref(struct wk_step *s)
{
    if (--s->refs > 0)
        return;
    json_decref(s->params);
    json_decref(s->output);
    if (s->pgcancel)
        PQfreeCancel(s->pgcancel);
    pthread_mutex_destroy(&s->cancel_mu);
    free(s);
}

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
    atomic_fetch_add(e->free_slots, 1);
    atomic_fetch_sub(&wk_metrics.in_flight, 1);
    if (e->on_slot_free)
        e->on_slot_free(e->arg);
    if (e->draining && e->njobs == 0 && e->drained_cb) {
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
    if (j->prev)
        j->prev->next = j->next;
    else
        e->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    e->njobs--;
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
    emit_job(j, "running", "rolling_back", "rollback_started",
             j->cancel && !j->reason[0] ? "cancelled by an operator" : j->reason, false, WK_NONE, 0);
}

/* Tell people about outcomes that need them (failures, blocks, warnings). */
static void notify(struct wk_job *j, const char *event, const char *text)
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
        notify(j, tstatus, reason);
    emit_job(j, jstatus, tstatus, event, reason, true, act, due_ms);
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
    end_job(j, "queued", j->rollback ? "rolling_back" : "queued", due_ms ? "retry_scheduled" : "handed_back",
            NULL, due_ms ? WK_PARK : WK_RELEASE, due_ms);
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
                    if (step_enabled(j, i))
                        start_step(j, i, false);
                    else
                        skip_step(j, i);
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
                notify(j, "drift_detected", j->reason);
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
                if (step_enabled(j, i))
                    start_step(j, i, true);
                else
                    skip_step(j, i);   /* e.g. no S3 endpoint: there is no bucket to remove */
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
static void advance(struct wk_job *j)
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
    tq_info("job %" PRId64 " (%s): claimed (%s%s, epoch %" PRId64 ", delivery %d)",
            j->cl.c.job_id, j->cl.c.tenant_id, j->cl.c.kind, j->rollback ? ", rollback" : "",
            j->cl.c.epoch, j->cl.c.attempt);
    if (j->cancel && !j->rollback) {
        j->stopping = true;
        snprintf(j->reason, sizeof(j->reason), "cancelled by an operator");
    }
    if (e->draining) {
        j->draining = j->stopping = true;
    }
    advance(j);
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
                advance(j);
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
        advance(j);
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
    if (e->njobs == 0) {
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
        advance(j);
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
