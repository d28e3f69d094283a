/*
 * tq-enqueue: the CLI portal backends and operators use to submit tenant
 * requests and read their progress. Subcommands live in their own files;
 * this one dispatches and owns the shared error reporting.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tq/log.h"

static const char usage[] =
    "usage: tq-enqueue [--json] COMMAND [ARGS]\n"
    "       tq-enqueue --help | --version\n"
    "\n"
    "Submit tenant onboarding requests, decide on them, and follow their progress.\n"
    "\n"
    "commands:\n"
    "  migrate                 create or upgrade the tq schema in PostgreSQL\n"
    "  submit                  submit one request (flags) or a batch (--file)\n"
    "  status [ID...|--batch B|--all] [--watch]\n"
    "                          show tenants, their status and steps; --watch follows\n"
    "                          them live until they finish\n"
    "  approve ID --by WHO     let a pending_approval tenant go ahead\n"
    "  reject ID --by WHO --reason TEXT\n"
    "                          turn a pending_approval tenant down\n"
    "  cancel ID               stop a tenant's provisioning (waiting or running)\n"
    "  retry ID                run a blocked, failed or rollback_failed tenant again\n"
    "  deprovision ID          remove an active tenant's resources\n"
    "  dead [--requeue X]      list dead jobs, or put one back in the queue\n"
    "  stats                   queue depths, workers, tenants by status\n"
    "  revalidate ID|--all     re-run the checks of active tenants (drift)\n"
    "  history ID              every job, step, attempt and audit event of a tenant\n"
    "  credentials ID          an active tenant's generated credentials, for its\n"
    "                          owner (needs the secrets key; every read is audited)\n"
    "  secrets rotate          re-encrypt stored secrets under the current key\n"
    "  auth jwks               print the public keys of tenants' API tokens (a JWKS)\n"
    "  pipeline register FILE | list\n"
    "                          the operator's named pipelines (submit picks one)\n"
    "  approvers add|remove|list --role ROLE [IDENTITY]\n"
    "                          who may approve, by role (admin account)\n"
    "\n"
    "  tq-enqueue COMMAND --help shows a command's options and examples.\n"
    "\n"
    "global options:\n"
    "  --json      machine-readable output; errors as JSON on stdout too\n"
    "              (also accepted after the command)\n"
    "  --help      this text\n"
    "  --version   print the version\n"
    "\n"
    "environment: TQ_DATABASE_URL (libpq conninfo or URI), TQ_REDIS_URL\n"
    "(redis://[:password@]host:port[/db]), TQ_QUEUE, TQ_PREFIX,\n"
    "TQ_REGIONS_FILE (the region map; else TQ_REGIONS), TQ_APPROVAL_THRESHOLD.\n"
    "`eval \"$(deploy/local/env)\"` sets them\n"
    "locally.\n"
    "\n"
    "examples:\n"
    "  tq-enqueue submit --file tenants.csv --batch onboarding-2026-11\n"
    "  tq-enqueue status --watch --batch onboarding-2026-11\n"
    "  tq-enqueue approve acme-corp --by alice@example.com\n"
    "\n" CLI_EXIT_CODES;

int cli_exit_for(enum tq_err err)
{
    switch (err) {
    case TQ_OK:
        return EXIT_DONE;
    case TQ_ECONNECT:
    case TQ_ETIMEOUT:
    case TQ_EREDIS:
    case TQ_EPG:
    case TQ_EIO:
        return EXIT_UNREACHABLE;
    case TQ_ENOTFOUND:
        return EXIT_NOTFOUND;
    case TQ_EINVALID:
    case TQ_ECONFLICT:
    case TQ_EBADJOB:
    case TQ_ESQL:   /* PostgreSQL refused the statement (permission, constraint): not a retry */
        return EXIT_REJECTED;
    default:
        return EXIT_UNREACHABLE;
    }
}

static const char *code_name(int exit_code)
{
    switch (exit_code) {
    case EXIT_UNREACHABLE:
        return "unreachable";
    case EXIT_USAGE:
        return "usage";
    case EXIT_REJECTED:
        return "rejected";
    case EXIT_NOTFOUND:
        return "not_found";
    default:
        return "error";
    }
}

