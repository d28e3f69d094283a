/*
 * The Redis dead list for operators (tq/deadlist.h): values are read capped
 * (a Lua script sends the first TQ_GARBAGE_KEEP bytes and the length), so a
 * 100 MB value pushed before the cap existed never crosses the wire whole.
 */
#include "tq/deadlist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"
#include "tq/jobid.h"
#include "tq/util.h"

static const char entries_lua[] =
    "local out = {} "
    "for _, v in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do "
    "  out[#out + 1] = string.sub(v, 1, tonumber(ARGV[1])) out[#out + 1] = #v "
    "end return out";

enum tq_err tq_deadlist_entries(struct tq_queue *q, json_t **out)
{
    *out = NULL;
    char *k = tq__queue_key(q, "dead");
    char keep[16];
    snprintf(keep, sizeof(keep), "%d", TQ_GARBAGE_KEEP);
    const char *argv[] = {"EVAL", entries_lua, "1", k, keep};
    enum tq_err err;
    redisReply *r = tq__queue_cmd(q, &err, "read the dead list", 5, argv);
    free(k);
    if (err)
        return err;
    json_t *a = json_array();
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        const redisReply *v = r->element[i], *n = r->element[i + 1];
        if (v->type != REDIS_REPLY_STRING)
            continue;
        char shown[4 * TQ_GARBAGE_KEEP + 1];
        tq_value_escape(v->str, v->len, TQ_GARBAGE_KEEP, shown, sizeof(shown));
        long long bytes = n->type == REDIS_REPLY_INTEGER ? n->integer : (long long)v->len;
        int64_t id;
        bool is_id = bytes == (long long)v->len && tq_job_id_parse(v->str, v->len, &id, NULL);
        json_array_append_new(a, json_pack("{s:s, s:I, s:o}", "value", shown, "bytes",
                                           (json_int_t)bytes, "job_id",
                                           is_id ? json_integer(id) : json_null()));
    }
    freeReplyObject(r);
    *out = a;
    return TQ_OK;
}

static const char drop_lua[] =
    "local n = redis.call('LREM', KEYS[1], 0, ARGV[1]) "
    "local keep = tonumber(ARGV[2]) "
    "if #ARGV[1] == keep then "
    "  for _, v in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do "
    "    if #v > keep and string.sub(v, 1, keep) == ARGV[1] then "
    "      n = n + redis.call('LREM', KEYS[1], 0, v) end "
    "  end "
    "end return n";

enum tq_err tq_deadlist_drop(struct tq_queue *q, const char *raw, size_t len, long long *removed)
{
    *removed = 0;
    char *k = tq__queue_key(q, "dead");
    char keep[16];
    snprintf(keep, sizeof(keep), "%d", TQ_GARBAGE_KEEP);
    const char *argv[] = {"EVAL", drop_lua, "1", k, raw, keep};
    size_t lens[] = {4, strlen(drop_lua), 1, strlen(k), len, strlen(keep)};
    enum tq_err err;
    redisReply *r = tq__queue_cmd_len(q, &err, "drop a value from the dead list", 6, argv, lens);
    if (r && r->type == REDIS_REPLY_INTEGER)
        *removed = r->integer;
    freeReplyObject(r);
    free(k);
    return err;
}
