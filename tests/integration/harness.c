/* The integration-test harness (see harness.h). */
#include "harness.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "tq/config.h"
#include "tq/secrets.h"
#include "tq/util.h"

/* test_tsan runs the worker built with ThreadSanitizer instead */
#ifdef TQ_TSAN_WORKER_BIN
#undef TQ_WORKER_BIN
#define TQ_WORKER_BIN TQ_TSAN_WORKER_BIN
#endif

struct h_env H;
static redisContext *rc;
extern char **environ;

static void quiet(void *a, const char *m)
{
    (void)a;
    (void)m;
}

static PGconn *connect_or_die(const char *dsn)
{
    PGconn *c = PQconnectdb(dsn);
    if (PQstatus(c) != CONNECTION_OK)
        cr_assert_fail("cannot connect to %s: %s", dsn, PQerrorMessage(c));
    PQsetNoticeProcessor(c, quiet, NULL);
    return c;
}

static void admin_exec(const char *sql)
{
    PGconn *a = connect_or_die(H.admin_dsn);
    PGresult *r = PQexec(a, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fprintf(stderr, "harness: %s: %s", sql, PQerrorMessage(a));
    PQclear(r);
    PQfinish(a);
}

/*
 * What a test leaves behind when it crashes or times out before .fini (a
 * database, roles, Redis keys, a temp dir, private servers) is cleaned after
 * the run by the runner process, which outlives the test processes: each
 * test writes its tag to a run file (one line a test), and the POST_ALL hook
 * cleans every tag in it. So a run against servers someone else started
 * leaves no databases behind.
 */
static char run_file[256];

static void cleanup_tag(const char *tag, const char *admin_dsn, int redis_port);

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    snprintf(run_file, sizeof(run_file), "/tmp/tqtest-run-%ld", (long)getpid());
    unlink(run_file);
    setenv("TQ_TEST_RUN_FILE", run_file, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    const char *port = getenv("TQ_TEST_REDIS_PORT");
    const char *dsn = getenv("TQ_TEST_PG_DSN");
    FILE *f = run_file[0] ? fopen(run_file, "r") : NULL;
    char tag[64];
    while (f && fgets(tag, sizeof(tag), f)) {
        tag[strcspn(tag, "\n")] = '\0';
        if (*tag && dsn && port)
            cleanup_tag(tag, dsn, atoi(port));
    }
    if (f)
        fclose(f);
    if (run_file[0])
        unlink(run_file);
    /* No services and not required: the tests did not run. Say so to ctest
       (SKIP_RETURN_CODE 77) instead of "passed". */
    if ((!port || !dsn) && !getenv("TQ_TEST_REQUIRE_SERVICES") && stats->tests_passed == 0) {
        fprintf(stderr, "harness: no test services (TQ_TEST_REDIS_PORT, TQ_TEST_PG_DSN): "
                        "%zu test(s) skipped\n", (size_t)stats->nb_tests);
        fflush(NULL);
        _exit(77);
    }
}

static redisContext *admin_redis(void)
{
    const char *url = getenv("TQ_TEST_REDIS_URL");
    struct tq_redis_addr a;
    char why[128];
    if (!url || tq_redis_url_parse(url, &a, why, sizeof(why))) {
        memset(&a, 0, sizeof(a));
        snprintf(a.host, sizeof(a.host), "127.0.0.1");
    }
    redisContext *c = redisConnect("127.0.0.1", H.redis_port);
    cr_assert(c && !c->err, "cannot connect to redis on %d", H.redis_port);
    if (a.password[0]) {
        redisReply *r = a.user[0] ? redisCommand(c, "AUTH %s %s", a.user, a.password)
                                  : redisCommand(c, "AUTH %s", a.password);
        cr_assert(r && r->type != REDIS_REPLY_ERROR, "cannot authenticate to the test redis");
        freeReplyObject(r);
    }
    return c;
}

redisContext *h_redis_connect(void)
{
    return admin_redis();
}

void h_setup(void)
{
    const char *port = getenv("TQ_TEST_REDIS_PORT");
    const char *dsn = getenv("TQ_TEST_PG_DSN");
    if (!port || !dsn) {
        if (getenv("TQ_TEST_REQUIRE_SERVICES"))
            cr_assert_fail("TQ_TEST_REDIS_PORT and TQ_TEST_PG_DSN must be set "
                           "(deploy/local/test sets them)");
        cr_skip_test("no test services (run deploy/local/test)");
    }
    memset(&H, 0, sizeof(H));
    unsigned r = 0;
    tq_random_bytes(&r, sizeof(r));
    snprintf(H.tag, sizeof(H.tag), "p%ld%03u", (long)getpid(), r % 1000);
    snprintf(H.dbname, sizeof(H.dbname), "tqt_%s", H.tag);
    snprintf(H.admin_dsn, sizeof(H.admin_dsn), "%s", dsn);
    const char *rf = getenv("TQ_TEST_RUN_FILE");
    FILE *runf = rf ? fopen(rf, "a") : NULL;
    if (runf) {
        fprintf(runf, "%s\n", H.tag);
        fclose(runf);
    }
    const char *mig = getenv("TQ_TEST_PG_MIGRATE_DSN"), *wrk = getenv("TQ_TEST_PG_WORKER_DSN"),
               *cli = getenv("TQ_TEST_PG_CLI_DSN"), *rw = getenv("TQ_TEST_REDIS_WORKER_URL"),
               *rcli = getenv("TQ_TEST_REDIS_CLI_URL");
    H.roles = mig && wrk && cli && rw && rcli;
    PGconn *a = connect_or_die(dsn);
    snprintf(H.dsn, sizeof(H.dsn), "host=%s port=%s user=%s password=%s dbname=%s", PQhost(a),
             PQport(a), PQuser(a), PQpass(a) ? PQpass(a) : "", H.dbname);
    PQfinish(a);
    char sql[256];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s%s", H.dbname, H.roles ? " OWNER tq_migrate" : "");
    admin_exec(sql);
    H.db = connect_or_die(H.dsn);
    H.redis_port = atoi(port);
    snprintf(H.redis_url, sizeof(H.redis_url), "redis://127.0.0.1:%d/0", H.redis_port);
    snprintf(H.queue, sizeof(H.queue), "t%s", H.tag);
    snprintf(H.tmpdir, sizeof(H.tmpdir), "/tmp/tqtest-%s", H.tag);
    mkdir(H.tmpdir, 0700);
    rc = admin_redis();

    /* A fresh tenant-secrets key per test: 32 random bytes in base64. */
    unsigned char key[32];
    tq_random_bytes(key, sizeof(key));
    unsigned char b64[48];
    EVP_EncodeBlock(b64, key, sizeof(key));
    snprintf(H.secrets_key, sizeof(H.secrets_key), "t1:%s", b64);

    if (H.roles) {
        snprintf(H.worker_dsn, sizeof(H.worker_dsn), "%s dbname=%s", wrk, H.dbname);
        snprintf(H.cli_dsn, sizeof(H.cli_dsn), "%s dbname=%s", cli, H.dbname);
        snprintf(H.migrate_dsn, sizeof(H.migrate_dsn), "%s dbname=%s", mig, H.dbname);
        snprintf(H.cli_redis_url, sizeof(H.cli_redis_url), "%s", rcli);
        setenv("TQ_DATABASE_URL", H.worker_dsn, 1);
        snprintf(H.redis_url, sizeof(H.redis_url), "%s", rw);
        setenv("TQ_REDIS_URL", rw, 1);
        unsetenv("TQ_ALLOW_SUPERUSER");
    } else {
        setenv("TQ_DATABASE_URL", H.dsn, 1);
        setenv("TQ_REDIS_URL", H.redis_url, 1);
        setenv("TQ_ALLOW_SUPERUSER", "1", 1);
    }
    setenv("TQ_QUEUE", H.queue, 1);
    setenv("TQ_SECRETS_KEY", H.secrets_key, 1);
    unsetenv("TQ_SECRETS_KEY_FILE");
    unsetenv("TQ_SECRETS_STORE");
    setenv("TQ_HTTP_ADDR", "", 1);
    setenv("TQ_LOG_FORMAT", "text", 1);
    unsetenv("TQ_PIPELINE");
    unsetenv("TQ_EXEC_ALLOW");
    unsetenv("TQ_PREFIX");
    int rc_m = h_enqueue(NULL, NULL, "migrate", NULL);
    cr_assert_eq(rc_m, 0, "migrate failed");
    h_use_pipeline(TQ_SOURCE_DIR "/deploy/pipelines/tenant-provision.json");
}

void h_use_pipeline(const char *path)
{
    /* the file's base name, as a pipeline name: "full.json" -> "full" */
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char name[64];
    size_t n = 0;
    for (const char *p = base; *p && *p != '.' && n + 1 < sizeof(name); p++)
        name[n++] = (*p >= 'A' && *p <= 'Z') ? (char)(*p + 32)
                    : ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-')
                        ? *p : '-';
    name[n] = '\0';
    char *err = NULL;
    int code = h_enqueue(NULL, &err, "pipeline", "register", path, "--name", name, "--default",
                       "--by", "test-operator", NULL);
    cr_assert_eq(code, 0, "register pipeline %s: %s", path, err ? err : "");
    free(err);
}

json_t *h_secret(const char *tenant, const char *name)
{
    struct tq_keyring *kr = NULL;
    struct tq_secrets *st = NULL;
    char why[256];
    cr_assert_eq(tq_keyring_parse(H.secrets_key, &kr, why, sizeof(why)), TQ_OK, "%s", why);
    cr_assert_eq(tq_secrets_open("pg", true, kr, &st, why, sizeof(why)), TQ_OK, "%s", why);
    json_t *v = NULL;
    if (tq_secrets_get(st, H.db, tenant, name, &v, why, sizeof(why)) != TQ_OK)
        v = NULL;
    tq_secrets_free(st);
    return v;
}

static void reap_workers(void);

/* Drop what a test of tag made on the shared servers; each part is harmless if absent. */
static void cleanup_tag(const char *tag, const char *admin_dsn, int redis_port)
{
    for (const char *p = tag; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
            return;   /* not one of ours: never build SQL from it */
    PGconn *a = PQconnectdb(admin_dsn);
    if (PQstatus(a) == CONNECTION_OK) {
        PQsetNoticeProcessor(a, quiet, NULL);
        char sql[512];
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS tqt_%s WITH (FORCE)", tag);
        PQclear(PQexec(a, sql));
        snprintf(sql, sizeof(sql),
                 "SELECT quote_ident(rolname) FROM pg_roles WHERE rolname LIKE '%%\\_%s'", tag);
        PGresult *r = PQexec(a, sql);
        for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++) {
            char drop[256];
            snprintf(drop, sizeof(drop), "DROP ROLE IF EXISTS %s", PQgetvalue(r, i, 0));
            PQclear(PQexec(a, drop));
        }
        PQclear(r);
    }
    PQfinish(a);
    redisContext *c = redisConnect("127.0.0.1", redis_port);
    const char *url = getenv("TQ_TEST_REDIS_URL");
    struct tq_redis_addr ra;
    char why[128];
    if (c && !c->err && url && tq_redis_url_parse(url, &ra, why, sizeof(why)) == TQ_OK &&
        ra.password[0]) {
        redisReply *r = ra.user[0] ? redisCommand(c, "AUTH %s %s", ra.user, ra.password)
                                   : redisCommand(c, "AUTH %s", ra.password);
        freeReplyObject(r);
    }
    if (c && !c->err) {
        redisReply *k = redisCommand(c, "KEYS tq:{t%s}:*", tag);
        for (size_t i = 0; k && k->type == REDIS_REPLY_ARRAY && i < k->elements; i++)
            freeReplyObject(redisCommand(c, "DEL %s", k->element[i]->str));
        freeReplyObject(k);
    }
    redisFree(c);
    /* private servers of services.c (s_start) that a crash left running */
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "d=/tmp/tqsvc-%s; [ -d $d ] || exit 0;"
             " [ -f $d/redis/redis.pid ] && kill \"$(cat $d/redis/redis.pid)\" 2>/dev/null;"
             " [ -f $d/pg/data/postmaster.pid ] &&"
             " kill -QUIT \"$(head -n 1 $d/pg/data/postmaster.pid)\" 2>/dev/null;"
             " sleep 0.5; rm -rf $d; exit 0",
             tag);
    if (system(cmd) != 0)
        fprintf(stderr, "harness: could not clean /tmp/tqsvc-%s\n", tag);
    snprintf(cmd, sizeof(cmd), "rm -rf /tmp/tqtest-%s", tag);
    if (system(cmd) != 0)
        fprintf(stderr, "harness: could not remove /tmp/tqtest-%s\n", tag);
}

