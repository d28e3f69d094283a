/*
 * Submit at scale, through the real binary: a 10,000-row batch is all or
 * nothing, names every bad row, and a rerun creates nothing twice; the
 * --stream mode answers each line in order, goes on after a bad line, and
 * keeps every request whole across Redis and PostgreSQL outages (private
 * servers, tests/integration/services.c).
 */
#include <criterion/criterion.h>
#include <fcntl.h>
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

/* One no-op step, registered as the default (a submit never brings its own). */
static void use_pipeline(void)
{
    h_use_pipeline(h_write_file("submit-test.json",
                                "{\"name\": \"submit-test\", \"version\": 1, \"steps\": ["
                                "{\"name\": \"one\", \"kind\": \"noop\"}]}"));
}

static void bulk_init(void)
{
    h_setup();
    use_pipeline();
}

static void stream_init(void)
{
    h_setup();
    s_start();
    use_pipeline();
}

static void stream_fini(void)
{
    s_stop();
    h_teardown();
}

TestSuite(bulk, .init = bulk_init, .fini = h_teardown, .timeout = 300);
TestSuite(stream, .init = stream_init, .fini = stream_fini, .timeout = 300);

#define ROWS 10000

/* ROWS JSON lines; every 1,000th a Gold budget above the approval threshold. */
static char *batch_file(int bad_region_line, int dup_line)
{
    struct tq_buf b;
    tq_buf_init(&b);
    for (int i = 1; i <= ROWS; i++) {
        bool gold = i % 1000 == 0;
        int id = i == dup_line ? 2 : i;
        tq_buf_printf(&b,
                      "{\"tenant_id\":\"%s-%05d\",\"name\":\"Bulk %s %d\",\"tier\":\"%s\","
                      "\"region\":\"%s\",\"budget\":%d,\"owner\":\"o%d@example.com\"}\n",
                      H.tag, id, H.tag, i, gold ? "Gold" : "Bronze",
                      i == bad_region_line ? "mars-1" : "us-east-1", gold ? 1200000 : 1000, i);
    }
    return tq_buf_take(&b, NULL);
}

#define SQL_COUNTS                                                                         \
    "SELECT (SELECT count(*) FROM tq.tenants) || '/' || (SELECT count(*) FROM tq.jobs) || '/'" \
    " || (SELECT count(*) FROM tq.audit_events WHERE tenant_id IS NOT NULL) || '/'"        \
    " || (SELECT count(*) FROM tq.batch_tenants)"

