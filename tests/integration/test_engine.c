/*
 * The step engine against the real services: pipelines as DAGs with
 * parallel steps, retries, validation classes, rollback (with real
 * PostgreSQL resources to leave behind or not), undo failures, redelivery,
 * deprovision and cancel. Test pipelines use the synthetic "sleep" kind
 * (fail_attempts, fail_if_exists, undo_fail_if_exists) next to pg_tenant.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "netutil.h"
#include "tq/pg.h"
#include "tq/util.h"

TestSuite(engine, .init = h_setup, .fini = h_teardown, .timeout = 180);

static const char *pipeline(const char *name, const char *steps_json)
{
    static char text[8192];
    snprintf(text, sizeof(text), "{\"name\":\"%s\",\"steps\":[%s]}", name, steps_json);
    const char *path = h_write_file(name, text);
    h_use_pipeline(path);
    return path;
}

static void submit(const char *id)
{
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--tenant-id", id, "--name", id, "--tier", "Silver",
                       "--region", "eu-west-1", "--budget", "300000", "--owner", "o@example.com",
                       NULL);
    cr_assert_eq(rc, 0, "submit: %s", err);
    free(err);
}

static bool wait_status(const char *id, const char *status, int ms)
{
    return h_wait_sql(status, ms, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", id);
}

static long schema_exists(const char *id)
{
    char ident[64];
    snprintf(ident, sizeof(ident), "%s", id);
    for (char *p = ident; *p; p++)
        if (*p == '-')
            *p = '_';
    return h_sql_long("SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 't_%s')"
                      " + (SELECT count(*) FROM pg_roles WHERE rolname = 'tq_t_%s')",
                      ident, ident);
}

static long step_count(const char *id, const char *step, const char *phase, const char *status)
{
    return h_sql_long("SELECT count(*) FROM tq.step_attempts a JOIN tq.jobs j ON j.id = a.job_id"
                      " WHERE j.tenant_id = '%s' AND a.step = '%s' AND a.phase = '%s'"
                      " AND a.status = '%s'", id, step, phase, status);
}

static char *step_status(const char *id, const char *step)
{
    return h_sql("SELECT s.status FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id"
                 " WHERE j.tenant_id = '%s' AND s.step = '%s' ORDER BY j.id DESC LIMIT 1", id, step);
}

#define PG_STEP "{\"name\":\"postgres\",\"kind\":\"pg_tenant\"}"

Test(engine, independent_steps_overlap_in_time)
{
    pipeline("par.json",
             "{\"name\":\"a\",\"kind\":\"sleep\",\"params\":{\"ms\":800}},"
             "{\"name\":\"b\",\"kind\":\"sleep\",\"params\":{\"ms\":800}},"
             "{\"name\":\"c\",\"kind\":\"sleep\",\"params\":{\"ms\":800}},"
             "{\"name\":\"d\",\"kind\":\"noop\",\"needs\":[\"a\",\"b\",\"c\"]}");
    const char *t = h_tenant("par");
    submit(t);
    pid_t w = h_worker_start(NULL);
    cr_assert(wait_status(t, "active", 30000));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    /* the last of a, b, c started before the first of them finished */
    cr_assert_eq(h_sql_long("SELECT (max(started_at) < min(finished_at))::int FROM tq.job_steps"
                            " WHERE step IN ('a','b','c')"), 1, "a, b and c must overlap");
    cr_assert_eq(h_sql_long("SELECT ((SELECT started_at FROM tq.job_steps WHERE step = 'd') >="
                            " (SELECT max(finished_at) FROM tq.job_steps WHERE step IN ('a','b','c')))::int"),
                 1, "d waits for all it needs");
    long total_ms = h_sql_long("SELECT extract(epoch FROM max(finished_at) - min(started_at)) * 1000"
                               " FROM tq.job_steps");
    cr_assert_lt(total_ms, 2000, "three 800 ms steps took %ld ms: not parallel", total_ms);
}

Test(engine, retry_then_success)
{
    pipeline("retry.json",
             "{\"name\":\"flaky\",\"kind\":\"sleep\",\"params\":{\"ms\":10,\"fail_attempts\":2},"
             " \"retry\":{\"max_attempts\":3,\"base_ms\":50,\"max_ms\":200}}");
    const char *t = h_tenant("retry");
    submit(t);
    pid_t w = h_worker_start(NULL);
    cr_assert(wait_status(t, "active", 30000));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(step_count(t, "flaky", "run", "failed"), 2);
    cr_assert_eq(step_count(t, "flaky", "run", "succeeded"), 1);
    cr_assert_eq(h_sql_long("SELECT attempts FROM tq.job_steps WHERE step = 'flaky'"), 3);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event = 'step_failed'"), 2,
                 "every attempt is in the audit log");
}

