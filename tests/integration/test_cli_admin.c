/*
 * tq-enqueue's actions on tenants and jobs through the real binary against
 * real Redis and PostgreSQL: approve, reject, cancel, retry, deprovision,
 * dead, stats. States a worker would produce (running, blocked, failed,
 * dead, ...) are set by SQL; these tests check only the CLI's effects in
 * PostgreSQL and Redis. What the worker then does is test_engine's.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "tq/util.h"

/*
 * A pipeline of our own: these suites test the CLI, and must not depend on
 * what the shipped pipeline needs (services, secrets). test_e2e runs that one.
 */
static void setup(void)
{
    h_setup();
    h_use_pipeline(
             h_write_file("cli-pipeline.json",
                          "{\"name\": \"cli-test\", \"version\": 1, \"steps\": ["
                          "{\"name\": \"one\", \"kind\": \"noop\"},"
                          "{\"name\": \"two\", \"kind\": \"noop\", \"needs\": [\"one\"]}]}"));
    /* who approves in these tests holds the role the policy names (finance) */
    free(h_sql("INSERT INTO tq.approvers (role, identity) SELECT 'finance', i FROM unnest("
               "array['alice@example.com', 'alice', 'bob', 'carol', 'dave', 'x', 'approver-0',"
               " 'approver-1', 'approver-2', 'approver-3', 'approver-4', 'approver-5']) AS i"));
}

TestSuite(cli_admin, .init = setup, .fini = h_teardown, .timeout = 120);

static long submit(const char *id, const char *budget)
{
    char name[80];
    snprintf(name, sizeof(name), "Name of %s", id);
    char *out = NULL, *err = NULL;
    int rc = h_enqueue(&out, &err, "--json", "submit", "--tenant-id", id, "--name", name,
                       "--tier", "Gold", "--region", "us-east-1", "--budget", budget, "--owner",
                       "ops@example.com", NULL);
    cr_assert_eq(rc, 0, "submit %s: %s", id, err);
    json_t *o = h_json(out, "submit");
    long job = (long)json_integer_value(
        json_object_get(json_array_get(json_object_get(o, "requests"), 0), "job_id"));
    json_decref(o);
    free(out);
    free(err);
    return job;
}

/* Run an action with --json; returns its exit code and the parsed stdout. */
static int act(json_t **doc, char **err, const char *cmd, const char *id, const char *a1,
               const char *a2, const char *a3, const char *a4)
{
    char *out = NULL;
    int rc = h_enqueue(&out, err, "--json", cmd, id, a1, a2, a3, a4, NULL);
    if (doc)
        *doc = h_json(out, cmd);
    free(out);
    return rc;
}

static const char *s(const json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "(null)";
}

static char *tenant_status(const char *id)
{
    return h_sql("SELECT status FROM tq.tenants WHERE tenant_id = '%s'", id);
}

static long ready_has(long job)
{
    return h_redis_long("LPOS tq:{%s}:ready %ld", H.queue, job);
}

static void assert_status(const char *id, const char *want)
{
    char *st = tenant_status(id);
    cr_assert_str_eq(st, want, "tenant %s", id);
    free(st);
}

static void assert_job(long job, const char *want)
{
    char *st = h_sql("SELECT status FROM tq.jobs WHERE id = %ld", job);
    cr_assert_str_eq(st, want, "job %ld", job);
    free(st);
}

/* ----------------------------------------------------------- approval */

