/*
 * status --watch through the real binary: in a pseudo-terminal (script(1))
 * it redraws progress bars in place until every tenant has finished; into a
 * pipe it prints one line per change (text or JSON lines). Progress is made
 * by SQL from the test while the watcher polls, as a worker would write it.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "tq/util.h"

TestSuite(cli_watch, .init = h_setup, .fini = h_teardown, .timeout = 120);

static const char pipeline4[] =
    "{\"name\": \"four\", \"version\": 1, \"steps\": ["
    "{\"name\": \"schema\", \"kind\": \"noop\"},"
    "{\"name\": \"bucket\", \"kind\": \"noop\", \"needs\": [\"schema\"]},"
    "{\"name\": \"config\", \"kind\": \"noop\", \"needs\": [\"bucket\"]},"
    "{\"name\": \"validate\", \"kind\": \"noop\", \"needs\": [\"config\"]}]}";
static const char *const steps4[] = {"schema", "bucket", "config", "validate"};

/* Submit n Bronze tenants as one batch on the four-step pipeline; ids out. */
static void submit_batch(const char *batch, size_t n, char ids[][64])
{
    h_use_pipeline(h_write_file("four.json", pipeline4));
    char *csv = tq_xstrdup("tenant_id,name,tier,region,budget,owner\n");
    for (size_t i = 0; i < n; i++) {
        char stem[16];
        snprintf(stem, sizeof(stem), "t%02zu", i + 1);
        snprintf(ids[i], 64, "%s", h_tenant(stem));
        char *next = tq_xasprintf("%s%s,Tenant %02zu,Bronze,us-east-1,%zu,ops@example.com\n", csv,
                                  ids[i], i + 1, 50000 + i * 1000);
        free(csv);
        csv = next;
    }
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--file", h_write_file("batch.csv", csv), "--batch",
                       batch, NULL);
    cr_assert_eq(rc, 0, "%s", err);
    free(err);
    free(csv);
}

static long job_of(const char *id)
{
    return h_sql_long("SELECT max(id) FROM tq.jobs WHERE tenant_id = '%s'", id);
}

/* What a worker writes when step k (0-based) of a tenant's job is done. */
static void step_done(const char *id, int k)
{
    long job = job_of(id);
    free(h_sql("UPDATE tq.tenants SET status = 'provisioning', updated_at = now()"
               " WHERE tenant_id = '%s'", id));
    free(h_sql("UPDATE tq.jobs SET status = 'running' WHERE id = %ld", job));
    free(h_sql("INSERT INTO tq.job_steps (job_id, step, status, attempts, started_at, finished_at)"
               " VALUES (%ld, '%s', 'succeeded', 1, now(), now()) ON CONFLICT (job_id, step)"
               " DO UPDATE SET status = 'succeeded', finished_at = now()", job, steps4[k]));
    if (k + 1 < 4)
        free(h_sql("INSERT INTO tq.job_steps (job_id, step, status, attempts, started_at)"
                   " VALUES (%ld, '%s', 'running', 1, now())"
                   " ON CONFLICT (job_id, step) DO NOTHING", job, steps4[k + 1]));
}

static void finish(const char *id, const char *status)
{
    long job = job_of(id);
    free(h_sql("UPDATE tq.jobs SET status = '%s' WHERE id = %ld",
               strcmp(status, "active") == 0 ? "succeeded" : "failed", job));
    free(h_sql("UPDATE tq.tenants SET status = '%s', failure_reason = %s WHERE tenant_id = '%s'",
               status, strcmp(status, "failed") == 0 ? "'step config: quota exceeded'" : "NULL",
               id));
}

/* Group a worker's writes so a poll sees all of them or none. */
static void begin(void)
{
    free(h_sql("BEGIN"));
}

static void commit(void)
{
    free(h_sql("COMMIT"));
}

static char *slurp(const char *path)
{
    char *s = NULL;
    size_t n;
    cr_assert_eq(tq_read_file(path, 16 << 20, &s, &n), TQ_OK, "read %s", path);
    return s;
}

/* The line of the screen text frame that mentions needle, or NULL. */
static char *line_with(const char *frame, const char *needle, char *buf, size_t cap)
{
    const char *p = strstr(frame, needle);
    if (!p)
        return NULL;
    const char *start = p, *end = p;
    while (start > frame && start[-1] != '\n')
        start--;
    while (*end && *end != '\n' && *end != '\r')
        end++;
    size_t n = (size_t)(end - start) < cap - 1 ? (size_t)(end - start) : cap - 1;
    memcpy(buf, start, n);
    buf[n] = '\0';
    return buf;
}

