/*
 * Tenant infrastructure against the real services: pg_tenant, redis_acl,
 * tenant_config, exec and the validation checks (check_pg connect /
 * isolation / latency, check_redis, check_audit) through the real worker
 * with pipelines written per test. Each check is also broken on purpose
 * (a grant, a widened ACL, a login taken away, a ghost step, an SLA of 0)
 * and must end the tenant as its validation class says; rollback and
 * deprovision must leave no role, schema, ACL user, config row or secret
 * file; the generated passwords must appear in no tq.* row, no queue key
 * and not in the worker's log.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "harness.h"
#include "tq/util.h"

static redisContext *rc;
static char work_dir[300];
static pid_t worker_pid;   /* running worker, killed in .fini if an assertion left it */

static void infra_setup(void)
{
    h_setup();
    snprintf(work_dir, sizeof(work_dir), "%s/work", H.tmpdir);
    setenv("TQ_WORK_DIR", work_dir, 1);
    unsetenv("TQ_TENANT_REDIS_URL");
    rc = h_redis_connect();
}

/* ACL users are server-wide: remove this test's (their names end in its tag). */
static void infra_teardown(void)
{
    if (worker_pid > 0) {
        kill(-worker_pid, SIGKILL);   /* its own process group: its children too */
        waitpid(worker_pid, NULL, 0);
        worker_pid = 0;
    }
    if (rc) {
        char suffix[40];
        snprintf(suffix, sizeof(suffix), "_%s", H.tag);
        redisReply *r = redisCommand(rc, "ACL USERS");
        for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
            const char *u = r->element[i]->str;
            size_t n = strlen(u), m = strlen(suffix);
            if (strncmp(u, "tq_t_", 5) == 0 && n > m && strcmp(u + n - m, suffix) == 0)
                freeReplyObject(redisCommand(rc, "ACL DELUSER %s", u));
        }
        freeReplyObject(r);
        redisFree(rc);
        rc = NULL;
    }
    h_teardown();
}

TestSuite(infra, .init = infra_setup, .fini = infra_teardown, .timeout = 240);

/* ------------------------------------------------------------ helpers */

/* Pipeline from steps written with ' for " (C strings stay readable). */
static void pipeline(const char *name, const char *steps)
{
    struct tq_buf b;
    tq_buf_init(&b);
    tq_buf_printf(&b, "{\"name\":\"%s\",\"steps\":[%s]}", name, steps);
    for (char *p = b.data; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t je;
    json_t *ok = json_loads(b.data, 0, &je);
    cr_assert_not_null(ok, "test pipeline %s is not JSON: %s: %s", name, je.text, b.data);
    json_decref(ok);
    const char *path = h_write_file(name, b.data);
    h_use_pipeline(path);
    tq_buf_cleanup(&b);
}

/*
 * An operator-installed program for exec: a script in <tmpdir>/bin, put on
 * TQ_EXEC_ALLOW for the workers this test starts (shells themselves never
 * are). Returns its path (static slot).
 */
static const char *allow_script(const char *name, const char *body)
{
    static char paths[8][320];
    static int next;
    char *path = paths[next++ % 8];
    char dir[300];
    snprintf(dir, sizeof(dir), "%s/bin", H.tmpdir);
    mkdir(dir, 0700);
    snprintf(path, 320, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fprintf(f, "#!/bin/sh\n%s\n", body);
    fclose(f);
    chmod(path, 0700);
    const char *old = getenv("TQ_EXEC_ALLOW");
    char *allow = tq_xasprintf("%s%s%s", old && *old ? old : "", old && *old ? ":" : "", path);
    setenv("TQ_EXEC_ALLOW", allow, 1);
    free(allow);
    return path;
}

static void submit(const char *id, const char *tier)
{
    const char *budget = strcmp(tier, "Gold") == 0 ? "800000"
                         : strcmp(tier, "Silver") == 0 ? "300000" : "150000";
    char *err = NULL;
    int r = h_enqueue(NULL, &err, "submit", "--tenant-id", id, "--name", id, "--tier", tier,
                      "--region", "us-east-1", "--budget", budget, "--owner", "ops@example.com",
                      NULL);
    cr_assert_eq(r, 0, "submit %s: %s", id, err);
    free(err);
}

static bool wait_status(const char *id, const char *status, int ms)
{
    return h_wait_sql(status, ms, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", id);
}

static void assert_status(const char *id, const char *status, int ms)
{
    if (wait_status(id, status, ms))
        return;
    char *st = h_sql("SELECT status || ': ' || coalesce(failure_reason, '') FROM tq.tenants"
                     " WHERE tenant_id = '%s'", id);
    cr_assert_fail("tenant %s: expected %s, is %s", id, status, st ? st : "?");
}

static bool wait_step(const char *id, const char *step, const char *status, int ms)
{
    return h_wait_sql(status, ms, "SELECT s.status FROM tq.job_steps s JOIN tq.jobs j ON"
                      " j.id = s.job_id WHERE j.tenant_id = '%s' AND j.kind = 'provision'"
                      " AND s.step = '%s'", id, step);
}

static char *ident(const char *tenant)
{
    char *s = tq_xstrdup(tenant);
    for (char *p = s; *p; p++)
        if (*p == '-')
            *p = '_';
    return s;
}

/* Start a worker like h_worker_start, with stdout and stderr to log_path. */
static pid_t worker_start_logged(const char *log_path, const char *const *extra_env)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
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
        int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(devnull, 0);
        dup2(log, 1);
        dup2(log, 2);
        execl(TQ_WORKER_BIN, "tq-worker", (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);   /* also here: .fini may kill the group before the child ran */
    worker_pid = pid;
    return pid;
}

static char *slurp(const char *path)
{
    char *s = NULL;
    size_t n;
    if (tq_read_file(path, 64 * 1024 * 1024, &s, &n) != TQ_OK)
        return tq_xstrdup("");
    return s;
}

/* Stop the worker; its log must hold no sanitizer report. */
static void worker_stop_checked(pid_t w, const char *log_path)
{
    int code = h_worker_stop(w, 20000);
    worker_pid = 0;
    cr_assert_eq(code, 0, "worker must drain and exit 0");
    char *log = slurp(log_path);
    if (strstr(log, "Sanitizer") || strstr(log, "runtime error"))
        fputs(log, stderr);
    cr_assert_null(strstr(log, "Sanitizer"), "sanitizer report in the worker log %s", log_path);
    cr_assert_null(strstr(log, "runtime error"), "UBSan report in the worker log %s", log_path);
    free(log);
}

static const char *log_path(const char *name)
{
    static char p[8][320];
    static int next;
    char *b = p[next++ % 8];
    snprintf(b, 320, "%s/%s", H.tmpdir, name);
    return b;
}

static bool acl_user_listed(redisContext *c, const char *tenant)
{
    char *id = ident(tenant);
    char want[128];
    snprintf(want, sizeof(want), "user tq_t_%s ", id);
    free(id);
    redisReply *r = redisCommand(c, "ACL LIST");
    cr_assert(r && r->type == REDIS_REPLY_ARRAY, "ACL LIST failed");
    bool found = false;
    for (size_t i = 0; i < r->elements; i++)
        found |= strncmp(r->element[i]->str, want, strlen(want)) == 0;
    freeReplyObject(r);
    return found;
}

static char *acl_rules(const char *tenant)
{
    char *id = ident(tenant);
    char want[128];
    snprintf(want, sizeof(want), "user tq_t_%s ", id);
    free(id);
    redisReply *r = redisCommand(rc, "ACL LIST");
    char *out = NULL;
    for (size_t i = 0; r && i < r->elements; i++)
        if (strncmp(r->element[i]->str, want, strlen(want)) == 0)
            out = tq_xstrdup(r->element[i]->str);
    freeReplyObject(r);
    return out;
}

static long pg_objects(const char *tenant)
{
    char *id = ident(tenant);
    long n = h_sql_long("SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 't_%s')"
                        " + (SELECT count(*) FROM pg_roles WHERE rolname = 'tq_t_%s')", id, id);
    free(id);
    return n;
}

/* The tenant's credentials in the shared store (tq.secrets, decrypted). */
static bool secret_exists(const char *tenant, const char *name)
{
    json_t *o = h_secret(tenant, name);
    json_decref(o);
    return o != NULL;
}

static json_t *secret(const char *tenant, const char *name)
{
    json_t *o = h_secret(tenant, name);
    cr_assert_not_null(o, "no secret %s of %s in the store", name, tenant);
    return o;
}

/* Nothing of the tenant is left anywhere. */
static void assert_all_gone(const char *tenant)
{
    cr_assert_eq(pg_objects(tenant), 0, "%s: role or schema left behind", tenant);
    char *id = ident(tenant);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM pg_roles WHERE rolname = 'tq_o_%s'", id), 0,
                 "%s: owner role left behind", tenant);
    free(id);
    cr_assert_not(acl_user_listed(rc, tenant), "%s: ACL user left behind", tenant);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenant_configs WHERE tenant_id = '%s'", tenant),
                 0, "%s: config row left behind", tenant);
    cr_assert_not(secret_exists(tenant, "postgres"), "%s: postgres credentials left behind", tenant);
    cr_assert_not(secret_exists(tenant, "redis"), "%s: redis credentials left behind", tenant);
}

static json_t *step_output(const char *tenant, const char *step)
{
    char *o = h_sql("SELECT coalesce(s.output::text, 'null') FROM tq.job_steps s JOIN tq.jobs j"
                    " ON j.id = s.job_id WHERE j.tenant_id = '%s' AND j.kind = 'provision'"
                    " AND s.step = '%s'", tenant, step);
    cr_assert(o && *o, "no output for step %s of %s", step, tenant);
    json_t *j = h_json(o, step);
    free(o);
    return j;
}

static char *step_error(const char *tenant, const char *step)
{
    return h_sql("SELECT coalesce(s.last_error, '') FROM tq.job_steps s JOIN tq.jobs j"
                 " ON j.id = s.job_id WHERE j.tenant_id = '%s' AND j.kind = 'provision'"
                 " AND s.step = '%s'", tenant, step);
}

/* For the report: every step's measured duration. */
static void print_durations(const char *tenant)
{
    char *t = h_sql("SELECT string_agg(s.step || '=' || coalesce(s.output->>'duration_ms', '?')"
                    " || 'ms', ' ' ORDER BY s.started_at) FROM tq.job_steps s JOIN tq.jobs j"
                    " ON j.id = s.job_id WHERE j.tenant_id = '%s' AND j.kind = 'provision'", tenant);
    fprintf(stderr, "durations %s: %s\n", tenant, t ? t : "?");
    free(t);
}

/* The secret is in no tq.* row, no queue key and not in the log. */
static void assert_secret_nowhere(const char *what, const char *pw, const char *log)
{
    cr_assert(pw && strlen(pw) >= 32, "%s: a generated password", what);
    PGresult *r = PQexec(H.db, "SELECT quote_ident(c.relname) FROM pg_class c JOIN pg_namespace n"
                               " ON n.oid = c.relnamespace WHERE n.nspname = 'tq'"
                               " AND c.relkind = 'r'");
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    cr_assert_gt(PQntuples(r), 5);
    for (int i = 0; i < PQntuples(r); i++) {
        long n = h_sql_long("SELECT count(*) FROM tq.%s x WHERE x::text LIKE '%%%s%%'",
                            PQgetvalue(r, i, 0), pw);
        cr_assert_eq(n, 0, "%s password found in tq.%s", what, PQgetvalue(r, i, 0));
    }
    PQclear(r);
    cr_assert_null(strstr(log, pw), "%s password found in the worker's log", what);
    redisReply *k = redisCommand(rc, "KEYS tq:{%s}:*", H.queue);
    for (size_t i = 0; k && i < k->elements; i++) {
        const char *key = k->element[i]->str;
        redisReply *t = redisCommand(rc, "TYPE %s", key);
        redisReply *v = NULL;
        if (strcmp(t->str, "string") == 0)
            v = redisCommand(rc, "GET %s", key);
        else if (strcmp(t->str, "list") == 0)
            v = redisCommand(rc, "LRANGE %s 0 -1", key);
        else if (strcmp(t->str, "zset") == 0 || strcmp(t->str, "set") == 0)
            v = redisCommand(rc, strcmp(t->str, "set") == 0 ? "SMEMBERS %s" : "ZRANGE %s 0 -1", key);
        else if (strcmp(t->str, "hash") == 0)
            v = redisCommand(rc, "HGETALL %s", key);
        if (v && v->type == REDIS_REPLY_STRING)
            cr_assert_null(strstr(v->str, pw), "%s password in redis key %s", what, key);
        for (size_t e = 0; v && v->type == REDIS_REPLY_ARRAY && e < v->elements; e++)
            if (v->element[e]->type == REDIS_REPLY_STRING)
                cr_assert_null(strstr(v->element[e]->str, pw), "%s password in redis key %s",
                               what, key);
        freeReplyObject(v);
        freeReplyObject(t);
    }
    freeReplyObject(k);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
              getsockname(fd, (struct sockaddr *)&a, &len) == 0, "no free port");
    close(fd);
    return ntohs(a.sin_port);
}