Test(cli_admin, approve_flow_pushes_the_job_once)
{
    const char *a = h_tenant("big");
    long job = submit(a, "1200000");
    assert_status(a, "pending_approval");
    assert_job(job, "held");
    cr_assert_eq(h_redis_long("LLEN tq:{%s}:ready", H.queue), 0, "held: not dispatched");

    json_t *o;
    int rc = act(&o, NULL, "approve", a, "--by", "alice@example.com", "--note", "CFO ok");
    cr_assert_eq(rc, 0);
    cr_assert_str_eq(s(o, "action"), "approved");
    cr_assert_str_eq(s(o, "from_status"), "pending_approval");
    cr_assert_str_eq(s(o, "status"), "queued");
    cr_assert_str_eq(s(o, "job_status"), "queued");
    cr_assert_eq(json_integer_value(json_object_get(o, "job_id")), job);
    cr_assert(json_is_false(json_object_get(o, "dispatch_deferred")));
    json_decref(o);
    assert_status(a, "queued");
    assert_job(job, "queued");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants WHERE tenant_id = '%s' AND"
                            " approver = 'alice@example.com' AND approved_at IS NOT NULL", a), 1);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id = '%s' AND"
                            " event = 'approved' AND actor = 'alice@example.com' AND"
                            " detail->>'note' = 'CFO ok' AND job_id = %ld", a, job), 1);
    cr_assert_eq(ready_has(job), 0, "pushed to ready");

    /* approving twice is refused, names the status, changes nothing */
    char *err = NULL;
    rc = act(&o, &err, "approve", a, "--by", "bob", NULL, NULL);
    cr_assert_eq(rc, 3);
    cr_assert(strstr(err, "queued"), "names the status: %s", err);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(o, "error"), "exit_code")), 3);
    json_decref(o);
    free(err);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event = 'approved'"
                            " AND tenant_id = '%s'", a), 1);
    cr_assert_eq(h_redis_long("LLEN tq:{%s}:ready", H.queue), 1, "not pushed twice");
    /* a queued (auto-approved) tenant cannot be approved or rejected either */
    const char *b = h_tenant("auto");
    submit(b, "600000");
    cr_assert_eq(act(NULL, NULL, "approve", b, "--by", "bob", NULL, NULL), 3);
    cr_assert_eq(act(NULL, NULL, "reject", b, "--by", "bob", "--reason", "x"), 3);
    cr_assert_eq(act(NULL, NULL, "approve", h_tenant("nobody"), "--by", "bob", NULL, NULL), 4);
}

Test(cli_admin, reject_cancels_the_held_job)
{
    const char *a = h_tenant("rej");
    long job = submit(a, "1300000");
    json_t *o;
    int rc = act(&o, NULL, "reject", a, "--by", "carol", "--reason", "no budget owner");
    cr_assert_eq(rc, 0);
    cr_assert_str_eq(s(o, "action"), "rejected");
    cr_assert_str_eq(s(o, "status"), "rejected");
    json_decref(o);
    assert_status(a, "rejected");
    assert_job(job, "cancelled");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants WHERE tenant_id = '%s' AND"
                            " failure_reason = 'no budget owner' AND approver IS NULL", a), 1);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event = 'rejected'"
                            " AND actor = 'carol' AND detail->>'reason' = 'no budget owner'"), 1);
    cr_assert_eq(h_redis_long("LLEN tq:{%s}:ready", H.queue), 0);
    cr_assert_eq(act(NULL, NULL, "approve", a, "--by", "dave", NULL, NULL), 3,
                 "a rejected tenant cannot be approved");
    cr_assert_eq(act(NULL, NULL, "reject", a, "--by", "dave", "--reason", "again"), 3);
    assert_status(a, "rejected");
}

Test(cli_admin, concurrent_approvals_one_wins)
{
    const char *a = h_tenant("race");
    long job = submit(a, "1400000");
    pid_t kids[6];
    for (int i = 0; i < 6; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            char who[32];
            snprintf(who, sizeof(who), "approver-%d", i);
            execl(TQ_ENQUEUE_BIN, "tq-enqueue", "approve", a, "--by", who, (char *)NULL);
            _exit(127);
        }
    }
    int ok = 0, refused = 0;
    for (int i = 0; i < 6; i++) {
        int st;
        waitpid(kids[i], &st, 0);
        cr_assert(WIFEXITED(st));
        ok += WEXITSTATUS(st) == 0;
        refused += WEXITSTATUS(st) == 3;
    }
    cr_assert_eq(ok, 1, "exactly one approval wins");
    cr_assert_eq(refused, 5);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event = 'approved'"), 1);
    cr_assert_eq(h_redis_long("LLEN tq:{%s}:ready", H.queue), 1);
    cr_assert_eq(ready_has(job), 0);
}

