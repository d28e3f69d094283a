/*
 * tq-enqueue through the real binary against real Redis and PostgreSQL:
 * help and exit codes, submit (flags, files, --not-before, idempotency),
 * status, and hostile input, which must change nothing and crash nothing.
 * Actions on tenants are in test_cli_admin.c, --watch in test_cli_watch.c.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
}

TestSuite(cli, .init = setup, .fini = h_teardown, .timeout = 120);

#define SQL_COUNTS                                                                         \
    "SELECT (SELECT count(*) FROM tq.tenants) || '/' || (SELECT count(*) FROM tq.jobs) || '/'" \
    " || (SELECT count(*) FROM tq.audit_events WHERE event <> 'pipeline_registered')"

/* Nothing was written to PostgreSQL or Redis. */
static void assert_untouched(const char *what)
{
    char *c = h_sql(SQL_COUNTS);
    cr_assert_str_eq(c, "0/0/0", "%s: tenants/jobs/audit must stay empty, got %s", what, c);
    free(c);
    cr_assert_eq(h_redis_long("EXISTS tq:{%s}:ready tq:{%s}:delayed", H.queue, H.queue), 0,
                 "%s: nothing dispatched", what);
}

/* A binary file under the test's tmpdir (h_write_file cannot write NUL bytes). */
static const char *write_bytes(const char *name, const char *data, size_t len)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", H.tmpdir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    fclose(f);
    return path;
}

static void submit_ok(const char *id, const char *name, const char *tier, const char *budget)
{
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--tenant-id", id, "--name", name, "--tier", tier,
                       "--region", "us-east-1", "--budget", budget, "--owner",
                       "ops@example.com", NULL);
    cr_assert_eq(rc, 0, "submit %s failed: %s", id, err);
    free(err);
}

/* The first error object of a --json error document, checked for shape. */
static void assert_json_error(const char *out, int exit_code, const char *field)
{
    json_t *o = h_json(out, "--json error on stdout");
    json_t *e = json_object_get(o, "error");
    cr_assert(json_is_object(e), "{\"error\": {...}}: %s", out);
    cr_assert_eq(json_integer_value(json_object_get(e, "exit_code")), exit_code, "%s", out);
    cr_assert(json_is_string(json_object_get(e, "code")));
    cr_assert(json_is_string(json_object_get(e, "message")));
    if (field) {
        json_t *e0 = json_array_get(json_object_get(e, "errors"), 0);
        cr_assert_str_eq(json_string_value(json_object_get(e0, "field")), field, "%s", out);
    }
    json_decref(o);
}

/* ------------------------------------------------------------ help, codes */

Test(cli, help_version_and_usage_errors)
{
    char *out = NULL, *err = NULL;
    cr_assert_eq(h_enqueue(&out, NULL, "--help", NULL), 0);
    cr_assert(strstr(out, "exit codes: 0 done, 1"), "--help lists exit codes: %s", out);
    const char *cmds[] = {"migrate", "submit", "status", "approve", "reject", "cancel",
                          "retry", "deprovision", "dead", "stats", "revalidate"};
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        cr_assert(strstr(out, cmds[i]), "--help names %s", cmds[i]);
        char *o2 = NULL;
        cr_assert_eq(h_enqueue(&o2, NULL, cmds[i], "--help", NULL), 0, "%s --help", cmds[i]);
        cr_assert(strstr(o2, "usage: tq-enqueue"), "%s --help: %s", cmds[i], o2);
        cr_assert(strstr(o2, "example"), "%s --help has examples: %s", cmds[i], o2);
        cr_assert(strstr(o2, "exit codes"), "%s --help lists exit codes", cmds[i]);
        free(o2);
    }
    free(out);
    cr_assert_eq(h_enqueue(&out, NULL, "--version", NULL), 0);
    cr_assert(strncmp(out, "tq-enqueue ", 11) == 0, "%s", out);
    free(out);

    cr_assert_eq(h_enqueue(NULL, NULL, "frobnicate", NULL), 2, "unknown command");
    cr_assert_eq(h_enqueue(NULL, NULL, NULL), 2, "no command");
    cr_assert_eq(h_enqueue(NULL, &err, "--bogus", NULL), 2, "unknown global option");
    free(err);
    cr_assert_eq(h_enqueue(&out, NULL, "--json", "frobnicate", NULL), 2);
    assert_json_error(out, 2, NULL);
    free(out);
    cr_assert_eq(h_enqueue(&out, NULL, "--json", "status", "--nope", NULL), 2);
    assert_json_error(out, 2, NULL);
    free(out);
    cr_assert_eq(h_enqueue(&out, NULL, "--json", "submit", "--frobnicate", NULL), 2);
    assert_json_error(out, 2, NULL);
    free(out);
    cr_assert_eq(h_enqueue(&out, NULL, "submit", "--json", "--tenant-id", NULL), 2,
                 "a flag without its value");
    assert_json_error(out, 2, NULL);
    free(out);
    cr_assert_eq(h_enqueue(&out, NULL, "--json", "revalidate", "--frobnicate", NULL), 2);
    assert_json_error(out, 2, NULL);
    free(out);
    cr_assert_eq(h_enqueue(&out, NULL, "--json", "migrate", "--frobnicate", NULL), 2);
    assert_json_error(out, 2, NULL);
    free(out);
    cr_assert_eq(h_enqueue(NULL, NULL, "approve", NULL), 2, "approve needs an ID");
    cr_assert_eq(h_enqueue(NULL, NULL, "status", "--timeout", "5", "--all", NULL), 2,
                 "--timeout without --watch");
    cr_assert_eq(h_enqueue(NULL, NULL, "status", "--watch", "--all", "--timeout", "-3", NULL), 2);
    cr_assert_eq(h_enqueue(NULL, NULL, "stats", "extra", NULL), 2);
    cr_assert_eq(h_enqueue(NULL, NULL, "dead", "--by", "x", NULL), 2, "--by needs --requeue");
}

