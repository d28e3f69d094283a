#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "tq/pipeline.h"
#include "tq/util.h"

static enum tq_err parse(const char *text, struct tq_pipeline **p, char *err, size_t errlen)
{
    return tq_pipeline_parse(text, strlen(text), "p.json", p, err, errlen);
}

/* Expect a failure whose message contains want. */
static void expect_bad(const char *text, const char *want)
{
    struct tq_pipeline *p = NULL;
    char err[512] = "";
    cr_assert_neq(parse(text, &p, err, sizeof(err)), TQ_OK, "accepted: %s", text);
    cr_assert_null(p);
    cr_assert(strstr(err, want), "message \"%s\" lacks \"%s\"", err, want);
    cr_assert(strstr(err, "p.json"), "message names the file: %s", err);
}

Test(pipeline, parses_steps_and_orders_the_dag)
{
    const char *text = "{\"name\":\"t\",\"steps\":["
                       "{\"name\":\"c\",\"kind\":\"noop\",\"needs\":[\"a\",\"b\"]},"
                       "{\"name\":\"b\",\"kind\":\"noop\",\"needs\":[\"a\"],\"class\":\"security\","
                       " \"retry\":{\"max_attempts\":5,\"base_ms\":10,\"max_ms\":100}},"
                       "{\"name\":\"a\",\"kind\":\"pg_tenant\",\"timeout_ms\":1000,"
                       " \"params\":{\"x\":\"${tenant.id}-${env.HOME}\"}}]}";
    struct tq_pipeline *p;
    char err[512];
    cr_assert_eq(parse(text, &p, err, sizeof(err)), TQ_OK, "%s", err);
    cr_assert_eq(p->nsteps, 3);
    cr_assert_str_eq(p->steps[p->order[0]].name, "a");
    cr_assert_str_eq(p->steps[p->order[1]].name, "b");
    cr_assert_str_eq(p->steps[p->order[2]].name, "c");
    cr_assert_eq(p->steps[1].cls, TQ_CLASS_SECURITY);
    cr_assert_eq(p->steps[1].retry.max_attempts, 5);
    cr_assert_eq(p->steps[2].timeout_ms, 1000);
    cr_assert_eq(p->steps[0].retry.max_attempts, 3, "default retry policy");
    cr_assert_eq(strlen(p->hash), 64);
    tq_pipeline_free(p);
}

Test(pipeline, hash_is_of_the_content)
{
    struct tq_pipeline *a, *b, *c;
    char err[512];
    const char *t1 = "{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\"}]}";
    const char *t2 = "{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"sleep\"}]}";
    cr_assert_eq(parse(t1, &a, err, sizeof(err)), TQ_OK);
    cr_assert_eq(parse(t1, &b, err, sizeof(err)), TQ_OK);
    cr_assert_eq(parse(t2, &c, err, sizeof(err)), TQ_OK);
    cr_assert_str_eq(a->hash, b->hash);
    cr_assert_str_neq(a->hash, c->hash);
    tq_pipeline_free(a);
    tq_pipeline_free(b);
    tq_pipeline_free(c);
}

Test(pipeline, every_rule_has_a_failing_case)
{
    expect_bad("{\"name\":", "invalid JSON");
    expect_bad("[]", "must be a JSON object");
    expect_bad("{\"steps\":[{\"name\":\"a\",\"kind\":\"noop\"}]}", "\"name\" is required");
    expect_bad("{\"name\":\"t\",\"steps\":[]}", "non-empty array");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"kind\":\"noop\"}]}", "step \"#1\"");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"A B\",\"kind\":\"noop\"}]}", "a-z");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\"},"
               "{\"name\":\"a\",\"kind\":\"noop\"}]}", "used by another step");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"teleport\"}]}",
               "unknown kind \"teleport\"");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\",\"colour\":1}]}",
               "unknown field \"colour\"");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\",\"needs\":[\"z\"]}]}",
               "needs \"z\", which is not a step");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\",\"needs\":[\"a\"]}]}",
               "needs itself");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\",\"needs\":[\"b\"]},"
               "{\"name\":\"b\",\"kind\":\"noop\",\"needs\":[\"c\"]},"
               "{\"name\":\"c\",\"kind\":\"noop\",\"needs\":[\"a\"]}]}",
               "cycle");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\","
               "\"params\":{\"x\":\"${tenant.secret}\"}}]}",
               "unknown template variable \"${tenant.secret}\"");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\","
               "\"params\":{\"x\":[\"${tenant.id\"]}}]}",
               "unterminated");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\","
               "\"retry\":{\"max_attempts\":0}}]}",
               "max_attempts");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\","
               "\"retry\":{\"base_ms\":100,\"max_ms\":10}}]}",
               "max_ms");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\",\"timeout_ms\":-1}]}",
               "timeout_ms");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\",\"class\":\"vip\"}]}",
               "\"class\" must be one of");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\",\"params\":[]}]}",
               "\"params\" must be an object");
    expect_bad("{\"name\":\"t\",\"name\":\"u\",\"steps\":[]}", "duplicate");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\",\"enabled\":true}]}",
               "\"enabled\" must be a template string");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\","
               "\"enabled\":\"${nope}\"}]}",
               "enabled: unknown template variable");
}

