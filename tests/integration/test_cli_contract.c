/*
 * The CLI's contract as a caller sees it (issue 12 items 8-10, issue 11
 * item 9): every problem of a request reported at once, the exit-code rule
 * (2: the command line is malformed; 3: a well-formed request the rules
 * refuse) checked for every subcommand, connection errors printed as lines,
 * and the input-contract gaps.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "harness.h"

static void setup(void)
{
    h_setup();
    h_use_pipeline(
             h_write_file("contract-pipeline.json",
                          "{\"name\": \"contract-test\", \"version\": 1, \"steps\": ["
                          "{\"name\": \"one\", \"kind\": \"noop\"}]}"));
}

TestSuite(contract, .init = setup, .fini = h_teardown, .timeout = 120);

/* The errors array of a --json error document (borrowed from o). */
static json_t *errors_of(json_t *o)
{
    return json_object_get(json_object_get(o, "error"), "errors");
}

static bool has_field(json_t *errs, const char *field, int line)
{
    size_t i;
    json_t *e;
    json_array_foreach(errs, i, e) {
        if (strcmp(json_string_value(json_object_get(e, "field")), field) == 0 &&
            (line == 0 || json_integer_value(json_object_get(e, "line")) == line))
            return true;
    }
    return false;
}

static void submit_ok(const char *id, const char *name)
{
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--tenant-id", id, "--name", name, "--tier",
                       "Bronze", "--region", "us-east-1", "--budget", "1000", "--owner",
                       "ops@example.com", NULL);
    cr_assert_eq(rc, 0, "submit %s: %s", id, err);
    free(err);
}