Test(cli, bad_configuration_is_usage_and_unreachable_is_1)
{
    char *out = NULL, *err = NULL;
    h_setenv("TQ_REDIS_URL", "http://nope");
    cr_assert_eq(h_enqueue(NULL, &err, "stats", NULL), 2, "bad TQ_REDIS_URL is a usage error");
    cr_assert(strstr(err, "TQ_REDIS_URL"), "%s", err);
    free(err);
    h_setenv("TQ_REDIS_URL", H.redis_url);

    char dsn[600];
    snprintf(dsn, sizeof(dsn), "host=127.0.0.1 port=1 user=postgres dbname=x connect_timeout=2");
    h_setenv("TQ_DATABASE_URL", dsn);
    cr_assert_eq(h_enqueue(&out, NULL, "--json", "status", "--all", NULL), 1);
    assert_json_error(out, 1, NULL);
    free(out);
    cr_assert_eq(h_enqueue(NULL, NULL, "approve", "acme-corp", "--by", "a", NULL), 1);
    cr_assert_eq(h_enqueue(NULL, NULL, "stats", NULL), 1);
    cr_assert_eq(h_enqueue(NULL, NULL, "dead", NULL), 1);
    cr_assert_eq(h_enqueue(NULL, NULL, "submit", "--tenant-id", "acme-corp", "--name", "A",
                           "--tier", "Bronze", "--region", "us-east-1", "--budget", "1000",
                           "--owner", "a@b.co", NULL),
                 1);
    h_setenv("TQ_DATABASE_URL", H.dsn);
}

/* ----------------------------------------------------------------- submit */

Test(cli, submit_by_flags_json_shape_and_effects)
{
    const char *a = h_tenant("acme");
    char *out = NULL;
    int rc = h_enqueue(&out, NULL, "submit", "--json", "--tenant-id", a, "--name", "Acme",
                       "--tier", "Silver", "--region", "eu-west-1", "--budget", "300000",
                       "--owner", "ops@acme.example", "--justification", "RAG pilot", NULL);
    cr_assert_eq(rc, 0);
    json_t *o = h_json(out, "submit --json");
    cr_assert(json_is_null(json_object_get(o, "batch")));
    cr_assert(json_is_false(json_object_get(o, "dispatch_deferred")));
    cr_assert(json_is_null(json_object_get(o, "not_before_ms")));
    json_t *r = json_array_get(json_object_get(o, "requests"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(r, "tenant_id")), a);
    cr_assert_str_eq(json_string_value(json_object_get(r, "status")), "queued");
    cr_assert(json_is_false(json_object_get(r, "existed")));
    long job = (long)json_integer_value(json_object_get(r, "job_id"));
    cr_assert_gt(job, 0);
    json_decref(o);
    free(out);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs WHERE id = %ld AND tenant_id = '%s'"
                            " AND status = 'queued' AND not_before IS NULL", job, a), 1);
    char *head = h_redis("LINDEX tq:{%s}:ready 0", H.queue);
    cr_assert_eq(atol(head), job, "job id LPUSHed to ready");
    free(head);
}

