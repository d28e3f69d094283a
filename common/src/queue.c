/*
 * Redis queue protocol over blocking hiredis connections (one per thread).
 * The protocol itself is described in common/README.md, section Queue.
 */
#include "queue_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "tq/jobid.h"
#include "tq/log.h"
#include "tq/util.h"

struct tq_queue {
    redisContext *rc;
    struct tq_redis_addr addr;
    char *worker_id;
    char *k_ready;
    char *k_proc;
    char *k_hb;
    char *k_workers;
    const struct tq_config *cfg;
    char errstr[256];
    uint64_t garbage;              /* values buried since tq_queue_garbage_taken */
    struct tq_ratelimit garbage_log;
};

static const struct timeval io_timeout = {5, 0};

static enum tq_err set_err(struct tq_queue *q, enum tq_err err, const char *fmt,
                           ...) __attribute__((format(printf, 3, 4)));

static enum tq_err set_err(struct tq_queue *q, enum tq_err err, const char *fmt,
                           ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q->errstr, sizeof(q->errstr), fmt, ap);
    va_end(ap);
    return err;
}

static void drop(struct tq_queue *q)
{
    if (q->rc)
        redisFree(q->rc);
    q->rc = NULL;
}

/* Run one command that must not fail, for AUTH/SELECT at connect. */
static enum tq_err simple(struct tq_queue *q, const char *what, redisReply *r)
{
    if (!r)
        return set_err(q, TQ_ECONNECT, "could not %s on %s:%d: %s", what,
                       q->addr.host, q->addr.port,
                       q->rc->errstr[0] ? q->rc->errstr : "connection lost");
    enum tq_err err = TQ_OK;
    if (r->type == REDIS_REPLY_ERROR)
        err = set_err(q, TQ_EREDIS, "could not %s: %s", what, r->str);
    freeReplyObject(r);
    return err;
}

static enum tq_err ensure(struct tq_queue *q)
{
    if (q->rc && !q->rc->err)
        return TQ_OK;
    drop(q);
    struct timeval ct = {2, 0};
    q->rc = redisConnectWithTimeout(q->addr.host, q->addr.port, ct);
    if (!q->rc || q->rc->err) {
        enum tq_err e = set_err(q, TQ_ECONNECT, "could not connect to redis at %s:%d: %s",
                                q->addr.host, q->addr.port,
                                q->rc ? q->rc->errstr : "out of memory");
        drop(q);
        return e;
    }
    redisSetTimeout(q->rc, io_timeout);
    enum tq_err err = TQ_OK;
    if (q->addr.password[0] && q->addr.user[0])
        err = simple(q, "authenticate",
                     redisCommand(q->rc, "AUTH %s %s", q->addr.user, q->addr.password));
    else if (q->addr.password[0])
        err = simple(q, "authenticate", redisCommand(q->rc, "AUTH %s", q->addr.password));
    if (!err && q->addr.db)
        err = simple(q, "select database", redisCommand(q->rc, "SELECT %d", q->addr.db));
    if (err)
        drop(q);
    return err;
}

