/* Environment configuration and the Redis URL parser (see tq/config.h). */
/* realpath(3) is XSI */
#define _XOPEN_SOURCE 700
#include "tq/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tq/util.h"

void tq_config_set(char **field, const char *value)
{
    free(*field);
    *field = value ? tq_xstrdup(value) : NULL;
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return (v && *v) ? v : dflt;
}

static enum tq_err env_int(const char *name, long long dflt, long long min,
                           long long max, long long *out, char *errbuf,
                           size_t errlen)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        *out = dflt;
        return TQ_OK;
    }
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || *end || n < min || n > max) {
        snprintf(errbuf, errlen, "%s: must be an integer from %lld to %lld",
                 name, min, max);
        return TQ_EINVALID;
    }
    *out = n;
    return TQ_OK;
}

static void split_regions(struct tq_config *c, const char *list)
{
    char *copy = tq_xstrdup(list);
    char *save = NULL;
    for (char *tok = strtok_r(copy, ", ", &save);
         tok && c->nregions < TQ_MAX_REGIONS; tok = strtok_r(NULL, ", ", &save))
        c->regions[c->nregions++] = tq_xstrdup(tok);
    free(copy);
}

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/*
 * The default pipeline, as an absolute path whatever the working directory:
 * beside a relocated install (<exe>/../share/tenantq/pipelines), then the
 * configured install directory, then the checkout a build-tree binary came
 * from. None there: the install directory's path, which the error names.
 */
char *tq_default_pipeline(void)
{
    static const char file[] = "tenant-provision.json";
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            char *p = tq_xasprintf("%s/../" TQ_INSTALL_DATADIR "/tenantq/pipelines/%s", exe, file);
            char *real = is_file(p) ? realpath(p, NULL) : NULL;
            free(p);
            if (real) {
                char *out = tq_xstrdup(real);   /* ours: tq_xstrdup's allocator */
                free(real);
                return out;
            }
        }
    }
    char *p = tq_xasprintf("%s/%s", TQ_PIPELINE_DIR, file);
    if (is_file(p))
        return p;
    char *src = tq_xasprintf("%s/%s", TQ_SOURCE_PIPELINE_DIR, file);
    if (is_file(src)) {
        free(p);
        return src;
    }
    free(src);
    return p;
}

enum tq_err tq_config_from_env(struct tq_config *c, char *errbuf,
                               size_t errlen)
{
    memset(c, 0, sizeof(*c));
    c->redis_url = tq_xstrdup(env_or("TQ_REDIS_URL", "redis://127.0.0.1:6379/0"));
    c->database_url = tq_xstrdup(env_or("TQ_DATABASE_URL", "dbname=tenantq"));
    c->queue = tq_xstrdup(env_or("TQ_QUEUE", TQ_DEFAULT_QUEUE));
    c->prefix = tq_xstrdup(env_or("TQ_PREFIX", "tq"));
    c->http_addr = tq_xstrdup(getenv("TQ_HTTP_ADDR") ? getenv("TQ_HTTP_ADDR")
                                                     : "127.0.0.1:9464");
    const char *ss = env_or("TQ_SECRETS_STORE", NULL);
    c->secrets_store = ss ? tq_xstrdup(ss) : NULL;
    const char *su = env_or("TQ_ALLOW_SUPERUSER", "0");
    c->allow_superuser = strcmp(su, "0") != 0;
    const char *tfpg = env_or("TQ_TERRAFORM_PG_URL", NULL);
    c->terraform_pg_url = tfpg ? tq_xstrdup(tfpg) : NULL;
    c->exec_allow = tq_xstrdup(env_or("TQ_EXEC_ALLOW", ""));
    const char *tf = env_or("TQ_TERRAFORM_BIN", NULL);
    c->terraform_bin = tf && *tf ? tq_xstrdup(tf) : NULL;
    split_regions(c, env_or("TQ_REGIONS", "us-east-1,us-west-2,eu-west-1"));
    const char *rf = env_or("TQ_REGIONS_FILE", NULL);
    if (rf && *rf) {
        /* The map is the allow-list: a region without an entry has nowhere to live. */
        enum tq_err rerr = tq_regions_load(rf, &c->region_map, errbuf, errlen);
        if (rerr)
            return rerr;
        for (size_t i = 0; i < c->nregions; i++)
            free(c->regions[i]);
        c->nregions = 0;
        for (size_t i = 0; i < c->region_map->n && i < TQ_MAX_REGIONS; i++)
            c->regions[c->nregions++] = tq_xstrdup(c->region_map->v[i].name);
    }

    const char *lf = env_or("TQ_LOG_FORMAT", "text");
    if (strcmp(lf, "json") == 0) {
        c->log_format = TQ_LOG_JSON;
    } else if (strcmp(lf, "text") == 0) {
        c->log_format = TQ_LOG_TEXT;
    } else {
        snprintf(errbuf, errlen, "TQ_LOG_FORMAT: must be \"json\" or \"text\"");
        return TQ_EINVALID;
    }

    long long n;
    enum tq_err err;
    if ((err = env_int("TQ_CONCURRENCY", 4, 1, 256, &n, errbuf, errlen)))
        return err;
    c->concurrency = (int)n;
    if ((err = env_int("TQ_LEASE_MS", 15000, 1000, 3600000, &n, errbuf, errlen)))
        return err;
    c->lease_ms = (uint32_t)n;
    if ((err = env_int("TQ_APPROVAL_THRESHOLD", 1000000, 0, 1000000000000LL,
                       &n, errbuf, errlen)))
        return err;
    c->approval_threshold_inr = n;

    struct tq_redis_addr addr;
    char why[200];
    if (tq_redis_url_parse(c->redis_url, &addr, why, sizeof(why))) {
        snprintf(errbuf, errlen, "TQ_REDIS_URL: %s", why);
        return TQ_EINVALID;
    }
    for (const char *p = c->queue; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_') {
            snprintf(errbuf, errlen,
                     "TQ_QUEUE: only letters, digits, '-' and '_' are allowed");
            return TQ_EINVALID;
        }
    }
    if (!*c->queue) {
        snprintf(errbuf, errlen, "TQ_QUEUE: must not be empty");
        return TQ_EINVALID;
    }
    return TQ_OK;
}

