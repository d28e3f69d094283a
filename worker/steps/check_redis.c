/*
 * Step "check_redis" (params.check "isolation", the default; a security
 * check): AUTH as the tenant's ACL user with the credentials redis_acl
 * delivered to the shared credentials store ("redis"), then
 *   must work:    SET/GET/DEL of a key under t:<tenant>:
 *   must be NOPERM: GET and SET of t:someone-else:*, of a key without the
 *                 prefix, PUBLISH to another tenant's channel, FLUSHALL,
 *                 CONFIG GET, KEYS, EVAL.
 * Probes that must fail are written so that they harm nothing if a broken
 * ACL lets them through: FLUSHALL carries a bogus argument (the server
 * checks ACLs before it parses arguments, so an allowed FLUSHALL answers
 * "syntax error" and deletes nothing), SETs expire within seconds and are
 * deleted again. Any probe that is not refused is a leak: TQ_ESTEP naming it.
 * Undo: nothing. Blocking work on the thread pool, bounded by socket timeouts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../credentials.h"
#include "../worker.h"
#include "tenant_util.h"
#include "tq/util.h"

#define FOREIGN_PREFIX "t:someone-else:"

struct probes {
    json_t *list;
    struct tq_buf leaks;
    int nleaks;
};

static void record(struct probes *p, const char *probe, const char *result, bool leak)
{
    json_array_append_new(p->list, json_pack("{s:s, s:s}", "probe", probe, "result", result));
    if (leak) {
        tq_buf_printf(&p->leaks, "%s%s", p->nleaks ? "; " : "", probe);
        p->nleaks++;
    }
}

/* Send argv, which the ACL must refuse; false when the connection broke. */
static bool expect_noperm(redisContext *c, struct probes *p, const char *probe, int argc,
                          const char **argv, const char *undo_key)
{
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    if (!r)
        return false;
    char result[160];
    bool leak = true;
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOPERM", 6) == 0) {
        snprintf(result, sizeof(result), "denied (NOPERM)");
        leak = false;
    } else if (r->type == REDIS_REPLY_ERROR) {
        snprintf(result, sizeof(result), "ALLOWED (the command ran and answered: %.100s)", r->str);
    } else {
        snprintf(result, sizeof(result), "ALLOWED");
        if (undo_key) {
            const char *del[] = {"DEL", undo_key};
            freeReplyObject(redisCommandArgv(c, 2, del, NULL));
        }
    }
    freeReplyObject(r);
    record(p, probe, result, leak);
    return true;
}

static enum tq_err check_run(struct wk_step *s)
{
    const char *tenant = s->claim->tenant_id;
    struct tq_redis_addr a = {.db = 0};
    json_t *cred = NULL;
    redisContext *c = NULL;
    struct probes p = {.list = json_array()};
    tq_buf_init(&p.leaks);
    char user[64] = "", prefix[64] = "", password[256] = "";
    enum tq_err err;

    if ((err = wk_cred_get(s, NULL, "redis", &cred)))
        goto out;
    snprintf(a.host, sizeof(a.host), "%s", json_string_value(json_object_get(cred, "host"))
                                                ? json_string_value(json_object_get(cred, "host"))
                                                : "");
    a.port = (int)json_integer_value(json_object_get(cred, "port"));
    a.db = (int)json_integer_value(json_object_get(cred, "db"));
    const char *v = json_string_value(json_object_get(cred, "user"));
    snprintf(user, sizeof(user), "%s", v ? v : "");
    v = json_string_value(json_object_get(cred, "key_prefix"));
    snprintf(prefix, sizeof(prefix), "%s", v ? v : "");
    v = json_string_value(json_object_get(cred, "password"));
    snprintf(password, sizeof(password), "%s", v ? v : "");
    if (v)
        memset((char *)v, 0, strlen(v));
    json_decref(cred);
    cred = NULL;
    if (!a.host[0] || a.port <= 0 || !user[0] || !prefix[0] || !password[0]) {
        snprintf(s->errstr, sizeof(s->errstr),
                 "cannot check: the stored redis credentials lack host, port, user, key_prefix or password");
        err = TQ_EINVALID;
        goto out;
    }
    /* connect without AUTH (a.password empty), then AUTH as the tenant's user */
    if ((err = wk_redis_open(&a, WK_REDIS_IO_MS, &c, s->errstr, sizeof(s->errstr))))
        goto out;
    const char *auth[] = {"AUTH", user, password};
    redisReply *r = redisCommandArgv(c, 3, auth, NULL);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        snprintf(s->errstr, sizeof(s->errstr), "could not authenticate to redis as %s: %s", user,
                 r ? r->str : c->errstr);
        wk_scrub(s->errstr, password);
        err = r ? TQ_ESTEP : TQ_ECONNECT;
        freeReplyObject(r);
        goto out;
    }
    freeReplyObject(r);

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
    record(&p, "SET/GET/DEL own key", "ok", false);

    /* everything else is refused */
    char foreign_key[96], plain_key[96], foreign_chan[96];
    snprintf(foreign_key, sizeof(foreign_key), FOREIGN_PREFIX "tq-isolation-probe");
    snprintf(plain_key, sizeof(plain_key), "tq-isolation-probe:%s", tenant);
    snprintf(foreign_chan, sizeof(foreign_chan), FOREIGN_PREFIX "events");
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
        {"FLUSHALL", 2, {"FLUSHALL", "tq-isolation-probe-not-an-option"}, NULL},
        {"CONFIG GET", 3, {"CONFIG", "GET", "maxmemory"}, NULL},
        {"KEYS", 2, {"KEYS", "tq-isolation-probe-no-such-key*"}, NULL},
        {"EVAL", 3, {"EVAL", "return 1", "0"}, NULL},
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
    if (p.nleaks) {
        snprintf(s->errstr, sizeof(s->errstr), "isolation leak: redis user %s can %s", user,
                 p.leaks.data);
        err = TQ_ESTEP;
    }
out:
    json_object_set_new(s->output, "check", json_string("isolation"));
    if (user[0])
        json_object_set_new(s->output, "user", json_string(user));
    if (prefix[0])
        json_object_set_new(s->output, "key_prefix", json_string(prefix));
    json_object_set_new(s->output, "leaks", json_integer(p.nleaks));
    json_object_set_new(s->output, "probes", p.list);
    tq_buf_cleanup(&p.leaks);
    memset(password, 0, sizeof(password));
    json_decref(cred);
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
    if (check && strcmp(check, "isolation") != 0) {
        snprintf(s->errstr, sizeof(s->errstr), "params.check must be \"isolation\"");
        return TQ_EINVALID;
    }
    return wk_step_offload(s, check_run);
}

/* Offloaded work is bounded by its socket timeouts. */
const struct wk_step_ops wk_step_check_redis = {"check_redis", check_start, NULL};
