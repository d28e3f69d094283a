/*
 * Step "s3_bucket": the tenant's object-storage bucket through the S3 API,
 * and the small S3 client (wk_s3_*) that check_s3.c uses too. Requests are
 * path-style (<endpoint>/<bucket>[/<key>]), signed by libcurl's AWS SigV4
 * and run on the worker's curl multi, one at a time per step: each step is a
 * little state machine advanced from the transfer's completion callback.
 *
 * Run:  PUT bucket -> PUT ?tagging= (the five cost tags) -> PUT ?lifecycle=
 *       (transition to GLACIER after the tier's archive_after_days).
 * Undo: ListObjectsV2 -> DELETE each object -> list again ... -> DELETE bucket.
 * Every request asserts a state rather than a change, so running either
 * twice leaves one effect: an existing bucket of ours counts as created
 * (200 in us-east-1, 409 BucketAlreadyOwnedByYou elsewhere); tagging and
 * lifecycle PUTs replace the whole set with the same set; DeleteObject
 * answers 204 for a missing key; 404 NoSuchBucket ends the undo as done.
 *
 * Params (all optional; the environment variable is the fallback):
 *   endpoint   TQ_S3_ENDPOINT       http(s)://host:port, no credentials in it
 *   region     TQ_S3_REGION         signing region, default us-east-1
 *   access_key TQ_S3_ACCESS_KEY
 *   secret_key TQ_S3_SECRET_KEY     never copied into output, errstr or logs
 *   bucket     default rag-<tenant id>-documents
 *   environment TQ_ENVIRONMENT      the Environment tag, default "dev"
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../worker.h"
#include "tq/request.h"
#include "tq/util.h"

/* ------------------------------------------------------------ client API */

/*
 * The S3 client shared with check_s3.c (which repeats these declarations:
 * worker.h is not ours to extend). Loop thread only.
 *
 * wk_s3_new() reads the connection params (above) from s->params; on error
 * it fills s->errstr and returns TQ_EINVALID. wk_s3_send() starts one request
 * (path "/<bucket>" + key_path, query written as AWS's canonical form, e.g.
 * "tagging="); TQ_OK means cb runs exactly once, also when aborted. Only one
 * request is in flight per client. wk_s3_abort() ends it now (cb runs before
 * it returns); false when nothing was in flight. wk_s3_error() classifies the
 * last response that was not a success: TQ_ECANCELED (aborted), TQ_EIO
 * (connection error or 5xx: worth a retry), TQ_ESTEP (other status, with
 * the S3 error Code), and writes "what: status Code" into errstr.
 */
struct wk_s3;
typedef void wk_s3_cb(struct wk_s3 *c, void *arg);
enum tq_err wk_s3_new(struct wk_step *s, struct wk_s3 **out);
void wk_s3_free(struct wk_s3 *c);
const char *wk_s3_bucket(const struct wk_s3 *c);
const char *wk_s3_environment(const struct wk_s3 *c);
enum tq_err wk_s3_send(struct wk_s3 *c, const char *what, const char *method,
                       const char *key, const char *query, const char *body, size_t len,
                       bool checksum, wk_s3_cb *cb, void *arg);
bool wk_s3_abort(struct wk_s3 *c);
bool wk_s3_aborted(const struct wk_s3 *c);
long wk_s3_status(const struct wk_s3 *c);          /* 0: no HTTP answer */
const char *wk_s3_code(const struct wk_s3 *c);     /* S3 error Code, "" if none */
const char *wk_s3_body(const struct wk_s3 *c, size_t *len);   /* capped, NUL-terminated */
uint64_t wk_s3_ms(const struct wk_s3 *c);          /* duration of the last request */
enum tq_err wk_s3_error(const struct wk_s3 *c, char *errstr, size_t errlen);
/* Text of the first <tag>...</tag> in [p, end), entities decoded; caller frees. NULL if absent. */
char *wk_s3_xml_text(const char *p, const char *end, const char *tag);
/* The five cost tags DESIGN.md §1 puts on every resource. Values borrowed from claim/c. */
#define WK_S3_NTAGS 5
struct wk_s3_tag {
    const char *key;
    char value[128];
};
enum tq_err wk_s3_cost_tags(const struct wk_s3 *c, const struct tq_claim *claim,
                            struct wk_s3_tag tags[WK_S3_NTAGS], char *errstr, size_t errlen);