/*
 * Issue 17: attempts made while a dependency was unreachable (waited out as
 * an outage) do not count against the step's retry policy. Three
 * unreachable attempts, then one real failure: with max_attempts 2 the
 * policy still allows the retry that succeeds.
 */
Test(engine, attempts_during_an_outage_do_not_count_against_the_retry_policy)
{
    pipeline("outage_attempts.json",
             "{\"name\":\"flaky\",\"kind\":\"sleep\","
             " \"params\":{\"ms\":10,\"unreachable_attempts\":3,\"fail_attempts\":4},"
             " \"retry\":{\"max_attempts\":2,\"base_ms\":20,\"max_ms\":50}}");
    const char *t = h_tenant("outatt");
    submit(t);
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("1", 30000, "SELECT (status IN ('active', 'failed'))::int"
                         " FROM tq.tenants WHERE tenant_id = '%s'", t));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    char *st = h_sql("SELECT status FROM tq.tenants WHERE tenant_id = '%s'", t);
    cr_assert_str_eq(st, "active", "the outage's attempts were counted against max_attempts 2");
    free(st);
    cr_assert_eq(step_count(t, "flaky", "run", "failed"), 4);
    cr_assert_eq(step_count(t, "flaky", "run", "succeeded"), 1);
    cr_assert_eq(h_sql_long("SELECT attempts FROM tq.job_steps WHERE step = 'flaky'"), 5,
                 "every attempt is still recorded");
}

Test(engine, retries_exhausted_roll_back_every_resource)
{
    pipeline("rb.json", PG_STEP ","
             "{\"name\":\"check\",\"kind\":\"sleep\",\"needs\":[\"postgres\"],\"class\":\"integration\","
             " \"params\":{\"ms\":10,\"fail_attempts\":99,\"error\":\"vector insert refused\"},"
             " \"retry\":{\"max_attempts\":2,\"base_ms\":20,\"max_ms\":50}}");
    const char *t = h_tenant("rb");
    submit(t);
    pid_t w = h_worker_start(NULL);
    cr_assert(wait_status(t, "failed", 30000));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(schema_exists(t), 0, "rollback must drop the schema and role");
    char *reason = h_sql("SELECT failure_reason FROM tq.tenants WHERE tenant_id = '%s'", t);
    cr_assert(strstr(reason, "check") && strstr(reason, "vector insert refused"), "%s", reason);
    free(reason);
    char *st = step_status(t, "postgres");
    cr_assert_str_eq(st, "compensated");
    free(st);
    cr_assert_eq(step_count(t, "check", "run", "failed"), 2, "integration: retried first");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event = 'rollback_started'"), 1);
}

Test(engine, failing_undo_then_retry_finishes_the_rollback)
{
    char flag[300];
    snprintf(flag, sizeof(flag), "%s/undo-broken", H.tmpdir);
    h_write_file("undo-broken", "x");
    char steps[2048];
    snprintf(steps, sizeof(steps), PG_STEP ","
             "{\"name\":\"gate\",\"kind\":\"sleep\",\"needs\":[\"postgres\"],"
             " \"params\":{\"ms\":10,\"undo_fail_if_exists\":\"%s\",\"undo_error\":\"bucket busy\"},"
             " \"retry\":{\"max_attempts\":2,\"base_ms\":20,\"max_ms\":50}},"
             "{\"name\":\"check\",\"kind\":\"sleep\",\"needs\":[\"gate\"],\"class\":\"security\","
             " \"params\":{\"ms\":10,\"fail_attempts\":99}}", flag);
    pipeline("undo.json", steps);
    const char *t = h_tenant("undo");
    submit(t);
    pid_t w = h_worker_start(NULL);
    cr_assert(wait_status(t, "rollback_failed", 30000));
    cr_assert_eq(schema_exists(t), 2, "stopped before undoing what gate needs");
    char *st = step_status(t, "gate");
    cr_assert_str_eq(st, "compensation_failed");
    free(st);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event = 'rollback_failed'"), 1,
                 "the alert is audited");
    /* the operator fixes the cause and resumes */
    unlink(flag);
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "retry", t, NULL), 0, "retry: %s", err);
    free(err);
    cr_assert(wait_status(t, "failed", 30000));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(schema_exists(t), 0, "resumed rollback removes the rest");
    st = step_status(t, "gate");
    cr_assert_str_eq(st, "compensated");
    free(st);
}