/* A process is gone when /proc has no entry for it, or only a zombie. */
static bool process_gone(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' && rp[2] == 'Z';
}

static pid_t read_pid(const char *path)
{
    for (int i = 0; i < 50; i++) {
        char *s = slurp(path);
        pid_t p = (pid_t)atol(s);
        free(s);
        if (p > 0)
            return p;
        tq_sleep_ms(100);
    }
    cr_assert_fail("no pid in %s", path);
    return -1;
}

/* ------------------------------------------------------------ pipelines */

#define RESOURCES                                                                             \
    "{'name':'postgres','kind':'pg_tenant','retry':{'max_attempts':3,'base_ms':100,'max_ms':500}},"   \
    "{'name':'redis','kind':'redis_acl','params':{'url':'${env.TQ_TENANT_REDIS_URL}'},"          \
    " 'retry':{'max_attempts':3,'base_ms':100,'max_ms':500}},"                                  \
    "{'name':'config','kind':'tenant_config','needs':['postgres']}"

#define CHECKS                                                                                \
    "{'name':'pg_connect','kind':'check_pg','needs':['postgres'],'class':'integration',"        \
    " 'params':{'check':'connect'},'retry':{'max_attempts':2,'base_ms':50,'max_ms':100}},"      \
    "{'name':'pg_isolation','kind':'check_pg','needs':['postgres'],'class':'security',"         \
    " 'params':{'check':'isolation'}},"                                                         \
    "{'name':'pg_latency','kind':'check_pg','needs':['postgres'],'class':'performance',"        \
    " 'params':{'check':'latency'},'retry':{'max_attempts':1}},"                                \
    "{'name':'redis_isolation','kind':'check_redis','needs':['redis'],'class':'security',"      \
    " 'params':{'check':'isolation'}},"                                                         \
    "{'name':'audit','kind':'check_audit','class':'compliance',"                                \
    " 'needs':['config','pg_connect','pg_isolation','pg_latency','redis_isolation']}"

/* ------------------------------------------------------------ tests */

