/*
 * Step "check_audit" (a compliance check): every step of this job recorded
 * as succeeded in tq.job_steps has its step_succeeded event in
 * tq.audit_events (detail->>'step'). The writer commits step rows in groups,
 * so first it waits (params.wait_ms, default 5000) until every step this
 * one depends on, directly or not (from the job's stored pipeline), has its
 * outcome recorded; a step row and its audit event commit in one
 * transaction. Steps still unrecorded after the wait are listed in the
 * output, not failed. Missing events -> TQ_ESTEP naming the steps.
 * Run: read-only queries. Undo: nothing. Both idempotent by construction.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../step.h"
#include "tq/pg.h"
#include "tq/pipeline.h"
#include "tq/util.h"

#define POLL_MS 50

static enum tq_err pg_failed(struct wk_step *s, PGconn *db, PGresult *r, const char *what)
{
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    snprintf(s->errstr, sizeof(s->errstr), "could not %s: %s", what,
             msg ? msg : PQerrorMessage(db));
    enum tq_err err = tq_pg_classify(db, r);
    PQclear(r);
    return err;
}

/* Names of the steps this one depends on, directly or not (JSON array). */
static enum tq_err ancestors(struct wk_step *s, PGconn *db, json_t **out)
{
    const char *pv[] = {s->claim->pipeline_hash};
    PGresult *r = PQexecParams(db, "SELECT body FROM tq.pipelines WHERE hash = $1", 1, NULL, pv,
                               NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return pg_failed(s, db, r, "read the job's pipeline");
    *out = json_array();
    if (PQntuples(r) != 1) {
        PQclear(r);
        return TQ_OK;   /* no stored pipeline: check what is recorded */
    }
    struct tq_pipeline *pl = NULL;
    char why[256];
    enum tq_err err = tq_pipeline_parse(PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0),
                                        "stored pipeline", &pl, why, sizeof(why));
    PQclear(r);
    if (err)
        return TQ_OK;
    size_t n = pl->nsteps, me = n;
    for (size_t i = 0; i < n; i++)
        if (strcmp(pl->steps[i].name, s->def->name) == 0)
            me = i;
    if (me < n) {
        bool *seen = tq_xcalloc(n, sizeof(*seen));
        size_t *stack = tq_xcalloc(n + 1, sizeof(*stack));   /* each step is pushed once */
        size_t top = 0;
        stack[top++] = me;
        while (top > 0) {
            const struct tq_pipeline_step *d = &pl->steps[stack[--top]];
            for (size_t k = 0; k < d->nneeds; k++)
                if (!seen[d->needs[k]]) {
                    seen[d->needs[k]] = true;
                    stack[top++] = d->needs[k];
                }
        }
        for (size_t i = 0; i < n; i++)
            if (seen[i])
                json_array_append_new(*out, json_string(pl->steps[i].name));
        free(stack);
        free(seen);
    }
    tq_pipeline_free(pl);
    return TQ_OK;
}

/* Wait until each of names has an outcome row; what is still missing stays in names. */
static enum tq_err await_recorded(struct wk_step *s, PGconn *db, const char *job, json_t *names,
                                  int wait_ms)
{
    uint64_t deadline = tq_mono_ms() + (uint64_t)wait_ms;
    for (;;) {
        char *list = json_dumps(names, JSON_COMPACT);
        const char *pv[] = {job, list};
        PGresult *r = PQexecParams(
            db,
            "SELECT coalesce(json_agg(n.step ORDER BY n.step), '[]')::text"
            " FROM json_array_elements_text($2::json) AS n(step)"
            " WHERE NOT EXISTS (SELECT 1 FROM tq.job_steps s WHERE s.job_id = $1::bigint"
            "   AND s.step = n.step AND s.status NOT IN ('pending', 'running'))",
            2, NULL, pv, NULL, NULL, 0);
        free(list);
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            return pg_failed(s, db, r, "read the job's steps");
        json_t *left = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
        PQclear(r);
        json_array_clear(names);
        json_array_extend(names, left);
        json_decref(left);
        if (json_array_size(names) == 0 || tq_mono_ms() >= deadline)
            return TQ_OK;
        tq_sleep_ms(POLL_MS);
    }
}

static enum tq_err audit_run(struct wk_step *s, PGconn *db)
{
    char job[24];
    snprintf(job, sizeof(job), "%" PRId64, s->claim->job_id);
    int wait_ms = 5000;
    const json_t *w = json_object_get(s->params, "wait_ms");
    if (json_is_integer(w) && json_integer_value(w) >= 0 && json_integer_value(w) <= 60000)
        wait_ms = (int)json_integer_value(w);
    json_t *pending = NULL;
    enum tq_err err = ancestors(s, db, &pending);
    if (!err)
        err = await_recorded(s, db, job, pending, wait_ms);
    if (err) {
        json_decref(pending);
        return err;
    }
    json_object_set_new(s->output, "not_yet_recorded", pending);
    const char *pv[] = {job};
    PGresult *r = PQexecParams(
        db,
        "SELECT s.step, EXISTS (SELECT 1 FROM tq.audit_events a WHERE a.job_id = s.job_id"
        "   AND a.event = 'step_succeeded' AND a.detail->>'step' = s.step) AS audited"
        " FROM tq.job_steps s WHERE s.job_id = $1::bigint AND s.status = 'succeeded'"
        " ORDER BY s.step",
        1, NULL, pv, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        return pg_failed(s, db, r, "read the job's audit events");
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