Test(engine, security_class_rolls_back_without_retrying)
{
    pipeline("sec.json", PG_STEP ","
             "{\"name\":\"isolation\",\"kind\":\"sleep\",\"needs\":[\"postgres\"],\"class\":\"security\","
             " \"params\":{\"ms\":10,\"fail_attempts\":1},\"retry\":{\"max_attempts\":5,\"base_ms\":10,\"max_ms\":20}}");
    const char *t = h_tenant("sec");
    submit(t);
    pid_t w = h_worker_start(NULL);
    cr_assert(wait_status(t, "failed", 30000));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(step_count(t, "isolation", "run", "failed"), 1, "no second chance");
    cr_assert_eq(schema_exists(t), 0);
}

Test(engine, performance_class_activates_with_a_warning)
{
    pipeline("perf.json", PG_STEP ","
             "{\"name\":\"latency\",\"kind\":\"sleep\",\"needs\":[\"postgres\"],\"class\":\"performance\","
             " \"params\":{\"ms\":10,\"fail_attempts\":99,\"error\":\"p95 2300 ms over SLA 1000 ms\"},"
             " \"retry\":{\"max_attempts\":1}}");
    const char *t = h_tenant("perf");
    submit(t);
    pid_t w = h_worker_start(NULL);
    cr_assert(wait_status(t, "active", 30000));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(schema_exists(t), 2, "resources kept");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event = 'performance_warning'"
                            " AND detail->>'reason' LIKE '%%p95%%'"), 1);
    char *st = step_status(t, "latency");
    cr_assert_str_eq(st, "failed");
    free(st);
}

Test(engine, compliance_class_blocks_then_retry_activates)
{
    char flag[300];
    snprintf(flag, sizeof(flag), "%s/tags-missing", H.tmpdir);
    h_write_file("tags-missing", "x");
    char steps[1024];
    snprintf(steps, sizeof(steps), PG_STEP ","
             "{\"name\":\"tags\",\"kind\":\"sleep\",\"needs\":[\"postgres\"],\"class\":\"compliance\","
             " \"params\":{\"ms\":10,\"fail_if_exists\":\"%s\",\"error\":\"CostCenter tag missing\"},"
             " \"retry\":{\"max_attempts\":1}}", flag);
    pipeline("comp.json", steps);
    const char *t = h_tenant("comp");
    submit(t);
    pid_t w = h_worker_start(NULL);
    cr_assert(wait_status(t, "blocked", 30000));
    cr_assert_eq(schema_exists(t), 2, "blocked keeps the resources");
    unlink(flag);
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "retry", t, NULL), 0, "retry: %s", err);
    free(err);
    cr_assert(wait_status(t, "active", 30000));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(step_count(t, "postgres", "run", "succeeded"), 1, "retry re-runs only the check");
    cr_assert_eq(step_count(t, "tags", "run", "succeeded"), 1);
}

Test(engine, redelivered_job_skips_succeeded_steps)
{
    pipeline("redeliver.json",
             "{\"name\":\"one\",\"kind\":\"sleep\",\"params\":{\"ms\":10}},"
             "{\"name\":\"two\",\"kind\":\"sleep\",\"needs\":[\"one\"],\"params\":{\"ms\":10}}");
    const char *t = h_tenant("redeliver");
    submit(t);
    /* an earlier delivery (epoch 1) recorded "one", then its worker died */
    char *v = h_sql("INSERT INTO tq.job_steps (job_id, step, status, attempts)"
                    " SELECT id, 'one', 'succeeded', 1 FROM tq.jobs WHERE tenant_id = '%s'", t);
    free(v);
    v = h_sql("UPDATE tq.jobs SET status = 'running', lease_owner = 'gone-1-x', lease_epoch = 1,"
              " lease_until = now() - interval '1 second', attempt = 1, deliveries = 1"
              " WHERE tenant_id = '%s'", t);
    free(v);
    pid_t w = h_worker_start(NULL);
    cr_assert(wait_status(t, "active", 30000));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(step_count(t, "one", "run", "succeeded"), 0, "a recorded success never runs again");
    cr_assert_eq(step_count(t, "two", "run", "succeeded"), 1);
}