/* ------------------------------------------------------------ client */

#define S3NS "http://s3.amazonaws.com/doc/2006-03-01/"
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

/* A param string, else the environment variable, else def; "" counts as unset. */
static const char *param(const struct wk_step *s, const char *name, const char *env,
                         const char *def)
{
    const char *v = json_string_value(json_object_get(s->params, name));
    if (v && *v)
        return v;
    v = env ? getenv(env) : NULL;
    if (v && *v)
        return v;
    return def;
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
    const char *endpoint = param(s, "endpoint", "TQ_S3_ENDPOINT", NULL);
    const char *region = param(s, "region", "TQ_S3_REGION", "us-east-1");
    const char *ak = param(s, "access_key", "TQ_S3_ACCESS_KEY", NULL);
    const char *sk = param(s, "secret_key", "TQ_S3_SECRET_KEY", NULL);
    const char *environment = param(s, "environment", "TQ_ENVIRONMENT", "dev");
    char defbucket[TQ_TENANT_ID_MAX + 32];
    snprintf(defbucket, sizeof(defbucket), "rag-%s-documents", s->claim->tenant_id);
    const char *bucket = param(s, "bucket", NULL, defbucket);

    if (!endpoint) {
        snprintf(s->errstr, sizeof(s->errstr), "cannot reach S3: params.endpoint is not set "
                 "(nor TQ_S3_ENDPOINT)");
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

/* ------------------------------------------------------------ the step */

enum phase {
    P_CREATE,
    P_TAGS,
    P_LIFECYCLE,
    U_LIST,
    U_DELETE_OBJECT,
    U_DELETE_BUCKET,
};

#define LIST_PAGE 100          /* keys per ListObjectsV2 page: keeps the answer under BODY_MAX */
#define NOT_EMPTY_RETRIES 5    /* DeleteBucket said BucketNotEmpty: list again this often */

struct run {
    struct wk_step *s;
    struct wk_s3 *c;
    enum phase ph;
    int archive_days;
    struct wk_s3_tag tags[WK_S3_NTAGS];
    bool existed;              /* the create found the bucket already there */
    char **keys;               /* the current list page, raw key names */
    size_t nkeys, next_key;
    long deleted;
    int not_empty;
    int requests;
};

static void on_response(struct wk_s3 *c, void *arg);

static void keys_free(struct run *r)
{
    for (size_t i = 0; i < r->nkeys; i++)
        free(r->keys[i]);
    free(r->keys);
    r->keys = NULL;
    r->nkeys = r->next_key = 0;
}

/* The step's only exit after start(): free first, wk_step_done() may free s. */
static void finish(struct run *r, enum tq_err err)
{
    struct wk_step *s = r->s;
    s->kind_data = NULL;
    keys_free(r);
    wk_s3_free(r->c);
    free(r);
    wk_step_done(s, err);
}

static enum tq_err request(struct run *r, const char *what, const char *method, const char *key,
                           const char *query, const char *body, bool checksum)
{
    r->requests++;
    return wk_s3_send(r->c, what, method, key, query, body, body ? strlen(body) : 0, checksum,
                      on_response, r);
}

static enum tq_err put_bucket(struct run *r)
{
    r->ph = P_CREATE;
    /* us-east-1 takes no location constraint; every other region needs one */
    char body[256] = "";
    if (strcmp(r->c->region, "us-east-1") != 0)
        snprintf(body, sizeof(body),
                 "<CreateBucketConfiguration xmlns=\"" S3NS "\"><LocationConstraint>%s"
                 "</LocationConstraint></CreateBucketConfiguration>", r->c->region);
    return request(r, "PUT bucket", "PUT", NULL, NULL, body, false);
}

static void xml_escape(struct tq_buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            tq_buf_puts(b, "&amp;");
            break;
        case '<':
            tq_buf_puts(b, "&lt;");
            break;
        case '>':
            tq_buf_puts(b, "&gt;");
            break;
        case '"':
            tq_buf_puts(b, "&quot;");
            break;
        default:
            tq_buf_append(b, s, 1);
        }
    }
}

