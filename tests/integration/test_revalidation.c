/*
 * Revalidation (drift) as an operator relies on it (issue 12 items 2-6):
 * the schedule lives in PostgreSQL per tenant and per queue, so neither a
 * worker of another queue, nor Redis losing its data, nor restarts start a
 * round; drift shows in status and history; and a worker that dies after a
 * flush leaves no processing list behind. Each test runs against private
 * Redis and PostgreSQL (services.c), because some wipe Redis.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "services.h"
#include "tq/util.h"

static char flag[300];   /* while this file exists, the isolation check fails */

static void init(void)
{
    h_setup();
    s_start();
    snprintf(flag, sizeof(flag), "%s/leak", H.tmpdir);
    char steps[1024];
    snprintf(steps, sizeof(steps),
             "{\"name\":\"rv-test\",\"steps\":["
             "{\"name\":\"make\",\"kind\":\"sleep\",\"params\":{\"ms\":20}},"
             "{\"name\":\"isolation\",\"kind\":\"sleep\",\"needs\":[\"make\"],"
             " \"class\":\"security\",\"params\":{\"ms\":10,\"fail_if_exists\":\"%s\","
             " \"error\":\"tq_t_x can read t_other.documents\"}}]}",
             flag);
    h_use_pipeline(h_write_file("rv.json", steps));
}

static void fini(void)
{
    s_stop();
    h_teardown();
}

TestSuite(revalidation, .init = init, .fini = fini, .timeout = 300);

/* A worker on queue (NULL: the test's) with a short lease and an hour's interval. */
static pid_t worker_on(const char *queue, const char *lease_ms)
{
    static char q[128], l[64];
    snprintf(q, sizeof(q), "TQ_QUEUE=%s", queue ? queue : H.queue);
    snprintf(l, sizeof(l), "TQ_LEASE_MS=%s", lease_ms);
    const char *env[] = {q, l, "TQ_REVALIDATE_INTERVAL_MS=3600000", "TQ_CONCURRENCY=4", NULL};
    return h_worker_start(env);
}

static void submit_n(const char *stem, int n)
{
    struct tq_buf b;
    tq_buf_init(&b);
    tq_buf_puts(&b, "tenant_id,name,tier,region,budget,owner\n");
    for (int i = 0; i < n; i++)
        tq_buf_printf(&b, "%s%d-%s,%s %d %s,Bronze,us-east-1,1000,o@example.com\n", stem, i,
                      H.tag, stem, i, H.tag);
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--file", h_write_file("batch.csv", b.data), NULL);
    cr_assert_eq(rc, 0, "submit: %s", err);
    free(err);
    tq_buf_cleanup(&b);
}

static bool all_active(int n, int timeout_ms)
{
    char want[16];
    snprintf(want, sizeof(want), "%d", n);
    return h_wait_sql(want, timeout_ms, "SELECT count(*) FROM tq.tenants WHERE status = 'active'");
}

/* Wait until queue's chores key exists (a chores pass has started). */
static bool chores_started(const char *queue, int timeout_ms)
{
    uint64_t end = tq_mono_ms() + (uint64_t)timeout_ms;
    while (tq_mono_ms() < end) {
        if (s_redis_long("EXISTS tq:{%s}:chores", queue) == 1)
            return true;
        tq_sleep_ms(50);
    }
    return false;
}

/* Two passes of queue's fleet chores have started after this call: the first has ended. */
static void full_chores_pass(const char *queue)
{
    for (int i = 0; i < 2; i++) {
        free(s_redis("DEL tq:{%s}:chores", queue));
        cr_assert(chores_started(queue, 20000), "chores of %s ran", queue);
    }
}

static long revalidations(void)
{
    return h_sql_long("SELECT count(*) FROM tq.jobs WHERE kind = 'revalidate'");
}

/* ------------------------------------------------------------ 12.4, 12.5 */

