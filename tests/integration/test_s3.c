/*
 * The s3_bucket and check_s3 step kinds against the real worker and the
 * SigV4-verifying S3 stand-in (tests/stubs/s3server.py, started per test on
 * a free port): bucket, cost tags and lifecycle by tier; idempotent create
 * and undo; a removed tag blocks activation; rollback empties and removes
 * the bucket; a wrong secret fails with SignatureDoesNotMatch and is written
 * nowhere; a slow S3 is cancelled by the step timeout; a 503 is retried.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "stubs.h"
#include "tq/util.h"

#define ACCESS_KEY "AKIATQTESTS3"
#define SECRET_KEY "tq-s3-Secret/Key+42=Zq7"

static struct st_s3 s3;
static char worker_log[300];

static void setup(void)
{
    h_setup();
    st_s3_start(&s3, "us-east-1", ACCESS_KEY, SECRET_KEY);
    setenv("TQ_S3_ENDPOINT", s3.endpoint, 1);
    setenv("TQ_S3_ACCESS_KEY", ACCESS_KEY, 1);
    setenv("TQ_S3_SECRET_KEY", SECRET_KEY, 1);
    setenv("TQ_ENVIRONMENT", "citest", 1);
    /* the step has no default region any more: these pipelines pass one */
    setenv("TQ_S3_REGION", "us-east-1", 1);
    snprintf(worker_log, sizeof(worker_log), "%s/worker.log", H.tmpdir);
}

static void teardown(void)
{
    st_s3_stop_all();
    h_teardown();
}

TestSuite(s3, .init = setup, .fini = teardown, .timeout = 180);

/* ------------------------------------------------------------ helpers */

static void pipeline(const char *name, const char *steps_json)
{
    static char text[8192];
    snprintf(text, sizeof(text), "{\"name\":\"%s\",\"steps\":[%s]}", name, steps_json);
    h_use_pipeline(h_write_file(name, text));
}

static void submit(const char *id, const char *tier, const char *budget)
{
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--tenant-id", id, "--name", id, "--tier", tier,
                       "--region", "eu-west-1", "--budget", budget, "--owner", "o@example.com",
                       NULL);
    cr_assert_eq(rc, 0, "submit: %s", err);
    free(err);
}

static bool wait_status(const char *id, const char *status, int ms)
{
    return h_wait_sql(status, ms, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", id);
}

static char *tenant_status(const char *id)
{
    return h_sql("SELECT status FROM tq.tenants WHERE tenant_id = '%s'", id);
}

static bool wait_step(const char *id, const char *step, const char *status, int ms)
{
    return h_wait_sql(status, ms, "SELECT s.status FROM tq.job_steps s JOIN tq.jobs j ON j.id ="
                      " s.job_id WHERE j.tenant_id = '%s' AND s.step = '%s'"
                      " ORDER BY j.id DESC LIMIT 1", id, step);
}

static json_t *step_output(const char *id, const char *step)
{
    char *v = h_sql("SELECT s.output FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id"
                    " WHERE j.tenant_id = '%s' AND s.step = '%s' ORDER BY j.id LIMIT 1", id, step);
    cr_assert(v && *v, "no output recorded for step %s of %s", step, id);
    json_error_t je;
    json_t *o = json_loads(v, 0, &je);
    cr_assert_not_null(o, "output of %s is not JSON: %s", step, v);
    free(v);
    return o;
}

static const char *bucket_of(const char *id)
{
    static char b[8][96];
    static int n;
    char *p = b[n++ % 8];
    snprintf(p, 96, "rag-%s-documents", id);
    return p;
}

static bool bucket_exists(const char *bucket)
{
    json_t *b = st_s3_bucket(&s3, bucket);
    json_decref(b);
    return b != NULL;
}

/* Requests the stub logged: by op name (signed ones), or by method and path when op is NULL. */
static long count_req(const char *op, const char *method, const char *path, int status)
{
    char *body = NULL;
    cr_assert_eq(st_http(s3.port, "GET", "/_admin/requests", &body), 200);
    json_t *o = json_loads(body, 0, NULL);
    free(body);
    long n = 0;
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(o, "requests"), i, r) {
        bool hit = op ? strcmp(json_string_value(json_object_get(r, "op")), op) == 0
                      : strcmp(json_string_value(json_object_get(r, "method")), method) == 0 &&
                            strcmp(json_string_value(json_object_get(r, "path")), path) == 0;
        if (hit && (status == 0 || json_integer_value(json_object_get(r, "status")) == status))
            n++;
    }
    json_decref(o);
    return n;
}

