/* Fleet-wide limits: permits in Redis sorted sets (see tq/limits.h). */
#include "tq/limits.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"
#include "tq/util.h"

/* Redis's clock in ms: every worker's permits expire on the same clock. */
#define NOW_MS "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + " \
               "math.floor(tonumber(t[2]) / 1000) "

/*
 * Only commands a least-privileged worker user has anyway (ZADD, ZREM,
 * ZRANGEBYSCORE, ZCOUNT, TIME): the sets stay small (at most max live
 * members), so membership is a scan of the live ones. A set empties, and
 * Redis drops it, when its last permit is given back; expired members of a
 * key nobody asks for again stay until someone does.
 */

/* KEYS[1] permits; ARGV holder, max, lease_ms. Returns {got, held}. */
static const char lua_acquire[] =
    NOW_MS
    "local k = KEYS[1] "
    "for _, m in ipairs(redis.call('ZRANGEBYSCORE', k, '-inf', now)) do "
    "  redis.call('ZREM', k, m) "
    "end "
    "local live = redis.call('ZRANGEBYSCORE', k, '(' .. now, '+inf') "
    "local mine = false "
    "for _, m in ipairs(live) do if m == ARGV[1] then mine = true end end "
    "local n = #live "
    "if not mine and n >= tonumber(ARGV[2]) then return {0, n} end "
    "redis.call('ZADD', k, now + tonumber(ARGV[3]), ARGV[1]) "
    "if mine then return {1, n} end "
    "return {1, n + 1}";

/* KEYS permits of each holder; ARGV lease_ms, holders... Returns lapsed count. */
static const char lua_renew[] =
    NOW_MS
    "local lease = tonumber(ARGV[1]) local lost = 0 "
    "for i, k in ipairs(KEYS) do "
    "  local h = ARGV[i + 1] local found = false "
    "  for _, m in ipairs(redis.call('ZRANGEBYSCORE', k, '(' .. now, '+inf')) do "
    "    if m == h then found = true end "
    "  end "
    "  if found then redis.call('ZADD', k, 'XX', now + lease, h) "
    "  else redis.call('ZREM', k, h) lost = lost + 1 end "
    "end "
    "return lost";

static const char lua_count[] =
    NOW_MS "return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')";

char *tq_limit_redis_key(const struct tq_config *c, const char *key)
{
    /* fleet-wide: across queues, so no "{queue}" part */
    return tq_xasprintf("%s:limit:%s", c->prefix ? c->prefix : "tq", key);
}

static char *rkey(struct tq_queue *q, const char *key)
{
    return tq_limit_redis_key(tq__queue_cfg(q), key);
}

enum tq_err tq_limit_acquire(struct tq_queue *q, const char *key, const char *holder,
                             uint32_t max, uint32_t lease_ms, bool *got, long long *held)
{
    *got = false;
    *held = 0;
    char *k = rkey(q, key);
    char smax[16], slease[16];
    snprintf(smax, sizeof(smax), "%u", max);
    snprintf(slease, sizeof(slease), "%u", lease_ms ? lease_ms : 1);
    const char *argv[] = {"EVAL", lua_acquire, "1", k, holder, smax, slease};
    enum tq_err err;
    redisReply *r = tq__queue_cmd(q, &err, "take a limit permit", 7, argv);
    free(k);
    if (!r)
        return err;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        *got = r->element[0]->integer == 1;
        *held = r->element[1]->integer;
    }
    freeReplyObject(r);
    return TQ_OK;
}

enum tq_err tq_limit_release(struct tq_queue *q, const char *key, const char *holder)
{
    char *k = rkey(q, key);
    const char *argv[] = {"ZREM", k, holder};
    enum tq_err err;
    redisReply *r = tq__queue_cmd(q, &err, "give a limit permit back", 3, argv);
    free(k);
    freeReplyObject(r);
    return r ? TQ_OK : err;
}

enum tq_err tq_limit_renew(struct tq_queue *q, const char *const *keys,
                           const char *const *holders, size_t n, uint32_t lease_ms, int *lost)
{
    *lost = 0;
    if (n == 0)
        return TQ_OK;
    size_t argc = 3 + 2 * n + 1;
    const char **argv = tq_xcalloc(argc, sizeof(*argv));
    char **owned = tq_xcalloc(n, sizeof(*owned));
    char nk[24], slease[16];
    snprintf(nk, sizeof(nk), "%zu", n);
    snprintf(slease, sizeof(slease), "%u", lease_ms ? lease_ms : 1);
    size_t a = 0;
    argv[a++] = "EVAL";
    argv[a++] = lua_renew;
    argv[a++] = nk;
    for (size_t i = 0; i < n; i++)
        argv[a++] = owned[i] = rkey(q, keys[i]);
    argv[a++] = slease;
    for (size_t i = 0; i < n; i++)
        argv[a++] = holders[i];
    enum tq_err err;
    redisReply *r = tq__queue_cmd(q, &err, "renew limit permits", (int)a, argv);
    if (r && r->type == REDIS_REPLY_INTEGER)
        *lost = (int)r->integer;
    freeReplyObject(r);
    for (size_t i = 0; i < n; i++)
        free(owned[i]);
    free(owned);
    free(argv);
    return r ? TQ_OK : err;
}

enum tq_err tq_limit_count(struct tq_queue *q, const char *key, long long *held)
{
    *held = 0;
    char *k = rkey(q, key);
    const char *argv[] = {"EVAL", lua_count, "1", k};
    enum tq_err err;
    redisReply *r = tq__queue_cmd(q, &err, "count limit permits", 4, argv);
    free(k);
    if (!r)
        return err;
    if (r->type == REDIS_REPLY_INTEGER)
        *held = r->integer;
    freeReplyObject(r);
    return TQ_OK;
}
