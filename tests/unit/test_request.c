#include <criterion/criterion.h>
#include <string.h>

#include "tq/request.h"

static const char *const regions[] = {"us-east-1", "us-west-2", "eu-west-1"};
static const struct tq_rules rules = {.regions = regions, .nregions = 3,
                                      .approval_threshold_inr = 1000000};

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

Test(request, a_region_without_a_map_entry_says_so)
{
    static const struct tq_rules mapped = {.regions = regions, .nregions = 3,
                                           .approval_threshold_inr = 1000000,
                                           .regions_mapped = true};
    struct tq_request r;
    struct tq_field_error fe[8];
    fill(&r, "acme-corp", "Gold", "ap-south-1", "800000");
    size_t n = tq_request_check(&r, &mapped, fe, 8);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(fe[0].field, "region");
    cr_assert(strstr(fe[0].rule, "has no entry in the region map (TQ_REGIONS_FILE)"), "%s",
              fe[0].rule);
    cr_assert(strstr(fe[0].rule, "eu-west-1"), "lists the mapped regions: %s", fe[0].rule);
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

/* Issue 12.8: every problem of a request at once, in field order. */
Test(request, check_reports_every_problem)
{
    struct tq_request r;
    struct tq_field_error fe[16];
    memset(&r, 0, sizeof(r));
    const char *vals[][2] = {{"tenant_id", "Bad_Id"}, {"name", "a\x01"},
                             {"tier", "Platinum"},  {"region", "ap-south-1"},
                             {"budget", "abc"},     {"owner", "notanemail"}};
    for (size_t i = 0; i < 6; i++)
        tq_request_set(&r, vals[i][0], vals[i][1], strlen(vals[i][1]), &fe[0]);
    size_t n = tq_request_check(&r, &rules, fe, 16);
    cr_assert_eq(n, 6, "six bad fields, six problems (got %zu)", n);
    const char *fields[] = {"tenant_id", "name", "tier", "region", "budget", "owner"};
    for (size_t i = 0; i < 6; i++)
        cr_assert_str_eq(fe[i].field, fields[i]);
    cr_assert(fe[4].malformed, "a budget that is not a number is of the wrong form");
    cr_assert_not(fe[3].malformed, "a region outside the list breaks a rule");
    tq_request_cleanup(&r);

    /* missing fields are reported as such, and as of the wrong form */
    memset(&r, 0, sizeof(r));
    tq_request_set(&r, "region", "ap-south-1", 10, &fe[0]);
    tq_request_set(&r, "budget", "100", 3, &fe[0]);
    tq_request_set(&r, "owner", "notanemail", 10, &fe[0]);
    n = tq_request_check(&r, &rules, fe, 16);
    cr_assert_eq(n, 5, "tenant_id, name, tier missing; region and owner broken (got %zu)", n);
    cr_assert(fe[0].malformed && fe[1].malformed && fe[2].malformed);
    cr_assert_str_eq(fe[3].field, "region");
    cr_assert_str_eq(fe[4].field, "owner");
    /* a count beyond max is still counted */
    cr_assert_eq(tq_request_check(&r, &rules, fe, 2), 5);
    tq_request_cleanup(&r);
}

/* Issue 11.9: what the input contract accepted and should not, and the reverse. */
Test(request, names_refuse_invisible_and_blank_text)
{
    const char *bad[] = {"Acme\xc2\x85" "Corp",        /* U+0085, a C1 control */
                         "Acme\xe2\x80\xae" "proC",    /* U+202E right-to-left override */
                         "Ac\xe2\x80\x8b" "me",        /* U+200B zero-width space */
                         "Ac\xef\xbb\xbf" "me",        /* U+FEFF */
                         "Acme\xe2\x81\xa6" "x",       /* U+2066 bidi isolate */
                         "   ",  "\xc2\xa0\xe3\x80\x80"};  /* blanks, NBSP + ideographic */
    struct tq_field_error fe;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct tq_request r;
        fill(&r, "acme-corp", "Gold", "us-east-1", "800000");
        cr_assert_eq(tq_request_set(&r, "name", bad[i], strlen(bad[i]), &fe), TQ_OK);
        cr_assert_str_eq(broken_field(&r, &fe), "name", "accepted name #%zu", i);
        tq_request_cleanup(&r);
    }
    cr_assert_null(tq_text_problem("Zürich AG", strlen("Zürich AG"), false));
    cr_assert_null(tq_text_problem("日本 株式会社", strlen("日本 株式会社"), false));
    cr_assert_not_null(tq_text_problem("a\x1b[2J", 5, false));
    cr_assert_null(tq_text_problem("line\nnext", 9, true), "justification may span lines");
}

