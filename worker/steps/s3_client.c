/*
 * The S3 client of s3_client.h: connection params, SigV4 through libcurl
 * (x-amz-content-sha256 and x-amz-checksum-sha256 added here: curl 7.88
 * does not), response capture and S3 error parsing.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../step.h"
#include "tq/request.h"
#include "tq/util.h"

#define BODY_MAX (64 * 1024)          /* response bytes we keep */
#define CONNECT_TIMEOUT_MS 10000L
#define REQUEST_TIMEOUT_MS 60000L     /* the step's own timeout usually ends it sooner */

struct wk_s3 {
    struct wk_step *s;
    char *endpoint;       /* no trailing '/' */
    char *region;
    char *access_key;
    char *secret_key;     /* wiped on free */
    char *bucket;
    char *environment;
    char sigv4[96];

    /* the request in flight, then its response */
    CURL *e;
    struct curl_slist *hdrs;
    wk_s3_cb *cb;
    void *arg;
    char what[64];
    uint64_t t0_ms;
    uint64_t ms;
    CURLcode rc;
    long status;
    bool aborted;
    struct tq_buf body;
    bool truncated;
    char code[64];
    char curl_err[CURL_ERROR_SIZE];
};

/* A param string, else the worker's setting, else def; "" counts as unset. */
static const char *param(const struct wk_step *s, const char *name, const char *setting,
                         const char *def)
{
    const char *v = json_string_value(json_object_get(s->params, name));
    if (v && *v)
        return v;
    return setting ? setting : def;
}

/* S3 bucket naming rules (lowercase, digits, '-', '.'; 3-63; not an IP). */
static bool bucket_name_ok(const char *b)
{
    size_t n = strlen(b);
    if (n < 3 || n > 63 || !isalnum((unsigned char)b[0]) || !isalnum((unsigned char)b[n - 1]))
        return false;
    int dots = 0;
    bool digits_dots = true;
    for (const char *p = b; *p; p++) {
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-' || *p == '.'))
            return false;
        if (*p == '.' && p[1] == '.')
            return false;
        dots += *p == '.';
        digits_dots &= isdigit((unsigned char)*p) || *p == '.';
    }
    return !(digits_dots && dots == 3);
}

enum tq_err wk_s3_new(struct wk_step *s, struct wk_s3 **out)
{
    *out = NULL;
    s->unsent = true;   /* until a request may have reached S3 (on_done) */
    /* Where the bucket lives comes from the tenant's region (the pipeline's
       ${region.*}), never from a fleet-wide default. */
    const char *endpoint = param(s, "endpoint", NULL, NULL);
    const char *region = param(s, "region", NULL, NULL);
    const char *ak = param(s, "access_key", s->set->s3_access_key, NULL);
    const char *sk = param(s, "secret_key", s->set->s3_secret_key, NULL);
    const char *environment = param(s, "environment", s->set->environment, "dev");
    char defbucket[TQ_TENANT_ID_MAX + 32];
    snprintf(defbucket, sizeof(defbucket), "rag-%s-documents", s->claim->tenant_id);
    const char *bucket = param(s, "bucket", NULL, defbucket);

