/* tq-enqueue approve: let a tenant waiting in pending_approval go ahead. */
#include "cli.h"

static const char usage[] =
    "usage: tq-enqueue approve ID --by WHO [--note TEXT] [--json]\n"
    "\n"
    "Approve a tenant waiting in pending_approval (budget above\n"
    "TQ_APPROVAL_THRESHOLD): the tenant and its job become queued, WHO and the\n"
    "time are recorded (approver, approved_at, audit event \"approved\"), and the\n"
    "job is dispatched to the workers. A tenant in any other status is refused\n"
    "(exit 3, naming its status): approving twice is an error, not a no-op.\n"
    "WHO must hold the role the approval policy names for the tenant's tier\n"
    "(tq-enqueue approvers list) and must not be the request's owner: the\n"
    "requester never approves their own request (exit 3, nothing changed).\n"
    "\n"
    "options:\n"
    "  --by WHO       who approves (required; 1-200 bytes, recorded in the audit log)\n"
    "  --note TEXT    why, for the audit log (at most 2000 bytes)\n"
    "  --json         {\"tenant_id\", \"action\": \"approved\", \"from_status\", \"status\",\n"
    "                  \"job_id\", \"job_status\", \"existed\", \"dispatch_deferred\", ...}\n"
    "\n"
    "examples:\n"
    "  tq-enqueue approve acme-corp --by alice@example.com --note \"budget signed off\"\n"
    "  tq-enqueue --json approve acme-corp --by portal:user-42\n"
    "\n" CLI_EXIT_CODES;

static enum tq_err run(struct cli *c, struct tq_pg *pg, const struct action_args *a,
                       struct tq_admin_result *res)
{
    (void)c;
    enum tq_err err = tq_admin_approve(pg, a->tenant, a->by, a->text, res);
    return err;
}

int cmd_approve(struct cli *c, int argc, char **argv)
{
    static const struct action_spec spec = {usage, true, "note", false};
    return action_run(c, argc, argv, &spec, run);
}