static long count_ops(const char *op, int status)
{
    return count_req(op, NULL, NULL, status);
}

/* Every row of every tq table, as text, and the worker's log: none may hold needle. */
static void assert_nowhere(const char *needle)
{
    char *tables = h_sql("SELECT string_agg(quote_ident(table_name), ',') FROM"
                         " information_schema.tables WHERE table_schema = 'tq'"
                         " AND table_type = 'BASE TABLE'");
    cr_assert(tables && *tables, "no tables in schema tq");
    int checked = 0;
    for (char *save = NULL, *t = strtok_r(tables, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        long n = h_sql_long("SELECT count(*) FROM tq.%s x WHERE x::text LIKE '%%%s%%'", t, needle);
        cr_assert_eq(n, 0, "the secret is in tq.%s", t);
        checked++;
    }
    free(tables);
    cr_assert_geq(checked, 4, "job_steps, step_attempts, audit_events, tenants at least");
    char *log = st_slurp(worker_log);
    cr_assert(*log, "the worker log was captured");
    cr_assert_null(strstr(log, needle), "the secret is in the worker's stderr");
    free(log);
}

#define S3_PARAMS                                                                          \
    "\"endpoint\":\"${env.TQ_S3_ENDPOINT}\",\"region\":\"${env.TQ_S3_REGION}\","            \
    "\"access_key\":\"${env.TQ_S3_ACCESS_KEY}\","                                           \
    "\"secret_key\":\"${env.TQ_S3_SECRET_KEY}\""
#define RETRY_FAST "\"retry\":{\"max_attempts\":3,\"base_ms\":50,\"max_ms\":200}"
#define BUCKET_STEP \
    "{\"name\":\"bucket\",\"kind\":\"s3_bucket\"," RETRY_FAST ",\"params\":{" S3_PARAMS "}}"
#define OBJECTS_STEP                                                                        \
    "{\"name\":\"objects\",\"kind\":\"check_s3\",\"needs\":[\"bucket\"],\"class\":\"integration\"," \
    RETRY_FAST ",\"params\":{\"check\":\"objects\"," S3_PARAMS "}}"

/* ------------------------------------------------------------ (a) */

Test(s3, provision_makes_a_tagged_bucket_with_the_tier_lifecycle)
{
    pipeline("a.json", BUCKET_STEP "," OBJECTS_STEP ","
             "{\"name\":\"tags\",\"kind\":\"check_s3\",\"needs\":[\"bucket\"],\"class\":\"compliance\","
             " \"retry\":{\"max_attempts\":1},\"params\":{\"check\":\"cost_tags\"," S3_PARAMS "}}");
    static const struct {
        const char *stem, *tier, *budget, *cost_center;
        int days;
    } t[] = {{"gold", "Gold", "600000", "rag-platform-gold", 90},
             {"silver", "Silver", "300000", "rag-platform-silver", 60},
             {"bronze", "Bronze", "100000", "rag-platform-bronze", 30}};
    const char *ids[3];
    for (int i = 0; i < 3; i++) {
        ids[i] = h_tenant(t[i].stem);
        submit(ids[i], t[i].tier, t[i].budget);
    }
    pid_t w = st_worker_start(worker_log);
    for (int i = 0; i < 3; i++) {
        if (!wait_status(ids[i], "active", 30000)) {
            char *st = tenant_status(ids[i]);
            char *why = h_sql("SELECT failure_reason FROM tq.tenants WHERE tenant_id = '%s'", ids[i]);
            cr_assert_fail("%s is %s, not active: %s", ids[i], st, why);
        }
    }
    cr_assert_eq(st_worker_stop(w, 15000, worker_log), 0);

    json_t *state = st_s3_state(&s3);
    cr_assert_eq(json_object_size(json_object_get(state, "buckets")), 3, "one bucket per tenant");
    json_decref(state);
    for (int i = 0; i < 3; i++) {
        json_t *b = st_s3_bucket(&s3, bucket_of(ids[i]));
        cr_assert_not_null(b, "bucket %s missing", bucket_of(ids[i]));
        json_t *tags = json_object_get(b, "tags");
        cr_assert_eq(json_object_size(tags), 5, "exactly the five cost tags");
        cr_assert_str_eq(json_string_value(json_object_get(tags, "TenantID")), ids[i]);
        cr_assert_str_eq(json_string_value(json_object_get(tags, "Tier")), t[i].tier);
        cr_assert_str_eq(json_string_value(json_object_get(tags, "CostCenter")), t[i].cost_center);
        cr_assert_str_eq(json_string_value(json_object_get(tags, "ManagedBy")), "tenantq");
        cr_assert_str_eq(json_string_value(json_object_get(tags, "Environment")), "citest");
        json_t *rule = json_array_get(json_object_get(b, "lifecycle_rules"), 0);
        json_t *tr = json_array_get(json_object_get(rule, "transitions"), 0);
        cr_assert_str_eq(json_string_value(json_object_get(rule, "status")), "Enabled");
        cr_assert_eq(json_integer_value(json_object_get(tr, "days")), t[i].days, "%s: days",
                     t[i].tier);
        cr_assert_str_eq(json_string_value(json_object_get(tr, "storage_class")), "GLACIER");
        cr_assert_eq(json_object_size(json_object_get(b, "objects")), 0, "the probe was removed");
        json_decref(b);

        json_t *out = step_output(ids[i], "bucket");
        cr_assert_str_eq(json_string_value(json_object_get(out, "bucket")), bucket_of(ids[i]));
        cr_assert_eq(json_integer_value(json_object_get(out, "archive_after_days")), t[i].days);
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(out, "tags"),
                                                           "CostCenter")), t[i].cost_center);
        fprintf(stderr, "s3_bucket step for %s (%s): duration_ms %lld\n", ids[i], t[i].tier,
                (long long)json_integer_value(json_object_get(out, "duration_ms")));
        json_decref(out);
        out = step_output(ids[i], "objects");
        cr_assert(json_is_integer(json_object_get(out, "put_ms")) &&
                  json_is_integer(json_object_get(out, "get_ms")) &&
                  json_is_integer(json_object_get(out, "delete_ms")), "latencies recorded");
        json_decref(out);
        out = step_output(ids[i], "tags");
        cr_assert_eq(json_array_size(json_object_get(out, "missing")), 0);
        cr_assert_eq(json_array_size(json_object_get(out, "wrong")), 0);
        cr_assert(json_equal(json_object_get(out, "found"), json_object_get(out, "expected")));
        json_decref(out);
    }
    /* configuration PUTs carry the integrity header AWS demands */
    cr_assert_eq(count_ops("PutBucketTagging", 204), 3);
    cr_assert_eq(count_ops("PutBucketLifecycleConfiguration", 200), 3);
    assert_nowhere(SECRET_KEY);
}

