/*
 * Service accounts and the shared credentials store (docs/security.md),
 * through the real binaries: local services refuse anonymous clients, each
 * role can do what it needs and nothing it should not, the worker refuses a
 * superuser login and an unmigrated schema, tenant credentials live
 * encrypted in PostgreSQL where any worker (and the owner, audited) reads
 * them, rotate under a new key, and go with deprovisioning.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "harness.h"
#include "tq/util.h"

static void auth_setup(void)
{
    h_setup();
    if (!H.roles)
        cr_skip_test("the service accounts are not set up (run deploy/local/test)");
}

TestSuite(auth, .init = auth_setup, .fini = h_teardown, .timeout = 180);

static void submit_ok(const char *id)
{
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--tenant-id", id, "--name", id, "--tier", "Bronze",
                       "--region", "us-east-1", "--budget", "50000", "--owner", "ops@example.com",
                       NULL);
    cr_assert_eq(rc, 0, "submit %s failed: %s", id, err);
    free(err);
}

static void provision(const char *id)
{
    submit_ok(id);
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("active", 60000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", id),
              "tenant %s never became active", id);
    cr_assert_eq(h_worker_stop(w, 15000), 0);
}

/* Run SQL as a role's connection; the SQLSTATE ("" on success). Caller frees. */
static char *sqlstate_as(const char *dsn, const char *sql)
{
    PGconn *c = PQconnectdb(dsn);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    char *out = tq_xstrdup(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? ""
                           : code                                          ? code
                                                                           : "?");
    PQclear(r);
    PQfinish(c);
    return out;
}

static void assert_refused(const char *dsn, const char *who, const char *sql)
{
    char *st = sqlstate_as(dsn, sql);
    cr_assert_str_eq(st, "42501", "%s must be refused: %s (got \"%s\")", who, sql, st);
    free(st);
}

static void assert_allowed(const char *dsn, const char *who, const char *sql)
{
    char *st = sqlstate_as(dsn, sql);
    cr_assert_str_eq(st, "", "%s must be allowed: %s (SQLSTATE %s)", who, sql, st);
    free(st);
}

/* Start tq-worker with extra env, output to a file; pid (its own group). */
static pid_t worker_spawn(const char *log, const char *const *env, const char *flag)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        setpgid(0, 0);
        for (size_t i = 0; env && env[i]; i++) {
            char kv[1024];
            snprintf(kv, sizeof(kv), "%s", env[i]);
            char *eq = strchr(kv, '=');
            *eq = '\0';
            if (eq[1])
                setenv(kv, eq + 1, 1);
            else
                unsetenv(kv);
        }
        freopen(log, "w", stdout);
        dup2(fileno(stdout), 2);
        execl(TQ_WORKER_BIN, "tq-worker", flag, (char *)NULL);
        _exit(127);
    }
    h_worker_adopt(pid);
    return pid;
}

static char *slurp(const char *path)
{
    char *s = NULL;
    size_t n;
    if (tq_read_file(path, 1 << 20, &s, &n) != TQ_OK)
        return tq_xstrdup("");
    return s;
}

/* ------------------------------------------------------------ services */

Test(auth, local_services_refuse_anonymous_clients)
{
    /* Redis: the default user is off; an unauthenticated client can do nothing */
    redisContext *c = redisConnect("127.0.0.1", H.redis_port);
    cr_assert(c && !c->err);
    redisReply *r = redisCommand(c, "GET tq:{%s}:anything", H.queue);
    cr_assert(r && r->type == REDIS_REPLY_ERROR && strstr(r->str, "NOAUTH"),
              "an anonymous client got: %s", r ? r->str : "(null)");
    freeReplyObject(r);
    r = redisCommand(c, "AUTH default nopass");
    cr_assert(r && r->type == REDIS_REPLY_ERROR, "the default user must be off");
    freeReplyObject(r);
    redisFree(c);
    char *flags = h_redis("ACL WHOAMI");
    cr_assert_str_eq(flags, "tq-admin");
    free(flags);

    /* PostgreSQL: only scram-sha-256, and no login without a password */
    cr_assert_eq(h_sql_long("SELECT count(*) FROM pg_hba_file_rules WHERE auth_method IS DISTINCT"
                            " FROM 'scram-sha-256'"),
                 0, "every pg_hba rule must be scram-sha-256");
    char dsn[600];
    snprintf(dsn, sizeof(dsn), "host=127.0.0.1 port=%s user=postgres password=wrong dbname=%s",
             PQport(H.db), H.dbname);
    PGconn *p = PQconnectdb(dsn);
    cr_assert_neq(PQstatus(p), CONNECTION_OK, "a wrong password must not log in");
    PQfinish(p);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM pg_roles WHERE rolname IN ('tq_migrate',"
                            " 'tq_worker', 'tq_cli') AND NOT rolsuper AND NOT rolbypassrls"),
                 3);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM pg_roles WHERE rolname = 'tq_worker'"
                            " AND rolcreaterole AND NOT rolcreatedb"),
                 1, "tq_worker has CREATEROLE and nothing more");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM pg_namespace WHERE nspname = 'tq'"
                            " AND nspowner::regrole::text = 'tq_migrate'"),
                 1, "tq_migrate owns schema tq");
}