Test(infra, provision_two_tenants_checks_pass_then_deprovision_removes_one)
{
    pipeline("full.json", RESOURCES "," CHECKS);
    const char *a = h_tenant("gold"), *b = h_tenant("silver");
    submit(a, "Gold");
    submit(b, "Silver");
    const char *log = log_path("worker-full.log");
    const char *env[] = {"TQ_DEBUG=1", NULL};
    pid_t w = worker_start_logged(log, env);
    assert_status(a, "active", 60000);
    assert_status(b, "active", 60000);
    print_durations(a);
    print_durations(b);

    /* resources */
    cr_assert_eq(pg_objects(a), 2);
    cr_assert_eq(pg_objects(b), 2);
    cr_assert(acl_user_listed(rc, a) && acl_user_listed(rc, b));
    char *rules = acl_rules(a);
    cr_assert(rules && strstr(rules, "on ") && strstr(rules, "~t:") && strstr(rules, "&t:") &&
              strstr(rules, "-@dangerous"), "ACL of %s: %s", a, rules);
    free(rules);
    char *cfg = h_sql("SELECT config::text FROM tq.tenant_configs WHERE tenant_id = '%s'", a);
    json_t *c = h_json(cfg, "config");
    cr_assert(json_is_true(json_object_get(json_object_get(c, "features"), "advanced_search")));
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(c, "rate_limits"),
                                                    "queries_per_minute")), 100);
    cr_assert_str_eq(json_string_value(json_object_get(c, "model")), "gpt-4");
    cr_assert_eq(json_integer_value(json_object_get(c, "p95_sla_ms")), 500);
    json_decref(c);
    free(cfg);
    cfg = h_sql("SELECT config::text FROM tq.tenant_configs WHERE tenant_id = '%s'", b);
    c = h_json(cfg, "config");
    cr_assert(json_is_false(json_object_get(json_object_get(c, "features"), "advanced_search")));
    cr_assert(json_is_true(json_object_get(json_object_get(c, "features"), "real_time_indexing")));
    cr_assert_str_eq(json_string_value(json_object_get(c, "model")), "gpt-3.5-turbo");
    cr_assert_eq(json_integer_value(json_object_get(c, "vector_replicas")), 2);
    json_decref(c);
    free(cfg);

    /* checks recorded their measurements; each isolation check tried the other tenant */
    json_t *o = step_output(a, "pg_isolation");
    cr_assert_eq(json_integer_value(json_object_get(o, "leaks")), 0);
    cr_assert_geq(json_integer_value(json_object_get(o, "platform_relations_tried")), 5);
    json_decref(o);
    o = step_output(a, "pg_latency");
    cr_assert(json_is_real(json_object_get(o, "p95_ms")) && json_object_get(o, "p50_ms") &&
              json_object_get(o, "max_ms"));
    cr_assert_eq(json_integer_value(json_object_get(o, "sla_ms")), 500, "Gold SLA");
    cr_assert_eq(json_integer_value(json_object_get(o, "queries")), 50);
    json_decref(o);
    o = step_output(b, "pg_connect");
    cr_assert(json_object_get(o, "connect_ms") && json_object_get(o, "insert_select_delete_ms"));
    json_decref(o);
    o = step_output(b, "redis_isolation");
    cr_assert_eq(json_integer_value(json_object_get(o, "leaks")), 0);
    cr_assert_geq(json_array_size(json_object_get(o, "probes")), 9);
    json_decref(o);
    o = step_output(b, "audit");
    cr_assert_geq(json_array_size(json_object_get(o, "steps_checked")), 6,
                  "the audit check waits for every step it depends on");
    cr_assert_eq(json_array_size(json_object_get(o, "not_yet_recorded")), 0);
    json_decref(o);

    /* credentials: 0600 files; the passwords are nowhere else */
    worker_stop_checked(w, log);
    char *logtext = slurp(log);
    cr_assert(strstr(logtext, "DEBUG") || strstr(logtext, "debug"), "worker ran with debug logs");
    const char *tenants[] = {a, b};
    for (int i = 0; i < 2; i++) {
        json_t *pg = secret(tenants[i], "postgres"), *rd = secret(tenants[i], "redis");
        char prefix[80];
        snprintf(prefix, sizeof(prefix), "t:%s:", tenants[i]);
        cr_assert_str_eq(json_string_value(json_object_get(rd, "key_prefix")), prefix);
        assert_secret_nowhere("postgres", json_string_value(json_object_get(pg, "password")),
                              logtext);
        assert_secret_nowhere("redis", json_string_value(json_object_get(rd, "password")), logtext);
        json_decref(pg);
        json_decref(rd);
    }
    free(logtext);

    /* deprovision one: everything of it goes, the other keeps everything */
    w = worker_start_logged(log, NULL);
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "deprovision", a, NULL), 0, "deprovision: %s", err);
    free(err);
    assert_status(a, "deprovisioned", 60000);
    worker_stop_checked(w, log);
    assert_all_gone(a);
    cr_assert_eq(pg_objects(b), 2);
    cr_assert(acl_user_listed(rc, b));
    cr_assert(secret_exists(b, "redis") && secret_exists(b, "postgres"));
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenant_configs WHERE tenant_id = '%s'", b), 1);
}

Test(infra, every_kind_twice_is_one_effect_and_undo_twice_is_harmless)
{
    pipeline("twice.json",
             "{'name':'postgres','kind':'pg_tenant'},"
             "{'name':'postgres_again','kind':'pg_tenant','needs':['postgres']},"
             "{'name':'redis','kind':'redis_acl'},"
             "{'name':'redis_again','kind':'redis_acl','needs':['redis']},"
             "{'name':'config','kind':'tenant_config','needs':['postgres']},"
             "{'name':'config_again','kind':'tenant_config','needs':['config']},"
             "{'name':'pg_connect','kind':'check_pg','needs':['postgres_again'],'class':'integration',"
             " 'params':{'check':'connect'}},"
             "{'name':'redis_isolation','kind':'check_redis','needs':['redis_again'],'class':'security'}");
    const char *t = h_tenant("twice");
    submit(t, "Bronze");
    const char *log = log_path("worker-twice.log");
    pid_t w = worker_start_logged(log, NULL);
    assert_status(t, "active", 60000);
    print_durations(t);
    cr_assert_eq(pg_objects(t), 2);
    cr_assert(acl_user_listed(rc, t));
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenant_configs WHERE tenant_id = '%s'", t), 1);
    json_t *o = step_output(t, "redis_again");
    cr_assert(json_is_true(json_object_get(o, "user_existed")), "second run found the user");
    json_decref(o);
    o = step_output(t, "config_again");
    cr_assert(json_is_false(json_object_get(o, "inserted")), "second run updated the row");
    json_decref(o);
    /* the checks passed with the rotated passwords: the files hold the latest */
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "deprovision", t, NULL), 0, "deprovision: %s", err);
    free(err);
    assert_status(t, "deprovisioned", 60000);
    worker_stop_checked(w, log);
    assert_all_gone(t);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id"
                            " WHERE j.kind = 'deprovision' AND s.status = 'compensated'"
                            " AND s.step LIKE '%%_again'"), 3, "the second undo of each kind succeeded");
}

Test(infra, rollback_after_a_failing_integration_step_removes_everything)
{
    char steps[4096];
    snprintf(steps, sizeof(steps),
             RESOURCES ","
             "{'name':'workspace','kind':'exec','params':{"
             "  'cwd':'${env.TQ_WORK_DIR}/${tenant.id}','argv':['%s'],"
             "  'undo_argv':['%s'],'remove_cwd_on_undo':true}},"
             "{'name':'vector','kind':'sleep','class':'integration',"
             " 'needs':['postgres','redis','config','workspace'],"
             " 'params':{'ms':10,'fail_attempts':99,'error':'vector insert refused'},"
             " 'retry':{'max_attempts':2,'base_ms':20,'max_ms':50}}",
             allow_script("made.sh", "echo made > made.txt"),
             allow_script("unmade.sh", "rm -f made.txt"));
    pipeline("rb.json", steps);
    const char *t = h_tenant("rb");
    submit(t, "Silver");
    const char *log = log_path("worker-rb.log");
    pid_t w = worker_start_logged(log, NULL);
    assert_status(t, "failed", 60000);
    worker_stop_checked(w, log);
    assert_all_gone(t);
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/%s", work_dir, t);
    cr_assert_neq(access(dir, F_OK), 0, "the exec working directory is removed by its undo");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.job_steps WHERE status = 'compensated'"), 5,
                 "postgres, redis, config, workspace and the failed step were undone");
}

Test(infra, pg_isolation_fails_when_the_tenant_role_itself_is_widened)
{
    pipeline("pgiso.json",
             "{'name':'postgres','kind':'pg_tenant','retry':{'max_attempts':1}},"
             "{'name':'hold','kind':'sleep','needs':['postgres'],'params':{'ms':1500}},"
             "{'name':'pg_isolation','kind':'check_pg','needs':['hold'],'class':'security',"
             " 'params':{'check':'isolation'},'retry':{'max_attempts':3,'base_ms':50,'max_ms':100}}");
    const char *victim = h_tenant("victim"), *t = h_tenant("leaky");
    submit(victim, "Silver");
    const char *log = log_path("worker-pgiso.log");
    pid_t w = worker_start_logged(log, NULL);
    assert_status(victim, "active", 60000);
    submit(t, "Silver");
    cr_assert(wait_step(t, "hold", "running", 30000));
    char *it = ident(t);
    /* the tenant's own role may read everything: its own leak */
    char *r = h_sql("GRANT pg_read_all_data TO tq_t_%s", it);
    free(r);
    /* the check catches it at once, and the rollback removes the roles too */
    assert_status(t, "failed", 60000);
    worker_stop_checked(w, log);
    char *e = step_error(t, "pg_isolation");
    char want[200];
    snprintf(want, sizeof(want), "Isolation leak as tq_t_%s. Tried to confirm that tq_t_%s is a"
             " member of no role, and it is a member of pg_read_all_data.", it, it);
    cr_assert_str_eq(e, want, "names the leak in one sentence");
    free(e);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts a JOIN tq.jobs j ON j.id = a.job_id"
                            " WHERE j.tenant_id = '%s' AND a.step = 'pg_isolation' AND a.phase = 'run'",
                            t), 1,
                 "security: no retry");
    assert_all_gone(t);
    cr_assert_eq(pg_objects(victim), 2, "the victim is untouched");
    free(it);
}