/* ------------------------------------------------------------ (b) */

Test(s3, the_same_step_twice_leaves_one_bucket_and_undo_of_nothing_succeeds)
{
    const char *id = h_tenant("twice");
    /* a bucket made behind the worker's back (an earlier delivery that died after the PUT) */
    char q[200];
    snprintf(q, sizeof(q), "bucket=%s", bucket_of(id));
    cr_assert_eq(st_s3_admin(&s3, "create-bucket", q), 200);
    pipeline("b.json", BUCKET_STEP ","
             "{\"name\":\"again\",\"kind\":\"s3_bucket\",\"needs\":[\"bucket\"]," RETRY_FAST ","
             " \"params\":{" S3_PARAMS "}}");
    submit(id, "Silver", "300000");
    pid_t w = st_worker_start(worker_log);
    cr_assert(wait_status(id, "active", 30000));
    json_t *state = st_s3_state(&s3);
    cr_assert_eq(json_object_size(json_object_get(state, "buckets")), 1, "one bucket");
    json_decref(state);
    cr_assert_eq(count_ops("CreateBucket", 200), 2, "us-east-1 answers 200 to its owner again");
    cr_assert_eq(count_ops("PutBucketTagging", 204), 2);
    json_t *b = st_s3_bucket(&s3, bucket_of(id));
    cr_assert_eq(json_object_size(json_object_get(b, "tags")), 5);
    json_decref(b);

    /* the bucket vanishes before deprovision: both undos still succeed */
    cr_assert_eq(st_s3_admin(&s3, "delete-bucket", q), 200);
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "deprovision", id, NULL), 0, "deprovision: %s", err);
    free(err);
    cr_assert(wait_status(id, "deprovisioned", 30000));
    cr_assert_eq(st_worker_stop(w, 15000, worker_log), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id"
                            " WHERE j.kind = 'deprovision' AND s.status = 'compensated'"), 2);
    cr_assert_eq(count_ops("ListObjectsV2", 404), 2, "each undo found no bucket: nothing to do");
}