void h_teardown(void)
{
    reap_workers();
    /* services.c's s_stop() closes H.db early: the shared database is ours all the same */
    if (!H.dbname[0])
        return;
    PQfinish(H.db);
    H.db = NULL;
    char sql[512];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", H.dbname);
    admin_exec(sql);
    /* Tenant roles are cluster-wide; ours all end in the test's tag. */
    PGconn *a = connect_or_die(H.admin_dsn);
    snprintf(sql, sizeof(sql), "SELECT quote_ident(rolname) FROM pg_roles WHERE rolname LIKE '%%\\_%s'",
             H.tag);
    PGresult *r = PQexec(a, sql);
    for (int i = 0; i < PQntuples(r); i++) {
        char drop[256];
        snprintf(drop, sizeof(drop), "DROP ROLE IF EXISTS %s", PQgetvalue(r, i, 0));
        PQclear(PQexec(a, drop));
    }
    PQclear(r);
    PQfinish(a);
    if (rc) {
        redisReply *k = redisCommand(rc, "KEYS tq:{%s}:*", H.queue);
        for (size_t i = 0; k && i < k->elements; i++)
            freeReplyObject(redisCommand(rc, "DEL %s", k->element[i]->str));
        freeReplyObject(k);
        redisFree(rc);
        rc = NULL;
    }
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", H.tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "harness: could not remove %s\n", H.tmpdir);
}