/* A connection as the tenant's own login role, from the credentials it was given. */
static PGconn *tenant_login(const char *tenant)
{
    json_t *pg = secret(tenant, "postgres");
    const char *kw[] = {"host", "port", "dbname", "user", "password", NULL};
    const char *val[] = {json_string_value(json_object_get(pg, "host")),
                         json_string_value(json_object_get(pg, "port")),
                         json_string_value(json_object_get(pg, "dbname")),
                         json_string_value(json_object_get(pg, "user")),
                         json_string_value(json_object_get(pg, "password")), NULL};
    PGconn *c = PQconnectdbParams(kw, val, 0);
    json_decref(pg);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "login as %s: %s", tenant, PQerrorMessage(c));
    return c;
}

/* Run sql as the tenant; "ok" or the SQLSTATE. */
static const char *as_tenant(PGconn *c, const char *fmt, ...)
{
    static char out[8][16];
    static int next;
    char *b = out[next++ % 8];
    char sql[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(b, 16, "%s", st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? "ok"
                          : code ? code : "error");
    PQclear(r);
    return b;
}

/* PUBLIC's entries in the ACLs of the tenant's schema and table. */
static long public_grants(const char *id)
{
    return h_sql_long("SELECT (SELECT count(*) FROM pg_namespace n, aclexplode(n.nspacl) a"
                      " WHERE n.nspname = 't_%s' AND a.grantee = 0) + (SELECT count(*) FROM"
                      " pg_class c, aclexplode(c.relacl) a WHERE c.oid = 't_%s.documents'::regclass"
                      " AND a.grantee = 0)", id, id);
}

Test(infra, tenant_login_cannot_widen_its_own_isolation)
{
    pipeline("own.json", "{'name':'postgres','kind':'pg_tenant'},"
             "{'name':'pg_isolation','kind':'check_pg','needs':['postgres'],'class':'security',"
             " 'params':{'check':'isolation'}}");
    const char *t = h_tenant("owner"), *other = h_tenant("bystander");
    submit(t, "Silver");
    submit(other, "Silver");
    const char *log = log_path("worker-own.log");
    pid_t w = worker_start_logged(log, NULL);
    assert_status(t, "active", 60000);
    assert_status(other, "active", 60000);
    worker_stop_checked(w, log);
    char *id = ident(t), *oid = ident(other);

    /* the design: a NOLOGIN owner, the login role holds USAGE + DML only, PUBLIC nothing */
    char *own = h_sql("SELECT pg_get_userbyid(n.nspowner) || ' ' || pg_get_userbyid(c.relowner)"
                      " FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid AND"
                      " c.relname = 'documents' WHERE n.nspname = 't_%s'", id);
    char want[200];
    snprintf(want, sizeof(want), "tq_o_%s tq_o_%s", id, id);
    cr_assert_str_eq(own, want, "schema and table owned by the owner role");
    free(own);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM pg_roles WHERE rolname = 'tq_o_%s' AND NOT"
                            " rolcanlogin", id), 1, "the owner role cannot log in");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON"
                            " r.oid = m.member WHERE r.rolname = 'tq_t_%s'", id), 0,
                 "the login role is a member of no role");
    cr_assert_eq(public_grants(id), 0);
    char *privs = h_sql("SELECT string_agg(p, ',' ORDER BY p) FROM unnest(ARRAY['SELECT',"
                        " 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p"
                        " WHERE has_table_privilege('tq_t_%s', 't_%s.documents', p)", id, id);
    cr_assert_str_eq(privs, "DELETE,INSERT,SELECT,UPDATE");
    free(privs);
    cr_assert_eq(h_sql_long("SELECT has_schema_privilege('tq_t_%s', 't_%s', 'CREATE')::int", id,
                            id), 0);

    /* the tenant tries to widen it with its own credentials: nothing changes */
    PGconn *c = tenant_login(t);
    as_tenant(c, "GRANT USAGE ON SCHEMA t_%s TO PUBLIC", id);
    as_tenant(c, "GRANT SELECT, INSERT ON t_%s.documents TO PUBLIC", id);
    as_tenant(c, "GRANT SELECT ON t_%s.documents TO tq_t_%s", id, oid);
    cr_assert_neq(strcmp(as_tenant(c, "ALTER TABLE t_%s.documents DISABLE ROW LEVEL SECURITY",
                                   id), "ok"), 0);
    cr_assert_neq(strcmp(as_tenant(c, "ALTER TABLE t_%s.documents NO FORCE ROW LEVEL SECURITY",
                                   id), "ok"), 0);
    cr_assert_neq(strcmp(as_tenant(c, "DROP POLICY tenant_isolation ON t_%s.documents", id),
                         "ok"), 0);
    cr_assert_neq(strcmp(as_tenant(c, "ALTER TABLE t_%s.documents OWNER TO tq_t_%s", id, id),
                         "ok"), 0);
    cr_assert_neq(strcmp(as_tenant(c, "INSERT INTO t_%s.documents (tenant_id, title) VALUES"
                                      " ('%s', 'forged')", id, other), "ok"), 0);
    cr_assert_neq(strcmp(as_tenant(c, "CREATE TABLE t_%s.mine (x int)", id), "ok"), 0);
    cr_assert_str_eq(as_tenant(c, "INSERT INTO t_%s.documents (title) VALUES ('mine')", id), "ok",
                     "its own rows still work");
    PQfinish(c);

    cr_assert_eq(public_grants(id), 0, "PUBLIC keeps nothing");
    cr_assert_eq(h_sql_long("SELECT has_table_privilege('tq_t_%s', 't_%s.documents', 'SELECT')::int",
                            oid, id), 0, "no other tenant gained anything");
    cr_assert_eq(h_sql_long("SELECT (relrowsecurity AND relforcerowsecurity)::int FROM pg_class"
                            " WHERE oid = 't_%s.documents'::regclass", id), 1, "RLS still forced");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM t_%s.documents WHERE tenant_id <> '%s'", id, t),
                 0, "no row tagged with another tenant");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM pg_policies WHERE schemaname = 't_%s'", id), 1);
    free(id);
    free(oid);
}