Test(bulk, ten_thousand_rows_all_or_nothing_and_rerun_creates_nothing_twice)
{
    /* two bad rows among 10,000: both named, nothing written */
    char *text = batch_file(7777, 9001);
    const char *path = h_write_file("bad.jsonl", text);
    free(text);
    char *out = NULL, *err = NULL;
    int rc = h_enqueue(&out, &err, "--json", "submit", "--file", path, "--batch", "big", NULL);
    cr_assert_eq(rc, 3, "a bad row rejects the batch: %s", err);
    json_t *o = h_json(out, "batch rejection");
    json_t *errs = json_object_get(json_object_get(o, "error"), "errors");
    cr_assert_eq(json_array_size(errs), 2, "every bad row, and only those: %s", out);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(errs, 0), "line")), 7777);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(errs, 0), "field")),
                     "region");
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(errs, 1), "line")), 9001);
    cr_assert(strstr(json_string_value(json_object_get(json_array_get(errs, 1), "rule")),
                     "duplicates the tenant id of line 2"),
              "%s", out);
    cr_assert(strstr(err, "line 7777: region"), "%s", err);
    json_decref(o);
    free(out);
    free(err);
    char *c = h_sql(SQL_COUNTS);
    cr_assert_str_eq(c, "0/0/0/0", "nothing written: %s", c);
    free(c);
    cr_assert_eq(h_redis_long("EXISTS tq:{%s}:ready", H.queue), 0, "nothing dispatched");

    /* the fixed batch: every row, held where the budget needs approval */
    text = batch_file(0, 0);
    path = h_write_file("good.jsonl", text);
    free(text);
    for (int round = 0; round < 2; round++) {
        rc = h_enqueue(&out, &err, "--json", "submit", "--file", path, "--batch", "big", NULL);
        cr_assert_eq(rc, 0, "round %d: %s", round, err);
        o = h_json(out, "batch accepted");
        json_t *reqs = json_object_get(o, "requests");
        cr_assert_eq(json_array_size(reqs), ROWS);
        size_t i;
        json_t *r;
        long held = 0;
        json_array_foreach(reqs, i, r) {
            char want[64];
            snprintf(want, sizeof(want), "%s-%05zu", H.tag, i + 1);
            cr_assert_str_eq(json_string_value(json_object_get(r, "tenant_id")), want,
                             "answers in file order");
            cr_assert_eq(json_is_true(json_object_get(r, "existed")), round == 1,
                         "round %d row %zu", round, i + 1);
            held += strcmp(json_string_value(json_object_get(r, "status")), "pending_approval") ==
                    0;
        }
        cr_assert_eq(held, ROWS / 1000, "round %d", round);
        json_decref(o);
        free(out);
        free(err);
        /* nothing twice: rows, events and dispatches as after the first round */
        c = h_sql(SQL_COUNTS);
        char want[64];
        /* audit: submitted, then approved (auto) or pending_approval, per row */
        snprintf(want, sizeof(want), "%d/%d/%d/%d", ROWS, ROWS, ROWS + ROWS, ROWS);
        cr_assert_str_eq(c, want, "round %d: tenants/jobs/audit/members", round);
        free(c);
        cr_assert_eq(h_redis_long("LLEN tq:{%s}:ready", H.queue), ROWS - ROWS / 1000,
                     "round %d: each queued job dispatched once", round);
    }
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs j JOIN tq.tenants t USING (tenant_id)"
                            " WHERE (j.status = 'held') = (t.status = 'pending_approval')"
                            " AND (t.approver IS NULL) = (t.status = 'pending_approval')"
                            " AND j.idempotency_key = t.tenant_id AND t.batch_id = 'big'"),
                 ROWS, "jobs, tenants and approvals agree");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event = 'approved'"
                            " AND actor = 'auto'"),
                 ROWS - ROWS / 1000);
}

/* ------------------------------------------------------------------ stream */

struct co {
    pid_t pid;
    FILE *in;    /* the stream's stdin */
    FILE *out;   /* its stdout */
};

static void co_start(struct co *co, const char *batch)
{
    int to[2], from[2];
    cr_assert_eq(pipe(to), 0);
    cr_assert_eq(pipe(from), 0);
    /* Our ends close on exec: a server the test starts later (pg_ctl, redis)
       must not hold the stream's stdin open, or it never sees its end. */
    fcntl(to[1], F_SETFD, FD_CLOEXEC);
    fcntl(from[0], F_SETFD, FD_CLOEXEC);
    char errpath[512];
    snprintf(errpath, sizeof(errpath), "%s/stream.err", H.tmpdir);
    co->pid = fork();
    cr_assert_neq(co->pid, -1);
    if (co->pid == 0) {
        dup2(to[0], 0);
        dup2(from[1], 1);
        if (!freopen(errpath, "a", stderr))
            _exit(126);
        close(to[0]);
        close(to[1]);
        close(from[0]);
        close(from[1]);
        execl(TQ_ENQUEUE_BIN, TQ_ENQUEUE_BIN, "submit", "--stream", "--batch", batch,
              (char *)NULL);
        _exit(127);
    }
    h_worker_adopt(co->pid);
    close(to[0]);
    close(from[1]);
    co->in = fdopen(to[1], "w");
    co->out = fdopen(from[0], "r");
    cr_assert(co->in && co->out);
}

static void co_send(struct co *co, const char *line)
{
    fprintf(co->in, "%s\n", line);
    fflush(co->in);
}

static json_t *co_read(struct co *co)
{
    char *line = NULL;
    size_t cap = 0;
    cr_assert_gt(getline(&line, &cap, co->out), 0, "the stream answered");
    json_t *o = h_json(line, "one JSON answer per line");
    free(line);
    return o;
}

