/* tq/redact.h: known secrets are masked in text and JSON. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "tq/redact.h"

static void fresh(void)
{
    tq_redact_reset();
}

TestSuite(redact, .init = fresh, .fini = fresh);

Test(redact, environment_secrets_and_url_passwords)
{
    setenv("TQ_S3_SECRET_KEY", "s3-secret-value", 1);
    setenv("TQ_VECTOR_TOKEN", "vector-token-value", 1);
    setenv("TQ_SOME_KEY", "plain-key-value", 1);
    setenv("TQ_REDIS_URL", "redis://default:redis-pw-123@127.0.0.1:6379/0", 1);
    setenv("TQ_DATABASE_URL", "host=db user=tq password='pg pw 456' dbname=x", 1);
    setenv("TQ_QUEUE", "provision-queue", 1);
    char text[] = "a s3-secret-value b vector-token-value c plain-key-value d redis-pw-123"
                  " e pg pw 456 f provision-queue";
    cr_assert(tq_redact(text));
    cr_assert_str_eq(text, "a *************** b ****************** c *************** d"
                           " ************ e ********* f provision-queue");
}

Test(redact, added_values_until_removed_and_short_values_ignored)
{
    char a[] = "pw=generated-password-1 x=12345";
    tq_redact_add("generated-password-1");
    tq_redact_add("12345");   /* shorter than TQ_REDACT_MIN: ordinary text */
    cr_assert(tq_redact(a));
    cr_assert_str_eq(a, "pw=******************** x=12345");
    tq_redact_remove("generated-password-1");
    char b[] = "pw=generated-password-1";
    cr_assert_not(tq_redact(b));
    cr_assert_str_eq(b, "pw=generated-password-1");
}

Test(redact, json_strings_at_any_depth_even_with_nul_bytes)
{
    tq_redact_add("hidden-value");
    json_t *o = json_pack("{s:s, s:[s, {s:s}], s:i}", "a", "x hidden-value y", "b", "hidden-value",
                          "c", "no", "n", 7);
    json_object_set_new(o, "nul", json_stringn("z\0hidden-value", 14));
    tq_redact_json(o);
    cr_assert_str_eq(json_string_value(json_object_get(o, "a")), "x ************ y");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(o, "b"), 0)), "************");
    json_t *nul = json_object_get(o, "nul");
    cr_assert_eq(json_string_length(nul), 14);
    cr_assert_eq(memcmp(json_string_value(nul), "z\0************", 14), 0);
    json_decref(o);
}