Test(infra, pg_isolation_blames_the_tenant_whose_grant_leaks)
{
    pipeline("blame.json", "{'name':'postgres','kind':'pg_tenant'},"
             "{'name':'pg_isolation','kind':'check_pg','needs':['postgres'],'class':'security',"
             " 'params':{'check':'isolation'}}");
    const char *a = h_tenant("leaker"), *b = h_tenant("newcomer");
    submit(a, "Silver");
    const char *log = log_path("worker-blame.log");
    pid_t w = worker_start_logged(log, NULL);
    assert_status(a, "active", 60000);
    /* a misconfiguration as the platform would see it: A's objects granted to everyone */
    char *ia = ident(a);
    free(h_sql("GRANT USAGE ON SCHEMA t_%s TO PUBLIC", ia));
    free(h_sql("GRANT SELECT ON t_%s.documents TO PUBLIC", ia));

    /* B onboards: A's leak is no reason to fail it */
    submit(b, "Silver");
    assert_status(b, "active", 60000);
    json_t *o = step_output(b, "pg_isolation");
    cr_assert_eq(json_integer_value(json_object_get(o, "leaks")), 0);
    json_t *fl = json_object_get(o, "foreign_leaks");
    char want[80];
    snprintf(want, sizeof(want), "t_%s", ia);
    cr_assert_eq(json_array_size(fl), 1, "A's leak is blamed on A");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(fl, 0), "schema")), want);
    json_decref(o);

    /* revalidation: drift on A alone */
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "revalidate", a, NULL), 0, "revalidate: %s", err);
    free(err);
    cr_assert(h_wait_sql("1", 60000, "SELECT count(*) FROM tq.audit_events WHERE event ="
                         " 'drift_detected' AND tenant_id = '%s'", a));
    cr_assert_eq(h_enqueue(NULL, &err, "revalidate", b, NULL), 0, "revalidate: %s", err);
    free(err);
    cr_assert(h_wait_sql("1", 60000, "SELECT count(*) FROM tq.audit_events WHERE event ="
                         " 'revalidated' AND tenant_id = '%s'", b));
    worker_stop_checked(w, log);
    char *da = h_sql("SELECT status || ' ' || coalesce(drift, '') FROM tq.tenants"
                     " WHERE tenant_id = '%s'", a);
    char *db = h_sql("SELECT status || '|' || coalesce(drift, '') FROM tq.tenants"
                     " WHERE tenant_id = '%s'", b);
    cr_assert(strncmp(da, "active ", 7) == 0 && strstr(da, "PUBLIC holds USAGE on schema t_") &&
              strstr(da, "PUBLIC holds SELECT on t_") && strstr(da, "Tried to confirm that"),
              "A drifts, named in a sentence: %s", da);
    cr_assert_str_eq(db, "active|", "B has no drift");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event = 'drift_detected'"
                            " AND tenant_id = '%s'", b), 0);
    free(da);
    free(db);
    free(ia);
}

Test(infra, redis_isolation_fails_when_the_acl_is_widened)
{
    pipeline("rdiso.json",
             "{'name':'redis','kind':'redis_acl'},"
             "{'name':'hold','kind':'sleep','needs':['redis'],'params':{'ms':1500}},"
             "{'name':'redis_isolation','kind':'check_redis','needs':['hold'],'class':'security',"
             " 'retry':{'max_attempts':3,'base_ms':50,'max_ms':100}}");
    const char *t = h_tenant("wide");
    submit(t, "Bronze");
    const char *log = log_path("worker-rdiso.log");
    pid_t w = worker_start_logged(log, NULL);
    cr_assert(wait_step(t, "hold", "running", 30000));
    char *it = ident(t);
    redisReply *r = redisCommand(rc, "ACL SETUSER tq_t_%s ~*", it);
    cr_assert(r && r->type == REDIS_REPLY_STATUS, "widen the ACL");
    freeReplyObject(r);
    free(it);
    assert_status(t, "failed", 60000);
    worker_stop_checked(w, log);
    char *e = step_error(t, "redis_isolation");
    char want[200];
    char *iw = ident(t);
    snprintf(want, sizeof(want), "Isolation leak as redis user tq_t_%s. Tried to GET another"
             " tenant's key, and it was allowed.", iw);
    free(iw);
    cr_assert(strncmp(e, want, strlen(want)) == 0, "one sentence per leak: %s", e);
    free(e);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE step = 'redis_isolation'"
                            " AND phase = 'run'"), 1,
                 "security: no retry");
    cr_assert_not(acl_user_listed(rc, t), "rollback removed the ACL user");
    cr_assert_not(secret_exists(t, "redis"));
}

/* AUTH as the tenant's own Redis user, from the credentials it was given. */
static redisContext *tenant_redis(const char *tenant)
{
    json_t *rd = secret(tenant, "redis");
    redisContext *c = redisConnect(json_string_value(json_object_get(rd, "host")),
                                   (int)json_integer_value(json_object_get(rd, "port")));
    cr_assert(c && !c->err);
    redisReply *r = redisCommand(c, "AUTH %s %s", json_string_value(json_object_get(rd, "user")),
                                 json_string_value(json_object_get(rd, "password")));
    cr_assert(r && r->type == REDIS_REPLY_STATUS, "AUTH as %s's user", tenant);
    freeReplyObject(r);
    json_decref(rd);
    return c;
}

Test(infra, redis_tenant_cannot_list_keys_or_switch_databases)
{
    pipeline("rdlist.json",
             "{'name':'redis','kind':'redis_acl'},"
             "{'name':'redis_isolation','kind':'check_redis','needs':['redis'],'class':'security'}");
    const char *t = h_tenant("lister"), *other = h_tenant("hidden");
    submit(t, "Bronze");
    const char *log = log_path("worker-rdlist.log");
    pid_t w = worker_start_logged(log, NULL);
    assert_status(t, "active", 60000);
    worker_stop_checked(w, log);
    json_t *o = step_output(t, "redis_isolation");
    cr_assert_eq(json_integer_value(json_object_get(o, "leaks")), 0);
    cr_assert_geq(json_array_size(json_object_get(o, "probes")), 18);
    json_decref(o);

    char key[128];
    snprintf(key, sizeof(key), "t:%s:secret-name", other);
    freeReplyObject(redisCommand(rc, "SET %s 1 EX 60", key));
    redisContext *c = tenant_redis(t);
    const char *cmds[] = {"SCAN 0", "SCAN 0 MATCH t:* COUNT 1000", "RANDOMKEY", "DBSIZE",
                          "KEYS *", "SELECT 1", "SWAPDB 0 1", "PUBSUB CHANNELS",
                          "PUBSUB NUMSUB x", "MEMORY STATS", "INFO keyspace"};
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        redisReply *r = redisCommand(c, cmds[i]);
        cr_assert(r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOPERM", 6) == 0,
                  "%s must be refused to the tenant, got type %d %s", cmds[i], r ? r->type : -1,
                  r && r->str ? r->str : "");
        freeReplyObject(r);
    }
    /* its own keys still work, structures included */
    redisReply *r = redisCommand(c, "HSET t:%s:h f v", t);
    cr_assert(r && r->type == REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    r = redisCommand(c, "HSCAN t:%s:h 0", t);
    cr_assert(r && r->type == REDIS_REPLY_ARRAY);
    freeReplyObject(r);
    r = redisCommand(c, "MEMORY USAGE t:%s:h", t);
    cr_assert(r && r->type == REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    redisFree(c);
    freeReplyObject(redisCommand(rc, "DEL t:%s:h %s", t, key));
}

Test(infra, redis_usage_check_records_drift_when_a_tenant_outgrows_its_limits)
{
    pipeline("rdusage.json",
             "{'name':'redis','kind':'redis_acl'},"
             "{'name':'redis_usage','kind':'check_redis','needs':['redis'],'class':'performance',"
             " 'params':{'check':'usage','max_keys':3,'max_memory_mb':1}}");
    const char *t = h_tenant("grower"), *other = h_tenant("neighbour");
    submit(t, "Bronze");
    const char *log = log_path("worker-rdusage.log");
    pid_t w = worker_start_logged(log, NULL);
    assert_status(t, "active", 60000);
    json_t *o = step_output(t, "redis_usage");
    cr_assert_eq(json_integer_value(json_object_get(o, "keys")), 0);
    cr_assert(json_is_true(json_object_get(o, "complete")));
    json_decref(o);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id = '%s'"
                            " AND event = 'performance_warning'", t), 0);
    /* the tenant writes five keys of 1 KiB; a neighbour's keys count for the neighbour */
    redisContext *c = tenant_redis(t);
    char big[1024];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    for (int i = 0; i < 5; i++)
        freeReplyObject(redisCommand(c, "SET t:%s:k%d %s", t, i, big));
    redisFree(c);
    for (int i = 0; i < 10; i++)
        freeReplyObject(redisCommand(rc, "SET t:%s:k%d 1", other, i));
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "revalidate", t, NULL), 0, "revalidate: %s", err);
    free(err);
    cr_assert(h_wait_sql("1", 60000, "SELECT count(*) FROM tq.audit_events WHERE event ="
                         " 'drift_detected' AND tenant_id = '%s'", t));
    worker_stop_checked(w, log);
    char *d = h_sql("SELECT status || ' ' || coalesce(drift, '') FROM tq.tenants"
                    " WHERE tenant_id = '%s'", t);
    cr_assert(strncmp(d, "active ", 7) == 0 && strstr(d, " 5 keys using ") &&
              strstr(d, "over its limit of 3 keys and 1 MiB."), "%s", d);
    free(d);
    for (int i = 0; i < 10; i++)
        freeReplyObject(redisCommand(rc, "DEL t:%s:k%d t:%s:k%d", t, i, other, i));
}