Test(cli, idempotent_resubmission_and_key_conflicts)
{
    const char *a = h_tenant("idem"), *b = h_tenant("idem2");
    char *out = NULL, *err = NULL;
    const char *base[] = {"--name", "Idem", "--tier", "Bronze", "--region", "us-west-2",
                          "--budget", "150000", "--owner", "i@example.com"};
    for (int round = 0; round < 2; round++) {
        int rc = h_enqueue(&out, NULL, "--json", "submit", "--tenant-id", a, base[0], base[1],
                           base[2], base[3], base[4], base[5], base[6], base[7], base[8], base[9],
                           "--idempotency-key", "portal-req-7", NULL);
        cr_assert_eq(rc, 0, "round %d", round);
        json_t *o = h_json(out, "submit");
        json_t *r = json_array_get(json_object_get(o, "requests"), 0);
        cr_assert_eq(json_is_true(json_object_get(r, "existed")), round == 1);
        json_decref(o);
        free(out);
    }
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs WHERE idempotency_key = 'portal-req-7'"),
                 1);
    cr_assert_eq(h_redis_long("LLEN tq:{%s}:ready", H.queue), 1, "dispatched once");
    /* the key belongs to tenant a: another tenant with it is rejected */
    int rc = h_enqueue(NULL, &err, "submit", "--tenant-id", b, "--name", "Other", "--tier",
                       "Bronze", "--region", "us-west-2", "--budget", "150000", "--owner",
                       "i@example.com", "--idempotency-key", "portal-req-7", NULL);
    cr_assert_eq(rc, 3);
    cr_assert(strstr(err, "idempotency_key"), "%s", err);
    free(err);
    /* same tenant id, other content */
    rc = h_enqueue(NULL, &err, "submit", "--tenant-id", a, "--name", "Idem", "--tier", "Bronze",
                   "--region", "us-west-2", "--budget", "150001", "--owner", "i@example.com",
                   "--idempotency-key", "portal-req-7", NULL);
    cr_assert_eq(rc, 3);
    free(err);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants"), 1);
}

Test(cli, batch_csv_and_jsonl_all_or_nothing)
{
    char buf[4096];
    snprintf(buf, sizeof(buf),
             "name,tenant_id,tier,region,budget,owner\n"
             "One,%s,Bronze,us-east-1,10000,a@example.com\n"
             "Two,%s,Silver,mars-1,300000,b@example.com\n"
             "Three,%s,Gold,us-east-1,300000,c@example.com\n"
             "Four,%s,Bronze,us-east-1,10000,d@example.com\n",
             h_tenant("one"), h_tenant("two"), h_tenant("three"), h_tenant("one"));
    char *out = NULL, *err = NULL;
    int rc = h_enqueue(&out, &err, "--json", "submit", "--file", h_write_file("b.csv", buf),
                       "--batch", "b-1", NULL);
    cr_assert_eq(rc, 3, "%s", err);
    json_t *o = h_json(out, "batch rejection");
    json_t *errs = json_object_get(json_object_get(o, "error"), "errors");
    cr_assert_eq(json_array_size(errs), 3, "every bad row reported: %s", out);
    int want_lines[] = {3, 4, 5};
    const char *want_fields[] = {"region", "budget", "tenant_id"};
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(errs, i);
        cr_assert_eq(json_integer_value(json_object_get(e, "line")), want_lines[i], "%s", out);
        cr_assert_str_eq(json_string_value(json_object_get(e, "field")), want_fields[i]);
        cr_assert(json_is_string(json_object_get(e, "rule")));
    }
    cr_assert(strstr(err, "line 3: region"), "%s", err);
    json_decref(o);
    free(out);
    free(err);
    assert_untouched("bad CSV batch");

    /* JSON lines: one bad line (string budget) rejects all */
    snprintf(buf, sizeof(buf),
             "{\"tenant_id\":\"%s\",\"name\":\"J1\",\"tier\":\"Bronze\",\"region\":\"us-east-1\","
             "\"budget\":1000,\"owner\":\"j@example.com\"}\n"
             "\n"
             "{\"tenant_id\":\"%s\",\"name\":\"J2\",\"tier\":\"Bronze\",\"region\":\"us-east-1\","
             "\"budget\":\"1000\",\"owner\":\"j@example.com\"}\n",
             h_tenant("j1"), h_tenant("j2"));
    rc = h_enqueue(&out, NULL, "--json", "submit", "--file", h_write_file("b.jsonl", buf), NULL);
    cr_assert_eq(rc, 3);
    o = h_json(out, "jsonl rejection");
    json_t *e0 = json_array_get(json_object_get(json_object_get(o, "error"), "errors"), 0);
    cr_assert_eq(json_integer_value(json_object_get(e0, "line")), 3);
    cr_assert_str_eq(json_string_value(json_object_get(e0, "field")), "budget");
    json_decref(o);
    free(out);
    assert_untouched("bad JSONL batch");

    /* fixed: all written, all dispatched, one batch */
    snprintf(buf, sizeof(buf),
             "{\"tenant_id\":\"%s\",\"name\":\"J1\",\"tier\":\"Bronze\",\"region\":\"us-east-1\","
             "\"budget\":1000,\"owner\":\"j@example.com\"}\n"
             "{\"tenant_id\":\"%s\",\"name\":\"J2\",\"tier\":\"Gold\",\"region\":\"us-east-1\","
             "\"budget\":1100000,\"owner\":\"j@example.com\"}\n",
             h_tenant("j1"), h_tenant("j2"));
    rc = h_enqueue(&out, NULL, "--json", "submit", "--file", h_write_file("ok.jsonl", buf),
                   "--batch", "b-2", NULL);
    cr_assert_eq(rc, 0);
    o = h_json(out, "jsonl accepted");
    cr_assert_str_eq(json_string_value(json_object_get(o, "batch")), "b-2");
    cr_assert_eq(json_array_size(json_object_get(o, "requests")), 2);
    json_decref(o);
    free(out);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants WHERE batch_id = 'b-2'"), 2);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs WHERE status = 'held'"), 1);
    cr_assert_eq(h_redis_long("LLEN tq:{%s}:ready", H.queue), 1, "the held one waits");
}