    if (!endpoint) {
        snprintf(s->errstr, sizeof(s->errstr), "cannot reach S3: params.endpoint is not set "
                 "(the tenant's region %s has no s3_endpoint in the region map?)",
                 s->claim->region);
        return TQ_EINVALID;
    }
    if (!region) {
        snprintf(s->errstr, sizeof(s->errstr), "cannot place the bucket: params.region is not "
                 "set (the tenant's region %s has no s3_region in the region map?)",
                 s->claim->region);
        return TQ_EINVALID;
    }
    const char *host = strncmp(endpoint, "http://", 7) == 0    ? endpoint + 7
                       : strncmp(endpoint, "https://", 8) == 0 ? endpoint + 8
                                                               : NULL;
    if (!host || !*host || strpbrk(endpoint, "?#") ||
        (strchr(host, '@') && strchr(host, '@') < host + strcspn(host, "/"))) {
        /* never echo it: a URL with "user:secret@" would leak through errstr */
        snprintf(s->errstr, sizeof(s->errstr), "cannot use params.endpoint: it must be "
                 "http(s)://host[:port][/path] without credentials, query or fragment");
        return TQ_EINVALID;
    }
    if (!ak || !sk) {
        snprintf(s->errstr, sizeof(s->errstr), "cannot sign S3 requests: params.%s is not set "
                 "(nor %s)", ak ? "secret_key" : "access_key",
                 ak ? "TQ_S3_SECRET_KEY" : "TQ_S3_ACCESS_KEY");
        return TQ_EINVALID;
    }
    if (strlen(region) > 32 || strspn(region, "abcdefghijklmnopqrstuvwxyz0123456789-") !=
                                   strlen(region)) {
        snprintf(s->errstr, sizeof(s->errstr), "cannot use params.region \"%.40s\": not a region "
                 "name", region);
        return TQ_EINVALID;
    }
    if (!bucket_name_ok(bucket)) {
        snprintf(s->errstr, sizeof(s->errstr), "cannot use bucket name \"%.70s\": S3 names are "
                 "3-63 lowercase letters, digits, '-' and '.'", bucket);
        return TQ_EINVALID;
    }
    if (strlen(environment) > 100) {
        snprintf(s->errstr, sizeof(s->errstr), "cannot use params.environment: longer than 100");
        return TQ_EINVALID;
    }
    struct wk_s3 *c = tq_xcalloc(1, sizeof(*c));
    c->s = s;
    c->endpoint = tq_xstrdup(endpoint);
    size_t n = strlen(c->endpoint);
    while (n > 0 && c->endpoint[n - 1] == '/')
        c->endpoint[--n] = '\0';
    c->region = tq_xstrdup(region);
    c->access_key = tq_xstrdup(ak);
    c->secret_key = tq_xstrdup(sk);
    c->bucket = tq_xstrdup(bucket);
    c->environment = tq_xstrdup(environment);
    snprintf(c->sigv4, sizeof(c->sigv4), "aws:amz:%s:s3", c->region);
    tq_buf_init(&c->body);
    *out = c;
    return TQ_OK;
}

void wk_s3_free(struct wk_s3 *c)
{
    if (!c)
        return;
    TQ_ASSERT(!c->e);
    memset(c->secret_key, 0, strlen(c->secret_key));
    free(c->secret_key);
    free(c->access_key);
    free(c->endpoint);
    free(c->region);
    free(c->bucket);
    free(c->environment);
    tq_buf_cleanup(&c->body);
    free(c);
}

const char *wk_s3_bucket(const struct wk_s3 *c)
{
    return c->bucket;
}

const char *wk_s3_region(const struct wk_s3 *c)
{
    return c->region;
}

const char *wk_s3_environment(const struct wk_s3 *c)
{
    return c->environment;
}

static size_t on_write(char *p, size_t size, size_t n, void *arg)
{
    struct wk_s3 *c = arg;
    size_t len = size * n;
    size_t room = c->body.len < BODY_MAX ? BODY_MAX - c->body.len : 0;
    if (len > room)
        c->truncated = true;
    tq_buf_append(&c->body, p, len < room ? len : room);
    return len;   /* keep reading past the cap: the connection stays reusable */
}

/* Unreserved bytes stay, '/' stays, everything else %XX: what AWS signs for S3 paths. */
static void uri_encode(struct tq_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~' || *p == '/') {
            tq_buf_append(b, (const char *)p, 1);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            tq_buf_append(b, e, 3);
        }
    }
}

static void b64(const unsigned char *in, size_t n, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = '\0';
}

static void on_done(CURL *e, CURLcode rc, void *arg)
{
    struct wk_s3 *c = arg;
    c->rc = rc;
    c->aborted = rc == CURLE_ABORTED_BY_CALLBACK;
    /* one request that may have reached S3 makes the whole attempt "may have run" */
    if (!wk_curl_unsent(rc))
        c->s->unsent = false;
    c->status = 0;
    if (!c->aborted)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &c->status);
    c->ms = tq_mono_ms() - c->t0_ms;
    curl_easy_cleanup(e);
    curl_slist_free_all(c->hdrs);
    c->e = NULL;
    c->hdrs = NULL;
    c->code[0] = '\0';
    if (c->status >= 300 && c->body.data) {
        char *code = wk_s3_xml_text(c->body.data, c->body.data + c->body.len, "Code");
        if (code) {
            size_t i = 0;
            for (const char *p = code; *p && i + 1 < sizeof(c->code); p++)
                c->code[i++] = isprint((unsigned char)*p) ? *p : '?';
            c->code[i] = '\0';
            free(code);
        }
    }
    c->cb(c, c->arg);
}

