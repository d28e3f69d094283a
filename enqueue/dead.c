/*
 * tq-enqueue dead: list the jobs the workers gave up on (poison, too many
 * deliveries) and every other value in the Redis dead list (garbage that
 * was pushed to the queue), put jobs back in the queue after a fix, and drop
 * values that are no dead job.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tq/deadlist.h"
#include "tq/jobid.h"
#include "tq/queue.h"
#include "tq/util.h"

static const char usage[] =
    "usage: tq-enqueue dead [--json]\n"
    "       tq-enqueue dead --requeue JOBID|TENANT [--by WHO] [--json]\n"
    "       tq-enqueue dead --drop VALUE [--by WHO] [--json]\n"
    "\n"
    "List dead jobs (id, tenant, reason, deliveries, when) and every other value\n"
    "of the Redis dead list (not a job id, no such job, a job that is not dead),\n"
    "or requeue one: the job (or every dead job of TENANT) becomes queued with\n"
    "deliveries 0 and no dead_reason, leaves the dead list and is pushed to\n"
    "ready; audit \"requeued\". A job that is not dead is refused (exit 3);\n"
    "unknown ids exit 4; a value of the dead list that is no job id exits 2.\n"
    "--drop removes a value from the dead list (as listed: \\xHH stands for a\n"
    "byte); audit \"dead_value_dropped\". A job that is dead in the database is\n"
    "refused (exit 3: requeue it).\n"
    "Values that are not job ids are kept to their first 256 bytes.\n"
    "\n"
    "options:\n"
    "  --requeue X  a job id (digits) or a tenant id\n"
    "  --drop V     a value of the dead list, as listed\n"
    "  --by WHO     who requeues or drops, for the audit log (default \"" CLI_DEFAULT_ACTOR "\")\n"
    "  --json       {\"dead\": [{\"job_id\", \"tenant_id\", \"kind\", \"dead_reason\",\n"
    "                \"deliveries\", \"attempt\", \"updated_at\"}], \"other\": [{\"value\",\n"
    "                \"bytes\", \"job_id\", \"why\"}] or null when Redis is unreachable};\n"
    "               with --drop {\"dropped\": N}; with --requeue\n"
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

static bool dead_job(const json_t *dead, json_int_t id)
{
    size_t i;
    json_t *d;
    json_array_foreach(dead, i, d) {
        if (json_integer_value(json_object_get(d, "job_id")) == id)
            return true;
    }
    return false;
}

/*
 * The values of the Redis dead list that are no dead job of the database,
 * each with why; NULL (and a warning) when Redis cannot be read.
 */
static json_t *other_values(struct cli *c, struct tq_pg *pg, const json_t *dead)
{
    struct tq_queue *q = NULL;
    json_t *entries = NULL;
    enum tq_err err = tq_queue_open(&c->cfg, NULL, &q);
    if (!err)
        err = tq_deadlist_entries(q, &entries);
    if (err) {
        fprintf(stderr, "%s: warning: could not read the Redis dead list (%s)\n", c->prog,
                q ? tq_queue_errstr(q) : "out of memory");
        tq_queue_close(q);
        return NULL;
    }
    tq_queue_close(q);
    json_t *other = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        json_t *jid = json_object_get(e, "job_id");
        if (json_is_integer(jid) && dead_job(dead, json_integer_value(jid)))
            continue;
        char why[64] = "not a job id";
        if (json_is_integer(jid)) {
            int64_t id = json_integer_value(jid);
            char (*st)[24] = calloc(1, sizeof(*st));
            if (st && tq_pg_job_states(pg, &id, 1, st) == TQ_OK)
                snprintf(why, sizeof(why), st[0][0] ? "job is %s, not dead" : "no such job",
                         st[0]);
            else
                snprintf(why, sizeof(why), "a job id");
            free(st);
        }
        json_t *o = json_deep_copy(e);
        json_object_set_new(o, "why", json_string(why));
        json_array_append_new(other, o);
    }
    json_decref(entries);
    return other;
}