Test(cli, not_before_schedules_on_the_delayed_set)
{
    const char *a = h_tenant("later"), *b = h_tenant("abs"), *c = h_tenant("past");
    char *out = NULL;
    uint64_t before = tq_now_ms();
    int rc = h_enqueue(&out, NULL, "--json", "submit", "--tenant-id", a, "--name", "Later",
                       "--tier", "Bronze", "--region", "us-east-1", "--budget", "1000",
                       "--owner", "l@example.com", "--not-before", "+2h", NULL);
    cr_assert_eq(rc, 0);
    json_t *o = h_json(out, "submit --not-before");
    long long nb = json_integer_value(json_object_get(o, "not_before_ms"));
    long job = (long)json_integer_value(
        json_object_get(json_array_get(json_object_get(o, "requests"), 0), "job_id"));
    json_decref(o);
    free(out);
    cr_assert(nb >= (long long)before + 7200000 && nb <= (long long)tq_now_ms() + 7200000);
    cr_assert_eq(h_redis_long("LLEN tq:{%s}:ready", H.queue), 0, "not pushed to ready");
    char *score = h_redis("ZSCORE tq:{%s}:delayed %ld", H.queue, job);
    cr_assert_eq(atoll(score), nb, "ZADD delayed with the due time as score");
    free(score);
    cr_assert_eq(h_sql_long("SELECT (extract(epoch FROM not_before) * 1000)::bigint FROM tq.jobs"
                            " WHERE id = %ld", job), (long)nb, "not_before stored");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE job_id = %ld"
                            " AND event = 'scheduled'", job), 1);

    /* RFC 3339 with an offset: 2030-01-01T05:30:00+05:30 is 2030-01-01T00:00:00Z */
    rc = h_enqueue(NULL, NULL, "submit", "--tenant-id", b, "--name", "Abs", "--tier", "Bronze",
                   "--region", "us-east-1", "--budget", "1000", "--owner", "l@example.com",
                   "--not-before", "2030-01-01T05:30:00+05:30", NULL);
    if (tq_now_ms() + 366ULL * 86400000 < 1893456000000ULL) {
        cr_assert_eq(rc, 2, "more than 366 days ahead is refused");
    } else {
        cr_assert_eq(rc, 0);
        cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs j WHERE tenant_id = '%s' AND"
                                " not_before = '2030-01-01T00:00:00Z'", b), 1);
    }
    /* in the past: recorded, dispatched now */
    rc = h_enqueue(NULL, NULL, "submit", "--tenant-id", c, "--name", "Past", "--tier", "Bronze",
                   "--region", "us-east-1", "--budget", "1000", "--owner", "l@example.com",
                   "--not-before", "2020-02-29T12:00:00Z", NULL);
    cr_assert_eq(rc, 0);
    cr_assert_eq(h_redis_long("LLEN tq:{%s}:ready", H.queue), 1);

    const char *bad[] = {"tomorrow", "+5x", "+", "-5m", "2026-13-01T00:00:00Z",
                         "2026-02-30T00:00:00Z", "2026-01-01 00:00:00", "+99999d",
                         "2026-01-01T00:00:00+5:30", "+1h; DROP TABLE tq.jobs"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *err = NULL;
        rc = h_enqueue(&out, &err, "--json", "submit", "--tenant-id", h_tenant("nb"), "--name",
                       "Nb", "--tier", "Bronze", "--region", "us-east-1", "--budget", "1000",
                       "--owner", "l@example.com", "--not-before", bad[i], NULL);
        cr_assert_eq(rc, 2, "--not-before %s: exit %d", bad[i], rc);
        cr_assert(strstr(err, "not_before"), "%s", err);
        assert_json_error(out, 2, "not_before");
        free(out);
        free(err);
    }
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants WHERE tenant_id LIKE 'nb-%%'"), 0);
}

