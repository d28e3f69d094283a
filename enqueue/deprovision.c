/* tq-enqueue deprovision: remove an active tenant's resources. */
#include "cli.h"

static const char usage[] =
    "usage: tq-enqueue deprovision ID [--by WHO] [--json]\n"
    "\n"
    "Remove what provisioning created for an active (or blocked) tenant: a\n"
    "deprovision job runs the undo of every step of the pipeline the tenant was\n"
    "provisioned with (not today's default), in reverse order. The tenant\n"
    "shows deprovisioning, then deprovisioned. Asking again returns the same job\n"
    "(exit 0, \"existed\": true). Other statuses are refused (exit 3).\n"
    "\n"
    "options:\n"
    "  --by WHO   who asks, for the audit log (default \"" CLI_DEFAULT_ACTOR "\")\n"
    "  --json     {\"tenant_id\", \"action\": \"deprovision_requested\", \"from_status\",\n"
    "              \"status\", \"job_id\", \"job_status\", \"existed\", \"dispatch_deferred\", ...}\n"
    "\n"
    "examples:\n"
    "  tq-enqueue deprovision acme-corp --by alice@example.com\n"
    "  tq-enqueue status --watch acme-corp      # until deprovisioned\n"
    "\n" CLI_EXIT_CODES;

static enum tq_err run(struct cli *c, struct tq_pg *pg, const struct action_args *a,
                       struct tq_admin_result *res)
{
    (void)c;
    enum tq_err err = tq_admin_deprovision(pg, a->tenant, a->by, res);
    return err;
}

int cmd_deprovision(struct cli *c, int argc, char **argv)
{
    static const struct action_spec spec = {usage, false, NULL, false};
    return action_run(c, argc, argv, &spec, run);
}
