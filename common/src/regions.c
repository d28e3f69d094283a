/*
 * The region map (tq/regions.h): parsed and checked whole with jansson, so
 * a bad file stops the CLI and the worker at start with every detail in
 * one message, never a step halfway through a tenant.
 */
#include "tq/regions.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tq/util.h"

static enum tq_err bad(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum tq_err bad(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
    return TQ_EINVALID;
}

static bool region_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= 32 && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == n &&
           s[0] != '-' && s[n - 1] != '-';
}

/* http(s)://host..., no credentials, query or fragment, no whitespace. */
static bool url_ok(const char *u)
{
    const char *host = strncmp(u, "http://", 7) == 0    ? u + 7
                       : strncmp(u, "https://", 8) == 0 ? u + 8
                                                        : NULL;
    if (!host || !*host || *host == '/' || strpbrk(u, "?# \t\r\n"))
        return false;
    const char *at = strchr(host, '@');
    return !(at && at < host + strcspn(host, "/"));
}

static const char *const fields[] = {"s3_region", "s3_endpoint", "vector_url", "dashboard_url",
                                     "pg_url", NULL};

static void region_cleanup(struct tq_region *r)
{
    free(r->name);
    free(r->s3_region);
    free(r->s3_endpoint);
    free(r->vector_url);
    free(r->dashboard_url);
    free(r->pg_url);
}

void tq_regions_free(struct tq_regions *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++)
        region_cleanup(&m->v[i]);
    free(m->v);
    free(m->source);
    free(m);
}

/* One optional string-or-null field; *out NULL when absent or null. */
static enum tq_err get_str(const char *src, const char *region, const json_t *o,
                           const char *field, bool required, bool url, char **out,
                           char *errbuf, size_t errlen)
{
    *out = NULL;
    json_t *v = json_object_get(o, field);
    if (!v) {
        if (required)
            return bad(errbuf, errlen, "%s: region \"%s\": field \"%s\" is required", src,
                       region, field);
        return TQ_OK;
    }
    if (json_is_null(v))
        return TQ_OK;
    if (!json_is_string(v) || !*json_string_value(v))
        return bad(errbuf, errlen, "%s: region \"%s\": field \"%s\" must be a non-empty string%s",
                   src, region, field, url ? " (an http(s) URL) or null" : "");
    const char *s = json_string_value(v);
    if (url && !url_ok(s))
        /* never echo it: a URL with "user:secret@" would leak */
        return bad(errbuf, errlen, "%s: region \"%s\": field \"%s\" must be an http(s) URL "
                   "without credentials, query or fragment", src, region, field);
    *out = tq_xstrdup(s);
    return TQ_OK;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct tq_region *)a)->name, ((const struct tq_region *)b)->name);
}

