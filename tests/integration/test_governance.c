/*
 * Data residency and approval governance,
 * against the real binaries, PostgreSQL, Redis and the S3 stand-in:
 *   residency  the region map (TQ_REGIONS_FILE) places each tenant's bucket
 *              in its own region through the shipped pipeline; a bucket
 *              found elsewhere by the residency check blocks activation; a
 *              region without a map entry is refused at submit (single,
 *              bulk and --stream) with nothing written; a bad map stops
 *              the CLI naming the region and the field.
 *   approvals  approvers by role, changed only with the admin account and
 *              audited; approve/reject only by a holder of the tier's role,
 *              never by the requester; long-pending requests escalated once
 *              a period (audit event, status flag).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "stubs.h"
#include "tq/approvers.h"
#include "tq/pg.h"

#define ACCESS_KEY "AKIATQGOVERN"
#define SECRET_KEY "tq-govern-Secret/Key+7=Qx"

static struct st_s3 s3;
static char worker_log[300];

/* ------------------------------------------------------------ helpers */

/* A map of the three default regions on the S3 stand-in; eu-west-1 maps to s3_eu. */
static const char *write_map(const char *name, const char *s3_eu, bool with_us_west)
{
    char text[2048];
    snprintf(text, sizeof(text),
             "{\"us-east-1\": {\"s3_region\": \"us-east-1\", \"s3_endpoint\": \"%s\"},"
             " \"eu-west-1\": {\"s3_region\": \"%s\", \"s3_endpoint\": \"%s\", \"pg_url\": null}"
             "%s%s%s}",
             s3.endpoint, s3_eu, s3.endpoint,
             with_us_west ? ", \"us-west-2\": {\"s3_region\": \"us-west-2\", \"s3_endpoint\": \""
                          : "",
             with_us_west ? s3.endpoint : "", with_us_west ? "\"}" : "");
    return h_write_file(name, text);
}

static void residency_setup(void)
{
    h_setup();
    /* one stand-in serving every region: a bucket lives where CreateBucket put it */
    st_s3_start(&s3, "*", ACCESS_KEY, SECRET_KEY);
    setenv("TQ_S3_ENDPOINT", s3.endpoint, 1);   /* the shipped pipeline's on/off switch */
    setenv("TQ_S3_ACCESS_KEY", ACCESS_KEY, 1);
    setenv("TQ_S3_SECRET_KEY", SECRET_KEY, 1);
    setenv("TQ_ENVIRONMENT", "citest", 1);
    unsetenv("TQ_S3_REGION");   /* nothing may fall back to a fleet-wide region */
    setenv("TQ_REGIONS_FILE", write_map("regions.json", "eu-west-1", true), 1);
    snprintf(worker_log, sizeof(worker_log), "%s/worker.log", H.tmpdir);
}

static void residency_teardown(void)
{
    st_s3_stop_all();
    unsetenv("TQ_REGIONS_FILE");
    h_teardown();
}

static bool wait_status(const char *id, const char *status, int ms)
{
    return h_wait_sql(status, ms, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", id);
}

static bool wait_step(const char *id, const char *step, const char *status, int ms)
{
    return h_wait_sql(status, ms, "SELECT s.status FROM tq.job_steps s JOIN tq.jobs j ON j.id ="
                      " s.job_id WHERE j.tenant_id = '%s' AND s.step = '%s'"
                      " ORDER BY j.id DESC LIMIT 1", id, step);
}

static void submit(const char *id, const char *tier, const char *region, const char *budget,
                   const char *owner)
{
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--tenant-id", id, "--name", id, "--tier", tier,
                       "--region", region, "--budget", budget, "--owner", owner, NULL);
    cr_assert_eq(rc, 0, "submit %s: %s", id, err);
    free(err);
}

static const char *bucket_of(const char *id)
{
    static char b[4][96];
    static int n;
    char *p = b[n++ % 4];
    snprintf(p, 96, "rag-%s-documents", id);
    return p;
}

