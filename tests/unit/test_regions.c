#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "tq/regions.h"

static const char good[] =
    "{\"eu-west-1\": {\"s3_region\": \"eu-west-1\", \"s3_endpoint\": \"https://s3.eu.example\","
    "  \"vector_url\": \"https://vec.eu.example\", \"dashboard_url\": \"https://dash.eu.example\","
    "  \"pg_url\": null},"
    " \"us-east-1\": {\"s3_region\": \"us-east-1\", \"s3_endpoint\": null}}";

Test(regions, parses_entries_and_fields)
{
    struct tq_regions *m = NULL;
    char err[300] = "";
    cr_assert_eq(tq_regions_parse(good, "map", &m, err, sizeof(err)), TQ_OK, "%s", err);
    cr_assert_eq(m->n, 2);
    const struct tq_region *eu = tq_regions_find(m, "eu-west-1");
    cr_assert_not_null(eu);
    cr_assert_str_eq(tq_region_field(eu, "s3_region"), "eu-west-1");
    cr_assert_str_eq(tq_region_field(eu, "s3_endpoint"), "https://s3.eu.example");
    cr_assert_str_eq(tq_region_field(eu, "vector_url"), "https://vec.eu.example");
    cr_assert_str_eq(tq_region_field(eu, "dashboard_url"), "https://dash.eu.example");
    cr_assert_null(tq_region_field(eu, "pg_url"), "not a template field");
    const struct tq_region *us = tq_regions_find(m, "us-east-1");
    cr_assert_str_eq(tq_region_field(us, "s3_endpoint"), "", "null: no storage there");
    cr_assert_str_eq(tq_region_field(us, "vector_url"), "", "absent: none");
    cr_assert_null(tq_regions_find(m, "us-west-2"), "no entry, no fallback");
    cr_assert_null(tq_regions_find(NULL, "us-east-1"));
    tq_regions_free(m);
}

static void refused(const char *text, const char *want1, const char *want2)
{
    struct tq_regions *m = (struct tq_regions *)1;
    char err[400] = "";
    cr_assert_eq(tq_regions_parse(text, "map.json", &m, err, sizeof(err)), TQ_EINVALID,
                 "accepted: %s", text);
    cr_assert_null(m);
    cr_assert(strstr(err, "map.json"), "names the source: %s", err);
    cr_assert(strstr(err, want1), "\"%s\" in: %s", want1, err);
    if (want2)
        cr_assert(strstr(err, want2), "\"%s\" in: %s", want2, err);
}

Test(regions, errors_name_the_region_and_the_field)
{
    refused("[]", "non-empty JSON object", NULL);
    refused("{}", "non-empty JSON object", NULL);
    refused("{\"eu-west-1\": ", "not valid JSON", NULL);
    refused("{\"eu-west-1\": 3}", "region \"eu-west-1\"", "JSON object");
    refused("{\"eu-west-1\": {\"s3_endpoint\": null}}", "region \"eu-west-1\"",
            "field \"s3_region\" is required");
    refused("{\"eu-west-1\": {\"s3_region\": \"eu-west-1\"}}", "region \"eu-west-1\"",
            "field \"s3_endpoint\" is required");
    refused("{\"eu-west-1\": {\"s3_region\": \"EU West\", \"s3_endpoint\": null}}",
            "field \"s3_region\"", "region name");
    refused("{\"eu-west-1\": {\"s3_region\": \"eu-west-1\", \"s3_endpoint\": \"ftp://x\"}}",
            "field \"s3_endpoint\"", "http(s) URL");
    refused("{\"eu-west-1\": {\"s3_region\": \"eu-west-1\", \"s3_endpoint\": null,"
            " \"vector_url\": 7}}",
            "field \"vector_url\"", "string");
    refused("{\"eu-west-1\": {\"s3_region\": \"eu-west-1\", \"s3_endpoint\": null,"
            " \"vectr_url\": \"https://v.example\"}}",
            "unknown field \"vectr_url\"", "region \"eu-west-1\"");
    refused("{\"Bad Region\": {\"s3_region\": \"eu-west-1\", \"s3_endpoint\": null}}",
            "region \"Bad Region\"", "region name");
}

Test(regions, a_url_with_credentials_is_refused_and_never_echoed)
{
    struct tq_regions *m = NULL;
    char err[400] = "";
    cr_assert_eq(tq_regions_parse("{\"eu-west-1\": {\"s3_region\": \"eu-west-1\","
                                  " \"s3_endpoint\": \"https://ak:s3cr3t@s3.example\"}}",
                                  "map.json", &m, err, sizeof(err)),
                 TQ_EINVALID);
    cr_assert(strstr(err, "without credentials"), "%s", err);
    cr_assert_null(strstr(err, "s3cr3t"), "the secret leaked: %s", err);
}

Test(regions, load_names_an_unreadable_file)
{
    struct tq_regions *m = NULL;
    char err[400] = "";
    cr_assert_eq(tq_regions_load("/nonexistent/regions.json", &m, err, sizeof(err)), TQ_EINVALID);
    cr_assert(strstr(err, "TQ_REGIONS_FILE /nonexistent/regions.json"), "%s", err);
}
