/* Operator-owned named pipelines (see tq/pipeline_registry.h). */
#include "tq/pipeline_registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"
#include "tq/util.h"

bool tq_pipeline_name_valid(const char *name, char *why, size_t whylen)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > TQ_PIPELINE_NAME_MAX) {
        snprintf(why, whylen, "must be 1 to %d characters", TQ_PIPELINE_NAME_MAX);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-'))) {
            snprintf(why, whylen, "may hold only a-z, 0-9, '.', '_' and '-', and start with a"
                                  " letter or digit");
            return false;
        }
    }
    return true;
}


enum tq_err tq_pipeline_register(struct tq_pg *pg, const char *name, const struct tq_pipeline *pl,
                                 bool make_default, const char *actor, bool *is_default)
{
    char why[160];
    if (!tq_pipeline_name_valid(name, why, sizeof(why)))
        return tq__pg_set_err(pg, TQ_EINVALID, "pipeline name \"%.80s\": %s",
                              name ? name : "", why);
    enum tq_err err;
    PGresult *r = tq__pg_query(pg, &err, "begin", "BEGIN", 0, NULL);
    if (!r)
        goto fail;
    PQclear(r);
    const char *pp[] = {pl->hash, pl->name, pl->text};
    r = tq__pg_query(pg, &err, "store the pipeline",
                     "INSERT INTO tq.pipelines (hash, name, body) VALUES ($1, $2, $3)"
                     " ON CONFLICT (hash) DO NOTHING", 3, pp);
    if (!r)
        goto fail;
    PQclear(r);
    /* one default: take it from the others first (the unique index checks each row) */
    const char *pd[] = {name, make_default ? "t" : "f"};
    r = tq__pg_query(pg, &err, "move the default",
                     "UPDATE tq.pipeline_names SET is_default = false"
                     " WHERE is_default AND name <> $1 AND $2::boolean", 2, pd);
    if (!r)
        goto fail;
    PQclear(r);
    const char *pn[] = {name, pl->hash, make_default ? "t" : "f", actor};
    r = tq__pg_query(pg, &err, "register the pipeline name",
                     "WITH prev AS (SELECT pipeline_hash FROM tq.pipeline_names WHERE name = $1),"
                     " up AS (INSERT INTO tq.pipeline_names AS n (name, pipeline_hash, is_default,"
                     "   registered_by)"
                     "   VALUES ($1, $2, $3::boolean OR NOT EXISTS (SELECT 1 FROM"
                     "   tq.pipeline_names WHERE is_default), $4)"
                     "   ON CONFLICT (name) DO UPDATE SET pipeline_hash = EXCLUDED.pipeline_hash,"
                     "   is_default = n.is_default OR EXCLUDED.is_default, registered_at = now(),"
                     "   registered_by = EXCLUDED.registered_by RETURNING is_default)"
                     " SELECT (SELECT is_default FROM up)::text,"
                     "   coalesce((SELECT pipeline_hash FROM prev), '')", 4, pn);
    if (!r)
        goto fail;
    bool def = strcmp(PQgetvalue(r, 0, 0), "true") == 0;
    char prev[65];
    snprintf(prev, sizeof(prev), "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    json_t *detail = json_pack("{s:s, s:s, s:s?, s:s, s:b, s:I}", "name", name, "hash", pl->hash,
                               "previous_hash", prev[0] ? prev : NULL, "pipeline", pl->name,
                               "default", def, "steps", (json_int_t)pl->nsteps);
    char *dtext = json_dumps(detail, JSON_COMPACT);
    json_decref(detail);
    const char *pa[] = {actor, dtext};
    r = tq__pg_query(pg, &err, "record the audit event",
                     "INSERT INTO tq.audit_events (actor, event, detail)"
                     " VALUES ($1, 'pipeline_registered', $2::jsonb)", 2, pa);
    free(dtext);
    if (!r)
        goto fail;
    PQclear(r);
    r = tq__pg_query(pg, &err, "commit", "COMMIT", 0, NULL);
    if (!r)
        goto fail;
    PQclear(r);
    if (is_default)
        *is_default = def;
    return TQ_OK;
fail:
    tq__pg_rollback(pg);
    return err;
}

enum tq_err tq_pipeline_named(struct tq_pg *pg, const char *name, struct tq_pipeline **out)
{
    *out = NULL;
    bool dflt = !name || !*name;
    const char *p[] = {dflt ? "" : name};
    enum tq_err err;
    PGresult *r = tq__pg_query(pg, &err, "read the pipeline registry",
                               "SELECT n.name, p.body FROM tq.pipeline_names n"
                               " JOIN tq.pipelines p ON p.hash = n.pipeline_hash"
                               " WHERE CASE WHEN $1 = '' THEN n.is_default ELSE n.name = $1 END",
                               1, p);
    if (!r)
        return err;
    if (PQntuples(r) != 1) {
        PQclear(r);
        if (dflt)
            return tq__pg_set_err(pg, TQ_ENOTFOUND,
                                  "no default pipeline is registered (an operator registers"
                                  " one: tq-enqueue pipeline register FILE --default)");
        return tq__pg_set_err(pg, TQ_ENOTFOUND, "no pipeline named \"%.80s\" is registered"
                                                " (tq-enqueue pipeline list)", name);
    }
    char *source = tq_xasprintf("pipeline \"%s\"", PQgetvalue(r, 0, 0));
    char why[512];   /* the parser's own buffer: a stored pipeline this build cannot read */
    err = tq_pipeline_parse(PQgetvalue(r, 0, 1), (size_t)PQgetlength(r, 0, 1), source, out,
                            why, sizeof(why));
    free(source);
    PQclear(r);
    if (err)
        tq__pg_set_err(pg, err, "%s", why);
    return err;
}

enum tq_err tq_pipeline_list(struct tq_pg *pg, json_t **out)
{
    *out = NULL;
    enum tq_err err;
    PGresult *r = tq__pg_query(pg, &err, "read the pipeline registry",
                               "SELECT coalesce(json_agg(json_build_object('name', n.name, 'hash',"
                               " n.pipeline_hash, 'default', n.is_default, 'pipeline', p.name,"
                               " 'steps', json_array_length((p.body::json)->'steps'),"
                               " 'registered_at', n.registered_at, 'registered_by',"
                               " n.registered_by) ORDER BY n.name), '[]')::text"
                               " FROM tq.pipeline_names n JOIN tq.pipelines p"
                               " ON p.hash = n.pipeline_hash", 0, NULL);
    if (!r)
        return err;
    *out = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
    PQclear(r);
    if (!*out)
        return tq__pg_set_err(pg, TQ_EPG, "could not read the pipeline registry: unexpected reply");
    return TQ_OK;
}