static const char *lookup(const char *var, void *arg)
{
    (void)arg;
    return strcmp(var, "tenant.id") == 0 ? "acme" : NULL;
}

Test(pipeline, template_render)
{
    char err[256];
    char *s = tq_template_render("schema_${tenant.id}_x", lookup, NULL, err, sizeof(err));
    cr_assert_str_eq(s, "schema_acme_x");
    free(s);
    cr_assert_null(tq_template_render("${tenant.tier}", lookup, NULL, err, sizeof(err)));
    cr_assert(strstr(err, "tenant.tier"));
}

Test(pipeline, shipped_pipeline_loads)
{
    struct tq_pipeline *p;
    char err[512];
    cr_assert_eq(tq_pipeline_load(TQ_SOURCE_DIR "/deploy/pipelines/tenant-provision.json", &p,
                                  err, sizeof(err)),
                 TQ_OK, "%s", err);
    tq_pipeline_free(p);
}

Test(pipeline, terraform_pipeline_loads)
{
    struct tq_pipeline *p;
    char err[512];
    cr_assert_eq(tq_pipeline_load(TQ_SOURCE_DIR "/deploy/pipelines/tenant-provision-terraform.json",
                                  &p, err, sizeof(err)),
                 TQ_OK, "%s", err);
    tq_pipeline_free(p);
}

Test(pipeline, missing_file_is_named)
{
    struct tq_pipeline *p;
    char err[512];
    cr_assert_neq(tq_pipeline_load("/nonexistent/p.json", &p, err, sizeof(err)), TQ_OK);
    cr_assert(strstr(err, "/nonexistent/p.json"));
}

Test(pipeline, limit_is_parsed_and_every_broken_rule_is_named)
{
    struct tq_pipeline *p = NULL;
    char err[512] = "";
    cr_assert_eq(parse("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\","
                       "\"limit\":{\"key\":\"terraform:${tenant.region}\",\"max\":2}},"
                       "{\"name\":\"b\",\"kind\":\"noop\"}]}",
                       &p, err, sizeof(err)),
                 TQ_OK, "%s", err);
    cr_assert_str_eq(p->steps[0].limit_key, "terraform:${tenant.region}");
    cr_assert_eq(p->steps[0].limit_max, 2);
    cr_assert_null(p->steps[1].limit_key, "no limit unless declared");
    tq_pipeline_free(p);

    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\",\"limit\":3}]}",
               "step \"a\": \"limit\" must be an object");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\",\"limit\":{}}]}",
               "limit: \"key\" is required");
    /* every rule broken at once is named at once */
    const char *all = "{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\","
                      "\"limit\":{\"key\":\"\",\"max\":0,\"per\":\"host\"}}]}";
    expect_bad(all, "unknown field \"per\"");
    expect_bad(all, "\"key\" is required");
    expect_bad(all, "\"max\" is required: an integer from 1 to 10000");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\","
               "\"limit\":{\"key\":\"tf:${tenant.nope}\",\"max\":2}}]}",
               "limit: \"key\": unknown template variable");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\","
               "\"limit\":{\"key\":\"tf\",\"max\":10001}}]}",
               "\"max\" is required: an integer from 1 to 10000");
    expect_bad("{\"name\":\"t\",\"steps\":[{\"name\":\"a\",\"kind\":\"noop\","
               "\"limit\":{\"key\":\"tf\",\"max\":\"2\"}}]}",
               "\"max\"");
}
