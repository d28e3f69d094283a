/*
 * What the tenant actions (approve, reject, cancel, retry, deprovision)
 * share: parsing ID/--by/--note, opening the store, reporting the outcome
 * and dispatching to Redis after the commit. The state changes themselves
 * are libtq's (tq/admin.h).
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "tq/queue.h"
#include "tq/util.h"

int action_parse(struct cli *c, int argc, char **argv, const struct action_spec *spec,
                 struct action_args *a)
{
    static const struct option opts[] = {{"by", required_argument, NULL, 'b'},
                                         {"note", required_argument, NULL, 'n'},
                                         {"reason", required_argument, NULL, 'r'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    memset(a, 0, sizeof(*a));
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (o) {
        case 'b':
            a->by = optarg;
            break;
        case 'n':
        case 'r':
            if (!spec->text_flag || strcmp(spec->text_flag, o == 'n' ? "note" : "reason") != 0)
                return cli_fail(c, EXIT_USAGE, NULL, "unknown option \"--%s\" (see --help)",
                                o == 'n' ? "note" : "reason");
            a->text = optarg;
            break;
        case 'j':
            c->json = true;
            break;
        case 'h':
            fputs(spec->usage, stdout);
            return EXIT_DONE;
        case ':':
            return cli_fail(c, EXIT_USAGE, NULL, "option \"%s\" needs a value",
                            cli_shown(argv[optind - 1]));
        default:
            return cli_fail(c, EXIT_USAGE, NULL, "unknown option \"%s\" (see --help)",
                            cli_shown(argv[optind - 1]));
        }
    }
    if (optind >= argc)
        return cli_fail(c, EXIT_USAGE, NULL, "tenant_id: is required (see --help)");
    if (argc - optind > 1)
        return cli_fail(c, EXIT_USAGE, NULL, "unexpected argument \"%s\" (one tenant at a time)",
                        cli_shown(argv[optind + 1]));
    a->tenant = argv[optind];
    int rc;
    if (spec->by_required && !a->by)
        return cli_fail(c, EXIT_USAGE, NULL, "by: is required (who decides, for the audit log)");
    /* --by given must say someone: "" is refused like a missing one */
    if ((rc = cli_check_text(c, "by", a->by, CLI_BY_MAX, a->by != NULL, false)) != EXIT_DONE)
        return rc;
    if (!a->by)
        a->by = CLI_DEFAULT_ACTOR;
    if (spec->text_flag && (rc = cli_check_text(c, spec->text_flag, a->text, CLI_TEXT_MAX,
                                                spec->text_required, true)) != EXIT_DONE)
        return rc;
    if ((rc = cli_check_tenant(c, a->tenant)) != EXIT_DONE)
        return rc;
    return -1;
}

int cli_open_pg(struct cli *c, struct tq_pg **pg)
{
    enum tq_err err = tq_pg_open(c->cfg.database_url, pg);
    if (err)
        return cli_fail(c, EXIT_UNREACHABLE, NULL, "%s", tq_pg_errstr(*pg));
    return EXIT_DONE;
}

bool cli_dispatch(struct cli *c, const int64_t *ids, size_t n, int64_t due_ms)
{
    if (n == 0)
        return true;
    struct tq_queue *q = NULL;
    enum tq_err err = tq_queue_open(&c->cfg, NULL, &q);
    if (!err)
        err = tq_queue_dispatch(q, ids, n, due_ms > (int64_t)tq_now_ms() ? due_ms : 0);
    if (err)
        fprintf(stderr,
                "%s: warning: the change is recorded but dispatch is deferred (%s); "
                "a worker's reconciler will dispatch the job\n",
                c->prog, tq_queue_errstr(q));
    tq_queue_close(q);
    return !err;
}

int action_finish(struct cli *c, enum tq_err err, const struct tq_admin_result *res,
                  const char *why)
{
    if (err == TQ_ENOTFOUND)
        return cli_fail(c, EXIT_NOTFOUND, NULL, "tenant_id: no such tenant \"%s\"",
                        res->tenant_id);
    if (err)
        return cli_fail(c, cli_exit_for(err), NULL, "%s: %s", res->tenant_id, why);
    bool deferred = false;
    if (res->dispatch)
        deferred = !cli_dispatch(c, &res->job_id, 1, res->due_ms);
    if (c->json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b, s:b}", "tenant_id", res->tenant_id,
                              "action", res->action, "from_status", res->from_status, "status",
                              res->tenant_status, "existed", res->existed, "dispatch_deferred",
                              deferred);
        json_object_set_new(o, "job_id", res->job_id ? json_integer(res->job_id) : json_null());
        json_object_set_new(o, "job_status",
                            res->job_status[0] ? json_string(res->job_status) : json_null());
        json_object_set_new(o, "scheduled_for_ms",
                            res->dispatch && res->due_ms > (int64_t)tq_now_ms()
                                ? json_integer(res->due_ms)
                                : json_null());
        cli_print_json(o);
    } else {
        printf("%s: %s%s (tenant %s -> %s", res->tenant_id, res->action,
               res->existed ? " already" : "", res->from_status, res->tenant_status);
        if (res->job_id)
            printf(", job %" PRId64 " %s", res->job_id, res->job_status);
        if (res->dispatch && res->due_ms > (int64_t)tq_now_ms()) {
            time_t t = (time_t)(res->due_ms / 1000);
            struct tm tm;
            char when[32];
            gmtime_r(&t, &tm);
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
            printf(", not before %s", when);
        }
        printf(")%s\n", deferred ? ", dispatch deferred" : "");
    }
    return EXIT_DONE;
}

int action_run(struct cli *c, int argc, char **argv, const struct action_spec *spec,
               action_fn *fn)
{
    struct action_args a;
    int rc = action_parse(c, argc, argv, spec, &a);
    if (rc >= 0)
        return rc;
    struct tq_pg *pg = NULL;
    if ((rc = cli_open_pg(c, &pg)) == EXIT_DONE) {
        struct tq_admin_result res;
        enum tq_err err = fn(c, pg, &a, &res);
        rc = action_finish(c, err, &res, tq_pg_errstr(pg));
    }
    tq_pg_close(pg);
    return rc;
}