/* Run tq-enqueue --json ARGS, expect exit `want` and an error naming `field` (or any). */
#define EXPECT(want, field, ...)                                                              \
    do {                                                                                      \
        char *o_ = NULL, *e_ = NULL;                                                          \
        int rc_ = h_enqueue(&o_, &e_, "--json", __VA_ARGS__, NULL);                           \
        cr_assert_eq(rc_, want, "%s: exit %d, want %d: %s", #__VA_ARGS__, rc_, want, e_);     \
        json_t *j_ = h_json(o_, "error document");                                            \
        json_t *x_ = json_object_get(j_, "error");                                            \
        cr_assert_eq(json_integer_value(json_object_get(x_, "exit_code")), want, "%s", o_);   \
        if (field)                                                                            \
            cr_assert(has_field(json_object_get(x_, "errors"), field, 0),                     \
                      "%s names %s: %s", #__VA_ARGS__, (const char *)field, o_);              \
        json_decref(j_);                                                                      \
        free(o_);                                                                             \
        free(e_);                                                                             \
    } while (0)

/* ------------------------------------------------------------ 12.8 */

Test(contract, every_problem_of_a_request_is_reported)
{
    char *out = NULL, *err = NULL;
    int rc = h_enqueue(&out, &err, "--json", "submit", "--region", "ap-south-1", "--budget",
                       "100", "--owner", "notanemail", NULL);
    cr_assert_eq(rc, 2, "required flags are missing: usage (%s)", err);
    json_t *o = h_json(out, "rejection");
    json_t *errs = errors_of(o);
    const char *want[] = {"tenant_id", "name", "tier", "region", "owner"};
    for (size_t i = 0; i < 5; i++) {
        cr_assert(has_field(errs, want[i], 0), "%s reported: %s", want[i], out);
        cr_assert(strstr(err, want[i]), "stderr names %s: %s", want[i], err);
    }
    cr_assert_eq(json_array_size(errs), 5, "%s", out);
    json_decref(o);
    free(out);
    free(err);

    /* well-formed but broken everywhere: all of it, exit 3 */
    rc = h_enqueue(&out, &err, "--json", "submit", "--tenant-id", "a--b", "--name", "   ",
                   "--tier", "Gold", "--region", "ap-south-1", "--budget", "100", "--owner",
                   "a@-b.example", NULL);
    cr_assert_eq(rc, 3, "%s", err);
    o = h_json(out, "rejection");
    cr_assert_eq(json_array_size(errors_of(o)), 5, "id, name, region, budget band, owner: %s",
                 out);
    json_decref(o);
    free(out);
    free(err);

    /* a CSV row with six bad fields reports six, with its line */
    const char *csv = "tenant_id,name,tier,region,budget,owner\n"
                      "Bad_Id,\"\xe2\x80\xae\",Platinum,ap-south-1,abc,notanemail\n";
    rc = h_enqueue(&out, &err, "--json", "submit", "--file", h_write_file("six.csv", csv), NULL);
    cr_assert_eq(rc, 3, "%s", err);
    o = h_json(out, "rejection");
    errs = errors_of(o);
    cr_assert_eq(json_array_size(errs), 6, "%s", out);
    const char *six[] = {"tenant_id", "name", "tier", "region", "budget", "owner"};
    for (size_t i = 0; i < 6; i++)
        cr_assert(has_field(errs, six[i], 2), "line 2 %s: %s", six[i], out);
    cr_assert(strstr(err, "line 2: owner"), "%s", err);
    json_decref(o);
    free(out);
    free(err);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants"), 0);
}

/* ------------------------------------------------------------ 12.9, one per subcommand */

Test(contract, exit_codes_submit)
{
    EXPECT(2, NULL, "submit", "--frobnicate");
    EXPECT(2, "name", "submit", "--tenant-id", "acme-x", "--tier", "Gold", "--region",
           "us-east-1", "--budget", "800000", "--owner", "a@b.example");
    EXPECT(2, "budget", "submit", "--tenant-id", "acme-x", "--name", "A", "--tier", "Gold",
           "--region", "us-east-1", "--budget", "abc", "--owner", "a@b.example");
    EXPECT(2, "not_before", "submit", "--tenant-id", "acme-x", "--name", "A", "--tier", "Gold",
           "--region", "us-east-1", "--budget", "800000", "--owner", "a@b.example",
           "--not-before", "tomorrow");
    EXPECT(2, "batch", "submit", "--file", "/dev/null", "--batch", "no spaces");
    EXPECT(3, "region", "submit", "--tenant-id", "acme-x", "--name", "A", "--tier", "Gold",
           "--region", "ap-south-1", "--budget", "800000", "--owner", "a@b.example");
    EXPECT(3, "budget", "submit", "--tenant-id", "acme-x", "--name", "A", "--tier", "Gold",
           "--region", "us-east-1", "--budget", "100", "--owner", "a@b.example");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants"), 0);
}

Test(contract, exit_codes_status)
{
    EXPECT(2, NULL, "status", "--frobnicate");
    EXPECT(2, NULL, "status");
    EXPECT(2, NULL, "status", "--watch", "--all", "--interval", "soon");
    EXPECT(4, NULL, "status", "nobody-here");
}

Test(contract, exit_codes_approve_and_reject)
{
    const char *a = h_tenant("appr");
    submit_ok(a, "Appr");   /* auto-approved: queued */
    EXPECT(2, NULL, "approve", a);
    EXPECT(2, NULL, "approve", a, "--by", "alice", "--frobnicate");
    EXPECT(3, "by", "approve", a, "--by", "al\x1b[2Jice");
    EXPECT(3, NULL, "approve", a, "--by", "alice");   /* not pending_approval */
    EXPECT(2, NULL, "reject", a, "--by", "alice");
    EXPECT(3, NULL, "reject", a, "--by", "alice", "--reason", "no");
    EXPECT(4, NULL, "approve", "nobody-here", "--by", "alice");
}

Test(contract, exit_codes_cancel_retry_deprovision)
{
    const char *a = h_tenant("act");
    submit_ok(a, "Act");
    const char *cmds[] = {"cancel", "retry", "deprovision"};
    for (size_t i = 0; i < 3; i++) {
        EXPECT(2, NULL, cmds[i]);
        EXPECT(2, NULL, cmds[i], a, "--frobnicate");
        EXPECT(2, NULL, cmds[i], a, "second-one");
        EXPECT(3, "by", cmds[i], a, "--by", "\xc3\x28");
        EXPECT(4, NULL, cmds[i], "nobody-here");
    }
    EXPECT(3, NULL, "retry", a);         /* queued: nothing to retry */
    EXPECT(3, NULL, "deprovision", a);   /* not active */
}

Test(contract, exit_codes_dead_stats_revalidate_migrate_history)
{
    EXPECT(2, NULL, "dead", "--frobnicate");
    EXPECT(2, NULL, "dead", "--by", "x");
    EXPECT(4, NULL, "dead", "--requeue", "424242");
    EXPECT(2, NULL, "stats", "extra");
    EXPECT(2, NULL, "revalidate");
    EXPECT(2, NULL, "revalidate", "--frobnicate");
    const char *a = h_tenant("rv");
    submit_ok(a, "Rv");
    EXPECT(3, NULL, "revalidate", a);   /* not active */
    EXPECT(2, NULL, "migrate", "extra");
    EXPECT(2, NULL, "history");
    EXPECT(2, NULL, "history", a, "--frobnicate");
    EXPECT(4, NULL, "history", "nobody-here");
}

/* ------------------------------------------------------------ 12.10 */

Test(contract, connection_errors_are_lines_and_standard_json)
{
    h_setenv("TQ_DATABASE_URL", "host=127.0.0.1 port=1 dbname=none connect_timeout=2");
    char *out = NULL, *err = NULL;
    int rc = h_enqueue(&out, &err, "--json", "status", "--all", NULL);
    cr_assert_eq(rc, 1, "%s", err);
    cr_assert_null(strstr(err, "\\x0A"), "no escape codes on a terminal: %s", err);
    cr_assert_null(strstr(err, "\\x09"), "no escape codes on a terminal: %s", err);
    cr_assert_null(strstr(out, "\\\\x0A"), "JSON uses standard escapes: %s", out);
    json_t *o = h_json(out, "error");
    const char *msg = json_string_value(json_object_get(json_object_get(o, "error"), "message"));
    cr_assert(msg && strstr(msg, "Connection refused"), "%s", out);
    cr_assert_null(strstr(msg, "\\x"), "%s", msg);
    json_decref(o);
    free(out);
    free(err);
    /* text: every line of the message prefixed, none raw escaped */
    rc = h_enqueue(NULL, &err, "status", "--all", NULL);
    cr_assert_eq(rc, 1);
    cr_assert(strstr(err, "Connection refused"), "%s", err);
    cr_assert_null(strstr(err, "\\x"), "%s", err);
    free(err);
}

/* ------------------------------------------------------------ 11.9 */

Test(contract, names_are_unique_whatever_their_case)
{
    submit_ok(h_tenant("idem-a"), "Idem A");
    EXPECT(3, "name", "submit", "--tenant-id", h_tenant("idem-b"), "--name", "IDEM A", "--tier",
           "Bronze", "--region", "us-east-1", "--budget", "1000", "--owner", "ops@example.com");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants"), 1);
    char buf[512];
    snprintf(buf, sizeof(buf),
             "tenant_id,name,tier,region,budget,owner\n"
             "%s,Same Name,Bronze,us-east-1,1000,a@example.com\n"
             "%s,SAME name,Bronze,us-east-1,1000,a@example.com\n",
             h_tenant("c1"), h_tenant("c2"));
    EXPECT(3, "name", "submit", "--file", h_write_file("case.csv", buf));
}

Test(contract, rerun_batch_of_existing_tenants_is_shown)
{
    char buf[512];
    snprintf(buf, sizeof(buf),
             "tenant_id,name,tier,region,budget,owner\n"
             "%s,Rerun One,Bronze,us-east-1,1000,a@example.com\n"
             "%s,Rerun Two,Bronze,us-east-1,1000,a@example.com\n",
             h_tenant("r1"), h_tenant("r2"));
    const char *path = h_write_file("rerun.csv", buf);
    cr_assert_eq(h_enqueue(NULL, NULL, "submit", "--file", path, "--batch", "first", NULL), 0);
    cr_assert_eq(h_enqueue(NULL, NULL, "submit", "--file", path, "--batch", "again", NULL), 0);
    char *out = NULL;
    int rc = h_enqueue(&out, NULL, "--json", "status", "--batch", "again", NULL);
    cr_assert_eq(rc, 0, "the rerun batch exists: %s", out);
    json_t *o = h_json(out, "status");
    cr_assert_eq(json_array_size(json_object_get(o, "tenants")), 2, "%s", out);
    json_decref(o);
    free(out);
}

Test(contract, csv_header_problems_are_named_as_such)
{
    char *out = NULL, *err = NULL;
    const char *unknown = "tenant_id,name,tier,region,budget,owner,colour\n"
                          "acme-x,A,Bronze,us-east-1,1000,a@example.com,red\n";
    int rc = h_enqueue(&out, &err, "--json", "submit", "--file",
                       h_write_file("unknown.csv", unknown), NULL);
    cr_assert_eq(rc, 3);
    json_t *o = h_json(out, "rejection");
    cr_assert_eq(json_array_size(errors_of(o)), 1, "only the header: %s", out);
    cr_assert(strstr(err, "unknown column \"colour\""), "%s", err);
    cr_assert_null(strstr(err, "tenant_id: is required"), "%s", err);
    json_decref(o);
    free(out);
    free(err);
    const char *dup = "tenant_id,name,tier,region,budget,owner,name\n"
                      "acme-x,A,Bronze,us-east-1,1000,a@example.com,B\n";
    rc = h_enqueue(&out, &err, "--json", "submit", "--file", h_write_file("dup.csv", dup), NULL);
    cr_assert_eq(rc, 3);
    cr_assert(strstr(err, "column \"name\" appears twice"), "%s", err);
    cr_assert_null(strstr(err, "is required"), "%s", err);
    o = h_json(out, "rejection");
    cr_assert_eq(json_array_size(errors_of(o)), 1, "%s", out);
    json_decref(o);
    free(out);
    free(err);
    cr_assert_eq(h_enqueue(NULL, NULL, "submit", "--file", H.tmpdir, NULL), 2,
                 "--file DIR is a usage error like a missing file");
}

Test(contract, idempotency_keys_refuse_control_characters)
{
    EXPECT(3, "idempotency_key", "submit", "--tenant-id", h_tenant("ik"), "--name", "Ik",
           "--tier", "Bronze", "--region", "us-east-1", "--budget", "1000", "--owner",
           "ops@example.com", "--idempotency-key", "key\x1b[31m");
    EXPECT(3, "idempotency_key", "submit", "--tenant-id", h_tenant("ik"), "--name", "Ik",
           "--tier", "Bronze", "--region", "us-east-1", "--budget", "1000", "--owner",
           "ops@example.com", "--idempotency-key", "key\xe2\x80\x8b");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants"), 0);
}

Test(contract, owners_and_ids_follow_the_rules)
{
    submit_ok(h_tenant("obrien"), "O Brien");
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--tenant-id", h_tenant("ob2"), "--name", "Ob2",
                       "--tier", "Bronze", "--region", "us-east-1", "--budget", "1000",
                       "--owner", "o'brien@b.example", NULL);
    cr_assert_eq(rc, 0, "o'brien@b.example is an address: %s", err);
    free(err);
    EXPECT(3, "owner", "submit", "--tenant-id", h_tenant("ob3"), "--name", "Ob3", "--tier",
           "Bronze", "--region", "us-east-1", "--budget", "1000", "--owner", "a@-b.example");
    EXPECT(3, "tenant_id", "submit", "--tenant-id", "a--b", "--name", "Ob4", "--tier", "Bronze",
           "--region", "us-east-1", "--budget", "1000", "--owner", "a@b.example");
    EXPECT(3, "tenant_id", "submit", "--tenant-id", "abc-", "--name", "Ob5", "--tier", "Bronze",
           "--region", "us-east-1", "--budget", "1000", "--owner", "a@b.example");
}

Test(contract, read_only_database_gets_a_real_message)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "ALTER DATABASE %s SET default_transaction_read_only = on",
             H.dbname);
    free(h_sql("%s", sql));
    char *out = NULL, *err = NULL;
    int rc = h_enqueue(&out, &err, "--json", "submit", "--tenant-id", h_tenant("ro"), "--name",
                       "Ro", "--tier", "Bronze", "--region", "us-east-1", "--budget", "1000",
                       "--owner", "ops@example.com", "--batch", "ro-batch", NULL);
    cr_assert_neq(rc, 0);
    cr_assert(strstr(err, "read-only"), "the message says why: %s", err);
    json_t *o = h_json(out, "error");
    const char *msg = json_string_value(json_object_get(json_object_get(o, "error"), "message"));
    cr_assert(msg && strstr(msg, "read-only"), "%s", out);
    json_decref(o);
    free(out);
    free(err);
    snprintf(sql, sizeof(sql), "ALTER DATABASE %s RESET default_transaction_read_only", H.dbname);
    free(h_sql("%s", sql));
}