/* The CLI's own account (tq_cli) and, for operator commands, the admin's. */
static int cli_as(bool admin, char **out, char **err, const char *const *argv)
{
    char db[600], redis[300];
    snprintf(db, sizeof(db), "TQ_DATABASE_URL=%s",
             !H.roles ? H.dsn : admin ? H.migrate_dsn : H.cli_dsn);
    snprintf(redis, sizeof(redis), "TQ_REDIS_URL=%s", H.roles ? H.cli_redis_url : H.redis_url);
    const char *env[] = {db, redis, NULL};
    return h_run_env(argv, env, out, err);
}

/* ------------------------------------------------------------ residency */

TestSuite(residency, .init = residency_setup, .fini = residency_teardown, .timeout = 180);

Test(residency, the_demos_eu_tenant_gets_an_eu_bucket_through_the_shipped_pipeline)
{
    /* globex-retail's row of deploy/local/tenants-demo.csv: Gold, eu-west-1, 8 lakh */
    const char *eu = h_tenant("globex"), *us = h_tenant("acme");
    submit(eu, "Gold", "eu-west-1", "800000", "lars.nilsson@globex.example");
    submit(us, "Gold", "us-east-1", "950000", "priya.sharma@acme-corp.example");
    pid_t w = st_worker_start(worker_log);
    cr_assert(wait_status(eu, "active", 60000), "the EU tenant never became active");
    cr_assert(wait_status(us, "active", 60000), "the US tenant never became active");
    cr_assert_eq(st_worker_stop(w, 15000, worker_log), 0);

    /* the stand-in's records: where each bucket lives and what CreateBucket asked */
    json_t *b = st_s3_bucket(&s3, bucket_of(eu));
    cr_assert_not_null(b, "the EU tenant has a bucket");
    cr_assert_str_eq(json_string_value(json_object_get(b, "region")), "eu-west-1");
    cr_assert_str_eq(json_string_value(json_object_get(b, "location_constraint")), "eu-west-1");
    json_decref(b);
    b = st_s3_bucket(&s3, bucket_of(us));
    cr_assert_not_null(b);
    cr_assert_str_eq(json_string_value(json_object_get(b, "region")), "us-east-1");
    cr_assert(json_is_null(json_object_get(b, "location_constraint")),
              "us-east-1 takes no location constraint");
    json_decref(b);

    /* the residency check read the location back and recorded it */
    char *out = h_sql("SELECT s.output FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id"
                      " WHERE j.tenant_id = '%s' AND s.step = 'check-residency'", eu);
    json_t *o = h_json(out, "check-residency output");
    cr_assert_str_eq(json_string_value(json_object_get(o, "actual_region")), "eu-west-1");
    cr_assert_str_eq(json_string_value(json_object_get(o, "expected_region")), "eu-west-1");
    json_decref(o);
    free(out);
}