Test(infra, pg_connect_fails_when_the_role_cannot_log_in)
{
    pipeline("pgconn.json",
             "{'name':'postgres','kind':'pg_tenant'},"
             "{'name':'hold','kind':'sleep','needs':['postgres'],'params':{'ms':1500}},"
             "{'name':'pg_connect','kind':'check_pg','needs':['hold'],'class':'integration',"
             " 'params':{'check':'connect'},'retry':{'max_attempts':2,'base_ms':50,'max_ms':100}}");
    const char *t = h_tenant("nologin");
    submit(t, "Bronze");
    const char *log = log_path("worker-pgconn.log");
    pid_t w = worker_start_logged(log, NULL);
    cr_assert(wait_step(t, "hold", "running", 30000));
    char *it = ident(t);
    char *r = h_sql("ALTER ROLE tq_t_%s NOLOGIN", it);
    free(r);
    free(it);
    assert_status(t, "failed", 60000);
    worker_stop_checked(w, log);
    char *e = step_error(t, "pg_connect");
    cr_assert(strstr(e, "could not connect as tq_t_"), "%s", e);
    free(e);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE step = 'pg_connect'"
                            " AND phase = 'run'"), 2, "integration: retried first");
    assert_all_gone(t);
}

Test(infra, latency_over_sla_activates_with_a_performance_warning)
{
    pipeline("lat.json",
             "{'name':'postgres','kind':'pg_tenant'},"
             "{'name':'pg_latency','kind':'check_pg','needs':['postgres'],'class':'performance',"
             " 'params':{'check':'latency','sla_ms':0,'queries':20},'retry':{'max_attempts':1}}");
    const char *t = h_tenant("slow");
    submit(t, "Gold");
    const char *log = log_path("worker-lat.log");
    pid_t w = worker_start_logged(log, NULL);
    assert_status(t, "active", 60000);
    worker_stop_checked(w, log);
    cr_assert_eq(pg_objects(t), 2, "resources kept");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id = '%s'"
                            " AND event = 'performance_warning' AND detail->>'reason' LIKE"
                            " '%%p95 %% ms over the SLA of 0 ms%%'", t), 1);
}

Test(infra, audit_check_blocks_when_a_step_has_no_audit_event)
{
    pipeline("audit.json",
             "{'name':'postgres','kind':'pg_tenant'},"
             "{'name':'hold','kind':'sleep','needs':['postgres'],'params':{'ms':1500}},"
             "{'name':'audit','kind':'check_audit','needs':['hold'],'class':'compliance',"
             " 'retry':{'max_attempts':1}}");
    const char *t = h_tenant("ghost");
    submit(t, "Bronze");
    const char *log = log_path("worker-audit.log");
    pid_t w = worker_start_logged(log, NULL);
    cr_assert(wait_step(t, "hold", "running", 30000));
    /* a step recorded as done without its audit event */
    char *r = h_sql("INSERT INTO tq.job_steps (job_id, step, status, attempts)"
                    " SELECT id, 'ghost', 'succeeded', 1 FROM tq.jobs WHERE tenant_id = '%s'", t);
    free(r);
    assert_status(t, "blocked", 60000);
    worker_stop_checked(w, log);
    char *why = h_sql("SELECT failure_reason FROM tq.tenants WHERE tenant_id = '%s'", t);
    cr_assert(strstr(why, "audit events missing") && strstr(why, "ghost") &&
              !strstr(why, "postgres"), "%s", why);
    free(why);
    cr_assert_eq(pg_objects(t), 2, "compliance: resources kept");
}

Test(infra, redis_acl_saved_to_the_aclfile_of_a_separate_tenant_redis)
{
    int port = free_port();
    char dir[300], aclfile[350], pidfile[350], cmd[1600];
    snprintf(dir, sizeof(dir), "%s/tenant-redis", H.tmpdir);
    mkdir(dir, 0700);
    snprintf(aclfile, sizeof(aclfile), "%s/users.acl", dir);
    snprintf(pidfile, sizeof(pidfile), "%s/redis.pid", dir);
    fclose(fopen(aclfile, "w"));
    snprintf(cmd, sizeof(cmd),
             "redis-server --port %d --bind 127.0.0.1 --dir %s --daemonize yes --pidfile %s"
             " --logfile %s/redis.log --save '' --appendonly no --aclfile %s",
             port, dir, pidfile, dir, aclfile);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    redisContext *tr = NULL;
    for (int i = 0; i < 100 && !tr; i++) {
        tr = redisConnect("127.0.0.1", port);
        if (tr && tr->err) {
            redisFree(tr);
            tr = NULL;
            tq_sleep_ms(50);
        }
    }
    cr_assert_not_null(tr, "tenant redis did not start");
    char url[128];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);
    setenv("TQ_TENANT_REDIS_URL", url, 1);

    pipeline("aclfile.json",
             "{'name':'redis','kind':'redis_acl','params':{'url':'${env.TQ_TENANT_REDIS_URL}'}},"
             "{'name':'redis_isolation','kind':'check_redis','needs':['redis'],'class':'security'}");
    const char *t = h_tenant("aclf");
    submit(t, "Bronze");
    const char *log = log_path("worker-aclfile.log");
    pid_t w = worker_start_logged(log, NULL);
    assert_status(t, "active", 60000);
    json_t *o = step_output(t, "redis");
    cr_assert(json_is_true(json_object_get(o, "acl_saved")));
    json_decref(o);
    json_t *rd = secret(t, "redis");
    cr_assert_eq(json_integer_value(json_object_get(rd, "port")), port);
    json_decref(rd);
    cr_assert(acl_user_listed(tr, t));
    cr_assert_not(acl_user_listed(rc, t), "nothing in the queue's redis");
    char *text = slurp(aclfile);
    char *it = ident(t);
    char want[128];
    snprintf(want, sizeof(want), "user tq_t_%s ", it);
    cr_assert(strstr(text, want), "aclfile holds the user: %s", text);
    free(text);

    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "deprovision", t, NULL), 0, "deprovision: %s", err);
    free(err);
    assert_status(t, "deprovisioned", 60000);
    worker_stop_checked(w, log);
    cr_assert_not(acl_user_listed(tr, t));
    text = slurp(aclfile);
    cr_assert_null(strstr(text, want), "aclfile no longer holds the user: %s", text);
    free(text);
    free(it);
    cr_assert_not(secret_exists(t, "redis"));
    freeReplyObject(redisCommand(tr, "SHUTDOWN NOSAVE"));
    redisFree(tr);
}

/* ------------------------------------------------------------ exec */

