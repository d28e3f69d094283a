/*
 * tq-worker: pulls provisioning jobs from Redis and runs them. Configuration
 * comes from the environment (docs/design.md §5); flags override it.
 */
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop.h"
#include "tq/config.h"
#include "tq/log.h"
#include <unistd.h>

static const char usage[] =
    "usage: tq-worker [options]\n"
    "\n"
    "Pulls tenant provisioning jobs from Redis, runs their steps, records every\n"
    "transition in PostgreSQL. Runs until SIGTERM or SIGINT, then drains: no new\n"
    "jobs; jobs in hand finish their current step or are handed back. Exit 0.\n"
    "\n"
    "options (each overrides its environment variable):\n"
    "  -c, --concurrency N   job slots (TQ_CONCURRENCY, default 4)\n"
    "  -q, --queue NAME      queue name (TQ_QUEUE, default provision)\n"
    "      --http ADDR       /healthz /readyz /metrics listener, host:port, \"\" = off\n"
    "                        (TQ_HTTP_ADDR, default 127.0.0.1:9464)\n"
    "      --lease-ms MS     job lease (TQ_LEASE_MS, default 15000)\n"
    "      --allow-superuser run even when TQ_DATABASE_URL logs in as a PostgreSQL\n"
    "                        superuser (TQ_ALLOW_SUPERUSER=1); refused otherwise\n"
    "  -h, --help            this text\n"
    "      --version         print the version\n"
    "\n"
    "environment (the worker reads these and no other; worker/README.md says more):\n"
    "  services    TQ_REDIS_URL (redis://[:password@]host:port[/db]),\n"
    "              TQ_DATABASE_URL (libpq conninfo or URI), TQ_PREFIX (key prefix, tq)\n"
    "  the worker  TQ_QUEUE, TQ_CONCURRENCY, TQ_HTTP_ADDR, TQ_LEASE_MS (as above),\n"
    "              TQ_LOG_FORMAT (text|json), TQ_DEBUG, TQ_GRACE_MS, TQ_BATCH,\n"
    "              TQ_MAX_DELIVERIES, TQ_LONG_WAIT_MS, TQ_REVALIDATE_INTERVAL_MS,\n"
    "              TQ_ALLOW_EVICTION, TQ_ALLOW_SUPERUSER (as --allow-superuser),\n"
    "              TQ_OUTAGE_MS (how long a step waits out an unreachable\n"
    "              dependency, 300000), TQ_PIPELINE_CACHE (32)\n"
    "  secrets     TQ_SECRETS_STORE (pg, the default, or file:DIR), TQ_SECRETS_KEY\n"
    "              or TQ_SECRETS_KEY_FILE (lines KID:BASE64-32-BYTES, first current)\n"
    "  auth        TQ_AUTH_KEY or TQ_AUTH_KEY_FILE: the tenants' JWT signing keys\n"
    "              (lines KID:BASE64 of 32-byte Ed25519 keys, first signs, all\n"
    "              verify; tq-enqueue auth jwks prints the public keys)\n"
    "  steps       TQ_WORK_DIR (exec's scratch space), TQ_TENANT_REDIS_URL,\n"
    "              TQ_EXEC_ALLOW (colon-separated absolute paths exec may run;\n"
    "              never a shell), TQ_TERRAFORM_BIN (exec may run it too),\n"
    "              TQ_TERRAFORM_PG_URL (Terraform's state database: PG_CONN_STR of\n"
    "              exec steps with terraform_backend \"pg\"),\n"
    "              TQ_NOTIFY_WEBHOOK_URL, TQ_SMTP_URL, TQ_NOTIFY_FROM, TQ_NOTIFY_TO\n"
    "  regions     TQ_REGIONS_FILE: the region map (JSON, region -> s3_region,\n"
    "              s3_endpoint, vector_url, dashboard_url, pg_url); ${region.X} in a\n"
    "              pipeline reads the tenant's region's entry, with no fleet default\n"
    "  approvals   TQ_APPROVAL_ESCALATE_AFTER (seconds a request may wait in\n"
    "              pending_approval before audit event approval_escalated; 0 off)\n"
    "  notify      TQ_NOTIFY_ROUTES_FILE (JSON: audit event -> channels: slack,\n"
    "              email, pagerduty; without it the webhook and SMTP settings above\n"
    "              hear about failures), TQ_NOTIFY_POLL_MS (1000),\n"
    "              TQ_NOTIFY_BACKOFF_MS (1000, doubling to 5 min),\n"
    "              TQ_NOTIFY_MAX_ATTEMPTS (10)\n"
    "  pipelines   ${env.X} in a pipeline reads X when the step runs; the shipped\n"
    "              ones use TQ_S3_ENDPOINT (on/off switch), TQ_S3_ACCESS_KEY,\n"
    "              TQ_S3_SECRET_KEY, TQ_VECTOR_URL and TQ_DASHBOARD_URL (on/off\n"
    "              switches), TQ_VECTOR_TOKEN, TQ_DASHBOARD_TOKEN,\n"
    "              TQ_TERRAFORM_BIN, TQ_TERRAFORM_MODULE, TQ_ENVIRONMENT,\n"
    "              TQ_AUTH_KEY_FILE (turns the API credential steps on),\n"
    "              TQ_PROMETHEUS_URL (turns check-monitoring on)\n"
    "The worker runs the pipeline stored with each job; operators register the\n"
    "pipelines a submit may name (tq-enqueue pipeline register).\n"
    "Every value of a secret setting (names with SECRET, TOKEN, PASSWORD, or\n"
    "ending in _KEY; URL passwords) is masked in logs, step outputs and errors.\n"
    "\n"
    "example:\n"
    "  eval \"$(deploy/local/env worker)\"; tq-worker --concurrency 8\n";