Test(cli_admin, approve_keeps_not_before)
{
    const char *a = h_tenant("nbappr");
    char *out = NULL;
    int rc = h_enqueue(&out, NULL, "--json", "submit", "--tenant-id", a, "--name", "NbA", "--tier",
                       "Gold", "--region", "us-east-1", "--budget", "1200000", "--owner",
                       "o@example.com", "--not-before", "+1h", NULL);
    cr_assert_eq(rc, 0);
    free(out);
    json_t *o;
    cr_assert_eq(act(&o, NULL, "approve", a, "--by", "alice", NULL, NULL), 0);
    long job = (long)json_integer_value(json_object_get(o, "job_id"));
    cr_assert(json_is_integer(json_object_get(o, "scheduled_for_ms")));
    json_decref(o);
    cr_assert_eq(h_redis_long("LLEN tq:{%s}:ready", H.queue), 0, "not before its time");
    cr_assert_eq(h_redis_long("ZCARD tq:{%s}:delayed", H.queue), 1);
    char *score = h_redis("ZSCORE tq:{%s}:delayed %ld", H.queue, job);
    cr_assert_eq(atoll(score), h_sql_long("SELECT (extract(epoch FROM not_before) * 1000)::bigint"
                                          " FROM tq.jobs WHERE id = %ld", job));
    free(score);
}

/* ------------------------------------------------------------- cancel */

Test(cli_admin, cancel_waiting_jobs)
{
    const char *a = h_tenant("cq"), *b = h_tenant("ch");
    long ja = submit(a, "600000");
    long jb = submit(b, "1200000");
    cr_assert_eq(ready_has(ja), 0);
    json_t *o;
    cr_assert_eq(act(&o, NULL, "cancel", a, "--by", "ops", NULL, NULL), 0);
    cr_assert_str_eq(s(o, "action"), "cancelled");
    cr_assert_str_eq(s(o, "status"), "cancelled");
    json_decref(o);
    assert_status(a, "cancelled");
    assert_job(ja, "cancelled");
    cr_assert_eq(h_redis_long("LLEN tq:{%s}:ready", H.queue), 0, "dropped from ready");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id = '%s'"
                            " AND event = 'cancelled' AND actor = 'ops'", a), 1);
    /* held (pending approval) */
    cr_assert_eq(act(NULL, NULL, "cancel", b, NULL, NULL, NULL, NULL), 0);
    assert_status(b, "cancelled");
    assert_job(jb, "cancelled");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id = '%s'"
                            " AND event = 'cancelled' AND actor = 'tq-enqueue'", b), 1);
    /* nothing left to cancel */
    char *err = NULL;
    cr_assert_eq(act(&o, &err, "cancel", a, NULL, NULL, NULL, NULL), 3);
    cr_assert(strstr(err, "nothing to cancel: tenant is cancelled"), "%s", err);
    json_decref(o);
    free(err);
    cr_assert_eq(act(NULL, NULL, "approve", b, "--by", "x", NULL, NULL), 3);
    cr_assert_eq(act(NULL, NULL, "cancel", h_tenant("ghost"), NULL, NULL, NULL, NULL), 4);
}

Test(cli_admin, cancel_running_job_requests_it_once)
{
    const char *a = h_tenant("run");
    long job = submit(a, "600000");
    free(h_sql("UPDATE tq.jobs SET status = 'running', lease_owner = 'w1', lease_epoch = 1,"
               " lease_until = now() + interval '1 minute' WHERE id = %ld", job));
    free(h_sql("UPDATE tq.tenants SET status = 'provisioning' WHERE tenant_id = '%s'", a));
    json_t *o;
    cr_assert_eq(act(&o, NULL, "cancel", a, NULL, NULL, NULL, NULL), 0);
    cr_assert_str_eq(s(o, "action"), "cancel_requested");
    cr_assert_str_eq(s(o, "status"), "provisioning", "the worker finishes the cancel");
    cr_assert(json_is_false(json_object_get(o, "existed")));
    json_decref(o);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs WHERE id = %ld AND status = 'running'"
                            " AND cancel_requested AND lease_owner = 'w1'", job), 1);
    assert_status(a, "provisioning");
    cr_assert_eq(act(&o, NULL, "cancel", a, NULL, NULL, NULL, NULL), 0, "asking again is fine");
    cr_assert(json_is_true(json_object_get(o, "existed")));
    json_decref(o);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event = 'cancel_requested'"
                            " AND job_id = %ld", job), 1);
    /* an active tenant: nothing to cancel */
    free(h_sql("UPDATE tq.jobs SET status = 'succeeded' WHERE id = %ld", job));
    free(h_sql("UPDATE tq.tenants SET status = 'active' WHERE tenant_id = '%s'", a));
    char *err = NULL;
    cr_assert_eq(act(NULL, &err, "cancel", a, NULL, NULL, NULL, NULL), 3);
    cr_assert(strstr(err, "nothing to cancel: tenant is active"), "%s", err);
    free(err);
}