Test(residency, a_bucket_found_outside_the_tenants_region_blocks_activation)
{
    /* the shipped residency check's entry, held back until the bucket was moved */
    h_use_pipeline(h_write_file(
        "residency.json",
        "{\"name\":\"residency\",\"steps\":["
        "{\"name\":\"bucket\",\"kind\":\"s3_bucket\",\"params\":{\"endpoint\":"
        "\"${region.s3_endpoint}\",\"region\":\"${region.s3_region}\",\"access_key\":"
        "\"${env.TQ_S3_ACCESS_KEY}\",\"secret_key\":\"${env.TQ_S3_SECRET_KEY}\"}},"
        "{\"name\":\"hold\",\"kind\":\"sleep\",\"needs\":[\"bucket\"],\"params\":{\"ms\":2000}},"
        "{\"name\":\"check-residency\",\"kind\":\"check_s3\",\"class\":\"compliance\","
        " \"needs\":[\"hold\"],\"params\":{\"check\":\"residency\",\"expect_region\":"
        "\"${region.s3_region}\",\"endpoint\":\"${region.s3_endpoint}\",\"region\":"
        "\"${region.s3_region}\",\"access_key\":\"${env.TQ_S3_ACCESS_KEY}\","
        "\"secret_key\":\"${env.TQ_S3_SECRET_KEY}\"}}]}"));
    const char *id = h_tenant("moved");
    submit(id, "Silver", "eu-west-1", "300000", "o@example.com");
    pid_t w = st_worker_start(worker_log);
    cr_assert(wait_step(id, "bucket", "succeeded", 30000));
    char q[200];
    snprintf(q, sizeof(q), "bucket=%s&region=us-east-1", bucket_of(id));
    cr_assert_eq(st_s3_admin(&s3, "misplace", q), 200);
    cr_assert(wait_status(id, "blocked", 30000), "a misplaced bucket must block activation");
    cr_assert_eq(st_worker_stop(w, 15000, worker_log), 0);

    json_t *b = st_s3_bucket(&s3, bucket_of(id));
    cr_assert_not_null(b, "blocked keeps the bucket for the operator");
    json_decref(b);
    char *why = h_sql("SELECT failure_reason FROM tq.tenants WHERE tenant_id = '%s'", id);
    cr_assert(strstr(why, "lives in us-east-1") && strstr(why, "eu-west-1"),
              "the reason names both regions: %s", why);
    free(why);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants WHERE tenant_id = '%s'"
                            " AND activated_at IS NOT NULL", id), 0);
}

Test(residency, a_region_whose_map_entry_points_elsewhere_is_not_used_by_a_fleet_default)
{
    /* eu-west-1 maps to s3 region eu-central-1: the bucket goes there, and
       the residency check expects exactly that, not a fleet-wide region */
    setenv("TQ_REGIONS_FILE", write_map("regions-central.json", "eu-central-1", true), 1);
    const char *id = h_tenant("central");
    submit(id, "Bronze", "eu-west-1", "150000", "o@example.com");
    pid_t w = st_worker_start(worker_log);
    cr_assert(wait_status(id, "active", 60000));
    cr_assert_eq(st_worker_stop(w, 15000, worker_log), 0);
    json_t *b = st_s3_bucket(&s3, bucket_of(id));
    cr_assert_not_null(b);
    cr_assert_str_eq(json_string_value(json_object_get(b, "region")), "eu-central-1");
    json_decref(b);
}

Test(residency, a_region_without_a_map_entry_is_refused_at_submit_and_nothing_is_written)
{
    setenv("TQ_REGIONS_FILE", write_map("regions-two.json", "eu-west-1", false), 1);
    const char *id = h_tenant("west");
    char *out = NULL, *err = NULL;
    int rc = h_enqueue(&out, &err, "--json", "submit", "--tenant-id", id, "--name", id, "--tier",
                       "Silver", "--region", "us-west-2", "--budget", "300000", "--owner",
                       "o@example.com", NULL);
    cr_assert_eq(rc, 3, "an unmapped region is a rule the request breaks: %s %s", out, err);
    cr_assert(strstr(out, "\"region\"") && strstr(out, "has no entry in the region map"),
              "names the field and the rule: %s", out);
    free(out);
    free(err);

    /* bulk: the row, the field and the rule; nothing of the batch written */
    char csv[600];
    snprintf(csv, sizeof(csv),
             "tenant_id,name,tier,region,budget,owner\n"
             "%s-a,A %s,Silver,eu-west-1,300000,a@example.com\n"
             "%s-b,B %s,Silver,us-west-2,300000,b@example.com\n",
             id, id, id, id);
    const char *file = h_write_file("bulk.csv", csv);
    out = err = NULL;
    rc = h_enqueue(&out, &err, "--json", "submit", "--file", file, NULL);
    cr_assert_eq(rc, 3, "%s %s", out, err);
    json_t *o = h_json(out, "bulk submit");
    json_t *errors = json_object_get(json_object_get(o, "error"), "errors");
    cr_assert_eq(json_array_size(errors), 1, "%s", out);
    json_t *e = json_array_get(errors, 0);
    cr_assert_eq(json_integer_value(json_object_get(e, "line")), 3, "%s", out);
    cr_assert_str_eq(json_string_value(json_object_get(e, "field")), "region");
    cr_assert(strstr(json_string_value(json_object_get(e, "rule")), "region map"), "%s", out);
    json_decref(o);
    free(out);
    free(err);

    /* --stream: the line is answered with the same rule */
    char lines[600];
    snprintf(lines, sizeof(lines),
             "{\"tenant_id\":\"%s-s\",\"name\":\"S %s\",\"tier\":\"Silver\","
             "\"region\":\"us-west-2\",\"budget\":300000,\"owner\":\"s@example.com\"}\n",
             id, id);
    const char *in = h_write_file("stream.jsonl", lines);
    char cmd[900];
    snprintf(cmd, sizeof(cmd), "exec '%s' submit --stream < '%s'", TQ_ENQUEUE_BIN, in);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    out = err = NULL;
    cli_as(false, &out, &err, argv);
    cr_assert(strstr(out, "\"region\"") && strstr(out, "has no entry in the region map"),
              "the stream answers the rule: %s %s", out, err);
    free(out);
    free(err);

    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants"), 0, "nothing written");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs"), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id IS NOT NULL"),
                 0);
}

