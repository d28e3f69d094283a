/*
 * Notifications of the "notify" step: a Slack-compatible webhook (POST
 * {"text": ...}) and an e-mail over SMTP, both through the worker's curl
 * multi. A notification that fails is reported to the step and logged; it
 * never fails a tenant. Outcomes the engine records (failures, blocks,
 * warnings, drift, rollback failures, activations, approvals) are told by
 * dispatch.c from the audit events instead; it shares the escaping here.
 * Configuration: TQ_NOTIFY_WEBHOOK_URL, TQ_SMTP_URL (smtp://host:port),
 * TQ_NOTIFY_FROM, TQ_NOTIFY_TO (default: the tenant's owner).
 * Text from tenants (the name) never becomes markup or a header: the webhook
 * text escapes Slack's control characters (&, <, >), e-mail header values
 * with anything but printable ASCII become RFC 2047 encoded-words (so CR/LF
 * cannot start a header), and addresses that are not plain addr-specs are
 * refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "tq/log.h"
#include "tq/util.h"
#include "notify.h"
#include "worker.h"

struct send {
    CURL *e;
    struct curl_slist *hdrs, *rcpt;
    struct wk_body body;   /* what is sent (notify.h) */
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
    free(x->body.data);
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

/* Slack's mrkdwn: &, < and > are its only control characters (links, mentions). */
size_t wk_notify_discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

size_t wk_notify_read(char *buf, size_t size, size_t n, void *arg)
{
    struct wk_body *b = arg;
    size_t room = size * n, left = b->len - b->off;
    size_t k = left < room ? left : room;
    memcpy(buf, b->data + b->off, k);
    b->off += k;
    return k;
}

char *wk_notify_slack_escape(const char *s)
{
    struct tq_buf b;
    tq_buf_init(&b);
    for (; *s; s++) {
        if (*s == '&')
            tq_buf_puts(&b, "&amp;");
        else if (*s == '<')
            tq_buf_puts(&b, "&lt;");
        else if (*s == '>')
            tq_buf_puts(&b, "&gt;");
        else
            tq_buf_append(&b, s, 1);
    }
    size_t n;
    return tq_buf_take(&b, &n);
}

/*
 * A header value: kept as is when it is printable ASCII, otherwise RFC 2047
 * encoded-words (UTF-8, base64), each under 76 characters, folded with
 * CRLF SP, never splitting a UTF-8 sequence. CR and LF end up inside base64.
 */
void wk_notify_header_value(struct tq_buf *b, const char *v)
{
    bool plain = true;
    for (const unsigned char *p = (const unsigned char *)v; *p && plain; p++)
        plain = *p >= 0x20 && *p < 0x7f;
    if (plain && strlen(v) < 900) {
        tq_buf_puts(b, v);
        return;
    }
    const unsigned char *p = (const unsigned char *)v;
    size_t left = strlen(v);
    bool first = true;
    while (left > 0) {
        size_t n = left < 45 ? left : 45;
        while (n < left && n > 1 && (p[n] & 0xc0) == 0x80)   /* a continuation byte starts the next word */
            n--;
        unsigned char enc[4 * 46 / 3 + 4];
        EVP_EncodeBlock(enc, p, (int)n);
        tq_buf_printf(b, "%s=?UTF-8?B?%s?=", first ? "" : "\r\n ", enc);
        first = false;
        p += n;
        left -= n;
    }
}

/* A plain addr-spec (local@domain) and nothing else: no brackets, spaces or controls. */
bool wk_notify_address_ok(const char *a)
{
    const char *at = strchr(a, '@');
    if (!at || at == a || !at[1] || strchr(at + 1, '@') || strlen(a) > 254)
        return false;
    for (const unsigned char *p = (const unsigned char *)a; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f || strchr("<>()[]\\,;:\"", *p))
            return false;
    return true;
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
    char *line = tq_xasprintf("tenantq: tenant %s \"%s\" (%s, %s): %s%s%s", cl->tenant_id, cl->name,
                              cl->tier, cl->region, event, text && *text ? ": " : "",
                              text ? text : "");
    if (webhook_url && *webhook_url) {
        struct send *x = tq_xcalloc(1, sizeof(*x));
        x->webhook = true;
        x->e = curl_easy_init();
        char *shown = wk_notify_slack_escape(line);
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "text", shown, "tenant_id", cl->tenant_id,
                              "event", event, "tier", cl->tier);
        x->body.data = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        free(shown);
        if (!x->body.data)
            x->body.data = tq_xstrdup("{\"text\":\"tenantq: a notification could not be encoded\"}");
        x->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        curl_easy_setopt(x->e, CURLOPT_URL, webhook_url);
        curl_easy_setopt(x->e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(x->e, CURLOPT_POSTFIELDS, x->body.data);
        curl_easy_setopt(x->e, CURLOPT_HTTPHEADER, x->hdrs);
        curl_easy_setopt(x->e, CURLOPT_WRITEFUNCTION, wk_notify_discard);
        start_send(c, n, x);
    }
    const char *to = set->notify_to ? set->notify_to : cl->owner;
    const char *from = set->notify_from ? set->notify_from : "tenantq@localhost";
    if (smtp_url && *smtp_url && !(wk_notify_address_ok(to) && wk_notify_address_ok(from))) {
        snprintf(n->email_result, sizeof(n->email_result),
                 "failed: %s is not a plain e-mail address", wk_notify_address_ok(from) ? "the recipient"
                                                                          : "the sender");
        tq_warn("notification by e-mail %s", n->email_result);
    } else if (smtp_url && *smtp_url) {
        struct send *x = tq_xcalloc(1, sizeof(*x));
        x->e = curl_easy_init();
        char addr[300];
        snprintf(addr, sizeof(addr), "<%s>", to);
        x->rcpt = curl_slist_append(NULL, addr);
        struct tq_buf m;
        tq_buf_init(&m);
        tq_buf_printf(&m, "From: tenantq <%s>\r\nTo: <%s>\r\nSubject: ", from, to);
        char *subject = tq_xasprintf("[tenantq] %s %s: %s", cl->tenant_id, event, cl->name);
        wk_notify_header_value(&m, subject);
        free(subject);
        tq_buf_printf(&m, "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                          "Content-Transfer-Encoding: 8bit\r\n\r\n");
        /* The body is text: CR and LF inside it become line ends, nothing more. */
        for (const char *p = line; *p; p++) {
            if (*p == '\r' || *p == '\n')
                tq_buf_puts(&m, "\r\n");
            else
                tq_buf_append(&m, p, 1);
        }
        tq_buf_puts(&m, "\r\n");
        x->body.data = tq_buf_take(&m, &x->body.len);
        snprintf(addr, sizeof(addr), "<%s>", from);
        curl_easy_setopt(x->e, CURLOPT_URL, smtp_url);
        curl_easy_setopt(x->e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
        curl_easy_setopt(x->e, CURLOPT_MAIL_FROM, addr);
        curl_easy_setopt(x->e, CURLOPT_MAIL_RCPT, x->rcpt);
        curl_easy_setopt(x->e, CURLOPT_READFUNCTION, wk_notify_read);
        curl_easy_setopt(x->e, CURLOPT_READDATA, &x->body);
        curl_easy_setopt(x->e, CURLOPT_UPLOAD, 1L);
        start_send(c, n, x);
    }
    free(line);
    finish(n);
}
