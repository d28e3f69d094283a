/*
 * What a worker checks before it takes any job (see loop.h): who it is in
 * PostgreSQL, which schema it finds, and where tenant credentials live.
 * Each refusal names what was found and what to do (docs/security.md).
 */
#include <stdio.h>
#include <string.h>

#include "credentials.h"
#include "loop.h"
#include "tq/log.h"

int wk_startup_checks(const struct wk_settings *set, struct tq_pg *pg, struct tq_queue *q)
{
    const struct tq_config *cfg = set->cfg;
    PGconn *c = tq_pg_conn(pg);
    if (!c) {
        tq_error("cannot start: %s", tq_pg_errstr(pg));
        return -1;
    }
    const char *su = PQparameterStatus(c, "is_superuser");
    if (su && strcmp(su, "on") == 0) {
        if (!cfg->allow_superuser) {
            tq_error("cannot start: TQ_DATABASE_URL logs in as \"%s\", a PostgreSQL superuser; "
                     "run the worker as the tq_worker role (docs/security.md), or pass "
                     "--allow-superuser (TQ_ALLOW_SUPERUSER=1) to run anyway",
                     PQuser(c));
            return -1;
        }
        tq_warn("running as PostgreSQL superuser \"%s\" (allowed by --allow-superuser): "
                "a worker needs only the tq_worker role", PQuser(c));
    }
    int have, want;
    if (tq_pg_schema_check(pg, &have, &want)) {
        tq_error("cannot start: %s", tq_pg_errstr(pg));
        return -1;
    }
    char why[256];
    if (wk_cred_init(cfg, why, sizeof(why))) {
        tq_error("cannot start: %s", why);
        return -1;
    }
    if (wk_cred_is_file()) {
        long long others = -1;
        tq_queue_other_workers(q, &others);
        if (others > 0)
            tq_warn("tenant credentials are in %s, one host's disk, while %lld other worker "
                    "id(s) share this queue: checks and retries on those workers will not "
                    "find them; use the pg store (unset TQ_SECRETS_STORE)",
                    wk_cred_describe(), others);
        else
            tq_info("tenant credentials are in %s (single-host store)", wk_cred_describe());
    }
    return 0;
}