Test(cli_watch, terminal_bars_redraw_in_place_and_reach_100)
{
    char ids[10][64];
    submit_batch("wb10", 10, ids);
    char out_path[300], cmd[1024];
    snprintf(out_path, sizeof(out_path), "%s/screen.txt", H.tmpdir);
    snprintf(cmd, sizeof(cmd),
             "stty cols 100 rows 30; %s status --watch --batch wb10 --interval 0.2 --timeout 90",
             TQ_ENQUEUE_BIN);
    const char *argv[] = {"/usr/bin/script", "-qfec", cmd, "/dev/null", NULL};
    pid_t pid = h_spawn(argv, out_path);
    tq_sleep_ms(800);
    /* the workers progress: four steps, tenant by tenant */
    for (int k = 0; k < 4; k++) {
        for (size_t i = 0; i < 10; i++) {
            if (i == 9 && k >= 2)
                continue;   /* the last one fails at its third step */
            step_done(ids[i], k);
        }
        tq_sleep_ms(500);
    }
    for (size_t i = 0; i < 9; i++) {
        finish(ids[i], "active");
        tq_sleep_ms(100);
    }
    tq_sleep_ms(500);
    char *mid = slurp(out_path);
    cr_assert_null(strstr(mid, "all 10 tenants finished"), "one tenant is still provisioning");
    free(mid);
    finish(ids[9], "failed");
    int rc = h_wait_pid(pid, 30000);
    cr_assert_eq(rc, 0, "watch exits 0 once every tenant finished (rc %d)", rc);

    char *screen = slurp(out_path);
    cr_assert(strstr(screen, "\x1b[2K") && strstr(screen, "A\r\x1b[2K"),
              "redraws in place with cursor movement");
    const char *last = screen, *p;
    while ((p = strstr(last + 1, "tq-enqueue status --watch")))
        last = p;
    cr_assert_neq(last, screen, "several frames were drawn");
    /* the first frame: nothing done yet */
    char buf[512];
    cr_assert_not_null(line_with(screen, "0/10 finished", buf, sizeof(buf)), "%s", screen);
    cr_assert(strstr(buf, "  0%"), "batch bar starts at 0%%: %s", buf);
    /* the last frame: the batch and nine bars at 100%, the failed one at 50% */
    cr_assert_not_null(line_with(last, "10/10 finished", buf, sizeof(buf)), "%s", last);
    cr_assert(strstr(buf, "[##########") && strstr(buf, "100%"), "batch bar full: %s", buf);
    for (size_t i = 0; i < 9; i++) {
        cr_assert_not_null(line_with(last, ids[i], buf, sizeof(buf)), "%s in %s", ids[i], last);
        cr_assert(strstr(buf, "100%") && strstr(buf, "4/4") && strstr(buf, "active"),
                  "tenant bar at 100%%: %s", buf);
        cr_assert_null(strstr(buf, "-]"), "bar filled: %s", buf);
    }
    cr_assert_not_null(line_with(last, ids[9], buf, sizeof(buf)));
    cr_assert(strstr(buf, " 50%") && strstr(buf, "failed") && strstr(buf, "step config: quota"),
              "%s", buf);
    /* an intermediate frame showed partial progress */
    cr_assert_not_null(strstr(screen, " 50%  2/4  provisioning"), "intermediate bars");
    cr_assert(strstr(screen, "all 10 tenants finished"), "summary line");
    free(screen);
}

Test(cli_watch, pipe_prints_one_line_per_change)
{
    char ids[2][64];
    submit_batch("wp", 2, ids);
    char out_path[300];
    snprintf(out_path, sizeof(out_path), "%s/lines.txt", H.tmpdir);
    const char *argv[] = {TQ_ENQUEUE_BIN, "status", "--watch", ids[0], ids[1], "--interval", "0.1",
                          "--timeout", "60", NULL};
    pid_t pid = h_spawn(argv, out_path);
    tq_sleep_ms(600);
    begin();
    step_done(ids[0], 0);
    commit();
    tq_sleep_ms(600);   /* several polls, one change */
    begin();
    step_done(ids[0], 1);
    step_done(ids[0], 2);
    step_done(ids[0], 3);
    finish(ids[0], "active");
    commit();
    tq_sleep_ms(600);
    begin();
    finish(ids[1], "blocked");
    commit();
    cr_assert_eq(h_wait_pid(pid, 20000), 0);
    char *out = slurp(out_path);
    cr_assert_null(strchr(out, '\x1b'), "no terminal escapes into a pipe: %s", out);
    /* each state once: queued, provisioning 1/4, active 4/4 for the first */
    size_t lines0 = 0;
    for (char *l = out; (l = strstr(l, ids[0])); l++)
        lines0++;
    cr_assert_eq(lines0, 3, "one line per change for %s:\n%s", ids[0], out);
    cr_assert(strstr(out, " queued 0/4"), "%s", out);
    cr_assert(strstr(out, " provisioning 1/4 step=bucket"), "%s", out);
    cr_assert(strstr(out, " active 4/4"), "%s", out);
    cr_assert(strstr(out, " blocked 0/4"), "%s", out);
    cr_assert(strstr(out, "all 2 tenants finished: active 1 blocked 1"), "%s", out);
    free(out);
}

