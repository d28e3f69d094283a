/*
 * Notifications: a Slack-compatible webhook (POST {"text": ...}) and an
 * e-mail over SMTP, both through the worker's curl multi. Used by the
 * "notify" step (activation) and by the engine for failures, warnings,
 * blocked tenants and rollback failures. A notification that fails is
 * reported to the caller and logged; it never fails a tenant.
 * Configuration: TQ_NOTIFY_WEBHOOK_URL, TQ_SMTP_URL (smtp://host:port),
 * TQ_NOTIFY_FROM, TQ_NOTIFY_TO (default: the tenant's owner).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq/log.h"
#include "tq/util.h"
#include "worker.h"

struct send {
    CURL *e;
    struct curl_slist *hdrs, *rcpt;
    char *payload;
    size_t off, len;
    struct wk_notice *n;
    bool webhook;
};

struct wk_notice {
    int pending;
    char webhook_result[160];
    char email_result[160];
    wk_notify_cb *cb;
    void *arg;
};

static size_t sink(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

static size_t source(char *buf, size_t size, size_t n, void *arg)
{
    struct send *x = arg;
    size_t room = size * n, left = x->len - x->off;
    size_t k = left < room ? left : room;
    memcpy(buf, x->payload + x->off, k);
    x->off += k;
    return k;
}

static void finish(struct wk_notice *n)
{
    if (--n->pending > 0)
        return;
    if (n->cb)
        n->cb(n->webhook_result, n->email_result, n->arg);
    free(n);
}

static void sent(CURL *e, CURLcode rc, void *arg)
{
    struct send *x = arg;
    long code = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    char *out = x->webhook ? x->n->webhook_result : x->n->email_result;
    if (rc != CURLE_OK)
        snprintf(out, 160, "failed: %s", curl_easy_strerror(rc));
    else if (x->webhook && (code < 200 || code > 299))
        snprintf(out, 160, "failed: HTTP %ld", code);
    else
        snprintf(out, 160, "sent");
    if (strncmp(out, "failed", 6) == 0)
        tq_warn("notification by %s %s", x->webhook ? "webhook" : "e-mail", out);
    curl_slist_free_all(x->hdrs);
    curl_slist_free_all(x->rcpt);
    curl_easy_cleanup(x->e);
    struct wk_notice *n = x->n;
    free(x->payload);
    free(x);
    finish(n);
}

static void start_send(struct wk_curl *c, struct wk_notice *n, struct send *x)
{
    x->n = n;
    n->pending++;
    curl_easy_setopt(x->e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(x->e, CURLOPT_TIMEOUT_MS, 15000L);
    if (wk_curl_start(c, x->e, sent, x) != TQ_OK)
        sent(x->e, CURLE_FAILED_INIT, x);
}

void wk_notify(struct wk_curl *c, const struct wk_step_settings *set, const struct tq_claim *cl,
               const char *event, const char *text, const char *webhook_url,
               const char *smtp_url, wk_notify_cb *cb, void *arg)
{
    struct wk_notice *n = tq_xcalloc(1, sizeof(*n));
    n->cb = cb;
    n->arg = arg;
    n->pending = 1;   /* held until both transfers are queued */
    snprintf(n->webhook_result, sizeof(n->webhook_result), "not configured");
    snprintf(n->email_result, sizeof(n->email_result), "not configured");
    char *line = tq_xasprintf("tenantq: tenant %s (%s, %s): %s%s%s", cl->tenant_id, cl->tier,
                              cl->region, event, text && *text ? ": " : "", text ? text : "");
    if (webhook_url && *webhook_url) {
        struct send *x = tq_xcalloc(1, sizeof(*x));
        x->webhook = true;
        x->e = curl_easy_init();
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "text", line, "tenant_id", cl->tenant_id,
                              "event", event, "tier", cl->tier);
        x->payload = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        x->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        curl_easy_setopt(x->e, CURLOPT_URL, webhook_url);
        curl_easy_setopt(x->e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(x->e, CURLOPT_POSTFIELDS, x->payload);
        curl_easy_setopt(x->e, CURLOPT_HTTPHEADER, x->hdrs);
        curl_easy_setopt(x->e, CURLOPT_WRITEFUNCTION, sink);
        start_send(c, n, x);
    }
    const char *to = set->notify_to ? set->notify_to : cl->owner;
    const char *from = set->notify_from ? set->notify_from : "tenantq@localhost";
    if (smtp_url && *smtp_url) {
        struct send *x = tq_xcalloc(1, sizeof(*x));
        x->e = curl_easy_init();
        char addr[300];
        snprintf(addr, sizeof(addr), "<%s>", to);
        x->rcpt = curl_slist_append(NULL, addr);
        x->payload = tq_xasprintf("From: tenantq <%s>\r\nTo: <%s>\r\nSubject: [tenantq] %s %s\r\n"
                                  "Content-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n",
                                  from, to, cl->tenant_id, event, line);
        x->len = strlen(x->payload);
        snprintf(addr, sizeof(addr), "<%s>", from);
        curl_easy_setopt(x->e, CURLOPT_URL, smtp_url);
        curl_easy_setopt(x->e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
        curl_easy_setopt(x->e, CURLOPT_MAIL_FROM, addr);
        curl_easy_setopt(x->e, CURLOPT_MAIL_RCPT, x->rcpt);
        curl_easy_setopt(x->e, CURLOPT_READFUNCTION, source);
        curl_easy_setopt(x->e, CURLOPT_READDATA, x);
        curl_easy_setopt(x->e, CURLOPT_UPLOAD, 1L);
        start_send(c, n, x);
    }
    free(line);
    finish(n);
}
