/*
 * Fleet-wide limits: at most `max` holders of a key at once
 * across every worker. The permits of a key are one Redis sorted set,
 * "<prefix>:limit:<key>", of holder -> expiry (ms, Redis's own clock), so
 * a dead worker's permits lapse one lease after its last renewal. Every
 * call is one round trip (Lua where it reads and writes) on the given
 * blocking connection; none may run on the worker's loop thread.
 */
#ifndef TQ_LIMITS_H
#define TQ_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tq/err.h"
#include "tq/queue.h"

/* Redis key of a limit's permits; caller frees. */
char *tq_limit_redis_key(const struct tq_config *c, const char *key);

/*
 * Take a permit of key for holder, valid lease_ms, if fewer than max are
 * held (expired ones dropped first); a holder that has one already renews
 * it. *got says whether holder holds one now; *held is how many are held
 * after the call (including ours when got).
 */
enum tq_err tq_limit_acquire(struct tq_queue *q, const char *key, const char *holder,
                             uint32_t max, uint32_t lease_ms, bool *got, long long *held);
/* Give the permit back (a missing one is fine). */
enum tq_err tq_limit_release(struct tq_queue *q, const char *key, const char *holder);
/*
 * Extend each (keys[i], holders[i]) still held to now + lease_ms, one
 * round trip; *lost counts those that had lapsed already (not re-taken).
 */
enum tq_err tq_limit_renew(struct tq_queue *q, const char *const *keys,
                           const char *const *holders, size_t n, uint32_t lease_ms, int *lost);
/* Permits of key held now (expired ones not counted). */
enum tq_err tq_limit_count(struct tq_queue *q, const char *key, long long *held);

#endif