Test(engine, deprovision_removes_everything)
{
    pipeline("dep.json", PG_STEP ","
             "{\"name\":\"after\",\"kind\":\"noop\",\"needs\":[\"postgres\"]}");
    const char *t = h_tenant("dep");
    submit(t);
    pid_t w = h_worker_start(NULL);
    cr_assert(wait_status(t, "active", 30000));
    cr_assert_eq(schema_exists(t), 2);
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "deprovision", t, NULL), 0, "deprovision: %s", err);
    free(err);
    cr_assert(wait_status(t, "deprovisioned", 30000));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(schema_exists(t), 0, "schema and role removed");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id"
                            " WHERE j.kind = 'deprovision' AND s.status = 'compensated'"), 2);
}

Test(engine, cancel_of_a_queued_job_means_it_never_starts)
{
    pipeline("cq.json", PG_STEP);
    const char *t = h_tenant("cq");
    submit(t);
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "cancel", t, NULL), 0, "cancel: %s", err);
    free(err);
    pid_t w = h_worker_start(NULL);
    tq_sleep_ms(1500);
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    char *st = h_sql("SELECT status FROM tq.tenants WHERE tenant_id = '%s'", t);
    cr_assert_str_eq(st, "cancelled");
    free(st);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts"), 0);
    cr_assert_eq(schema_exists(t), 0);
}

Test(engine, cancel_of_a_running_job_stops_and_rolls_back)
{
    pipeline("cr.json", PG_STEP ","
             "{\"name\":\"slow\",\"kind\":\"sleep\",\"needs\":[\"postgres\"],\"params\":{\"ms\":1500}},"
             "{\"name\":\"never\",\"kind\":\"noop\",\"needs\":[\"slow\"]}");
    const char *t = h_tenant("cr");
    submit(t);
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("running", 30000, "SELECT s.status FROM tq.job_steps s JOIN tq.jobs j"
                         " ON j.id = s.job_id WHERE j.tenant_id = '%s' AND s.step = 'slow'", t));
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "cancel", t, NULL), 0, "cancel: %s", err);
    free(err);
    cr_assert(wait_status(t, "cancelled", 30000));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(schema_exists(t), 0, "rolled back");
    cr_assert_eq(step_count(t, "never", "run", "succeeded"), 0, "no step after the boundary");
}

Test(engine, step_timeout_counts_as_a_failed_attempt)
{
    pipeline("to.json",
             "{\"name\":\"hang\",\"kind\":\"sleep\",\"params\":{\"ms\":60000},\"timeout_ms\":300,"
             " \"retry\":{\"max_attempts\":2,\"base_ms\":10,\"max_ms\":20}}");
    const char *t = h_tenant("to");
    submit(t);
    pid_t w = h_worker_start(NULL);
    cr_assert(wait_status(t, "failed", 30000));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(step_count(t, "hang", "run", "failed"), 2);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE error LIKE 'timed out%%'"), 2);
}

Test(engine, disabled_steps_are_skipped_and_count_as_done)
{
    unsetenv("TQ_TEST_NOT_SET");
    pipeline("en.json",
             "{\"name\":\"bucket\",\"kind\":\"sleep\",\"enabled\":\"${env.TQ_TEST_NOT_SET}\","
             " \"params\":{\"ms\":10}},"
             "{\"name\":\"after\",\"kind\":\"noop\",\"needs\":[\"bucket\"]}");
    const char *t = h_tenant("en");
    submit(t);
    pid_t w = h_worker_start(NULL);
    cr_assert(wait_status(t, "active", 30000));
    char *st = step_status(t, "bucket");
    cr_assert_str_eq(st, "skipped");
    free(st);
    cr_assert_eq(step_count(t, "bucket", "run", "succeeded") + step_count(t, "bucket", "run", "failed"), 0);
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "deprovision", t, NULL), 0, "%s", err);
    free(err);
    cr_assert(wait_status(t, "deprovisioned", 30000));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(step_count(t, "bucket", "undo", "succeeded") + step_count(t, "bucket", "undo", "failed"), 0,
                 "a disabled step has nothing to undo");
}