Test(residency, a_bad_region_map_stops_the_cli_naming_the_region_and_the_field)
{
    setenv("TQ_REGIONS_FILE",
           h_write_file("bad.json", "{\"eu-west-1\": {\"s3_region\": \"eu-west-1\","
                                    " \"s3_endpoint\": \"https://k:pw@s3.example\"}}"),
           1);
    char *out = NULL, *err = NULL;
    int rc = h_enqueue(&out, &err, "submit", "--tenant-id", h_tenant("bad"), "--name", "Bad",
                       "--tier", "Bronze", "--region", "eu-west-1", "--budget", "100000",
                       "--owner", "o@example.com", NULL);
    cr_assert_eq(rc, 2, "bad configuration: %s", err);
    cr_assert(strstr(err, "region \"eu-west-1\"") && strstr(err, "field \"s3_endpoint\""),
              "%s", err);
    cr_assert_null(strstr(err, "pw@"), "the URL's password is never echoed: %s", err);
    free(out);
    free(err);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants"), 0);
}

/* ------------------------------------------------------------ approvals */

static void approvals_setup(void)
{
    h_setup();
    h_use_pipeline(h_write_file("noop.json", "{\"name\":\"approvals\",\"steps\":["
                                             "{\"name\":\"one\",\"kind\":\"noop\"}]}"));
}

TestSuite(approvals, .init = approvals_setup, .fini = h_teardown, .timeout = 120);

static int approvers(bool admin, char **out, char **err, const char *verb, const char *role,
                     const char *identity)
{
    const char *argv[] = {TQ_ENQUEUE_BIN, "--json", "approvers", verb, "--role", role,
                          identity, identity ? "--by" : NULL, "ops@example.com", NULL};
    return cli_as(admin, out, err, argv);
}

static void add_approver(const char *role, const char *identity)
{
    char *err = NULL;
    int rc = approvers(true, NULL, &err, "add", role, identity);
    cr_assert_eq(rc, 0, "approvers add %s %s: %s", role, identity, err);
    free(err);
}

static char *status_of(const char *id)
{
    return h_sql("SELECT status FROM tq.tenants WHERE tenant_id = '%s'", id);
}