Test(s3, outside_us_east_1_already_owned_by_you_counts_as_created)
{
    static struct st_s3 eu;
    st_s3_start(&eu, "eu-west-1", ACCESS_KEY, SECRET_KEY);
    setenv("TQ_S3_ENDPOINT", eu.endpoint, 1);
    setenv("TQ_S3_REGION", "eu-west-1", 1);   /* what S3_PARAMS pass as params.region */
    pipeline("eu.json", BUCKET_STEP ","
             "{\"name\":\"again\",\"kind\":\"s3_bucket\",\"needs\":[\"bucket\"]," RETRY_FAST ","
             " \"params\":{" S3_PARAMS "}}");
    const char *id = h_tenant("eu");
    submit(id, "Bronze", "100000");
    pid_t w = st_worker_start(worker_log);
    cr_assert(wait_status(id, "active", 30000));
    cr_assert_eq(st_worker_stop(w, 15000, worker_log), 0);
    json_t *b = st_s3_bucket(&eu, bucket_of(id));
    cr_assert_not_null(b);
    cr_assert_str_eq(json_string_value(json_object_get(b, "region")), "eu-west-1");
    json_decref(b);
    json_t *out = step_output(id, "again");
    cr_assert(json_is_true(json_object_get(out, "already_existed")), "409 BucketAlreadyOwnedByYou");
    json_decref(out);
}

/* ------------------------------------------------------------ (c) */

Test(s3, a_tag_removed_before_the_check_blocks_activation_and_keeps_the_bucket)
{
    pipeline("c.json", BUCKET_STEP ","
             "{\"name\":\"hold\",\"kind\":\"sleep\",\"needs\":[\"bucket\"],\"params\":{\"ms\":2000}},"
             "{\"name\":\"tags\",\"kind\":\"check_s3\",\"needs\":[\"hold\"],\"class\":\"compliance\","
             " \"retry\":{\"max_attempts\":1},\"params\":{\"check\":\"cost_tags\"," S3_PARAMS "}}");
    const char *id = h_tenant("untag");
    submit(id, "Silver", "300000");
    pid_t w = st_worker_start(worker_log);
    cr_assert(wait_step(id, "bucket", "succeeded", 30000));
    char q[200];
    snprintf(q, sizeof(q), "bucket=%s&key=CostCenter", bucket_of(id));
    cr_assert_eq(st_s3_admin(&s3, "untag", q), 200);
    cr_assert(wait_status(id, "blocked", 30000));

    json_t *b = st_s3_bucket(&s3, bucket_of(id));
    cr_assert_not_null(b, "blocked keeps the bucket");
    cr_assert_eq(json_object_size(json_object_get(b, "tags")), 4);
    json_decref(b);
    /* a failed step's output is not stored by the engine: errstr carries the facts */
    char *why = h_sql("SELECT failure_reason FROM tq.tenants WHERE tenant_id = '%s'", id);
    cr_assert(strstr(why, "tag CostCenter is missing (expected \"rag-platform-silver\")"),
              "reason names the tag: %s", why);
    free(why);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE step = 'tags'"
                            " AND error LIKE '%%tag CostCenter is missing%%'"), 1);

    /* a wrong value is named too; the operator then fixes the tag and retries */
    snprintf(q, sizeof(q), "bucket=%s&key=CostCenter&value=rag-platform-gold", bucket_of(id));
    cr_assert_eq(st_s3_admin(&s3, "tag", q), 200);
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "retry", id, NULL), 0, "retry: %s", err);
    free(err);
    cr_assert(h_wait_sql("1", 30000, "SELECT count(*) FROM tq.step_attempts WHERE step = 'tags'"
                         " AND error LIKE '%%CostCenter is \"rag-platform-gold\", expected"
                         " \"rag-platform-silver\"%%'"));
    cr_assert(wait_status(id, "blocked", 30000));
    snprintf(q, sizeof(q), "bucket=%s&key=CostCenter&value=rag-platform-silver", bucket_of(id));
    cr_assert_eq(st_s3_admin(&s3, "tag", q), 200);
    cr_assert_eq(h_enqueue(NULL, &err, "retry", id, NULL), 0, "retry: %s", err);
    free(err);
    cr_assert(wait_status(id, "active", 30000));
    cr_assert_eq(st_worker_stop(w, 15000, worker_log), 0);
    cr_assert_eq(count_ops("CreateBucket", 0), 1, "the retries re-ran only the check");
}

