/*
 * tq-enqueue dead: list the jobs the workers gave up on (poison, too many
 * deliveries) and put them back in the queue after a fix.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tq/queue.h"

static const char usage[] =
    "usage: tq-enqueue dead [--json]\n"
    "       tq-enqueue dead --requeue JOBID|TENANT [--by WHO] [--json]\n"
    "\n"
    "List dead jobs (id, tenant, reason, deliveries, when), or requeue one: the\n"
    "job (or every dead job of TENANT) becomes queued with deliveries 0 and no\n"
    "dead_reason, leaves the dead list and is pushed to ready; audit \"requeued\".\n"
    "A job that is not dead is refused (exit 3); unknown ids exit 4.\n"
    "\n"
    "options:\n"
    "  --requeue X  a job id (digits) or a tenant id\n"
    "  --by WHO     who requeues, for the audit log (default \"" CLI_DEFAULT_ACTOR "\")\n"
    "  --json       {\"dead\": [{\"job_id\", \"tenant_id\", \"kind\", \"dead_reason\",\n"
    "                \"deliveries\", \"attempt\", \"updated_at\"}]}; with --requeue\n"
    "               {\"requeued\": [{\"job_id\", \"tenant_id\"}], \"dispatch_deferred\": bool}\n"
    "\n"
    "examples:\n"
    "  tq-enqueue dead\n"
    "  tq-enqueue dead --requeue 42 --by alice@example.com\n"
    "  tq-enqueue --json dead --requeue acme-corp\n"
    "\n" CLI_EXIT_CODES;

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static int list(struct cli *c, struct tq_pg *pg)
{
    json_t *dead = NULL;
    char why[512];
    enum tq_err err = tq_admin_dead_list(pg, &dead, why, sizeof(why));
    if (err)
        return cli_fail(c, cli_exit_for(err), NULL, "%s", why);
    if (c->json) {
        cli_print_json(json_pack("{s:o}", "dead", dead));
        return EXIT_DONE;
    }
    if (json_array_size(dead) == 0)
        printf("no dead jobs\n");
    else
        printf("%-8s %-40s %-11s %-10s %-26s %s\n", "JOB", "TENANT", "KIND", "DELIVERIES",
               "UPDATED", "REASON");
    size_t i;
    json_t *d;
    json_array_foreach(dead, i, d) {
        printf("%-8" JSON_INTEGER_FORMAT " %-40s %-11s %-10" JSON_INTEGER_FORMAT " %-26.26s %s\n",
               json_integer_value(json_object_get(d, "job_id")), str(d, "tenant_id"),
               str(d, "kind"), json_integer_value(json_object_get(d, "deliveries")),
               str(d, "updated_at"), cli_shown(str(d, "dead_reason")));
    }
    json_decref(dead);
    return EXIT_DONE;
}

static int requeue(struct cli *c, struct tq_pg *pg, const char *target, const char *by)
{
    json_t *done = NULL;
    char why[512];
    enum tq_err err = tq_admin_dead_requeue(pg, target, by, &done, why, sizeof(why));
    if (err == TQ_ENOTFOUND)
        return cli_fail(c, EXIT_NOTFOUND, NULL, "requeue: %s", why);
    if (err)
        return cli_fail(c, cli_exit_for(err), NULL, "requeue: %s", why);
    size_t n = json_array_size(done);
    int64_t *ids = calloc(n, sizeof(*ids));
    for (size_t i = 0; ids && i < n; i++)
        ids[i] = json_integer_value(json_object_get(json_array_get(done, i), "job_id"));
    struct tq_queue *q = NULL;
    err = ids ? tq_queue_open(&c->cfg, NULL, &q) : TQ_ENOMEM;
    if (!err)
        err = tq_admin_requeue_dead(q, ids, n);
    bool deferred = err != TQ_OK;
    if (deferred)
        fprintf(stderr,
                "%s: warning: the jobs are queued in the database but dispatch is deferred "
                "(%s); a worker's reconciler will dispatch them\n",
                c->prog, q ? tq_queue_errstr(q) : "out of memory");
    tq_queue_close(q);
    if (c->json) {
        cli_print_json(json_pack("{s:o, s:b}", "requeued", done, "dispatch_deferred", deferred));
    } else {
        for (size_t i = 0; i < n; i++)
            printf("job %" PRId64 " (tenant %s): requeued%s\n", ids[i],
                   str(json_array_get(done, i), "tenant_id"),
                   deferred ? ", dispatch deferred" : "");
        json_decref(done);
    }
    free(ids);
    return EXIT_DONE;
}

int cmd_dead(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {{"requeue", required_argument, NULL, 'r'},
                                         {"by", required_argument, NULL, 'b'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *target = NULL, *by = NULL;
    int o, rc;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (o) {
        case 'r': target = optarg; break;
        case 'b': by = optarg; break;
        case 'j': c->json = true; break;
        case 'h':
            fputs(usage, stdout);
            return EXIT_DONE;
        case ':':
            return cli_fail(c, EXIT_USAGE, NULL, "option \"%s\" needs a value",
                            cli_shown(argv[optind - 1]));
        default:
            return cli_fail(c, EXIT_USAGE, NULL, "unknown option \"%s\" (see --help)",
                            cli_shown(argv[optind - 1]));
        }
    }
    if (optind < argc)
        return cli_fail(c, EXIT_USAGE, NULL, "unexpected argument \"%s\"", cli_shown(argv[optind]));
    if (by && !target)
        return cli_fail(c, EXIT_USAGE, NULL, "--by applies to --requeue only");
    if ((rc = cli_check_text(c, "by", by, CLI_BY_MAX, by != NULL, false)) != EXIT_DONE)
        return rc;
    if (target) {
        size_t n = strlen(target), d = strspn(target, "0123456789");
        bool job = n > 0 && d == n;
        if (job && n > 18)
            return cli_fail(c, EXIT_NOTFOUND, NULL, "requeue: no such job: %s", cli_shown(target));
        if (!job && (rc = cli_check_tenant(c, target)) != EXIT_DONE)
            return rc;
    }
    struct tq_pg *pg = NULL;
    if ((rc = cli_open_pg(c, &pg)) == EXIT_DONE)
        rc = target ? requeue(c, pg, target, by ? by : CLI_DEFAULT_ACTOR) : list(c, pg);
    tq_pg_close(pg);
    return rc;
}