Test(approvals, approvers_change_only_with_the_admin_account_and_each_change_is_audited)
{
    char *out = NULL, *err = NULL;
    if (H.roles) {
        int rc = approvers(false, &out, &err, "add", "finance", "mallory@example.com");
        cr_assert_eq(rc, 3, "the CLI's account cannot make approvers: %s", err);
        free(out);
        free(err);
        cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.approvers"), 0);
    }
    add_approver("finance", "cfo@example.com");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.approvers WHERE role = 'finance'"
                            " AND identity = 'cfo@example.com' AND added_by = 'ops@example.com'"),
                 1);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event = 'approver_added'"
                            " AND actor = 'ops@example.com'"
                            " AND detail->>'identity' = 'cfo@example.com'"
                            " AND detail->>'role' = 'finance'"), 1);
    /* adding again changes nothing and writes nothing */
    add_approver("finance", "cfo@example.com");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event = 'approver_added'"),
                 1);
    /* anyone may read the list */
    out = err = NULL;
    const char *list[] = {TQ_ENQUEUE_BIN, "--json", "approvers", "list", "--role", "finance",
                          NULL};
    cr_assert_eq(cli_as(false, &out, &err, list), 0, "%s", err);
    cr_assert(strstr(out, "cfo@example.com"), "%s", out);
    free(out);
    free(err);

    out = err = NULL;
    cr_assert_eq(approvers(true, &out, &err, "remove", "finance", "cfo@example.com"), 0, "%s",
                 err);
    free(out);
    free(err);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.approvers"), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event ="
                            " 'approver_removed' AND detail->>'identity' = 'cfo@example.com'"),
                 1);
    out = err = NULL;
    cr_assert_eq(approvers(true, &out, &err, "remove", "finance", "cfo@example.com"), 4);
    free(out);
    free(err);

    /* a bad role is refused before anything is written */
    out = err = NULL;
    cr_assert_eq(approvers(true, &out, &err, "add", "Fin Ance", "x@example.com"), 3);
    cr_assert(strstr(out, "--role"), "%s", out);
    free(out);
    free(err);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.approvers"), 0);
}

Test(approvals, only_a_holder_of_the_role_may_approve_and_never_the_requester)
{
    const char *a = h_tenant("big");
    submit(a, "Gold", "us-east-1", "1400000", "cfo@example.com");
    char *st = status_of(a);
    cr_assert_str_eq(st, "pending_approval");
    free(st);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id = '%s'"
                            " AND event = 'pending_approval' AND detail->>'role' = 'finance'"
                            " AND (detail->>'budget')::bigint = 1400000", a), 1,
                 "the request waits, and says for whom");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id = '%s'"
                            " AND event = 'approved'", a), 0);
    add_approver("finance", "cfo@example.com");      /* the requester, also in finance */
    add_approver("finance", "controller@example.com");
    add_approver("legal", "counsel@example.com");   /* a role, but not the policy's */

    struct {
        const char *by;
        const char *want;
    } refused[] = {
        {"anyone@example.com", "does not hold role finance"},
        {"counsel@example.com", "does not hold role finance"},
        {"cfo@example.com", "requester (owner)"},
        {"CFO@example.com", "requester (owner)"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        char *out = NULL, *err = NULL;
        int rc = h_enqueue(&out, &err, "approve", a, "--by", refused[i].by, NULL);
        cr_assert_eq(rc, 3, "approve --by %s: %d %s", refused[i].by, rc, err);
        cr_assert(strstr(err, refused[i].want), "approve --by %s: %s", refused[i].by, err);
        free(out);
        free(err);
    }
    /* nothing changed */
    st = status_of(a);
    cr_assert_str_eq(st, "pending_approval");
    free(st);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants WHERE tenant_id = '%s'"
                            " AND approver IS NOT NULL", a), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id = '%s'"
                            " AND event IN ('approved', 'rejected')", a), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs WHERE tenant_id = '%s'"
                            " AND status = 'held'", a), 1);

    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "approve", a, "--by", "controller@example.com", NULL), 0,
                 "%s", err);
    free(err);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id = '%s'"
                            " AND event = 'approved' AND actor = 'controller@example.com'"
                            " AND detail->>'role' = 'finance'", a), 1);
    char *who = h_sql("SELECT approver FROM tq.tenants WHERE tenant_id = '%s'", a);
    cr_assert_str_eq(who, "controller@example.com");
    free(who);
}