enum tq_err tq_regions_parse(const char *text, const char *source, struct tq_regions **out,
                             char *errbuf, size_t errlen)
{
    *out = NULL;
    const char *src = source ? source : "region map";
    json_error_t je;
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!doc)
        return bad(errbuf, errlen, "%s: not valid JSON (line %d: %s)", src, je.line, je.text);
    enum tq_err err = TQ_OK;
    struct tq_regions *m = tq_xcalloc(1, sizeof(*m));
    m->source = tq_xstrdup(src);
    if (!json_is_object(doc) || json_object_size(doc) == 0) {
        err = bad(errbuf, errlen, "%s: must be a non-empty JSON object of region -> entry", src);
        goto out;
    }
    if (json_object_size(doc) > TQ_REGIONS_MAX) {
        err = bad(errbuf, errlen, "%s: at most %d regions (it has %zu)", src, TQ_REGIONS_MAX,
                  json_object_size(doc));
        goto out;
    }
    m->v = tq_xcalloc(json_object_size(doc), sizeof(*m->v));
    const char *name;
    json_t *e;
    json_object_foreach(doc, name, e) {
        if (!region_name_ok(name)) {
            err = bad(errbuf, errlen, "%s: region \"%.40s\": a region name is 1-32 of a-z, 0-9 "
                      "and '-'", src, name);
            goto out;
        }
        if (!json_is_object(e)) {
            err = bad(errbuf, errlen, "%s: region \"%s\": the entry must be a JSON object", src,
                      name);
            goto out;
        }
        const char *k;
        json_t *x;
        json_object_foreach(e, k, x) {
            size_t i = 0;
            while (fields[i] && strcmp(fields[i], k) != 0)
                i++;
            if (!fields[i]) {
                err = bad(errbuf, errlen, "%s: region \"%s\": unknown field \"%.40s\" (known: "
                          "s3_region, s3_endpoint, vector_url, dashboard_url, pg_url)", src,
                          name, k);
                goto out;
            }
        }
        struct tq_region *r = &m->v[m->n++];
        r->name = tq_xstrdup(name);
        if ((err = get_str(src, name, e, "s3_region", true, false, &r->s3_region, errbuf,
                           errlen)))
            goto out;
        if (!r->s3_region) {
            err = bad(errbuf, errlen, "%s: region \"%s\": field \"s3_region\" must be a region "
                      "name, not null", src, name);
            goto out;
        }
        if (!region_name_ok(r->s3_region)) {
            err = bad(errbuf, errlen, "%s: region \"%s\": field \"s3_region\" must be a region "
                      "name (1-32 of a-z, 0-9 and '-')", src, name);
            goto out;
        }
        if (!json_object_get(e, "s3_endpoint")) {
            err = bad(errbuf, errlen, "%s: region \"%s\": field \"s3_endpoint\" is required (an "
                      "http(s) URL, or null for no object storage in this region)", src, name);
            goto out;
        }
        if ((err = get_str(src, name, e, "s3_endpoint", false, true, &r->s3_endpoint, errbuf,
                           errlen)) ||
            (err = get_str(src, name, e, "vector_url", false, true, &r->vector_url, errbuf,
                           errlen)) ||
            (err = get_str(src, name, e, "dashboard_url", false, true, &r->dashboard_url, errbuf,
                           errlen)) ||
            (err = get_str(src, name, e, "pg_url", false, false, &r->pg_url, errbuf, errlen)))
            goto out;
    }
    qsort(m->v, m->n, sizeof(*m->v), by_name);
out:
    json_decref(doc);
    if (err) {
        tq_regions_free(m);
        return err;
    }
    *out = m;
    return TQ_OK;
}

enum tq_err tq_regions_load(const char *path, struct tq_regions **out, char *errbuf,
                            size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return bad(errbuf, errlen, "TQ_REGIONS_FILE %s: cannot read the region map", path);
    char *text = NULL;
    size_t len = 0, cap = 0;
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (len + got + 1 > cap) {
            cap = (len + got + 1) * 2;
            if (cap > (1u << 20)) {
                fclose(f);
                free(text);
                return bad(errbuf, errlen, "TQ_REGIONS_FILE %s: larger than 1 MiB", path);
            }
            text = tq_xrealloc(text, cap);
        }
        memcpy(text + len, chunk, got);
        len += got;
    }
    bool rerr = ferror(f);
    fclose(f);
    if (rerr) {
        free(text);
        return bad(errbuf, errlen, "TQ_REGIONS_FILE %s: cannot read the region map", path);
    }
    if (!text)
        text = tq_xstrdup("");
    text[len] = '\0';
    char src[600];
    snprintf(src, sizeof(src), "TQ_REGIONS_FILE %s", path);
    enum tq_err err = tq_regions_parse(text, src, out, errbuf, errlen);
    free(text);
    return err;
}

const struct tq_region *tq_regions_find(const struct tq_regions *m, const char *name)
{
    if (!m || !name)
        return NULL;
    struct tq_region key = {.name = (char *)name};
    return bsearch(&key, m->v, m->n, sizeof(*m->v), by_name);
}

const char *tq_region_field(const struct tq_region *r, const char *field)
{
    const char *v;
    if (strcmp(field, "s3_region") == 0)
        v = r->s3_region;
    else if (strcmp(field, "s3_endpoint") == 0)
        v = r->s3_endpoint;
    else if (strcmp(field, "vector_url") == 0)
        v = r->vector_url;
    else if (strcmp(field, "dashboard_url") == 0)
        v = r->dashboard_url;
    else
        return NULL;
    return v ? v : "";
}