Test(auth, redis_users_have_only_their_commands_and_keys)
{
    struct {
        const char *url, *cmd;
        bool ok;
    } cases[] = {
        {H.redis_url, "LPUSH tq:{x}:ready 1", true},
        {H.redis_url, "ACL GETUSER tq-cli", true},   /* tenant namespaces need ACL */
        {H.redis_url, "GET t:someone:key", false},
        {H.redis_url, "FLUSHALL", false},
        {H.redis_url, "KEYS *", false},
        {H.redis_url, "CONFIG SET maxmemory 1", false},
        {H.cli_redis_url, "LLEN tq:{x}:ready", true},
        {H.cli_redis_url, "ACL SETUSER mallory on >x ~* +@all", false},
        {H.cli_redis_url, "GET t:someone:key", false},
        {H.cli_redis_url, "CONFIG GET maxmemory-policy", false},
        {H.cli_redis_url, "FLUSHALL", false},
        {H.cli_redis_url, "BLMOVE tq:{x}:ready tq:{x}:proc:me RIGHT LEFT 0.01", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *url = cases[i].url;
        const char *at = strrchr(url, '@');
        const char *user0 = url + strlen("redis://");
        const char *colon = strchr(user0, ':');
        char user[64], pw[128];
        snprintf(user, sizeof(user), "%.*s", (int)(colon - user0), user0);
        snprintf(pw, sizeof(pw), "%.*s", (int)(at - colon - 1), colon + 1);
        redisContext *c = redisConnect("127.0.0.1", H.redis_port);
        redisReply *r = redisCommand(c, "AUTH %s %s", user, pw);
        cr_assert(r && r->type == REDIS_REPLY_STATUS, "AUTH %s", user);
        freeReplyObject(r);
        r = redisCommand(c, cases[i].cmd);
        bool denied = r && r->type == REDIS_REPLY_ERROR && strstr(r->str, "NOPERM");
        cr_assert_eq(!denied, cases[i].ok, "%s: %s -> %s", user, cases[i].cmd,
                     r && r->str ? r->str : "(no text)");
        freeReplyObject(r);
        redisFree(c);
    }
    free(h_redis("DEL tq:{x}:ready"));
}

/* ------------------------------------------------------------ roles */

Test(auth, cli_role_cannot_take_leases_or_read_secrets)
{
    const char *a = h_tenant("cli");
    provision(a);
    long job = h_sql_long("SELECT id FROM tq.jobs WHERE tenant_id = '%s'", a);
    char sql[512];
    snprintf(sql, sizeof(sql), "UPDATE tq.jobs SET lease_epoch = lease_epoch + 1 WHERE id = %ld", job);
    assert_refused(H.cli_dsn, "tq_cli", sql);
    snprintf(sql, sizeof(sql), "UPDATE tq.jobs SET lease_owner = 'mallory' WHERE id = %ld", job);
    assert_refused(H.cli_dsn, "tq_cli", sql);
    snprintf(sql, sizeof(sql),
             "UPDATE tq.jobs SET lease_until = now() + interval '1 day' WHERE id = %ld", job);
    assert_refused(H.cli_dsn, "tq_cli", sql);
    snprintf(sql, sizeof(sql), "UPDATE tq.jobs SET lease_owner = NULL, lease_until = NULL WHERE id = %ld",
             job);
    assert_allowed(H.cli_dsn, "tq_cli (releasing a lease)", sql);
    assert_refused(H.cli_dsn, "tq_cli", "SELECT ciphertext FROM tq.secrets");
    assert_refused(H.cli_dsn, "tq_cli", "DELETE FROM tq.secrets");
    assert_refused(H.cli_dsn, "tq_cli", "DELETE FROM tq.jobs");
    assert_refused(H.cli_dsn, "tq_cli", "INSERT INTO tq.schema_migrations VALUES (999)");
    assert_refused(H.cli_dsn, "tq_cli", "UPDATE tq.audit_events SET actor = 'mallory'");
    assert_refused(H.cli_dsn, "tq_cli", "CREATE TABLE tq.mine (x int)");
    assert_refused(H.cli_dsn, "tq_cli", "CREATE ROLE mallory");
    assert_allowed(H.cli_dsn, "tq_cli", "SELECT count(*) FROM tq.tenants");

    assert_refused(H.worker_dsn, "tq_worker", "UPDATE tq.audit_events SET actor = 'mallory'");
    assert_refused(H.worker_dsn, "tq_worker", "DELETE FROM tq.audit_events");
    assert_refused(H.worker_dsn, "tq_worker", "INSERT INTO tq.schema_migrations VALUES (999)");
    assert_refused(H.worker_dsn, "tq_worker", "DROP TABLE tq.jobs");
    assert_refused(H.worker_dsn, "tq_worker", "ALTER ROLE tq_worker SUPERUSER");
    assert_refused(H.worker_dsn, "tq_worker", "ALTER SYSTEM SET fsync = off");
    /* the owner's audited read is the CLI's only way to secrets; not the worker's */
    assert_refused(H.worker_dsn, "tq_worker", "SELECT * FROM tq.tenant_credentials('x', 'y')");
    /* append-only for the owner too */
    assert_refused(H.migrate_dsn, "tq_migrate", "DELETE FROM tq.audit_events");
}

Test(auth, worker_provisions_as_tq_worker_not_a_superuser)
{
    const char *a = h_tenant("wrk");
    submit_ok(a);
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("active", 60000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", a));
    /* its sessions are tq_worker's, and none is a superuser's */
    cr_assert_gt(h_sql_long("SELECT count(*) FROM pg_stat_activity WHERE datname = '%s'"
                            " AND usename = 'tq_worker'", H.dbname), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM pg_stat_activity a JOIN pg_roles r"
                            " ON r.rolname = a.usename WHERE a.datname = '%s' AND r.rolsuper"
                            " AND a.pid <> pg_backend_pid()", H.dbname), 0);
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    char *id = tq_xstrdup(a);
    for (char *p = id; *p; p++)
        if (*p == '-')
            *p = '_';
    cr_assert_eq(h_sql_long("SELECT count(*) FROM pg_roles WHERE rolname = 'tq_t_%s'", id), 1);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM pg_namespace WHERE nspname = 't_%s'", id), 1);
    free(id);
}

Test(auth, worker_refuses_a_superuser_login_unless_told)
{
    char log[300], dbenv[600];
    snprintf(log, sizeof(log), "%s/super.log", H.tmpdir);
    snprintf(dbenv, sizeof(dbenv), "TQ_DATABASE_URL=%s", H.dsn);
    const char *env[] = {dbenv, "TQ_ALLOW_SUPERUSER=", NULL};
    pid_t w = worker_spawn(log, env, NULL);
    int rc = h_wait_pid(w, 20000);
    char *out = slurp(log);
    cr_assert(rc != 0 && rc != -2, "a superuser worker must exit at start (rc %d): %s", rc, out);
    cr_assert(strstr(out, "superuser") && strstr(out, "--allow-superuser"), "%s", out);
    free(out);
    cr_assert_eq(h_redis_long("SCARD tq:{%s}:workers", H.queue), 0, "it never joined the fleet");

    /* the flag lets it run: it joins the heartbeat set */
    w = worker_spawn(log, env, "--allow-superuser");
    bool joined = false;
    for (int i = 0; i < 200 && !joined; i++) {
        joined = h_redis_long("SCARD tq:{%s}:workers", H.queue) == 1;
        if (!joined)
            tq_sleep_ms(100);
    }
    cr_assert(joined, "with --allow-superuser the worker must start");
    cr_assert_eq(h_worker_stop(w, 15000), 0);
}

Test(auth, worker_refuses_a_missing_or_older_schema)
{
    char log[300], dbenv[700], sql[200];
    snprintf(log, sizeof(log), "%s/unmigrated.log", H.tmpdir);
    /* a database with no tq schema at all */
    PGconn *a = PQconnectdb(H.admin_dsn);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s_empty OWNER tq_migrate", H.dbname);
    PQclear(PQexec(a, sql));
    char empty_dsn[600];
    snprintf(empty_dsn, sizeof(empty_dsn), "%.*s dbname=%s_empty",
             (int)(strstr(H.worker_dsn, " dbname=") - H.worker_dsn), H.worker_dsn, H.dbname);
    snprintf(dbenv, sizeof(dbenv), "TQ_DATABASE_URL=%s", empty_dsn);
    const char *env[] = {dbenv, NULL};
    pid_t w = worker_spawn(log, env, NULL);
    int rc = h_wait_pid(w, 20000);
    char *out = slurp(log);
    cr_assert(rc != 0 && rc != -2, "a worker on an unmigrated database must exit (rc %d): %s", rc,
              out);
    cr_assert(strstr(out, "no tq schema") && strstr(out, "tq-enqueue migrate"), "%s", out);
    free(out);
    snprintf(sql, sizeof(sql), "DROP DATABASE %s_empty WITH (FORCE)", H.dbname);
    PQclear(PQexec(a, sql));
    PQfinish(a);

    /* a schema one migration behind this build */
    free(h_sql("DELETE FROM tq.schema_migrations WHERE version = (SELECT max(version)"
               " FROM tq.schema_migrations)"));
    w = worker_spawn(log, NULL, NULL);
    rc = h_wait_pid(w, 20000);
    out = slurp(log);
    cr_assert(rc != 0 && rc != -2, "a worker on an older schema must exit (rc %d): %s", rc, out);
    cr_assert(strstr(out, "older") || strstr(out, "needs"), "%s", out);
    free(out);
}

/* ------------------------------------------------------------ credentials */

Test(auth, credentials_are_ciphertext_in_postgres_and_reach_the_owner_audited)
{
    const char *a = h_tenant("own");
    submit_ok(a);
    /* not active yet: nothing printed, the refusal audited */
    char *out = NULL, *err = NULL;
    int rc = h_enqueue(&out, &err, "credentials", a, "--by", "alice@example.com", NULL);
    cr_assert_eq(rc, 4, "credentials of a queued tenant: %s", err);
    cr_assert_str_eq(out, "");
    free(out);
    free(err);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id = '%s'"
                            " AND event = 'credentials_refused'", a), 1);

    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("active", 60000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", a));
    cr_assert_eq(h_worker_stop(w, 15000), 0);

    /* the table holds key id, nonce and ciphertext only */
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.secrets WHERE tenant_id = '%s'"
                            " AND key_id = 't1' AND length(nonce) = 12", a), 2);
    json_t *pg = h_secret(a, "postgres");
    cr_assert_not_null(pg);
    const char *pw = json_string_value(json_object_get(pg, "password"));
    cr_assert(pw && strlen(pw) >= 32);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.secrets WHERE position(convert_to('%s', 'UTF8')"
                            " IN ciphertext) > 0", pw), 0, "plaintext in the ciphertext");

    rc = h_enqueue(&out, &err, "--json", "credentials", a, "--by", "alice@example.com", NULL);
    cr_assert_eq(rc, 0, "%s", err);
    json_t *o = h_json(out, "credentials --json");
    json_t *c = json_object_get(o, "credentials");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(c, "postgres"), "password")),
                     pw);
    cr_assert_not_null(json_object_get(json_object_get(c, "redis"), "password"));
    json_decref(o);
    free(out);
    free(err);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id = '%s'"
                            " AND event = 'credentials_read' AND actor = 'alice@example.com'", a),
                 1, "every read is an audit event");
    /* and the password logs in as the tenant */
    char dsn[900];
    snprintf(dsn, sizeof(dsn), "host=%s port=%s dbname=%s user=%s password=%s",
             json_string_value(json_object_get(pg, "host")),
             json_string_value(json_object_get(pg, "port")),
             json_string_value(json_object_get(pg, "dbname")),
             json_string_value(json_object_get(pg, "user")), pw);
    PGconn *t = PQconnectdb(dsn);
    cr_assert_eq(PQstatus(t), CONNECTION_OK, "%s", PQerrorMessage(t));
    PQfinish(t);
    json_decref(pg);

    /* without the key: refused before anything is read */
    h_setenv("TQ_SECRETS_KEY", NULL);
    rc = h_enqueue(NULL, &err, "credentials", a, NULL);
    cr_assert_eq(rc, 2, "%s", err);
    cr_assert(strstr(err, "TQ_SECRETS_KEY"), "%s", err);
    free(err);
    h_setenv("TQ_SECRETS_KEY", H.secrets_key);
}