Test(cli, redis_down_defers_dispatch_but_commits)
{
    const char *a = h_tenant("defer");
    h_setenv("TQ_REDIS_URL", "redis://127.0.0.1:1/0");
    char *out = NULL, *err = NULL;
    int rc = h_enqueue(&out, &err, "--json", "submit", "--tenant-id", a, "--name", "Defer",
                       "--tier", "Bronze", "--region", "us-east-1", "--budget", "1000",
                       "--owner", "d@example.com", NULL);
    h_setenv("TQ_REDIS_URL", H.redis_url);
    cr_assert_eq(rc, 0, "committed: exit 0 even though Redis is away");
    cr_assert(strstr(err, "deferred"), "says dispatch deferred: %s", err);
    json_t *o = h_json(out, "submit");
    cr_assert(json_is_true(json_object_get(o, "dispatch_deferred")));
    json_decref(o);
    free(out);
    free(err);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs WHERE tenant_id = '%s'"
                            " AND status = 'queued'", a), 1);
}

/* ----------------------------------------------------------------- status */

Test(cli, status_json_shape_and_not_found)
{
    const char *a = h_tenant("st");
    submit_ok(a, "St", "Bronze", "5000");
    char *out = NULL;
    cr_assert_eq(h_enqueue(&out, NULL, "status", "--json", a, a, NULL), 0, "an id twice is fine");
    json_t *o = h_json(out, "status");
    json_t *t = json_array_get(json_object_get(o, "tenants"), 0);
    const char *keys[] = {"tenant_id", "name", "tier", "region", "owner", "budget", "status",
                          "batch", "approver", "failure_reason", "created_at", "updated_at",
                          "activated_at", "job_id", "job_kind", "job_status", "job_attempt",
                          "worker", "steps_done", "steps_total", "current_step", "steps"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        cr_assert(json_object_get(t, keys[i]), "status JSON has %s: %s", keys[i], out);
    json_decref(o);
    free(out);
    cr_assert_eq(h_enqueue(&out, NULL, "status", a, NULL), 0);
    cr_assert(strstr(out, a) && strstr(out, "queued"), "%s", out);
    free(out);
    cr_assert_eq(h_enqueue(&out, NULL, "--json", "status", a, h_tenant("ghost"), NULL), 4);
    o = h_json(out, "status not found");
    json_t *missing = json_object_get(json_object_get(o, "error"), "errors");
    cr_assert_str_eq(json_string_value(json_array_get(missing, 0)), h_tenant("ghost"));
    json_decref(o);
    free(out);
    cr_assert_eq(h_enqueue(NULL, NULL, "status", "--batch", "nope", NULL), 4);
    cr_assert_eq(h_enqueue(NULL, NULL, "status", "--batch", "x", "--all", NULL), 2);
}

/* ------------------------------------------------------------ hostile input */

Test(cli, hostile_ids_change_nothing)
{
    const char *a = h_tenant("victim");
    submit_ok(a, "Victim", "Gold", "1200000");   /* pending approval */
    char longid[5001];
    memset(longid, 'a', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    const char *ids[] = {
        "x'; DROP TABLE tq.tenants; --",
        "acme\"corp",
        "\xd0\xb0\x63me-corp",          /* Cyrillic a: a look-alike of acme-corp */
        "acme\xe2\x80\x8b-corp",        /* zero-width space */
        "\xff\xfe\xfd",                 /* invalid UTF-8 */
        "evil\x1b[2J\x1b]0;pwned\x07",  /* terminal escapes */
        longid,
        "",
        "a;b",
    };
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        const char *cmds[][6] = {
            {"status", ids[i], NULL},
            {"approve", ids[i], "--by", "mallory", NULL},
            {"reject", ids[i], "--by", "mallory", "--reason", "x"},
            {"cancel", ids[i], NULL},
            {"retry", ids[i], NULL},
            {"deprovision", ids[i], NULL},
        };
        for (size_t k = 0; k < sizeof(cmds) / sizeof(cmds[0]); k++) {
            char *out = NULL, *err = NULL;
            int rc = h_enqueue(&out, &err, "--json", cmds[k][0], cmds[k][1], cmds[k][2],
                               cmds[k][3], cmds[k][4], cmds[k][5], NULL);
            cr_assert(rc == 4 || (rc == 2 && ids[i][0] == '\0'), "%s with hostile id %zu: exit %d",
                      cmds[k][0], i, rc);
            assert_json_error(out, rc, NULL);
            cr_assert_null(strchr(err, '\x1b'), "no raw escape reaches the terminal: %s", err);
            free(out);
            free(err);
        }
        char *out = NULL;
        int rc = h_enqueue(&out, NULL, "--json", "dead", "--requeue", ids[i], NULL);
        cr_assert(rc == 4 || (rc == 2 && ids[i][0] == '\0'), "dead --requeue hostile %zu: %d", i,
                  rc);
        free(out);
    }
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants WHERE status = 'pending_approval'"),
                 1, "the real tenant is untouched");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event <> 'pipeline_registered'"), 2,
                 "only its submit events (submitted, pending_approval)");
}

