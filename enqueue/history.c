/*
 * tq-enqueue history: everything that happened to one tenant — every job
 * with its steps and each step's attempts, and the tenant's audit events —
 * as text or as the JSON documented in enqueue/README.md (tq_admin_history).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "usage: tq-enqueue history ID [--json]\n"
    "\n"
    "Everything that happened to one tenant: every job (provision, revalidate,\n"
    "deprovision, retries) with its steps and each attempt of each step (run and\n"
    "undo), then the tenant's audit events in order. Exit 4 for an unknown ID.\n"
    "\n"
    "options:\n"
    "  --json   {\"tenant_id\", \"status\", ..., \"jobs\": [...], \"events\": [...]}\n"
    "           (shape in enqueue/README.md)\n"
    "\n"
    "examples:\n"
    "  tq-enqueue history acme-corp\n"
    "  tq-enqueue history acme-corp --json | jq '.events[] | select(.event == \"drift_detected\")'\n"
    "\n" CLI_EXIT_CODES;

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static long long num(const json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

/* "2026-11-27T16:14:53.123456+00:00" -> "2026-11-27 16:14:53" */
static const char *when(const json_t *o, const char *k)
{
    static char bufs[2][20];
    static int next;
    char *b = bufs[next++ % 2];
    const char *s = str(o, k);
    if (strlen(s) < 19)
        return *s ? cli_shown(s) : "-";
    snprintf(b, 20, "%.10s %.8s", s, s + 11);
    return b;
}

static void print_text(const json_t *h)
{
    printf("tenant %s (%s): %s\n", str(h, "tenant_id"), cli_shown(str(h, "name")),
           str(h, "status"));
    printf("  created %s, activated %s, last validated %s\n", when(h, "created_at"),
           when(h, "activated_at"), when(h, "last_validated_at"));
    if (*str(h, "drift"))
        printf("  drift: %s\n", cli_shown(str(h, "drift")));
    if (*str(h, "failure_reason"))
        printf("  failure: %s\n", cli_shown(str(h, "failure_reason")));
    size_t i;
    json_t *j;
    json_array_foreach(json_object_get(h, "jobs"), i, j) {
        printf("\njob %lld  %s  %s (phase %s, attempt %lld)  created %s  finished %s\n",
               num(j, "job_id"), str(j, "kind"), str(j, "status"), str(j, "phase"),
               num(j, "attempt"), when(j, "created_at"), when(j, "finished_at"));
        if (*str(j, "error"))
            printf("  error: %s\n", cli_shown(str(j, "error")));
        if (*str(j, "dead_reason"))
            printf("  dead: %s\n", cli_shown(str(j, "dead_reason")));
        size_t k;
        json_t *s;
        json_array_foreach(json_object_get(j, "steps"), k, s) {
            printf("  %-24s %-20s attempts %lld, undo attempts %lld\n", str(s, "step"),
                   str(s, "status"), num(s, "attempts"), num(s, "undo_attempts"));
            size_t m;
            json_t *a;
            json_array_foreach(json_object_get(s, "attempt_log"), m, a) {
                printf("    %s %lld %-9s %s  %s\n", str(a, "phase"), num(a, "attempt"),
                       str(a, "status"), when(a, "finished_at"), cli_shown(str(a, "error")));
            }
        }
    }
    printf("\nevents:\n");
    json_t *e;
    json_array_foreach(json_object_get(h, "events"), i, e) {
        char *detail = json_dumps(json_object_get(e, "detail"), JSON_COMPACT);
        printf("  %s  %-22s %-24s %s\n", when(e, "at"), str(e, "event"),
               cli_shown(str(e, "actor")),
               detail && strcmp(detail, "{}") != 0 ? cli_shown(detail) : "");
        free(detail);
    }
}

int cmd_history(struct cli *c, int argc, char **argv)
{
    int rc = cli_flag_opts(c, argc, argv, usage, NULL, NULL);
    if (rc != CLI_GO_ON)
        return rc;
    if (argc - optind != 1)
        return cli_fail(c, EXIT_USAGE, NULL, "give exactly one tenant ID (see --help)");
    const char *id = argv[optind];
    rc = cli_check_tenant(c, id);
    if (rc != EXIT_DONE)
        return rc;
    struct tq_pg *pg = NULL;
    json_t *h = NULL;
    if ((rc = cli_open_pg(c, &pg)) == EXIT_DONE) {
        enum tq_err err = tq_admin_history(pg, id, &h);
        if (err) {
            rc = cli_fail(c, cli_exit_for(err), NULL, "%s", tq_pg_errstr(pg));
        } else if (c->json) {
            cli_print_json(h);
            h = NULL;
        } else {
            print_text(h);
        }
    }
    json_decref(h);
    tq_pg_close(pg);
    return rc;
}
