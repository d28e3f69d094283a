/*
 * The Redis side of operator actions (see tq/admin.h): moving job ids after
 * PostgreSQL has decided — undispatch, requeue from the dead list (dispatch
 * itself is tq_queue_dispatch) —
 * and the queue depths that `tq-enqueue stats` shows.
 */
#include "tq/admin.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"
#include "tq/util.h"

static enum tq_err qcmd(struct tq_queue *q, const char *what, int argc, const char **argv,
                        long long *integer)
{
    enum tq_err err;
    redisReply *r = tq__queue_cmd(q, &err, what, argc, argv);
    if (integer)
        *integer = r && r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
    freeReplyObject(r);
    return err;
}

enum tq_err tq_admin_undispatch(struct tq_queue *q, int64_t id)
{
    char num[24];
    snprintf(num, sizeof(num), "%" PRId64, id);
    char *ready = tq__queue_key(q, "ready"), *delayed = tq__queue_key(q, "delayed");
    const char *lrem[] = {"LREM", ready, "0", num};
    const char *zrem[] = {"ZREM", delayed, num};
    enum tq_err err = qcmd(q, "drop the job from ready", 4, lrem, NULL);
    if (!err)
        err = qcmd(q, "drop the job from delayed", 3, zrem, NULL);
    free(ready);
    free(delayed);
    return err;
}

static const char requeue_lua[] =
    "for _, id in ipairs(ARGV) do "
    "  redis.call('LREM', KEYS[1], 0, id) redis.call('LPUSH', KEYS[2], id) "
    "end return #ARGV";

enum tq_err tq_admin_requeue_dead(struct tq_queue *q, const int64_t *ids, size_t n)
{
    if (n == 0)
        return TQ_OK;
    const char **argv = tq_xcalloc(5 + n, sizeof(char *));
    char (*num)[24] = tq_xcalloc(n, sizeof(*num));
    char *dead = tq__queue_key(q, "dead"), *ready = tq__queue_key(q, "ready");
    argv[0] = "EVAL";
    argv[1] = requeue_lua;
    argv[2] = "2";
    argv[3] = dead;
    argv[4] = ready;
    for (size_t i = 0; i < n; i++) {
        snprintf(num[i], sizeof(num[i]), "%" PRId64, ids[i]);
        argv[5 + i] = num[i];
    }
    enum tq_err err = qcmd(q, "move dead jobs to ready", (int)(5 + n), argv, NULL);
    free(dead);
    free(ready);
    free(num);
    free(argv);
    return err;
}

enum tq_err tq_admin_queue_stats(struct tq_queue *q, uint64_t now_ms, json_t **out)
{
    *out = NULL;
    enum tq_err err;
    long long ready = 0, delayed = 0, due = 0, dead = 0;
    char *k_ready = tq__queue_key(q, "ready"), *k_delayed = tq__queue_key(q, "delayed");
    char *k_dead = tq__queue_key(q, "dead"), *k_workers = tq__queue_key(q, "workers");
    char now[24];
    snprintf(now, sizeof(now), "%llu", (unsigned long long)now_ms);
    const char *a1[] = {"LLEN", k_ready};
    const char *a2[] = {"ZCARD", k_delayed};
    const char *a3[] = {"ZCOUNT", k_delayed, "-inf", now};
    const char *a4[] = {"LLEN", k_dead};
    const char *a5[] = {"SMEMBERS", k_workers};
    redisReply *members = NULL;
    json_t *workers = json_array();
    long long processing = 0, live = 0;
    if ((err = qcmd(q, "read the ready length", 2, a1, &ready)) ||
        (err = qcmd(q, "read the delayed size", 2, a2, &delayed)) ||
        (err = qcmd(q, "count due delayed jobs", 4, a3, &due)) ||
        (err = qcmd(q, "read the dead length", 2, a4, &dead)))
        goto out;
    members = tq__queue_cmd(q, &err, "list workers", 2, a5);
    if (err)
        goto out;
    for (size_t i = 0; members->type == REDIS_REPLY_ARRAY && i < members->elements; i++) {
        const redisReply *m = members->element[i];
        if (m->type != REDIS_REPLY_STRING)
            continue;
        char *hb_suffix = tq_xasprintf("hb:%s", m->str);
        char *proc_suffix = tq_xasprintf("proc:%s", m->str);
        char *k_hb = tq__queue_key(q, hb_suffix), *k_proc = tq__queue_key(q, proc_suffix);
        free(hb_suffix);
        free(proc_suffix);
        const char *g[] = {"GET", k_hb};
        const char *t[] = {"PTTL", k_hb};
        const char *l[] = {"LLEN", k_proc};
        long long ttl = -2, plen = 0;
        redisReply *hb = tq__queue_cmd(q, &err, "read a heartbeat", 2, g);
        if (!err)
            err = qcmd(q, "read a heartbeat's TTL", 2, t, &ttl);
        if (!err)
            err = qcmd(q, "read a processing list", 2, l, &plen);
        free(k_hb);
        free(k_proc);
        if (err) {
            freeReplyObject(hb);
            goto out;
        }
        json_t *w = json_pack("{s:s, s:b, s:I}", "id", m->str, "live", ttl > 0 || ttl == -1,
                              "processing", (json_int_t)plen);
        if (!w) /* an id that is not UTF-8: report it, escaped by nobody */
            w = json_pack("{s:s, s:b, s:I}", "id", "?", "live", ttl > 0 || ttl == -1,
                          "processing", (json_int_t)plen);
        if (hb && hb->type == REDIS_REPLY_STRING) {
            long long at = strtoll(hb->str, NULL, 10);
            json_object_set_new(w, "last_heartbeat_ms", json_integer(at));
            json_object_set_new(w, "heartbeat_age_ms",
                                json_integer(at > 0 ? (json_int_t)now_ms - at : -1));
        } else {
            json_object_set_new(w, "last_heartbeat_ms", json_null());
            json_object_set_new(w, "heartbeat_age_ms", json_null());
        }
        json_object_set_new(w, "ttl_ms", ttl >= 0 ? json_integer(ttl) : json_null());
        freeReplyObject(hb);
        if (ttl > 0 || ttl == -1)
            live++;
        processing += plen;
        json_array_append_new(workers, w);
    }
    *out = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:O}", "ready", (json_int_t)ready,
                     "delayed", (json_int_t)delayed, "delayed_due", (json_int_t)due,
                     "processing", (json_int_t)processing, "dead", (json_int_t)dead,
                     "workers_live", (json_int_t)live, "workers", workers);
out:
    freeReplyObject(members);
    json_decref(workers);
    free(k_ready);
    free(k_delayed);
    free(k_dead);
    free(k_workers);
    return err;
}
