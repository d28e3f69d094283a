/*
 * Step "check_audit" (a compliance check): every step of this job recorded
 * as succeeded in tq.job_steps has its step_succeeded event in
 * tq.audit_events (detail->>'step'). Steps still in the writer's queue are
 * not recorded yet and not checked; a step row and its audit event commit
 * in one transaction, so what is recorded is consistent.
 * Run: one read-only query; missing events -> TQ_ESTEP naming the steps.
 * Undo: nothing (a check has no effect). Both are idempotent by construction.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../worker.h"
#include "tq/util.h"

static enum tq_err audit_run(struct wk_step *s, PGconn *db)
{
    char job[24];
    snprintf(job, sizeof(job), "%" PRId64, s->claim->job_id);
    const char *pv[] = {job};
    PGresult *r = PQexecParams(
        db,
        "SELECT s.step, EXISTS (SELECT 1 FROM tq.audit_events a WHERE a.job_id = s.job_id"
        "   AND a.event = 'step_succeeded' AND a.detail->>'step' = s.step) AS audited"
        " FROM tq.job_steps s WHERE s.job_id = $1::bigint AND s.status = 'succeeded'"
        " ORDER BY s.step",
        1, NULL, pv, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        snprintf(s->errstr, sizeof(s->errstr), "could not read the job's audit events: %s",
                 msg ? msg : PQerrorMessage(db));
        PQclear(r);
        return PQstatus(db) == CONNECTION_OK ? TQ_EPG : TQ_ECONNECT;
    }
    json_t *checked = json_array(), *missing = json_array();
    struct tq_buf names;
    tq_buf_init(&names);
    for (int i = 0; i < PQntuples(r); i++) {
        const char *step = PQgetvalue(r, i, 0);
        json_array_append_new(checked, json_string(step));
        if (strcmp(PQgetvalue(r, i, 1), "t") != 0) {
            json_array_append_new(missing, json_string(step));
            tq_buf_printf(&names, "%s%s", names.len ? ", " : "", step);
        }
    }
    PQclear(r);
    enum tq_err err = TQ_OK;
    if (json_array_size(missing) > 0) {
        snprintf(s->errstr, sizeof(s->errstr),
                 "audit events missing for %zu of %zu succeeded step%s: %s",
                 json_array_size(missing), json_array_size(checked),
                 json_array_size(checked) == 1 ? "" : "s", names.data);
        err = TQ_ESTEP;
    }
    json_object_set_new(s->output, "steps_checked", checked);
    json_object_set_new(s->output, "missing", missing);
    tq_buf_cleanup(&names);
    return err;
}

static enum tq_err audit_start(struct wk_step *s)
{
    if (s->undo) {
        wk_step_done(s, TQ_OK);
        return TQ_OK;
    }
    return wk_step_blocking(s, audit_run);
}

const struct wk_step_ops wk_step_check_audit = {"check_audit", audit_start,
                                                wk_step_blocking_cancel};
