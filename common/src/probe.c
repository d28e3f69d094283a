/* The heartbeat's readiness probe (tq/probe.h): one statement, three facts. */
#include "tq/probe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"

enum tq_err tq_pg_probe(struct tq_pg *pg, char *problem, size_t len)
{
    problem[0] = '\0';
    enum tq_err err;
    PGresult *r = tq__pg_query(pg, &err, "probe the database",
                               "SELECT current_setting('transaction_read_only'),"
                               " pg_is_in_recovery(),"
                               " (SELECT coalesce(max(version), 0) FROM tq.schema_migrations)",
                               0, NULL);
    if (!r) {
        if (strstr(tq_pg_errstr(pg), "SQLSTATE 42P01") || strstr(tq_pg_errstr(pg), "SQLSTATE 3F000")) {
            snprintf(problem, len, "postgresql schema is not migrated (no tq.schema_migrations)");
            return TQ_OK;   /* it answered: reachable, but not ours yet */
        }
        return err;
    }
    int have = atoi(PQgetvalue(r, 0, 2)), want = tq_pg_schema_target();
    if (strcmp(PQgetvalue(r, 0, 1), "t") == 0)
        snprintf(problem, len, "postgresql is a standby (read-only, in recovery)");
    else if (strcmp(PQgetvalue(r, 0, 0), "on") == 0)
        snprintf(problem, len, "postgresql is read-only (transaction_read_only = on)");
    else if (have < want)
        snprintf(problem, len,
                 "postgresql schema is not migrated (version %d, this worker needs %d: run "
                 "tq-enqueue migrate)", have, want);
    else if (have > want)
        snprintf(problem, len, "postgresql schema is newer (version %d) than this worker (%d)",
                 have, want);
    PQclear(r);
    return TQ_OK;
}
