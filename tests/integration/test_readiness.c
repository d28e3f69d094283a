/*
 * What the worker reports about its dependencies, against a private Redis
 * and PostgreSQL (services.c) that the tests break on purpose: /readyz
 * names what is wrong (WRONGTYPE, out of memory, read-only, not migrated)
 * instead of "unreachable", and tq_dependency_up follows PostgreSQL within
 * a few heartbeats because each beat is a real round trip.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "netutil.h"
#include "services.h"
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

TestSuite(readiness, .init = init, .fini = fini, .timeout = 240);

/* /readyz's answer, polled until it contains want (or timeout). */
static char *readyz_until(int port, const char *want, int timeout_ms)
{
    char *r = NULL;
    for (int waited = 0; waited <= timeout_ms; waited += 200) {
        free(r);
        r = get(port, "/readyz");
        if (strstr(r, want))
            break;
        tq_sleep_ms(200);
    }
    return r;
}

static int metric(int port, const char *series)
{
    char *r = get(port, "/metrics");
    const char *p = strstr(r, series);
    int v = p ? atoi(p + strlen(series)) : -1;
    free(r);
    return v;
}

static pid_t ready_worker(int port)
{
    char log_path[300];
    snprintf(log_path, sizeof(log_path), "%s/worker.log", H.tmpdir);
    setenv("TQ_LEASE_MS", "1500", 1);   /* heartbeat every 500 ms */
    pid_t w = worker_with_limit(port, 1024, log_path);
    char *r = readyz_until(port, "ready", 20000);
    cr_assert_eq(status_of(r), 200, "%s", r);
    free(r);
    return w;
}

Test(readiness, redis_refusals_are_not_unreachable)
{
    int port = free_port();
    pid_t w = ready_worker(port);
    /* Someone made the delayed set a string: the heartbeat's read of it gets
       WRONGTYPE, while the fetcher's reserves from ready still succeed. */
    free(s_redis("SET tq:{%s}:delayed garbage", H.queue));
    char *r = readyz_until(port, "WRONGTYPE", 20000);
    cr_assert_eq(status_of(r), 503, "%s", r);
    cr_assert_not_null(strstr(r, "wrong type"), "%s", r);
    cr_assert_null(strstr(r, "unreachable"), "Redis answered: %s", r);
    free(r);
    for (int i = 0; i < 10; i++) {
        tq_sleep_ms(200);
        r = get(port, "/readyz");
        cr_assert_eq(status_of(r), 503, "a successful reserve does not hide it, answer %d: %s", i,
                     r);
        free(r);
    }
    free(s_redis("DEL tq:{%s}:delayed", H.queue));
    r = readyz_until(port, "ready\n", 20000);
    cr_assert_eq(status_of(r), 200, "%s", r);
    free(r);
    /* Out of memory (noeviction): writes are refused. */
    free(s_redis("CONFIG SET maxmemory 1"));
    r = readyz_until(port, "OOM", 20000);
    cr_assert_eq(status_of(r), 503, "%s", r);
    cr_assert_not_null(strstr(r, "out of memory"), "%s", r);
    cr_assert_null(strstr(r, "unreachable"), "%s", r);
    free(r);
    /* The fetcher's reads still succeed meanwhile: they must not flip it back to ready. */
    for (int i = 0; i < 10; i++) {
        tq_sleep_ms(200);
        r = get(port, "/readyz");
        cr_assert_eq(status_of(r), 503, "still out of memory, answer %d: %s", i, r);
        free(r);
    }
    free(s_redis("CONFIG SET maxmemory 0"));
    r = readyz_until(port, "ready\n", 20000);
    cr_assert_eq(status_of(r), 200, "ready again once Redis has memory: %s", r);
    free(r);
    cr_assert_eq(h_worker_stop(w, 20000), 0);
}

Test(readiness, database_refusals_are_not_unreachable)
{
    int port = free_port();
    pid_t w = ready_worker(port);
    /* Read-only: new sessions are, and the worker's are ended so it reconnects. */
    free(h_sql("ALTER DATABASE tenantq SET default_transaction_read_only = on"));
    free(h_sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
               " WHERE datname = 'tenantq' AND pid <> pg_backend_pid()"));
    char *r = readyz_until(port, "read-only", 20000);
    cr_assert_eq(status_of(r), 503, "%s", r);
    cr_assert_null(strstr(r, "unreachable"), "PostgreSQL answered: %s", r);
    free(r);
    cr_assert_eq(metric(port, "tq_dependency_up{service=\"postgresql\"} "), 1,
                 "it is up, it only refuses");
    free(h_sql("ALTER DATABASE tenantq RESET default_transaction_read_only"));
    free(h_sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
               " WHERE datname = 'tenantq' AND pid <> pg_backend_pid()"));
    r = readyz_until(port, "ready\n", 20000);
    cr_assert_eq(status_of(r), 200, "%s", r);
    free(r);
    /* Not migrated: the schema is older than the worker. */
    free(h_sql("DELETE FROM tq.schema_migrations WHERE version ="
               " (SELECT max(version) FROM tq.schema_migrations)"));
    r = readyz_until(port, "not migrated", 20000);
    cr_assert_eq(status_of(r), 503, "%s", r);
    cr_assert_null(strstr(r, "unreachable"), "%s", r);
    free(r);
    cr_assert_eq(h_worker_stop(w, 20000), 0);
}

Test(readiness, dependency_up_follows_the_last_round_trip)
{
    int port = free_port();
    pid_t w = ready_worker(port);
    cr_assert_eq(metric(port, "tq_dependency_up{service=\"postgresql\"} "), 1);
    s_pg_stop();
    /* The heartbeat runs every 500 ms: a few beats, not ten seconds. */
    int v = 1;
    for (int i = 0; i < 25 && v != 0; i++) {
        tq_sleep_ms(200);
        v = metric(port, "tq_dependency_up{service=\"postgresql\"} ");
    }
    cr_assert_eq(v, 0, "PostgreSQL stopped: tq_dependency_up is 0 within 5 s (10 heartbeats)");
    char *r = get(port, "/readyz");
    cr_assert_not_null(strstr(r, "postgresql unreachable"), "%s", r);
    free(r);
    s_pg_start();
    for (int i = 0; i < 100 && v != 1; i++) {
        tq_sleep_ms(200);
        v = metric(port, "tq_dependency_up{service=\"postgresql\"} ");
    }
    cr_assert_eq(v, 1, "back once PostgreSQL is");
    cr_assert_eq(h_worker_stop(w, 20000), 0);
}
