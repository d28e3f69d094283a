/*
 * Reliable delivery (docs/design.md §3) against private Redis and PostgreSQL
 * servers that the tests kill, pause, wipe and restart: no job lost, no
 * step recorded succeeded twice, a worker that lost its lease writes
 * nothing. Each test prints what it measured.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "netutil.h"
#include "services.h"
#include "tq/pg.h"
#include "tq/store.h"
#include "tq/util.h"

static void init(void)
{
    h_setup();
    s_start();
}

static void fini(void)
{
    s_stop();
    h_teardown();
}

TestSuite(reliability, .init = init, .fini = fini, .timeout = 300);

static void use_pipeline(const char *name, const char *steps)
{
    char text[4096];
    snprintf(text, sizeof(text), "{\"name\":\"%s\",\"steps\":[%s]}", name, steps);
    h_use_pipeline(h_write_file(name, text));
}

/* Submit n tenants "<stem>-<i>-<tag>" as one batch from a CSV file. */
static void submit_batch(const char *stem, int n)
{
    struct tq_buf b;
    tq_buf_init(&b);
    tq_buf_puts(&b, "tenant_id,name,tier,region,budget,owner\n");
    for (int i = 0; i < n; i++)
        tq_buf_printf(&b, "%s%d-%s,%s %d %s,Bronze,us-east-1,%d,o@example.com\n", stem, i, H.tag,
                      stem, i, H.tag, 10000 + i);
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--file", h_write_file("batch.csv", b.data), "--batch",
                       stem, NULL);
    cr_assert_eq(rc, 0, "submit: %s", err);
    free(err);
    tq_buf_cleanup(&b);
}

static pid_t worker(const char *lease_ms, const char *concurrency)
{
    char lease[64], conc[64];
    snprintf(lease, sizeof(lease), "TQ_LEASE_MS=%s", lease_ms);
    snprintf(conc, sizeof(conc), "TQ_CONCURRENCY=%s", concurrency);
    const char *env[] = {lease, conc, NULL};
    return h_worker_start(env);
}

static void kill9(pid_t pid)
{
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
}

/* Steps recorded succeeded more than once (must stay 0). */
static long double_successes(void)
{
    return h_sql_long("SELECT count(*) FROM (SELECT job_id, step FROM tq.step_attempts"
                      " WHERE phase = 'run' AND status = 'succeeded'"
                      " GROUP BY job_id, step HAVING count(*) > 1) d");
}

Test(reliability, kill9_mid_step_job_finishes_on_another_worker)
{
    use_pipeline("k9.json", "{\"name\":\"work\",\"kind\":\"sleep\",\"params\":{\"ms\":3000}}");
    submit_batch("kill", 1);
    pid_t a = worker("2000", "2");
    cr_assert(h_wait_sql("running", 20000, "SELECT status FROM tq.job_steps WHERE step = 'work'"));
    char *owner_a = h_sql("SELECT lease_owner FROM tq.jobs");
    kill9(a);
    uint64_t killed = tq_mono_ms();
    pid_t b = worker("2000", "2");
    /* resumed = claimed by someone else */
    cr_assert(h_wait_sql("1", 30000, "SELECT count(*) FROM tq.jobs WHERE lease_owner IS NOT NULL"
                         " AND lease_owner <> '%s'", owner_a));
    uint64_t resumed = tq_mono_ms();
    cr_assert(h_wait_sql("active", 30000, "SELECT status FROM tq.tenants"));
    cr_assert_eq(h_worker_stop(b, 15000), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE step = 'work'"
                            " AND status = 'succeeded'"), 1, "the success is recorded once");
    cr_assert_eq(double_successes(), 0);
    fprintf(stderr, "reliability: kill -9 to resume elsewhere: %llu ms (lease 2000 ms)\n",
            (unsigned long long)(resumed - killed));
    free(owner_a);
}

