/*
 * The walking skeleton end to end, through the real binaries against the
 * real Redis and PostgreSQL: submit -> worker -> tenant active with its
 * schema, role and row-level-secured table; duplicates and bad input change
 * nothing; a batch is all or nothing.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "tq/util.h"

TestSuite(e2e, .init = h_setup, .fini = h_teardown, .timeout = 120);

static void submit_ok(const char *id, const char *name, const char *tier, const char *budget)
{
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--tenant-id", id, "--name", name, "--tier", tier,
                       "--region", "us-east-1", "--budget", budget, "--owner",
                       "ops@example.com", NULL);
    cr_assert_eq(rc, 0, "submit %s failed: %s", id, err);
    free(err);
}

/* Steps in the shipped pipeline file. */
static long shipped_steps(void)
{
    json_error_t je;
    json_t *p = json_load_file(TQ_SOURCE_DIR "/deploy/pipelines/tenant-provision.json", 0, &je);
    cr_assert_not_null(p, "shipped pipeline: %s", je.text);
    long n = (long)json_array_size(json_object_get(p, "steps"));
    json_decref(p);
    return n;
}

static char *ident(const char *tenant)
{
    char *s = tq_xstrdup(tenant);
    for (char *p = s; *p; p++)
        if (*p == '-')
            *p = '_';
    return s;
}

Test(e2e, submit_then_worker_makes_the_tenant_active)
{
    const char *a = h_tenant("acme"), *b = h_tenant("globex");
    submit_ok(a, "Acme", "Gold", "800000");
    submit_ok(b, "Globex", "Bronze", "150000");
    cr_assert_eq(h_redis_long("LLEN tq:{%s}:ready", H.queue), 2, "both jobs dispatched");

    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("active", 60000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", a),
              "tenant %s never became active", a);
    cr_assert(h_wait_sql("active", 60000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", b));
    cr_assert_eq(h_worker_stop(w, 15000), 0, "worker must drain and exit 0 on SIGTERM");

    char *ia = ident(a), *ib = ident(b);
    /* schema owned by the tenant's NOLOGIN owner role, never its login role */
    char *owner = h_sql("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 't_%s'", ia);
    cr_assert_not_null(owner);
    cr_assert_eq(strncmp(owner, "tq_o_", 5), 0, "schema owner is %s", owner);
    free(owner);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM pg_roles WHERE rolname = 'tq_t_%s' AND rolcanlogin"
                            " AND NOT rolsuper AND NOT rolcreaterole", ia), 1);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                            " WHERE n.nspname = 't_%s' AND c.relname = 'documents'"
                            " AND c.relrowsecurity AND c.relforcerowsecurity", ia), 1);
    /* the shipped pipeline ran whole: every step that ran succeeded on its first attempt,
       the ones without a configured service (S3, SaaS, Terraform) were skipped */
    long nsteps = shipped_steps();
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id"
                            " WHERE j.tenant_id = '%s' AND ((s.status = 'succeeded' AND s.attempts = 1)"
                            " OR s.status = 'skipped')", a), nsteps);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id"
                            " WHERE j.tenant_id = '%s' AND s.status = 'succeeded' AND s.step IN"
                            " ('postgres', 'redis', 'config', 'check-db', 'check-db-isolation',"
                            " 'check-cache-isolation', 'check-cache-usage', 'check-latency',"
                            " 'check-audit', 'notify')", a), 10);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs WHERE tenant_id = '%s' AND status = 'succeeded'"
                            " AND lease_owner IS NULL", a), 1);
    cr_assert_eq(h_sql_long("SELECT count(DISTINCT event) FROM tq.audit_events WHERE tenant_id = '%s'"
                            " AND event IN ('submitted', 'approved', 'step_succeeded', 'active')", a), 4);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id = '%s'"
                            " AND event = 'step_succeeded'", a), 10, "one audit event per step that ran");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenant_configs WHERE tenant_id = '%s'"
                            " AND config->>'model' = 'gpt-4'", a), 1, "Gold tier config");
    /* acked: nothing left in Redis lists */
    cr_assert_eq(h_redis_long("LLEN tq:{%s}:ready", H.queue), 0);

    /* isolation: a's role cannot read b's schema, and RLS refuses foreign rows */
    char q[1024];
    json_t *login = h_secret(a, "postgres");
    cr_assert_not_null(login, "no postgres credentials of %s in the store", a);
    snprintf(q, sizeof(q), "%s user=tq_t_%s password=%s", H.dsn, ia,
             json_string_value(json_object_get(login, "password")));
    json_decref(login);
    PGconn *c = PQconnectdb(q);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    snprintf(q, sizeof(q), "SELECT * FROM t_%s.documents", ib);
    PGresult *r = PQexec(c, q);
    cr_assert_eq(PQresultStatus(r), PGRES_FATAL_ERROR, "another tenant's schema must be unreadable");
    cr_assert_str_eq(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42501");
    PQclear(r);
    snprintf(q, sizeof(q), "INSERT INTO t_%s.documents (tenant_id, title) VALUES ('%s', 'x')", ia, b);
    r = PQexec(c, q);
    cr_assert_eq(PQresultStatus(r), PGRES_FATAL_ERROR, "RLS must refuse rows of another tenant");
    PQclear(r);
    snprintf(q, sizeof(q), "INSERT INTO t_%s.documents (title) VALUES ('mine')", ia);
    r = PQexec(c, q);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(c));
    PQclear(r);
    r = PQexec(c, "SELECT count(*) FROM tq.tenants");
    cr_assert_eq(PQresultStatus(r), PGRES_FATAL_ERROR, "tenant roles cannot read the tq schema");
    PQclear(r);
    PQfinish(c);

    /* credentials in the shared store (only ciphertext in PG), the password nowhere else */
    json_t *cred = h_secret(a, "postgres");
    cr_assert_not_null(cred, "no postgres credentials of %s in the store", a);
    const char *pw = json_string_value(json_object_get(cred, "password"));
    cr_assert(pw && strlen(pw) >= 32);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.job_steps WHERE output::text LIKE '%%%s%%'"
                            " OR last_error LIKE '%%%s%%'", pw, pw), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE detail::text LIKE '%%%s%%'", pw), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM pg_authid WHERE rolname = 'tq_t_%s'"
                            " AND rolpassword LIKE 'SCRAM-SHA-256$%%'", ia), 1,
                 "only a SCRAM verifier is stored");
    json_decref(cred);
    free(ia);
    free(ib);
}

