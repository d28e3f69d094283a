/*
 * Shared helpers of the tenant-infrastructure step kinds (see tenant_util.h):
 * tenant names, credentials files, bounded-time Redis connections, clocks.
 * The step kinds themselves live one per file next to this one.
 */
#include "tenant_util.h"

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

void wk_tenant_names(const char *tenant_id, struct wk_tenant_names *n)
{
    tq_tenant_ident(tenant_id, n->ident, sizeof(n->ident));
    snprintf(n->role, sizeof(n->role), "tq_t_%s", n->ident);
    snprintf(n->schema, sizeof(n->schema), "t_%s", n->ident);
    snprintf(n->key_prefix, sizeof(n->key_prefix), "t:%s:", tenant_id);
}

static enum tq_err make_dirs(const char *dir, const char *tdir, char *errstr, size_t errlen)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(errstr, errlen, "could not create secrets directory \"%s\": %s", dir,
                 strerror(errno));
        return TQ_EIO;
    }
    if (mkdir(tdir, 0700) != 0 && errno != EEXIST) {
        snprintf(errstr, errlen, "could not create \"%s\": %s", tdir, strerror(errno));
        return TQ_EIO;
    }
    return TQ_OK;
}

enum tq_err wk_secret_prepare(const char *dir, const char *tenant, const char *name,
                              const json_t *obj, char **tmp, char *errstr, size_t errlen)
{
    char *tdir = tq_xasprintf("%s/%s", dir, tenant);
    char *path = tq_xasprintf("%s/.%s.tmp", tdir, name);
    char *text = NULL;
    int fd = -1;
    enum tq_err err = make_dirs(dir, tdir, errstr, errlen);
    if (err)
        goto out;
    text = json_dumps(obj, JSON_INDENT(2));
    if (!text) {
        snprintf(errstr, errlen, "could not serialise the credentials for \"%s\"", name);
        err = TQ_EINVALID;
        goto out;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || fchmod(fd, 0600) != 0) {
        snprintf(errstr, errlen, "could not write \"%s\": %s", path, strerror(errno));
        err = TQ_EIO;
        goto out;
    }
    size_t len = strlen(text);
    bool ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    int saved = errno;
    ok = close(fd) == 0 && ok;
    fd = -1;
    if (!ok) {
        snprintf(errstr, errlen, "could not write \"%s\": %s", path, strerror(saved));
        unlink(path);
        err = TQ_EIO;
        goto out;
    }
    *tmp = path;
    path = NULL;
out:
    if (fd >= 0) {
        close(fd);
        unlink(path);
    }
    if (text) {
        memset(text, 0, strlen(text));
        free(text);
    }
    free(path);
    free(tdir);
    return err;
}

enum tq_err wk_secret_commit(const char *dir, const char *tenant, const char *name,
                             const char *tmp, char *errstr, size_t errlen)
{
    char *path = tq_xasprintf("%s/%s/%s", dir, tenant, name);
    enum tq_err err = TQ_OK;
    if (rename(tmp, path) != 0) {
        snprintf(errstr, errlen, "could not rename \"%s\" to \"%s\": %s", tmp, path,
                 strerror(errno));
        unlink(tmp);
        err = TQ_EIO;
    }
    free(path);
    return err;
}

void wk_secret_discard(const char *tmp)
{
    if (tmp)
        unlink(tmp);
}

enum tq_err wk_secret_remove(const char *dir, const char *tenant, const char *name,
                             char *errstr, size_t errlen)
{
    char *path = tq_xasprintf("%s/%s/%s", dir, tenant, name);
    enum tq_err err = TQ_OK;
    if (unlink(path) != 0 && errno != ENOENT) {
        snprintf(errstr, errlen, "could not remove \"%s\": %s", path, strerror(errno));
        err = TQ_EIO;
    }
    free(path);
    /* The tenant's directory goes with its last file; ENOTEMPTY keeps it. */
    char *tdir = tq_xasprintf("%s/%s", dir, tenant);
    rmdir(tdir);
    free(tdir);
    return err;
}

enum tq_err wk_secret_read(const char *dir, const char *tenant, const char *name, json_t **out,
                           char *errstr, size_t errlen)
{
    char *path = tq_xasprintf("%s/%s/%s", dir, tenant, name);
    char *text = NULL;
    size_t len = 0;
    enum tq_err err = TQ_OK;
    *out = NULL;
    if (access(path, F_OK) != 0 && errno == ENOENT) {
        snprintf(errstr, errlen, "cannot read the tenant's credentials: \"%s\" does not exist",
                 path);
        err = TQ_ENOTFOUND;
        goto out;
    }
    if ((err = tq_read_file(path, 64 * 1024, &text, &len))) {
        snprintf(errstr, errlen, "could not read \"%s\"", path);
        goto out;
    }
    json_error_t je;
    *out = json_loadb(text, len, 0, &je);
    if (!json_is_object(*out)) {
        /* je.text may quote the file's bytes: never put it in errstr */
        snprintf(errstr, errlen, "cannot parse \"%s\" (line %d)", path, je.line);
        json_decref(*out);
        *out = NULL;
        err = TQ_EINVALID;
    }
out:
    if (text) {
        memset(text, 0, len);
        free(text);
    }
    free(path);
    return err;
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
        const char *argv[] = {"AUTH", a->password};
        redisReply *r = redisCommandArgv(c, 2, argv, NULL);
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