Test(auth, a_tampered_row_fails_authentication_clearly)
{
    const char *a = h_tenant("tamp");
    provision(a);
    free(h_sql("UPDATE tq.secrets SET ciphertext = set_byte(ciphertext, 3,"
               " get_byte(ciphertext, 3) # 1) WHERE tenant_id = '%s' AND name = 'postgres'", a));
    char *out = NULL, *err = NULL;
    int rc = h_enqueue(&out, &err, "credentials", a, NULL);
    cr_assert_eq(rc, 3, "%s", err);
    cr_assert(strstr(err, "failed authentication") && strstr(err, "postgres"), "%s", err);
    cr_assert_str_eq(out, "", "nothing printed for a tampered secret");
    free(out);
    free(err);
    /* a revalidation (check-db reads the same row) fails, naming the cause */
    cr_assert_eq(h_enqueue(NULL, NULL, "revalidate", a, NULL), 0);
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("1", 60000, "SELECT count(*) FROM tq.tenants WHERE tenant_id = '%s'"
                         " AND drift LIKE '%%failed authentication%%'", a),
              "the check must report the authentication failure");
    cr_assert_eq(h_worker_stop(w, 15000), 0);
}

Test(auth, rotate_reencrypts_under_the_current_key_old_ids_readable_until_then)
{
    const char *a = h_tenant("rot");
    provision(a);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.secrets WHERE tenant_id = '%s'"
                            " AND key_id = 't1'", a), 2);
    char ring[200];
    snprintf(ring, sizeof(ring), "t2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n%s",
             H.secrets_key);
    h_setenv("TQ_SECRETS_KEY", ring);
    /* before rotating, rows under t1 stay readable with t2 current */
    char *out = NULL, *err = NULL;
    cr_assert_eq(h_enqueue(&out, &err, "credentials", a, NULL), 0, "%s", err);
    free(out);
    free(err);
    /* rotation writes secrets: a role that may (the worker's), not the CLI's */
    const char *argv[] = {TQ_ENQUEUE_BIN, "--json", "secrets", "rotate", NULL};
    char dbenv[600];
    snprintf(dbenv, sizeof(dbenv), "TQ_DATABASE_URL=%s", H.cli_dsn);
    const char *as_cli[] = {dbenv, NULL};
    char *cli_err = NULL;
    cr_assert_eq(h_run_env(argv, as_cli, NULL, &cli_err), 3, "tq_cli may not rewrite secrets");
    cr_assert(strstr(cli_err, "permission denied"), "%s", cli_err);
    free(cli_err);
    snprintf(dbenv, sizeof(dbenv), "TQ_DATABASE_URL=%s", H.worker_dsn);
    const char *as_worker[] = {dbenv, NULL};
    int rc = h_run_env(argv, as_worker, &out, &err);
    cr_assert_eq(rc, 0, "%s", err);
    json_t *o = h_json(out, "secrets rotate --json");
    cr_assert_eq(json_integer_value(json_object_get(o, "rotated")), 2);
    json_decref(o);
    free(out);
    free(err);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.secrets WHERE key_id <> 't2'"), 0);
    /* again: nothing left to do */
    rc = h_run_env(argv, as_worker, &out, NULL);
    cr_assert_eq(rc, 0);
    cr_assert(strstr(out, "\"rotated\":0"), "%s", out);
    free(out);
    /* only the new key now: still readable; only the old one: refused by key id */
    h_setenv("TQ_SECRETS_KEY", "t2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=");
    cr_assert_eq(h_enqueue(NULL, NULL, "credentials", a, NULL), 0);
    h_setenv("TQ_SECRETS_KEY", H.secrets_key);
    cr_assert_eq(h_enqueue(NULL, &err, "credentials", a, NULL), 3);
    cr_assert(strstr(err, "\"t2\""), "%s", err);
    free(err);
}