Test(reliability, sigstopped_worker_writes_nothing_after_losing_its_lease)
{
    use_pipeline("stop.json", "{\"name\":\"work\",\"kind\":\"sleep\",\"params\":{\"ms\":2500}}");
    submit_batch("stop", 1);
    pid_t a = worker("1500", "2");
    cr_assert(h_wait_sql("running", 20000, "SELECT status FROM tq.job_steps WHERE step = 'work'"));
    char *owner_a = h_sql("SELECT lease_owner FROM tq.jobs");
    kill(a, SIGSTOP);
    pid_t b = worker("1500", "2");
    cr_assert(h_wait_sql("active", 30000, "SELECT status FROM tq.tenants"),
              "another worker takes over the paused worker's job");
    long epoch = h_sql_long("SELECT lease_epoch FROM tq.jobs");
    long audits = h_sql_long("SELECT count(*) FROM tq.audit_events");
    kill(a, SIGCONT);
    tq_sleep_ms(4000);   /* a's step ends and it tries to write */
    cr_assert_eq(h_worker_stop(a, 15000), 0);
    cr_assert_eq(h_worker_stop(b, 15000), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE worker = '%s'", owner_a), 0,
                 "the stale worker recorded an attempt");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE actor = 'worker:%s'", owner_a),
                 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events"), audits, "nothing written after SIGCONT");
    cr_assert_eq(h_sql_long("SELECT lease_epoch FROM tq.jobs"), epoch);
    char *st = h_sql("SELECT status FROM tq.tenants");
    cr_assert_str_eq(st, "active");
    free(st);
    free(owner_a);
}

/*
 * A flush is one pipelined round trip and one transaction: when a statement
 * late in it fails (here the second "round": a job with a warning and then
 * its outcome in one flush), the step rows of the first statement are gone
 * too, and the same connection (and its prepared statements) serves the
 * next flush.
 */
Test(reliability, failed_flush_writes_nothing_and_the_next_one_commits)
{
    use_pipeline("atomic.json", "{\"name\":\"work\",\"kind\":\"noop\"}");
    submit_batch("atomic", 1);
    int64_t id = h_sql_long("SELECT id FROM tq.jobs");
    struct tq_pg *pg = NULL;
    tq_pg_open(getenv("TQ_DATABASE_URL"), &pg);   /* the private server (services.c) */
    struct tq_claimed *cl = NULL;
    int64_t *dead = NULL;
    size_t ncl = 0, ndead = 0;
    cr_assert_eq(tq_store_claim(pg, &id, 1, "test-1-a", 15000, 10, &cl, &ncl, &dead, &ndead),
                 TQ_OK, "%s", tq_pg_errstr(pg));
    cr_assert_eq(ncl, 1);
    int64_t epoch = cl[0].c.epoch;
    struct tq_step_row step = {.job_id = id, .epoch = epoch, .step = "work",
                               .status = TQ_SS_SUCCEEDED, .attempts_delta = 1, .started_ms = 1, .finished_ms = 2,
                               .output = "{}", .progress = true};
    struct tq_attempt_row att = {.job_id = id, .epoch = epoch, .step = "work", .phase = "run",
                                 .attempt = 1, .status = TQ_SS_SUCCEEDED, .started_ms = 1,
                                 .finished_ms = 2};
    struct tq_job_row rows[2] = {
        {.job_id = id, .epoch = epoch, .job_status = TQ_JS_RUNNING, .phase = "forward",
         .event = "step_warning", .reason = "slow"},
        {.job_id = id, .epoch = epoch, .job_status = TQ_JS_SUCCEEDED,
         .tenant_status = TQ_TS_ACTIVE, .phase = "no-such-phase", .event = "active",
         .release_lease = true},
    };
    struct tq_flush f = {.steps = &step, .nsteps = 1, .attempts = &att, .nattempts = 1,
                         .jobs = rows, .njobs = 2, .worker = "test-1-a", .lease_ms = 15000};
    struct tq_flush_result *res = NULL;
    size_t nres = 0;
    for (int round = 0; round < 2; round++) {   /* the second time on prepared statements */
        cr_assert_neq(tq_store_flush(pg, &f, &res, &nres), TQ_OK, "a CHECK violation must fail");
        cr_assert(strstr(tq_pg_errstr(pg), "record job outcomes"), "error names the statement: %s",
                  tq_pg_errstr(pg));
        cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.job_steps"), 0, "step row rolled back");
        cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts"), 0, "attempt rolled back");
        cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event = 'step_warning'"),
                     0, "the first round's audit event rolled back");
    }
    rows[1].phase = "forward";
    cr_assert_eq(tq_store_flush(pg, &f, &res, &nres), TQ_OK, "%s", tq_pg_errstr(pg));
    cr_assert_eq(nres, 1);
    cr_assert(!res[0].stale);
    free(res);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.job_steps WHERE status = 'succeeded'"), 1);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts"), 1);
    char *st = h_sql("SELECT status FROM tq.tenants");
    cr_assert_str_eq(st, "active");
    free(st);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event IN"
                            " ('step_warning', 'step_succeeded', 'active')"), 3);
    /* a stale epoch writes nothing and says so */
    rows[0].epoch = rows[1].epoch = step.epoch = att.epoch = epoch + 1;
    cr_assert_eq(tq_store_flush(pg, &f, &res, &nres), TQ_OK, "%s", tq_pg_errstr(pg));
    cr_assert(nres == 1 && res[0].stale);
    free(res);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts"), 1);
    json_decref(cl[0].steps);
    free(cl);
    free(dead);
    tq_pg_close(pg);
}