/* What a worker need not carry (docs/design.md §9 measures each, idle at 8
   slots, with /proc/PID/smaps):
   - GnuTLS initialises itself in a library constructor, before main, in
     every process that links it (0.7 MB of RSS: its own pages and
     p11-kit's). Only libpq's LDAP lookups and libcurl's RTMP link it here,
     and both call gnutls_global_init() themselves when used; its documented
     switch is read by that constructor, so it is set here and the binary
     runs again, once (same pid). If the exec fails, the worker just runs.
   - libpq tries GSSAPI encryption first by default, which loads Kerberos'
     configuration and credential cache on every connection (0.5 MB) for a
     method this deployment does not use (scram over TLS, docs/security.md).
     A conninfo's gssencmode, or PGGSSENCMODE set by the operator, wins.
   - Every thread that allocates gets its own malloc arena by default (up to
     16 on two cores); two are enough for a loop and blocking threads that
     mostly hand work on. */
#define OUR_NO_GNUTLS_INIT "1 (tq-worker)"   /* GnuTLS reads it with atoi(): 1 */

static void lean_process(char **argv)
{
    setenv("PGGSSENCMODE", "disable", 0);
    mallopt(M_ARENA_MAX, 2);
    const char *g = getenv("GNUTLS_NO_IMPLICIT_INIT");
    if (!g) {
        /* By the binary's own path, not /proc/self/exe: the process name
           (comm, what ps and pgrep show) is the exec'd file's name. */
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0 && (size_t)n < sizeof(self) - 1) {
            self[n] = '\0';
            if (setenv("GNUTLS_NO_IMPLICIT_INIT", OUR_NO_GNUTLS_INIT, 1) == 0)
                execv(self, argv);
        }
        unsetenv("GNUTLS_NO_IMPLICIT_INIT");   /* no exec: run as we are */
    } else if (strcmp(g, OUR_NO_GNUTLS_INIT) == 0) {
        unsetenv("GNUTLS_NO_IMPLICIT_INIT");   /* ours: programs exec steps run start as usual */
    }
}

int main(int argc, char **argv)
{
    lean_process(argv);
    struct tq_config cfg;
    char why[256];
    if (tq_config_from_env(&cfg, why, sizeof(why))) {
        fprintf(stderr, "tq-worker: %s\n", why);
        tq_config_cleanup(&cfg);
        return 2;
    }
    enum { OPT_HTTP = 256, OPT_LEASE, OPT_VERSION, OPT_SUPERUSER };
    static const struct option opts[] = {
        {"concurrency", required_argument, NULL, 'c'},
        {"queue", required_argument, NULL, 'q'},
        {"http", required_argument, NULL, OPT_HTTP},
        {"lease-ms", required_argument, NULL, OPT_LEASE},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"allow-superuser", no_argument, NULL, OPT_SUPERUSER},
        {NULL, 0, NULL, 0},
    };
    int o, rc = 0;
    char *end;
    long n;
    while ((o = getopt_long(argc, argv, "c:q:h", opts, NULL)) != -1) {
        switch (o) {
        case 'c':
            n = strtol(optarg, &end, 10);
            if (*end || n < 1 || n > 256) {
                fprintf(stderr, "tq-worker: --concurrency: must be an integer from 1 to 256\n");
                rc = 2;
                goto out;
            }
            cfg.concurrency = (int)n;
            break;
        case 'q':
            tq_config_set(&cfg.queue, optarg);
            break;
        case OPT_HTTP:
            tq_config_set(&cfg.http_addr, optarg);
            break;
        case OPT_LEASE:
            n = strtol(optarg, &end, 10);
            if (*end || n < 1000 || n > 3600000) {
                fprintf(stderr, "tq-worker: --lease-ms: must be an integer from 1000 to 3600000\n");
                rc = 2;
                goto out;
            }
            cfg.lease_ms = (uint32_t)n;
            break;
        case OPT_SUPERUSER:
            cfg.allow_superuser = true;
            break;
        case 'h':
            fputs(usage, stdout);
            goto out;
        case OPT_VERSION:
            printf("tq-worker %s\n", TQ_VERSION);
            goto out;
        default:
            fputs(usage, stderr);
            rc = 2;
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tq-worker: unexpected argument \"%s\"\n%s", argv[optind], usage);
        rc = 2;
        goto out;
    }
    tq_log_init("worker", cfg.log_format, getenv("TQ_DEBUG") ? TQ_LOG_DEBUG : TQ_LOG_INFO);
    wk_template_set_regions(cfg.region_map);
    rc = wk_run(&cfg);
out:
    tq_config_cleanup(&cfg);
    return rc;
}