/* -------------------------------------------------------------- retry */

Test(cli_admin, retry_blocked_and_rollback_failed_requeue_the_same_job)
{
    const char *a = h_tenant("blk"), *b = h_tenant("rbf");
    long ja = submit(a, "600000"), jb = submit(b, "700000");
    h_redis_long("DEL tq:{%s}:ready", H.queue);
    free(h_sql("UPDATE tq.jobs SET status = 'blocked', deliveries = 3, finished_at = now()"
               " WHERE id = %ld", ja));
    free(h_sql("UPDATE tq.tenants SET status = 'blocked', failure_reason = 'compliance: tags'"
               " WHERE tenant_id = '%s'", a));
    free(h_sql("UPDATE tq.jobs SET status = 'rollback_failed', phase = 'rollback' WHERE id = %ld",
               jb));
    free(h_sql("UPDATE tq.tenants SET status = 'rollback_failed', failure_reason = 'undo s3'"
               " WHERE tenant_id = '%s'", b));
    json_t *o;
    cr_assert_eq(act(&o, NULL, "retry", a, "--by", "ops", NULL, NULL), 0);
    cr_assert_str_eq(s(o, "action"), "retry_requested");
    cr_assert_str_eq(s(o, "from_status"), "blocked");
    cr_assert_eq(json_integer_value(json_object_get(o, "job_id")), ja, "same job");
    json_decref(o);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs WHERE id = %ld AND status = 'queued'"
                            " AND phase = 'forward' AND deliveries = 0 AND finished_at IS NULL",
                            ja), 1);
    assert_status(a, "queued");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants WHERE tenant_id = '%s'"
                            " AND failure_reason IS NULL", a), 1);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event = 'retry_requested'"
                            " AND detail->>'previous_reason' = 'compliance: tags'"), 1);
    cr_assert_eq(ready_has(ja), 0);

    cr_assert_eq(act(&o, NULL, "retry", b, NULL, NULL, NULL, NULL), 0);
    cr_assert_str_eq(s(o, "status"), "rolling_back");
    json_decref(o);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs WHERE id = %ld AND status = 'queued'"
                            " AND phase = 'rollback'", jb), 1, "resumes the undo");
    assert_status(b, "rolling_back");
    cr_assert_neq(ready_has(jb), -1);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs"), 2, "no new job");
    /* retrying again: not blocked any more */
    char *err = NULL;
    cr_assert_eq(act(NULL, &err, "retry", a, NULL, NULL, NULL, NULL), 3);
    cr_assert(strstr(err, "tenant is queued"), "%s", err);
    free(err);
}