Test(infra, exec_runs_a_sequence_with_a_minimal_environment_in_the_tenant_directory)
{
    char steps[2048];
    snprintf(steps, sizeof(steps),
             "{'name':'run','kind':'exec','params':{"
             "  'cwd':'${env.TQ_WORK_DIR}/${tenant.id}',"
             "  'steps':[['%s'],['%s']],"
             "  'env':{'GREETING':'hello ${tenant.id}'},"
             "  'files':{'main.tf':'# tenant ${tenant.id}\\n'}}}",
             allow_script("first.sh", "echo first; printf %s \"$GREETING\" > greeting.txt"),
             allow_script("second.sh", "cat greeting.txt; echo; pwd; env; echo FDS; ls -l /proc/$$/fd"));
    pipeline("exec.json", steps);
    const char *t = h_tenant("exec");
    submit(t, "Bronze");
    const char *log = log_path("worker-exec.log");
    pid_t w = worker_start_logged(log, NULL);
    assert_status(t, "active", 60000);
    worker_stop_checked(w, log);
    print_durations(t);
    json_t *o = step_output(t, "run");
    json_t *cmds = json_object_get(o, "commands");
    cr_assert_eq(json_array_size(cmds), 2);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(cmds, 0), "stdout")), "first\n");
    const char *out = json_string_value(json_object_get(o, "stdout"));
    char want[512];
    snprintf(want, sizeof(want), "hello %s\n%s/%s\n", t, work_dir, t);
    cr_assert(strncmp(out, want, strlen(want)) == 0, "stdout: %s", out);
    cr_assert(strstr(out, "GREETING=hello"), "%s", out);
    cr_assert(strstr(out, "PATH=") && strstr(out, "HOME="), "%s", out);
    cr_assert_null(strstr(out, "TQ_DATABASE_URL"), "the worker's environment leaked: %s", out);
    cr_assert_null(strstr(out, "TQ_SECRETS_KEY"), "the worker's environment leaked: %s", out);
    const char *fds = strstr(out, "FDS\n");
    cr_assert_not_null(fds);
    fprintf(stderr, "exec child's descriptors:\n%s", fds + 4);
    /* stdio (libuv's socketpairs on 1 and 2) and at most ls's own directory */
    for (const char *l = strchr(fds, '\n'); l; l = strchr(l + 1, '\n')) {
        const char *arrow = strstr(l, " -> ");
        const char *eol = strchr(l + 1, '\n');
        if (!arrow || (eol && arrow > eol))
            continue;
        if (strncmp(arrow + 4, H.tmpdir, strlen(H.tmpdir)) == 0 && strstr(arrow, "/bin/second.sh"))
            continue;   /* the shell reading the script it runs */
        const char *num = arrow;
        while (num > l && num[-1] != ' ')
            num--;
        cr_assert_leq(atoi(num), 3, "the worker's descriptor %d leaked into the child: %s",
                      atoi(num), fds);
    }
    cr_assert_null(strstr(fds, "anon_inode:"), "the worker's descriptors leaked: %s", fds);
    cr_assert_eq(json_integer_value(json_object_get(o, "exit_code")), 0);
    json_decref(o);
    char path[512];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", work_dir, t);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0700, "per-tenant directory mode %o", st.st_mode & 0777);
    snprintf(path, sizeof(path), "%s/%s/main.tf", work_dir, t);
    char *tf = slurp(path);
    cr_assert(strstr(tf, t), "files written: %s", tf);
    free(tf);
}

Test(infra, exec_failure_reports_the_last_stderr_line_and_runs_the_undo)
{
    char steps[2048];
    snprintf(steps, sizeof(steps),
             "{'name':'run','kind':'exec','retry':{'max_attempts':1},'params':{"
             "  'cwd':'${env.TQ_WORK_DIR}/${tenant.id}',"
             "  'argv':['%s'], 'undo_argv':['%s']}}",
             allow_script("fail.sh", "echo out; echo first problem >&2;"
                                     " echo disk quota exceeded >&2; exit 3"),
             allow_script("undone.sh", "echo undone > undone.txt"));
    pipeline("execfail.json", steps);
    const char *t = h_tenant("execfail");
    submit(t, "Bronze");
    const char *log = log_path("worker-execfail.log");
    pid_t w = worker_start_logged(log, NULL);
    assert_status(t, "failed", 60000);
    worker_stop_checked(w, log);
    char *e = step_error(t, "run");
    cr_assert(strstr(e, "exit code 3: disk quota exceeded"), "%s", e);
    free(e);
    char path[512];
    snprintf(path, sizeof(path), "%s/%s/undone.txt", work_dir, t);
    cr_assert_eq(access(path, F_OK), 0, "the undo ran in the tenant directory");
}

Test(infra, exec_timeout_kills_the_whole_process_group)
{
    char steps[2048];
    snprintf(steps, sizeof(steps),
             "{'name':'polite','kind':'exec','timeout_ms':1000,'retry':{'max_attempts':1},'params':{"
             "  'cwd':'${env.TQ_WORK_DIR}/${tenant.id}',"
             "  'argv':['%s']}},"
             "{'name':'stubborn','kind':'exec','timeout_ms':1000,'retry':{'max_attempts':1},'params':{"
             "  'cwd':'${env.TQ_WORK_DIR}/${tenant.id}',"
             "  'argv':['%s']}}",
             allow_script("polite.sh", "/bin/sleep 300 & echo $! > polite.pid; wait"),
             allow_script("stubborn.sh", "trap \"\" TERM; /bin/sleep 300 & echo $! > stubborn.pid; wait"));
    pipeline("exectimeout.json", steps);
    const char *t = h_tenant("hang");
    submit(t, "Bronze");
    const char *log = log_path("worker-exectimeout.log");
    pid_t w = worker_start_logged(log, NULL);
    char path[512];
    snprintf(path, sizeof(path), "%s/%s/polite.pid", work_dir, t);
    pid_t polite = read_pid(path);
    snprintf(path, sizeof(path), "%s/%s/stubborn.pid", work_dir, t);
    pid_t stubborn = read_pid(path);
    cr_assert_not(process_gone(polite));
    cr_assert_not(process_gone(stubborn));
    assert_status(t, "failed", 60000);
    worker_stop_checked(w, log);
    bool gone = false;
    for (int i = 0; i < 30 && !gone; i++) {
        gone = process_gone(polite) && process_gone(stubborn);
        if (!gone)
            tq_sleep_ms(100);
    }
    if (!gone) {
        kill(polite, SIGKILL);
        kill(stubborn, SIGKILL);
    }
    cr_assert(gone, "grandchildren %d and %d must be killed with their group", polite, stubborn);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE phase = 'run'"
                            " AND error LIKE 'timed out%%'"), 2);
    /* SIGTERM was ignored: SIGKILL came 2 s later */
    long ms = h_sql_long("SELECT extract(epoch FROM finished_at - started_at) * 1000"
                         " FROM tq.step_attempts WHERE step = 'stubborn' AND phase = 'run'");
    cr_assert_geq(ms, 2900, "stubborn ended after %ld ms", ms);
    cr_assert_lt(ms, 6000, "stubborn ended after %ld ms", ms);
}

Test(infra, exec_output_keeps_the_last_64_kib_of_each_stream)
{
    char steps[1024];
    snprintf(steps, sizeof(steps), "{'name':'big','kind':'exec','params':{'argv':['%s']}}",
             allow_script("big.sh", "head -c 5000000 /dev/zero | tr '\\000' a; echo;"
                                    " echo END; head -c 100000 /dev/zero | tr '\\000' b >&2"));
    pipeline("execbig.json", steps);
    const char *t = h_tenant("big");
    submit(t, "Bronze");
    const char *log = log_path("worker-execbig.log");
    pid_t w = worker_start_logged(log, NULL);
    assert_status(t, "active", 60000);
    worker_stop_checked(w, log);
    json_t *o = step_output(t, "big");
    json_t *c = json_array_get(json_object_get(o, "commands"), 0);
    const char *out = json_string_value(json_object_get(c, "stdout"));
    const char *err = json_string_value(json_object_get(c, "stderr"));
    cr_assert_eq(strlen(out), 65536);
    cr_assert_eq(strcmp(out + strlen(out) - 5, "\nEND\n"), 0, "the tail is kept");
    cr_assert_eq(json_integer_value(json_object_get(c, "stdout_bytes")), 5000005);
    cr_assert_eq(strlen(err), 65536);
    cr_assert_eq(strspn(err, "b"), 65536);
    cr_assert_eq(json_integer_value(json_object_get(c, "stderr_bytes")), 100000);
    cr_assert(json_is_true(json_object_get(c, "truncated")));
    json_decref(o);
}

/*
 * The exec step's Terraform sequence with the real binary (TQ_TERRAFORM_BIN,
 * else /usr/local/bin/terraform), in an explicit per-tenant cwd with local
 * state (the pg backend and scratch space: tests/integration/test_fleet.c),
 * on a root that needs no provider download
 * (the built-in terraform_data resource): init, plan -out, apply; applied
 * twice (the second changes nothing); destroy on deprovision, twice.
 */
