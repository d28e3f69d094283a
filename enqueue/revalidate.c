/*
 * tq-enqueue revalidate: queue drift checks — the validation steps of an
 * active tenant's pipeline, re-run without touching its resources. The
 * fleet also does this on a schedule (TQ_REVALIDATE_INTERVAL_MS).
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tq/util.h"

static const char usage[] =
    "usage: tq-enqueue revalidate ID... | --all [--json]\n"
    "\n"
    "Re-run the validation steps (security, integration, performance, compliance\n"
    "checks) of active tenants against their live resources. Nothing is created\n"
    "or removed; a failing check records a drift event (shown by status as\n"
    "\"drift\") and notifies, and never rolls an active tenant back. Tenants that\n"
    "are not active, or already have a revalidation queued, are left out.\n"
    "\n"
    "options:\n"
    "  --all    every active tenant\n"
    "  --json   {\"queued\": N, \"job_ids\": [...], \"dispatch_deferred\": false}\n"
    "\n"
    "examples:\n"
    "  tq-enqueue revalidate acme-corp\n"
    "  tq-enqueue revalidate --all --json\n"
    "\n" CLI_EXIT_CODES;

int cmd_revalidate(struct cli *c, int argc, char **argv)
{
    bool all = false;
    int rc = cli_flag_opts(c, argc, argv, usage, "all", &all);
    if (rc != CLI_GO_ON)
        return rc;
    size_t nids = (size_t)(argc - optind);
    if ((nids > 0) == all)
        return cli_fail(c, EXIT_USAGE, NULL, "give tenant IDs or --all (exactly one of them)");
    for (size_t i = 0; i < nids; i++) {
        rc = cli_check_tenant(c, argv[optind + (int)i]);
        if (rc != EXIT_DONE)
            return rc;
    }
    struct tq_pg *pg = NULL;
    rc = cli_open_pg(c, &pg);
    if (rc != EXIT_DONE) {
        tq_pg_close(pg);
        return rc;
    }
    char round[32];
    snprintf(round, sizeof(round), "cli-%" PRIu64, tq_now_ms());
    int64_t *ids = NULL;
    size_t n = 0;
    enum tq_err err = tq_pg_revalidate(pg, c->cfg.queue,
                                       nids ? (const char *const *)argv + optind : NULL, nids,
                                       round, CLI_DEFAULT_ACTOR, &ids, &n);
    if (err) {
        rc = cli_fail(c, cli_exit_for(err), NULL, "%s", tq_pg_errstr(pg));
    } else if (nids > 0 && n == 0) {
        rc = cli_fail(c, EXIT_REJECTED, NULL,
                      "nothing to revalidate: the tenants are unknown, not active, of another "
                      "queue than TQ_QUEUE, or already "
                      "have a revalidation queued");
    } else {
        bool sent = cli_dispatch(c, ids, n, 0);
        if (c->json) {
            json_t *a = json_array();
            for (size_t i = 0; i < n; i++)
                json_array_append_new(a, json_integer(ids[i]));
            cli_print_json(json_pack("{s:I, s:o, s:b}", "queued", (json_int_t)n, "job_ids", a,
                                     "dispatch_deferred", !sent));
        } else {
            printf("queued %zu revalidation job%s\n", n, n == 1 ? "" : "s");
        }
    }
    free(ids);
    tq_pg_close(pg);
    return rc;
}
