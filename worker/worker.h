/*
 * Worker-internal interfaces: the step-kind table, the job runner and the
 * HTTP endpoints. Only main.c and loop.c touch process-wide state.
 */
#ifndef WK_WORKER_H
#define WK_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "tq/config.h"
#include "tq/err.h"
#include "tq/pg.h"
#include "tq/pipeline.h"
#include "tq/queue.h"

/* What a step sees while it runs; filled by the runner. */
struct wk_step_ctx {
    const struct tq_config *cfg;
    struct tq_pg *pg;                    /* the slot's own connection */
    const struct tq_claim *claim;        /* tenant fields, job id */
    const struct tq_pipeline_step *step;
    json_t *params;                      /* rendered params (borrowed) */
    json_t *output;                      /* the step adds its results (owned by runner) */
    const atomic_bool *draining;         /* long steps poll it to stop early */
    char errstr[256];                    /* why it failed; never a secret */
};

/*
 * One step kind. run() and undo() block on the calling slot thread; both
 * must leave one effect however often they run (DESIGN.md §4), and undo()
 * must succeed when there is nothing to undo.
 */
struct wk_step_ops {
    const char *kind;
    enum tq_err (*run)(struct wk_step_ctx *ctx);
    enum tq_err (*undo)(struct wk_step_ctx *ctx);
};

extern const struct wk_step_ops wk_step_pg_tenant;
extern const struct wk_step_ops wk_step_noop;
extern const struct wk_step_ops wk_step_sleep;

/* NULL when no step kind has that name. */
const struct wk_step_ops *wk_step_lookup(const char *kind);

/* Per-slot state the runner keeps across jobs (connections, pipeline cache). */
struct wk_slot {
    int index;
    const struct tq_config *cfg;
    const char *worker_id;
    struct tq_queue *q;
    struct tq_pg *pg;
    struct tq_pipeline *pipeline;        /* last one used, by hash */
    const atomic_bool *draining;
    atomic_bool busy;                    /* holds a claimed job */
};

/*
 * One fetch-and-run cycle on the slot's thread: wait up to wait_ms for a job,
 * run it to its end (or hand it back when draining), ack it. Never blocks the
 * loop thread. Returns after at most one job.
 */
void wk_runner_cycle(struct wk_slot *slot, uint32_t wait_ms);

/* Metrics the runner counts and /metrics prints. */
struct wk_metrics {
    atomic_uint_fast64_t jobs_succeeded;
    atomic_uint_fast64_t jobs_failed;
    atomic_uint_fast64_t jobs_released;
    atomic_uint_fast64_t jobs_stale;
    atomic_uint_fast64_t step_retries;
    atomic_int in_flight;
    atomic_bool redis_ok;
    atomic_bool pg_ok;
};
extern struct wk_metrics wk_metrics;

#endif