Test(infra, exec_runs_terraform_init_plan_apply_and_destroy)
{
    const char *bin = getenv("TQ_TERRAFORM_BIN");
    if (!bin || !*bin)
        bin = "/usr/local/bin/terraform";
    if (access(bin, X_OK) != 0)
        cr_skip_test("no terraform binary (%s)", bin);
    setenv("TQ_TEST_TF_BIN", bin, 1);
    setenv("TQ_EXEC_ALLOW", bin, 1);
#define TF(...) "['${env.TQ_TEST_TF_BIN}','-chdir=${env.TQ_WORK_DIR}/${tenant.id}'," __VA_ARGS__ "]"
#define TF_PARAMS                                                                              \
    "'cwd':'${env.TQ_WORK_DIR}/${tenant.id}',"                                                 \
    "'files':{'main.tf.json':{'resource':{'terraform_data':{'tenant':{'input':'${tenant.id}'}}}}},"  \
    "'env':{'TF_IN_AUTOMATION':'1','CHECKPOINT_DISABLE':'1','TF_CLI_CONFIG_FILE':'/dev/null'},"  \
    "'steps':[" TF("'init','-input=false','-no-color'") ","                                     \
    TF("'plan','-input=false','-no-color','-out=tfplan'") ","                                  \
    TF("'apply','-input=false','-no-color','tfplan'") "],"                                     \
    "'undo_steps':[" TF("'init','-input=false','-no-color'") ","                                \
    TF("'destroy','-input=false','-no-color','-auto-approve'") "],"                            \
    "'remove_cwd_on_undo':true"
    pipeline("tf.json",
             "{'name':'terraform','kind':'exec','timeout_ms':120000,'params':{" TF_PARAMS "}},"
             "{'name':'terraform_again','kind':'exec','needs':['terraform'],'timeout_ms':120000,"
             " 'params':{" TF_PARAMS "}}");
    const char *t = h_tenant("tf");
    submit(t, "Gold");
    const char *log = log_path("worker-tf.log");
    pid_t w = worker_start_logged(log, NULL);
    assert_status(t, "active", 120000);
    print_durations(t);
    json_t *o = step_output(t, "terraform");
    cr_assert_eq(json_array_size(json_object_get(o, "commands")), 3);
    cr_assert(strstr(json_string_value(json_object_get(o, "stdout")), "1 added"), "%s",
              json_string_value(json_object_get(o, "stdout")));
    json_decref(o);
    o = step_output(t, "terraform_again");
    cr_assert(strstr(json_string_value(json_object_get(o, "stdout")), "0 added, 0 changed"),
              "applying again changes nothing: %s", json_string_value(json_object_get(o, "stdout")));
    json_decref(o);
    char path[512];
    snprintf(path, sizeof(path), "%s/%s/terraform.tfstate", work_dir, t);
    char *state = slurp(path);
    cr_assert(strstr(state, "terraform_data") && strstr(state, t), "state: %s", state);
    free(state);

    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "deprovision", t, NULL), 0, "deprovision: %s", err);
    free(err);
    assert_status(t, "deprovisioned", 120000);
    worker_stop_checked(w, log);
    snprintf(path, sizeof(path), "%s/%s", work_dir, t);
    cr_assert_neq(access(path, F_OK), 0, "the working directory is removed after destroy");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE phase = 'undo'"
                            " AND status = 'succeeded'"), 2, "destroy ran for both steps");
}

/* ------------------------------------------------------------ exec allow-list, redaction */

Test(infra, exec_runs_only_allowed_programs_and_never_a_shell)
{
    /* a shell is refused even when the configuration lists it */
    setenv("TQ_EXEC_ALLOW", "/bin/sh:/usr/bin/env:/bin/bash", 1);
    pipeline("shell.json",
             "{'name':'run','kind':'exec','retry':{'max_attempts':1},'params':{"
             "  'cwd':'${env.TQ_WORK_DIR}/${tenant.id}','argv':['/bin/sh','-c','id > pwned.txt']}}");
    const char *t = h_tenant("shell");
    submit(t, "Bronze");
    const char *log = log_path("worker-shell.log");
    pid_t w = worker_start_logged(log, NULL);
    assert_status(t, "failed", 60000);
    char *e = step_error(t, "run");
    cr_assert(strstr(e, "\"/bin/sh\" is a shell, which exec never runs"), "%s", e);
    free(e);
    char path[512];
    snprintf(path, sizeof(path), "%s/%s/pwned.txt", work_dir, t);
    cr_assert_neq(access(path, F_OK), 0, "the shell never ran");
    worker_stop_checked(w, log);

    /* a program off the list is refused; on the list it runs */
    const char *ok = allow_script("allowed.sh", "echo allowed > allowed.txt");
    char steps[1024];
    snprintf(steps, sizeof(steps),
             "{'name':'run','kind':'exec','params':{'argv':['%s']}},"
             "{'name':'other','kind':'exec','needs':['run'],'retry':{'max_attempts':1},"
             " 'params':{'cwd':'${env.TQ_WORK_DIR}/${tenant.id}','argv':['/usr/bin/touch','touched.txt']}}", ok);
    pipeline("offlist.json", steps);
    const char *t2 = h_tenant("offlist");
    submit(t2, "Bronze");
    w = worker_start_logged(log, NULL);
    assert_status(t2, "failed", 60000);
    worker_stop_checked(w, log);
    e = step_error(t2, "other");
    cr_assert(strstr(e, "\"/usr/bin/touch\" is not on the worker's allow-list TQ_EXEC_ALLOW"),
              "%s", e);
    free(e);
    snprintf(path, sizeof(path), "%s/%s/touched.txt", work_dir, t2);
    cr_assert_neq(access(path, F_OK), 0, "touch never ran");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts a JOIN tq.jobs j ON"
                            " j.id = a.job_id WHERE j.tenant_id = '%s' AND a.step = 'run'"
                            " AND a.phase = 'run' AND a.status = 'succeeded'", t2), 1,
                 "the allowed program ran");
}

Test(infra, secrets_a_pipeline_references_are_redacted_everywhere)
{
    char secret[41], token[41];
    tq_random_password(secret, 40);
    tq_random_password(token, 40);
    setenv("TQ_S3_SECRET_KEY", secret, 1);
    setenv("TQ_VECTOR_TOKEN", token, 1);
    const char *echo = allow_script("echo-secret.sh",
                                    "echo \"key=$S token=$T\"; echo \"stderr key=$S\" >&2");
    const char *fail = allow_script("fail-secret.sh", "echo \"refused: key=$S token=$T\" >&2;"
                                                      " exit 1");
    char steps[2048];
    snprintf(steps, sizeof(steps),
             "{'name':'show','kind':'exec','params':{'argv':['%s'],"
             " 'env':{'S':'${env.TQ_S3_SECRET_KEY}','T':'${env.TQ_VECTOR_TOKEN}'}}},"
             "{'name':'fail','kind':'exec','needs':['show'],"
             " 'retry':{'max_attempts':2,'base_ms':10,'max_ms':20},"
             " 'params':{'argv':['%s'],"
             " 'env':{'S':'${env.TQ_S3_SECRET_KEY}','T':'${env.TQ_VECTOR_TOKEN}'}}}",
             echo, fail);
    pipeline("secret.json", steps);
    const char *t = h_tenant("secret");
    submit(t, "Bronze");
    const char *log = log_path("worker-secret.log");
    const char *env[] = {"TQ_DEBUG=1", NULL};
    pid_t w = worker_start_logged(log, env);
    assert_status(t, "failed", 60000);
    worker_stop_checked(w, log);
    /* the steps ran and printed the secrets, masked */
    json_t *o = step_output(t, "show");
    const char *out = json_string_value(json_object_get(o, "stdout"));
    cr_assert(out && strstr(out, "key=****") && strstr(out, "token=****"), "%s", out);
    json_decref(o);
    char *e = step_error(t, "fail");
    cr_assert(strstr(e, "refused: key=****"), "%s", e);
    free(e);
    /* a secret in argv is refused before anything runs (argv is visible to all) */
    snprintf(steps, sizeof(steps), "{'name':'argv','kind':'exec','retry':{'max_attempts':1},"
             " 'params':{'argv':['%s','--key=${env.TQ_S3_SECRET_KEY}']}}", echo);
    pipeline("secret-argv.json", steps);
    const char *t2 = h_tenant("secretargv");
    submit(t2, "Bronze");
    w = worker_start_logged(log, env);
    assert_status(t2, "failed", 60000);
    worker_stop_checked(w, log);
    e = step_error(t2, "argv");
    cr_assert(strstr(e, "params.argv[1] carries a secret; pass it in params.env"), "%s", e);
    free(e);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts a JOIN tq.jobs j ON"
                            " j.id = a.job_id WHERE j.tenant_id = '%s' AND a.phase = 'run'"
                            " AND a.status = 'succeeded'", t2), 0, "nothing ran");

    char *logtext = slurp(log);
    assert_secret_nowhere("S3 secret key", secret, logtext);
    assert_secret_nowhere("vector token", token, logtext);
    free(logtext);
}