Test(cli_admin, retry_failed_makes_a_new_job_on_the_current_pipeline)
{
    const char *a = h_tenant("fail");
    long job = submit(a, "600000");
    h_redis_long("DEL tq:{%s}:ready", H.queue);
    free(h_sql("UPDATE tq.jobs SET status = 'failed' WHERE id = %ld", job));
    free(h_sql("UPDATE tq.tenants SET status = 'failed', failure_reason = 'step pg: boom'"
               " WHERE tenant_id = '%s'", a));
    /* a broken pipeline cannot even be registered: the default stays, nothing changes */
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "pipeline", "register",
                           h_write_file("bad.json", "{\"name\": \"x\", \"steps\": 7}"),
                           "--default", NULL), 2);
    cr_assert(strstr(err, "nothing was registered"), "%s", err);
    free(err);
    assert_status(a, "failed");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs"), 1);

    /* another pipeline file than at submit: the new job runs the new one */
    const char *pl = h_write_file(
        "p2.json", "{\"name\": \"p2\", \"version\": 2, \"steps\": [{\"name\": \"a\", \"kind\":"
                   " \"noop\"}, {\"name\": \"b\", \"kind\": \"noop\", \"needs\": [\"a\"]}]}");
    h_use_pipeline(pl);
    json_t *o;
    cr_assert_eq(act(&o, NULL, "retry", a, NULL, NULL, NULL, NULL), 0);
    long nj = (long)json_integer_value(json_object_get(o, "job_id"));
    cr_assert_str_eq(s(o, "status"), "queued");
    json_decref(o);
    cr_assert_neq(nj, job);
    char key[128];
    snprintf(key, sizeof(key), "%s:retry:1", a);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs j JOIN tq.pipelines p ON"
                            " p.hash = j.pipeline_hash WHERE j.id = %ld AND j.kind = 'provision'"
                            " AND j.status = 'queued' AND j.idempotency_key = '%s'"
                            " AND p.name = 'p2'", nj, key), 1);
    assert_job(job, "failed");
    assert_status(a, "queued");
    cr_assert_eq(ready_has(nj), 0);
    /* fail again, retry again: the next key */
    free(h_sql("UPDATE tq.jobs SET status = 'failed' WHERE id = %ld", nj));
    free(h_sql("UPDATE tq.tenants SET status = 'failed' WHERE tenant_id = '%s'", a));
    cr_assert_eq(act(NULL, NULL, "retry", a, NULL, NULL, NULL, NULL), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs WHERE idempotency_key = '%s:retry:2'",
                            a), 1);
    /* other statuses */
    cr_assert_eq(act(NULL, NULL, "retry", a, NULL, NULL, NULL, NULL), 3);
    cr_assert_eq(act(NULL, NULL, "retry", h_tenant("ghost"), NULL, NULL, NULL, NULL), 4);
}

/* -------------------------------------------------------- deprovision */

Test(cli_admin, deprovision_is_idempotent_and_uses_the_provision_pipeline)
{
    const char *a = h_tenant("dep");
    long job = submit(a, "600000");
    h_redis_long("DEL tq:{%s}:ready", H.queue);
    char *err = NULL;
    cr_assert_eq(act(NULL, &err, "deprovision", a, NULL, NULL, NULL, NULL), 3,
                 "a queued tenant is not deprovisioned");
    cr_assert(strstr(err, "tenant is queued"), "%s", err);
    free(err);
    free(h_sql("UPDATE tq.jobs SET status = 'succeeded' WHERE id = %ld", job));
    free(h_sql("UPDATE tq.tenants SET status = 'active' WHERE tenant_id = '%s'", a));
    /* the pipeline file changed since: the undo must match what was created */
    h_use_pipeline(h_write_file("other.json", "{\"name\": \"other\", \"steps\": "
                                                       "[{\"name\": \"n\", \"kind\": \"noop\"}]}"));
    json_t *o;
    cr_assert_eq(act(&o, NULL, "deprovision", a, "--by", "ops", NULL, NULL), 0);
    long dj = (long)json_integer_value(json_object_get(o, "job_id"));
    cr_assert_str_eq(s(o, "action"), "deprovision_requested");
    cr_assert_str_eq(s(o, "status"), "deprovisioning");
    cr_assert(json_is_false(json_object_get(o, "existed")));
    json_decref(o);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs d JOIN tq.jobs p ON p.id = %ld"
                            " WHERE d.id = %ld AND d.kind = 'deprovision' AND d.status = 'queued'"
                            " AND d.pipeline_hash = p.pipeline_hash AND"
                            " d.idempotency_key = 'deprovision:%s:%ld'", job, dj, a, job), 1);
    assert_status(a, "deprovisioning");
    cr_assert_eq(ready_has(dj), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event ="
                            " 'deprovision_requested' AND detail->>'from' = 'active'"), 1);
    /* again: the same job, exit 0 */
    cr_assert_eq(act(&o, NULL, "deprovision", a, NULL, NULL, NULL, NULL), 0);
    cr_assert(json_is_true(json_object_get(o, "existed")));
    cr_assert_eq(json_integer_value(json_object_get(o, "job_id")), dj);
    json_decref(o);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs WHERE kind = 'deprovision'"), 1);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event ="
                            " 'deprovision_requested'"), 1);
    /* cancelling the queued deprovision leaves the tenant active again */
    cr_assert_eq(act(&o, NULL, "cancel", a, NULL, NULL, NULL, NULL), 0);
    cr_assert_str_eq(s(o, "status"), "active");
    json_decref(o);
    assert_status(a, "active");
    assert_job(dj, "cancelled");
    cr_assert_eq(act(NULL, NULL, "deprovision", h_tenant("ghost"), NULL, NULL, NULL, NULL), 4);
}

