/* Exponential backoff with full jitter (see tq/retry.h for the formula). */
#include "tq/retry.h"

#include <math.h>

uint32_t tq_retry_delay_ms(const struct tq_retry_policy *p,
                           uint32_t failed_attempts, double u)
{
    if (failed_attempts == 0)
        failed_attempts = 1;
    uint64_t d = p->base_ms ? p->base_ms : 1;
    for (uint32_t i = 1; i < failed_attempts && d < p->max_ms; i++)
        d *= 2;
    if (p->max_ms && d > p->max_ms)
        d = p->max_ms;
    if (u < 0.0 || u >= 1.0 || u != u)
        u = 0.0;
    uint64_t off = (uint64_t)floor((double)d * u);
    uint64_t r = d - off;
    return (uint32_t)(r ? r : 1);
}