Test(engine, revalidation_reports_drift_without_touching_the_tenant)
{
    char flag[300];
    snprintf(flag, sizeof(flag), "%s/drift", H.tmpdir);
    char steps[1024];
    snprintf(steps, sizeof(steps), PG_STEP ","
             "{\"name\":\"isolation\",\"kind\":\"sleep\",\"needs\":[\"postgres\"],\"class\":\"security\","
             " \"params\":{\"ms\":10,\"fail_if_exists\":\"%s\",\"error\":\"role can read t_other\"}}",
             flag);
    pipeline("drift.json", steps);
    const char *t = h_tenant("drift");
    submit(t);
    int port = free_port();
    char http[64];
    snprintf(http, sizeof(http), "TQ_HTTP_ADDR=127.0.0.1:%d", port);
    const char *env[] = {http, NULL};
    pid_t w = h_worker_start(env);
    cr_assert(wait_status(t, "active", 30000));
    /* clean revalidation */
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "revalidate", t, NULL), 0, "revalidate: %s", err);
    free(err);
    cr_assert(h_wait_sql("1", 30000, "SELECT count(*) FROM tq.audit_events WHERE event = 'revalidated'"));
    /* break it, revalidate again: drift is recorded, nothing is rolled back */
    h_write_file("drift", "x");
    cr_assert_eq(h_enqueue(NULL, &err, "revalidate", t, NULL), 0, "revalidate: %s", err);
    free(err);
    cr_assert(h_wait_sql("1", 30000, "SELECT count(*) FROM tq.audit_events WHERE event = 'drift_detected'"));
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", port);
    char *m = h_http("GET", url);
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    /* issue 12 item 4: revalidations and drift are counted */
    cr_assert(strstr(m, "tq_revalidations_total{result=\"clean\"} 1"), "%s", m);
    cr_assert(strstr(m, "tq_revalidations_total{result=\"drift\"} 1"), "%s", m);
    cr_assert(strstr(m, "tq_drift_detected_total{step=\"isolation\"} 1"), "%s", m);
    free(m);
    char *st = h_sql("SELECT status || ' ' || coalesce(drift, '') FROM tq.tenants WHERE tenant_id = '%s'", t);
    cr_assert(strncmp(st, "active ", 7) == 0 && strstr(st, "role can read t_other"), "%s", st);
    free(st);
    cr_assert_eq(schema_exists(t), 2, "revalidation never touches resources");
    cr_assert_eq(step_count(t, "postgres", "run", "succeeded"), 1, "only checks re-run");
    cr_assert_eq(step_count(t, "postgres", "undo", "succeeded"), 0);
}

/*
 * Issue 12 item 1: a SIGTERM during a revalidation handed the job back with
 * the tenant "queued", and nothing ever set it back to active.
 */
Test(engine, sigterm_during_revalidation_leaves_the_tenant_active)
{
    pipeline("reval-drain.json", PG_STEP ","
             "{\"name\":\"audit\",\"kind\":\"sleep\",\"needs\":[\"postgres\"],\"class\":\"compliance\","
             " \"params\":{\"ms\":2500}}");
    const char *t = h_tenant("rvdrain");
    submit(t);
    const char *env[] = {"TQ_GRACE_MS=300", NULL};
    pid_t a = h_worker_start(env);
    cr_assert(wait_status(t, "active", 30000));
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "revalidate", t, NULL), 0, "revalidate: %s", err);
    free(err);
    cr_assert(h_wait_sql("running", 30000,
                         "SELECT s.status FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id"
                         " WHERE j.kind = 'revalidate' AND s.step = 'audit'"));
    cr_assert_eq(h_worker_stop(a, 15000), 0, "SIGTERM drains and exits 0");
    char *st = h_sql("SELECT j.status || ' ' || tn.status FROM tq.jobs j"
                     " JOIN tq.tenants tn ON tn.tenant_id = j.tenant_id WHERE j.kind = 'revalidate'");
    cr_assert_str_eq(st, "queued active", "handed back; the tenant's status untouched");
    free(st);
    pid_t b = h_worker_start(NULL);
    cr_assert(h_wait_sql("succeeded", 30000, "SELECT status FROM tq.jobs WHERE kind = 'revalidate'"));
    cr_assert_eq(h_worker_stop(b, 15000), 0);
    st = h_sql("SELECT status FROM tq.tenants WHERE tenant_id = '%s'", t);
    cr_assert_str_eq(st, "active");
    free(st);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id = '%s'"
                            " AND event IN ('handed_back', 'revalidated')", t), 2);
}