/* ------------------------------------------------------------ (d) */

Test(s3, a_later_failure_rolls_back_and_removes_the_bucket_with_its_objects)
{
    pipeline("d.json", BUCKET_STEP "," OBJECTS_STEP ","
             "{\"name\":\"vector\",\"kind\":\"sleep\",\"needs\":[\"objects\"],\"class\":\"integration\","
             " \"retry\":{\"max_attempts\":1},"
             " \"params\":{\"ms\":2500,\"fail_attempts\":99,\"error\":\"vector insert refused\"}}");
    const char *id = h_tenant("rb");
    submit(id, "Gold", "600000");
    pid_t w = st_worker_start(worker_log);
    cr_assert(wait_step(id, "objects", "succeeded", 30000));
    /* documents arrive while the last step runs; odd keys must round-trip through the undo */
    const char *keys[] = {"docs/a.txt", "docs/sub%20dir/b%2Bc.txt", "%C3%A4%26x%3Cy%3E.pdf",
                          "a/../up.txt"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        cr_assert_eq(st_s3_put_object(&s3, bucket_of(id), keys[i], "hello"), 200, "put %s", keys[i]);
    json_t *b = st_s3_bucket(&s3, bucket_of(id));
    cr_assert_eq(json_object_size(json_object_get(b, "objects")), 4);
    json_decref(b);
    cr_assert(wait_status(id, "failed", 30000));
    cr_assert_eq(st_worker_stop(w, 15000, worker_log), 0);
    cr_assert(!bucket_exists(bucket_of(id)), "rollback removes the bucket");
    cr_assert_eq(count_ops("DeleteObject", 204), 1 + 1 + 4,
                 "the probe (by the check, again by its undo) and the four documents");
    char *st = h_sql("SELECT s.status FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id"
                     " WHERE j.tenant_id = '%s' AND s.step = 'bucket'", id);
    cr_assert_str_eq(st, "compensated");
    free(st);
}

Test(s3, deprovision_empties_a_bucket_over_several_list_pages)
{
    pipeline("dp.json", BUCKET_STEP);
    const char *id = h_tenant("pages");
    submit(id, "Bronze", "100000");
    pid_t w = st_worker_start(worker_log);
    cr_assert(wait_status(id, "active", 30000));
    for (int i = 0; i < 130; i++) {
        char key[64];
        snprintf(key, sizeof(key), "doc-%03d.txt", i);
        cr_assert_eq(st_s3_put_object(&s3, bucket_of(id), key, "x"), 200);
    }
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "deprovision", id, NULL), 0, "deprovision: %s", err);
    free(err);
    cr_assert(wait_status(id, "deprovisioned", 30000));
    cr_assert_eq(st_worker_stop(w, 15000, worker_log), 0);
    cr_assert(!bucket_exists(bucket_of(id)));
    cr_assert_eq(count_ops("DeleteObject", 204), 130);
    cr_assert_eq(count_ops("ListObjectsV2", 200), 3, "pages of 100, 30, then none");
}

/* ------------------------------------------------------------ (e) */