Test(auth, another_worker_revalidates_with_the_shared_credentials)
{
    const char *a = h_tenant("fleet");
    /* each "host" has its own disk; the provisioning one's is gone with it */
    char env1[400];
    snprintf(env1, sizeof(env1), "TQ_WORK_DIR=%s/host-a", H.tmpdir);
    const char *ea[] = {env1, NULL};
    submit_ok(a);
    pid_t w = h_worker_start(ea);
    cr_assert(h_wait_sql("active", 60000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", a));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s/host-a'", H.tmpdir);
    cr_assert_eq(system(cmd), 0);
    /* a second host with its own (empty) disk revalidates cleanly */
    char env2[400];
    snprintf(env2, sizeof(env2), "TQ_WORK_DIR=%s/host-b", H.tmpdir);
    const char *eb[] = {env2, NULL};
    cr_assert_eq(h_enqueue(NULL, NULL, "revalidate", a, NULL), 0);
    w = h_worker_start(eb);
    cr_assert(h_wait_sql("succeeded", 60000, "SELECT status FROM tq.jobs WHERE tenant_id = '%s'"
                         " AND kind = 'revalidate'", a),
              "revalidation on another worker must pass");
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    char *drift = h_sql("SELECT coalesce(drift, '') FROM tq.tenants WHERE tenant_id = '%s'", a);
    cr_assert_str_eq(drift, "", "no drift recorded");
    free(drift);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id"
                            " WHERE j.tenant_id = '%s' AND j.kind = 'revalidate'"
                            " AND s.step IN ('check-db', 'check-db-isolation',"
                            " 'check-cache-isolation') AND s.status = 'succeeded'", a),
                 3, "the checks that log in as the tenant ran and passed");
}

