#include <criterion/criterion.h>

#include "tq/retry.h"

static const struct tq_retry_policy policy = {.max_attempts = 5, .base_ms = 100, .max_ms = 5000};

Test(retry, backoff_doubles_then_caps)
{
    cr_assert_eq(tq_retry_delay_ms(&policy, 1, 0.0), 100); /* jitter passed in: deterministic */
    cr_assert_eq(tq_retry_delay_ms(&policy, 2, 0.0), 200);
    cr_assert_eq(tq_retry_delay_ms(&policy, 3, 0.0), 400);
    cr_assert_eq(tq_retry_delay_ms(&policy, 7, 0.0), 5000, "cap must hold");
    cr_assert_leq(tq_retry_delay_ms(&policy, 40, 0.99), 5000);
}

Test(retry, full_jitter_spans_one_to_the_cap)
{
    cr_assert_eq(tq_retry_delay_ms(&policy, 3, 0.5), 200);
    cr_assert_eq(tq_retry_delay_ms(&policy, 3, 0.999999), 1, "never zero");
    cr_assert_eq(tq_retry_delay_ms(&policy, 1000000, 0.0), 5000, "huge attempt counts do not overflow");
}

Test(retry, bad_jitter_is_treated_as_zero)
{
    cr_assert_eq(tq_retry_delay_ms(&policy, 2, -1.0), 200);
    cr_assert_eq(tq_retry_delay_ms(&policy, 2, 1.0), 200);
}

Test(retry, attempt_zero_counts_as_first)
{
    cr_assert_eq(tq_retry_delay_ms(&policy, 0, 0.0), 100);
}
