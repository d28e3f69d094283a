/*
 * Retry policy and the backoff schedule: exponential from base_ms, capped at
 * max_ms, with full jitter. The jitter draw is passed in so tests are exact.
 */
#ifndef TQ_RETRY_H
#define TQ_RETRY_H

#include <stdint.h>

struct tq_retry_policy {
    uint32_t max_attempts;   /* >= 1; 1 means no retry */
    uint32_t base_ms;        /* delay before the 2nd attempt, before jitter */
    uint32_t max_ms;         /* cap of any one delay */
};

#define TQ_RETRY_DEFAULT ((struct tq_retry_policy){3, 1000, 30000})

/*
 * Delay before attempt `failed_attempts + 1`, given jitter u in [0, 1):
 * d = min(max_ms, base_ms * 2^(failed_attempts - 1)), result = d - floor(d*u),
 * so u = 0 gives d and the result always lies in [1, d] (full jitter).
 */
uint32_t tq_retry_delay_ms(const struct tq_retry_policy *p,
                           uint32_t failed_attempts, double u);

#endif