enum tq_err wk_s3_send(struct wk_s3 *c, const char *what, const char *method,
                       const char *key, const char *query, const char *body, size_t len,
                       bool checksum, wk_s3_cb *cb, void *arg)
{
    TQ_ASSERT(!c->e);
    struct tq_buf url;
    tq_buf_init(&url);
    tq_buf_printf(&url, "%s/%s", c->endpoint, c->bucket);
    if (key) {
        tq_buf_puts(&url, "/");
        uri_encode(&url, key);
    }
    if (query)
        tq_buf_printf(&url, "?%s", query);

    /* The payload hash is ours to send (curl 7.88 signs but does not add it). */
    char sha[65], hdr[160];
    tq_sha256_hex(body ? body : "", body ? len : 0, sha);
    snprintf(hdr, sizeof(hdr), "x-amz-content-sha256: %s", sha);
    struct curl_slist *h = curl_slist_append(NULL, hdr);
    h = curl_slist_append(h, "Expect:");
    if (checksum) {
        /* AWS wants an integrity header on bucket configuration PUTs: the
         * SHA-256 we already have, base64 of its bytes, instead of Content-MD5. */
        unsigned char raw[32];
        for (int i = 0; i < 32; i++)
            raw[i] = (unsigned char)strtoul((char[3]){sha[2 * i], sha[2 * i + 1], 0}, NULL, 16);
        char enc[48];
        b64(raw, sizeof(raw), enc);
        snprintf(hdr, sizeof(hdr), "x-amz-checksum-sha256: %s", enc);
        h = curl_slist_append(h, hdr);
    }
    if (body && key)
        h = curl_slist_append(h, "Content-Type: application/octet-stream");
    else if (body && len > 0)
        h = curl_slist_append(h, "Content-Type: application/xml");
    else if (body)
        h = curl_slist_append(h, "Content-Type:");   /* no form type on an empty PUT */

    CURL *e = curl_easy_init();
    if (!e || !h) {
        curl_slist_free_all(h);
        if (e)
            curl_easy_cleanup(e);
        tq_buf_cleanup(&url);
        snprintf(c->s->errstr, sizeof(c->s->errstr), "could not %s: curl_easy_init failed", what);
        return TQ_EIO;
    }
    curl_easy_setopt(e, CURLOPT_URL, url.data);
    tq_buf_cleanup(&url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);   /* keys with "../" stay keys */
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, REQUEST_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "tenantq-worker");
    curl_easy_setopt(e, CURLOPT_AWS_SIGV4, c->sigv4);
    /* Separate options, not "key:secret" in USERPWD: no heap copy of the
     * secret to wipe, and a ':' in either part cannot split them wrongly. */
    curl_easy_setopt(e, CURLOPT_USERNAME, c->access_key);
    curl_easy_setopt(e, CURLOPT_PASSWORD, c->secret_key);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->curl_err);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
        if (body) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
            curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body);
        }
    }
    c->e = e;
    c->hdrs = h;
    c->cb = cb;
    c->arg = arg;
    snprintf(c->what, sizeof(c->what), "%s", what);
    c->t0_ms = tq_mono_ms();
    c->curl_err[0] = '\0';
    c->truncated = false;
    c->body.len = 0;
    if (c->body.data)
        c->body.data[0] = '\0';
    enum tq_err err = wk_curl_start(c->s->curl, e, on_done, c);
    if (err) {
        c->e = NULL;
        c->hdrs = NULL;
        curl_easy_cleanup(e);
        curl_slist_free_all(h);
        snprintf(c->s->errstr, sizeof(c->s->errstr), "could not %s: the curl multi refused "
                 "the transfer", what);
    }
    return err;
}

bool wk_s3_abort(struct wk_s3 *c)
{
    if (!c->e)
        return false;
    wk_curl_abort(c->s->curl, c->e);   /* runs on_done, and so the step's cb, now */
    return true;
}

bool wk_s3_aborted(const struct wk_s3 *c)
{
    return c->aborted;
}

long wk_s3_status(const struct wk_s3 *c)
{
    return c->status;
}

const char *wk_s3_code(const struct wk_s3 *c)
{
    return c->code;
}

