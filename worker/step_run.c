/*
 * One attempt of one step on the loop thread: render its params, start its
 * kind, arm its timeout, and on wk_step_done() record the attempt and decide
 * — success, a retry on a timer, a long wait in the delayed set, or failure
 * for good under the step's validation class (the job decides what follows).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "tq/log.h"
#include "tq/redact.h"
#include "tq/retry.h"
#include "tq/util.h"

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
    j->ss[i].st = S_SKIPPED;
    wk_job_emit_step(j, i, S_SKIPPED, 0, 0, now, now, NULL, "{\"reason\":\"disabled by its enabled condition\"}",
              false);
}

void wk_step_start(struct wk_job *j, size_t i, bool undo)
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
    wk_job_emit_step(j, i, ss->st, undo ? 0 : 1, undo ? 1 : 0, s->started_ms, 0, NULL, NULL, false);

    const json_t *src = def->params;
    if (undo && def->undo && json_is_object(json_object_get(def->undo, "params")))
        src = json_object_get(def->undo, "params");
    char rerr[256] = "";
    s->params = wk_template_render_json(src, &j->cl.c, rerr, sizeof(rerr));
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
    wk_job_advance(j);
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
            wk_job_emit_job(j, "running", NULL, "performance_warning", why, false, WK_NONE, 0);
            wk_job_notify(j, "performance_warning", why);
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
    /* nothing the worker knows to be secret is stored or logged (tq/redact.h) */
    tq_redact(s->errstr);
    tq_redact(s->warning);
    tq_redact_json(s->output);
    uint64_t now = tq_now_ms();
    json_object_set_new(s->output, "duration_ms", json_integer((json_int_t)(now - s->started_ms)));
    wk_metrics_step(def->kind, s->undo, (double)(now - s->started_ms) / 1000.0);
    ss->cur = NULL;
    j->running--;
    wk_job_emit_attempt(j, s, err == TQ_OK, err ? s->errstr : NULL);

    bool interrupted = err && s->cancelled && !ss->timed_out;   /* drain or lost lease */
    if (interrupted) {
        /* not a failure of the step: it runs again on the next delivery */
        ss->st = s->undo ? S_UNDO_PENDING : S_PENDING;
        wk_job_emit_step(j, s->index, S_PENDING, 0, 0, 0, 0, "interrupted", NULL, false);
    } else if (!s->undo) {
        if (!err) {
            ss->st = S_SUCCEEDED;
            if (s->warning[0]) {
                char why[400];
                snprintf(why, sizeof(why), "step %s: %s", def->name, s->warning);
                tq_warn("job %" PRId64 " (%s): %s", j->cl.c.job_id, j->cl.c.tenant_id, why);
                wk_job_emit_job(j, "running", NULL, "step_warning", why, false, WK_NONE, 0);
            }
            char *out = json_dumps(s->output, JSON_COMPACT);
            wk_job_emit_step(j, s->index, S_SUCCEEDED, 0, 0, 0, now, NULL, out, true);
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
                wk_job_emit_step(j, s->index, S_PENDING, 0, 0, 0, 0, s->errstr, NULL, false);
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
                wk_job_emit_step(j, s->index, S_PENDING, 0, 0, 0, 0, s->errstr, NULL, false);
            } else {
                /* keep what the step measured: a failed check's findings matter most */
                char *out = json_dumps(s->output, JSON_COMPACT);
                wk_job_emit_step(j, s->index, S_FAILED, 0, 0, 0, now, s->errstr, out, false);
                free(out);
                fail_for_good(j, s->index, s->errstr);
            }
        }
    } else {
        if (!err) {
            ss->st = S_COMPENSATED;
            wk_job_emit_step(j, s->index, S_COMPENSATED, 0, 0, 0, now, NULL, NULL, true);
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
                wk_job_emit_step(j, s->index, S_COMP_FAILED, 0, 0, 0, now, s->errstr, NULL, false);
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
    wk_job_advance(j);
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