Test(cli, hostile_text_fields_are_refused)
{
    const char *a = h_tenant("txt");
    submit_ok(a, "Txt", "Gold", "1200000");
    char big[2100];
    memset(big, 'n', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    /* a missing value is a usage error (2); a value that breaks a rule is refused (3) */
    struct {
        const char *cmd, *by, *text, *field;
        int exit;
    } cases[] = {
        {"approve", "", NULL, "by", 2},
        {"approve", "eve\x1b[31m", NULL, "by", 3},
        {"approve", "\xc3\x28", NULL, "by", 3},
        {"approve", "alice\xe2\x80\xae", NULL, "by", 3},
        {"approve", "alice", big, "note", 3},
        {"reject", "alice", "", "reason", 2},
        {"reject", "alice", "bad\xff", "reason", 3},
        {"reject", "alice", big, "reason", 3},
        {"reject", "alice", "  ", "reason", 3},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out = NULL;
        bool approve = strcmp(cases[i].cmd, "approve") == 0;
        int rc = h_enqueue(&out, NULL, "--json", cases[i].cmd, a, "--by", cases[i].by,
                           cases[i].text ? (approve ? "--note" : "--reason") : NULL,
                           cases[i].text, NULL);
        cr_assert_eq(rc, cases[i].exit, "case %zu: exit %d", i, rc);
        assert_json_error(out, cases[i].exit, cases[i].field);
        free(out);
    }
    cr_assert_eq(h_enqueue(NULL, NULL, "reject", a, "--by", "alice", NULL), 2, "reason required");
    cr_assert_eq(h_enqueue(NULL, NULL, "approve", a, NULL), 2, "--by required");
    cr_assert_eq(h_enqueue(NULL, NULL, "approve", a, "--by", "alice", "--reason", "x", NULL), 2,
                 "approve takes --note, not --reason");
    cr_assert_eq(h_enqueue(NULL, NULL, "approve", a, "--by", "\xc3\x28", NULL), 3);
    cr_assert_eq(h_enqueue(NULL, NULL, "approve", a, "--by", "eve\x1b[31m", NULL), 3);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants WHERE status = 'pending_approval'"), 1);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event <> 'pipeline_registered'"), 2,
                 "submitted and pending_approval only");
}