/* --------------------------------------------------------------- dead */

Test(cli_admin, dead_list_and_requeue)
{
    const char *a = h_tenant("poison"), *b = h_tenant("poison2");
    long ja = submit(a, "600000"), jb = submit(b, "600000");
    h_redis_long("DEL tq:{%s}:ready", H.queue);
    free(h_sql("UPDATE tq.jobs SET status = 'dead', dead_reason = 'delivered 5 times without"
               " progress', deliveries = 5 WHERE id IN (%ld, %ld)", ja, jb));
    free(h_sql("UPDATE tq.tenants SET status = 'provisioning', failure_reason = 'dead-lettered:"
               " x' WHERE tenant_id IN ('%s', '%s')", a, b));
    h_redis_long("RPUSH tq:{%s}:dead %ld %ld", H.queue, ja, jb);

    char *out = NULL;
    cr_assert_eq(h_enqueue(&out, NULL, "dead", "--json", NULL), 0);
    json_t *o = h_json(out, "dead --json");
    json_t *list = json_object_get(o, "dead");
    cr_assert_eq(json_array_size(list), 2);
    json_t *d0 = json_array_get(list, 0);
    cr_assert_eq(json_integer_value(json_object_get(d0, "job_id")), ja);
    cr_assert_str_eq(s(d0, "tenant_id"), a);
    cr_assert_eq(json_integer_value(json_object_get(d0, "deliveries")), 5);
    cr_assert(strstr(s(d0, "dead_reason"), "delivered 5 times"));
    cr_assert(json_is_string(json_object_get(d0, "updated_at")));
    json_decref(o);
    free(out);
    cr_assert_eq(h_enqueue(&out, NULL, "dead", NULL), 0);
    cr_assert(strstr(out, a) && strstr(out, "delivered 5 times"), "%s", out);
    free(out);

    char jid[32];
    snprintf(jid, sizeof(jid), "%ld", ja);
    cr_assert_eq(h_enqueue(&out, NULL, "--json", "dead", "--requeue", jid, "--by", "ops", NULL), 0);
    o = h_json(out, "requeue");
    cr_assert_eq(json_array_size(json_object_get(o, "requeued")), 1);
    cr_assert(json_is_false(json_object_get(o, "dispatch_deferred")));
    json_decref(o);
    free(out);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs WHERE id = %ld AND status = 'queued'"
                            " AND deliveries = 0 AND dead_reason IS NULL", ja), 1);
    assert_status(a, "queued");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants WHERE tenant_id = '%s'"
                            " AND failure_reason IS NULL", a), 1);
    cr_assert_eq(h_redis_long("LPOS tq:{%s}:dead %ld", H.queue, ja), -1, "left the dead list");
    cr_assert_eq(ready_has(ja), 0, "pushed to ready");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event = 'requeued'"
                            " AND job_id = %ld AND actor = 'ops'", ja), 1);
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "dead", "--requeue", jid, NULL), 3, "not dead any more");
    cr_assert(strstr(err, "not dead"), "%s", err);
    free(err);
    /* by tenant id */
    cr_assert_eq(h_enqueue(NULL, NULL, "dead", "--requeue", b, NULL), 0);
    assert_job(jb, "queued");
    cr_assert_eq(h_redis_long("LLEN tq:{%s}:dead", H.queue), 0);
    cr_assert_eq(h_enqueue(NULL, NULL, "dead", "--requeue", b, NULL), 3, "no dead job left");
    cr_assert_eq(h_enqueue(NULL, NULL, "dead", "--requeue", "999999999", NULL), 4);
    cr_assert_eq(h_enqueue(NULL, NULL, "dead", "--requeue", h_tenant("ghost"), NULL), 4);
    cr_assert_eq(h_enqueue(NULL, NULL, "dead", "--requeue", "99999999999999999999999", NULL), 4);
    cr_assert_eq(h_enqueue(&out, NULL, "dead", NULL), 0);
    cr_assert(strstr(out, "no dead jobs"), "%s", out);
    free(out);
}

