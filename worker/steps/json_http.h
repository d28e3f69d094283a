/*
 * A small JSON-over-HTTP client for check kinds (check_vector, check_tags,
 * check_monitoring): one request at a time on the worker's curl multi
 * (wk_curl_start), a bearer token that is never logged or echoed, the
 * answer's status, body (parsed when JSON) and time. Loop thread only.
 */
#ifndef WK_JSON_HTTP_H
#define WK_JSON_HTTP_H

#include <stdbool.h>

#include "../step.h"
#include "tq/util.h"

struct wk_jh;
typedef void wk_jh_cb(struct wk_jh *h, void *arg);

struct wk_jh {
    struct wk_step *s;
    CURL *e;                 /* the transfer in flight, or NULL */
    struct curl_slist *hdrs;
    char *body;
    struct tq_buf resp;
    wk_jh_cb *cb;
    void *arg;
    char what[96];           /* "POST query" for error texts */
    /* the last answer */
    CURLcode rc;
    long status;
    double ms;               /* total time of the transfer */
    json_t *json;            /* parsed body (NULL when not JSON) */
};

void wk_jh_init(struct wk_jh *h, struct wk_step *s);
/*
 * Send method url (body: JSON or NULL; bearer: token or NULL); cb runs once
 * on the loop thread when the answer is in (or the transfer failed or was
 * aborted). TQ_EINVALID / TQ_ENOMEM with s->errstr set when it did not start.
 */
enum tq_err wk_jh_send(struct wk_jh *h, const char *what, const char *method, const char *url,
                       const char *bearer, const json_t *body, long timeout_ms, wk_jh_cb *cb,
                       void *arg);
/* Abort the transfer in flight (its cb runs at once); false when none was. */
bool wk_jh_abort(struct wk_jh *h);
/*
 * After cb: TQ_OK when the transfer worked and the status is 2xx; else the
 * error in s->errstr ("<what>: ..."), TQ_EIO for transport errors, 5xx, 408
 * and 429 (retry), TQ_ECANCELED when aborted, TQ_ESTEP for other statuses;
 * sets s->unsent when the request never left this host.
 */
enum tq_err wk_jh_result(struct wk_jh *h);
void wk_jh_cleanup(struct wk_jh *h);
/* "%XX"-encode text for a URL path segment or query value. Heap string. */
char *wk_jh_escape(const char *text);

#endif
