/*
 * Step "check_redis", params.check:
 *   isolation (the default; a security check): AUTH as the tenant's ACL user
 *     with the credentials redis_acl delivered to the shared credentials
 *     store ("redis"), then
 *     must work:      SET/GET/DEL of a key under t:<tenant>:
 *     must be NOPERM: GET and SET of t:someone-else:*, of a key without the
 *                     prefix, PUBLISH to another tenant's channel, FLUSHALL,
 *                     CONFIG GET, KEYS, EVAL, and everything that lists or
 *                     counts the keyspace or other tenants' channels, or
 *                     switches databases: SCAN, RANDOMKEY, DBSIZE, SELECT,
 *                     MOVE, COPY, PUBSUB CHANNELS/NUMSUB, MEMORY STATS.
 *     Probes that must fail are written so that they harm nothing if a
 *     broken ACL lets them through: FLUSHALL carries a bogus argument (the
 *     server checks ACLs before it parses arguments, so an allowed FLUSHALL
 *     answers "syntax error" and deletes nothing), SETs expire within
 *     seconds and are deleted again, MOVE and COPY name a missing key,
 *     SELECT names database 0. Any probe that is not refused is a leak:
 *     TQ_ESTEP, one sentence per leak ("Tried to X, and it was allowed.").
 *   usage: what ACLs cannot bound: the keys under t:<tenant>:, listed by
 *     the platform (the tenant redis URL's user; the tenant itself may not
 *     SCAN, and SCAN needs no key access), and their MEMORY USAGE, asked as
 *     the tenant (the platform's user has no access to tenants' keys), against params.max_keys (default
 *     100000) and params.max_memory_mb (default 256). Over either is
 *     TQ_ESTEP naming both figures (give the step a class, e.g.
 *     performance: a warning, drift on revalidation). The scan stops once
 *     the key limit is passed, or after params.scan_limit keys of the whole
 *     keyspace (default 1000000: the answer is then "inconclusive", an
 *     error of its own).
 * Undo: nothing. Blocking work on the thread pool, bounded by socket timeouts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../step.h"
#include "tq/util.h"

#define FOREIGN_PREFIX "t:someone-else:"

/* Send argv, which the ACL must refuse; false when the connection broke. */
static bool expect_noperm(redisContext *c, struct wk_probes *p, const char *probe, int argc,
                          const char **argv, const char *undo_key)
{
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    if (!r)
        return false;
    char result[160];
    bool leak = true;
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOPERM", 6) == 0) {
        snprintf(result, sizeof(result), "it was refused (NOPERM)");
        leak = false;
    } else if (r->type == REDIS_REPLY_ERROR) {
        snprintf(result, sizeof(result), "it was allowed (the command ran and answered: %.100s)",
                 r->str);
    } else {
        snprintf(result, sizeof(result), "it was allowed");
        if (undo_key) {
            const char *del[] = {"DEL", undo_key};
            freeReplyObject(redisCommandArgv(c, 2, del, NULL));
        }
    }
    freeReplyObject(r);
    wk_probe(p, probe, result, leak);
    return true;
}

/*
 * A connection AUTHenticated as the tenant's own ACL user, from the
 * credentials redis_acl stored. user / prefix (may be NULL) get its name and
 * key prefix. *out owned by the caller (redisFree) on success.
 */
