/*
 * A dependency outage is not a verdict (issue 17, "a check that could not
 * run"): a batch of tenants runs against private PostgreSQL and Redis
 * servers, one of them is stopped for two minutes mid-batch (about what a
 * managed database's failover takes) and started again, and every tenant
 * ends active — no check failing for good because it could not connect,
 * no undo giving up because the server was away. Also: a worker told to
 * stop while PostgreSQL is down exits within its grace period, and what it
 * held is not lost.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "services.h"
#include "tq/util.h"

static void init(void)
{
    h_setup();
    s_start_with(true);   /* tenants' Redis users must outlive a Redis restart, as in production */
}

static void fini(void)
{
    s_stop();
    h_teardown();
}

TestSuite(outage, .init = init, .fini = fini, .timeout = 480);

#define NTENANTS 40
#define OUTAGE_MS 120000

/* Every step talks to the server that goes away: resources, checks of both
   classes that used to fail for good (security, compliance), and a pace
   step so the batch is still running when the outage starts. */
static const char steps[] =
    "{\"name\":\"postgres\",\"kind\":\"pg_tenant\"},"
    "{\"name\":\"redis\",\"kind\":\"redis_acl\"},"
    "{\"name\":\"pace\",\"kind\":\"sleep\",\"needs\":[\"postgres\",\"redis\"],\"params\":{\"ms\":1500}},"
    "{\"name\":\"pg_isolation\",\"kind\":\"check_pg\",\"needs\":[\"pace\"],\"class\":\"security\","
    " \"params\":{\"check\":\"isolation\"}},"
    "{\"name\":\"redis_isolation\",\"kind\":\"check_redis\",\"needs\":[\"pace\"],\"class\":\"security\","
    " \"params\":{\"check\":\"isolation\"}},"
    "{\"name\":\"audit\",\"kind\":\"check_audit\",\"class\":\"compliance\","
    " \"needs\":[\"pg_isolation\",\"redis_isolation\"]}";

static void use_pipeline(void)
{
    char text[4096];
    snprintf(text, sizeof(text), "{\"name\":\"outage\",\"steps\":[%s]}", steps);
    h_use_pipeline(h_write_file("outage.json", text));
}

static void submit_batch(int n)
{
    struct tq_buf b;
    tq_buf_init(&b);
    tq_buf_puts(&b, "tenant_id,name,tier,region,budget,owner\n");
    for (int i = 0; i < n; i++)
        tq_buf_printf(&b, "out%d-%s,Outage %d %s,Bronze,us-east-1,%d,o@example.com\n", i, H.tag,
                      i, H.tag, 10000 + i);
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--file", h_write_file("batch.csv", b.data), "--batch",
                       "outage", NULL);
    cr_assert_eq(rc, 0, "submit: %s", err);
    free(err);
    tq_buf_cleanup(&b);
}

static long count_status(const char *status)
{
    return h_sql_long("SELECT count(*) FROM tq.tenants WHERE status = '%s'", status);
}

static void batch_survives(void (*stop)(void), void (*start)(void), const char *what)
{
    use_pipeline();
    submit_batch(NTENANTS);
    const char *env[] = {"TQ_CONCURRENCY=4", NULL};
    pid_t w = h_worker_start(env);
    /* mid-batch: some tenants done, the rest in flight or waiting */
    cr_assert(h_wait_sql("1", 120000, "SELECT (count(*) >= 6)::int FROM tq.tenants"
                         " WHERE status = 'active'"));
    long before = count_status("active");
    cr_assert_lt(before, NTENANTS, "the outage must start mid-batch");
    stop();
    fprintf(stderr, "outage: %s stopped with %ld of %d tenants active\n", what, before, NTENANTS);
    tq_sleep_ms(OUTAGE_MS);
    start();
    char want[16];
    snprintf(want, sizeof(want), "%d", NTENANTS);
    bool all = h_wait_sql(want, 240000, "SELECT count(*) FROM tq.tenants WHERE status = 'active'");
    char *left = h_sql("SELECT coalesce(string_agg(tenant_id || ' ' || status || ': ' ||"
                       " coalesce(failure_reason, ''), E'\\n'), '') FROM tq.tenants"
                       " WHERE status <> 'active'");
    cr_assert(all, "every tenant ends active after the %s outage; not:\n%s", what, left);
    free(left);
    cr_assert_eq(h_worker_stop(w, 30000), 0);
    cr_assert_eq(count_status("active"), NTENANTS);
}