const char *h_tenant(const char *stem)
{
    static char bufs[8][64];
    static int next;
    char *b = bufs[next++ % 8];
    /* tag uses '-' here (tenant ids), '_' in the role name LIKE above */
    snprintf(b, 64, "%s-%s", stem, H.tag);
    return b;
}

static char *slurp(const char *path)
{
    char *s = NULL;
    size_t n;
    if (tq_read_file(path, 64 * 1024 * 1024, &s, &n) != TQ_OK)
        return tq_xstrdup("");
    return s;
}

int h_run(const char *const *argv, char **out, char **err)
{
    return h_run_env(argv, NULL, out, err);
}

int h_run_env(const char *const *argv, const char *const *env, char **out, char **err)
{
    char op[300], ep[300];
    static int seq;
    snprintf(op, sizeof(op), "%s/out.%d", H.tmpdir, seq);
    snprintf(ep, sizeof(ep), "%s/err.%d", H.tmpdir, seq++);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        int o = open(op, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(ep, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        dup2(o, 1);
        dup2(e, 2);
        for (size_t i = 0; env && env[i]; i++) {
            char kv[1024];
            snprintf(kv, sizeof(kv), "%s", env[i]);
            char *eq = strchr(kv, '=');
            if (eq) {
                *eq = '\0';
                setenv(kv, eq + 1, 1);
            }
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    char *o = slurp(op), *e = slurp(ep);
    /* Sanitizer reports of the child must reach the test log. */
    if (strstr(e, "Sanitizer") || strstr(e, "runtime error"))
        fputs(e, stderr);
    if (out)
        *out = o;
    else
        free(o);
    if (err)
        *err = e;
    else
        free(e);
    unlink(op);
    unlink(ep);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int h_enqueue(char **out, char **err, ...)
{
    const char *argv[64] = {TQ_ENQUEUE_BIN};
    int n = 1;
    va_list ap;
    va_start(ap, err);
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < 63)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    if (!H.roles)
        return h_run(argv, out, err);
    /* migrate as tq_migrate, everything else as tq_cli / tq-cli */
    const char *cmd = NULL;
    for (int i = 1; i < n && !cmd; i++)
        if (argv[i][0] != '-')
            cmd = argv[i];
    /* (a test that pointed TQ_DATABASE_URL or TQ_REDIS_URL elsewhere keeps it) */
    char db[600], redis[300];
    const char *env[3] = {NULL, NULL, NULL};
    int k = 0;
    const char *cur_db = getenv("TQ_DATABASE_URL"), *cur_r = getenv("TQ_REDIS_URL");
    if (cur_db && strcmp(cur_db, H.worker_dsn) == 0) {
        snprintf(db, sizeof(db), "TQ_DATABASE_URL=%s",
                 cmd && (strcmp(cmd, "migrate") == 0 || strcmp(cmd, "pipeline") == 0)
                     ? H.migrate_dsn : H.cli_dsn);   /* operators register pipelines as admin */
        env[k++] = db;
    }
    if (cur_r && strcmp(cur_r, H.redis_url) == 0) {
        snprintf(redis, sizeof(redis), "TQ_REDIS_URL=%s", H.cli_redis_url);
        env[k++] = redis;
    }
    return h_run_env(argv, env, out, err);
}

/* Workers this test started: a failed assertion must not leave them running. */
static pid_t started[64];
static size_t nstarted;

static void reap_workers(void)
{
    for (size_t i = 0; i < nstarted; i++) {
        int st;
        if (waitpid(started[i], &st, WNOHANG) == 0) {
            kill(started[i], SIGKILL);
            waitpid(started[i], &st, 0);
        }
    }
    nstarted = 0;
}

void h_worker_adopt(pid_t pid)
{
    if (pid > 0 && nstarted < sizeof(started) / sizeof(started[0]))
        started[nstarted++] = pid;
}

pid_t h_worker_start(const char *const *extra_env)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid > 0 && nstarted < sizeof(started) / sizeof(started[0]))
        started[nstarted++] = pid;
    if (pid == 0) {
        setpgid(0, 0);
        for (size_t i = 0; extra_env && extra_env[i]; i++) {
            char kv[512];
            snprintf(kv, sizeof(kv), "%s", extra_env[i]);
            char *eq = strchr(kv, '=');
            if (eq) {
                *eq = '\0';
                setenv(kv, eq + 1, 1);
            }
        }
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        execl(TQ_WORKER_BIN, "tq-worker", (char *)NULL);
        _exit(127);
    }
    return pid;
}

int h_worker_stop(pid_t pid, int timeout_ms)
{
    kill(pid, SIGTERM);
    int st;
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)   /* as a shell says it: 128 + signal for a killed process */
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        tq_sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;   /* did not stop within timeout_ms */
}

