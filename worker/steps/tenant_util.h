/*
 * Helpers the tenant-infrastructure step kinds share (redis_acl, check_pg,
 * check_redis, exec): the tenant's names, Redis connections whose every
 * call is bounded in time (for work on the thread pool), and clocks. The
 * tenant's credentials live in the shared store (worker/credentials.h). Any thread; nothing here logs, and no
 * error text built here contains a secret.
 */
#ifndef WK_TENANT_UTIL_H
#define WK_TENANT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "tq/config.h"
#include "tq/err.h"
#include "tq/request.h"
#include "tq/util.h"

struct wk_step;

/*
 * ACL rules redis_acl adds after "+@all -@dangerous -@admin -@scripting":
 * the commands a tenant must not run because they list or count keys or
 * channels beyond its prefix, or switch or copy across databases.
 */
extern const char *const wk_redis_tenant_denied[20];

/* Connect and command timeout of the Redis steps (a param may lower it). */
#define WK_REDIS_IO_MS 5000

/*
 * "acme-corp" -> ident acme_corp, login role tq_t_acme_corp, owner role
 * tq_o_acme_corp (NOLOGIN: owns the schema and its objects), schema
 * t_acme_corp, key prefix t:acme-corp:
 */
struct wk_tenant_names {
    char ident[TQ_TENANT_ID_MAX + 1];
    char role[64];
    char owner[64];
    char schema[64];
    char key_prefix[64];
};
void wk_tenant_names(const char *tenant_id, struct wk_tenant_names *n);

/*
 * Open a blocking Redis connection whose connect and every command time out
 * after timeout_ms; AUTH with a->password when set (as a->user when the URL
 * names an ACL user, else the default user), then
 * SELECT a->db when not 0. On success *out is owned by the caller
 * (redisFree); errors are TQ_ECONNECT (unreachable) or TQ_EREDIS.
 */
enum tq_err wk_redis_open(const struct tq_redis_addr *a, int timeout_ms, redisContext **out,
                          char *errstr, size_t errlen);

/*
 * The Redis server that holds tenants' namespaces: params.url when present,
 * else $TQ_TENANT_REDIS_URL, and the worker's own TQ_REDIS_URL when that is
 * empty. Borrowed from s (valid while s lives).
 */
const char *wk_tenant_redis_url(const struct wk_step *s);

/*
 * The record of an isolation check (check_pg, check_redis): each probe is
 * something tried and what happened; a leak is written as one sentence,
 * "Tried to <tried>, and <happened>." wk_probes_init before use;
 * wk_probes_output hands the record to the step's output and empties p.
 */
struct wk_probes {
    json_t *list;          /* [{probe, result}] */
    struct tq_buf leaks;   /* the sentences, for errstr */
    int nleaks;
};
void wk_probes_init(struct wk_probes *p);
void wk_probe(struct wk_probes *p, const char *tried, const char *happened, bool leak);
/* TQ_ESTEP with "Isolation leak as <who>.<sentences>" in s->errstr when a probe leaked. */
enum tq_err wk_probes_verdict(const struct wk_probes *p, struct wk_step *s, const char *who);
/* output.leaks and output.probes (the list moves there); p is cleaned up. */
void wk_probes_output(struct wk_probes *p, json_t *output);

/* Overwrite each occurrence of secret in buf with '*' (defence in depth for server messages). */
void wk_scrub(char *buf, const char *secret);

/* Monotonic clock in nanoseconds, and milliseconds since start_ns as a double. */
uint64_t wk_now_ns(void);
double wk_ms_since(uint64_t start_ns);

#endif