static int list(struct cli *c, struct tq_pg *pg)
{
    json_t *dead = NULL;
    enum tq_err err = tq_admin_dead_list(pg, &dead);
    if (err)
        return cli_fail(c, cli_exit_for(err), NULL, "%s", tq_pg_errstr(pg));
    json_t *other = other_values(c, pg, dead);
    if (c->json) {
        cli_print_json(json_pack("{s:o, s:o}", "dead", dead, "other",
                                 other ? other : json_null()));
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
    if (json_array_size(other) > 0) {
        printf("\nother values in the dead list (drop with --drop VALUE):\n%-10s %-24s %s\n",
               "BYTES", "WHY", "VALUE");
        json_array_foreach(other, i, d) {
            /* already escaped (\xHH), printable and on one line */
            printf("%-10" JSON_INTEGER_FORMAT " %-24s %s\n",
                   json_integer_value(json_object_get(d, "bytes")), str(d, "why"),
                   str(d, "value"));
        }
    }
    json_decref(other);
    return EXIT_DONE;
}

static int drop(struct cli *c, struct tq_pg *pg, const char *shown, const char *by)
{
    size_t cap = strlen(shown) + 1;
    char *raw = tq_xmalloc(cap);
    size_t len = tq_value_unescape(shown, raw, cap);
    int64_t id;
    int rc = EXIT_DONE;
    if (tq_job_id_parse(raw, len, &id, NULL)) {
        char (*st)[24] = tq_xcalloc(1, sizeof(*st));
        enum tq_err err = tq_pg_job_states(pg, &id, 1, st);
        bool is_dead = !err && strcmp(st[0], "dead") == 0;
        free(st);
        if (err)
            rc = cli_fail(c, cli_exit_for(err), NULL, "drop: %s", tq_pg_errstr(pg));
        else if (is_dead)
            rc = cli_fail(c, EXIT_REJECTED, NULL,
                          "drop: job %" PRId64 " is dead in the database; requeue it "
                          "(--requeue %" PRId64 ")",
                          id, id);
        if (rc != EXIT_DONE) {
            free(raw);
            return rc;
        }
    }
    struct tq_queue *q = NULL;
    long long removed = 0;
    enum tq_err err = tq_queue_open(&c->cfg, NULL, &q);
    if (!err)
        err = tq_deadlist_drop(q, raw, len, &removed);
    free(raw);
    if (err)
        rc = cli_fail(c, cli_exit_for(err), NULL, "drop: %s",
                      q ? tq_queue_errstr(q) : "out of memory");
    else if (removed == 0)
        rc = cli_fail(c, EXIT_NOTFOUND, NULL, "drop: no such value in the dead list: %s",
                      cli_shown(shown));
    else if ((err = tq_pg_audit_dead_drop(pg, by, shown, removed)))
        rc = cli_fail(c, cli_exit_for(err), NULL,
                      "drop: removed %lld value(s) but could not write the audit event: %s",
                      removed, tq_pg_errstr(pg));
    else if (c->json)
        cli_print_json(json_pack("{s:I}", "dropped", (json_int_t)removed));
    else
        printf("dropped %lld value%s from the dead list\n", removed, removed == 1 ? "" : "s");
    tq_queue_close(q);
    return rc;
}

/* A value of the dead list that is no job id is no requeue target: say so (exit 2). */
static int refuse_garbage(struct cli *c, const char *target)
{
    struct tq_queue *q = NULL;
    json_t *entries = NULL;
    int rc = EXIT_DONE;
    if (tq_queue_open(&c->cfg, NULL, &q) == TQ_OK && tq_deadlist_entries(q, &entries) == TQ_OK) {
        char shown[4 * TQ_GARBAGE_KEEP + 1];
        tq_value_escape(target, strlen(target), TQ_GARBAGE_KEEP, shown, sizeof(shown));
        size_t i;
        json_t *e;
        json_array_foreach(entries, i, e) {
            if (json_is_null(json_object_get(e, "job_id")) && strcmp(str(e, "value"), shown) == 0) {
                rc = cli_fail(c, EXIT_USAGE, NULL,
                              "requeue: \"%s\" is not a job id but a value someone pushed to the "
                              "queue; it cannot run (remove it with --drop)",
                              cli_shown(target));
                break;
            }
        }
    }
    json_decref(entries);
    tq_queue_close(q);
    return rc;
}

static int requeue(struct cli *c, struct tq_pg *pg, const char *target, const char *by)
{
    json_t *done = NULL;
    enum tq_err err = tq_admin_dead_requeue(pg, target, by, &done);
    if (err == TQ_ENOTFOUND)
        return cli_fail(c, EXIT_NOTFOUND, NULL, "requeue: %s", tq_pg_errstr(pg));
    if (err)
        return cli_fail(c, cli_exit_for(err), NULL, "requeue: %s", tq_pg_errstr(pg));
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
                                         {"drop", required_argument, NULL, 'd'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *target = NULL, *by = NULL, *dropv = NULL;
    int o, rc;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (o) {
        case 'r': target = optarg; break;
        case 'b': by = optarg; break;
        case 'd': dropv = optarg; break;
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
    if (by && !target && !dropv)
        return cli_fail(c, EXIT_USAGE, NULL, "--by applies to --requeue and --drop only");
    if ((rc = cli_check_text(c, "by", by, CLI_BY_MAX, by != NULL, false)) != EXIT_DONE)
        return rc;
    if (dropv && target)
        return cli_fail(c, EXIT_USAGE, NULL, "--drop and --requeue are separate actions");
    if (dropv && !*dropv)
        return cli_fail(c, EXIT_USAGE, NULL, "--drop: the value is empty");
    if (target) {
        size_t n = strlen(target), d = strspn(target, "0123456789");
        bool job = n > 0 && d == n;
        if (!job && (rc = refuse_garbage(c, target)) != EXIT_DONE)
            return rc;
        if (job && n > 18)
            return cli_fail(c, EXIT_NOTFOUND, NULL, "requeue: no such job: %s", cli_shown(target));
        if (!job && (rc = cli_check_tenant(c, target)) != EXIT_DONE)
            return rc;
    }
    struct tq_pg *pg = NULL;
    if ((rc = cli_open_pg(c, &pg)) == EXIT_DONE)
        rc = dropv    ? drop(c, pg, dropv, by ? by : CLI_DEFAULT_ACTOR)
             : target ? requeue(c, pg, target, by ? by : CLI_DEFAULT_ACTOR)
                      : list(c, pg);
    tq_pg_close(pg);
    return rc;
}