int cli_fail(struct cli *c, int exit_code, json_t *details, const char *fmt, ...)
{
    char raw[2048], msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    /* Messages echo user input: keep terminals and JSON parsers safe. A
       server's message may span lines (libpq: "refused\n\tIs the server
       running..."): keep them as lines, never as escape codes. */
    size_t len = strlen(raw);
    while (len > 0 && (raw[len - 1] == '\n' || raw[len - 1] == ' ' || raw[len - 1] == '\t'))
        raw[--len] = '\0';
    cli_sanitize_lines(raw, msg, sizeof(msg), true);
    /* stderr: later lines indented under the first, so none passes for a line of its own */
    fprintf(stderr, "%s: ", c->prog);
    for (const char *p = msg; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        fwrite(p, 1, n, stderr);
        if (!nl)
            break;
        p = nl + 1;
        while (*p == '\t' || *p == ' ')
            p++;
        fputs("\n    ", stderr);
    }
    fputc('\n', stderr);
    if (c->json) {
        json_t *e = json_pack("{s:s, s:s, s:i}", "code", code_name(exit_code), "message", msg,
                              "exit_code", exit_code);
        if (details)
            json_object_set_new(e, "errors", details);
        cli_print_json(json_pack("{s:o}", "error", e));
    } else {
        json_decref(details);
    }
    return exit_code;
}

void cli_print_json(json_t *o)
{
    if (!o) {
        /* only invalid UTF-8 gets here, and every input is checked before */
        fputs("{\"error\":{\"code\":\"error\",\"message\":\"output is not valid UTF-8\"}}\n",
              stdout);
        return;
    }
    json_dumpf(o, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    fflush(stdout);
    json_decref(o);
}

int main(int argc, char **argv)
{
    struct cli c;
    memset(&c, 0, sizeof(c));
    c.prog = "tq-enqueue";
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            c.json = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return EXIT_DONE;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("tq-enqueue %s\n", TQ_VERSION);
            return EXIT_DONE;
        } else {
            return cli_fail(&c, EXIT_USAGE, NULL, "unknown option \"%s\" (see --help)",
                            cli_shown(argv[i]));
        }
    }
    if (i >= argc) {
        fputs(usage, stderr);
        return c.json ? cli_fail(&c, EXIT_USAGE, NULL, "a command is required") : EXIT_USAGE;
    }
    const char *cmd = argv[i];
    static const struct {
        const char *name;
        int (*fn)(struct cli *, int, char **);
    } cmds[] = {{"migrate", cmd_migrate}, {"submit", cmd_submit},
                {"status", cmd_status},   {"approve", cmd_approve},
                {"reject", cmd_reject},   {"cancel", cmd_cancel},
                {"retry", cmd_retry},     {"deprovision", cmd_deprovision},
                {"dead", cmd_dead},       {"stats", cmd_stats},
                {"revalidate", cmd_revalidate}, {"history", cmd_history},
                {"credentials", cmd_credentials}, {"secrets", cmd_secrets},
                {"auth", cmd_auth},
                {"pipeline", cmd_pipeline}, {"approvers", cmd_approvers}};
    int (*fn)(struct cli *, int, char **) = NULL;
    for (size_t k = 0; k < sizeof(cmds) / sizeof(cmds[0]); k++)
        if (strcmp(cmds[k].name, cmd) == 0)
            fn = cmds[k].fn;
    if (!fn) {
        return cli_fail(&c, EXIT_USAGE, NULL, "unknown command \"%s\" (see --help)",
                        cli_shown(cmd));
    }
    char prog[64];
    snprintf(prog, sizeof(prog), "tq-enqueue %s", cmd);
    c.prog = prog;
    char why[256];
    if (tq_config_from_env(&c.cfg, why, sizeof(why))) {
        int rc = cli_fail(&c, EXIT_USAGE, NULL, "%s", why);
        tq_config_cleanup(&c.cfg);
        return rc;
    }
    tq_log_init("enqueue", c.cfg.log_format, TQ_LOG_WARN);
    /* getopt_long in the subcommand sees argv starting at its name. */
    int rc = fn(&c, argc - i, argv + i);
    tq_config_cleanup(&c.cfg);
    return rc;
}
