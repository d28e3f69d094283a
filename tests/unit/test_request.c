#include <criterion/criterion.h>
#include <string.h>

#include "tq/request.h"

static const char *const regions[] = {"us-east-1", "us-west-2", "eu-west-1"};
static const struct tq_rules rules = {regions, 3, 1000000};

static void fill(struct tq_request *r, const char *id, const char *tier, const char *region,
                 const char *budget)
{
    struct tq_field_error fe;
    memset(r, 0, sizeof(*r));
    cr_assert_eq(tq_request_set(r, "tenant_id", id, strlen(id), &fe), TQ_OK);
    cr_assert_eq(tq_request_set(r, "name", "Acme Corp", 9, &fe), TQ_OK);
    cr_assert_eq(tq_request_set(r, "tier", tier, strlen(tier), &fe), TQ_OK);
    cr_assert_eq(tq_request_set(r, "region", region, strlen(region), &fe), TQ_OK);
    cr_assert_eq(tq_request_set(r, "owner", "ops@acme.example", 16, &fe), TQ_OK);
    if (budget)
        cr_assert_eq(tq_request_set(r, "budget", budget, strlen(budget), &fe), TQ_OK);
}

/* Validate and return the field named by the error ("" when valid). */
static const char *broken_field(struct tq_request *r, struct tq_field_error *fe)
{
    memset(fe, 0, sizeof(*fe));
    if (tq_request_validate(r, &rules, fe) == TQ_OK)
        return "";
    return fe->field;
}

Test(request, valid_request_passes)
{
    struct tq_request r;
    struct tq_field_error fe;
    fill(&r, "acme-corp", "Gold", "us-east-1", "800000");
    cr_assert_str_eq(broken_field(&r, &fe), "", "%s: %s", fe.field, fe.rule);
    cr_assert_not(tq_request_needs_approval(&r, &rules));
    tq_request_cleanup(&r);
}

Test(request, tenant_id_rules)
{
    const char *bad[] = {"ab", "Acme", "1acme", "acme_corp", "acme corp", "acme;drop",
                         "a'b-c", "acme\xd0\xb0", /* Cyrillic look-alike */
                         "a23456789012345678901234567890123456789012"};
    const char *good[] = {"abc", "a-b", "a2345678901234567890123456789012345678x"};
    struct tq_field_error fe;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct tq_request r;
        fill(&r, bad[i], "Gold", "us-east-1", "800000");
        cr_assert_str_eq(broken_field(&r, &fe), "tenant_id", "accepted \"%s\"", bad[i]);
        cr_assert(strstr(fe.rule, "^[a-z][a-z0-9-]{2,39}$"));
        tq_request_cleanup(&r);
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct tq_request r;
        fill(&r, good[i], "Gold", "us-east-1", "800000");
        cr_assert_str_eq(broken_field(&r, &fe), "", "rejected \"%s\": %s", good[i], fe.rule);
        tq_request_cleanup(&r);
    }
}

Test(request, budget_bands_per_tier)
{
    struct {
        const char *tier, *budget;
        bool ok;
    } cases[] = {
        {"Gold", "500000", true},    {"Gold", "1500000", true},  {"Gold", "499999", false},
        {"Gold", "1500001", false},  {"Silver", "200000", true}, {"Silver", "500000", true},
        {"Silver", "199999", false}, {"Silver", "500001", false}, {"Bronze", "1", true},
        {"Bronze", "199999", true},  {"Bronze", "200000", false}, {"Bronze", "0", false},
    };
    struct tq_field_error fe;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tq_request r;
        fill(&r, "acme-corp", cases[i].tier, "us-east-1", cases[i].budget);
        cr_assert_str_eq(broken_field(&r, &fe), cases[i].ok ? "" : "budget", "%s %s",
                         cases[i].tier, cases[i].budget);
        tq_request_cleanup(&r);
    }
}

Test(request, budget_text_must_be_digits)
{
    const char *bad[] = {"", "-5", "+5", "8e5", "800,000", "800000.0", " 800000",
                         "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct tq_request r;
        struct tq_field_error fe;
        memset(&r, 0, sizeof(r));
        cr_assert_eq(tq_request_set(&r, "budget", bad[i], strlen(bad[i]), &fe), TQ_EINVALID,
                     "accepted \"%s\"", bad[i]);
        cr_assert_str_eq(fe.field, "budget");
        tq_request_cleanup(&r);
    }
}

Test(request, tier_and_region_allow_lists)
{
    struct tq_request r;
    struct tq_field_error fe;
    fill(&r, "acme-corp", "gold", "us-east-1", "800000");
    cr_assert_str_eq(broken_field(&r, &fe), "tier");
    tq_request_cleanup(&r);
    fill(&r, "acme-corp", "Gold", "ap-south-1", "800000");
    cr_assert_str_eq(broken_field(&r, &fe), "region");
    cr_assert(strstr(fe.rule, "eu-west-1"), "the rule lists the allowed regions");
    tq_request_cleanup(&r);
}

