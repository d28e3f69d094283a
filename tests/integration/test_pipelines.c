/*
 * Operator-owned named pipelines: `tq-enqueue pipeline register/list`, and
 * a submit that can only name one of them (--pipeline NAME, default the
 * fleet's default), never bring its own steps or file.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "harness.h"

TestSuite(pipelines, .init = h_setup, .fini = h_teardown, .timeout = 120);

static const char *const two_noops =
    "{\"name\": \"two\", \"steps\": [{\"name\": \"a\", \"kind\": \"noop\"},"
    " {\"name\": \"b\", \"kind\": \"noop\", \"needs\": [\"a\"]}]}";

static int submit(const char *id, const char *pipeline, char **err)
{
    return h_enqueue(NULL, err, "submit", "--tenant-id", id, "--name", id, "--tier", "Bronze",
                     "--region", "us-east-1", "--budget", "1000", "--owner", "ops@example.com",
                     pipeline ? "--pipeline" : NULL, pipeline, NULL);
}

static char *job_pipeline(const char *tenant)
{
    return h_sql("SELECT pipeline_hash FROM tq.jobs WHERE tenant_id = '%s' ORDER BY id DESC"
                 " LIMIT 1", tenant);
}

static char *registered(const char *name)
{
    return h_sql("SELECT pipeline_hash FROM tq.pipeline_names WHERE name = '%s'", name);
}

Test(pipelines, a_submit_cannot_bring_its_own_pipeline_file)
{
    /* what a submitter could do before: point TQ_PIPELINE at steps of its own */
    const char *evil = h_write_file("evil.json",
                                    "{\"name\": \"evil\", \"steps\": [{\"name\": \"pwn\", \"kind\":"
                                    " \"exec\", \"params\": {\"argv\": [\"/bin/sh\", \"-c\", \"id\"]}}]}");
    h_setenv("TQ_PIPELINE", evil);
    const char *t = h_tenant("evil");
    char *err = NULL;
    cr_assert_eq(submit(t, NULL, &err), 0, "%s", err);
    free(err);
    char *used = job_pipeline(t), *dflt = registered("tenant-provision");
    cr_assert(dflt && *dflt, "the default is registered");
    cr_assert_str_eq(used, dflt, "the job runs the fleet's default, not the submitter's file");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.pipelines WHERE body LIKE '%%/bin/sh%%'"), 0);
    free(used);
    free(dflt);

    /* nor name a file with --pipeline */
    const char *t2 = h_tenant("evil2");
    cr_assert_eq(submit(t2, evil, &err), 2);
    cr_assert(strstr(err, "is registered") && strstr(err, "nothing was submitted"), "%s", err);
    free(err);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.tenants WHERE tenant_id = '%s'", t2), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.pipelines WHERE body LIKE '%%/bin/sh%%'"), 0);
}

Test(pipelines, operators_register_list_and_submits_pick_by_name)
{
    char *out = NULL, *err = NULL;
    const char *file = h_write_file("two.json", two_noops);
    cr_assert_eq(h_enqueue(&out, &err, "--json", "pipeline", "register", file, "--name",
                           "two-noops", "--by", "alice@example.com", NULL), 0, "%s", err);
    json_t *o = h_json(out, "register");
    cr_assert_str_eq(json_string_value(json_object_get(o, "name")), "two-noops");
    cr_assert(json_is_false(json_object_get(o, "default")), "the default stays where it was");
    cr_assert_eq(json_integer_value(json_object_get(o, "steps")), 2);
    json_decref(o);
    free(out);
    free(err);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event ="
                            " 'pipeline_registered' AND actor = 'alice@example.com' AND"
                            " detail->>'name' = 'two-noops'"), 1, "audited");

    cr_assert_eq(h_enqueue(&out, NULL, "--json", "pipeline", "list", NULL), 0);
    o = h_json(out, "list");
    cr_assert_eq(json_array_size(o), 2);
    size_t defaults = 0, i;
    json_t *p;
    json_array_foreach(o, i, p) defaults += json_is_true(json_object_get(p, "default"));
    cr_assert_eq(defaults, 1);
    json_decref(o);
    free(out);

    const char *a = h_tenant("byname"), *b = h_tenant("bydefault");
    cr_assert_eq(submit(a, "two-noops", &err), 0, "%s", err);
    free(err);
    cr_assert_eq(submit(b, NULL, &err), 0, "%s", err);
    free(err);
    char *ha = job_pipeline(a), *hb = job_pipeline(b), *two = registered("two-noops"),
         *dflt = registered("tenant-provision");
    cr_assert_str_eq(ha, two);
    cr_assert_str_eq(hb, dflt);

    /* re-registering a name changes new jobs only */
    const char *file2 = h_write_file("three.json",
                                     "{\"name\": \"three\", \"steps\": [{\"name\": \"a\", \"kind\":"
                                     " \"noop\"}]}");
    cr_assert_eq(h_enqueue(NULL, &err, "pipeline", "register", file2, "--name", "two-noops",
                           "--default", NULL), 0, "%s", err);
    free(err);
    char *two2 = registered("two-noops");
    cr_assert_str_neq(two2, two);
    char *ha2 = job_pipeline(a);
    cr_assert_str_eq(ha2, two, "the submitted job keeps what it was submitted with");
    const char *c = h_tenant("newdefault");
    cr_assert_eq(submit(c, NULL, &err), 0, "%s", err);
    free(err);
    char *hc = job_pipeline(c);
    cr_assert_str_eq(hc, two2, "--default moved the fleet's default");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.pipeline_names WHERE is_default"), 1);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event ="
                            " 'pipeline_registered' AND detail->>'previous_hash' = '%s'", two), 1);
    free(ha);
    free(hb);
    free(two);
    free(dflt);
    free(two2);
    free(ha2);
    free(hc);
}

Test(pipelines, register_refuses_bad_files_and_names_and_changes_nothing)
{
    long before = h_sql_long("SELECT count(*) FROM tq.audit_events");
    char *err = NULL;
    const char *bad = h_write_file("bad.json", "{\"name\": \"x\", \"steps\": [{\"name\": \"a\","
                                               " \"kind\": \"no-such-kind\"}]}");
    cr_assert_eq(h_enqueue(NULL, &err, "pipeline", "register", bad, NULL), 2);
    cr_assert(strstr(err, "no-such-kind") && strstr(err, "nothing was registered"), "%s", err);
    free(err);
    const char *good = h_write_file("good.json", two_noops);
    cr_assert_eq(h_enqueue(NULL, &err, "pipeline", "register", good, "--name", "Bad Name", NULL),
                 2);
    cr_assert(strstr(err, "--name") && strstr(err, "a-z"), "%s", err);
    free(err);
    cr_assert_eq(h_enqueue(NULL, &err, "pipeline", "register", "/no/such/file.json", NULL), 2);
    free(err);
    cr_assert_eq(h_enqueue(NULL, &err, "pipeline", "frobnicate", NULL), 2);
    free(err);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.pipeline_names"), 1);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events"), before);
}
