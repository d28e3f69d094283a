/*
 * Why a delivered job id was not claimable (tq/jobid.h): one read of the
 * ids' rows, done only when a claim left some ids out, so the fetcher can
 * say "no such job" or "already succeeded" instead of dropping them silently.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"
#include "tq/jobid.h"
#include "tq/util.h"

enum tq_err tq_pg_job_states(struct tq_pg *pg, const int64_t *ids, size_t n,
                             char (*states)[24])
{
    for (size_t i = 0; i < n; i++)
        states[i][0] = '\0';
    if (n == 0)
        return TQ_OK;
    struct tq_buf b;
    tq_buf_init(&b);
    tq_buf_puts(&b, "{");
    for (size_t i = 0; i < n; i++)
        tq_buf_printf(&b, "%s%" PRId64, i ? "," : "", ids[i]);
    tq_buf_puts(&b, "}");
    const char *p[] = {b.data};
    enum tq_err err;
    PGresult *r = tq__pg_query(pg, &err, "read the status of jobs that were not claimable",
                               "SELECT id, status FROM tq.jobs WHERE id = ANY($1::bigint[])", 1, p);
    tq_buf_cleanup(&b);
    for (int row = 0; r && row < PQntuples(r); row++) {
        int64_t id = strtoll(PQgetvalue(r, row, 0), NULL, 10);
        for (size_t i = 0; i < n; i++)
            if (ids[i] == id)
                snprintf(states[i], sizeof(states[i]), "%s", PQgetvalue(r, row, 1));
    }
    PQclear(r);
    return err;
}

enum tq_err tq_pg_audit_dead_drop(struct tq_pg *pg, const char *actor, const char *value,
                                  long long removed)
{
    char n[24];
    snprintf(n, sizeof(n), "%lld", removed);
    const char *p[] = {actor, value, n};
    enum tq_err err;
    PGresult *r = tq__pg_query(pg, &err, "write the audit event of the drop",
                               "INSERT INTO tq.audit_events(actor, event, detail)"
                               " VALUES ($1, 'dead_value_dropped',"
                               "  jsonb_build_object('value', $2::text, 'removed', $3::int))",
                               3, p);
    PQclear(r);
    return err;
}