static redisReply *cmd_len(struct tq_queue *q, enum tq_err *err, const char *what,
                           int argc, const char **argv, const size_t *lens)
{
    *err = ensure(q);
    if (*err)
        return NULL;
    redisReply *r = redisCommandArgv(q->rc, argc, argv, lens);
    if (!r) {
        *err = set_err(q, TQ_ECONNECT, "could not %s: %s", what,
                       q->rc->errstr[0] ? q->rc->errstr : "connection lost");
        drop(q);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        *err = set_err(q, TQ_EREDIS, "could not %s: %s", what, r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

static redisReply *cmd(struct tq_queue *q, enum tq_err *err, const char *what,
                       int argc, const char **argv)
{
    return cmd_len(q, err, what, argc, argv, NULL);
}

redisReply *tq__queue_cmd(struct tq_queue *q, enum tq_err *err, const char *what, int argc,
                          const char **argv)
{
    return cmd(q, err, what, argc, argv);
}

redisReply *tq__queue_cmd_len(struct tq_queue *q, enum tq_err *err, const char *what, int argc,
                              const char **argv, const size_t *lens)
{
    return cmd_len(q, err, what, argc, argv, lens);
}

char *tq__queue_key(const struct tq_queue *q, const char *suffix)
{
    return tq_key(q->cfg, suffix);
}

const struct tq_config *tq__queue_cfg(const struct tq_queue *q)
{
    return q->cfg;
}

enum tq_err tq_queue_open(const struct tq_config *c, const char *worker_id,
                          struct tq_queue **out)
{
    struct tq_queue *q = tq_xcalloc(1, sizeof(*q));
    *out = q;
    q->cfg = c;
    char why[200];
    if (tq_redis_url_parse(c->redis_url, &q->addr, why, sizeof(why)))
        return set_err(q, TQ_EINVALID, "TQ_REDIS_URL: %s", why);
    q->k_ready = tq_key(c, "ready");
    q->k_workers = tq_key(c, "workers");
    if (worker_id) {
        q->worker_id = tq_xstrdup(worker_id);
        char *s = tq_xasprintf("proc:%s", worker_id);
        q->k_proc = tq_key(c, s);
        free(s);
        s = tq_xasprintf("hb:%s", worker_id);
        q->k_hb = tq_key(c, s);
        free(s);
    }
    return ensure(q);
}

void tq_queue_close(struct tq_queue *q)
{
    if (!q)
        return;
    drop(q);
    free(q->worker_id);
    free(q->k_ready);
    free(q->k_proc);
    free(q->k_hb);
    free(q->k_workers);
    free(q);
}

const char *tq_queue_errstr(const struct tq_queue *q)
{
    return q->errstr;
}

/* LPUSH decimal ids onto ready. */
static enum tq_err lpush_ready(struct tq_queue *q, const char *const *ids, size_t n)
{
    if (n == 0)
        return TQ_OK;
    const char **argv = tq_xcalloc(n + 2, sizeof(char *));
    argv[0] = "LPUSH";
    argv[1] = q->k_ready;
    for (size_t i = 0; i < n; i++)
        argv[i + 2] = ids[i];
    enum tq_err err;
    redisReply *r = cmd(q, &err, "push to the ready list", (int)(n + 2), argv);
    free(argv);
    freeReplyObject(r);
    return err;
}

/*
 * KEYS: proc, dead. ARGV: the value, how much of it to keep. Kept once (a
 * copy already there moves to the tail), with the commands ack and bury
 * already use, so the worker's Redis user needs nothing more.
 */
static const char bury_garbage_lua[] =
    "redis.call('LREM', KEYS[1], -1, ARGV[1]) "
    "local kept = string.sub(ARGV[1], 1, tonumber(ARGV[2])) "
    "redis.call('LREM', KEYS[2], 0, kept) redis.call('RPUSH', KEYS[2], kept) "
    "return 1";

/*
 * A value we just moved to our processing list: a job id (returned, heap)
 * or garbage, which goes to the dead list (its first TQ_GARBAGE_KEEP bytes,
 * once) and is logged, rate-limited; then NULL. Binary-safe: the value may
 * hold NUL bytes and be as large as Redis allows.
 */
static char *screen(struct tq_queue *q, const char *v, size_t len)
{
    int64_t id;
    const char *why = NULL;
    if (tq_job_id_parse(v, len, &id, &why))
        return tq_xstrdup(v);
    char *k_dead = tq_key(q->cfg, "dead");
    char keep[24];
    snprintf(keep, sizeof(keep), "%d", TQ_GARBAGE_KEEP);
    const char *argv[] = {"EVAL", bury_garbage_lua, "2", q->k_proc, k_dead, v, keep};
    size_t lens[] = {4, strlen(bury_garbage_lua), 1, strlen(q->k_proc), strlen(k_dead), len,
                     strlen(keep)};
    enum tq_err err;
    /* On failure the value stays in our processing list until that list is reaped. */
    redisReply *r = cmd_len(q, &err, "move a value that is not a job id to the dead list", 7,
                            argv, lens);
    bool ok = err == TQ_OK;
    freeReplyObject(r);
    free(k_dead);
    q->garbage++;
    uint64_t suppressed;
    if (!q->garbage_log.period_ms) {
        q->garbage_log.period_ms = 10000;
        q->garbage_log.burst = 10;
    }
    if (tq_ratelimit_ok(&q->garbage_log, tq_mono_ms(), &suppressed)) {
        char shown[4 * 64 + 1];
        tq_value_escape(v, len, 64, shown, sizeof(shown));
        tq_warn("queue: \"%s\"%s (%zu bytes) in %s is not a job id (%s); %s", shown,
                len > 64 ? "..." : "", len, q->k_ready, why,
                ok ? "moved to the dead list" : "could not move it to the dead list");
        if (suppressed)
            tq_warn("queue: %llu more values that are not job ids were not logged",
                    (unsigned long long)suppressed);
    } else if (q->garbage_log.dropped == 1) {
        tq_warn("queue: more values that are not job ids; they are not logged for up to %u s",
                q->garbage_log.period_ms / 1000);
    }
    return NULL;
}

uint64_t tq_queue_garbage_taken(struct tq_queue *q)
{
    uint64_t n = q->garbage;
    q->garbage = 0;
    return n;
}

enum tq_err tq_queue_dispatch(struct tq_queue *q, const int64_t *ids, size_t n, int64_t due_ms)
{
    if (n == 0)
        return TQ_OK;
    char (*num)[24] = tq_xcalloc(n + 1, sizeof(*num));
    const char **argv = tq_xcalloc(2 + 2 * n, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        snprintf(num[i], sizeof(num[i]), "%" PRId64, ids[i]);
    enum tq_err err;
    if (due_ms <= 0) {
        for (size_t i = 0; i < n; i++)
            argv[i] = num[i];
        err = lpush_ready(q, argv, n);
    } else {
        char *key = tq_key(q->cfg, "delayed");
        snprintf(num[n], sizeof(num[n]), "%" PRId64, due_ms);
        argv[0] = "ZADD";
        argv[1] = key;
        for (size_t i = 0; i < n; i++) {
            argv[2 + 2 * i] = num[n];
            argv[3 + 2 * i] = num[i];
        }
        freeReplyObject(cmd(q, &err, "schedule jobs (ZADD delayed)", (int)(2 + 2 * n), argv));
        free(key);
    }
    free(argv);
    free(num);
    return err;
}

enum tq_err tq_queue_reserve(struct tq_queue *q, uint32_t timeout_ms, char **id)
{
    *id = NULL;
    TQ_ASSERT(q->k_proc);
    enum tq_err err = ensure(q);
    if (err)
        return err;
    /* The socket timeout must outlast the BLMOVE, or the context dies with EAGAIN. */
    struct timeval tv = {(long)(timeout_ms / 1000) + 5, 0};
    redisSetTimeout(q->rc, tv);
    char secs[32];
    snprintf(secs, sizeof(secs), "%.3f", timeout_ms / 1000.0);
    const char *argv[] = {"BLMOVE", q->k_ready, q->k_proc, "RIGHT", "LEFT", secs};
    redisReply *r = cmd(q, &err, "reserve a job (BLMOVE)", 6, argv);
    if (q->rc)
        redisSetTimeout(q->rc, io_timeout);
    if (err)
        return err;
    if (r->type == REDIS_REPLY_STRING) {
        *id = screen(q, r->str, r->len);
        if (!*id)
            err = TQ_ETIMEOUT;   /* garbage only: as if nothing came */
    } else if (r->type == REDIS_REPLY_NIL) {
        err = TQ_ETIMEOUT;
    } else {
        err = set_err(q, TQ_EREDIS, "unexpected reply type %d to BLMOVE", r->type);
    }
    freeReplyObject(r);
    return err;
}

enum tq_err tq_queue_heartbeat(struct tq_queue *q, uint32_t ttl_ms)
{
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%u", ttl_ms);
    char now[24];
    snprintf(now, sizeof(now), "%llu", (unsigned long long)tq_now_ms());
    const char *set[] = {"SET", q->k_hb, now, "PX", ttl};
    enum tq_err err;
    freeReplyObject(cmd(q, &err, "write heartbeat", 5, set));
    if (err)
        return err;
    const char *add[] = {"SADD", q->k_workers, q->worker_id};
    freeReplyObject(cmd(q, &err, "register worker", 3, add));
    return err;
}

enum tq_err tq_queue_unregister(struct tq_queue *q)
{
    const char *del[] = {"DEL", q->k_hb};
    enum tq_err err;
    freeReplyObject(cmd(q, &err, "drop heartbeat", 2, del));
    if (err)
        return err;
    const char *rem[] = {"SREM", q->k_workers, q->worker_id};
    freeReplyObject(cmd(q, &err, "unregister worker", 3, rem));
    return err;
}

enum tq_err tq_queue_other_workers(struct tq_queue *q, long long *n)
{
    *n = -1;
    const char *argv[] = {"SMEMBERS", q->k_workers};
    enum tq_err err;
    redisReply *r = cmd(q, &err, "read the worker set", 2, argv);
    if (r && r->type == REDIS_REPLY_ARRAY) {
        *n = 0;
        for (size_t i = 0; i < r->elements; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING &&
                (!q->worker_id || strcmp(r->element[i]->str, q->worker_id) != 0))
                (*n)++;
    } else if (!err) {
        err = set_err(q, TQ_EREDIS, "could not read the worker set: unexpected reply");
    }
    freeReplyObject(r);
    return err;
}

enum tq_err tq_queue_llen(struct tq_queue *q, const char *suffix, long long *len)
{
    char *k = tq_key(q->cfg, suffix);
    const char *argv[] = {"LLEN", k};
    enum tq_err err;
    redisReply *r = cmd(q, &err, "read a list length", 2, argv);
    free(k);
    *len = r ? r->integer : 0;
    freeReplyObject(r);
    return err;
}

enum tq_err tq_queue_try_lock(struct tq_queue *q, const char *name, uint32_t ttl_ms, bool *got)
{
    char *k = tq_key(q->cfg, name);
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%u", ttl_ms);
    const char *argv[] = {"SET", k, q->worker_id ? q->worker_id : "client", "NX", "PX", ttl};
    enum tq_err err;
    redisReply *r = cmd(q, &err, "take a fleet lock", 6, argv);
    free(k);
    *got = r && r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    return err;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * One LRANGE of the whole ready list, sorted here, then one LPUSH of the ids
 * it lacks: O(N log N) in the worker once per reconcile, instead of an
 * O(N) LPOS inside Redis per candidate (which stalls Redis on a long backlog).
 * An id popped in between was there; one pushed twice is harmless.
 */
enum tq_err tq_queue_push_missing(struct tq_queue *q, const char *const *ids, size_t n,
                                  int *pushed)
{
    *pushed = 0;
    if (n == 0)
        return TQ_OK;
    const char *argv[] = {"LRANGE", q->k_ready, "0", "-1"};
    enum tq_err err;
    redisReply *r = cmd(q, &err, "read the ready list", 4, argv);
    if (err)
        return err;
    size_t have = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
    const char **present = tq_xcalloc(have + 1, sizeof(char *));
    for (size_t i = 0; i < have; i++)
        present[i] = r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "";
    qsort(present, have, sizeof(char *), cmp_str);
    const char **missing = tq_xcalloc(n, sizeof(char *));
    size_t nm = 0;
    for (size_t i = 0; i < n; i++)
        if (!bsearch(&ids[i], present, have, sizeof(char *), cmp_str))
            missing[nm++] = ids[i];
    if (nm > 0) {
        err = lpush_ready(q, missing, nm);
        if (!err)
            *pushed = (int)nm;
    }
    free(missing);
    free(present);
    freeReplyObject(r);
    return err;
}

/*
 * One worker: if its heartbeat is gone, its processing list goes back to
 * ready and it leaves the set. Every key is declared (Redis Cluster: one
 * slot, thanks to the {queue} tag). KEYS: hb, proc, ready, workers.
 * ARGV: worker id. Returns -1 (alive) or the number of ids moved.
 */
static const char reap_lua[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end "
    "local moved = 0 "
    "while redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT') do moved = moved + 1 end "
    "redis.call('SREM', KEYS[4], ARGV[1]) "
    "return moved";

/* Add s to the set of candidate ids unless it is there already. */
static void add_candidate(char ***ids, size_t *n, const char *s)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*ids)[i], s) == 0)
            return;
    *ids = tq_xrealloc(*ids, (*n + 1) * sizeof(char *));
    (*ids)[(*n)++] = tq_xstrdup(s);
}

/*
 * Candidates are the registered workers and the owner of every processing
 * list SCAN finds: a worker that reserved after Redis lost its data and died
 * before its next heartbeat re-registered it is in no set, but its list is
 * still found (issue: orphaned processing lists after FLUSHDB).
 */
enum tq_err tq_queue_reap(struct tq_queue *q, int *workers, int *moved)
{
    *workers = *moved = 0;
    char **cand = NULL;
    size_t ncand = 0;
    enum tq_err err;
    const char *sm[] = {"SMEMBERS", q->k_workers};
    redisReply *r = cmd(q, &err, "list workers", 2, sm);
    if (err)
        return err;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING)
            add_candidate(&cand, &ncand, r->element[i]->str);
    freeReplyObject(r);
    char *proc_prefix = tq_key(q->cfg, "proc:");
    size_t plen = strlen(proc_prefix);
    /* glob-escape the prefix: a prefix or queue may hold * ? [ ] \ */
    struct tq_buf pat;
    tq_buf_init(&pat);
    for (const char *p = proc_prefix; *p; p++) {
        if (strchr("*?[]\\", *p))
            tq_buf_append(&pat, "\\", 1);
        tq_buf_append(&pat, p, 1);
    }
    tq_buf_puts(&pat, "*");
    char cursor[32] = "0";
    do {
        const char *sc[] = {"SCAN", cursor, "MATCH", pat.data, "COUNT", "1000", "TYPE", "list"};
        r = cmd(q, &err, "find processing lists", 8, sc);
        if (err)
            break;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING) {
            freeReplyObject(r);
            err = set_err(q, TQ_EREDIS, "could not find processing lists: unexpected SCAN reply");
            break;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        const redisReply *keys = r->element[1];
        for (size_t i = 0; keys->type == REDIS_REPLY_ARRAY && i < keys->elements; i++)
            if (keys->element[i]->type == REDIS_REPLY_STRING &&
                strncmp(keys->element[i]->str, proc_prefix, plen) == 0)
                add_candidate(&cand, &ncand, keys->element[i]->str + plen);
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    tq_buf_cleanup(&pat);
    free(proc_prefix);
    for (size_t i = 0; i < ncand && !err; i++) {
        /* our own list is never reaped: we are alive by definition */
        if (q->worker_id && strcmp(cand[i], q->worker_id) == 0)
            continue;
        char *hb_s = tq_xasprintf("hb:%s", cand[i]), *proc_s = tq_xasprintf("proc:%s", cand[i]);
        char *k_hb = tq_key(q->cfg, hb_s), *k_proc = tq_key(q->cfg, proc_s);
        const char *ev[] = {"EVAL", reap_lua, "4", k_hb, k_proc, q->k_ready, q->k_workers,
                            cand[i]};
        r = cmd(q, &err, "reap a dead worker", 8, ev);
        if (r && r->type == REDIS_REPLY_INTEGER && r->integer >= 0) {
            (*workers)++;
            *moved += (int)r->integer;
        }
        freeReplyObject(r);
        free(hb_s);
        free(proc_s);
        free(k_hb);
        free(k_proc);
    }
    for (size_t i = 0; i < ncand; i++)
        free(cand[i]);
    free(cand);
    return err;
}

/*
 * Reserved ids enter the processing list at the head, so the oldest sit at
 * the tail: acks and hand-backs remove with LREM -1, which searches from the
 * tail and finds them at once instead of walking the whole list.
 */
static const char reserve_lua[] =
    "local out = {} "
    "for i = 1, tonumber(ARGV[1]) do "
    "  local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') "
    "  if not id then break end "
    "  out[#out + 1] = id "
    "end return out";

enum tq_err tq_queue_reserve_batch(struct tq_queue *q, size_t max, uint32_t wait_ms,
                                   char ***ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    TQ_ASSERT(q->k_proc);
    char smax[24];
    snprintf(smax, sizeof(smax), "%zu", max ? max : 1);
    const char *argv[] = {"EVAL", reserve_lua, "2", q->k_ready, q->k_proc, smax};
    enum tq_err err;
    redisReply *r = cmd(q, &err, "reserve jobs", 6, argv);
    if (err)
        return err;
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
        *ids = tq_xcalloc(r->elements, sizeof(char *));
        for (size_t i = 0; i < r->elements; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING) {
                char *id = screen(q, r->element[i]->str, r->element[i]->len);
                if (id)
                    (*ids)[(*n)++] = id;
            }
        freeReplyObject(r);
        if (*n == 0) {
            free(*ids);
            *ids = NULL;
        }
        return TQ_OK;
    }
    freeReplyObject(r);
    if (wait_ms == 0)
        return TQ_OK;
    char *one = NULL;
    err = tq_queue_reserve(q, wait_ms, &one);
    if (err == TQ_ETIMEOUT)
        return TQ_OK;
    if (err)
        return err;
    *ids = tq_xcalloc(1, sizeof(char *));
    (*ids)[0] = one;
    *n = 1;
    return TQ_OK;
}

/* EVAL script with KEYS and then ids as ARGV; integer reply discarded. */
static enum tq_err eval_ids(struct tq_queue *q, const char *what, const char *script,
                            const char **keys, int nkeys, const char *const *ids, size_t n)
{
    if (n == 0)
        return TQ_OK;
    const char **argv = tq_xcalloc(n + 3 + (size_t)nkeys, sizeof(char *));
    char nk[8];
    snprintf(nk, sizeof(nk), "%d", nkeys);
    argv[0] = "EVAL";
    argv[1] = script;
    argv[2] = nk;
    for (int i = 0; i < nkeys; i++)
        argv[3 + i] = keys[i];
    for (size_t i = 0; i < n; i++)
        argv[3 + (size_t)nkeys + i] = ids[i];
    enum tq_err err;
    redisReply *r = cmd(q, &err, what, (int)(n + 3 + (size_t)nkeys), argv);
    free(argv);
    freeReplyObject(r);
    return err;
}

static const char ack_lua[] =
    "for _, id in ipairs(ARGV) do redis.call('LREM', KEYS[1], -1, id) end return 1";

enum tq_err tq_queue_ack_batch(struct tq_queue *q, const char *const *ids, size_t n)
{
    const char *keys[] = {q->k_proc};
    return eval_ids(q, "ack jobs", ack_lua, keys, 1, ids, n);
}

static const char release_many_lua[] =
    "for _, id in ipairs(ARGV) do "
    "  if redis.call('LREM', KEYS[1], -1, id) > 0 then redis.call('RPUSH', KEYS[2], id) end "
    "end return 1";

enum tq_err tq_queue_release_batch(struct tq_queue *q, const char *const *ids, size_t n)
{
    const char *keys[] = {q->k_proc, q->k_ready};
    return eval_ids(q, "hand jobs back", release_many_lua, keys, 2, ids, n);
}

static const char park_lua[] =
    "redis.call('LREM', KEYS[1], -1, ARGV[1]) "
    "redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1]) return 1";

enum tq_err tq_queue_park(struct tq_queue *q, const char *id, uint64_t due_ms)
{
    char *k = tq_key(q->cfg, "delayed");
    char due[24];
    snprintf(due, sizeof(due), "%llu", (unsigned long long)due_ms);
    const char *argv[] = {"EVAL", park_lua, "2", q->k_proc, k, id, due};
    enum tq_err err;
    freeReplyObject(cmd(q, &err, "park a job in delayed", 7, argv));
    free(k);
    return err;
}

static const char bury_lua[] =
    "redis.call('LREM', KEYS[1], -1, ARGV[1]) redis.call('RPUSH', KEYS[2], ARGV[1]) return 1";

enum tq_err tq_queue_bury(struct tq_queue *q, const char *id)
{
    char *k = tq_key(q->cfg, "dead");
    const char *argv[] = {"EVAL", bury_lua, "2", q->k_proc ? q->k_proc : k, k, id};
    enum tq_err err;
    freeReplyObject(cmd(q, &err, "move a job to the dead list", 6, argv));
    free(k);
    return err;
}

static const char promote_lua[] =
    "local t = redis.call('TIME') "
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
    "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1])) "
    "for _, id in ipairs(ids) do redis.call('ZREM', KEYS[1], id) redis.call('LPUSH', KEYS[2], id) end "
    "return #ids";

enum tq_err tq_queue_promote(struct tq_queue *q, int limit, int *moved)
{
    char *k = tq_key(q->cfg, "delayed");
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *argv[] = {"EVAL", promote_lua, "2", k, q->k_ready, lim};
    enum tq_err err;
    redisReply *r = cmd(q, &err, "promote due jobs", 6, argv);
    free(k);
    *moved = r && r->type == REDIS_REPLY_INTEGER ? (int)r->integer : 0;
    freeReplyObject(r);
    return err;
}

enum tq_err tq_queue_eviction_policy(struct tq_queue *q, char *buf, size_t len)
{
    const char *argv[] = {"CONFIG", "GET", "maxmemory-policy"};
    enum tq_err err;
    redisReply *r = cmd(q, &err, "read maxmemory-policy", 3, argv);
    buf[0] = '\0';
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_STRING)
        snprintf(buf, len, "%s", r->element[1]->str);
    else if (!err)
        err = set_err(q, TQ_EREDIS, "could not read maxmemory-policy: unexpected reply");
    freeReplyObject(r);
    return err;
}

enum tq_err tq_queue_depths(struct tq_queue *q, long long *ready, long long *delayed,
                            long long *dead)
{
    *ready = *delayed = *dead = -1;
    enum tq_err err = tq_queue_llen(q, "ready", ready);
    if (!err)
        err = tq_queue_llen(q, "dead", dead);
    if (err)
        return err;
    char *k = tq_key(q->cfg, "delayed");
    const char *argv[] = {"ZCARD", k};
    redisReply *r = cmd(q, &err, "read the delayed set's size", 2, argv);
    free(k);
    if (r && r->type == REDIS_REPLY_INTEGER)
        *delayed = r->integer;
    freeReplyObject(r);
    return err;
}