static json_t *co_ask(struct co *co, const char *line)
{
    co_send(co, line);
    return co_read(co);
}

/* At the end of its input the stream exits 0. */
static void co_end(struct co *co)
{
    fclose(co->in);
    char *line = NULL;
    size_t cap = 0;
    cr_assert_eq(getline(&line, &cap, co->out), -1, "no answer without a request: %s", line);
    free(line);
    fclose(co->out);
    cr_assert_eq(h_wait_pid(co->pid, 30000), 0);
}

static const char *req(const char *id, const char *extra)
{
    static char buf[4][512];
    static int slot;
    char *b = buf[slot++ % 4];
    snprintf(b, 512,
             "{\"tenant_id\":\"%s\",\"name\":\"Stream %s\",\"tier\":\"Bronze\","
             "\"region\":\"us-east-1\",\"budget\":1000,\"owner\":\"s@example.com\"%s}",
             id, id, extra ? extra : "");
    return b;
}

static void assert_ok(json_t *a, const char *id, bool existed)
{
    char *s = json_dumps(a, JSON_COMPACT);
    cr_assert(json_is_true(json_object_get(a, "ok")), "ok: %s", s);
    cr_assert_str_eq(json_string_value(json_object_get(a, "tenant_id")), id, "%s", s);
    cr_assert_eq(json_is_true(json_object_get(a, "existed")), existed, "%s", s);
    cr_assert_gt(json_integer_value(json_object_get(a, "job_id")), 0, "%s", s);
    free(s);
}

Test(stream, answers_in_order_and_goes_on_after_a_bad_line)
{
    struct co co;
    co_start(&co, "st");
    /* written together before any answer is read: answered in order */
    char ids[40][64], extra[40][64];
    for (int i = 0; i < 40; i++) {
        snprintf(ids[i], sizeof(ids[i]), "%s", h_tenant("ord"));
        snprintf(ids[i] + strlen(ids[i]), sizeof(ids[i]) - strlen(ids[i]), "-%02d", i);
        snprintf(extra[i], sizeof(extra[i]), ",\"ref\":%d", i);
        if (i == 17)
            co_send(&co, "{\"tenant_id\":\"Bad Id\",\"tier\":\"Platinum\",\"ref\":\"x\"}");
        else if (i == 23)
            co_send(&co, "this is not json");
        else
            co_send(&co, req(ids[i], extra[i]));
        if (i == 5)
            co_send(&co, "   ");   /* blank: not a request, no answer */
    }
    int64_t last = 0;
    for (int i = 0; i < 40; i++) {
        json_t *a = co_read(&co);
        char *s = json_dumps(a, JSON_COMPACT);
        if (i == 17) {
            cr_assert(json_is_false(json_object_get(a, "ok")), "%s", s);
            json_t *e = json_object_get(a, "error");
            cr_assert_eq(json_integer_value(json_object_get(e, "exit_code")), 3, "%s", s);
            cr_assert_str_eq(json_string_value(json_object_get(a, "ref")), "x", "%s", s);
            /* every problem at once: id, name, tier, region, budget, owner */
            cr_assert_eq(json_array_size(json_object_get(e, "errors")), 6, "%s", s);
        } else if (i == 23) {
            cr_assert(json_is_false(json_object_get(a, "ok")), "%s", s);
            cr_assert(strstr(s, "\"field\":\"line\""), "%s", s);
        } else {
            assert_ok(a, ids[i], false);
            cr_assert_eq(json_integer_value(json_object_get(a, "ref")), i, "in order: %s", s);
            cr_assert(json_is_false(json_object_get(a, "dispatch_deferred")), "%s", s);
            int64_t id = json_integer_value(json_object_get(a, "job_id"));
            cr_assert_gt(id, last, "job ids rise with the order: %s", s);
            last = id;
        }
        free(s);
        json_decref(a);
    }
    /* the same request again: the same job, nothing new */
    json_t *a = co_ask(&co, req(ids[0], NULL));
    assert_ok(a, ids[0], true);
    json_decref(a);
    co_end(&co);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants"), 38);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event = 'submitted'"), 38);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.batch_tenants WHERE batch_id = 'st'"), 38);
    cr_assert_eq(s_redis_long("LLEN tq:{%s}:ready", H.queue), 38, "each dispatched once");
}