/*
 * Issue 17: attempts a step waited out as an outage do not count against its
 * retry policy on the next delivery either: the flush records them with the
 * step, and the next claim hands them back with the attempts.
 */
Test(reliability, outage_attempts_survive_a_redelivery)
{
    use_pipeline("outage_count.json", "{\"name\":\"work\",\"kind\":\"noop\"}");
    submit_batch("outcount", 1);
    int64_t id = h_sql_long("SELECT id FROM tq.jobs");
    struct tq_pg *pg = NULL;
    tq_pg_open(getenv("TQ_DATABASE_URL"), &pg);
    struct tq_claimed *cl = NULL;
    int64_t *dead = NULL;
    size_t ncl = 0, ndead = 0;
    cr_assert_eq(tq_store_claim(pg, &id, 1, "test-oc-a", 15000, 10, &cl, &ncl, &dead, &ndead),
                 TQ_OK, "%s", tq_pg_errstr(pg));
    cr_assert_eq(ncl, 1);
    struct tq_step_row step = {.job_id = id, .epoch = cl[0].c.epoch, .step = "work",
                               .status = TQ_SS_PENDING, .attempts_delta = 3,
                               .outage_attempts_delta = 2, .error = "could not connect"};
    struct tq_job_row back = {.job_id = id, .epoch = cl[0].c.epoch, .job_status = TQ_JS_QUEUED,
                              .tenant_status = TQ_TS_QUEUED, .phase = "forward",
                              .event = "handed_back", .release_lease = true};
    struct tq_flush f = {.steps = &step, .nsteps = 1, .jobs = &back, .njobs = 1,
                         .worker = "test-oc-a", .lease_ms = 15000};
    struct tq_flush_result *res = NULL;
    size_t nres = 0;
    cr_assert_eq(tq_store_flush(pg, &f, &res, &nres), TQ_OK, "%s", tq_pg_errstr(pg));
    free(res);
    json_decref(cl[0].steps);
    free(cl);
    free(dead);
    cr_assert_eq(tq_store_claim(pg, &id, 1, "test-oc-b", 15000, 10, &cl, &ncl, &dead, &ndead),
                 TQ_OK, "%s", tq_pg_errstr(pg));
    cr_assert_eq(ncl, 1, "the handed-back job is claimable again");
    const json_t *rec = json_object_get(cl[0].steps, "work");
    cr_assert_eq(json_integer_value(json_object_get(rec, "attempts")), 3);
    cr_assert_eq(json_integer_value(json_object_get(rec, "outage_attempts")), 2,
                 "the next delivery must know which attempts the outage took");
    cr_assert_eq(json_integer_value(json_object_get(rec, "undo_outage_attempts")), 0);
    json_decref(cl[0].steps);
    free(cl);
    free(dead);
    tq_pg_close(pg);
}

Test(reliability, redis_wiped_mid_batch_every_job_still_finishes)
{
    use_pipeline("rw.json", "{\"name\":\"work\",\"kind\":\"sleep\",\"params\":{\"ms\":400}}");
    submit_batch("rw", 30);
    pid_t a = worker("2000", "4"), b = worker("2000", "4");
    cr_assert(h_wait_sql("true", 20000, "SELECT (count(*) >= 3)::text FROM tq.tenants WHERE status = 'active'"));
    s_redis_restart(true);
    cr_assert(h_wait_sql("30", 90000, "SELECT count(*) FROM tq.tenants WHERE status = 'active'"),
              "jobs lost with Redis's data");
    cr_assert_eq(h_worker_stop(a, 15000), 0);
    cr_assert_eq(h_worker_stop(b, 15000), 0);
    cr_assert_eq(double_successes(), 0);
}