static enum tq_err put_tags(struct run *r)
{
    r->ph = P_TAGS;
    struct tq_buf b;
    tq_buf_init(&b);
    tq_buf_puts(&b, "<Tagging xmlns=\"" S3NS "\"><TagSet>");
    for (int i = 0; i < WK_S3_NTAGS; i++) {
        tq_buf_printf(&b, "<Tag><Key>%s</Key><Value>", r->tags[i].key);
        xml_escape(&b, r->tags[i].value);
        tq_buf_puts(&b, "</Value></Tag>");
    }
    tq_buf_puts(&b, "</TagSet></Tagging>");
    /* PutBucketTagging replaces the whole set: the same set twice is one effect */
    enum tq_err err = request(r, "PUT bucket tagging", "PUT", NULL, "tagging=", b.data, true);
    tq_buf_cleanup(&b);
    return err;
}

static enum tq_err put_lifecycle(struct run *r)
{
    r->ph = P_LIFECYCLE;
    char body[512];
    snprintf(body, sizeof(body),
             "<LifecycleConfiguration xmlns=\"" S3NS "\"><Rule><ID>tenantq-archive</ID>"
             "<Filter><Prefix></Prefix></Filter><Status>Enabled</Status>"
             "<Transition><Days>%d</Days><StorageClass>GLACIER</StorageClass></Transition>"
             "</Rule></LifecycleConfiguration>", r->archive_days);
    return request(r, "PUT bucket lifecycle", "PUT", NULL, "lifecycle=", body, true);
}

static enum tq_err list_objects(struct run *r)
{
    r->ph = U_LIST;
    keys_free(r);
    /* parameters in canonical (sorted) order: curl 7.88 signs the query as written */
    char q[96];
    snprintf(q, sizeof(q), "encoding-type=url&list-type=2&max-keys=%d", LIST_PAGE);
    return request(r, "list bucket objects", "GET", NULL, q, NULL, false);
}

static enum tq_err delete_bucket(struct run *r)
{
    r->ph = U_DELETE_BUCKET;
    return request(r, "DELETE bucket", "DELETE", NULL, NULL, NULL, false);
}

/* encoding-type=url keys: '+' is a space, %XX a byte. */
static char *url_decode(const char *s)
{
    struct tq_buf b;
    tq_buf_init(&b);
    for (const char *p = s; *p; p++) {
        if (*p == '+') {
            tq_buf_append(&b, " ", 1);
        } else if (*p == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
            char ch = (char)strtoul((char[3]){p[1], p[2], 0}, NULL, 16);
            tq_buf_append(&b, &ch, 1);
            p += 2;
        } else {
            tq_buf_append(&b, p, 1);
        }
    }
    return tq_buf_take(&b, NULL);
}

static void parse_keys(struct run *r)
{
    size_t len;
    const char *body = wk_s3_body(r->c, &len);
    const char *p = body, *end = body + len;
    size_t cap = 0;
    while ((p = strstr(p, "<Contents>")) && p < end) {
        const char *ce = strstr(p, "</Contents>");
        if (!ce)
            break;   /* cut off at the cap: the next listing picks it up */
        char *k = wk_s3_xml_text(p, ce, "Key");
        if (k) {
            if (r->nkeys == cap) {
                cap = cap ? cap * 2 : 16;
                r->keys = tq_xrealloc(r->keys, cap * sizeof(*r->keys));
            }
            r->keys[r->nkeys++] = url_decode(k);
            free(k);
        }
        p = ce;
    }
}

static enum tq_err next_object(struct run *r)
{
    if (r->next_key < r->nkeys) {
        r->ph = U_DELETE_OBJECT;
        return request(r, "DELETE object", "DELETE", r->keys[r->next_key++], NULL, NULL, false);
    }
    /* page done: list again from the start; deleted keys are gone from it */
    return list_objects(r);
}

static void succeed(struct run *r)
{
    json_t *o = r->s->output;
    json_object_set_new(o, "bucket", json_string(wk_s3_bucket(r->c)));
    if (!r->s->undo) {
        json_t *tags = json_object();
        for (int i = 0; i < WK_S3_NTAGS; i++)
            json_object_set_new(tags, r->tags[i].key, json_string(r->tags[i].value));
        json_object_set_new(o, "tags", tags);
        json_object_set_new(o, "archive_after_days", json_integer(r->archive_days));
        json_object_set_new(o, "region", json_string(r->c->region));
        json_object_set_new(o, "already_existed", json_boolean(r->existed));
    } else {
        json_object_set_new(o, "objects_deleted", json_integer(r->deleted));
        json_object_set_new(o, "existed", json_boolean(r->existed));
    }
    json_object_set_new(o, "requests", json_integer(r->requests));
    finish(r, TQ_OK);
}