Test(request, approval_threshold)
{
    struct tq_request r;
    fill(&r, "acme-corp", "Gold", "us-east-1", "1000000");
    cr_assert_not(tq_request_needs_approval(&r, &rules));
    tq_request_cleanup(&r);
    fill(&r, "acme-corp", "Gold", "us-east-1", "1000001");
    cr_assert(tq_request_needs_approval(&r, &rules));
    tq_request_cleanup(&r);
}

Test(request, owner_and_text_fields)
{
    const char *bad_owner[] = {"ops", "@acme.example", "ops@", "ops@acme", "o ps@acme.example",
                               "ops@@acme.example", "ops@acme..example"};
    struct tq_field_error fe;
    for (size_t i = 0; i < sizeof(bad_owner) / sizeof(bad_owner[0]); i++) {
        struct tq_request r;
        fill(&r, "acme-corp", "Gold", "us-east-1", "800000");
        cr_assert_eq(tq_request_set(&r, "owner", bad_owner[i], strlen(bad_owner[i]), &fe), TQ_OK);
        cr_assert_str_eq(broken_field(&r, &fe), "owner", "accepted \"%s\"", bad_owner[i]);
        tq_request_cleanup(&r);
    }
    struct tq_request r;
    fill(&r, "acme-corp", "Gold", "us-east-1", "800000");
    cr_assert_eq(tq_request_set(&r, "name", "bad\xff", 4, &fe), TQ_OK);
    cr_assert_str_eq(broken_field(&r, &fe), "name");
    cr_assert(strstr(fe.rule, "UTF-8"));
    cr_assert_eq(tq_request_set(&r, "name", "a\nb", 3, &fe), TQ_OK);
    cr_assert_str_eq(broken_field(&r, &fe), "name");
    cr_assert_eq(tq_request_set(&r, "name", "a\0b", 3, &fe), TQ_EINVALID, "NUL bytes refused");
    char longname[200];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    cr_assert_eq(tq_request_set(&r, "name", longname, strlen(longname), &fe), TQ_OK);
    cr_assert_str_eq(broken_field(&r, &fe), "name");
    cr_assert_eq(tq_request_set(&r, "name", "Zürich AG", strlen("Zürich AG"), &fe), TQ_OK);
    cr_assert_str_eq(broken_field(&r, &fe), "", "unicode names are fine: %s", fe.rule);
    tq_request_cleanup(&r);
}

Test(request, unknown_field_is_named)
{
    struct tq_request r;
    struct tq_field_error fe;
    memset(&r, 0, sizeof(r));
    cr_assert_eq(tq_request_set(&r, "colour", "red", 3, &fe), TQ_EINVALID);
    cr_assert_str_eq(fe.field, "colour");
    tq_request_cleanup(&r);
}

Test(request, missing_fields_are_required)
{
    struct tq_request r;
    struct tq_field_error fe;
    fill(&r, "acme-corp", "Gold", "us-east-1", NULL);
    cr_assert_str_eq(broken_field(&r, &fe), "budget");
    cr_assert_str_eq(fe.rule, "is required");
    tq_request_cleanup(&r);
}

Test(request, from_json)
{
    json_error_t je;
    json_t *o = json_loads("{\"tenant_id\":\"acme-corp\",\"name\":\"Acme\",\"tier\":\"Silver\","
                           "\"region\":\"eu-west-1\",\"budget\":300000,\"owner\":\"a@b.io\"}",
                           0, &je);
    struct tq_request r;
    struct tq_field_error fe;
    memset(&r, 0, sizeof(r));
    cr_assert_eq(tq_request_from_json(o, &r, &fe), TQ_OK);
    cr_assert_str_eq(broken_field(&r, &fe), "");
    cr_assert_eq(r.budget_inr, 300000);
    tq_request_cleanup(&r);
    json_decref(o);
    o = json_loads("{\"budget\":\"300000\"}", 0, &je);
    memset(&r, 0, sizeof(r));
    cr_assert_eq(tq_request_from_json(o, &r, &fe), TQ_EINVALID);
    cr_assert_str_eq(fe.field, "budget");
    tq_request_cleanup(&r);
    json_decref(o);
}

Test(request, tenant_ident_maps_dashes)
{
    char out[64];
    tq_tenant_ident("acme-corp-eu", out, sizeof(out));
    cr_assert_str_eq(out, "acme_corp_eu");
}

Test(request, tier_facts)
{
    const struct tq_tier_info *g = tq_tier_lookup("Gold"), *b = tq_tier_lookup("Bronze");
    cr_assert_eq(g->documents_per_month, 10000);
    cr_assert_eq(g->queries_per_minute, 100);
    cr_assert(g->custom_models);
    cr_assert_str_eq(g->model, "gpt-4");
    cr_assert_eq(b->p95_sla_ms, 2000);
    cr_assert_eq(b->vector_replicas, 1);
    cr_assert_null(tq_tier_lookup("Platinum"));
}