Test(revalidation, status_shows_drift_lifecycle_and_last_revalidation)
{
    const char *t = h_tenant("dr");
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "submit", "--tenant-id", t, "--name", "Dr", "--tier",
                           "Bronze", "--region", "us-east-1", "--budget", "1000", "--owner",
                           "o@example.com", NULL), 0, "%s", err);
    free(err);
    pid_t w = worker_on(NULL, "3000");
    cr_assert(all_active(1, 30000));
    h_write_file("leak", "x");
    cr_assert_eq(h_enqueue(NULL, &err, "revalidate", t, NULL), 0, "%s", err);
    free(err);
    cr_assert(h_wait_sql("1", 30000,
                         "SELECT count(*) FROM tq.audit_events WHERE event = 'drift_detected'"));
    cr_assert_eq(h_worker_stop(w, 15000), 0);

    char *out = NULL;
    cr_assert_eq(h_enqueue(&out, NULL, "--json", "status", t, NULL), 0);
    json_t *o = h_json(out, "status");
    json_t *ten = json_array_get(json_object_get(o, "tenants"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(ten, "status")), "active");
    /* the provisioning job stays in view: a revalidation does not replace it */
    cr_assert_str_eq(json_string_value(json_object_get(ten, "job_kind")), "provision", "%s", out);
    cr_assert_eq(json_integer_value(json_object_get(ten, "steps_done")), 2, "%s", out);
    cr_assert_eq(json_integer_value(json_object_get(ten, "steps_total")), 2, "%s", out);
    json_t *rv = json_object_get(ten, "revalidation");
    cr_assert(json_is_object(rv), "last revalidation shown: %s", out);
    cr_assert_str_eq(json_string_value(json_object_get(rv, "status")), "succeeded");
    cr_assert_eq(json_integer_value(json_object_get(rv, "checks_failed")), 1);
    json_t *drift = json_object_get(ten, "drift");
    cr_assert(json_is_object(drift), "drift shown: %s", out);
    json_t *ck = json_array_get(json_object_get(drift, "checks"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(ck, "check")), "isolation", "%s", out);
    cr_assert(strstr(json_string_value(json_object_get(ck, "message")), "can read t_other"),
              "%s", out);
    cr_assert(json_is_string(json_object_get(drift, "detected_at")));
    json_decref(o);
    free(out);

    cr_assert_eq(h_enqueue(&out, NULL, "status", t, NULL), 0);
    cr_assert(strstr(out, "DRIFT"), "%s", out);
    cr_assert(strstr(out, "isolation: tq_t_x can read t_other.documents"), "%s", out);
    cr_assert(strstr(out, "last provision job"), "%s", out);
    cr_assert(strstr(out, "last revalidation: job"), "%s", out);
    free(out);
    cr_assert_eq(h_enqueue(&out, NULL, "status", "--all", NULL), 0);
    cr_assert(strstr(out, "DRIFT: isolation"), "the table marks drift: %s", out);
    free(out);

    /* history: every job, with steps and attempts, and the audit events */
    cr_assert_eq(h_enqueue(&out, NULL, "--json", "history", t, NULL), 0);
    o = h_json(out, "history");
    json_t *jobs = json_object_get(o, "jobs");
    cr_assert_eq(json_array_size(jobs), 2, "provision and revalidate: %s", out);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(jobs, 0), "kind")),
                     "provision");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(jobs, 1), "kind")),
                     "revalidate");
    json_t *steps = json_object_get(json_array_get(jobs, 0), "steps");
    cr_assert_eq(json_array_size(steps), 2, "%s", out);
    size_t i;
    json_t *s;
    json_array_foreach(steps, i, s)
        cr_assert_geq(json_array_size(json_object_get(s, "attempt_log")), 1, "%s", out);
    bool submitted = false, drifted = false;
    json_t *e;
    json_array_foreach(json_object_get(o, "events"), i, e) {
        submitted |= strcmp(json_string_value(json_object_get(e, "event")), "submitted") == 0;
        drifted |= strcmp(json_string_value(json_object_get(e, "event")), "drift_detected") == 0;
    }
    cr_assert(submitted && drifted, "audit events listed: %s", out);
    json_decref(o);
    free(out);
    cr_assert_eq(h_enqueue(&out, NULL, "history", t, NULL), 0);
    cr_assert(strstr(out, "revalidate") && strstr(out, "events:") &&
                  strstr(out, "drift_detected"),
              "%s", out);
    free(out);
}