Test(request, owner_addresses_follow_the_rfcs)
{
    const char *bad[] = {"a@-b.example", "a@b-.example", "a@b.example-", ".a@b.example",
                         "a.@b.example", "a..b@b.example", "a@b.123", "a b@b.example",
                         "a@b_c.example"};
    const char *good[] = {"o'brien@b.example", "first.last+tag@b.example", "x@a-b.example",
                          "ops@acme.example", "a{b}@b.co", "a@sub.b2.io"};
    struct tq_field_error fe;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct tq_request r;
        fill(&r, "acme-corp", "Gold", "us-east-1", "800000");
        tq_request_set(&r, "owner", bad[i], strlen(bad[i]), &fe);
        cr_assert_str_eq(broken_field(&r, &fe), "owner", "accepted \"%s\"", bad[i]);
        tq_request_cleanup(&r);
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct tq_request r;
        fill(&r, "acme-corp", "Gold", "us-east-1", "800000");
        tq_request_set(&r, "owner", good[i], strlen(good[i]), &fe);
        cr_assert_str_eq(broken_field(&r, &fe), "", "rejected \"%s\": %s", good[i], fe.rule);
        tq_request_cleanup(&r);
    }
}

Test(request, tenant_ids_without_double_or_trailing_dash)
{
    const char *bad[] = {"a--b", "abc-", "acme--corp", "ab-"};
    struct tq_field_error fe;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct tq_request r;
        fill(&r, bad[i], "Gold", "us-east-1", "800000");
        cr_assert_str_eq(broken_field(&r, &fe), "tenant_id", "accepted \"%s\"", bad[i]);
        tq_request_cleanup(&r);
    }
    cr_assert(tq_tenant_id_valid("a-b-c"));
}

Test(request, load_json_reports_every_key)
{
    json_error_t je;
    json_t *o = json_loads("{\"tenant_id\":5,\"colour\":\"red\",\"budget\":\"1\",\"name\":\"x\"}",
                           0, &je);
    struct tq_request r;
    struct tq_field_error fe[8];
    memset(&r, 0, sizeof(r));
    cr_assert_eq(tq_request_load_json(o, &r, fe, 8), 3);
    cr_assert_str_eq(r.name, "x", "the good keys are still taken");
    tq_request_cleanup(&r);
    json_decref(o);
}

Test(request, a_tier_of_the_policy_with_its_own_threshold_uses_it)
{
    struct tq_rules tiered = {.regions = regions, .nregions = 3,
                              .approval_threshold_inr = 1000000};
    tiered.tier_threshold_inr[1] = 300000;   /* Silver */
    tiered.tier_threshold_set = 1u << 1;
    struct tq_request r;
    fill(&r, "t-silver", "Silver", "us-east-1", "400000");
    cr_assert(!tq_request_needs_approval(&r, &rules), "the fleet's 10 lakh lets 4 lakh through");
    cr_assert(tq_request_needs_approval(&r, &tiered), "Silver's own 3 lakh holds 4 lakh");
    tq_request_cleanup(&r);
    fill(&r, "t-gold", "Gold", "us-east-1", "900000");
    cr_assert(!tq_request_needs_approval(&r, &tiered), "Gold has none of its own: the fleet's");
    tq_request_cleanup(&r);
    cr_assert_eq(tq_tier_index("Bronze"), 2);
    cr_assert_eq(tq_tier_index("bronze"), -1);
}