Test(e2e, duplicate_submit_creates_nothing_new)
{
    const char *a = h_tenant("dup");
    submit_ok(a, "Dup Co", "Silver", "300000");
    char *out = NULL;
    int rc = h_enqueue(&out, NULL, "submit", "--json", "--tenant-id", a, "--name", "Dup Co", "--tier",
                       "Silver", "--region", "us-east-1", "--budget", "300000", "--owner",
                       "ops@example.com", NULL);
    cr_assert_eq(rc, 0, "same request again is not an error");
    json_error_t je;
    json_t *o = json_loads(out, 0, &je);
    cr_assert_not_null(o, "stdout is JSON: %s", out);
    json_t *req = json_array_get(json_object_get(o, "requests"), 0);
    cr_assert(json_is_true(json_object_get(req, "existed")));
    json_decref(o);
    free(out);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants"), 1);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs"), 1);
    cr_assert_eq(h_redis_long("LLEN tq:{%s}:ready", H.queue), 1, "not dispatched twice");

    /* same id, other details: rejected, still one tenant */
    char *err = NULL;
    rc = h_enqueue(NULL, &err, "submit", "--tenant-id", a, "--name", "Dup Co", "--tier", "Silver",
                   "--region", "us-east-1", "--budget", "310000", "--owner", "ops@example.com", NULL);
    cr_assert_eq(rc, 3);
    cr_assert(strstr(err, "tenant_id"), "names the field: %s", err);
    free(err);
    /* other id, same name: rejected */
    rc = h_enqueue(NULL, &err, "submit", "--tenant-id", h_tenant("dup2"), "--name", "Dup Co", "--tier",
                   "Silver", "--region", "us-east-1", "--budget", "300000", "--owner",
                   "ops@example.com", NULL);
    cr_assert_eq(rc, 3);
    cr_assert(strstr(err, "name"), "%s", err);
    free(err);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants"), 1);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs"), 1);
}

