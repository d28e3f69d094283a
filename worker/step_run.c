/*
 * One attempt of one step on the loop thread: render its params, start its
 * kind, arm its timeout, and when it ends record the attempt and decide
 * what it means for the step — success, a retry on a timer, a long wait in
 * the delayed set, waiting out an outage, or failure for good — and which
 * job event (jobsm.h) that is. The job's move is engine.c's.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "limits.h"
#include "tq/log.h"
#include "tq/redact.h"
#include "tq/retry.h"
#include "tq/util.h"

void wk_step_cancel(struct wk_step_run *r)
{
    if (r->done || atomic_exchange(&r->cancelled, true))
        return;
    const struct wk_step_ops *ops = wk_step_lookup(r->pub.def->kind);
    if (ops && ops->cancel)
        ops->cancel(&r->pub);
}

static void on_timeout(uv_timer_t *t)
{
    struct stepstate *ss = t->data;
    struct wk_step_run *r = ss->cur;
    if (!r || r->done)
        return;
    ss->timeout = TO_FIRED;
    if (atomic_load(&r->cancelled))
        return;
    tq_warn("job %" PRId64 " (%s): step %s timed out after %u ms; cancelling it",
            ss->job->cl.c.job_id, ss->job->cl.c.tenant_id, r->pub.def->name,
            r->pub.def->timeout_ms);
    wk_step_cancel(r);
}

/* A step whose "enabled" template renders empty, "false" or "0" is skipped. */
bool wk_step_enabled(struct wk_job *j, size_t i)
{
    const char *cond = j->pl->steps[i].enabled;
    if (!cond)
        return true;
    char err[256];
    char *v = tq_template_render(cond, wk_template_lookup, &j->cl.c, err, sizeof(err));
    bool on = v && *v && strcmp(v, "false") != 0 && strcmp(v, "0") != 0;
    free(v);
    return on;
}

void wk_step_skip(struct wk_job *j, size_t i)
{
    uint64_t now = tq_now_ms();
    j->ss[i].st = WK_S_SKIPPED;
    wk_job_emit_step(j, i, WK_S_SKIPPED, 0, 0, now, now, NULL,
                     "{\"reason\":\"disabled by its enabled condition\"}", false);
}

void wk_step_stop_waits(struct wk_job *j)
{
    for (size_t i = 0; i < j->pl->nsteps; i++) {
        struct stepstate *ss = &j->ss[i];
        uv_timer_stop(&ss->retry_timer);
        if (ss->st == WK_S_WAIT_RETRY)
            ss->st = WK_S_PENDING;
        else if (ss->st == WK_S_UNDO_WAIT)
            ss->st = WK_S_UNDO_PENDING;
    }
}

static enum wk_event finish(struct wk_step_run *r, enum tq_err err);

enum wk_event wk_step_start(struct wk_job *j, size_t i, bool undo)
{
    /* Fleet-wide limit (worker/limits.c): a step declaring "limit" starts
       only with a permit; until then limits.c parks it in the retry wait and
       calls wk_job_advance again. Keep this the first thing a start does. */
    if (!wk_limit_admit(j, i, undo))
        return WK_EV_NONE;
    struct stepstate *ss = &j->ss[i];
    const struct tq_pipeline_step *def = &j->pl->steps[i];
    struct wk_step_run *r = tq_xcalloc(1, sizeof(*r));
    struct wk_step *s = &r->pub;
    s->loop = j->eng->loop;
    s->set = &j->eng->set.steps;
    s->claim = &j->cl.c;
    s->curl = j->eng->set.curl;
    s->def = def;
    s->undo = undo;
    s->output = json_object();
    r->job = j;
    r->index = i;
    r->started_ms = tq_now_ms();
    r->refs = 1;
    atomic_init(&r->cancelled, false);
    pthread_mutex_init(&r->cancel_mu, NULL);
    s->attempt = undo ? ++ss->undo_attempts : ++ss->attempts;
    ss->st = undo ? WK_S_UNDOING : WK_S_RUNNING;
    ss->cur = r;
    ss->timeout = TO_NONE;
    j->running++;
    wk_job_emit_step(j, i, ss->st, undo ? 0 : 1, undo ? 1 : 0, r->started_ms, 0, NULL, NULL,
                     false);