Test(approvals, the_database_refuses_an_approval_by_anyone_else_even_in_raw_sql)
{
    const char *a = h_tenant("raw");
    submit(a, "Gold", "us-east-1", "1200000", "owner@example.com");
    add_approver("finance", "controller@example.com");
    add_approver("finance", "owner@example.com");
    struct tq_pg *pg = NULL;
    cr_assert_eq(tq_pg_open(H.roles ? H.cli_dsn : H.dsn, &pg), TQ_OK);
    const char *who[] = {"mallory@example.com", "owner@example.com", NULL};
    for (size_t i = 0; who[i]; i++) {
        char sql[400];
        snprintf(sql, sizeof(sql), "UPDATE tq.tenants SET status = 'queued', approver = '%s'"
                 " WHERE tenant_id = '%s'", who[i], a);
        PGresult *r = PQexec(tq_pg_conn(pg), sql);
        cr_assert_eq(PQresultStatus(r), PGRES_FATAL_ERROR, "approver %s was let through", who[i]);
        cr_assert(strstr(PQresultErrorMessage(r), "may not approve"), "%s",
                  PQresultErrorMessage(r));
        PQclear(r);
    }
    tq_pg_close(pg);
    char *st = status_of(a);
    cr_assert_str_eq(st, "pending_approval");
    free(st);
}

Test(approvals, only_a_holder_of_the_role_may_reject)
{
    const char *a = h_tenant("rej");
    submit(a, "Gold", "us-east-1", "1200000", "owner@example.com");
    add_approver("finance", "controller@example.com");
    char *out = NULL, *err = NULL;
    cr_assert_eq(h_enqueue(&out, &err, "reject", a, "--by", "intern@example.com", "--reason",
                           "no", NULL), 3);
    cr_assert(strstr(err, "does not hold role finance"), "%s", err);
    free(out);
    free(err);
    char *st = status_of(a);
    cr_assert_str_eq(st, "pending_approval");
    free(st);
    err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "reject", a, "--by", "controller@example.com", "--reason",
                           "no budget owner", NULL), 0, "%s", err);
    free(err);
    st = status_of(a);
    cr_assert_str_eq(st, "rejected");
    free(st);
}

Test(approvals, the_policy_is_data_a_tier_mapped_to_another_role_needs_that_role)
{
    const char *a = h_tenant("policy");
    submit(a, "Gold", "us-east-1", "1200000", "owner@example.com");
    add_approver("finance", "controller@example.com");
    add_approver("board", "chair@example.com");
    free(h_sql("UPDATE tq.approval_policy SET role = 'board' WHERE tier = 'Gold'"));
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "approve", a, "--by", "controller@example.com", NULL), 3);
    cr_assert(strstr(err, "does not hold role board"), "%s", err);
    free(err);
    err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "approve", a, "--by", "chair@example.com", NULL), 0, "%s",
                 err);
    free(err);
}

Test(approvals, a_tier_with_its_own_threshold_in_the_policy_holds_budgets_above_it)
{
    /* policy is data, tier x budget: Silver's own 3 lakh, the others the fleet's 10 */
    free(h_sql("UPDATE tq.approval_policy SET threshold_inr = 300000 WHERE tier = 'Silver'"));
    const char *s = h_tenant("silver4");
    const char *g = h_tenant("gold9");
    submit(s, "Silver", "us-east-1", "400000", "owner@example.com");
    submit(g, "Gold", "us-east-1", "900000", "owner@example.com");
    char *st = status_of(s);
    cr_assert_str_eq(st, "pending_approval", "Silver at 4 lakh is above its own threshold");
    free(st);
    st = status_of(g);
    cr_assert_str_eq(st, "queued", "Gold at 9 lakh is within the fleet's threshold");
    free(st);
    free(h_sql("UPDATE tq.approval_policy SET threshold_inr = NULL"));
}

