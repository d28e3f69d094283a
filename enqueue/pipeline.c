/*
 * tq-enqueue pipeline: the operator's registry of named pipelines. Only
 * this command decides what steps tenants' jobs run; `submit --pipeline
 * NAME` only picks one of them (tq/pipeline_registry.h).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tq/pipeline_registry.h"
#include "tq/util.h"

static const char usage[] =
    "usage: tq-enqueue pipeline register FILE [--name NAME] [--default] [--by WHO] [--json]\n"
    "       tq-enqueue pipeline list [--json]\n"
    "\n"
    "Operators register the pipelines the fleet may run; a submit names one of\n"
    "them (--pipeline NAME) or gets the fleet's default, and can never bring its\n"
    "own steps.\n"
    "\n"
    "  register  validate FILE (kinds, DAG, templates, retry policies, classes)\n"
    "            and store it under NAME (default: the file's \"name\"), replacing\n"
    "            what the name pointed at for new jobs only; records the audit\n"
    "            event \"pipeline_registered\". The first pipeline registered, or\n"
    "            one given --default, becomes the fleet's default.\n"
    "  list      the registered names, their SHA-256, step count and default\n"
    "\n"
    "options:\n"
    "  --name NAME  1-63 of a-z 0-9 . _ -, starting with a letter or digit\n"
    "  --default    make it the pipeline submit uses without --pipeline\n"
    "  --by WHO     who registers, for the audit log (default \"" CLI_DEFAULT_ACTOR "\")\n"
    "  --json       register: {\"name\", \"hash\", \"default\", \"steps\"};\n"
    "               list: [{\"name\", \"hash\", \"default\", \"pipeline\", \"steps\",\n"
    "               \"registered_at\", \"registered_by\"}]\n"
    "\n"
    "examples:\n"
    "  tq-enqueue pipeline register deploy/pipelines/tenant-provision.json --default\n"
    "  tq-enqueue pipeline register deploy/pipelines/tenant-provision-terraform.json\n"
    "  tq-enqueue submit --pipeline tenant-provision-terraform --tenant-id ...\n"
    "\n" CLI_EXIT_CODES;

static int do_list(struct cli *c)
{
    struct tq_pg *pg = NULL;
    int rc = cli_open_pg(c, &pg);
    if (rc == EXIT_DONE) {
        json_t *list = NULL;
        enum tq_err err = tq_pipeline_list(pg, &list);
        if (err) {
            rc = cli_fail(c, cli_exit_for(err), NULL, "%s", tq_pg_errstr(pg));
        } else if (c->json) {
            cli_print_json(list);
            list = NULL;
        } else {
            size_t i;
            json_t *p;
            printf("%-32s %-8s %5s  %-12s  %s\n", "NAME", "DEFAULT", "STEPS", "SHA-256",
                   "REGISTERED BY");
            json_array_foreach(list, i, p) {
                printf("%-32s %-8s %5lld  %-12.12s  %s\n",
                       json_string_value(json_object_get(p, "name")),
                       json_is_true(json_object_get(p, "default")) ? "yes" : "",
                       (long long)json_integer_value(json_object_get(p, "steps")),
                       json_string_value(json_object_get(p, "hash")),
                       cli_shown(json_string_value(json_object_get(p, "registered_by"))));
            }
        }
        json_decref(list);
    }
    tq_pg_close(pg);
    return rc;
}

static int do_register(struct cli *c, const char *file, const char *name, bool dflt,
                       const char *by)
{
    struct tq_pipeline *pl = NULL;
    char why[1024];
    enum tq_err err = tq_pipeline_load(file, &pl, why, sizeof(why));
    if (err)
        return cli_fail(c, EXIT_USAGE, NULL, "%s; nothing was registered", why);
    if (!name)
        name = pl->name;
    if (!tq_pipeline_name_valid(name, why, sizeof(why))) {
        int rc = cli_fail(c, EXIT_USAGE, NULL, "--name \"%s\": %s", cli_shown(name), why);
        tq_pipeline_free(pl);
        return rc;
    }
    struct tq_pg *pg = NULL;
    int rc = cli_open_pg(c, &pg);
    if (rc == EXIT_DONE) {
        bool is_default = false;
        err = tq_pipeline_register(pg, name, pl, dflt, by, &is_default);
        if (err) {
            rc = cli_fail(c, cli_exit_for(err), NULL, "%s", tq_pg_errstr(pg));
        } else if (c->json) {
            cli_print_json(json_pack("{s:s, s:s, s:b, s:I}", "name", name, "hash", pl->hash,
                                     "default", is_default, "steps", (json_int_t)pl->nsteps));
        } else {
            printf("registered pipeline %s (%zu steps, sha256 %.12s)%s\n", name, pl->nsteps,
                   pl->hash, is_default ? ", the fleet's default" : "");
        }
    }
    tq_pg_close(pg);
    tq_pipeline_free(pl);
    return rc;
}

int cmd_pipeline(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {{"name", required_argument, NULL, 'n'},
                                         {"default", no_argument, NULL, 'd'},
                                         {"by", required_argument, NULL, 'b'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *name = NULL, *by = CLI_DEFAULT_ACTOR;
    bool dflt = false;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (o) {
        case 'n': name = optarg; break;
        case 'd': dflt = true; break;
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
    const char *verb = optind < argc ? argv[optind] : NULL;
    int rest = argc - optind - 1;
    if (verb && strcmp(verb, "list") == 0 && rest == 0 && !name && !dflt)
        return do_list(c);
    if (verb && strcmp(verb, "register") == 0 && rest == 1)
        return do_register(c, argv[optind + 1], name, dflt, by);
    return cli_fail(c, EXIT_USAGE, NULL, "give \"register FILE\" or \"list\" (see --help)");
}
