/* Strict job ids, the reversible display of queue values, the log rate limiter. */
#include <criterion/criterion.h>
#include <string.h>

#include "tq/jobid.h"

static bool parses(const char *s, int64_t *id)
{
    return tq_job_id_parse(s, strlen(s), id, NULL);
}

Test(jobid, accepts_plain_ids_up_to_int64_max)
{
    int64_t id;
    cr_assert(parses("1", &id) && id == 1);
    cr_assert(parses("42", &id) && id == 42);
    cr_assert(parses("9223372036854775807", &id) && id == INT64_MAX);
}

Test(jobid, refuses_everything_else_with_a_reason)
{
    const char *bad[] = {"", "0", "007", " 8", "8 ", "+9", "-1", "1a", "0x10", "1e3",
                         "9223372036854775808", "99999999999999999999", "12345678901234567890123"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t id = 99;
        const char *why = NULL;
        cr_assert_not(tq_job_id_parse(bad[i], strlen(bad[i]), &id, &why), "\"%s\" accepted", bad[i]);
        cr_assert_eq(id, 0);
        cr_assert_not_null(why, "\"%s\" has a reason", bad[i]);
    }
    int64_t id;
    cr_assert_not(tq_job_id_parse("12\0003", 4, &id, NULL), "a NUL byte inside");
    const char *why = NULL;
    tq_job_id_parse("9223372036854775808", 19, &id, &why);
    cr_assert_str_eq(why, "out of range");
}

Test(jobid, escape_is_printable_and_reversible)
{
    const char raw[] = "a\\b\n\x1b[2J\xc2\x9b\xff Zoë\x00z";
    size_t len = sizeof(raw) - 1;
    char shown[256], back[256];
    tq_value_escape(raw, len, len, shown, sizeof(shown));
    cr_assert_str_eq(shown, "a\\x5cb\\x0a\\x1b[2J\\xc2\\x9b\\xff Zoë\\x00z");
    cr_assert_eq(tq_value_unescape(shown, back, sizeof(back)), len);
    cr_assert_eq(memcmp(back, raw, len), 0);
    tq_value_escape(raw, len, 3, shown, sizeof(shown));
    cr_assert_str_eq(shown, "a\\x5cb", "at most max_in bytes are shown");
    tq_value_escape(raw, len, len, shown, 5);
    cr_assert_str_eq(shown, "a", "cut, never overrun, never half an escape");
}

Test(jobid, ratelimit_allows_a_burst_per_period_and_counts_the_rest)
{
    struct tq_ratelimit rl = {.period_ms = 1000, .burst = 2};
    uint64_t dropped;
    cr_assert(tq_ratelimit_ok(&rl, 5000, &dropped) && dropped == 0);
    cr_assert(tq_ratelimit_ok(&rl, 5001, &dropped) && dropped == 0);
    cr_assert_not(tq_ratelimit_ok(&rl, 5002, &dropped));
    cr_assert_not(tq_ratelimit_ok(&rl, 5999, &dropped));
    cr_assert(tq_ratelimit_ok(&rl, 6000, &dropped), "a new period");
    cr_assert_eq(dropped, 2, "the first line of a period says how many were dropped");
}
