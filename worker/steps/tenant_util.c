/*
 * Shared helpers of the tenant-infrastructure step kinds (see tenant_util.h):
 * tenant names, bounded-time Redis connections, clocks. Credentials go
 * through the shared store (worker/credentials.h).
 * The step kinds themselves live one per file next to this one.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../step.h"
#include "tq/util.h"

const char *const wk_redis_tenant_denied[20] = {
    "+@all", "-@dangerous", "-@admin", "-@scripting",
    "-scan", "-randomkey", "-dbsize", "-keys", "-select", "-swapdb", "-move", "-copy",
    "-pubsub|channels", "-pubsub|numsub", "-pubsub|numpat", "-pubsub|shardchannels",
    "-pubsub|shardnumsub", "-memory|stats", "-memory|doctor", "-memory|malloc-stats",
};

void wk_tenant_names(const char *tenant_id, struct wk_tenant_names *n)
{
    tq_tenant_ident(tenant_id, n->ident, sizeof(n->ident));
    snprintf(n->role, sizeof(n->role), "tq_t_%s", n->ident);
    snprintf(n->owner, sizeof(n->owner), "tq_o_%s", n->ident);
    snprintf(n->schema, sizeof(n->schema), "t_%s", n->ident);
    snprintf(n->key_prefix, sizeof(n->key_prefix), "t:%s:", tenant_id);
}

enum tq_err wk_redis_open(const struct tq_redis_addr *a, int timeout_ms, redisContext **out,
                          char *errstr, size_t errlen)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    *out = NULL;
    redisContext *c = redisConnectWithTimeout(a->host, a->port, tv);
    if (!c || c->err) {
        snprintf(errstr, errlen, "could not connect to redis at %s:%d: %s", a->host, a->port,
                 c ? c->errstr : "out of memory");
        redisFree(c);
        return TQ_ECONNECT;
    }
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        snprintf(errstr, errlen, "could not set the redis timeout: %s", c->errstr);
        redisFree(c);
        return TQ_ECONNECT;
    }
    if (a->password[0]) {
        /* an ACL user when the URL names one, else the default user */
        const char *argv[] = {"AUTH", a->user[0] ? a->user : a->password, a->password};
        redisReply *r = redisCommandArgv(c, a->user[0] ? 3 : 2, argv, NULL);
        bool ok = r && r->type != REDIS_REPLY_ERROR;
        if (!ok) {
            snprintf(errstr, errlen, "could not authenticate to redis at %s:%d: %s", a->host,
                     a->port, r ? r->str : c->errstr);
            wk_scrub(errstr, a->password);
        }
        freeReplyObject(r);
        if (!ok) {
            redisFree(c);
            return TQ_EREDIS;
        }
    }
    if (a->db) {
        redisReply *r = redisCommand(c, "SELECT %d", a->db);
        bool ok = r && r->type != REDIS_REPLY_ERROR;
        if (!ok)
            snprintf(errstr, errlen, "could not select redis database %d: %s", a->db,
                     r ? r->str : c->errstr);
        freeReplyObject(r);
        if (!ok) {
            redisFree(c);
            return TQ_EREDIS;
        }
    }
    *out = c;
    return TQ_OK;
}

const char *wk_tenant_redis_url(const struct wk_step *s)
{
    const json_t *p = json_object_get(s->params, "url");
    const char *url = p ? json_string_value(p) : s->set->tenant_redis_url;
    return url && *url ? url : s->set->redis_url;
}

void wk_scrub(char *buf, const char *secret)
{
    size_t n = secret ? strlen(secret) : 0;
    if (n == 0)
        return;
    for (char *p = strstr(buf, secret); p; p = strstr(p + n, secret))
        memset(p, '*', n);
}

uint64_t wk_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double wk_ms_since(uint64_t start_ns)
{
    return (double)(wk_now_ns() - start_ns) / 1e6;
}

void wk_probes_init(struct wk_probes *p)
{
    p->list = json_array();
    tq_buf_init(&p->leaks);
    p->nleaks = 0;
}

void wk_probe(struct wk_probes *p, const char *tried, const char *happened, bool leak)
{
    json_array_append_new(p->list, json_pack("{s:s, s:s}", "probe", tried, "result", happened));
    if (leak) {
        tq_buf_printf(&p->leaks, " Tried to %s, and %s.", tried, happened);
        p->nleaks++;
    }
}

enum tq_err wk_probes_verdict(const struct wk_probes *p, struct wk_step *s, const char *who)
{
    if (!p->nleaks)
        return TQ_OK;
    snprintf(s->errstr, sizeof(s->errstr), "Isolation leak as %s.%s", who, p->leaks.data);
    return TQ_ESTEP;
}

void wk_probes_output(struct wk_probes *p, json_t *output)
{
    json_object_set_new(output, "leaks", json_integer(p->nleaks));
    json_object_set_new(output, "probes", p->list);
    p->list = NULL;
    tq_buf_cleanup(&p->leaks);
}
