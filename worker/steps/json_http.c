/* See json_http.h. */
#include "../step.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BODY_MAX (256 * 1024)

void wk_jh_init(struct wk_jh *h, struct wk_step *s)
{
    memset(h, 0, sizeof(*h));
    h->s = s;
    tq_buf_init(&h->resp);
}

static void reset(struct wk_jh *h)
{
    curl_slist_free_all(h->hdrs);
    h->hdrs = NULL;
    if (h->e)
        curl_easy_cleanup(h->e);
    h->e = NULL;
    free(h->body);
    h->body = NULL;
    json_decref(h->json);
    h->json = NULL;
    tq_buf_cleanup(&h->resp);
    tq_buf_init(&h->resp);
}

void wk_jh_cleanup(struct wk_jh *h)
{
    reset(h);
    tq_buf_cleanup(&h->resp);
}

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    struct wk_jh *h = arg;
    size_t len = size * n;
    if (h->resp.len + len > BODY_MAX)
        return 0;   /* too big for a check: fail the transfer */
    tq_buf_append(&h->resp, p, len);
    return len;
}

static void done(CURL *e, CURLcode rc, void *arg)
{
    struct wk_jh *h = arg;
    h->rc = rc;
    h->status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &h->status);
    curl_off_t us = 0;
    curl_easy_getinfo(e, CURLINFO_TOTAL_TIME_T, &us);
    h->ms = (double)us / 1000.0;
    json_error_t je;
    if (rc == CURLE_OK && h->resp.len)
        h->json = json_loadb(h->resp.data, h->resp.len, 0, &je);
    curl_slist_free_all(h->hdrs);
    h->hdrs = NULL;
    curl_easy_cleanup(h->e);
    h->e = NULL;
    free(h->body);
    h->body = NULL;
    h->cb(h, h->arg);
}

enum tq_err wk_jh_send(struct wk_jh *h, const char *what, const char *method, const char *url,
                       const char *bearer, const json_t *body, long timeout_ms, wk_jh_cb *cb,
                       void *arg)
{
    struct wk_step *s = h->s;
    reset(h);
    snprintf(h->what, sizeof(h->what), "%s", what);
    if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)) {
        snprintf(s->errstr, sizeof(s->errstr), "%s: the URL must be http(s)", what);
        return TQ_EINVALID;
    }
    if (bearer && strpbrk(bearer, "\r\n")) {
        snprintf(s->errstr, sizeof(s->errstr), "%s: the token must be one line", what);
        return TQ_EINVALID;
    }
    h->e = curl_easy_init();
    if (!h->e)
        return TQ_ENOMEM;
    h->cb = cb;
    h->arg = arg;
    curl_easy_setopt(h->e, CURLOPT_URL, url);
    curl_easy_setopt(h->e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h->e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h->e, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(h->e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h->e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h->e, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 10000L);
    if (body) {
        h->body = json_dumps(body, JSON_COMPACT);
        curl_easy_setopt(h->e, CURLOPT_POSTFIELDS, h->body);
        h->hdrs = curl_slist_append(h->hdrs, "Content-Type: application/json");
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(h->e, CURLOPT_HTTPGET, 1L);
    }
    h->hdrs = curl_slist_append(h->hdrs, "Accept: application/json");
    if (bearer && *bearer) {
        char *line = tq_xasprintf("Authorization: Bearer %s", bearer);
        h->hdrs = curl_slist_append(h->hdrs, line);
        memset(line, 0, strlen(line));
        free(line);
    }
    curl_easy_setopt(h->e, CURLOPT_HTTPHEADER, h->hdrs);
    enum tq_err err = wk_curl_start(s->curl, h->e, done, h);
    if (err) {
        snprintf(s->errstr, sizeof(s->errstr), "%s: could not start the transfer", what);
        reset(h);
    }
    return err;
}

bool wk_jh_abort(struct wk_jh *h)
{
    if (!h->e)
        return false;
    wk_curl_abort(h->s->curl, h->e);
    return true;
}

enum tq_err wk_jh_result(struct wk_jh *h)
{
    struct wk_step *s = h->s;
    if (h->rc == CURLE_ABORTED_BY_CALLBACK) {
        snprintf(s->errstr, sizeof(s->errstr), "%s: aborted", h->what);
        return TQ_ECANCELED;
    }
    if (h->rc != CURLE_OK) {
        snprintf(s->errstr, sizeof(s->errstr), "%s failed: %s", h->what,
                 curl_easy_strerror(h->rc));
        s->unsent = wk_curl_unsent(h->rc);
        return TQ_EIO;
    }
    if (h->status >= 200 && h->status < 300)
        return TQ_OK;
    const char *msg = json_string_value(json_object_get(h->json, "error"));
    snprintf(s->errstr, sizeof(s->errstr), "%s answered HTTP %ld%s%.80s", h->what, h->status,
             msg ? ": " : "", msg ? msg : "");
    return h->status >= 500 || h->status == 429 || h->status == 408 ? TQ_EIO : TQ_ESTEP;
}

char *wk_jh_escape(const char *text)
{
    struct tq_buf b;
    tq_buf_init(&b);
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~')
            tq_buf_append(&b, (const char *)p, 1);
        else
            tq_buf_printf(&b, "%%%02X", *p);
    }
    tq_buf_append(&b, "", 0);
    char *out = tq_buf_take(&b, NULL);
    return out ? out : tq_xstrdup("");
}
