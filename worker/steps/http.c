/*
 * Step "http": one HTTP request through the worker's curl multi, for SaaS
 * APIs we cannot run ourselves (vector-DB namespace, monitoring dashboard).
 * Params: method (PUT), url, headers {name: value}, body (any JSON), expect
 * [statuses] (200, 201, 204), idempotency_key ("<job id>/<step>"),
 * timeout_ms. The undo is the same kind with the pipeline's undo.params
 * (typically DELETE, expect [200, 204, 404]).
 * Idempotency: every request carries an Idempotency-Key derived from the job
 * and step, so a repeat is answered with the first result; a DELETE of
 * something absent (404) is success when expected. Header values may hold
 * tokens: they are never logged, echoed or stored in the output.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../step.h"
#include "tq/util.h"

#define BODY_MAX (64 * 1024)

struct req {
    CURL *e;
    struct curl_slist *hdrs;
    char *body;
    struct tq_buf resp;
    bool truncated;
    struct wk_step *s;
};

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    struct req *r = arg;
    size_t len = size * n;
    if (r->resp.len < BODY_MAX)
        tq_buf_append(&r->resp, p, len < BODY_MAX - r->resp.len ? len : BODY_MAX - r->resp.len);
    if (r->resp.len >= BODY_MAX)
        r->truncated = true;
    return len;
}

static void req_free(struct req *r)
{
    curl_slist_free_all(r->hdrs);
    curl_easy_cleanup(r->e);
    free(r->body);
    tq_buf_cleanup(&r->resp);
    free(r);
}

static bool expected(const json_t *expect, long code, bool undo)
{
    if (!json_is_array(expect) || json_array_size(expect) == 0)
        return code == 200 || code == 201 || code == 204 || (undo && code == 404);
    size_t i;
    json_t *v;
    json_array_foreach(expect, i, v) if (json_integer_value(v) == code) return true;
    return false;
}

static void done(CURL *e, CURLcode rc, void *arg)
{
    struct req *r = arg;
    struct wk_step *s = r->s;
    s->kind_data = NULL;
    long code = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    const char *method = json_string_value(json_object_get(s->params, "method"));
    enum tq_err err = TQ_OK;
    if (rc == CURLE_ABORTED_BY_CALLBACK) {
        snprintf(s->errstr, sizeof(s->errstr), "request aborted");
        err = TQ_ECANCELED;
    } else if (rc != CURLE_OK) {
        /* the URL is configuration, not a secret; curl's message names host and cause */
        snprintf(s->errstr, sizeof(s->errstr), "%s request failed: %s", method ? method : "PUT",
                 curl_easy_strerror(rc));
        err = TQ_EIO;
        s->unsent = wk_curl_unsent(rc);
    } else {
        json_object_set_new(s->output, "status", json_integer(code));
        json_error_t je;
        json_t *body = r->resp.len && !r->truncated ? json_loadb(r->resp.data, r->resp.len, 0, &je)
                                                    : NULL;
        if (body)
            json_object_set_new(s->output, "response", body);
        if (!expected(json_object_get(s->params, "expect"), code, s->undo)) {
            snprintf(s->errstr, sizeof(s->errstr), "%s answered HTTP %ld: %.120s",
                     method ? method : "PUT", code, r->resp.data ? r->resp.data : "");
            err = code >= 500 || code == 429 || code == 408 ? TQ_EIO : TQ_ESTEP;
        }
    }
    req_free(r);
    wk_step_done(s, err);
}

static enum tq_err start(struct wk_step *s)
{
    const json_t *p = s->params;
    const char *url = json_string_value(json_object_get(p, "url"));
    const char *method = json_string_value(json_object_get(p, "method"));
    if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)) {
        snprintf(s->errstr, sizeof(s->errstr), "params.url must be an http(s) URL");
        return TQ_EINVALID;
    }
    struct req *r = tq_xcalloc(1, sizeof(*r));
    r->s = s;
    tq_buf_init(&r->resp);
    r->e = curl_easy_init();
    if (!r->e) {
        free(r);
        return TQ_ENOMEM;
    }
    curl_easy_setopt(r->e, CURLOPT_URL, url);
    curl_easy_setopt(r->e, CURLOPT_CUSTOMREQUEST, method ? method : "PUT");
    curl_easy_setopt(r->e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(r->e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->e, CURLOPT_PROTOCOLS_STR, "http,https");
    json_int_t to = json_integer_value(json_object_get(p, "timeout_ms"));
    curl_easy_setopt(r->e, CURLOPT_TIMEOUT_MS, (long)(to > 0 ? to : 30000));
    const json_t *body = json_object_get(p, "body");
    if (body) {
        r->body = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
        curl_easy_setopt(r->e, CURLOPT_POSTFIELDS, r->body);
        r->hdrs = curl_slist_append(r->hdrs, "Content-Type: application/json");
    }
    char key[160];
    const char *k = json_string_value(json_object_get(p, "idempotency_key"));
    if (k)
        snprintf(key, sizeof(key), "Idempotency-Key: %s", k);
    else
        snprintf(key, sizeof(key), "Idempotency-Key: %lld/%s%s", (long long)s->claim->job_id,
                 s->def->name, s->undo ? "/undo" : "");
    r->hdrs = curl_slist_append(r->hdrs, key);
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)json_object_get(p, "headers"), name, v) {
        if (!json_is_string(v) || strpbrk(name, ":\r\n") || strpbrk(json_string_value(v), "\r\n")) {
            snprintf(s->errstr, sizeof(s->errstr), "params.headers.%s: must be a one-line string",
                     name);
            req_free(r);
            return TQ_EINVALID;
        }
        char *h = tq_xasprintf("%s: %s", name, json_string_value(v));
        r->hdrs = curl_slist_append(r->hdrs, h);
        memset(h, 0, strlen(h));
        free(h);
    }
    curl_easy_setopt(r->e, CURLOPT_HTTPHEADER, r->hdrs);
    s->kind_data = r;
    json_object_set_new(s->output, "method", json_string(method ? method : "PUT"));
    json_object_set_new(s->output, "url", json_string(url));
    if (wk_curl_start(s->curl, r->e, done, r) != TQ_OK) {
        s->kind_data = NULL;
        req_free(r);
        snprintf(s->errstr, sizeof(s->errstr), "could not start the request");
        return TQ_EIO;
    }
    return TQ_OK;
}

static void cancel(struct wk_step *s)
{
    struct req *r = s->kind_data;
    if (r)
        wk_curl_abort(s->curl, r->e);   /* runs done() with CURLE_ABORTED_BY_CALLBACK */
}

const struct wk_step_ops wk_step_http = {"http", start, cancel};