static void on_response(struct wk_s3 *c, void *arg)
{
    struct run *r = arg;
    struct wk_step *s = r->s;
    long st = wk_s3_status(c);
    const char *code = wk_s3_code(c);
    bool ok = !wk_s3_aborted(c) && st >= 200 && st < 300;
    bool no_bucket = st == 404 && strcmp(code, "NoSuchBucket") == 0;
    enum tq_err err = TQ_OK;

    switch (r->ph) {
    case P_CREATE:
        /* 200 (us-east-1 answers 200 again to its owner), or 409 "already yours" elsewhere */
        if (ok || (st == 409 && strcmp(code, "BucketAlreadyOwnedByYou") == 0)) {
            r->existed = !ok;
            err = put_tags(r);
        } else if (st == 409 && strcmp(code, "BucketAlreadyExists") == 0) {
            snprintf(s->errstr, sizeof(s->errstr), "cannot create bucket %s: the name belongs to "
                     "another account (409 BucketAlreadyExists)", wk_s3_bucket(c));
            err = TQ_ESTEP;
        } else {
            err = wk_s3_error(c, s->errstr, sizeof(s->errstr));
        }
        break;
    case P_TAGS:
        err = ok ? put_lifecycle(r) : wk_s3_error(c, s->errstr, sizeof(s->errstr));
        break;
    case P_LIFECYCLE:
        if (!ok) {
            err = wk_s3_error(c, s->errstr, sizeof(s->errstr));
            break;
        }
        succeed(r);
        return;
    case U_LIST:
        if (no_bucket) {   /* nothing to undo: the bucket is already gone */
            succeed(r);
            return;
        }
        if (!ok) {
            err = wk_s3_error(c, s->errstr, sizeof(s->errstr));
            break;
        }
        r->existed = true;
        parse_keys(r);
        err = r->nkeys ? next_object(r) : delete_bucket(r);
        break;
    case U_DELETE_OBJECT:
        if (no_bucket) {   /* deleted behind our back meanwhile */
            succeed(r);
            return;
        }
        if (!ok) {         /* DeleteObject answers 204 even for a missing key */
            err = wk_s3_error(c, s->errstr, sizeof(s->errstr));
            break;
        }
        r->deleted++;
        err = next_object(r);
        break;
    case U_DELETE_BUCKET:
        if (ok || no_bucket) {
            succeed(r);
            return;
        }
        if (st == 409 && strcmp(code, "BucketNotEmpty") == 0 && ++r->not_empty <= NOT_EMPTY_RETRIES) {
            err = list_objects(r);   /* someone wrote meanwhile: empty it again */
            break;
        }
        err = wk_s3_error(c, s->errstr, sizeof(s->errstr));
        if (st == 409 && strcmp(code, "BucketNotEmpty") == 0)
            snprintf(s->errstr, sizeof(s->errstr), "cannot delete bucket %s: still not empty after "
                     "%d passes (versioned objects, or a writer that keeps adding)",
                     wk_s3_bucket(c), NOT_EMPTY_RETRIES);
        break;
    }
    if (err)
        finish(r, err);
}

static enum tq_err start(struct wk_step *s)
{
    struct run *r = tq_xcalloc(1, sizeof(*r));
    r->s = s;
    enum tq_err err = wk_s3_new(s, &r->c);
    if (err)
        goto fail;
    if (!s->undo) {
        const struct tq_tier_info *ti = tq_tier_lookup(s->claim->tier);
        if ((err = wk_s3_cost_tags(r->c, s->claim, r->tags, s->errstr, sizeof(s->errstr))))
            goto fail;
        r->archive_days = ti->archive_after_days;
        err = put_bucket(r);
    } else {
        err = list_objects(r);
    }
    if (err)
        goto fail;
    s->kind_data = r;
    return TQ_OK;
fail:
    wk_s3_free(r->c);
    free(r);
    return err;
}

/* Timeout or shutdown: abort the request in flight; its callback ends the step. */
static void cancel(struct wk_step *s)
{
    struct run *r = s->kind_data;
    if (!r)
        return;
    if (!wk_s3_abort(r->c)) {
        snprintf(s->errstr, sizeof(s->errstr), "cancelled");
        finish(r, TQ_ECANCELED);
    }
}

const struct wk_step_ops wk_step_s3_bucket = {"s3_bucket", start, cancel};