const char *wk_s3_body(const struct wk_s3 *c, size_t *len)
{
    if (len)
        *len = c->body.len;
    return c->body.data ? c->body.data : "";
}

uint64_t wk_s3_ms(const struct wk_s3 *c)
{
    return c->ms;
}

enum tq_err wk_s3_error(const struct wk_s3 *c, char *errstr, size_t errlen)
{
    if (c->aborted) {
        snprintf(errstr, errlen, "cancelled during %s", c->what);
        return TQ_ECANCELED;
    }
    if (c->rc != CURLE_OK) {
        snprintf(errstr, errlen, "could not %s: %s", c->what,
                 c->curl_err[0] ? c->curl_err : curl_easy_strerror(c->rc));
        return TQ_EIO;
    }
    const char *sep = c->code[0] ? " " : "";
    if (c->status >= 500 || c->status < 200) {
        snprintf(errstr, errlen, "could not %s: %ld%s%s", c->what, c->status, sep, c->code);
        return TQ_EIO;
    }
    snprintf(errstr, errlen, "%s: %ld%s%s", c->what, c->status, sep, c->code);
    return TQ_ESTEP;
}

static void xml_decode(struct tq_buf *out, const char *p, const char *end)
{
    static const struct {
        const char *ent;
        char ch;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    while (p < end) {
        if (*p == '&') {
            bool hit = false;
            for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
                size_t n = strlen(ents[i].ent);
                if ((size_t)(end - p) >= n && strncmp(p, ents[i].ent, n) == 0) {
                    tq_buf_append(out, &ents[i].ch, 1);
                    p += n;
                    hit = true;
                    break;
                }
            }
            if (!hit && end - p > 3 && p[1] == '#') {
                char *q;
                unsigned long v = p[2] == 'x' ? strtoul(p + 3, &q, 16) : strtoul(p + 2, &q, 10);
                if (q < end && *q == ';' && v > 0 && v < 128) {
                    char ch = (char)v;
                    tq_buf_append(out, &ch, 1);
                    p = q + 1;
                    hit = true;
                }
            }
            if (hit)
                continue;
        }
        tq_buf_append(out, p, 1);
        p++;
    }
}

char *wk_s3_xml_text(const char *p, const char *end, const char *tag)
{
    char open[72], close[72], empty[72];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    snprintf(empty, sizeof(empty), "<%s/>", tag);
    size_t on = strlen(open), cn = strlen(close), en = strlen(empty);
    for (const char *q = p; q < end; q++) {
        if (*q != '<')
            continue;
        if ((size_t)(end - q) >= en && strncmp(q, empty, en) == 0)
            return tq_xstrdup("");
        if ((size_t)(end - q) < on || strncmp(q, open, on) != 0)
            continue;
        const char *v = q + on;
        for (const char *r = v; r + cn <= end; r++)
            if (*r == '<' && strncmp(r, close, cn) == 0) {
                struct tq_buf b;
                tq_buf_init(&b);
                xml_decode(&b, v, r);
                return tq_buf_take(&b, NULL);
            }
        return NULL;
    }
    return NULL;
}

enum tq_err wk_s3_cost_tags(const struct wk_s3 *c, const struct tq_claim *claim,
                            struct wk_s3_tag tags[WK_S3_NTAGS], char *errstr, size_t errlen)
{
    if (!tq_tier_lookup(claim->tier)) {
        snprintf(errstr, errlen, "cannot tag for tier \"%.20s\": not Gold, Silver or Bronze",
                 claim->tier);
        return TQ_EINVALID;
    }
    static const char *const keys[WK_S3_NTAGS] = {"TenantID", "Tier", "CostCenter", "ManagedBy",
                                                  "Environment"};
    for (int i = 0; i < WK_S3_NTAGS; i++)
        tags[i].key = keys[i];
    snprintf(tags[0].value, sizeof(tags[0].value), "%s", claim->tenant_id);
    snprintf(tags[1].value, sizeof(tags[1].value), "%s", claim->tier);
    snprintf(tags[2].value, sizeof(tags[2].value), "rag-platform-%s", claim->tier);
    for (char *p = tags[2].value; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    snprintf(tags[3].value, sizeof(tags[3].value), "tenantq");
    snprintf(tags[4].value, sizeof(tags[4].value), "%s", c->environment);
    return TQ_OK;
}