Test(reliability, postgres_restarted_mid_batch_every_job_still_finishes)
{
    use_pipeline("pr.json", "{\"name\":\"work\",\"kind\":\"sleep\",\"params\":{\"ms\":400}}");
    submit_batch("pr", 30);
    pid_t a = worker("3000", "4"), b = worker("3000", "4");
    cr_assert(h_wait_sql("true", 20000, "SELECT (count(*) >= 3)::text FROM tq.tenants WHERE status = 'active'"));
    s_pg_restart();
    cr_assert(h_wait_sql("30", 90000, "SELECT count(*) FROM tq.tenants WHERE status = 'active'"));
    cr_assert_eq(h_worker_stop(a, 15000), 0);
    cr_assert_eq(h_worker_stop(b, 15000), 0);
    cr_assert_eq(double_successes(), 0);
}

Test(reliability, chaos_random_kill9_and_restart)
{
    use_pipeline("chaos.json",
                 "{\"name\":\"a\",\"kind\":\"sleep\",\"params\":{\"ms\":500}},"
                 "{\"name\":\"b\",\"kind\":\"sleep\",\"params\":{\"ms\":500},\"needs\":[\"a\"]},"
                 "{\"name\":\"c\",\"kind\":\"sleep\",\"params\":{\"ms\":500},\"needs\":[\"b\"]}");
    const int njobs = 200;
    submit_batch("chaos", njobs);
    pid_t w[3];
    for (int i = 0; i < 3; i++)
        w[i] = worker("1500", "4");
    unsigned seed = (unsigned)getpid();
    int kills = 0;
    uint64_t start = tq_mono_ms(), deadline = start + 150000;
    /* kill while work remains, for at most 60 s, then let them finish */
    while (tq_mono_ms() < deadline && tq_mono_ms() - start < 60000 &&
           h_sql_long("SELECT count(*) FROM tq.tenants WHERE status = 'active'") < njobs - 20) {
        tq_sleep_ms(1500 + (uint64_t)(rand_r(&seed) % 2000));
        int victim = rand_r(&seed) % 3;
        kill9(w[victim]);
        kills++;
        w[victim] = worker("1500", "4");
    }
    bool done = h_wait_sql("200", (int)(deadline - tq_mono_ms()),
                           "SELECT count(*) FROM tq.tenants WHERE status = 'active'");
    long active = h_sql_long("SELECT count(*) FROM tq.tenants WHERE status = 'active'");
    for (int i = 0; i < 3; i++) {
        int rc = h_worker_stop(w[i], 20000);
        cr_assert_eq(rc, 0, "worker %d (pid %d) ended with %d (128+n: signal n; -1: hung)", i,
                     (int)w[i], rc);
    }
    cr_assert(done, "only %ld of %d jobs finished", active, njobs);
    cr_assert_eq(double_successes(), 0, "a step was recorded succeeded twice");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.job_steps WHERE status <> 'succeeded'"), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs WHERE status <> 'succeeded'"), 0);
    fprintf(stderr, "chaos: %d jobs finished, survived %d kill -9 in %.1f s\n", njobs, kills,
            (double)(tq_mono_ms() - start) / 1000.0);
    cr_assert_gt(kills, 3, "the chaos must actually kill workers");
}

Test(reliability, eviction_policy_refuses_to_start)
{
    char *ok = s_redis("CONFIG SET maxmemory-policy allkeys-lru");
    cr_assert_str_eq(ok, "OK");
    free(ok);
    pid_t a = worker("2000", "1");
    int st;
    uint64_t until = tq_mono_ms() + 10000;
    pid_t r = 0;
    while ((r = waitpid(a, &st, WNOHANG)) == 0 && tq_mono_ms() < until)
        tq_sleep_ms(50);
    cr_assert_eq(r, a, "the worker must refuse to run");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0);
    const char *env[] = {"TQ_ALLOW_EVICTION=1", NULL};
    pid_t b = h_worker_start(env);
    tq_sleep_ms(800);
    cr_assert_eq(waitpid(b, &st, WNOHANG), 0, "TQ_ALLOW_EVICTION overrides");
    cr_assert_eq(h_worker_stop(b, 15000), 0);
}