    const json_t *src = def->params;
    if (undo && def->undo && json_is_object(json_object_get(def->undo, "params")))
        src = json_object_get(def->undo, "params");
    char rerr[256] = "";
    s->params = wk_template_render_json(src, &j->cl.c, rerr, sizeof(rerr));
    const struct wk_step_ops *ops = wk_step_lookup(def->kind);
    /* Armed first: a kind may finish inside start(), and done() stops it. */
    uv_timer_start(&ss->timeout_timer, on_timeout, def->timeout_ms, 0);
    enum tq_err err;
    r->in_start = true;
    if (!ops) {
        err = TQ_EBADJOB;
        snprintf(s->errstr, sizeof(s->errstr), "this worker has no step kind \"%s\"", def->kind);
    } else if (!s->params) {
        err = TQ_EINVALID;
        snprintf(s->errstr, sizeof(s->errstr), "params: %s", rerr);
    } else {
        err = ops->start(s);
    }
    r->in_start = false;
    if (err) {   /* did not start: nothing was sent */
        s->unsent = true;
        enum wk_event ev = finish(r, err);
        wk_step_unref(r);
        return ev;
    }
    /* A kind that finished inside start() left its event for us to return. */
    enum wk_event ev = r->done ? r->event : WK_EV_NONE;
    if (r->done)
        wk_step_unref(r);
    return ev;
}

static void on_retry_timer(uv_timer_t *t)
{
    struct stepstate *ss = t->data;
    if (ss->st == WK_S_WAIT_RETRY)
        ss->st = WK_S_PENDING;
    else if (ss->st == WK_S_UNDO_WAIT)
        ss->st = WK_S_UNDO_PENDING;
    wk_job_advance(ss->job);
}

static void add_reason(struct wk_job *j, const char *fmt, const char *a, const char *b,
                       const char *c)
{
    size_t l = strlen(j->reason);
    if (l >= sizeof(j->reason) / 2)
        return;
    snprintf(j->reason + l, sizeof(j->reason) - l, l ? "; " : "");
    l = strlen(j->reason);
    snprintf(j->reason + l, sizeof(j->reason) - l, fmt, a, b, c);
}

/* A forward step failed for good: the job event its class (or drift) means. */
static enum wk_event fail_for_good(struct wk_job *j, size_t i, const char *error)
{
    const struct tq_pipeline_step *def = &j->pl->steps[i];
    bool revalidation = j->kind == WK_KIND_REVALIDATE;
    enum wk_event ev = wk_fail_event(def->cls, revalidation);
    j->ss[i].st = ev == WK_EV_NONE ? WK_S_WARNED : WK_S_FAILED;
    if (revalidation) {
        /* drift: recorded, logged as a warning, reported; the active tenant is left alone */
        wk_metrics_drift(def->name);
        tq_warn("job %" PRId64 " (%s): drift: check %s (%s) failed: %s", j->cl.c.job_id,
                j->cl.c.tenant_id, def->name, tq_step_class_name(def->cls), error);
        add_reason(j, "%s (%s): %s", def->name, tq_step_class_name(def->cls), error);
        return ev;
    }
    if (def->cls == TQ_CLASS_PERFORMANCE) {
        char why[400];
        snprintf(why, sizeof(why), "step %s: %s", def->name, error);
        tq_warn("job %" PRId64 " (%s): performance check %s failed: %s; activating with a warning",
                j->cl.c.job_id, j->cl.c.tenant_id, def->name, error);
        wk_job_emit_job(j, TQ_JS_RUNNING, TQ_TS_NONE, "performance_warning", why, WK_NONE, 0);
        return ev;
    }
    /* The first failure names the job's reason; a compliance block yields to a failure. */
    bool first = j->phase == WK_PH_FORWARD || j->phase == WK_PH_PARKING ||
                 j->phase == WK_PH_HANDBACK || (j->phase == WK_PH_BLOCKING && ev == WK_EV_FAIL);
    if (first) {
        snprintf(j->failed_step, sizeof(j->failed_step), "%s", def->name);
        if (ev == WK_EV_BLOCK)
            snprintf(j->reason, sizeof(j->reason), "step %s (compliance): %s", def->name, error);
        else
            snprintf(j->reason, sizeof(j->reason), "step %s failed after %d attempt%s: %s",
                     def->name, j->ss[i].attempts, j->ss[i].attempts == 1 ? "" : "s", error);
    }
    return ev;
}

/*
 * A transient error (the step could not reach what it works on, or our own
 * services) is not a verdict: it is retried, whatever the class and the
 * retry policy, until the outage has lasted TQ_OUTAGE_MS.
 */
static bool outage(struct wk_job *j, struct stepstate *ss, const struct wk_step *s,
                   enum tq_err err, uint64_t now)
{
    bool transient = err == TQ_ECONNECT || (s->unsent && tq_err_retryable(err));
    if (!transient) {
        ss->outage_since_ms = 0;
        return false;
    }
    if (!ss->outage_since_ms)
        ss->outage_since_ms = now;
    return now - ss->outage_since_ms < j->eng->set.outage_ms;
}

/* Backoff of a retry, under the step's policy. */
static uint32_t retry_delay(const struct tq_pipeline_step *def, int attempt)
{
    return tq_retry_delay_ms(&def->retry, (uint32_t)attempt, tq_random_unit());
}

