/*
 * What the engine tells the writer: step transitions, finished attempts and
 * job rows, each tagged with the claim's epoch; status names from
 * tq/status.h. A stale job queues nothing.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "tq/log.h"
#include "tq/retry.h"
#include "tq/status.h"
#include "tq/util.h"

void wk_job_emit_step(struct wk_job *j, size_t i, enum wk_st st, int ad, int ud, uint64_t started,
                      uint64_t finished, const char *error, const char *output, bool progress)
{
    if (j->phase == WK_PH_STALE)
        return;
    struct stepstate *ss = &j->ss[i];
    struct tq_step_row r = {
        .job_id = j->cl.c.job_id,
        .epoch = j->cl.c.epoch,
        .step = j->pl->steps[i].name,
        .status = wk_st_status(st),
        .attempts_delta = ad,
        .undo_attempts_delta = ud,
        /* outage attempts ride on the step's next row, whichever it is */
        .outage_attempts_delta = ss->outage_unwritten,
        .undo_outage_attempts_delta = ss->undo_outage_unwritten,
        .started_ms = (int64_t)started,
        .finished_ms = (int64_t)finished,
        .error = error,
        .output = output,
        .progress = progress,
    };
    ss->outage_unwritten = ss->undo_outage_unwritten = 0;
    wk_writer_step(j->eng->w, j, &r);
}

void wk_job_emit_attempt(struct wk_job *j, struct wk_step_run *run, bool ok, bool reached,
                         const char *error)
{
    if (j->phase == WK_PH_STALE)
        return;
    const struct wk_step *s = &run->pub;
    struct tq_attempt_row r = {
        .job_id = j->cl.c.job_id,
        .epoch = j->cl.c.epoch,
        .step = s->def->name,
        .phase = s->undo ? "undo" : "run",
        .attempt = s->attempt,
        .status = ok ? TQ_SS_SUCCEEDED : TQ_SS_FAILED,
        .reached = reached,
        .started_ms = (int64_t)run->started_ms,
        .finished_ms = (int64_t)tq_now_ms(),
        .error = error,
    };
    wk_writer_attempt(j->eng->w, j, &r);
}

void wk_job_emit_job(struct wk_job *j, enum tq_job_status jstatus, enum tq_tenant_status tstatus,
                     const char *event, const char *reason, enum wk_redis_act act,
                     uint64_t due_ms)
{
    if (j->phase == WK_PH_STALE)
        return;
    bool last = act != WK_NONE;
    struct tq_job_row r = {
        .job_id = j->cl.c.job_id,
        .epoch = j->cl.c.epoch,
        .job_status = jstatus,
        .tenant_status = tstatus,
        .phase = wk_phase_stored(j->phase),
        .event = event,
        .reason = reason,
        .failed_step = j->failed_step[0] ? j->failed_step : NULL,
        .not_before_ms = (int64_t)due_ms,
        .release_lease = last,
    };
    wk_writer_job(j->eng->w, j, &r, act, j->id, due_ms);
}

/* Template values for the running job. */
