/*
 * What notify.c (the "notify" step) and dispatch.c (notifications derived
 * from audit events) share: text from tenants never becomes markup or a
 * header. Pure functions, any thread.
 */
#ifndef WK_NOTIFY_H
#define WK_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>

#include "tq/util.h"

/* Slack's mrkdwn control characters (&, <, >) escaped; caller frees. */
char *wk_notify_slack_escape(const char *s);
/* An e-mail header value: as is when printable ASCII, else RFC 2047 encoded-words. */
void wk_notify_header_value(struct tq_buf *b, const char *v);
/* A request body libcurl reads (CURLOPT_READDATA = &body). */
struct wk_body {
    char *data;   /* owned by whoever holds the body */
    size_t off, len;
};
/* CURLOPT_READFUNCTION over a struct wk_body. */
size_t wk_notify_read(char *buf, size_t size, size_t n, void *body);
/* CURLOPT_WRITEFUNCTION that drops the answer. */
size_t wk_notify_discard(char *p, size_t size, size_t n, void *arg);

/* A plain addr-spec (local@domain) and nothing else. */
bool wk_notify_address_ok(const char *a);

#endif
