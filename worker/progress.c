/*
 * What the engine tells the writer: step transitions, finished attempts and
 * job rows, each tagged with the claim's epoch. A stale job queues nothing.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "tq/log.h"
#include "tq/retry.h"
#include "tq/util.h"

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

void wk_job_emit_step(struct wk_job *j, size_t i, enum st st, int ad, int ud, uint64_t started,
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

void wk_job_emit_attempt(struct wk_job *j, struct wk_step *s, bool ok, const char *error)
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

void wk_job_emit_job(struct wk_job *j, const char *jstatus, const char *tstatus, const char *event,
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
