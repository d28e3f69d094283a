/* tq-enqueue retry: run a stopped tenant's provisioning again. */
#include "cli.h"
#include "tq/pipeline.h"
#include "tq/pipeline_registry.h"

static const char usage[] =
    "usage: tq-enqueue retry ID [--by WHO] [--json]\n"
    "\n"
    "Retry a tenant that stopped:\n"
    "  blocked          its job is queued again; the worker re-runs only the steps\n"
    "                   not recorded succeeded (fix the cause first)\n"
    "  rollback_failed  its job is queued again in phase rollback: the worker\n"
    "                   resumes undoing; the tenant shows rolling_back\n"
    "  failed           a new provision job (idempotency key <tenant>:retry:<n>) on\n"
    "                   the fleet's default pipeline (tq-enqueue pipeline list);\n"
    "                   everything is re-created\n"
    "The tenant's failure_reason is cleared (the audit event \"retry_requested\"\n"
    "keeps it) and the job is dispatched. Other statuses are refused (exit 3);\n"
    "a dead job is requeued with `tq-enqueue dead --requeue`.\n"
    "\n"
    "options:\n"
    "  --by WHO   who retries, for the audit log (default \"" CLI_DEFAULT_ACTOR "\")\n"
    "  --json     {\"tenant_id\", \"action\": \"retry_requested\", \"from_status\", \"status\",\n"
    "              \"job_id\", \"job_status\", \"existed\", \"dispatch_deferred\", ...}\n"
    "\n"
    "examples:\n"
    "  tq-enqueue retry acme-corp\n"
    "  tq-enqueue --json retry acme-corp\n"
    "\n" CLI_EXIT_CODES;

int cmd_retry(struct cli *c, int argc, char **argv)
{
    static const struct action_spec spec = {usage, false, NULL, false};
    struct action_args a;
    int rc = action_parse(c, argc, argv, &spec, &a);
    if (rc >= 0)
        return rc;
    char plwhy[1024] = "";
    struct tq_pipeline *pl = NULL;
    struct tq_pg *pg = NULL;
    if ((rc = cli_open_pg(c, &pg)) == EXIT_DONE) {
        /* Only a failed tenant needs the pipeline; a missing default matters only then. */
        if (tq_pipeline_named(pg, NULL, &pl) != TQ_OK) {
            snprintf(plwhy, sizeof(plwhy), "%s", tq_pg_errstr(pg));
            pl = NULL;
        }
        struct tq_admin_result res;
        enum tq_err err = tq_admin_retry(pg, a.tenant, a.by, pl, &res);
        if (err == TQ_ECONFLICT && res.needs_pipeline)
            rc = cli_fail(c, EXIT_USAGE, NULL, "%s: %s: %s", a.tenant, tq_pg_errstr(pg), plwhy);
        else
            rc = action_finish(c, err, &res, tq_pg_errstr(pg));
    }
    tq_pg_close(pg);
    tq_pipeline_free(pl);
    return rc;
}