Test(e2e, invalid_request_changes_nothing)
{
    /* 3: a rule broken; 2: a value not of its form (not a whole number) */
    struct {
        const char *flag, *value, *field;
        int exit;
    } cases[] = {
        {"--tier", "Platinum", "tier", 3},       {"--region", "ap-south-1", "region", 3},
        {"--budget", "1600000", "budget", 3},    {"--budget", "-5", "budget", 2},
        {"--owner", "not-an-email", "owner", 3}, {"--tenant-id", "Bad;DROP", "tenant_id", 3},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *args[] = {"--tenant-id", h_tenant("inv"), "--tier", "Gold", "--region",
                              "us-east-1", "--budget", "800000", "--owner", "ops@example.com"};
        for (size_t k = 0; k < 10; k += 2)
            if (strcmp(args[k], cases[i].flag) == 0)
                args[k + 1] = cases[i].value;
        char *out = NULL, *err = NULL;
        int rc = h_enqueue(&out, &err, "submit", "--json", "--name", "Inv", args[0], args[1], args[2],
                           args[3], args[4], args[5], args[6], args[7], args[8], args[9], NULL);
        cr_assert_eq(rc, cases[i].exit, "%s=%s: exit %d", cases[i].flag, cases[i].value, rc);
        cr_assert(strstr(err, cases[i].field), "stderr names %s: %s", cases[i].field, err);
        json_error_t je;
        json_t *o = json_loads(out, 0, &je);
        cr_assert_not_null(o, "--json errors are JSON on stdout: %s", out);
        json_t *e0 = json_array_get(json_object_get(json_object_get(o, "error"), "errors"), 0);
        cr_assert_str_eq(json_string_value(json_object_get(e0, "field")), cases[i].field);
        json_decref(o);
        free(out);
        free(err);
    }
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants"), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs"), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event <> 'pipeline_registered'"), 0);
    cr_assert_eq(h_redis_long("EXISTS tq:{%s}:ready", H.queue), 0);
}

Test(e2e, batch_file_is_all_or_nothing)
{
    char csv[2048];
    snprintf(csv, sizeof(csv),
             "tenant_id,name,tier,region,budget,owner,justification\n"
             "%s,Alpha,Gold,us-east-1,900000,a@example.com,\"RAG for support, phase 1\"\n"
             "%s,Beta,Silver,eu-west-1,250000,b@example.com,\n"
             "%s,Gamma,Bronze,ap-south-1,100000,c@example.com,\n"
             "%s,Delta,Bronze,us-west-2,9999999,d@example.com,\n",
             h_tenant("alpha"), h_tenant("beta"), h_tenant("gamma"), h_tenant("delta"));
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--file", h_write_file("bad.csv", csv), "--batch",
                       "b1", NULL);
    cr_assert_eq(rc, 3);
    cr_assert(strstr(err, "line 4: region"), "bad row reported with its line: %s", err);
    cr_assert(strstr(err, "line 5: budget"), "every bad row is reported: %s", err);
    free(err);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants"), 0, "nothing written");
    cr_assert_eq(h_redis_long("EXISTS tq:{%s}:ready", H.queue), 0, "nothing queued");

    snprintf(csv, sizeof(csv),
             "tenant_id,name,tier,region,budget,owner,justification\n"
             "%s,Alpha,Gold,us-east-1,900000,a@example.com,\"RAG for support, phase 1\"\n"
             "%s,Beta,Silver,eu-west-1,250000,b@example.com,\n"
             "%s,Gamma,Gold,us-west-2,1200000,c@example.com,needs approval\n",
             h_tenant("alpha"), h_tenant("beta"), h_tenant("gamma"));
    rc = h_enqueue(NULL, &err, "submit", "--file", h_write_file("good.csv", csv), "--batch", "b2",
                   NULL);
    cr_assert_eq(rc, 0, "%s", err);
    free(err);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants WHERE batch_id = 'b2'"), 3);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants WHERE status = 'pending_approval'"), 1,
                 "above 10 lakh waits for approval");
    char *j = h_sql("SELECT justification FROM tq.tenants WHERE tenant_id = '%s'", h_tenant("alpha"));
    cr_assert_str_eq(j, "RAG for support, phase 1", "RFC 4180 quoting");
    free(j);
    cr_assert_eq(h_redis_long("LLEN tq:{%s}:ready", H.queue), 2, "only approved requests queued");
}

