/*
 * tq-enqueue approvers: the operator's list of who may approve, by role
 * (tq/approvers.h). Run with the admin account (tq_migrate): the CLI's own
 * account can read the list but never change it, so nobody makes themselves
 * an approver with the account that approves.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tq/approvers.h"

static const char usage[] =
    "usage: tq-enqueue approvers add --role ROLE IDENTITY [--by WHO] [--json]\n"
    "       tq-enqueue approvers remove --role ROLE IDENTITY [--by WHO] [--json]\n"
    "       tq-enqueue approvers list [--role ROLE] [--json]\n"
    "\n"
    "Who may approve or reject requests waiting in pending_approval. The\n"
    "approval policy (tq.approval_policy) names the role each tier's requests\n"
    "need (finance by default); `approve --by IDENTITY` succeeds only when\n"
    "IDENTITY holds that role and is not the request's owner.\n"
    "\n"
    "  add     give IDENTITY the role (audit event \"approver_added\"); adding\n"
    "          a holder again changes nothing\n"
    "  remove  take it away (audit event \"approver_removed\"); exit 4 when\n"
    "          IDENTITY does not hold it\n"
    "  list    the approvers, of one role or all\n"
    "\n"
    "add and remove need the admin account (TQ_DATABASE_URL of tq_migrate,\n"
    "`eval \"$(deploy/local/env migrate)\"` locally); with the CLI's account the\n"
    "database refuses them (exit 3).\n"
    "\n"
    "options:\n"
    "  --role ROLE  1-32 of a-z 0-9 _ -, starting with a letter (e.g. finance)\n"
    "  --by WHO     who makes the change, for the audit log (default \"" CLI_DEFAULT_ACTOR "\")\n"
    "  --json       add/remove: {\"role\", \"identity\", \"action\", \"changed\"};\n"
    "               list: [{\"role\", \"identity\", \"added_at\", \"added_by\"}]\n"
    "\n"
    "examples:\n"
    "  tq-enqueue approvers add --role finance cfo@example.com --by ops@example.com\n"
    "  tq-enqueue approvers list --role finance\n"
    "\n" CLI_EXIT_CODES;

static int do_list(struct cli *c, const char *role)
{
    struct tq_pg *pg = NULL;
    int rc = cli_open_pg(c, &pg);
    if (rc == EXIT_DONE) {
        json_t *list = NULL;
        char why[512];
        enum tq_err err = tq_approvers_list(pg, role, &list, why, sizeof(why));
        if (err) {
            rc = cli_fail(c, cli_exit_for(err), NULL, "%s", why);
        } else if (c->json) {
            cli_print_json(list);
            list = NULL;
        } else {
            size_t i;
            json_t *a;
            printf("%-16s %-40s %s\n", "ROLE", "IDENTITY", "ADDED BY");
            json_array_foreach(list, i, a) {
                printf("%-16s %-40s %s\n", json_string_value(json_object_get(a, "role")),
                       cli_shown(json_string_value(json_object_get(a, "identity"))),
                       cli_shown(json_string_value(json_object_get(a, "added_by"))));
            }
        }
        json_decref(list);
    }
    tq_pg_close(pg);
    return rc;
}

static int do_change(struct cli *c, bool add, const char *role, const char *identity,
                     const char *by)
{
    struct tq_pg *pg = NULL;
    int rc = cli_open_pg(c, &pg);
    if (rc != EXIT_DONE)
        return rc;
    char why[512];
    bool changed = true;
    enum tq_err err = add ? tq_approvers_add(pg, role, identity, by, &changed, why, sizeof(why))
                          : tq_approvers_remove(pg, role, identity, by, why, sizeof(why));
    if (err) {
        rc = cli_fail(c, cli_exit_for(err), NULL, "%s; nothing was changed", why);
    } else if (c->json) {
        cli_print_json(json_pack("{s:s, s:s, s:s, s:b}", "role", role, "identity", identity,
                                 "action", add ? "added" : "removed", "changed", changed));
    } else if (add) {
        printf(changed ? "%s now holds role %s\n" : "%s already holds role %s: nothing changed\n",
               cli_shown(identity), role);
    } else {
        printf("%s no longer holds role %s\n", cli_shown(identity), role);
    }
    tq_pg_close(pg);
    return rc;
}

int cmd_approvers(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {{"role", required_argument, NULL, 'r'},
                                         {"by", required_argument, NULL, 'b'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *role = NULL, *by = CLI_DEFAULT_ACTOR;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (o) {
        case 'r': role = optarg; break;
        case 'b': by = optarg; break;
        case 'j': c->json = true; break;
        case 'h': fputs(usage, stdout); return EXIT_DONE;
        case ':':
            return cli_fail(c, EXIT_USAGE, NULL, "option \"%s\" needs a value (see --help)",
                            cli_shown(argv[optind - 1]));
        default:
            return cli_fail(c, EXIT_USAGE, NULL, "unknown option \"%s\" (see --help)",
                            cli_shown(argv[optind - 1]));
        }
    }
    int rc = cli_check_text(c, "by", by, CLI_BY_MAX, true, false);
    if (rc != EXIT_DONE)
        return rc;
    char why[160];
    if (role && !tq_approver_role_valid(role, why, sizeof(why)))
        return cli_fail(c, EXIT_REJECTED, NULL, "--role \"%s\": %s; nothing was changed",
                        cli_shown(role), why);
    const char *verb = optind < argc ? argv[optind] : NULL;
    int rest = argc - optind - 1;
    if (verb && strcmp(verb, "list") == 0 && rest == 0)
        return do_list(c, role);
    bool add = verb && strcmp(verb, "add") == 0, remove = verb && strcmp(verb, "remove") == 0;
    if ((add || remove) && rest == 1) {
        if (!role)
            return cli_fail(c, EXIT_USAGE, NULL, "%s needs --role ROLE (see --help)", verb);
        const char *identity = argv[optind + 1];
        rc = cli_check_text(c, "identity", identity, TQ_APPROVER_ID_MAX, true, false);
        if (rc != EXIT_DONE)
            return rc;
        return do_change(c, add, role, identity, by);
    }
    return cli_fail(c, EXIT_USAGE, NULL,
                    "give \"add --role ROLE IDENTITY\", \"remove --role ROLE IDENTITY\" or "
                    "\"list\" (see --help)");
}
