/*
 * Step "tenant_config": the tenant's configuration row in tq.tenant_configs,
 * built from its tier's facts (tq_tier_lookup, docs/design.md §1): features,
 * rate limits, model, vector replicas, archive age and p95 SLA. params.tier
 * overrides the tenant's tier (rendered template, e.g. for a test).
 *
 * Run:  INSERT ... ON CONFLICT (tenant_id) DO UPDATE: one row, whatever
 *       the number of runs, holding the config of the latest run.
 * Undo: DELETE the row; deleting nothing is success.
 * Both are one parameterised statement on a pooled platform connection
 * (wk_step_blocking), cancelled with PQcancel on timeout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../step.h"
#include "tq/pg.h"
#include "tq/request.h"

static json_t *config_for(const struct tq_tier_info *t)
{
    return json_pack("{s:s, s:{s:b, s:b, s:b}, s:{s:i, s:i}, s:s, s:i, s:i, s:i}",
                     "tier", t->name,
                     "features", "advanced_search", t->advanced_search, "custom_models",
                     t->custom_models, "real_time_indexing", t->real_time_indexing,
                     "rate_limits", "documents_per_month", t->documents_per_month,
                     "queries_per_minute", t->queries_per_minute,
                     "model", t->model,
                     "vector_replicas", t->vector_replicas,
                     "archive_after_days", t->archive_after_days,
                     "p95_sla_ms", t->p95_sla_ms);
}

static enum tq_err failed(struct wk_step *s, PGconn *db, PGresult *r, const char *what)
{
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    snprintf(s->errstr, sizeof(s->errstr), "could not %s: %s", what,
             msg ? msg : PQerrorMessage(db));
    enum tq_err err = tq_pg_classify(db, r);
    PQclear(r);
    return err;
}

static enum tq_err config_run(struct wk_step *s, PGconn *db)
{
    const char *tier = json_string_value(json_object_get(s->params, "tier"));
    if (!tier || !*tier)
        tier = s->claim->tier;
    const struct tq_tier_info *t = tq_tier_lookup(tier);
    if (!t) {
        snprintf(s->errstr, sizeof(s->errstr), "cannot configure tier \"%.32s\": not a tier",
                 tier);
        return TQ_EINVALID;
    }
    json_t *cfg = config_for(t);
    char *text = json_dumps(cfg, JSON_COMPACT | JSON_SORT_KEYS);
    const char *pv[] = {s->claim->tenant_id, text};
    PGresult *r = PQexecParams(
        db,
        "INSERT INTO tq.tenant_configs AS c (tenant_id, config, updated_at)"
        " VALUES ($1, $2::jsonb, now())"
        " ON CONFLICT (tenant_id) DO UPDATE SET config = excluded.config, updated_at = now()"
        " RETURNING (xmax = 0) AS inserted",
        2, NULL, pv, NULL, NULL, 0);
    free(text);
    enum tq_err err = TQ_OK;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        json_decref(cfg);
        return failed(s, db, r, "store the tenant's config");
    }
    bool inserted = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    json_object_set_new(s->output, "config", cfg);
    json_object_set_new(s->output, "inserted", json_boolean(inserted));
    return err;
}

static enum tq_err config_undo(struct wk_step *s, PGconn *db)
{
    const char *pv[] = {s->claim->tenant_id};
    PGresult *r = PQexecParams(db, "DELETE FROM tq.tenant_configs WHERE tenant_id = $1", 1, NULL,
                               pv, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return failed(s, db, r, "delete the tenant's config");
    json_object_set_new(s->output, "deleted", json_integer(atoi(PQcmdTuples(r))));
    PQclear(r);
    return TQ_OK;
}

static enum tq_err config_start(struct wk_step *s)
{
    return wk_step_blocking(s, s->undo ? config_undo : config_run);
}

const struct wk_step_ops wk_step_tenant_config = {"tenant_config", config_start,
                                                  wk_step_blocking_cancel};