Test(outage, postgres_stopped_two_minutes_mid_batch_every_tenant_ends_active)
{
    batch_survives(s_pg_stop, s_pg_start, "PostgreSQL");
}

Test(outage, redis_stopped_two_minutes_mid_batch_every_tenant_ends_active)
{
    batch_survives(s_redis_stop, s_redis_start, "Redis");
}

/*
 * Issue 17: SIGTERM during a PostgreSQL outage hung the worker (the loop
 * thread joined a writer that retried forever). It must exit within its
 * grace period plus a second, and the jobs it held return to the queue.
 */
Test(outage, sigterm_while_postgres_is_down_exits_within_grace_and_loses_nothing)
{
    char text[1024];
    snprintf(text, sizeof(text), "{\"name\":\"stop\",\"steps\":["
             "{\"name\":\"first\",\"kind\":\"noop\"},"
             "{\"name\":\"work\",\"kind\":\"sleep\",\"needs\":[\"first\"],\"params\":{\"ms\":4000}}]}");
    h_use_pipeline(h_write_file("stop.json", text));
    submit_batch(4);
    const char *env[] = {"TQ_CONCURRENCY=4", "TQ_GRACE_MS=1000", "TQ_LEASE_MS=2000", NULL};
    pid_t a = h_worker_start(env);
    cr_assert(h_wait_sql("4", 60000, "SELECT count(*) FROM tq.job_steps WHERE step = 'work'"
                         " AND status = 'running'"));
    s_pg_stop();
    cr_assert_eq(h_worker_stop(a, 1000 + 1000), 0, "exits 0 within grace + 1 s");
    s_pg_start();
    const char *env2[] = {"TQ_CONCURRENCY=4", "TQ_LEASE_MS=2000", NULL};
    pid_t b = h_worker_start(env2);
    bool all = h_wait_sql("4", 60000, "SELECT count(*) FROM tq.tenants WHERE status = 'active'");
    cr_assert_eq(h_worker_stop(b, 15000), 0);
    cr_assert(all, "every job the stopped worker held is finished by the next one");
}

/*
 * An undo waits out an outage too: a rollback that meets PostgreSQL away
 * retries its undo until the database is back, and the tenant ends failed
 * with everything undone — not rollback_failed.
 */
Test(outage, an_undo_waits_out_a_postgres_outage)
{
    char flag[300], text[2048];
    snprintf(flag, sizeof(flag), "%s/gate", H.tmpdir);
    h_write_file("gate", "x");
    snprintf(text, sizeof(text), "{\"name\":\"undo\",\"steps\":["
             "{\"name\":\"postgres\",\"kind\":\"pg_tenant\"},"
             "{\"name\":\"hold\",\"kind\":\"sleep\",\"needs\":[\"postgres\"],\"params\":{\"ms\":1500}},"
             "{\"name\":\"gate\",\"kind\":\"sleep\",\"needs\":[\"hold\"],\"class\":\"security\","
             " \"params\":{\"ms\":10,\"fail_if_exists\":\"%s\"}}]}", flag);
    h_use_pipeline(h_write_file("undo.json", text));
    submit_batch(1);
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("running", 60000, "SELECT status FROM tq.job_steps WHERE step = 'hold'"));
    s_pg_stop();   /* gate fails while the database is away: the undo of postgres cannot run */
    tq_sleep_ms(30000);
    s_pg_start();
    bool done = h_wait_sql("1", 120000, "SELECT (status IN ('failed', 'rollback_failed'))::int"
                           " FROM tq.tenants");
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert(done, "the rollback ends");
    char *st = h_sql("SELECT status FROM tq.tenants");
    cr_assert_str_eq(st, "failed", "the undo waited for the database");
    free(st);
    st = h_sql("SELECT status FROM tq.job_steps WHERE step = 'postgres'");
    cr_assert_str_eq(st, "compensated");
    free(st);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tq_t_out0_%%'"), 0,
                 "the tenant's role is gone");
}