Test(approvals, a_request_pending_too_long_is_escalated_once_a_period_and_flagged_in_status)
{
    const char *a = h_tenant("slow"), *b = h_tenant("fresh");
    submit(a, "Gold", "us-east-1", "1300000", "owner@example.com");
    submit(b, "Gold", "us-east-1", "1300000", "owner@example.com");
    /* a waits since two hours; b was just submitted */
    free(h_sql("UPDATE tq.tenants SET created_at = now() - interval '2 hours'"
               " WHERE tenant_id = '%s'", a));

    /* the statement the workers run (tq_approvals_escalate), called twice */
    struct tq_pg *pg = NULL;
    cr_assert_eq(tq_pg_open(H.dsn, &pg), TQ_OK);
    size_t n = 0;
    cr_assert_eq(tq_approvals_escalate(pg, H.queue, 3600, "test", &n), TQ_OK);
    cr_assert_eq(n, 1, "the request waiting two hours, not the fresh one");
    cr_assert_eq(tq_approvals_escalate(pg, H.queue, 3600, "test", &n), TQ_OK);
    cr_assert_eq(n, 0, "once per period");
    /* a period later it is escalated again */
    free(h_sql("UPDATE tq.tenants SET escalated_at = now() - interval '61 minutes'"
               " WHERE tenant_id = '%s'", a));
    cr_assert_eq(tq_approvals_escalate(pg, H.queue, 3600, "test", &n), TQ_OK);
    cr_assert_eq(n, 1);
    tq_pg_close(pg);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id = '%s'"
                            " AND event = 'approval_escalated'", a), 2);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id = '%s'"
                            " AND event = 'approval_escalated' AND detail->>'role' = 'finance'"
                            " AND (detail->>'escalation')::int = 2", a), 1);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id = '%s'"
                            " AND event = 'approval_escalated'", b), 0);

    /* status flags it, in JSON and in the table */
    char *out = NULL, *err = NULL;
    cr_assert_eq(h_enqueue(&out, &err, "--json", "status", a, NULL), 0, "%s", err);
    cr_assert(strstr(out, "\"escalated\": true") || strstr(out, "\"escalated\":true"), "%s", out);
    free(out);
    free(err);
    out = err = NULL;
    cr_assert_eq(h_enqueue(&out, &err, "status", a, b, NULL), 0, "%s", err);
    char *line_a = strstr(out, a), *line_b = strstr(out, b);
    cr_assert(line_a && line_b, "%s", out);
    char *end_a = strchr(line_a, '\n'), *end_b = strchr(line_b, '\n');
    if (end_a)
        *end_a = '\0';
    if (end_b)
        *end_b = '\0';
    cr_assert(strstr(line_a, "ESCALATED"), "the escalated request is flagged: %s", line_a);
    cr_assert_null(strstr(line_b, "ESCALATED"), "the fresh one is not: %s", line_b);
    free(out);
    free(err);
}

Test(approvals, the_worker_escalates_with_TQ_APPROVAL_ESCALATE_AFTER)
{
    const char *a = h_tenant("waits");
    submit(a, "Gold", "us-east-1", "1300000", "owner@example.com");
    free(h_sql("UPDATE tq.tenants SET created_at = now() - interval '2 hours'"
               " WHERE tenant_id = '%s'", a));
    const char *env[] = {"TQ_APPROVAL_ESCALATE_AFTER=3600", NULL};
    pid_t w = h_worker_start(env);
    cr_assert(h_wait_sql("1", 30000, "SELECT count(*) FROM tq.audit_events WHERE tenant_id = '%s'"
                         " AND event = 'approval_escalated' AND actor = 'scheduler'", a),
              "the worker never escalated");
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants WHERE tenant_id = '%s'"
                            " AND status = 'pending_approval' AND escalations = 1", a), 1);
}
