/* tq-enqueue reject: turn down a tenant waiting in pending_approval. */
#include "cli.h"

static const char usage[] =
    "usage: tq-enqueue reject ID --by WHO --reason TEXT [--json]\n"
    "\n"
    "Reject a tenant waiting in pending_approval: the tenant becomes rejected\n"
    "(failure_reason = TEXT), its held job cancelled, and the decision is\n"
    "audited (event \"rejected\"). Nothing was created, so nothing is rolled back.\n"
    "A tenant in any other status is refused (exit 3, naming its status).\n"
    "WHO must hold the role the approval policy names for the tenant's tier\n"
    "(tq-enqueue approvers list; exit 3 otherwise, nothing changed).\n"
    "\n"
    "options:\n"
    "  --by WHO         who rejects (required; 1-200 bytes)\n"
    "  --reason TEXT    why (required; at most 2000 bytes; shown to the requester)\n"
    "  --json           {\"tenant_id\", \"action\": \"rejected\", \"from_status\", \"status\", ...}\n"
    "\n"
    "example:\n"
    "  tq-enqueue reject acme-corp --by alice@example.com --reason \"no budget owner\"\n"
    "\n" CLI_EXIT_CODES;

static enum tq_err run(struct cli *c, struct tq_pg *pg, const struct action_args *a,
                       struct tq_admin_result *res)
{
    (void)c;
    enum tq_err err = tq_admin_reject(pg, a->tenant, a->by, a->text, res);
    return err;
}

int cmd_reject(struct cli *c, int argc, char **argv)
{
    static const struct action_spec spec = {usage, true, "reason", true};
    return action_run(c, argc, argv, &spec, run);
}
