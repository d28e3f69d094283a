/*
 * tq-enqueue stats: queue depths from Redis, jobs and tenants from
 * PostgreSQL, and the workers alive now with their last heartbeat.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tq/queue.h"
#include "tq/util.h"

static const char usage[] =
    "usage: tq-enqueue stats [--json]\n"
    "\n"
    "Queue depths (ready, delayed, processing, dead), jobs running, the workers\n"
    "registered with their last heartbeat, and tenants by status. Both services\n"
    "must be reachable (exit 1 otherwise).\n"
    "\n"
    "options:\n"
    "  --json   {\"queue\", \"ready\", \"delayed\", \"delayed_due\", \"processing\", \"dead\",\n"
    "            \"jobs_running\", \"jobs_by_status\": {...}, \"tenants_by_status\": {...},\n"
    "            \"workers_live\", \"workers\": [{\"id\", \"live\", \"last_heartbeat_ms\",\n"
    "            \"heartbeat_age_ms\", \"ttl_ms\", \"processing\"}]}\n"
    "\n"
    "examples:\n"
    "  tq-enqueue stats\n"
    "  watch -n 5 tq-enqueue stats\n"
    "  tq-enqueue --json stats | jq .ready\n"
    "\n" CLI_EXIT_CODES;

static long long num(const json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

static void print_counts(const char *title, const json_t *o)
{
    printf("%s:", title);
    const char *k;
    json_t *v;
    if (json_object_size(o) == 0)
        printf(" none");
    json_object_foreach((json_t *)o, k, v) printf(" %s %lld", k, (long long)json_integer_value(v));
    printf("\n");
}

static void print_text(const struct cli *c, const json_t *s)
{
    printf("queue %s: ready %lld, delayed %lld (%lld due), processing %lld, dead %lld\n",
           c->cfg.queue, num(s, "ready"), num(s, "delayed"), num(s, "delayed_due"),
           num(s, "processing"), num(s, "dead"));
    printf("jobs running: %lld\n", num(s, "jobs_running"));
    print_counts("jobs by status", json_object_get(s, "jobs_by_status"));
    print_counts("tenants by status", json_object_get(s, "tenants_by_status"));
    const json_t *ws = json_object_get(s, "workers");
    printf("workers: %lld live of %zu registered\n", num(s, "workers_live"), json_array_size(ws));
    size_t i;
    json_t *w;
    json_array_foreach(ws, i, w) {
        json_t *age = json_object_get(w, "heartbeat_age_ms");
        char when[48] = "no heartbeat";
        if (json_is_integer(age))
            snprintf(when, sizeof(when), "last heartbeat %.1f s ago",
                     (double)json_integer_value(age) / 1000.0);
        printf("  %-40s %-5s %s, %lld in hand\n", cli_shown(json_string_value(json_object_get(w, "id"))),
               json_is_true(json_object_get(w, "live")) ? "live" : "gone", when,
               num(w, "processing"));
    }
}

int cmd_stats(struct cli *c, int argc, char **argv)
{
    int rc = cli_flag_opts(c, argc, argv, usage, NULL, NULL);
    if (rc != CLI_GO_ON)
        return rc;
    if (optind < argc)
        return cli_fail(c, EXIT_USAGE, NULL, "unexpected argument \"%s\"", cli_shown(argv[optind]));
    struct tq_pg *pg = NULL;
    struct tq_queue *q = NULL;
    json_t *ps = NULL, *qs = NULL;
    rc = cli_open_pg(c, &pg);
    if (rc != EXIT_DONE)
        goto out;
    enum tq_err err = tq_admin_pg_stats(pg, &ps);
    if (err) {
        rc = cli_fail(c, cli_exit_for(err), NULL, "%s", tq_pg_errstr(pg));
        goto out;
    }
    err = tq_queue_open(&c->cfg, NULL, &q);
    if (!err)
        err = tq_admin_queue_stats(q, tq_now_ms(), &qs);
    if (err) {
        rc = cli_fail(c, EXIT_UNREACHABLE, NULL, "%s", tq_queue_errstr(q));
        goto out;
    }
    json_object_update(qs, ps);
    json_object_set_new(qs, "queue", json_string(c->cfg.queue));
    if (c->json)
        cli_print_json(json_incref(qs));
    else
        print_text(c, qs);
out:
    json_decref(ps);
    json_decref(qs);
    tq_queue_close(q);
    tq_pg_close(pg);
    return rc;
}