Test(cli_watch, json_lines_end_with_finished)
{
    char ids[2][64];
    submit_batch("wj", 2, ids);
    char out_path[300];
    snprintf(out_path, sizeof(out_path), "%s/lines.jsonl", H.tmpdir);
    const char *argv[] = {TQ_ENQUEUE_BIN, "--json", "status", "--watch", "--batch", "wj",
                          "--interval", "0.1", NULL};
    pid_t pid = h_spawn(argv, out_path);
    tq_sleep_ms(500);
    begin();
    finish(ids[0], "active");
    finish(ids[1], "active");
    commit();
    cr_assert_eq(h_wait_pid(pid, 20000), 0);
    char *out = slurp(out_path);
    size_t tenants = 0, finished = 0;
    for (char *save = NULL, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        json_t *o = h_json(l, "a JSON line");
        if (json_object_get(o, "tenant_id")) {
            tenants++;
            cr_assert(json_is_integer(json_object_get(o, "steps_total")));
        } else {
            finished++;
            cr_assert(json_is_true(json_object_get(o, "finished")));
            cr_assert_eq(json_integer_value(json_object_get(o, "tenants")), 2);
            cr_assert_eq(json_integer_value(
                             json_object_get(json_object_get(o, "by_status"), "active")), 2);
        }
        json_decref(o);
    }
    cr_assert_eq(tenants, 4, "two states of two tenants");
    cr_assert_eq(finished, 1);
    free(out);
}

Test(cli_watch, timeout_exits_1_and_finished_exits_at_once)
{
    char ids[2][64];
    submit_batch("wt", 2, ids);
    uint64_t t0 = tq_mono_ms();
    char *out = NULL, *err = NULL;
    int rc = h_enqueue(&out, &err, "status", "--watch", "--batch", "wt", "--timeout", "1",
                       "--interval", "0.2", NULL);
    uint64_t took = tq_mono_ms() - t0;
    cr_assert_eq(rc, 1, "timeout is exit 1");
    cr_assert(strstr(err, "timed out after 1 s: 2 of 2 tenants not finished"), "%s", err);
    cr_assert(took >= 1000 && took < 10000, "bounded: %llu ms", (unsigned long long)took);
    free(out);
    free(err);
    rc = h_enqueue(&out, NULL, "--json", "status", "--watch", ids[0], "--timeout", "1", NULL);
    cr_assert_eq(rc, 1);
    cr_assert_not_null(strstr(out, "{\"error\""), "%s", out);
    json_decref(h_json(strstr(out, "{\"error\""), "error line"));
    free(out);

    finish(ids[0], "active");
    /* a dead job also ends the watch: nothing moves until an operator acts */
    free(h_sql("UPDATE tq.jobs SET status = 'dead' WHERE id = %ld", job_of(ids[1])));
    t0 = tq_mono_ms();
    rc = h_enqueue(&out, NULL, "status", "--watch", "--batch", "wt", NULL);
    cr_assert_eq(rc, 0);
    cr_assert_lt(tq_mono_ms() - t0, 5000, "exits on the first poll");
    cr_assert(strstr(out, "all 2 tenants finished"), "%s", out);
    free(out);
    cr_assert_eq(h_enqueue(NULL, NULL, "status", "--watch", h_tenant("ghost"), NULL), 4);
    cr_assert_eq(h_enqueue(NULL, NULL, "status", "--watch", "--batch", "nope", NULL), 4);
    cr_assert_eq(h_enqueue(NULL, NULL, "status", "--watch", "--all", "--interval", "0", NULL), 2);
}