Test(auth, deprovisioning_destroys_the_tenants_secrets)
{
    const char *a = h_tenant("gone");
    provision(a);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.secrets WHERE tenant_id = '%s'", a), 2);
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "deprovision", a, "--by", "ops", NULL), 0, "%s", err);
    free(err);
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("deprovisioned", 60000,
                         "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", a));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.secrets WHERE tenant_id = '%s'", a), 0);
}

Test(auth, file_store_is_opt_in_and_warns_next_to_other_workers)
{
    char log[300], store[400];
    snprintf(log, sizeof(log), "%s/file.log", H.tmpdir);
    snprintf(store, sizeof(store), "TQ_SECRETS_STORE=file:%s/laptop", H.tmpdir);
    /* another worker is in the heartbeat set */
    pid_t other = h_worker_start(NULL);
    bool joined = false;
    for (int i = 0; i < 200 && !joined; i++) {
        joined = h_redis_long("SCARD tq:{%s}:workers", H.queue) == 1;
        if (!joined)
            tq_sleep_ms(100);
    }
    cr_assert(joined);
    const char *env[] = {store, NULL};
    pid_t w = worker_spawn(log, env, NULL);
    bool warned = false;
    for (int i = 0; i < 200 && !warned; i++) {
        char *out = slurp(log);
        warned = strstr(out, "one host's disk") != NULL;
        free(out);
        if (!warned)
            tq_sleep_ms(100);
    }
    cr_assert(warned, "the file store next to another worker must warn");
    /* it still runs (a warning, not a refusal): it joins the fleet, then drains */
    joined = false;
    for (int i = 0; i < 200 && !joined; i++) {
        joined = h_redis_long("SCARD tq:{%s}:workers", H.queue) == 2;
        if (!joined)
            tq_sleep_ms(100);
    }
    cr_assert(joined, "the file-store worker must start");
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(h_worker_stop(other, 15000), 0);
}