/*
 * Issue 12 item 7: a step whose every attempt was refused a connection
 * never reached its server and left nothing to undo; the tenant ends
 * "failed" with the rest undone, not "rollback_failed" after an undo that
 * fails the same way.
 */
Test(engine, a_step_that_never_reached_its_server_is_not_undone)
{
    pipeline("unreach.json", PG_STEP ","
             "{\"name\":\"vector\",\"kind\":\"http\",\"needs\":[\"postgres\"],"
             " \"params\":{\"method\":\"PUT\",\"url\":\"http://127.0.0.1:1/v1/ns\"},"
             " \"undo\":{\"params\":{\"method\":\"DELETE\",\"url\":\"http://127.0.0.1:1/v1/ns\"}},"
             " \"retry\":{\"max_attempts\":2,\"base_ms\":20,\"max_ms\":50}}");
    const char *t = h_tenant("unreach");
    submit(t);
    const char *env[] = {"TQ_OUTAGE_MS=0", NULL};
    pid_t w = h_worker_start(env);
    cr_assert(h_wait_sql("1", 30000, "SELECT (status IN ('failed', 'rollback_failed'))::int"
                         " FROM tq.tenants WHERE tenant_id = '%s'", t));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    char *st = h_sql("SELECT status FROM tq.tenants WHERE tenant_id = '%s'", t);
    cr_assert_str_eq(st, "failed");
    free(st);
    cr_assert_eq(step_count(t, "vector", "run", "failed"), 2);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE step = 'vector'"
                            " AND phase = 'run' AND reached"), 0, "recorded as never sent");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE step = 'vector'"
                            " AND phase = 'undo'"), 0, "nothing to undo");
    cr_assert_eq(schema_exists(t), 0, "every other step undone");
    st = step_status(t, "postgres");
    cr_assert_str_eq(st, "compensated");
    free(st);
}

Test(engine, sigterm_hands_back_a_running_job_and_another_worker_finishes_it)
{
    pipeline("drain.json",
             "{\"name\":\"first\",\"kind\":\"sleep\",\"params\":{\"ms\":10}},"
             "{\"name\":\"long\",\"kind\":\"sleep\",\"needs\":[\"first\"],\"params\":{\"ms\":3000}},"
             "{\"name\":\"last\",\"kind\":\"noop\",\"needs\":[\"long\"]}");
    const char *t = h_tenant("drain");
    submit(t);
    const char *env[] = {"TQ_GRACE_MS=500", NULL};
    pid_t a = h_worker_start(env);
    cr_assert(h_wait_sql("running", 30000, "SELECT status FROM tq.job_steps WHERE step = 'long'"));
    uint64_t t0 = tq_mono_ms();
    cr_assert_eq(h_worker_stop(a, 15000), 0, "SIGTERM drains and exits 0");
    cr_assert_lt(tq_mono_ms() - t0, 2500, "within the 500 ms grace period, not after the 3 s step");
    char *st = h_sql("SELECT status || '/' || coalesce(lease_owner, 'none') FROM tq.jobs");
    cr_assert_str_eq(st, "queued/none", "handed back: runnable, lease released");
    free(st);
    cr_assert_eq(h_redis_long("LLEN tq:{%s}:ready", H.queue), 1, "and its id is back in ready");
    /* the next worker skips what succeeded and runs the rest */
    pid_t b = h_worker_start(NULL);
    cr_assert(wait_status(t, "active", 30000));
    cr_assert_eq(h_worker_stop(b, 15000), 0);
    cr_assert_eq(step_count(t, "first", "run", "succeeded"), 1, "not run twice");
}

