/*
 * What notify.c (the "notify" step) and dispatch.c (notifications derived
 * from audit events) share: text from tenants never becomes markup or a
 * header. Pure functions, any thread.
 */
#ifndef WK_NOTIFY_H
#define WK_NOTIFY_H

#include <stdbool.h>

#include "tq/util.h"

/* Slack's mrkdwn control characters (&, <, >) escaped; caller frees. */
char *wk_notify_slack_escape(const char *s);
/* An e-mail header value: as is when printable ASCII, else RFC 2047 encoded-words. */
void wk_notify_header_value(struct tq_buf *b, const char *v);
/* A plain addr-spec (local@domain) and nothing else. */
bool wk_notify_address_ok(const char *a);

#endif