/* ------------------------------------------------------------ 12.2 */

Test(revalidation, worker_of_another_queue_revalidates_nothing_of_ours)
{
    submit_n("aq", 3);
    pid_t a = worker_on(NULL, "1500");
    cr_assert(all_active(3, 30000));
    cr_assert_eq(h_worker_stop(a, 15000), 0);
    /* every tenant due now */
    free(h_sql("UPDATE tq.tenants SET revalidate_due_at = now() - interval '1 second'"));
    char other[96];
    snprintf(other, sizeof(other), "%s-other", H.queue);
    pid_t b = worker_on(other, "1500");
    full_chores_pass(other);
    cr_assert_eq(revalidations(), 0, "a worker of queue %s revalidated tenants of %s", other,
                 H.queue);
    cr_assert_eq(s_redis_long("LLEN tq:{%s}:ready", other), 0);
    cr_assert_eq(h_worker_stop(b, 15000), 0);
    /* their own queue's worker does check them */
    a = worker_on(NULL, "1500");
    cr_assert(h_wait_sql("3", 30000,
                         "SELECT count(*) FROM tq.audit_events WHERE event = 'revalidated'"));
    cr_assert_eq(h_worker_stop(a, 15000), 0);
    cr_assert_eq(revalidations(), 3);
}

/* ------------------------------------------------------------ 12.3 */

Test(revalidation, schedule_is_per_tenant_in_postgres_and_spread)
{
    const int n = 40;
    submit_n("sp", n);
    pid_t a = worker_on(NULL, "1500");
    cr_assert(all_active(n, 60000));
    full_chores_pass(H.queue);
    /* just activated: next check between half an interval and one interval away */
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants WHERE revalidate_due_at IS NULL"), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants"
                            " WHERE revalidate_due_at < activated_at + interval '29 minutes'"
                            "    OR revalidate_due_at > activated_at + interval '61 minutes'"),
                 0, "fresh tenants are not checked at once");
    cr_assert_eq(revalidations(), 0);
    /* tenants activated long ago, never scheduled (an upgrade): spread over the interval */
    free(h_sql("UPDATE tq.tenants SET activated_at = now() - interval '2 days',"
               " last_validated_at = NULL, revalidate_due_at = NULL"));
    full_chores_pass(H.queue);
    long early = h_sql_long("SELECT count(*) FROM tq.tenants"
                            " WHERE revalidate_due_at < now() + interval '30 minutes'");
    cr_assert(early >= 5 && early <= n - 5, "%ld of %d due in the first half hour", early, n);
    cr_assert_leq(revalidations(), 3, "no round: at most the few due in these seconds");
    cr_assert_eq(h_worker_stop(a, 15000), 0);
}

Test(revalidation, redis_flush_and_restarts_queue_no_round)
{
    submit_n("fl", 10);
    pid_t a = worker_on(NULL, "1500");
    cr_assert(all_active(10, 30000));
    full_chores_pass(H.queue);
    cr_assert_eq(revalidations(), 0);
    free(s_redis("FLUSHALL"));
    cr_assert_eq(h_worker_stop(a, 15000), 0);
    a = worker_on(NULL, "1500");
    pid_t b = worker_on(NULL, "1500");
    full_chores_pass(H.queue);
    cr_assert_eq(revalidations(), 0, "a flush and two worker starts queued a revalidation round");
    cr_assert_eq(h_worker_stop(a, 15000), 0);
    cr_assert_eq(h_worker_stop(b, 15000), 0);
}

/* ------------------------------------------------------------ 12.6 */