void tq_config_cleanup(struct tq_config *c)
{
    free(c->redis_url);
    free(c->database_url);
    free(c->queue);
    free(c->prefix);
    free(c->http_addr);
    free(c->secrets_store);
    free(c->terraform_pg_url);
    free(c->exec_allow);
    free(c->terraform_bin);
    for (size_t i = 0; i < c->nregions; i++)
        free(c->regions[i]);
    tq_regions_free(c->region_map);
    memset(c, 0, sizeof(*c));
}

enum tq_err tq_redis_url_parse(const char *url, struct tq_redis_addr *out,
                               char *errbuf, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    const char *p = url;
    if (strncmp(p, "redis://", 8) != 0) {
        snprintf(errbuf, errlen, "must start with redis:// (TLS is not supported)");
        return TQ_EINVALID;
    }
    p += 8;
    const char *at = strchr(p, '@');
    if (at) {
        /* userinfo is ":password" or "user:password" (an ACL user) */
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        if (colon && colon > p) {
            size_t un = (size_t)(colon - p);
            if (un >= sizeof(out->user)) {
                snprintf(errbuf, errlen, "user name is too long");
                return TQ_EINVALID;
            }
            memcpy(out->user, p, un);
            out->user[un] = '\0';
        }
        size_t n = (size_t)(at - pw);
        if (n >= sizeof(out->password)) {
            snprintf(errbuf, errlen, "password is too long");
            return TQ_EINVALID;
        }
        memcpy(out->password, pw, n);
        out->password[n] = '\0';
        p = at + 1;
    }
    size_t hlen = strcspn(p, ":/");
    if (hlen == 0 || hlen >= sizeof(out->host)) {
        snprintf(errbuf, errlen, "host is missing or too long");
        return TQ_EINVALID;
    }
    memcpy(out->host, p, hlen);
    out->host[hlen] = '\0';
    p += hlen;
    if (*p == ':') {
        char *end;
        errno = 0;
        long port = strtol(p + 1, &end, 10);
        if (errno || end == p + 1 || port < 1 || port > 65535 ||
            (*end && *end != '/')) {
            snprintf(errbuf, errlen, "port must be a number from 1 to 65535");
            return TQ_EINVALID;
        }
        out->port = (int)port;
        p = end;
    }
    if (*p == '/' && p[1]) {
        char *end;
        errno = 0;
        long db = strtol(p + 1, &end, 10);
        if (errno || *end || db < 0 || db > 15) {
            snprintf(errbuf, errlen, "database must be a number from 0 to 15");
            return TQ_EINVALID;
        }
        out->db = (int)db;
    } else if (*p && strcmp(p, "/") != 0) {
        snprintf(errbuf, errlen, "unexpected \"%s\" after host", p);
        return TQ_EINVALID;
    }
    return TQ_OK;
}

char *tq_key(const struct tq_config *c, const char *suffix)
{
    return tq_xasprintf("%s:{%s}:%s", c->prefix, c->queue, suffix);
}