Test(engine, metrics_count_successes_failures_and_durations)
{
    pipeline("m.json",
             "{\"name\":\"work\",\"kind\":\"sleep\",\"params\":{\"ms\":10}},"
             "{\"name\":\"gate\",\"kind\":\"sleep\",\"needs\":[\"work\"],\"class\":\"integration\","
             " \"params\":{\"ms\":10,\"fail_if_exists\":\"" "/nonexistent/never" "\"}}");
    const char *ok = h_tenant("mok");
    submit(ok);
    int port = free_port();
    char http[64];
    snprintf(http, sizeof(http), "TQ_HTTP_ADDR=127.0.0.1:%d", port);
    const char *env[] = {http, NULL};
    pid_t w = h_worker_start(env);
    cr_assert(wait_status(ok, "active", 30000));
    /* a failing one: same pipeline shape, gate fails */
    char flag[300];
    snprintf(flag, sizeof(flag), "%s/gate", H.tmpdir);
    h_write_file("gate", "x");
    char steps[600];
    snprintf(steps, sizeof(steps),
             "{\"name\":\"work\",\"kind\":\"sleep\",\"params\":{\"ms\":10}},"
             "{\"name\":\"gate\",\"kind\":\"sleep\",\"needs\":[\"work\"],\"class\":\"integration\","
             " \"params\":{\"ms\":10,\"fail_if_exists\":\"%s\"},\"retry\":{\"max_attempts\":1}}", flag);
    pipeline("m2.json", steps);
    const char *bad = h_tenant("mbad");
    submit(bad);
    cr_assert(wait_status(bad, "failed", 30000));
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", port);
    char *m = h_http("GET", url);
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert(strstr(m, "tenant_provisioning_successes_total{tier=\"Silver\"} 1"), "%s", m);
    cr_assert(strstr(m, "tenant_provisioning_failures_total{tier=\"Silver\",step=\"gate\"} 1"), "%s", m);
    cr_assert(strstr(m, "tenant_provisioning_duration_seconds_count{tier=\"Silver\",region=\"eu-west-1\"} 1"),
              "%s", m);
    cr_assert(strstr(m, "tq_step_duration_seconds_bucket{kind=\"sleep\",phase=\"run\",le=\"+Inf\"} 4"), "%s", m);
    cr_assert(strstr(m, "tq_rollbacks_total 1"), "%s", m);
    cr_assert(strstr(m, "tq_queue_depth{list=\"ready\"}"), "%s", m);
    free(m);
}

/*
 * Issue 17: SQL errors are classed by SQLSTATE. Serialization failures and
 * deadlocks may succeed on a retry; syntax, permission, constraint and data
 * errors never will; only a lost connection is "unreachable".
 */
Test(engine, sql_errors_are_classed_by_sqlstate)
{
    struct tq_pg *pg = NULL;
    cr_assert_eq(tq_pg_open(H.dsn, &pg), TQ_OK, "%s", tq_pg_errstr(pg));
    static const struct {
        const char *sql;
        enum tq_err want;
    } cases[] = {
        {"SELEC 1", TQ_ESQL},
        {"SELECT 1/0", TQ_ESQL},
        {"SELECT * FROM no_such_table", TQ_ESQL},
        {"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40001'; END $$", TQ_EPG},
        {"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40P01'; END $$", TQ_EPG},
        {"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '23505'; END $$", TQ_ESQL},
        {"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '42501'; END $$", TQ_ESQL},
        {"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '57P01'; END $$", TQ_ECONNECT},
        {"SELECT 1", TQ_OK},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum tq_err err = tq_pg_exec(pg, cases[i].sql);
        cr_expect_eq(err, cases[i].want, "%s: %s, want %s (%s)", cases[i].sql, tq_errname(err),
                     tq_errname(cases[i].want), tq_pg_errstr(pg));
    }
    cr_assert_not(tq_err_retryable(TQ_ESQL));
    tq_pg_close(pg);
}

/*
 * Issue 17: the fetcher's pipeline cache never evicted; after 32 distinct
 * pipelines a worker handed back every job that used a 33rd, forever.
 */
Test(engine, forty_distinct_pipelines_all_run)
{
    enum { N = 40 };
    const char *ids[N];
    for (int i = 0; i < N; i++) {
        char name[32], steps[128];
        snprintf(name, sizeof(name), "pl%02d.json", i);
        snprintf(steps, sizeof(steps), "{\"name\":\"step%02d\",\"kind\":\"noop\"}", i);
        pipeline(name, steps);
        char stem[16];
        snprintf(stem, sizeof(stem), "pl%02d", i);
        ids[i] = tq_xstrdup(h_tenant(stem));
        submit(ids[i]);
    }
    pid_t w = h_worker_start(NULL);
    char want[8];
    snprintf(want, sizeof(want), "%d", N);
    bool all = h_wait_sql(want, 60000, "SELECT count(*) FROM tq.tenants WHERE status = 'active'");
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert(all, "%ld of %d tenants active",
              h_sql_long("SELECT count(*) FROM tq.tenants WHERE status = 'active'"), N);
    cr_assert_eq(h_sql_long("SELECT count(DISTINCT pipeline_hash) FROM tq.jobs"), N);
    for (int i = 0; i < N; i++)
        free((char *)ids[i]);
}