static char *vsql(const char *fmt, va_list ap)
{
    char sql[4096];
    vsnprintf(sql, sizeof(sql), fmt, ap);
    PGresult *r = PQexec(H.db, sql);
    char *v = NULL;
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        v = tq_xstrdup(PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
    else if (PQresultStatus(r) == PGRES_COMMAND_OK)
        v = tq_xstrdup(PQcmdTuples(r));
    else
        fprintf(stderr, "harness: %s: %s", sql, PQerrorMessage(H.db));
    PQclear(r);
    return v;
}

char *h_sql(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *v = vsql(fmt, ap);
    va_end(ap);
    return v;
}

long h_sql_long(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *v = vsql(fmt, ap);
    va_end(ap);
    long n = v ? atol(v) : -1;
    free(v);
    return n;
}

bool h_wait_sql(const char *want, int timeout_ms, const char *fmt, ...)
{
    char sql[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    for (int waited = 0; waited <= timeout_ms; waited += 100) {
        char *v = h_sql("%s", sql);
        bool ok = v && strcmp(v, want) == 0;
        free(v);
        if (ok)
            return true;
        tq_sleep_ms(100);
    }
    return false;
}

char *h_redis(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(rc, fmt, ap);
    va_end(ap);
    char *v;
    if (!r)
        v = tq_xstrdup("");
    else if (r->type == REDIS_REPLY_INTEGER)
        v = tq_xasprintf("%lld", r->integer);
    else if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
             r->type == REDIS_REPLY_ERROR)
        v = tq_xstrdup(r->str);
    else
        v = tq_xstrdup("");
    freeReplyObject(r);
    return v;
}

long h_redis_long(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(rc, fmt, ap);
    va_end(ap);
    long n = r && r->type == REDIS_REPLY_INTEGER ? (long)r->integer : -1;
    freeReplyObject(r);
    return n;
}

char *h_http(const char *method, const char *url)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "curl -s -m 5 -X %s '%s'", method, url);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    struct tq_buf b;
    tq_buf_init(&b);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), p)) > 0)
        tq_buf_append(&b, chunk, n);
    pclose(p);
    return tq_buf_take(&b, NULL);
}

const char *h_write_file(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", H.tmpdir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* ---- added for the CLI suites (tests/integration/test_cli*.c) ---- */

json_t *h_json(const char *text, const char *what)
{
    json_error_t je;
    json_t *o = json_loads(text ? text : "", 0, &je);
    cr_assert_not_null(o, "%s: expected JSON, got \"%s\" (%s)", what, text ? text : "", je.text);
    return o;
}

pid_t h_spawn(const char *const *argv, const char *out_path)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        dup2(o, 1);
        dup2(o, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

int h_wait_pid(pid_t pid, int timeout_ms)
{
    int st;
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        tq_sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -2;
}

void h_setenv(const char *name, const char *value)
{
    if (value)
        setenv(name, value, 1);
    else
        unsetenv(name);
}
