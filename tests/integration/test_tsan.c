/*
 * ThreadSanitizer over the worker: the worker built with -DTQ_TSAN=ON in
 * its own build directory (deploy/local/test builds .build/tsan and points
 * this test at it) runs a batch in which operators cancel tenants while
 * their steps run on the thread pool, blocking steps that outlive a short
 * timeout are cancelled through PQcancel from the pool, and a drain
 * cancels what still runs. Any report of a
 * data race ends the worker with exit code 66 (TSAN_OPTIONS below).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tq/util.h"

TestSuite(tsan, .init = h_setup, .fini = h_teardown, .timeout = 300);

#define N 24

Test(tsan, batch_with_cancels_timeouts_and_a_drain_is_race_free)
{
    /* blocking pool (pg_tenant, tenant_config, check_audit), loop timers
       (sleep), a timeout that cancels a step, operator cancels */
    const char *text =
        "{\"name\":\"tsan\",\"steps\":["
        /* under ThreadSanitizer a first pg_tenant often takes longer than this:
           its attempt is cancelled with PQcancel from the pool, then retried */
        "{\"name\":\"postgres\",\"kind\":\"pg_tenant\",\"timeout_ms\":400,"
        " \"retry\":{\"max_attempts\":20,\"base_ms\":100,\"max_ms\":200}},"
        "{\"name\":\"config\",\"kind\":\"tenant_config\",\"needs\":[\"postgres\"]},"
        "{\"name\":\"pace\",\"kind\":\"sleep\",\"needs\":[\"config\"],\"params\":{\"ms\":600}},"
        "{\"name\":\"slow\",\"kind\":\"sleep\",\"needs\":[\"config\"],\"timeout_ms\":200,"
        " \"params\":{\"ms\":150}},"
        "{\"name\":\"audit\",\"kind\":\"check_audit\",\"class\":\"compliance\","
        " \"needs\":[\"pace\",\"slow\"]}]}";
    h_use_pipeline(h_write_file("tsan.json", text));
    struct tq_buf b;
    tq_buf_init(&b);
    tq_buf_puts(&b, "tenant_id,name,tier,region,budget,owner\n");
    for (int i = 0; i < N; i++)
        tq_buf_printf(&b, "ts%d-%s,Tsan %d %s,Bronze,us-east-1,%d,o@example.com\n", i, H.tag, i,
                      H.tag, 10000 + i);
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "submit", "--file", h_write_file("b.csv", b.data), "--batch",
                           "tsan", NULL),
                 0, "submit: %s", err);
    free(err);
    tq_buf_cleanup(&b);
    const char *env[] = {"TQ_CONCURRENCY=8", "TQ_GRACE_MS=300",
                         "TSAN_OPTIONS=halt_on_error=1 exitcode=66 second_deadlock_stack=1", NULL};
    pid_t w = h_worker_start(env);
    cr_assert(h_wait_sql("1", 120000, "SELECT (count(*) >= 4)::int FROM tq.tenants"
                         " WHERE status = 'active'"));
    /* cancel every third tenant, wherever it is */
    for (int i = 0; i < N; i += 3) {
        char id[64];
        snprintf(id, sizeof(id), "ts%d-%s", i, H.tag);
        h_enqueue(NULL, NULL, "cancel", id, NULL);
    }
    /* let the rest run a little, then drain while steps still run */
    h_wait_sql("1", 120000, "SELECT (count(*) >= 12)::int FROM tq.tenants"
               " WHERE status IN ('active', 'cancelled')");
    int rc = h_worker_stop(w, 60000);
    cr_assert_eq(rc, 0, "the ThreadSanitizer worker exited %d (66: a data race was reported)", rc);
    /* a second worker finishes what was handed back, if anything was: still race
       free (a worker stopped before it set up its signal handlers would only
       show the test's haste, so none is started for nothing) */
    if (h_sql_long("SELECT count(*) FROM tq.tenants WHERE status NOT IN ('active', 'cancelled')")) {
        pid_t w2 = h_worker_start(env);
        cr_assert(h_wait_sql("0", 120000, "SELECT count(*) FROM tq.tenants"
                             " WHERE status NOT IN ('active', 'cancelled')"));
        rc = h_worker_stop(w2, 60000);
        cr_assert_eq(rc, 0, "the ThreadSanitizer worker exited %d (66: a data race was reported)",
                     rc);
    }
}