Test(s3, a_wrong_secret_fails_with_signature_mismatch_and_is_written_nowhere)
{
    const char *wrong = "WrongSecret-zq81/xY+tqtest";
    setenv("TQ_S3_SECRET_KEY", wrong, 1);
    pipeline("e.json", "{\"name\":\"bucket\",\"kind\":\"s3_bucket\","
             " \"retry\":{\"max_attempts\":2,\"base_ms\":50,\"max_ms\":100},\"params\":{" S3_PARAMS "}}");
    const char *id = h_tenant("badkey");
    submit(id, "Silver", "300000");
    pid_t w = st_worker_start(worker_log);
    /* the undo cannot sign either: the rollback waits for an operator */
    cr_assert(wait_status(id, "rollback_failed", 30000));
    cr_assert_eq(st_worker_stop(w, 15000, worker_log), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE step = 'bucket'"
                            " AND phase = 'run' AND error = 'PUT bucket: 403 SignatureDoesNotMatch'"),
                 2, "both attempts say why");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE step = 'bucket'"
                            " AND phase = 'undo' AND error LIKE '%%403 SignatureDoesNotMatch'"), 2);
    char *log = st_slurp(worker_log);
    cr_assert(strstr(log, "SignatureDoesNotMatch"), "the failure is logged");
    free(log);
    assert_nowhere(wrong);
    assert_nowhere(SECRET_KEY);
    char path[128];
    snprintf(path, sizeof(path), "/%s", bucket_of(id));
    cr_assert_eq(count_req(NULL, "PUT", path, 403), 2, "refused before any effect");
    json_t *state = st_s3_state(&s3);
    cr_assert_eq(json_object_size(json_object_get(state, "buckets")), 0);
    json_decref(state);

    /* the operator fixes the secret and resumes the rollback */
    setenv("TQ_S3_SECRET_KEY", SECRET_KEY, 1);
    w = st_worker_start(worker_log);
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "retry", id, NULL), 0, "retry: %s", err);
    free(err);
    cr_assert(wait_status(id, "failed", 30000));
    cr_assert_eq(st_worker_stop(w, 15000, worker_log), 0);
    assert_nowhere(wrong);
    assert_nowhere(SECRET_KEY);
}

/* ------------------------------------------------------------ cancel, retry */

Test(s3, a_slow_s3_is_cancelled_by_the_step_timeout)
{
    const char *id = h_tenant("slow");
    char slow[96], steps[2048], q[200];
    snprintf(slow, sizeof(slow), "rag-%s-slow", id);
    snprintf(q, sizeof(q), "path=/%s&ms=5000", slow);
    cr_assert_eq(st_s3_admin(&s3, "latency", q), 200);
    snprintf(steps, sizeof(steps), BUCKET_STEP ","
             "{\"name\":\"tags\",\"kind\":\"check_s3\",\"needs\":[\"bucket\"],\"class\":\"integration\","
             " \"timeout_ms\":400,\"retry\":{\"max_attempts\":2,\"base_ms\":20,\"max_ms\":50},"
             " \"params\":{\"check\":\"cost_tags\",\"bucket\":\"%s\"," S3_PARAMS "}}", slow);
    pipeline("t.json", steps);
    submit(id, "Silver", "300000");
    pid_t w = st_worker_start(worker_log);
    cr_assert(wait_status(id, "failed", 30000));
    cr_assert_eq(st_worker_stop(w, 15000, worker_log), 0, "one done per step: no assertion fired");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE step = 'tags'"
                            " AND phase = 'run' AND error = 'timed out after 400 ms'"), 2);
    cr_assert(!bucket_exists(bucket_of(id)), "rolled back");
}

Test(s3, a_503_is_retried)
{
    const char *id = h_tenant("busy");
    char q[200];
    snprintf(q, sizeof(q), "path=/%s&status=503&count=1&method=PUT", bucket_of(id));
    cr_assert_eq(st_s3_admin(&s3, "fail", q), 200);
    pipeline("r.json", BUCKET_STEP);
    submit(id, "Gold", "600000");
    pid_t w = st_worker_start(worker_log);
    cr_assert(wait_status(id, "active", 30000));
    cr_assert_eq(st_worker_stop(w, 15000, worker_log), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE step = 'bucket'"
                            " AND error = 'could not PUT bucket: 503 SlowDown'"), 1);
    cr_assert(bucket_exists(bucket_of(id)));
}
