/*
 * The worker's HTTP endpoints on the loop thread: /healthz (the loop turns),
 * /readyz (Redis and PostgreSQL answered the last heartbeat, not draining),
 * /metrics (Prometheus text). One request per connection, request head
 * capped at 8 KiB; anything else gets 404/405/431. Reads only atomics.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop.h"
#include "tq/log.h"
#include "tq/util.h"

#define HEAD_MAX 8192

struct wk_http {
    uv_tcp_t server;
    const atomic_bool *draining;
    bool closing;
    int open_conns;
};

struct conn {
    uv_tcp_t tcp;
    struct wk_http *h;
    char buf[HEAD_MAX];
    size_t len;
    uv_write_t wr;
    char *resp;
    bool responded;
};

static void conn_closed(uv_handle_t *hd)
{
    struct conn *c = hd->data;
    struct wk_http *h = c->h;
    free(c->resp);
    free(c);
    h->open_conns--;
}

static void conn_close(struct conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void on_written(uv_write_t *w, int status)
{
    (void)status;
    conn_close(w->data);
}

static void metrics_body(struct tq_buf *b, const atomic_bool *draining)
{
    tq_buf_puts(b, "# HELP tq_worker_up 1 while the worker's loop runs.\n"
                   "# TYPE tq_worker_up gauge\ntq_worker_up 1\n");
    tq_buf_printf(b, "# HELP tq_worker_draining 1 after SIGTERM.\n"
                     "# TYPE tq_worker_draining gauge\ntq_worker_draining %d\n",
                  atomic_load(draining) ? 1 : 0);
    tq_buf_printf(b, "# HELP tq_jobs_in_flight Jobs this worker holds now.\n"
                     "# TYPE tq_jobs_in_flight gauge\ntq_jobs_in_flight %d\n",
                  atomic_load(&wk_metrics.in_flight));
    tq_buf_printf(b,
                  "# HELP tq_jobs_total Jobs this worker ended, by outcome.\n"
                  "# TYPE tq_jobs_total counter\n"
                  "tq_jobs_total{outcome=\"succeeded\"} %llu\n"
                  "tq_jobs_total{outcome=\"failed\"} %llu\n"
                  "tq_jobs_total{outcome=\"released\"} %llu\n"
                  "tq_jobs_total{outcome=\"stale\"} %llu\n",
                  (unsigned long long)atomic_load(&wk_metrics.jobs_succeeded),
                  (unsigned long long)atomic_load(&wk_metrics.jobs_failed),
                  (unsigned long long)atomic_load(&wk_metrics.jobs_released),
                  (unsigned long long)atomic_load(&wk_metrics.jobs_stale));
    tq_buf_printf(b, "# HELP tq_step_retries_total Step attempts that failed and were retried.\n"
                     "# TYPE tq_step_retries_total counter\ntq_step_retries_total %llu\n",
                  (unsigned long long)atomic_load(&wk_metrics.step_retries));
    tq_buf_printf(b, "# HELP tq_dependency_up Whether the last heartbeat reached the service.\n"
                     "# TYPE tq_dependency_up gauge\n"
                     "tq_dependency_up{service=\"redis\"} %d\n"
                     "tq_dependency_up{service=\"postgresql\"} %d\n",
                  atomic_load(&wk_metrics.redis_ok) ? 1 : 0,
                  atomic_load(&wk_metrics.pg_ok) ? 1 : 0);
    wk_metrics_write(b);
}

static void respond(struct conn *c, int code, const char *ctype, const char *body)
{
    const char *reason = code == 200 ? "OK" : code == 404 ? "Not Found"
                       : code == 405 ? "Method Not Allowed" : code == 431
                           ? "Request Header Fields Too Large" : "Service Unavailable";
    c->resp = tq_xasprintf("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                           "Connection: close\r\n\r\n%s",
                           code, reason, ctype, strlen(body), body);
    c->responded = true;
    uv_buf_t b = uv_buf_init(c->resp, (unsigned)strlen(c->resp));
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
        conn_close(c);
}

static void handle(struct conn *c)
{
    /* Request line: METHOD SP PATH SP VERSION */
    char method[8] = "", path[128] = "";
    const char *sp = memchr(c->buf, ' ', c->len);
    if (sp && (size_t)(sp - c->buf) < sizeof(method)) {
        memcpy(method, c->buf, (size_t)(sp - c->buf));
        const char *p = sp + 1;
        size_t n = strcspn(p, " ?\r\n");
        if (n < sizeof(path))
            memcpy(path, p, n);
    }
    const char *text = "text/plain; charset=utf-8";
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        respond(c, 405, text, "method not allowed\n");
    } else if (strcmp(path, "/healthz") == 0) {
        respond(c, 200, text, "ok\n");
    } else if (strcmp(path, "/readyz") == 0) {
        bool draining = atomic_load(c->h->draining);
        bool redis = atomic_load(&wk_metrics.redis_ok), pg = atomic_load(&wk_metrics.pg_ok);
        if (!draining && redis && pg) {
            respond(c, 200, text, "ready\n");
        } else {
            char body[128];
            snprintf(body, sizeof(body), "not ready:%s%s%s\n", draining ? " draining" : "",
                     redis ? "" : " redis unreachable", pg ? "" : " postgresql unreachable");
            respond(c, 503, text, body);
        }
    } else if (strcmp(path, "/metrics") == 0) {
        struct tq_buf b;
        tq_buf_init(&b);
        metrics_body(&b, c->h->draining);
        respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.data);
        tq_buf_cleanup(&b);
    } else {
        respond(c, 404, text, "not found\n");
    }
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = hd->data;
    (void)suggested;
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(HEAD_MAX - 1 - c->len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = st->data;
    (void)buf;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (c->responded)
        return;
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    if (strstr(c->buf, "\r\n\r\n") || strstr(c->buf, "\n\n")) {
        uv_read_stop(st);
        handle(c);
    } else if (c->len >= HEAD_MAX - 1) {
        uv_read_stop(st);
        respond(c, 431, "text/plain", "request head too large\n");
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct wk_http *h = server->data;
    if (status < 0 || h->closing)
        return;
    struct conn *c = tq_xcalloc(1, sizeof(*c));
    c->h = h;
    uv_tcp_init(server->loop, &c->tcp);
    c->tcp.data = c;
    h->open_conns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        conn_close(c);
}

int wk_http_start(uv_loop_t *loop, const char *addr, const atomic_bool *draining,
                  struct wk_http **out)
{
    *out = NULL;
    char host[128];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof(host)) {
        tq_error("TQ_HTTP_ADDR \"%s\": expected host:port", addr);
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    struct sockaddr_storage sa;
    if (*end || port < 0 || port > 65535 ||
        (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&sa) != 0 &&
         uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&sa) != 0)) {
        tq_error("TQ_HTTP_ADDR \"%s\": expected an IP address and a port 0-65535", addr);
        return -1;
    }
    struct wk_http *h = tq_xcalloc(1, sizeof(*h));
    h->draining = draining;
    uv_tcp_init(loop, &h->server);
    h->server.data = h;
    int rc = uv_tcp_bind(&h->server, (const struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->server, 64, on_connection);
    if (rc != 0) {
        tq_error("cannot listen on %s: %s", addr, uv_strerror(rc));
        h->closing = true;
        wk_http_close(h);
        return -1;
    }
    *out = h;
    return 0;
}

static void server_closed(uv_handle_t *hd)
{
    free(hd->data);
}

static void close_walk(uv_handle_t *hd, void *arg)
{
    struct wk_http *h = arg;
    if (hd->type == UV_TCP && hd != (uv_handle_t *)&h->server && hd->data &&
        ((struct conn *)hd->data)->h == h)
        conn_close(hd->data);
}

void wk_http_close(struct wk_http *h)
{
    h->closing = true;
    uv_walk(h->server.loop, close_walk, h);
    if (!uv_is_closing((uv_handle_t *)&h->server))
        uv_close((uv_handle_t *)&h->server, server_closed);
}
