/* tq-enqueue internals: shared state of one invocation and the subcommands. */
#ifndef TQE_CLI_H
#define TQE_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "tq/admin.h"
#include "tq/config.h"
#include "tq/err.h"
#include "tq/pg.h"

/* Exit codes, the same for every subcommand (docs/design.md §5). */
enum {
    EXIT_DONE = 0,
    EXIT_UNREACHABLE = 1,
    EXIT_USAGE = 2,
    EXIT_REJECTED = 3,
    EXIT_NOTFOUND = 4,
};

/* The exit-code table every --help ends with. */
#define CLI_EXIT_CODES                                                          \
    "exit codes: 0 done, 1 a service is unreachable (safe to retry), 2 usage,\n" \
    "3 request rejected (not worth retrying), 4 not found.\n"

/* Audit actor when --by is not given. */
#define CLI_DEFAULT_ACTOR "tq-enqueue"

/* Longest --by, and longest --note/--reason, in bytes. */
#define CLI_BY_MAX 200
#define CLI_TEXT_MAX 2000

struct cli {
    struct tq_config cfg;
    bool json;          /* --json: results and errors as JSON on stdout */
    const char *prog;   /* "tq-enqueue submit" */
};

/*
 * Report an error: message on stderr; with --json also
 * {"error":{"code":..., "message":..., "errors":[...]}} on stdout.
 * The message is made printable (control bytes and invalid UTF-8 escaped as
 * \xNN), so echoing user input is safe; newlines (a server's multi-line
 * message) stay: on stderr each later line is indented under the first, in
 * JSON they are the standard \n. details may be NULL; it is stolen.
 * Returns exit_code.
 */
int cli_fail(struct cli *c, int exit_code, json_t *details, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Map a libtq error to the exit code a caller acts on. */
int cli_exit_for(enum tq_err err);

/* Print a JSON document on stdout, one line. Steals o. */
void cli_print_json(json_t *o);

/* ---- args.c ---- */
/* Copy in to out as printable valid UTF-8, \xNN for the rest, "..." if cut. */
void cli_sanitize(const char *in, char *out, size_t outlen);
/* The same, keeping newlines and tabs when lines is true (multi-line messages). */
void cli_sanitize_lines(const char *in, char *out, size_t outlen, bool lines);
/* cli_sanitize into one of 4 rotating static buffers (200 bytes). */
const char *cli_shown(const char *s);
bool cli_tenant_id_ok(const char *s);
/* EXIT_DONE, or the exit code after reporting (not found: no such id can exist). */
int cli_check_tenant(struct cli *c, const char *id);
/* EXIT_DONE, or after naming field and rule: EXIT_USAGE when a required value is
   missing, EXIT_REJECTED when the value breaks a rule (tq_text_problem, max). */
int cli_check_text(struct cli *c, const char *field, const char *v, size_t max, bool required,
                   bool multiline);
/* Options of a command whose only options are --json, --help and, when flag is
   not NULL, --FLAG (sets *flag_set). --help prints usage on stdout; an unknown
   option is reported (see --help). Returns CLI_GO_ON with optind at the first
   operand, else the exit code to return: EXIT_DONE after --help, EXIT_USAGE. */
#define CLI_GO_ON (-1)
int cli_flag_opts(struct cli *c, int argc, char **argv, const char *usage, const char *flag,
                  bool *flag_set);
/* RFC 3339 or "+30s"/"+5m"/"+2h"/"+1d" -> ms since epoch; -1 with why. */
int cli_parse_time(const char *s, int64_t now_ms, int64_t *out_ms, char *why, size_t whylen);

/* ---- action.c: what approve, reject, cancel, retry and deprovision share ---- */
struct action_args {
    const char *tenant;
    const char *by;     /* --by, or CLI_DEFAULT_ACTOR */
    const char *text;   /* --note or --reason */
};
struct action_spec {
    const char *usage;
    bool by_required;        /* --by WHO must be given */
    const char *text_flag;   /* "note", "reason" or NULL */
    bool text_required;
};
/* Parse ID [--by WHO] [--note|--reason TEXT] [--json]; -1 means go on. */
int action_parse(struct cli *c, int argc, char **argv, const struct action_spec *spec,
                 struct action_args *a);
/* Open the store; EXIT_DONE or the exit code after reporting. */
int cli_open_pg(struct cli *c, struct tq_pg **pg);
/*
 * Report an action's outcome (text or JSON) and, on success, hand the job
 * to Redis when res->dispatch says so ("dispatch deferred" if Redis is away).
 */
int action_finish(struct cli *c, enum tq_err err, const struct tq_admin_result *res,
                  const char *why);
/*
 * Push ids (LPUSH ready, or ZADD delayed when due_ms > now). Returns true
 * when done, false when deferred (warning on stderr already printed).
 */
bool cli_dispatch(struct cli *c, const int64_t *ids, size_t n, int64_t due_ms);

/*
 * The whole of a tenant action: parse (action_parse), open PostgreSQL, run fn,
 * report (action_finish). fn fills res; on error tq_pg_errstr(pg) has the detail.
 */
typedef enum tq_err action_fn(struct cli *c, struct tq_pg *pg, const struct action_args *a,
                              struct tq_admin_result *res);
int action_run(struct cli *c, int argc, char **argv, const struct action_spec *spec,
               action_fn *fn);

/* ---- subcommands ---- */
int cmd_migrate(struct cli *c, int argc, char **argv);
int cmd_submit(struct cli *c, int argc, char **argv);
int cmd_status(struct cli *c, int argc, char **argv);
int cmd_approve(struct cli *c, int argc, char **argv);
int cmd_reject(struct cli *c, int argc, char **argv);
int cmd_cancel(struct cli *c, int argc, char **argv);
int cmd_retry(struct cli *c, int argc, char **argv);
int cmd_deprovision(struct cli *c, int argc, char **argv);
int cmd_dead(struct cli *c, int argc, char **argv);
int cmd_stats(struct cli *c, int argc, char **argv);
int cmd_revalidate(struct cli *c, int argc, char **argv);
int cmd_history(struct cli *c, int argc, char **argv);
int cmd_credentials(struct cli *c, int argc, char **argv);   /* credentials.c */
int cmd_secrets(struct cli *c, int argc, char **argv);       /* credentials.c */
int cmd_auth(struct cli *c, int argc, char **argv);          /* credentials.c */
int cmd_pipeline(struct cli *c, int argc, char **argv);
int cmd_approvers(struct cli *c, int argc, char **argv);

/* ---- watch.c: status --watch ---- */
struct watch_opts {
    const char *const *ids;
    size_t nids;
    const char *batch;
    int64_t timeout_ms;    /* 0: none */
    int64_t interval_ms;   /* between polls */
};
/* Poll until every listed tenant has finished. 0, or 1 on timeout/unreachable. */
int status_watch(struct cli *c, struct tq_pg *pg, const struct watch_opts *o);
/* True for a status after which a tenant changes only by an operator's action. */
bool tenant_finished(const char *status);

#endif