Test(cli, hostile_submit_values_change_nothing)
{
    char huge[300];
    memset(huge, 'o', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    char name[102];
    memset(name, 'N', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    /* not a number: the command line is malformed (2); anything else breaks a rule (3) */
    struct {
        const char *flag, *value, *field;
        int exit;
    } cases[] = {
        {"--budget", "-1", "budget", 2},
        {"--budget", "0", "budget", 3},
        {"--budget", "99999999999999999999999", "budget", 2},
        {"--budget", "1e6", "budget", 2},
        {"--budget", "5,00,000", "budget", 2},
        {"--budget", " 500000", "budget", 2},
        {"--tenant-id", "x'; DROP TABLE tq.jobs; --", "tenant_id", 3},
        {"--tenant-id", "\xd0\xb0\x63me-corp", "tenant_id", 3},
        {"--tenant-id", "ACME", "tenant_id", 3},
        {"--name", name, "name", 3},
        {"--name", "bad\xff", "name", 3},
        {"--name", "tab\x01", "name", 3},
        {"--owner", huge, "owner", 3},
        {"--owner", "a@b", "owner", 3},
        {"--region", "ap-south-1", "region", 3},
        {"--tier", "gold", "tier", 3},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *args[] = {"--tenant-id", h_tenant("hv"), "--name", "Hv", "--tier", "Gold",
                              "--region", "us-east-1", "--budget", "800000", "--owner",
                              "ops@example.com"};
        for (size_t k = 0; k < 12; k += 2)
            if (strcmp(args[k], cases[i].flag) == 0)
                args[k + 1] = cases[i].value;
        char *out = NULL, *err = NULL;
        int rc = h_enqueue(&out, &err, "--json", "submit", args[0], args[1], args[2], args[3],
                           args[4], args[5], args[6], args[7], args[8], args[9], args[10],
                           args[11], NULL);
        cr_assert_eq(rc, cases[i].exit, "%s=%s: exit %d", cases[i].flag, cases[i].value, rc);
        cr_assert(strstr(err, cases[i].field), "stderr names %s: %s", cases[i].field, err);
        assert_json_error(out, cases[i].exit, cases[i].field);
        free(out);
        free(err);
    }
    assert_untouched("hostile flags");
}

Test(cli, hostile_files_change_nothing)
{
    const char *hdr = "tenant_id,name,tier,region,budget,owner\n";
    char row[256];
    snprintf(row, sizeof(row), "%s,Ok,Bronze,us-east-1,1000,o@example.com\n", h_tenant("ok"));
    char buf[2048];
    int rc;
    char *out = NULL, *err = NULL;

    /* NUL byte inside a field */
    int n = snprintf(buf, sizeof(buf), "%s%s%s,Nu", hdr, row, h_tenant("nul"));
    buf[n++] = '\0';
    n += snprintf(buf + n, sizeof(buf) - (size_t)n, "ll,Bronze,us-east-1,1000,o@example.com\n");
    rc = h_enqueue(&out, &err, "--json", "submit", "--file", write_bytes("nul.csv", buf, (size_t)n),
                   NULL);
    cr_assert_eq(rc, 3, "NUL byte: %s", err);
    cr_assert(strstr(err, "line 3") && strstr(err, "NUL"), "%s", err);
    assert_json_error(out, 3, "line");
    free(out);
    free(err);
    /* NUL byte in JSON lines */
    n = snprintf(buf, sizeof(buf), "{\"tenant_id\":\"%s\",\"name\":\"A", h_tenant("nj"));
    buf[n++] = '\0';
    n += snprintf(buf + n, sizeof(buf) - (size_t)n,
                  "\",\"tier\":\"Bronze\",\"region\":\"us-east-1\",\"budget\":1,\"owner\":\"a@b.co\"}\n");
    rc = h_enqueue(NULL, NULL, "submit", "--file", write_bytes("nul.jsonl", buf, (size_t)n), NULL);
    cr_assert_eq(rc, 3);

    /* ragged rows and unknown columns */
    snprintf(buf, sizeof(buf), "%s%s%s,Short,Bronze\n%s,Long,Bronze,us-east-1,1,x@y.co,extra,more\n",
             hdr, row, h_tenant("short"), h_tenant("long"));
    rc = h_enqueue(&out, &err, "--json", "submit", "--file", h_write_file("ragged.csv", buf), NULL);
    cr_assert_eq(rc, 3);
    cr_assert(strstr(err, "line 3: row") && strstr(err, "line 4: row"), "%s", err);
    free(out);
    free(err);
    snprintf(buf, sizeof(buf), "tenant_id,name,tier,region,budget,owner,evil\xff\x1b\n%s", row);
    rc = h_enqueue(&out, &err, "--json", "submit", "--file", h_write_file("cols.csv", buf), NULL);
    cr_assert_eq(rc, 3);
    cr_assert(strstr(err, "unknown column"), "%s", err);
    cr_assert_null(strchr(err, '\x1b'), "escaped: %s", err);
    assert_json_error(out, 3, "header");
    free(out);
    free(err);
    snprintf(buf, sizeof(buf),
             "{\"tenant_id\":\"%s\",\"name\":\"A\",\"tier\":\"Bronze\",\"region\":\"us-east-1\","
             "\"budget\":1,\"owner\":\"a@b.co\",\"admin\":true}\n",
             h_tenant("uk"));
    rc = h_enqueue(NULL, &err, "submit", "--file", h_write_file("cols.jsonl", buf), NULL);
    cr_assert_eq(rc, 3, "unknown JSON key");
    free(err);

    /* invalid UTF-8 in a field; a header that is not CSV at all; an empty file */
    snprintf(buf, sizeof(buf), "%s%s,Caf\xe9,Bronze,us-east-1,1000,o@example.com\n", hdr,
             h_tenant("latin1"));
    rc = h_enqueue(&out, &err, "--json", "submit", "--file", h_write_file("latin1.csv", buf), NULL);
    cr_assert_eq(rc, 3);
    cr_assert(strstr(err, "UTF-8"), "%s", err);
    assert_json_error(out, 3, "name");
    free(out);
    free(err);
    rc = h_enqueue(NULL, NULL, "submit", "--file", h_write_file("empty.csv", ""), NULL);
    cr_assert_eq(rc, 3);
    snprintf(buf, sizeof(buf), "%s\"unterminated,Bronze\n", hdr);
    rc = h_enqueue(NULL, NULL, "submit", "--file", h_write_file("quote.csv", buf), NULL);
    cr_assert_eq(rc, 3, "malformed quoting");
    /* a directory, a missing file */
    cr_assert_eq(h_enqueue(NULL, NULL, "submit", "--file", H.tmpdir, NULL), 2,
                 "a directory is a mistyped path, like a missing file");
    cr_assert_eq(h_enqueue(NULL, NULL, "submit", "--file", "/nonexistent/x.csv", NULL), 2);
    assert_untouched("hostile files");

    /* a spreadsheet's BOM is not an unknown column */
    snprintf(buf, sizeof(buf), "\xEF\xBB\xBF%s%s", hdr, row);
    rc = h_enqueue(NULL, &err, "submit", "--file", h_write_file("bom.csv", buf), NULL);
    cr_assert_eq(rc, 0, "%s", err);
    free(err);
}

Test(cli, oversized_files_are_refused_without_reading_them_whole)
{
    /* a 100 MB line: past the 16 MiB cap */
    char path[512];
    snprintf(path, sizeof(path), "%s/huge.csv", H.tmpdir);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fputs("tenant_id,name,tier,region,budget,owner\nbig-one,", f);
    char *chunk = tq_xmalloc(1 << 20);
    memset(chunk, 'x', 1 << 20);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(fwrite(chunk, 1, 1 << 20, f), (size_t)1 << 20);
    fputs(",Bronze,us-east-1,1,a@b.co\n", f);
    fclose(f);
    char *out = NULL, *err = NULL;
    int rc = h_enqueue(&out, &err, "--json", "submit", "--file", path, NULL);
    cr_assert_eq(rc, 3, "100 MB file: %s", err);
    cr_assert(strstr(err, "16 MiB"), "%s", err);
    assert_json_error(out, 3, NULL);
    free(out);
    free(err);
    unlink(path);

    /* a 15 MB line, under the file cap: refused by the line cap, quickly */
    f = fopen(path, "wb");
    cr_assert_not_null(f);
    fprintf(f, "tenant_id,name,tier,region,budget,owner\n%s,", h_tenant("wide"));
    for (int i = 0; i < 15; i++)
        cr_assert_eq(fwrite(chunk, 1, 1 << 20, f), (size_t)1 << 20);
    fputs(",Bronze,us-east-1,1,a@b.co\n", f);
    fclose(f);
    free(chunk);
    uint64_t t0 = tq_mono_ms();
    rc = h_enqueue(NULL, &err, "submit", "--file", path, NULL);
    cr_assert_eq(rc, 3);
    cr_assert(strstr(err, "line 2: longer than"), "%s", err);
    cr_assert_lt(tq_mono_ms() - t0, 20000, "no quadratic parsing");
    free(err);
    unlink(path);
    /* a long field that spans lines (quoted): libcsv must not crawl either */
    f = fopen(path, "wb");
    cr_assert_not_null(f);
    fprintf(f, "tenant_id,name,tier,region,budget,owner,justification\n%s,W,Bronze,us-east-1,1,"
               "a@b.co,\"", h_tenant("wide"));
    char line[1001];
    memset(line, 'x', 1000);
    line[1000] = '\n';
    for (int i = 0; i < 8 * 1024; i++)
        cr_assert_eq(fwrite(line, 1, sizeof(line), f), sizeof(line));
    fputs("\"\n", f);
    fclose(f);
    t0 = tq_mono_ms();
    rc = h_enqueue(NULL, &err, "submit", "--file", path, NULL);
    cr_assert_eq(rc, 3);
    cr_assert(strstr(err, "justification: must be at most 2000 bytes"), "%s", err);
    cr_assert_lt(tq_mono_ms() - t0, 20000, "no quadratic parsing");
    free(err);
    unlink(path);
    assert_untouched("oversized files");
}
