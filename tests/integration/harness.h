/*
 * Integration-test harness: each test gets its own PostgreSQL database and
 * Redis queue name on the servers deploy/local/test started, runs the real
 * binaries, and cleans up in .fini. Services come from TQ_TEST_REDIS_PORT
 * and TQ_TEST_PG_DSN; without them a test skips, or fails when
 * TQ_TEST_REQUIRE_SERVICES=1 (CI).
 *
 * Accounts (docs/security.md): the harness itself (h_sql, h_redis, setup
 * and teardown) is the superuser / Redis tq-admin. When deploy/local/test
 * exported the service accounts (TQ_TEST_PG_{MIGRATE,WORKER,CLI}_DSN,
 * TQ_TEST_REDIS_{WORKER,CLI}_URL), the database belongs to tq_migrate,
 * `migrate` runs as tq_migrate, every other h_enqueue as tq_cli / tq-cli,
 * and workers (the process environment: TQ_DATABASE_URL, TQ_REDIS_URL) as
 * tq_worker / tq-worker. Without them everything runs as the superuser with
 * TQ_ALLOW_SUPERUSER=1. Tenant credentials go to the pg store with a key
 * made per test (TQ_SECRETS_KEY).
 */
#ifndef TQ_TEST_HARNESS_H
#define TQ_TEST_HARNESS_H

#include <stdbool.h>
#include <sys/types.h>

#include <jansson.h>
#include <libpq-fe.h>

struct h_env {
    char tag[32];          /* unique per test: "p12345" */
    char dbname[64];
    char dsn[512];         /* for the binaries and for h_sql */
    char admin_dsn[512];
    char redis_url[256];   /* what workers use (tq-worker when H.roles) */
    int redis_port;
    char queue[64];
    char tmpdir[256];
    bool roles;            /* the binaries run as the service accounts */
    char worker_dsn[512];  /* tq_worker, this test's database */
    char cli_dsn[512];     /* tq_cli */
    char migrate_dsn[512]; /* tq_migrate */
    char cli_redis_url[256];
    char secrets_key[80];  /* TQ_SECRETS_KEY of this test */
    PGconn *db;
};

extern struct h_env H;

void h_setup(void);      /* .init; registers deploy/pipelines/tenant-provision.json as default */
/* Register the pipeline file as an operator would (its base name) and make it the default. */
void h_use_pipeline(const char *path);
void h_teardown(void);   /* .fini */

/* A tenant id unique to this test: "<stem>-<tag>". Static buffer per call slot. */
const char *h_tenant(const char *stem);

/* Run argv (argv[0] a path), capture output. Returns the exit code (-1: signal). */
int h_run(const char *const *argv, char **out, char **err);
/* tq-enqueue with args; out/err may be NULL. */
int h_enqueue(char **out, char **err, ...) __attribute__((sentinel));

/* Start a worker (its own process group); extra_env "K=V" pairs, NULL-ended. */
pid_t h_worker_start(const char *const *extra_env);
/* A worker started some other way: killed in .fini if still running. */
void h_worker_adopt(pid_t pid);
/* SIGTERM, wait up to timeout_ms; returns the exit code, 128 + n if signal n
   ended it, -1 if it did not stop in time (then it is killed). */
int h_worker_stop(pid_t pid, int timeout_ms);

/* First column of first row as a heap string ("" for NULL), or NULL on error. */
char *h_sql(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
long h_sql_long(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Poll until h_sql(query) equals want or timeout; returns true on match. */
bool h_wait_sql(const char *want, int timeout_ms, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A new admin connection to the test Redis (authenticated); caller redisFree()s. */
struct redisContext;
struct redisContext *h_redis_connect(void);
/* One secret of the shared store, decrypted with the test's key (NULL if none). */
json_t *h_secret(const char *tenant, const char *name);
/* Run argv with extra "K=V" environment (NULL-ended) in the child. */
int h_run_env(const char *const *argv, const char *const *env, char **out, char **err);

/* Redis command on the test server; integer or string reply as text. */
char *h_redis(const char *fmt, ...);
long h_redis_long(const char *fmt, ...);

/* HTTP request to a loopback URL with the curl CLI; the body (caller frees), "" if none. */
char *h_http(const char *method, const char *url);

/* Write text to a file under the test's tmpdir; returns its path (static). */
const char *h_write_file(const char *name, const char *text);


/* ---- added for the CLI suites (tests/integration/test_cli*.c) ---- */
#include <jansson.h>
/* Parse text as JSON or fail the test, naming what was expected. Caller decrefs. */
json_t *h_json(const char *text, const char *what);
/* Start argv (argv[0] a path) with stdout and stderr to out_path; stdin /dev/null. */
pid_t h_spawn(const char *const *argv, const char *out_path);
/* Wait for pid up to timeout_ms: its exit code, -1 on a signal, -2 on timeout (killed). */
int h_wait_pid(pid_t pid, int timeout_ms);
/* Set an environment variable for the binaries this test runs next (NULL: unset). */
void h_setenv(const char *name, const char *value);
#endif