static enum tq_err tenant_open(struct wk_step *s, redisContext **out, char *user, size_t ulen,
                               char *prefix, size_t plen)
{
    struct tq_redis_addr a = {.db = 0};
    json_t *cred = NULL;
    redisContext *c = NULL;
    char name[64] = "", pfx[64] = "", password[256] = "";
    *out = NULL;
    enum tq_err err = wk_cred_get(s, NULL, "redis", &cred);
    if (err)
        return err;
    const char *v = json_string_value(json_object_get(cred, "host"));
    snprintf(a.host, sizeof(a.host), "%s", v ? v : "");
    a.port = (int)json_integer_value(json_object_get(cred, "port"));
    a.db = (int)json_integer_value(json_object_get(cred, "db"));
    v = json_string_value(json_object_get(cred, "user"));
    snprintf(name, sizeof(name), "%s", v ? v : "");
    v = json_string_value(json_object_get(cred, "key_prefix"));
    snprintf(pfx, sizeof(pfx), "%s", v ? v : "");
    /* our own copy, wiped at the end (jansson's strings are const: never written to) */
    v = json_string_value(json_object_get(cred, "password"));
    snprintf(password, sizeof(password), "%s", v ? v : "");
    json_decref(cred);
    if (user)
        snprintf(user, ulen, "%s", name);
    if (prefix)
        snprintf(prefix, plen, "%s", pfx);
    if (!a.host[0] || a.port <= 0 || !name[0] || !pfx[0] || !password[0]) {
        snprintf(s->errstr, sizeof(s->errstr), "cannot check: the stored redis credentials lack"
                 " host, port, user, key_prefix or password");
        err = TQ_EINVALID;
        goto out;
    }
    /* connect without AUTH (a.password empty), then AUTH as the tenant's user */
    if ((err = wk_redis_open(&a, WK_REDIS_IO_MS, &c, s->errstr, sizeof(s->errstr))))
        goto out;
    const char *auth[] = {"AUTH", name, password};
    redisReply *r = redisCommandArgv(c, 3, auth, NULL);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        snprintf(s->errstr, sizeof(s->errstr), "could not authenticate to redis as %s: %s", name,
                 r ? r->str : c->errstr);
        wk_scrub(s->errstr, password);
        err = r ? TQ_ESTEP : TQ_ECONNECT;
        freeReplyObject(r);
        redisFree(c);
        goto out;
    }
    freeReplyObject(r);
    *out = c;
out:
    memset(password, 0, sizeof(password));
    return err;
}

static enum tq_err check_run(struct wk_step *s)
{
    redisContext *c = NULL;
    redisReply *r;
    struct wk_probes p;
    wk_probes_init(&p);
    char user[64] = "", prefix[64] = "";
    const char *tenant = s->claim->tenant_id;
    enum tq_err err = tenant_open(s, &c, user, sizeof(user), prefix, sizeof(prefix));
    if (err)
        goto out;

    /* its own prefix works */
    char own_key[128], token[17];
    snprintf(own_key, sizeof(own_key), "%stq-check", prefix);
    tq_random_password(token, 16);
    const char *set[] = {"SET", own_key, token, "PX", "60000"};
    const char *get[] = {"GET", own_key};
    const char *del[] = {"DEL", own_key};
    r = redisCommandArgv(c, 5, set, NULL);
    bool ok = r && r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    r = ok ? redisCommandArgv(c, 2, get, NULL) : NULL;
    ok = ok && r && r->type == REDIS_REPLY_STRING && strcmp(r->str, token) == 0;
    freeReplyObject(r);
    r = ok ? redisCommandArgv(c, 2, del, NULL) : NULL;
    ok = ok && r && r->type == REDIS_REPLY_INTEGER;
    freeReplyObject(r);
    if (c->err) {
        snprintf(s->errstr, sizeof(s->errstr), "could not use redis as %s: %s", user, c->errstr);
        err = TQ_ECONNECT;
        goto out;
    }
    if (!ok) {
        snprintf(s->errstr, sizeof(s->errstr), "%s cannot SET, GET and DEL its own key %s", user,
                 own_key);
        err = TQ_ESTEP;
        goto out;
    }
    wk_probe(&p, "SET/GET/DEL own key", "ok", false);