/* -------------------------------------------------------------- stats */

Test(cli_admin, stats_reports_queues_workers_and_tenants)
{
    const char *a = h_tenant("sa"), *b = h_tenant("sb");
    long ja = submit(a, "600000");
    submit(b, "1200000");   /* pending_approval */
    free(h_sql("UPDATE tq.jobs SET status = 'running' WHERE id = %ld", ja));
    h_redis_long("LPUSH tq:{%s}:ready 9001 9002", H.queue);   /* plus ja's own id: 3 */
    h_redis_long("ZADD tq:{%s}:delayed 1 9003 99999999999999 9004", H.queue);
    h_redis_long("RPUSH tq:{%s}:dead 9005", H.queue);
    h_redis_long("SADD tq:{%s}:workers w-live w-gone", H.queue);
    char now[32];
    snprintf(now, sizeof(now), "%llu", (unsigned long long)(tq_now_ms() - 1500));
    h_redis_long("SET tq:{%s}:hb:w-live %s PX 20000", H.queue, now);
    h_redis_long("LPUSH tq:{%s}:proc:w-live 9006 9007", H.queue);
    h_redis_long("LPUSH tq:{%s}:proc:w-gone 9008", H.queue);

    char *out = NULL;
    cr_assert_eq(h_enqueue(&out, NULL, "stats", "--json", NULL), 0);
    json_t *o = h_json(out, "stats --json");
    cr_assert_eq(json_integer_value(json_object_get(o, "ready")), 3);
    cr_assert_eq(json_integer_value(json_object_get(o, "delayed")), 2);
    cr_assert_eq(json_integer_value(json_object_get(o, "delayed_due")), 1);
    cr_assert_eq(json_integer_value(json_object_get(o, "processing")), 3);
    cr_assert_eq(json_integer_value(json_object_get(o, "dead")), 1);
    cr_assert_eq(json_integer_value(json_object_get(o, "jobs_running")), 1);
    cr_assert_eq(json_integer_value(json_object_get(o, "workers_live")), 1);
    cr_assert_str_eq(s(o, "queue"), H.queue);
    json_t *ts = json_object_get(o, "tenants_by_status");
    cr_assert_eq(json_integer_value(json_object_get(ts, "queued")), 1);
    cr_assert_eq(json_integer_value(json_object_get(ts, "pending_approval")), 1);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(o, "jobs_by_status"), "held")),
                 1);
    json_t *ws = json_object_get(o, "workers");
    cr_assert_eq(json_array_size(ws), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *w = json_array_get(ws, i);
        if (strcmp(s(w, "id"), "w-live") == 0) {
            cr_assert(json_is_true(json_object_get(w, "live")));
            long long age = json_integer_value(json_object_get(w, "heartbeat_age_ms"));
            cr_assert(age >= 1500 && age < 60000, "age %lld", age);
            cr_assert_gt(json_integer_value(json_object_get(w, "ttl_ms")), 0);
            cr_assert_eq(json_integer_value(json_object_get(w, "processing")), 2);
        } else {
            cr_assert_str_eq(s(w, "id"), "w-gone");
            cr_assert(json_is_false(json_object_get(w, "live")));
            cr_assert(json_is_null(json_object_get(w, "heartbeat_age_ms")));
        }
    }
    json_decref(o);
    free(out);
    cr_assert_eq(h_enqueue(&out, NULL, "stats", NULL), 0);
    cr_assert(strstr(out, "ready 3") && strstr(out, "w-live") && strstr(out, "1 live of 2"), "%s",
              out);
    free(out);
    h_setenv("TQ_REDIS_URL", "redis://127.0.0.1:1/0");
    cr_assert_eq(h_enqueue(&out, NULL, "--json", "stats", NULL), 1, "Redis away: exit 1");
    json_decref(h_json(out, "stats error"));
    free(out);
    h_setenv("TQ_REDIS_URL", H.redis_url);
}