/* A forward attempt ended with err: the step's new state, and the job event. */
static enum wk_event run_outcome(struct wk_step_run *r, enum tq_err err, uint64_t now)
{
    struct wk_job *j = r->job;
    struct wk_step *s = &r->pub;
    struct stepstate *ss = &j->ss[r->index];
    const struct tq_pipeline_step *def = s->def;
    if (!err) {
        ss->st = WK_S_SUCCEEDED;
        ss->outage_since_ms = 0;
        if (s->warning[0]) {
            char why[400];
            snprintf(why, sizeof(why), "step %s: %s", def->name, s->warning);
            tq_warn("job %" PRId64 " (%s): %s", j->cl.c.job_id, j->cl.c.tenant_id, why);
            wk_job_emit_job(j, TQ_JS_RUNNING, TQ_TS_NONE, "step_warning", why, WK_NONE, 0);
        }
        char *out = json_dumps(s->output, JSON_COMPACT);
        wk_job_emit_step(j, r->index, WK_S_SUCCEEDED, 0, 0, 0, now, NULL, out, true);
        free(out);
        tq_debug("job %" PRId64 " (%s): step %s succeeded", j->cl.c.job_id, j->cl.c.tenant_id,
                 def->name);
        return WK_EV_NONE;
    }
    bool starts = wk_phase_starts(j->phase) == WK_START_RUN;
    bool waits_out = outage(j, ss, s, err, now);
    if (waits_out) {
        ss->outage_attempts++;   /* not a verdict: the retry policy counts the others */
        ss->outage_unwritten++;
    }
    int counted = ss->attempts - ss->outage_attempts;
    /* security checks roll back at once; everything else retries first */
    bool by_policy = def->cls != TQ_CLASS_SECURITY && tq_err_retryable(err) &&
                     counted < (int)def->retry.max_attempts;
    if (starts && (by_policy || waits_out)) {
        /* an outage backs off over all its attempts; a verdict over the counted ones */
        uint32_t delay = retry_delay(def, waits_out ? ss->attempts : counted);
        if (waits_out && !by_policy && delay > j->eng->set.long_wait_ms)
            delay = j->eng->set.long_wait_ms;   /* an outage keeps the slot: it may end any time */
        atomic_fetch_add(&wk_metrics.step_retries, 1);
        tq_warn("job %" PRId64 " (%s): step %s attempt %d failed: %s; retry in %u ms%s",
                j->cl.c.job_id, j->cl.c.tenant_id, def->name, ss->attempts, s->errstr, delay,
                waits_out && !by_policy ? " (waiting out an outage)" : "");
        wk_job_emit_step(j, r->index, WK_S_PENDING, 0, 0, 0, 0, s->errstr, NULL, false);
        if (delay > j->eng->set.long_wait_ms) {
            /* long wait: hand the job to the delayed queue instead of holding a slot */
            ss->st = WK_S_PENDING;
            ss->due_ms = now + delay;
            if (!j->park_due_ms || ss->due_ms < j->park_due_ms)
                j->park_due_ms = ss->due_ms;
            return WK_EV_PARK;
        }
        ss->st = WK_S_WAIT_RETRY;
        uv_timer_start(&ss->retry_timer, on_retry_timer, delay, 0);
        return WK_EV_NONE;
    }
    bool handing_back = j->phase == WK_PH_PARKING || j->phase == WK_PH_HANDBACK ||
                        j->phase == WK_PH_STALE;
    if (handing_back && (by_policy || waits_out)) {
        /* interrupted by a drain or a park: run again next delivery */
        ss->st = WK_S_PENDING;
        wk_job_emit_step(j, r->index, WK_S_PENDING, 0, 0, 0, 0, s->errstr, NULL, false);
        return WK_EV_NONE;
    }
    /* keep what the step measured: a failed check's findings matter most */
    char *out = json_dumps(s->output, JSON_COMPACT);
    wk_job_emit_step(j, r->index, WK_S_FAILED, 0, 0, 0, now, s->errstr, out, false);
    free(out);
    return fail_for_good(j, r->index, s->errstr);
}

