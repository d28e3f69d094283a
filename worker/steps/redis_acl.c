/*
 * Step "redis_acl": the tenant's Redis namespace, an ACL user tq_t_<ident>
 * limited to keys and channels t:<tenant>:* with dangerous, admin and
 * scripting commands denied, in the server of params.url (default
 * $TQ_TENANT_REDIS_URL, else the worker's TQ_REDIS_URL). Its credentials go
 * to the shared credentials store as "redis" (worker/credentials.h): host,
 * port, user, password, key_prefix. The password is never logged, and
 * reaches no error text, output, job row or Redis key; only the ACL command
 * and the store's ciphertext carry it.
 *
 * Run:  ACL SETUSER <user> reset on >PW ~t:<tenant>:* &t:<tenant>:*
 *       +@all -@dangerous -@admin -@scripting, then minus every command that
 *       lists or counts the whole keyspace or other tenants' channels, or
 *       switches or copies across databases (wk_redis_tenant_denied: SCAN,
 *       RANDOMKEY, DBSIZE, SELECT, MOVE, COPY, PUBSUB CHANNELS/NUMSUB/...)
 *       ("reset" first: every run leaves the same one user, with a fresh
 *       password), then ACL SAVE when CONFIG GET aclfile is not empty.
 *       Tenants live in database 0 (a tenant redis URL naming another
 *       database is refused). What ACLs cannot bound (memory, key count)
 *       is measured by check_redis "usage"; see docs/tenant-isolation.md.
 *       The credentials are stored right after the ACL changes, so the
 *       delivered password and the server's agree unless that write
 *       fails; then the step fails and its rerun rotates both.
 * Undo: ACL DELUSER <user> (0 deleted is success), ACL SAVE when there is an
 *       aclfile, destroy the stored credentials. Running either twice is
 *       one effect.
 * Blocking hiredis calls run on the thread pool (wk_step_offload), each
 * bounded by params.io_timeout_ms (default WK_REDIS_IO_MS).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../step.h"
#include "tq/log.h"
#include "tq/redact.h"
#include "tq/util.h"

#define PASSWORD_LEN 32

/* Reply as text for messages (no secret is ever in a reply we describe). */
static const char *reply_text(redisContext *c, redisReply *r)
{
    if (!r)
        return c->errstr[0] ? c->errstr : "no reply";
    if (r->type == REDIS_REPLY_ERROR || r->type == REDIS_REPLY_STATUS ||
        r->type == REDIS_REPLY_STRING)
        return r->str;
    return "unexpected reply";
}

static enum tq_err open_admin(struct wk_step *s, struct tq_redis_addr *a, redisContext **c)
{
    const char *url = wk_tenant_redis_url(s);
    char why[128];
    /* the URL may carry the admin password: never quote it */
    if (tq_redis_url_parse(url, a, why, sizeof(why))) {
        snprintf(s->errstr, sizeof(s->errstr), "cannot use the tenant redis url: %s", why);
        return TQ_EINVALID;
    }
    int timeout_ms = WK_REDIS_IO_MS;
    const json_t *t = json_object_get(s->params, "io_timeout_ms");
    if (json_is_integer(t) && json_integer_value(t) > 0 && json_integer_value(t) < 600000)
        timeout_ms = (int)json_integer_value(t);
    return wk_redis_open(a, timeout_ms, c, s->errstr, sizeof(s->errstr));
}

/* ACL SAVE when the server persists ACLs in a file; *saved says whether it did. */
static enum tq_err maybe_save(struct wk_step *s, redisContext *c, bool *has_file, bool *saved)
{
    *has_file = *saved = false;
    redisReply *r = redisCommand(c, "CONFIG GET aclfile");
    if (!r) {
        snprintf(s->errstr, sizeof(s->errstr), "could not read the redis aclfile setting: %s",
                 c->errstr);
        return TQ_EREDIS;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_STRING && r->element[1]->len > 0)
        *has_file = true;
    else if (r->type == REDIS_REPLY_ERROR)
        /* CONFIG denied (a managed server): it persists ACLs its own way */
        tq_debug("tenant redis: CONFIG GET aclfile refused (%s); not saving ACLs", r->str);
    freeReplyObject(r);
    if (!*has_file)
        return TQ_OK;
    r = redisCommand(c, "ACL SAVE");
    bool ok = r && r->type == REDIS_REPLY_STATUS;
    if (!ok)
        snprintf(s->errstr, sizeof(s->errstr), "could not persist the redis ACL (ACL SAVE): %s",
                 reply_text(c, r));
    freeReplyObject(r);
    *saved = ok;
    return ok ? TQ_OK : TQ_EREDIS;
}

static enum tq_err acl_run(struct wk_step *s)
{
    struct wk_tenant_names n;
    struct tq_redis_addr a;
    redisContext *c = NULL;
    char password[PASSWORD_LEN + 1] = "";
    json_t *cred = NULL;
    wk_tenant_names(s->claim->tenant_id, &n);

