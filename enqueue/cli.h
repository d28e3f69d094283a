/* tq-enqueue internals: shared state of one invocation and the subcommands. */
#ifndef TQE_CLI_H
#define TQE_CLI_H

#include <stdbool.h>

#include <jansson.h>

#include "tq/config.h"
#include "tq/err.h"

/* Exit codes, the same for every subcommand (DESIGN.md §5). */
enum {
    EXIT_DONE = 0,
    EXIT_UNREACHABLE = 1,
    EXIT_USAGE = 2,
    EXIT_REJECTED = 3,
    EXIT_NOTFOUND = 4,
};

struct cli {
    struct tq_config cfg;
    bool json;          /* --json: results and errors as JSON on stdout */
    const char *prog;   /* "tq-enqueue submit" */
};

/*
 * Report an error: message on stderr; with --json also
 * {"error":{"code":..., "message":..., "errors":[...]}} on stdout.
 * details may be NULL; it is stolen. Returns exit_code.
 */
int cli_fail(struct cli *c, int exit_code, json_t *details, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Map a libtq error to the exit code a caller acts on. */
int cli_exit_for(enum tq_err err);

int cmd_migrate(struct cli *c, int argc, char **argv);
int cmd_submit(struct cli *c, int argc, char **argv);
int cmd_status(struct cli *c, int argc, char **argv);

#endif
