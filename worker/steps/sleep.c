/*
 * Two trivial step kinds: "noop" succeeds at once; "sleep" waits
 * params.ms milliseconds (default 200), waking early when the worker drains.
 * They exist for pipelines that test the engine and for benchmarks.
 */
#include <stdio.h>

#include "../worker.h"
#include "tq/util.h"

static enum tq_err noop_run(struct wk_step_ctx *ctx)
{
    (void)ctx;
    return TQ_OK;
}

static enum tq_err sleep_run(struct wk_step_ctx *ctx)
{
    json_int_t ms = 200;
    const json_t *v = json_object_get(ctx->params, "ms");
    if (json_is_integer(v))
        ms = json_integer_value(v);
    if (ms < 0 || ms > 3600000) {
        snprintf(ctx->errstr, sizeof(ctx->errstr), "params.ms must be 0..3600000");
        return TQ_EINVALID;
    }
    uint64_t end = tq_mono_ms() + (uint64_t)ms;
    while (tq_mono_ms() < end) {
        if (atomic_load(ctx->draining)) {
            snprintf(ctx->errstr, sizeof(ctx->errstr), "interrupted: worker is draining");
            return TQ_ECANCELED;
        }
        uint64_t left = end - tq_mono_ms();
        tq_sleep_ms(left < 50 ? left : 50);
    }
    json_object_set_new(ctx->output, "slept_ms", json_integer(ms));
    return TQ_OK;
}

const struct wk_step_ops wk_step_noop = {"noop", noop_run, noop_run};
const struct wk_step_ops wk_step_sleep = {"sleep", sleep_run, noop_run};