Test(e2e, status_reports_and_unknown_is_not_found)
{
    const char *a = h_tenant("stat");
    submit_ok(a, "Stat", "Bronze", "50000");
    char *out = NULL;
    int rc = h_enqueue(&out, NULL, "status", "--json", a, NULL);
    cr_assert_eq(rc, 0);
    json_error_t je;
    json_t *o = json_loads(out, 0, &je);
    cr_assert_not_null(o, "%s", out);
    json_t *t = json_array_get(json_object_get(o, "tenants"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(t, "tenant_id")), a);
    cr_assert_str_eq(json_string_value(json_object_get(t, "status")), "queued");
    cr_assert_eq(json_integer_value(json_object_get(t, "steps_total")), shipped_steps());
    json_decref(o);
    free(out);
    rc = h_enqueue(NULL, NULL, "status", h_tenant("nobody"), NULL);
    cr_assert_eq(rc, 4);
    rc = h_enqueue(NULL, NULL, "status", NULL);
    cr_assert_eq(rc, 2, "no selection is a usage error");
}

Test(e2e, concurrent_migrations_are_safe)
{
    /* the database already has the schema; four more at once change nothing */
    pid_t kids[4];
    for (int i = 0; i < 4; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            if (H.roles)   /* migrations are the migration role's job */
                setenv("TQ_DATABASE_URL", H.migrate_dsn, 1);
            execl(TQ_ENQUEUE_BIN, "tq-enqueue", "migrate", (char *)NULL);
            _exit(127);
        }
    }
    for (int i = 0; i < 4; i++) {
        int st;
        waitpid(kids[i], &st, 0);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.schema_migrations"),
                 h_sql_long("SELECT max(version) FROM tq.schema_migrations"));
}

Test(e2e, audit_log_is_append_only)
{
    submit_ok(h_tenant("aud"), "Aud", "Bronze", "50000");
    char *v = h_sql("UPDATE tq.audit_events SET actor = 'mallory'");
    cr_assert_null(v, "UPDATE must be refused");
    v = h_sql("DELETE FROM tq.audit_events");
    cr_assert_null(v, "DELETE must be refused");
    v = h_sql("TRUNCATE tq.audit_events");
    cr_assert_null(v, "TRUNCATE must be refused");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event <> 'pipeline_registered'"), 2);
}

Test(e2e, reconciler_dispatches_jobs_redis_lost)
{
    const char *a = h_tenant("lost");
    submit_ok(a, "Lost", "Bronze", "50000");
    /* Redis forgets the dispatch (restart without persistence, failover) */
    cr_assert_eq(h_redis_long("DEL tq:{%s}:ready", H.queue), 1);
    const char *env[] = {"TQ_LEASE_MS=1500", NULL};
    pid_t w = h_worker_start(env);
    cr_assert(h_wait_sql("active", 30000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", a),
              "the reconciler must dispatch a job PostgreSQL calls runnable");
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.job_steps WHERE status = 'succeeded'"
                            " AND step = 'postgres' AND attempts = 1"), 1);
}

Test(e2e, reaper_returns_a_dead_workers_jobs)
{
    const char *a = h_tenant("orphan");
    submit_ok(a, "Orphan", "Bronze", "50000");
    /* a worker that took the job and died: its id sits in its processing list, no heartbeat */
    char *id = h_redis("RPOP tq:{%s}:ready", H.queue);
    cr_assert_str_neq(id, "");
    cr_assert_eq(h_redis_long("LPUSH tq:{%s}:proc:ghost-1 %s", H.queue, id), 1);
    cr_assert_eq(h_redis_long("SADD tq:{%s}:workers ghost-1", H.queue), 1);
    free(id);
    const char *env[] = {"TQ_LEASE_MS=60000", NULL};   /* long: only the reaper can bring it back */
    pid_t w = h_worker_start(env);
    cr_assert(h_wait_sql("active", 30000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", a));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(h_redis_long("EXISTS tq:{%s}:proc:ghost-1", H.queue), 0);
    cr_assert_eq(h_redis_long("SISMEMBER tq:{%s}:workers ghost-1", H.queue), 0);
}