    enum tq_err err = open_admin(s, &a, &c);
    if (err)
        goto out;
    if (a.db != 0) {
        /* SELECT is denied to tenants: ACLs cannot limit it to one database */
        snprintf(s->errstr, sizeof(s->errstr), "cannot give tenants database %d: Redis ACLs"
                 " cannot limit SELECT to one database, so tenant namespaces live in database 0",
                 a.db);
        err = TQ_EINVALID;
        goto out;
    }
    if ((err = tq_random_password(password, PASSWORD_LEN))) {
        snprintf(s->errstr, sizeof(s->errstr), "could not read the OS random source");
        goto out;
    }
    tq_redact_add(password);   /* masked out of anything logged while the step runs */
    cred = json_pack("{s:s, s:i, s:s, s:s, s:s}", "host", a.host, "port", a.port, "user",
                     n.role, "password", password, "key_prefix", n.key_prefix);

    redisReply *r = redisCommand(c, "ACL GETUSER %s", n.role);
    bool existed = r && r->type == REDIS_REPLY_ARRAY;
    freeReplyObject(r);

    char pass_rule[PASSWORD_LEN + 2], keys[96], chans[96];
    snprintf(pass_rule, sizeof(pass_rule), ">%s", password);
    snprintf(keys, sizeof(keys), "~%s*", n.key_prefix);
    snprintf(chans, sizeof(chans), "&%s*", n.key_prefix);
    const char *argv[8 + sizeof(wk_redis_tenant_denied) / sizeof(wk_redis_tenant_denied[0])] = {
        "ACL", "SETUSER", n.role, "reset", "on", pass_rule, keys, chans};
    int argc = 8;
    for (size_t i = 0; i < sizeof(wk_redis_tenant_denied) / sizeof(wk_redis_tenant_denied[0]); i++)
        argv[argc++] = wk_redis_tenant_denied[i];
    r = redisCommandArgv(c, argc, argv, NULL);
    memset(pass_rule, 0, sizeof(pass_rule));
    if (!r || r->type != REDIS_REPLY_STATUS) {
        snprintf(s->errstr, sizeof(s->errstr), "could not set redis ACL user %s: %s", n.role,
                 reply_text(c, r));
        wk_scrub(s->errstr, password);
        freeReplyObject(r);
        err = TQ_EREDIS;
        goto out;
    }
    freeReplyObject(r);

    /* The server now knows only the new password: deliver it before anything else can fail. */
    if ((err = wk_cred_put(s, NULL, "redis", cred)))
        goto out;
    bool has_file, saved;
    if ((err = maybe_save(s, c, &has_file, &saved)))
        goto out;
    json_object_set_new(s->output, "user", json_string(n.role));
    json_object_set_new(s->output, "key_prefix", json_string(n.key_prefix));
    json_object_set_new(s->output, "host", json_string(a.host));
    json_object_set_new(s->output, "port", json_integer(a.port));
    json_object_set_new(s->output, "user_existed", json_boolean(existed));
    json_object_set_new(s->output, "acl_file", json_boolean(has_file));
    json_object_set_new(s->output, "acl_saved", json_boolean(saved));
    json_object_set_new(s->output, "credentials", json_string("delivered"));
out:
    json_decref(cred);   /* jansson's copy of the password is freed, not wiped: it is const */
    if (password[0])
        tq_redact_remove(password);
    memset(password, 0, sizeof(password));
    redisFree(c);
    return err;
}

static enum tq_err acl_undo(struct wk_step *s)
{
    struct wk_tenant_names n;
    struct tq_redis_addr a;
    redisContext *c = NULL;
    wk_tenant_names(s->claim->tenant_id, &n);
    enum tq_err err = open_admin(s, &a, &c);
    if (err)
        goto out;
    redisReply *r = redisCommand(c, "ACL DELUSER %s", n.role);
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        snprintf(s->errstr, sizeof(s->errstr), "could not delete redis ACL user %s: %s", n.role,
                 reply_text(c, r));
        freeReplyObject(r);
        err = TQ_EREDIS;
        goto out;
    }
    long long deleted = r->integer;
    freeReplyObject(r);
    bool has_file, saved;
    if ((err = maybe_save(s, c, &has_file, &saved)))
        goto out;
    if ((err = wk_cred_destroy(s, NULL, "redis")))
        goto out;
    json_object_set_new(s->output, "user", json_string(n.role));
    json_object_set_new(s->output, "deleted", json_integer(deleted));
    json_object_set_new(s->output, "acl_saved", json_boolean(saved));
out:
    redisFree(c);
    return err;
}

static enum tq_err acl_start(struct wk_step *s)
{
    return wk_step_offload(s, s->undo ? acl_undo : acl_run);
}

/* Offloaded work is bounded by its socket timeouts; there is nothing to interrupt. */
const struct wk_step_ops wk_step_redis_acl = {"redis_acl", acl_start, NULL};
