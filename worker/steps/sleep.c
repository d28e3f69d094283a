/*
 * Synthetic step kinds for pipelines that exercise the engine, and for
 * benchmarks: "noop" succeeds at once; "sleep" waits params.ms (default 200)
 * on a loop timer and can be told to fail:
 *   fail_attempts N        the first N attempts of this delivery fail (retryable)
 *   unreachable_attempts N the first N attempts fail as if a dependency were
 *                          unreachable (TQ_ECONNECT: an outage, not a verdict)
 *   fail_if_exists PATH    fail while PATH exists (an operator "fixes" it by removing it)
 *   undo_fail_if_exists P  the undo fails while P exists
 *   error TEXT             the message of those failures
 * Both are idempotent by construction (no effect).
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "../step.h"
#include "tq/util.h"

static enum tq_err noop_start(struct wk_step *s)
{
    wk_step_done(s, TQ_OK);
    return TQ_OK;
}

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

static void fire(uv_timer_t *t)
{
    struct wk_step *s = t->data;
    s->kind_data = NULL;
    uv_close((uv_handle_t *)t, timer_closed);
    const json_t *p = s->params;
    const char *msg = json_string_value(json_object_get(p, s->undo ? "undo_error" : "error"));
    const char *path =
        json_string_value(json_object_get(p, s->undo ? "undo_fail_if_exists" : "fail_if_exists"));
    json_int_t fail_n = json_integer_value(json_object_get(p, "fail_attempts"));
    json_int_t unreachable_n = json_integer_value(json_object_get(p, "unreachable_attempts"));
    if (path && access(path, F_OK) == 0) {
        snprintf(s->errstr, sizeof(s->errstr), "%s", msg ? msg : "condition file present");
        wk_step_done(s, TQ_ESTEP);
        return;
    }
    if (!s->undo && s->attempt <= unreachable_n) {
        snprintf(s->errstr, sizeof(s->errstr),
                 "could not connect to the dependency (attempt %d of %lld unreachable)",
                 s->attempt, (long long)unreachable_n);
        wk_step_done(s, TQ_ECONNECT);
        return;
    }
    if (!s->undo && s->attempt <= fail_n) {
        snprintf(s->errstr, sizeof(s->errstr), "%s (attempt %d of %lld failing)",
                 msg ? msg : "injected failure", s->attempt, (long long)fail_n);
        wk_step_done(s, TQ_ESTEP);
        return;
    }
    json_object_set_new(s->output, "slept_ms", json_object_get(p, "ms")
                                                   ? json_incref(json_object_get(p, "ms"))
                                                   : json_integer(200));
    wk_step_done(s, TQ_OK);
}

static enum tq_err sleep_start(struct wk_step *s)
{
    json_int_t ms = 200;
    const json_t *v = json_object_get(s->params, "ms");
    if (v && !json_is_integer(v)) {
        snprintf(s->errstr, sizeof(s->errstr), "params.ms must be an integer");
        return TQ_EINVALID;
    }
    if (v)
        ms = json_integer_value(v);
    if (ms < 0 || ms > 86400000) {
        snprintf(s->errstr, sizeof(s->errstr), "params.ms must be 0..86400000");
        return TQ_EINVALID;
    }
    if (s->undo)
        ms = ms > 50 ? 50 : ms;   /* undoing nothing is quick */
    uv_timer_t *t = tq_xmalloc(sizeof(*t));
    uv_timer_init(s->loop, t);
    t->data = s;
    s->kind_data = t;
    uv_timer_start(t, fire, (uint64_t)ms, 0);
    return TQ_OK;
}

static void sleep_cancel(struct wk_step *s)
{
    uv_timer_t *t = s->kind_data;
    if (!t)
        return;
    s->kind_data = NULL;
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, timer_closed);
    snprintf(s->errstr, sizeof(s->errstr), "cancelled");
    wk_step_done(s, TQ_ECANCELED);
}

const struct wk_step_ops wk_step_noop = {"noop", noop_start, NULL};
const struct wk_step_ops wk_step_sleep = {"sleep", sleep_start, sleep_cancel};