Test(reliability, poison_and_redelivered_jobs_go_to_the_dead_list)
{
    use_pipeline("dead.json", "{\"name\":\"work\",\"kind\":\"noop\"}");
    submit_batch("dead", 1);
    /* a payload that is no job id */
    cr_assert_eq(s_redis_long("LPUSH tq:{%s}:ready not-a-job-id", H.queue), 2);
    /* a job delivered too often without progress */
    char *v = h_sql("UPDATE tq.jobs SET deliveries = 10");
    free(v);
    pid_t a = worker("2000", "2");
    cr_assert(h_wait_sql("dead", 20000, "SELECT status FROM tq.jobs"));
    for (int i = 0; i < 100 && s_redis_long("LLEN tq:{%s}:dead", H.queue) < 2; i++)
        tq_sleep_ms(100);
    cr_assert_eq(h_worker_stop(a, 15000), 0);
    cr_assert_eq(s_redis_long("LLEN tq:{%s}:dead", H.queue), 2);
    char *reason = h_sql("SELECT dead_reason FROM tq.jobs");
    cr_assert(strstr(reason, "without progress"), "%s", reason);
    free(reason);
}

Test(reliability, long_retry_waits_in_the_delayed_set)
{
    use_pipeline("delay.json",
                 "{\"name\":\"flaky\",\"kind\":\"sleep\",\"params\":{\"ms\":10,\"fail_attempts\":1},"
                 " \"retry\":{\"max_attempts\":2,\"base_ms\":3000,\"max_ms\":3000}}");
    submit_batch("delay", 1);
    const char *env[] = {"TQ_LONG_WAIT_MS=0", NULL};   /* every retry wait parks */
    pid_t a = h_worker_start(env);
    /* the job leaves the worker and waits in the delayed set, not in a slot */
    bool parked = false;
    for (int i = 0; i < 100 && !parked; i++) {
        parked = s_redis_long("ZCARD tq:{%s}:delayed", H.queue) == 1;
        if (!parked)
            tq_sleep_ms(50);
    }
    cr_assert(parked, "a long retry wait must park the job in the delayed set");
    char *st = h_sql("SELECT status FROM tq.jobs");
    cr_assert_str_eq(st, "queued");
    free(st);
    cr_assert(h_wait_sql("active", 30000, "SELECT status FROM tq.tenants"));
    cr_assert_eq(h_worker_stop(a, 15000), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE status = 'failed'"), 1);
    cr_assert_eq(h_sql_long("SELECT attempt FROM tq.jobs"), 2,
                 "claimed again after the delayed set promoted it");
}

/* GET http://127.0.0.1:port/path, the status code (0: no answer). */
static int http_status(int port, const char *path)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "curl -s -o /dev/null -w '%%{http_code}' -m 2 http://127.0.0.1:%d%s",
             port, path);
    FILE *p = popen(cmd, "r");
    int code = 0;
    if (p) {
        if (fscanf(p, "%d", &code) != 1)
            code = 0;
        pclose(p);
    }
    return code;
}

Test(reliability, readyz_follows_redis_and_postgres)
{
    int port = free_port();
    char http[64];
    snprintf(http, sizeof(http), "TQ_HTTP_ADDR=127.0.0.1:%d", port);
    const char *env[] = {http, "TQ_LEASE_MS=3000", NULL};
    pid_t a = h_worker_start(env);
    bool ready = false;
    for (int i = 0; i < 100 && !ready; i++) {
        ready = http_status(port, "/readyz") == 200;
        if (!ready)
            tq_sleep_ms(100);
    }
    cr_assert(ready, "/readyz answers 200 with both services up");
    cr_assert_eq(http_status(port, "/healthz"), 200);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "redis-cli -p %d shutdown nosave >/dev/null 2>&1", S.redis_port);
    cr_assert_eq(system(cmd), 0);
    bool down = false;
    for (int i = 0; i < 100 && !down; i++) {
        down = http_status(port, "/readyz") == 503;
        if (!down)
            tq_sleep_ms(100);
    }
    cr_assert(down, "/readyz says not ready while Redis is away");
    cr_assert_eq(http_status(port, "/healthz"), 200, "the loop itself is alive");
    s_redis_restart(false);
    ready = false;
    for (int i = 0; i < 150 && !ready; i++) {
        ready = http_status(port, "/readyz") == 200;
        if (!ready)
            tq_sleep_ms(100);
    }
    cr_assert(ready, "ready again once Redis is back");
    /* and it still works: a job submitted now finishes */
    use_pipeline("ready.json", "{\"name\":\"work\",\"kind\":\"noop\"}");
    submit_batch("ready", 1);
    cr_assert(h_wait_sql("active", 30000, "SELECT status FROM tq.tenants"));
    cr_assert_eq(h_worker_stop(a, 15000), 0);
}
