/*
 * libcurl's multi interface on the worker's libuv loop: one uv_poll per
 * socket curl asks about, one uv_timer for curl's timeouts, completions
 * dispatched to the transfer's callback on the loop thread. Steps that
 * speak HTTP (http, s3_bucket, notify, checks) queue easy handles here;
 * nothing blocks the loop.
 */
#include <stdlib.h>
#include <string.h>

#include "tq/log.h"
#include "tq/util.h"
#include "worker.h"

struct wk_curl {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    int transfers;
};

struct sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct wk_curl *c;
};

struct xfer {
    wk_curl_done_cb *cb;
    void *arg;
};

static void check_done(struct wk_curl *c)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *e = m->easy_handle;
        CURLcode rc = m->data.result;
        struct xfer *x = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(c->multi, e);
        c->transfers--;
        if (x) {
            wk_curl_done_cb *cb = x->cb;
            void *arg = x->arg;
            free(x);
            curl_easy_setopt(e, CURLOPT_PRIVATE, NULL);
            cb(e, rc, arg);
        }
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct sock *s = p->data;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(s->c->multi, s->fd, flags, &running);
    check_done(s->c);
}

static void sock_closed(uv_handle_t *h)
{
    free(h->data);
}

static int on_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct wk_curl *c = userp;
    struct sock *s = socketp;
    (void)e;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            uv_poll_stop(&s->poll);
            curl_multi_assign(c->multi, fd, NULL);
            uv_close((uv_handle_t *)&s->poll, sock_closed);
        }
        return 0;
    }
    if (!s) {
        s = tq_xcalloc(1, sizeof(*s));
        s->fd = fd;
        s->c = c;
        if (uv_poll_init_socket(c->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        curl_multi_assign(c->multi, fd, s);
    }
    int ev = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    struct wk_curl *c = t->data;
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(c);
}

static int on_timeout(CURLM *m, long ms, void *userp)
{
    struct wk_curl *c = userp;
    (void)m;
    if (ms < 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
    return 0;
}

struct wk_curl *wk_curl_new(uv_loop_t *loop)
{
    struct wk_curl *c = tq_xcalloc(1, sizeof(*c));
    c->loop = loop;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    return c;
}

/* libcurl (and through it OpenSSL's TLS, the resolver, and the GnuTLS,
   Kerberos and LDAP code curl links) is set up by the first transfer, not at
   start: a worker whose pipelines speak no HTTP never touches those pages
   (about 2.4 MB of RSS; docs/design.md §9). This libcurl is built
   thread-safe (curl-config --features: threadsafe), so a step's
   curl_easy_init() before this initialises the same way, once. */
static enum tq_err multi_ensure(struct wk_curl *c)
{
    if (c->multi)
        return TQ_OK;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {   /* paired with wk_curl_free */
        tq_error("libcurl did not initialise; the transfer fails");
        return TQ_EIO;
    }
    c->multi = curl_multi_init();
    if (!c->multi)
        tq_panic(__FILE__, __LINE__, "curl_multi_init failed");
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timeout);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    return TQ_OK;
}

enum tq_err wk_curl_start(struct wk_curl *c, CURL *e, wk_curl_done_cb *cb, void *arg)
{
    if (multi_ensure(c) != TQ_OK)
        return TQ_EIO;
    struct xfer *x = tq_xcalloc(1, sizeof(*x));
    x->cb = cb;
    x->arg = arg;
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
        free(x);
        curl_easy_setopt(e, CURLOPT_PRIVATE, NULL);
        return TQ_EIO;
    }
    c->transfers++;
    return TQ_OK;
}

void wk_curl_abort(struct wk_curl *c, CURL *e)
{
    struct xfer *x = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
    if (!x)
        return;
    curl_multi_remove_handle(c->multi, e);
    c->transfers--;
    curl_easy_setopt(e, CURLOPT_PRIVATE, NULL);
    wk_curl_done_cb *cb = x->cb;
    void *arg = x->arg;
    free(x);
    cb(e, CURLE_ABORTED_BY_CALLBACK, arg);
}

static void timer_closed(uv_handle_t *h)
{
    struct wk_curl *c = h->data;
    if (c->multi) {
        curl_multi_cleanup(c->multi);
        curl_global_cleanup();
    }
    free(c);
}

void wk_curl_free(struct wk_curl *c)
{
    if (c)
        uv_close((uv_handle_t *)&c->timer, timer_closed);
}

int wk_curl_transfers(const struct wk_curl *c)
{
    return c ? c->transfers : 0;
}

bool wk_curl_unsent(CURLcode rc)
{
    /* curl gave up before a byte of the request left: no name, no connection, no TLS */
    return rc == CURLE_COULDNT_RESOLVE_PROXY || rc == CURLE_COULDNT_RESOLVE_HOST ||
           rc == CURLE_COULDNT_CONNECT || rc == CURLE_SSL_CONNECT_ERROR;
}
