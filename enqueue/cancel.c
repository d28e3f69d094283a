/* tq-enqueue cancel: stop a tenant's provisioning, before or while it runs. */
#include <string.h>

#include "cli.h"
#include "tq/queue.h"

static const char usage[] =
    "usage: tq-enqueue cancel ID [--by WHO] [--json]\n"
    "\n"
    "Cancel the tenant's latest job:\n"
    "  - waiting (held for approval, or queued): the job and the tenant become\n"
    "    cancelled at once (action \"cancelled\"); nothing had been created.\n"
    "  - running: the job is flagged (action \"cancel_requested\"); the worker\n"
    "    stops at the next step boundary, rolls back what it created, and the\n"
    "    tenant ends cancelled. Follow it with `tq-enqueue status --watch ID`.\n"
    "    Asking again while it stops is not an error (\"existed\": true).\n"
    "Anything else (active, failed, ...) is refused: exit 3, \"nothing to\n"
    "cancel: tenant is <status>\". Remove an active tenant with `deprovision`.\n"
    "\n"
    "options:\n"
    "  --by WHO   who cancels, for the audit log (default \"" CLI_DEFAULT_ACTOR "\")\n"
    "  --json     {\"tenant_id\", \"action\", \"from_status\", \"status\", \"job_id\", ...}\n"
    "\n"
    "examples:\n"
    "  tq-enqueue cancel acme-corp --by alice@example.com\n"
    "  tq-enqueue --json cancel acme-corp\n"
    "\n" CLI_EXIT_CODES;

static enum tq_err run(struct cli *c, struct tq_pg *pg, const struct action_args *a,
                       struct tq_admin_result *res)
{
    enum tq_err err = tq_admin_cancel(pg, a->tenant, a->by, res);
    if (!err && strcmp(res->action, "cancelled") == 0) {
        /* Tidy only: a worker that fetches the id finds it cancelled and drops it. */
        struct tq_queue *q = NULL;
        if (tq_queue_open(&c->cfg, NULL, &q) == TQ_OK)
            tq_admin_undispatch(q, res->job_id);
        tq_queue_close(q);
    }
    return err;
}

int cmd_cancel(struct cli *c, int argc, char **argv)
{
    static const struct action_spec spec = {usage, false, NULL, false};
    return action_run(c, argc, argv, &spec, run);
}