    /* everything else is refused */
    char foreign_key[96], plain_key[96], foreign_chan[96];
    snprintf(foreign_key, sizeof(foreign_key), FOREIGN_PREFIX "tq-isolation-probe");
    snprintf(plain_key, sizeof(plain_key), "tq-isolation-probe:%s", tenant);
    snprintf(foreign_chan, sizeof(foreign_chan), FOREIGN_PREFIX "events");
    char missing_key[128];
    snprintf(missing_key, sizeof(missing_key), "%stq-isolation-probe-missing", prefix);
    struct {
        const char *probe;
        int argc;
        const char *argv[6];
        const char *undo_key;
    } probes[] = {
        {"GET another tenant's key", 2, {"GET", foreign_key}, NULL},
        {"SET another tenant's key", 5, {"SET", foreign_key, "x", "PX", "5000"}, foreign_key},
        {"GET a key without the tenant prefix", 2, {"GET", plain_key}, NULL},
        {"SET a key without the tenant prefix", 5, {"SET", plain_key, "x", "PX", "5000"}, plain_key},
        {"PUBLISH to another tenant's channel", 3, {"PUBLISH", foreign_chan, "x"}, NULL},
        {"run FLUSHALL", 2, {"FLUSHALL", "tq-isolation-probe-not-an-option"}, NULL},
        {"run CONFIG GET", 3, {"CONFIG", "GET", "maxmemory"}, NULL},
        {"list keys with KEYS", 2, {"KEYS", "tq-isolation-probe-no-such-key*"}, NULL},
        {"run a script with EVAL", 3, {"EVAL", "return 1", "0"}, NULL},
        {"list keys with SCAN", 6, {"SCAN", "0", "MATCH", "tq-isolation-probe-no-such-key*",
                                    "COUNT", "1"}, NULL},
        {"name a random key with RANDOMKEY", 1, {"RANDOMKEY"}, NULL},
        {"count every key with DBSIZE", 1, {"DBSIZE"}, NULL},
        {"switch databases with SELECT", 2, {"SELECT", "0"}, NULL},
        {"move a key to another database with MOVE", 3, {"MOVE", missing_key, "1"}, NULL},
        {"copy a key with COPY", 3, {"COPY", missing_key, missing_key}, NULL},
        {"list channels with PUBSUB CHANNELS", 2, {"PUBSUB", "CHANNELS"}, NULL},
        {"count another tenant's subscribers with PUBSUB NUMSUB", 3,
         {"PUBSUB", "NUMSUB", foreign_chan}, NULL},
        {"read server-wide memory figures with MEMORY STATS", 2, {"MEMORY", "STATS"}, NULL},
    };
    for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
        if (!expect_noperm(c, &p, probes[i].probe, probes[i].argc, probes[i].argv,
                           probes[i].undo_key)) {
            snprintf(s->errstr, sizeof(s->errstr), "could not finish the redis isolation check"
                     " as %s: %s", user, c->errstr);
            err = TQ_ECONNECT;
            goto out;
        }
    }
    char who[96];
    snprintf(who, sizeof(who), "redis user %s", user);
    err = wk_probes_verdict(&p, s, who);
out:
    json_object_set_new(s->output, "check", json_string("isolation"));
    if (user[0])
        json_object_set_new(s->output, "user", json_string(user));
    if (prefix[0])
        json_object_set_new(s->output, "key_prefix", json_string(prefix));
    wk_probes_output(&p, s->output);
    redisFree(c);
    return err;
}

/* ------------------------------------------------------------ usage */

static long long int_param(const struct wk_step *s, const char *name, long long dflt)
{
    const json_t *v = json_object_get(s->params, name);
    return json_is_integer(v) ? json_integer_value(v) : dflt;
}

/* Add the keys of one SCAN page and their MEMORY USAGE (asked as the tenant, tc). */
static enum tq_err page_usage(struct wk_step *s, redisContext *tc, const redisReply *page,
                              long long *keys, long long *bytes)
{
    enum tq_err err = TQ_OK;
    /* one round trip for the page's MEMORY USAGE calls */
    for (size_t i = 0; i < page->elements; i++) {
        const char *mu[] = {"MEMORY", "USAGE", page->element[i]->str};
        size_t len[] = {6, 5, page->element[i]->len};
        if (redisAppendCommandArgv(tc, 3, mu, len) != REDIS_OK) {
            snprintf(s->errstr, sizeof(s->errstr), "could not ask MEMORY USAGE: %s",
                     tc->errstr);
            return TQ_ECONNECT;
        }
    }
    for (size_t i = 0; i < page->elements; i++) {
        void *rep = NULL;
        if (redisGetReply(tc, &rep) != REDIS_OK) {
            snprintf(s->errstr, sizeof(s->errstr), "could not read MEMORY USAGE: %s",
                     tc->errstr);
            return TQ_ECONNECT;
        }
        redisReply *m = rep;
        if (m->type == REDIS_REPLY_ERROR && !err) {
            snprintf(s->errstr, sizeof(s->errstr), "could not read MEMORY USAGE as the"
                     " tenant: %s", m->str);
            err = TQ_EREDIS;
        }
        if (m->type == REDIS_REPLY_INTEGER) {   /* nil: the key expired meanwhile */
            *bytes += m->integer;
            (*keys)++;
        }
        freeReplyObject(m);
    }
    return err;
}