Test(stream, redis_down_mid_stream_commits_and_the_reconciler_dispatches)
{
    struct co co;
    co_start(&co, "rd");
    const char *a = h_tenant("rda"), *b = h_tenant("rdb"), *c = h_tenant("rdc");
    json_t *r = co_ask(&co, req(a, NULL));
    assert_ok(r, a, false);
    cr_assert(json_is_false(json_object_get(r, "dispatch_deferred")));
    json_decref(r);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "redis-cli -p %d shutdown nosave >/dev/null 2>&1", S.redis_port);
    cr_assert_eq(system(cmd), 0);
    /* committed, dispatch deferred, the stream goes on */
    r = co_ask(&co, req(b, NULL));
    assert_ok(r, b, false);
    cr_assert(json_is_true(json_object_get(r, "dispatch_deferred")), "deferred while away");
    json_decref(r);
    r = co_ask(&co, req(c, NULL));
    assert_ok(r, c, false);
    cr_assert(json_is_true(json_object_get(r, "dispatch_deferred")));
    json_decref(r);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs WHERE status = 'queued'"), 3);
    s_redis_restart(true);   /* back, empty: only the reconciler knows the jobs */
    /* the stream's connection comes back by itself */
    const char *d = h_tenant("rdd");
    r = co_ask(&co, req(d, NULL));
    assert_ok(r, d, false);
    cr_assert(json_is_false(json_object_get(r, "dispatch_deferred")), "Redis is back");
    json_decref(r);
    co_end(&co);
    const char *env[] = {"TQ_LEASE_MS=1500", "TQ_CONCURRENCY=4", NULL};
    pid_t w = h_worker_start(env);
    cr_assert(h_wait_sql("4", 60000, "SELECT count(*) FROM tq.tenants WHERE status = 'active'"),
              "the deferred requests were dispatched by the reconciler and ran");
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs"), 4);
}

Test(stream, postgres_restarted_mid_stream_reconnects_and_nothing_is_half_done)
{
    struct co co;
    co_start(&co, "pr");
    const char *a = h_tenant("pra"), *b = h_tenant("prb"), *c = h_tenant("prc");
    json_t *r = co_ask(&co, req(a, NULL));
    assert_ok(r, a, false);
    json_decref(r);
    /* restarted between two requests: the next one reconnects and says so */
    s_pg_restart();
    r = co_ask(&co, req(b, NULL));
    assert_ok(r, b, false);
    cr_assert_geq(json_integer_value(json_object_get(r, "reconnect_attempts")), 1,
                  "the answer says PostgreSQL was found again");
    json_decref(r);
    /* down for longer than the stream waits: answered as unreachable, nothing written */
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "%s/usr/lib/postgresql/15/bin/pg_ctl -D %s/pg/data -m fast -w stop >/dev/null",
             geteuid() == 0 ? "runuser -u postgres -- " : "", S.dir);
    cr_assert_eq(system(cmd), 0);
    r = co_ask(&co, req(c, NULL));
    char *s = json_dumps(r, JSON_COMPACT);
    cr_assert(json_is_false(json_object_get(r, "ok")), "%s", s);
    json_t *e = json_object_get(r, "error");
    cr_assert_eq(json_integer_value(json_object_get(e, "exit_code")), 1, "unreachable: %s", s);
    cr_assert(strstr(json_string_value(json_object_get(e, "message")), "nothing was submitted"),
              "%s", s);
    free(s);
    json_decref(r);
    s_pg_restart();   /* starts it again */
    /* sent again: written once, whole (tenant, job, both audit events) */
    r = co_ask(&co, req(c, NULL));
    assert_ok(r, c, false);
    json_decref(r);
    r = co_ask(&co, req(b, NULL));
    assert_ok(r, b, true);
    json_decref(r);
    co_end(&co);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants"), 3);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs"), 3);
    /* the tenants' events (registering the pipeline has its own) */
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id IS NOT NULL"), 6);
    cr_assert_eq(s_redis_long("LLEN tq:{%s}:ready", H.queue), 3);
}
