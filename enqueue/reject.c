/* tq-enqueue reject: turn down a tenant waiting in pending_approval. */
#include "cli.h"

static const char usage[] =
    "usage: tq-enqueue reject ID --by WHO --reason TEXT [--json]\n"
    "\n"
    "Reject a tenant waiting in pending_approval: the tenant becomes rejected\n"
    "(failure_reason = TEXT), its held job cancelled, and the decision is\n"
    "audited (event \"rejected\"). Nothing was created, so nothing is rolled back.\n"
    "A tenant in any other status is refused (exit 3, naming its status).\n"
    "\n"
    "options:\n"
    "  --by WHO         who rejects (required; 1-200 bytes)\n"
    "  --reason TEXT    why (required; at most 2000 bytes; shown to the requester)\n"
    "  --json           {\"tenant_id\", \"action\": \"rejected\", \"from_status\", \"status\", ...}\n"
    "\n"
    "example:\n"
    "  tq-enqueue reject acme-corp --by alice@example.com --reason \"no budget owner\"\n"
    "\n" CLI_EXIT_CODES;

int cmd_reject(struct cli *c, int argc, char **argv)
{
    static const struct action_spec spec = {usage, true, "reason", true};
    struct action_args a;
    int rc = action_parse(c, argc, argv, &spec, &a);
    if (rc >= 0)
        return rc;
    struct tq_pg *pg = NULL;
    if ((rc = cli_open_pg(c, &pg)) == EXIT_DONE) {
        struct tq_admin_result res;
        char why[512];
        enum tq_err err = tq_admin_reject(pg, a.tenant, a.by, a.text, &res, why, sizeof(why));
        rc = action_finish(c, err, &res, why);
    }
    tq_pg_close(pg);
    return rc;
}
