/*
 * The Redis side of the queue protocol (docs/design.md §3): ready list, per-worker
 * processing list, heartbeats. Redis only dispatches ids; PostgreSQL decides
 * who runs a job (the claim), so every call here is safe to repeat.
 *
 * A struct tq_queue is one blocking hiredis connection. It is not shared:
 * each thread (the worker's fetcher, writer and heartbeat, the CLI) owns
 * its own. A broken connection is re-opened by the next call. Every error
 * leaves its detail on the queue, read with tq_queue_errstr() (valid until
 * the next call on q).
 */
#ifndef TQ_QUEUE_H
#define TQ_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tq/config.h"
#include "tq/err.h"

struct tq_queue;

/*
 * Connect to c->redis_url. worker_id names this process's processing list
 * and heartbeat; NULL for a client that only pushes (the CLI). *out is
 * owned by the caller (tq_queue_close) even on error, so errstr is readable.
 * c is borrowed and must outlive the queue (key names are derived from it
 * on later calls); worker_id is copied.
 */
enum tq_err tq_queue_open(const struct tq_config *c, const char *worker_id,
                          struct tq_queue **out);
void tq_queue_close(struct tq_queue *q);
/* Detail of the last error; valid until the next call on q. */
const char *tq_queue_errstr(const struct tq_queue *q);

/*
 * Dispatch job ids: LPUSH them onto ready (FIFO with reserve's RIGHT pop),
 * or, when due_ms > 0, ZADD them to delayed with score due_ms (a worker
 * promotes them when due). The one way ids enter the queue: submit, operator
 * actions and the worker's own re-dispatches all use it. Safe to repeat.
 */
enum tq_err tq_queue_dispatch(struct tq_queue *q, const int64_t *ids, size_t n,
                              int64_t due_ms);

/*
 * BLMOVE ready -> proc:<worker> RIGHT LEFT, waiting up to timeout_ms.
 * TQ_OK: *id is a heap string owned by the caller. TQ_ETIMEOUT: nothing came.
 */
enum tq_err tq_queue_reserve(struct tq_queue *q, uint32_t timeout_ms,
                             char **id);

/*
 * Move up to max ids from ready to our processing list in one round trip
 * (Lua); when none is there, wait up to wait_ms for one (BLMOVE).
 * *ids (caller frees each and the array) may be empty: TQ_OK with *n = 0.
 * Values that are not job ids (tq_job_id_parse) never reach the caller,
 * here or from tq_queue_reserve: each moves to the dead list (its first
 * TQ_GARBAGE_KEEP bytes, once) and is logged, rate-limited.
 */
enum tq_err tq_queue_reserve_batch(struct tq_queue *q, size_t max, uint32_t wait_ms,
                                   char ***ids, size_t *n);
/* How many values were dead-lettered as garbage since the last call. */
uint64_t tq_queue_garbage_taken(struct tq_queue *q);
/* LREM each id from our processing list, one round trip. */
enum tq_err tq_queue_ack_batch(struct tq_queue *q, const char *const *ids, size_t n);
/* Hand ids back to the consuming end of ready, atomically per id. */
enum tq_err tq_queue_release_batch(struct tq_queue *q, const char *const *ids, size_t n);
/* Move id from our processing list to delayed, due at due_ms (epoch ms). */
enum tq_err tq_queue_park(struct tq_queue *q, const char *id, uint64_t due_ms);
/* Move id from our processing list (if there) to the dead list. */
enum tq_err tq_queue_bury(struct tq_queue *q, const char *id);
/* Promote up to limit due ids from delayed to ready (Lua, Redis's clock). */
enum tq_err tq_queue_promote(struct tq_queue *q, int limit, int *moved);
/*
 * Redis's maxmemory-policy into buf. TQ_EREDIS when CONFIG is refused
 * (managed Redis): the caller decides.
 */
enum tq_err tq_queue_eviction_policy(struct tq_queue *q, char *buf, size_t len);

/* Refresh hb:<worker> (TTL ttl_ms) and membership of the workers set. */
enum tq_err tq_queue_heartbeat(struct tq_queue *q, uint32_t ttl_ms);
/* Forget this worker (drop hb key and set membership) at clean exit. */
enum tq_err tq_queue_unregister(struct tq_queue *q);

/*
 * Fleet-wide mutual exclusion for periodic chores (reconcile): SET key NX PX.
 * *got tells whether this worker holds it for ttl_ms.
 */
enum tq_err tq_queue_try_lock(struct tq_queue *q, const char *name, uint32_t ttl_ms,
                              bool *got);

/* LPUSH those of ids that are not in ready already (one Lua call). */
enum tq_err tq_queue_push_missing(struct tq_queue *q, const char *const *ids, size_t n,
                                  int *pushed);

/*
 * Reaper: for every registered worker whose heartbeat key expired, move its
 * processing list back to the consuming end of ready and forget it. Atomic
 * per worker (Lua), so several reapers at once are harmless.
 */
enum tq_err tq_queue_reap(struct tq_queue *q, int *workers, int *moved);

/* Depths of ready (LLEN), delayed (ZCARD) and dead (LLEN), one round trip each. */
enum tq_err tq_queue_depths(struct tq_queue *q, long long *ready, long long *delayed,
                            long long *dead);

/* Worker ids in the heartbeat set other than q's own (live or not yet reaped). */
enum tq_err tq_queue_other_workers(struct tq_queue *q, long long *n);

/* LLEN of "<prefix>:{<queue>}:<suffix>", e.g. "ready". */
enum tq_err tq_queue_llen(struct tq_queue *q, const char *suffix,
                          long long *len);

#endif
