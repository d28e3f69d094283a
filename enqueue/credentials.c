/*
 * tq-enqueue credentials / secrets rotate: the tenant owner's read of the
 * credentials the fleet generated, and the operator's re-encryption under
 * the current key. Both need the key (TQ_SECRETS_KEY / _FILE); the store
 * and its format are common/src/secrets.c, the design docs/security.md.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tq/jwt.h"
#include "tq/secrets.h"

static const char cred_usage[] =
    "usage: tq-enqueue credentials TENANT [--by WHO] [--json]\n"
    "\n"
    "Print the credentials the fleet generated for an ACTIVE tenant (its\n"
    "PostgreSQL login, its Redis ACL user) for handing to the tenant's owner.\n"
    "Needs the secrets key (TQ_SECRETS_KEY or TQ_SECRETS_KEY_FILE) and a\n"
    "database role allowed to call tq.tenant_credentials (tq_cli). Every read\n"
    "is recorded as an audit event (credentials_read, with --by as the actor);\n"
    "for a tenant that is not active nothing is printed (credentials_refused).\n"
    "\n"
    "options:\n"
    "  --by WHO   who asks, for the audit trail (default tq-enqueue)\n"
    "  --json     {\"tenant_id\": ..., \"credentials\": {\"postgres\": {...}, \"redis\": {...}}}\n"
    "\n"
    "example:\n"
    "  tq-enqueue credentials acme-corp --by alice@example.com --json\n"
    "\n" CLI_EXIT_CODES;

static const char rot_usage[] =
    "usage: tq-enqueue secrets rotate [--json]\n"
    "\n"
    "Re-encrypt every stored tenant secret that is not under the current key\n"
    "(the first of TQ_SECRETS_KEY / TQ_SECRETS_KEY_FILE). Secrets under older\n"
    "keys listed after it stay readable until then; once this reports 0 left,\n"
    "the old keys can be removed. One transaction: all or nothing. Run it with\n"
    "a role that may update tq.secrets (tq_worker or tq_migrate).\n"
    "\n"
    "options:\n"
    "  --json     {\"rotated\": N}\n"
    "\n"
    "example:\n"
    "  TQ_SECRETS_KEY_FILE=/etc/tenantq/keys tq-enqueue secrets rotate\n"
    "\n" CLI_EXIT_CODES;

static int open_store(struct cli *c, struct tq_secrets **st)
{
    char why[256];
    struct tq_keyring *kr = NULL;
    if (tq_keyring_from_env(&kr, why, sizeof(why)))
        return cli_fail(c, EXIT_USAGE, NULL, "%s", why);
    if (!kr)
        return cli_fail(c, EXIT_USAGE, NULL,
                        "the secrets key is required: set TQ_SECRETS_KEY or TQ_SECRETS_KEY_FILE");
    if (tq_secrets_open("pg", true, kr, st, why, sizeof(why)))
        return cli_fail(c, EXIT_USAGE, NULL, "%s", why);
    return EXIT_DONE;
}

int cmd_credentials(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {{"by", required_argument, NULL, 'b'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *by = CLI_DEFAULT_ACTOR;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (o == 'b') {
            by = optarg;
        } else if (o == 'j') {
            c->json = true;
        } else if (o == 'h') {
            fputs(cred_usage, stdout);
            return EXIT_DONE;
        } else {
            return cli_fail(c, EXIT_USAGE, NULL, "unknown option \"%s\" (see --help)",
                            cli_shown(argv[optind - 1]));
        }
    }
    if (argc - optind != 1)
        return cli_fail(c, EXIT_USAGE, NULL, "give exactly one TENANT (see --help)");
    const char *tenant = argv[optind];
    int rc = cli_check_tenant(c, tenant);
    if (rc == EXIT_DONE)
        rc = cli_check_text(c, "--by", by, CLI_BY_MAX, true, false);
    if (rc != EXIT_DONE)
        return rc;
    struct tq_secrets *st = NULL;
    if ((rc = open_store(c, &st)) != EXIT_DONE)
        return rc;
    struct tq_pg *pg = NULL;
    rc = cli_open_pg(c, &pg);
    if (rc == EXIT_DONE) {
        json_t *creds = NULL;
        char why[256];
        enum tq_err err = tq_secrets_owner_read(st, tq_pg_conn(pg), tenant, by, &creds, why,
                                                sizeof(why));
        if (err) {
            rc = cli_fail(c, cli_exit_for(err), NULL, "%s", why);
        } else if (c->json) {
            cli_print_json(json_pack("{s:s, s:o}", "tenant_id", tenant, "credentials", creds));
        } else {
            const char *name;
            json_t *v;
            json_object_foreach(creds, name, v) {
                printf("[%s]\n", name);
                const char *k;
                json_t *f;
                json_object_foreach(v, k, f) {
                    if (json_is_string(f))
                        printf("%s = %s\n", k, json_string_value(f));
                    else if (json_is_integer(f))
                        printf("%s = %lld\n", k, (long long)json_integer_value(f));
                }
            }
            fflush(stdout);
            json_decref(creds);
        }
    }
    tq_pg_close(pg);
    tq_secrets_free(st);
    return rc;
}

int cmd_secrets(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        if (o == 'j') {
            c->json = true;
        } else if (o == 'h') {
            fputs(rot_usage, stdout);
            return EXIT_DONE;
        } else {
            return cli_fail(c, EXIT_USAGE, NULL, "unknown option \"%s\" (see --help)",
                            cli_shown(argv[optind - 1]));
        }
    }
    if (optind >= argc || strcmp(argv[optind], "rotate") != 0)
        return cli_fail(c, EXIT_USAGE, NULL, "the only secrets command is \"rotate\" (see --help)");
    for (int i = optind + 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            c->json = true;
        else
            return cli_fail(c, EXIT_USAGE, NULL, "unexpected argument \"%s\"", cli_shown(argv[i]));
    }
    struct tq_secrets *st = NULL;
    int rc = open_store(c, &st);
    if (rc != EXIT_DONE)
        return rc;
    struct tq_pg *pg = NULL;
    rc = cli_open_pg(c, &pg);
    if (rc == EXIT_DONE) {
        char why[256];
        int n = 0;
        enum tq_err err = tq_secrets_rotate(st, tq_pg_conn(pg), &n, why, sizeof(why));
        if (err)
            rc = cli_fail(c, cli_exit_for(err), NULL, "%s", why);
        else if (c->json)
            cli_print_json(json_pack("{s:i}", "rotated", n));
        else
            printf("re-encrypted %d secret%s under the current key\n", n, n == 1 ? "" : "s");
    }
    tq_pg_close(pg);
    tq_secrets_free(st);
    return rc;
}

static const char auth_usage[] =
    "usage: tq-enqueue auth jwks\n"
    "Print the public keys tenants' API tokens (JWTs, EdDSA/Ed25519) are verified with, as a\n"
    "JSON Web Key Set, for the platform's services to publish or load. The keys come from\n"
    "TQ_AUTH_KEY or TQ_AUTH_KEY_FILE (lines KID:BASE64 of 32-byte Ed25519 private keys, the\n"
    "first signs, all verify: rotate by putting a new key first and dropping the old one once\n"
    "its tokens expired). Only public keys are printed.\n";

int cmd_auth(struct cli *c, int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(auth_usage, stdout);
            return EXIT_DONE;
        }
    if (argc != 2 || strcmp(argv[1], "jwks") != 0)
        return cli_fail(c, EXIT_USAGE, NULL, "the only auth command is \"jwks\" (see --help)");
    struct tq_jwt_keys *k = NULL;
    char why[256];
    if (tq_jwt_keys_from_env(&k, why, sizeof(why)))
        return cli_fail(c, EXIT_USAGE, NULL, "%s", why);
    if (!k)
        return cli_fail(c, EXIT_USAGE, NULL, "TQ_AUTH_KEY or TQ_AUTH_KEY_FILE is required: the "
                        "tenants' JWT signing keys");
    cli_print_json(tq_jwt_jwks(k));
    tq_jwt_keys_free(k);
    return EXIT_DONE;
}
