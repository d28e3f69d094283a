/*
 * tq-enqueue status: tenants with their status and steps, as a table or as
 * the JSON documented in enqueue/README.md (built by tq_pg_status).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tq/pg.h"
#include "tq/request.h"

static const char usage[] =
    "usage: tq-enqueue status [ID... | --batch NAME | --all] [--json]\n"
    "       tq-enqueue status [ID... | --batch NAME | --all] --watch [--timeout SECONDS]\n"
    "\n"
    "Show each tenant's status, steps done of total, current step and last error.\n"
    "With one ID, also its lifecycle, its last provisioning (or deprovisioning)\n"
    "job with its steps, its last revalidation and any drift (check and message).\n"
    "A tenant with drift shows DRIFT: in the table. Exit 4 when an ID or batch\n"
    "is unknown.\n"
    "\n"
    "--watch follows the tenants until every one has finished (active, failed,\n"
    "rollback_failed, rejected, blocked, cancelled or deprovisioned), polling\n"
    "about once a second. In a terminal it redraws a progress bar per tenant and\n"
    "one for the batch in place; otherwise (a pipe, a log, or --json) it prints\n"
    "one line per change: text, or with --json one tenant object per line and a\n"
    "final {\"finished\": true, ...}. Exit 0 when all have finished, 1 on timeout.\n"
    "\n"
    "options:\n"
    "  --batch NAME        the tenants submitted together under NAME\n"
    "  --all               every tenant\n"
    "  --json              {\"tenants\": [...]} (shape in enqueue/README.md)\n"
    "  --watch             follow until finished (see above)\n"
    "  --timeout SECONDS   with --watch: give up after SECONDS (exit 1); default none\n"
    "  --interval SECONDS  with --watch: time between polls, 0.1-60 (default 1)\n"
    "\n"
    "examples:\n"
    "  tq-enqueue status acme-corp\n"
    "  tq-enqueue status --batch onboarding-2026-11 --json\n"
    "  tq-enqueue status --watch --batch onboarding-2026-11 --timeout 1800\n"
    "\n" CLI_EXIT_CODES;

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* A pending step waiting for a fleet-wide limit's permit: its recorded wait. */
static const char *waiting_step(const json_t *t)
{
    size_t k;
    json_t *s;
    json_array_foreach(json_object_get(t, "steps"), k, s) {
        if (strcmp(str(s, "status"), "pending") == 0 &&
            strncmp(str(s, "last_error"), "waiting for limit ", 18) == 0)
            return str(s, "last_error");
    }
    return "";
}

static void print_table(const json_t *tenants, bool with_steps)
{
    printf("%-24s %-7s %-10s %-16s %-6s %s\n", "TENANT", "TIER", "REGION", "STATUS", "STEPS",
           "DETAIL");
    size_t i;
    json_t *t;
    json_array_foreach(tenants, i, t) {
        char steps[24];
        snprintf(steps, sizeof(steps), "%lld/%lld",
                 (long long)json_integer_value(json_object_get(t, "steps_done")),
                 (long long)json_integer_value(json_object_get(t, "steps_total")));
        const char *detail = str(t, "failure_reason");
        if (!*detail && *str(t, "current_step"))
            detail = str(t, "current_step");
        const json_t *drift = json_object_get(t, "drift");
        char dd[300];
        if (!*detail && json_is_object(drift)) {
            snprintf(dd, sizeof(dd), "DRIFT: %s", str(drift, "summary"));
            detail = dd;
        }
        if (!*detail)
            detail = waiting_step(t);
        char ed[96];
        if (!*detail && json_is_true(json_object_get(t, "escalated"))) {
            snprintf(ed, sizeof(ed), "ESCALATED: pending approval, escalated %lld time(s)",
                     (long long)json_integer_value(json_object_get(t, "escalations")));
            detail = ed;
        }
        printf("%-24s %-7s %-10s %-16s %-6s %s\n", str(t, "tenant_id"), str(t, "tier"),
               str(t, "region"), str(t, "status"), steps, cli_shown(detail));
        if (!with_steps)
            continue;
        /* one tenant: its lifecycle, last lifecycle job, last revalidation, drift */
        printf("  lifecycle: %s, created %s, activated %s\n", str(t, "status"),
               *str(t, "created_at") ? str(t, "created_at") : "-",
               *str(t, "activated_at") ? str(t, "activated_at") : "-");
        if (json_integer_value(json_object_get(t, "job_id")))
            printf("  last %s job: %lld %s, attempt %lld, steps %s\n", str(t, "job_kind"),
                   (long long)json_integer_value(json_object_get(t, "job_id")),
                   str(t, "job_status"),
                   (long long)json_integer_value(json_object_get(t, "job_attempt")), steps);
        const json_t *rv = json_object_get(t, "revalidation");
        if (json_is_object(rv))
            printf("  last revalidation: job %lld %s, finished %s, %lld check(s) failed\n",
                   (long long)json_integer_value(json_object_get(rv, "job_id")),
                   str(rv, "status"), *str(rv, "finished_at") ? str(rv, "finished_at") : "-",
                   (long long)json_integer_value(json_object_get(rv, "checks_failed")));
        else
            printf("  last revalidation: none\n");
        if (json_is_object(drift)) {
            printf("  drift detected %s:\n", str(drift, "detected_at"));
            size_t m;
            json_t *ck;
            json_array_foreach(json_object_get(drift, "checks"), m, ck)
                printf("    %s: %s\n", str(ck, "check"), cli_shown(str(ck, "message")));
        } else {
            printf("  drift: none\n");
        }
        printf("  steps of job %lld:\n", (long long)json_integer_value(json_object_get(t, "job_id")));
        size_t k;
        json_t *s;
        json_array_foreach(json_object_get(t, "steps"), k, s) {
            printf("    %-22s %-20s attempts %lld  %s\n", str(s, "step"), str(s, "status"),
                   (long long)json_integer_value(json_object_get(s, "attempts")),
                   cli_shown(str(s, "last_error")));
        }
    }
}