static enum tq_err usage_run(struct wk_step *s)
{
    const char *tenant = s->claim->tenant_id;
    struct wk_tenant_names n;
    wk_tenant_names(tenant, &n);
    long long max_keys = int_param(s, "max_keys", 100000);
    long long max_mb = int_param(s, "max_memory_mb", 256);
    long long scan_limit = int_param(s, "scan_limit", 1000000);
    json_object_set_new(s->output, "check", json_string("usage"));
    if (max_keys < 0 || max_mb < 0 || scan_limit < 1) {
        snprintf(s->errstr, sizeof(s->errstr), "cannot check usage: params.max_keys and"
                 " params.max_memory_mb must be >= 0 and params.scan_limit >= 1");
        return TQ_EINVALID;
    }
    struct tq_redis_addr a;
    char why[128];
    /* the URL may carry the platform's password: never quote it */
    if (tq_redis_url_parse(wk_tenant_redis_url(s), &a, why, sizeof(why))) {
        snprintf(s->errstr, sizeof(s->errstr), "cannot use the tenant redis url: %s", why);
        return TQ_EINVALID;
    }
    redisContext *c = NULL, *tc = NULL;
    enum tq_err err = wk_redis_open(&a, WK_REDIS_IO_MS, &c, s->errstr, sizeof(s->errstr));
    if (err)
        return err;
    /* MEMORY USAGE needs read access to the keys: asked as the tenant itself
       (its own keys), so the platform's user needs no access to tenants' data */
    if ((err = tenant_open(s, &tc, NULL, 0, NULL, 0)))
        goto out;
    char match[96], cursor[32] = "0";
    snprintf(match, sizeof(match), "%s*", n.key_prefix);
    long long keys = 0, bytes = 0, scanned_rounds = 0;
    bool complete = false;
    while (!complete && keys <= max_keys && scanned_rounds * 1000 < scan_limit) {
        const char *argv[] = {"SCAN", cursor, "MATCH", match, "COUNT", "1000"};
        redisReply *r = redisCommandArgv(c, 6, argv, NULL);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            snprintf(s->errstr, sizeof(s->errstr), "could not SCAN the tenant redis for %.80s: %.120s",
                     match, r && r->type == REDIS_REPLY_ERROR ? r->str
                            : c->errstr[0] ? c->errstr : "unexpected reply");
            err = r ? TQ_EREDIS : TQ_ECONNECT;
            freeReplyObject(r);
            goto out;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        complete = strcmp(cursor, "0") == 0;
        scanned_rounds++;
        err = page_usage(s, tc, r->element[1], &keys, &bytes);
        freeReplyObject(r);
        if (err)
            goto out;
    }
    long long max_bytes = max_mb * 1024 * 1024;
    json_object_set_new(s->output, "key_prefix", json_string(n.key_prefix));
    json_object_set_new(s->output, "keys", json_integer(keys));
    json_object_set_new(s->output, "memory_bytes", json_integer(bytes));
    json_object_set_new(s->output, "max_keys", json_integer(max_keys));
    json_object_set_new(s->output, "max_memory_mb", json_integer(max_mb));
    json_object_set_new(s->output, "complete", json_boolean(complete));
    if (keys > max_keys || bytes > max_bytes) {
        snprintf(s->errstr, sizeof(s->errstr), "Counted the keys under %s in Redis, and found%s"
                 " %lld keys using %lld bytes, over its limit of %lld keys and %lld MiB.",
                 n.key_prefix, complete ? "" : " at least", keys, bytes, max_keys, max_mb);
        err = TQ_ESTEP;
    } else if (!complete) {
        snprintf(s->errstr, sizeof(s->errstr), "Counted the keys under %s in Redis, and gave up"
                 " after %lld SCAN rounds (params.scan_limit %lld) with %lld keys found.",
                 n.key_prefix, scanned_rounds, scan_limit, keys);
        err = TQ_ETIMEOUT;
    }
out:
    redisFree(tc);
    redisFree(c);
    return err;
}

static enum tq_err check_start(struct wk_step *s)
{
    if (s->undo) {
        wk_step_done(s, TQ_OK);
        return TQ_OK;
    }
    const char *check = json_string_value(json_object_get(s->params, "check"));
    if (check && strcmp(check, "usage") == 0)
        return wk_step_offload(s, usage_run);
    if (check && strcmp(check, "isolation") != 0) {
        snprintf(s->errstr, sizeof(s->errstr), "params.check must be \"isolation\" or \"usage\"");
        return TQ_EINVALID;
    }
    return wk_step_offload(s, check_run);
}

/* Offloaded work is bounded by its socket timeouts. */
const struct wk_step_ops wk_step_check_redis = {"check_redis", check_start, NULL};