/* An undo attempt ended with err. */
static enum wk_event undo_outcome(struct wk_step_run *r, enum tq_err err, uint64_t now)
{
    struct wk_job *j = r->job;
    struct wk_step *s = &r->pub;
    struct stepstate *ss = &j->ss[r->index];
    const struct tq_pipeline_step *def = s->def;
    if (!err) {
        ss->st = WK_S_COMPENSATED;
        ss->outage_since_ms = 0;
        wk_job_emit_step(j, r->index, WK_S_COMPENSATED, 0, 0, 0, now, NULL, NULL, true);
        return WK_EV_NONE;
    }
    bool waits_out = outage(j, ss, s, err, now);
    if (waits_out) {
        ss->undo_outage_attempts++;
        ss->undo_outage_unwritten++;
    }
    int counted = ss->undo_attempts - ss->undo_outage_attempts;
    bool by_policy = tq_err_retryable(err) && counted < (int)def->retry.max_attempts;
    if (wk_phase_starts(j->phase) == WK_START_UNDO && (by_policy || waits_out)) {
        uint32_t delay = retry_delay(def, waits_out ? ss->undo_attempts : counted);
        if (delay > j->eng->set.long_wait_ms)
            delay = j->eng->set.long_wait_ms;
        ss->st = WK_S_UNDO_WAIT;
        tq_warn("job %" PRId64 " (%s): undo of %s attempt %d failed: %s; retry in %u ms%s",
                j->cl.c.job_id, j->cl.c.tenant_id, def->name, ss->undo_attempts, s->errstr,
                delay, waits_out && !by_policy ? " (waiting out an outage)" : "");
        uv_timer_start(&ss->retry_timer, on_retry_timer, delay, 0);
        return WK_EV_NONE;
    }
    if (j->phase != WK_PH_UNDO_FAILING && tq_err_retryable(err) &&
        wk_phase_starts(j->phase) == WK_START_NONE) {
        ss->st = WK_S_UNDO_PENDING;   /* handing back or stale: undone on the next delivery */
        return WK_EV_NONE;
    }
    ss->st = WK_S_COMP_FAILED;
    wk_job_emit_step(j, r->index, WK_S_COMP_FAILED, 0, 0, 0, now, s->errstr, NULL, false);
    tq_error("ALERT job %" PRId64 " (%s): undo of step %s failed for good: %s", j->cl.c.job_id,
             j->cl.c.tenant_id, def->name, s->errstr);
    add_reason(j, "undo of %s failed: %s%s", def->name, s->errstr, "");
    return WK_EV_UNDO_FAIL;
}

/* Record the end of an attempt and decide what it means; returns the job event. */
static enum wk_event finish(struct wk_step_run *r, enum tq_err err)
{
    TQ_ASSERT(!r->done);
    r->done = true;
    struct wk_step *s = &r->pub;
    struct wk_job *j = r->job;
    struct stepstate *ss = &j->ss[r->index];
    uv_timer_stop(&ss->timeout_timer);
    bool timed_out = ss->timeout == TO_FIRED;
    if (err && timed_out) {
        err = TQ_ETIMEOUT;
        s->unsent = false;   /* a timeout after sending may have run */
        snprintf(s->errstr, sizeof(s->errstr), "timed out after %u ms", s->def->timeout_ms);
    }
    if (err && !s->errstr[0])
        snprintf(s->errstr, sizeof(s->errstr), "%s", tq_strerror(err));
    /* nothing the worker knows to be secret is stored or logged (tq/redact.h) */
    tq_redact(s->errstr);
    tq_redact(s->warning);
    tq_redact_json(s->output);
    bool reached = !err || !s->unsent;
    if (!s->undo && reached)
        ss->reached = RCH_MAYBE;
    uint64_t now = tq_now_ms();
    json_object_set_new(s->output, "duration_ms", json_integer((json_int_t)(now - r->started_ms)));
    wk_metrics_step(s->def->kind, s->undo, (double)(now - r->started_ms) / 1000.0);
    ss->cur = NULL;
    j->running--;
    wk_limit_release(j, r->index);   /* its fleet-wide permit, if any (worker/limits.c) */
    wk_job_emit_attempt(j, r, err == TQ_OK, reached, err ? s->errstr : NULL);

    if (err && atomic_load(&r->cancelled) && !timed_out) {
        /* drain or lost lease: not a failure of the step; it runs again on the next delivery */
        ss->st = s->undo ? WK_S_UNDO_PENDING : WK_S_PENDING;
        wk_job_emit_step(j, r->index, WK_S_PENDING, 0, 0, 0, 0, "interrupted", NULL, false);
        return WK_EV_NONE;
    }
    return s->undo ? undo_outcome(r, err, now) : run_outcome(r, err, now);
}

void wk_step_done(struct wk_step *s, enum tq_err err)
{
    struct wk_step_run *r = wk_step_run_of(s);
    enum wk_event ev = finish(r, err);
    if (r->in_start) {
        r->event = ev;   /* wk_step_start returns it to the engine, which is moving the job */
        return;
    }
    struct wk_job *j = r->job;
    wk_step_unref(r);
    wk_job_event(j, ev);
}

void wk_step_unref(struct wk_step_run *r)
{
    if (--r->refs > 0)
        return;
    json_decref(r->pub.params);
    json_decref(r->pub.output);
    if (r->pgcancel)
        PQfreeCancel(r->pgcancel);
    pthread_mutex_destroy(&r->cancel_mu);
    free(r);
}