int cmd_status(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {{"batch", required_argument, NULL, 'b'},
                                         {"all", no_argument, NULL, 'a'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"watch", no_argument, NULL, 'w'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {"interval", required_argument, NULL, 'i'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *batch = NULL;
    bool all = false, watch = false;
    double timeout_s = 0, interval_s = 1;
    const char *timeout_arg = NULL;
    char *end;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (o) {
        case 'b':
            batch = optarg;
            break;
        case 'a':
            all = true;
            break;
        case 'j':
            c->json = true;
            break;
        case 'w':
            watch = true;
            break;
        case 't':
            timeout_arg = optarg;
            timeout_s = strtod(optarg, &end);
            if (end == optarg || *end || !(timeout_s >= 1 && timeout_s <= 7 * 86400))
                return cli_fail(c, EXIT_USAGE, NULL,
                                "timeout: \"%s\" must be a number of seconds from 1 to 604800",
                                cli_shown(optarg));
            break;
        case 'i':
            interval_s = strtod(optarg, &end);
            if (end == optarg || *end || !(interval_s >= 0.1 && interval_s <= 60))
                return cli_fail(c, EXIT_USAGE, NULL,
                                "interval: \"%s\" must be a number of seconds from 0.1 to 60",
                                cli_shown(optarg));
            break;
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
    if (timeout_arg && !watch)
        return cli_fail(c, EXIT_USAGE, NULL, "--timeout applies to --watch only");
    size_t nids = (size_t)(argc - optind);
    if ((nids > 0) + (batch != NULL) + all != 1)
        return cli_fail(c, EXIT_USAGE, NULL,
                        "give tenant IDs, or --batch NAME, or --all (exactly one of them)");
    for (size_t i = 0; i < nids; i++) {
        int rc = cli_check_tenant(c, argv[optind + (int)i]);
        if (rc != EXIT_DONE)
            return rc;
    }
    if (batch && (strlen(batch) > 64 || !tq_utf8_valid(batch, strlen(batch))))
        return cli_fail(c, EXIT_NOTFOUND, NULL, "batch: no such batch \"%s\"", cli_shown(batch));
    struct tq_pg *pg = NULL;
    json_t *tenants = NULL;
    enum tq_err err = tq_pg_open(c->cfg.database_url, &pg);
    if (!err)
        err = tq_pg_status(pg, (const char *const *)argv + optind, nids, batch, &tenants);
    int rc = EXIT_DONE;
    if (err) {
        rc = cli_fail(c, EXIT_UNREACHABLE, NULL, "%s", tq_pg_errstr(pg));
        goto out;
    }
    json_t *missing = json_array();
    if (nids > 0 && json_array_size(tenants) < nids) {
        for (size_t i = 0; i < nids; i++) {
            bool found = false;
            size_t k;
            json_t *t;
            json_array_foreach(tenants, k, t) if (strcmp(str(t, "tenant_id"), argv[optind + i]) == 0)
                found = true;
            if (!found)
                json_array_append_new(missing, json_string(argv[optind + i]));
        }
    }
    if (json_array_size(missing) > 0) {
        char *m = json_dumps(missing, JSON_COMPACT);
        rc = cli_fail(c, EXIT_NOTFOUND, missing, "tenant_id: no such tenant: %s", m);
        free(m);
        goto out;
    }
    json_decref(missing);
    if (batch && json_array_size(tenants) == 0) {
        rc = cli_fail(c, EXIT_NOTFOUND, NULL, "batch: no such batch \"%s\"", cli_shown(batch));
        goto out;
    }
    if (watch) {
        struct watch_opts wo = {(const char *const *)argv + optind, nids, batch,
                                (int64_t)(timeout_s * 1000), (int64_t)(interval_s * 1000)};
        rc = status_watch(c, pg, &wo);
        goto out;
    }
    if (c->json) {
        json_t *doc = json_pack("{s:O}", "tenants", tenants);
        json_dumpf(doc, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(doc);
    } else {
        print_table(tenants, nids == 1);
    }
out:
    json_decref(tenants);
    tq_pg_close(pg);
    return rc;
}