Test(revalidation, flush_then_kill9_leaves_no_processing_list)
{
    h_use_pipeline(h_write_file("slow.json", "{\"name\":\"slow\",\"steps\":[{\"name\":\"s\","
                                     "\"kind\":\"sleep\",\"params\":{\"ms\":2000}}]}"));
    submit_n("pl", 1);
    /* a long lease: the next heartbeat (re-registration) is 20 s away */
    pid_t a = worker_on(NULL, "60000");
    cr_assert(h_wait_sql("running", 20000, "SELECT status FROM tq.jobs LIMIT 1"));
    char *id = s_redis("SRANDMEMBER tq:{%s}:workers", H.queue);
    cr_assert(id && *id, "the worker registered");
    free(s_redis("FLUSHALL"));
    /* after the flush the worker reserves again: a list in no worker set */
    submit_n("pm", 1);
    uint64_t end = tq_mono_ms() + 20000;
    while (tq_mono_ms() < end && s_redis_long("EXISTS tq:{%s}:proc:%s", H.queue, id) == 0)
        tq_sleep_ms(20);
    cr_assert_eq(s_redis_long("EXISTS tq:{%s}:proc:%s", H.queue, id), 1, "reserved after flush");
    cr_assert_eq(s_redis_long("SISMEMBER tq:{%s}:workers %s", H.queue, id), 0,
                 "not registered again yet");
    kill(a, SIGKILL);
    int st;
    waitpid(a, &st, 0);
    pid_t b = worker_on(NULL, "1500");
    end = tq_mono_ms() + 30000;
    while (tq_mono_ms() < end && s_redis_long("EXISTS tq:{%s}:proc:%s", H.queue, id) == 1)
        tq_sleep_ms(100);
    cr_assert_eq(s_redis_long("EXISTS tq:{%s}:proc:%s", H.queue, id), 0,
                 "the dead worker's processing list was reaped");
    free(id);
    cr_assert_eq(h_worker_stop(b, 15000), 0);
}

/* ------------------------------------------------------------ done when */

/* Every Redis list of the queue is empty (missing counts as empty). */
static long list_items(void)
{
    static const char count_lua[] =
        "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do"
        " if redis.call('TYPE', k).ok == 'list' then n = n + redis.call('LLEN', k) end"
        " end return n";
    char pattern[128];
    snprintf(pattern, sizeof(pattern), "tq:{%s}:*", H.queue);
    return s_redis_long("EVAL %s 0 %s", count_lua, pattern);
}

Test(revalidation, chaos_kill9_and_flush_every_tenant_active_every_list_empty)
{
    h_use_pipeline(h_write_file("chaos.json",
                        "{\"name\":\"chaos\",\"steps\":["
                        "{\"name\":\"a\",\"kind\":\"sleep\",\"params\":{\"ms\":300}},"
                        "{\"name\":\"b\",\"kind\":\"sleep\",\"params\":{\"ms\":300},"
                        "\"needs\":[\"a\"]}]}"));
    const int n = 60;
    submit_n("ch", n);
    pid_t w[3];
    for (int i = 0; i < 3; i++)
        w[i] = worker_on(NULL, "1500");
    unsigned seed = (unsigned)getpid();
    bool flushed = false;
    int kills = 0;
    uint64_t start = tq_mono_ms();
    while (tq_mono_ms() - start < 60000 &&
           h_sql_long("SELECT count(*) FROM tq.tenants WHERE status = 'active'") < n - 5) {
        tq_sleep_ms(2000);
        int victim = rand_r(&seed) % 3;
        kill(w[victim], SIGKILL);
        int st;
        waitpid(w[victim], &st, 0);
        kills++;
        if (!flushed &&
            h_sql_long("SELECT count(*) FROM tq.tenants WHERE status = 'active'") >= n / 4) {
            free(s_redis("FLUSHALL"));
            flushed = true;
        }
        w[victim] = worker_on(NULL, "1500");
    }
    cr_assert(flushed, "the flush happened mid-batch");
    cr_assert(all_active(n, 120000), "every tenant active");
    /* every list drains within a minute: ready, processing lists, dead */
    uint64_t end = tq_mono_ms() + 60000;
    while (tq_mono_ms() < end && list_items() != 0)
        tq_sleep_ms(250);
    long left = list_items();
    for (int i = 0; i < 3; i++)
        cr_assert_eq(h_worker_stop(w[i], 20000), 0);
    cr_assert_eq(left, 0, "%ld ids left in Redis lists a minute after the batch", left);
    cr_assert_eq(revalidations(), 0, "no revalidation storm after the flush and restarts");
    fprintf(stderr, "chaos: %d tenants active after %d kill -9 and a flush\n", n, kills);
}
