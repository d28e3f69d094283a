/* tq-enqueue migrate: apply the schema migrations (see common/src/migrate.c). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tq/pg.h"

static const char usage[] =
    "usage: tq-enqueue migrate [--json]\n"
    "\n"
    "Create or upgrade the tq schema in the database of TQ_DATABASE_URL.\n"
    "Safe to run repeatedly and from several processes at once.\n"
    "\n"
    "example:\n"
    "  TQ_DATABASE_URL=postgresql://postgres@127.0.0.1:5440/tenantq tq-enqueue migrate\n"
    "  tq-enqueue --json migrate      # {\"version\": N, \"applied\": M}\n"
    "\n" CLI_EXIT_CODES;

int cmd_migrate(struct cli *c, int argc, char **argv)
{
    int rc = cli_flag_opts(c, argc, argv, usage, NULL, NULL);
    if (rc != CLI_GO_ON)
        return rc;
    if (optind < argc)
        return cli_fail(c, EXIT_USAGE, NULL, "unexpected argument \"%s\"", cli_shown(argv[optind]));
    struct tq_pg *pg = NULL;
    int applied = 0, version = 0;
    enum tq_err err = tq_pg_open(c->cfg.database_url, &pg);
    if (!err)
        err = tq_pg_migrate(pg, &applied, &version);
    rc = EXIT_DONE;
    if (err) {
        rc = cli_fail(c, cli_exit_for(err) == EXIT_REJECTED ? EXIT_UNREACHABLE : cli_exit_for(err),
                      NULL, "%s", tq_pg_errstr(pg));
    } else if (c->json) {
        printf("{\"version\":%d,\"applied\":%d}\n", version, applied);
    } else {
        printf("schema tq at version %d (%d migration%s applied)\n", version, applied,
               applied == 1 ? "" : "s");
    }
    tq_pg_close(pg);
    return rc;
}
