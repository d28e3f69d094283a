/*
 * The engine's half of a step (hiredis async.h / async_private.h): what the
 * engine and the blocking pool keep about one attempt, around the public
 * struct wk_step a kind sees. Worker-internal; never included by a kind.
 */
#ifndef WK_STEP_INT_H
#define WK_STEP_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "step.h"

struct wk_job;

struct wk_step_run {
    struct wk_step pub;                    /* first: a kind's wk_step * is this struct */
    struct wk_job *job;
    size_t index;
    uint64_t started_ms;
    bool done;
    /* Set on the loop thread (timeout, drain, lost lease), read by the pool
       thread of a blocking step before it starts its statement. */
    atomic_bool cancelled;
    int refs;                              /* engine 1, + an in-flight cancel; loop thread */
    /* blocking helper state (blocking.c) */
    uv_work_t work;
    uv_work_t cancel_work;
    pthread_mutex_t cancel_mu;             /* guards pgcancel */
    PGcancel *pgcancel;
    wk_blocking_fn *blocking_fn;
    wk_offload_fn *offload_fn;
    enum tq_err blocking_err;
    bool in_start;                         /* ops->start() is running: done must not move the job */
    int event;                             /* enum wk_event of a step done inside start() */
};

static inline struct wk_step_run *wk_step_run_of(struct wk_step *s)
{
    return (struct wk_step_run *)s;
}

/* Drop a reference; the step is freed with the last one. Loop thread only. */
void wk_step_unref(struct wk_step_run *r);
/* Ask the step's kind to stop it (once; later calls do nothing). Loop thread. */
void wk_step_cancel(struct wk_step_run *r);

/* NULL when no step kind has that name. */
const struct wk_step_ops *wk_step_lookup(const char *kind);
/*
 * Check the table of kinds against libtq's list of kinds a pipeline may
 * name: every name once, each with a start function. 0, or -1 with why.
 */
int wk_step_kinds_check(char *why, size_t len);

void wk_blocking_init(const char *database_url);
void wk_blocking_shutdown(void);

#endif