Test(cli_admin, actions_commit_when_redis_is_away)
{
    const char *a = h_tenant("away");
    long job = submit(a, "1200000");
    h_setenv("TQ_REDIS_URL", "redis://127.0.0.1:1/0");
    json_t *o;
    char *err = NULL;
    cr_assert_eq(act(&o, &err, "approve", a, "--by", "alice", NULL, NULL), 0);
    h_setenv("TQ_REDIS_URL", H.redis_url);
    cr_assert(json_is_true(json_object_get(o, "dispatch_deferred")));
    cr_assert(strstr(err, "deferred"), "%s", err);
    json_decref(o);
    free(err);
    assert_status(a, "queued");
    assert_job(job, "queued");
    cr_assert_eq(h_redis_long("LLEN tq:{%s}:ready", H.queue), 0, "the reconciler's job now");
}

Test(cli_admin, cancel_of_a_revalidation_keeps_the_tenant)
{
    const char *a = h_tenant("reval");
    long job = submit(a, "600000");
    free(h_sql("UPDATE tq.jobs SET status = 'succeeded' WHERE id = %ld", job));
    free(h_sql("UPDATE tq.tenants SET status = 'active' WHERE tenant_id = '%s'", a));
    char *rv = h_sql("INSERT INTO tq.jobs (tenant_id, kind, pipeline_hash, idempotency_key, status)"
                     " SELECT tenant_id, 'revalidate', pipeline_hash, 'reval:' || id, 'queued'"
                     " FROM tq.jobs WHERE id = %ld RETURNING id", job);
    cr_assert(rv && *rv, "revalidate jobs exist in this schema");
    long rj = atol(rv);
    free(rv);
    json_t *o;
    cr_assert_eq(act(&o, NULL, "cancel", a, NULL, NULL, NULL, NULL), 0);
    cr_assert_str_eq(s(o, "action"), "cancelled");
    cr_assert_str_eq(s(o, "status"), "active");
    json_decref(o);
    assert_job(rj, "cancelled");
    assert_status(a, "active");
}

Test(cli_admin, retry_of_a_failed_deprovision_resumes_it)
{
    const char *a = h_tenant("redep");
    long job = submit(a, "600000");
    free(h_sql("UPDATE tq.jobs SET status = 'succeeded' WHERE id = %ld", job));
    free(h_sql("UPDATE tq.tenants SET status = 'active' WHERE tenant_id = '%s'", a));
    json_t *o;
    cr_assert_eq(act(&o, NULL, "deprovision", a, NULL, NULL, NULL, NULL), 0);
    long dj = (long)json_integer_value(json_object_get(o, "job_id"));
    json_decref(o);
    h_redis_long("DEL tq:{%s}:ready", H.queue);
    free(h_sql("UPDATE tq.jobs SET status = 'rollback_failed', phase = 'rollback' WHERE id = %ld",
               dj));
    free(h_sql("UPDATE tq.tenants SET status = 'rollback_failed' WHERE tenant_id = '%s'", a));
    cr_assert_eq(act(&o, NULL, "retry", a, NULL, NULL, NULL, NULL), 0);
    cr_assert_eq(json_integer_value(json_object_get(o, "job_id")), dj, "the same deprovision job");
    cr_assert_str_eq(s(o, "status"), "deprovisioning");
    json_decref(o);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs WHERE id = %ld AND status = 'queued'"
                            " AND kind = 'deprovision'", dj), 1);
    cr_assert_eq(ready_has(dj), 0);
}
