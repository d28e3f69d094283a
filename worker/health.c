/*
 * The worker's HTTP endpoints on the loop thread: /healthz (the loop turns),
 * /readyz (what is wrong with Redis or PostgreSQL, if anything, and not
 * draining), /metrics (Prometheus text). Requests are parsed by Debian's
 * http-parser; one request per connection. The listener must never cost the
 * worker its provisioning: see "HTTP listener" in worker/README.md for the
 * connection cap, the timeouts and the descriptor reserve.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "http_request.h"
#include "loop.h"
#include "tq/log.h"
#include "tq/util.h"

#define HEADER_TIMEOUT_MS 5000    /* from accept to a complete request head */
#define WRITE_TIMEOUT_MS 5000     /* a client that does not read its answer */
#define CONN_CAP_MAX 256

struct conn;

struct wk_http {
    uv_tcp_t server;
    const atomic_bool *draining;
    bool closing;
    int open_conns;               /* not yet closing; <= cap */
    int cap;
    uint64_t dropped;             /* closed before an answer: room, timeout, EMFILE */
    struct conn *head, *tail;     /* open connections, oldest first */
    char rbuf[4096];              /* reads are handled at once: one buffer for all */
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct wk_http *h;
    struct conn *prev, *next;
    struct wk_http_req req;
    bool head_done, responded, closing;
    int handles;                  /* tcp and timer: freed when both closed */
    uv_write_t wr;
    char *resp;
};

/* ------------------------------------------------------------ dependencies */

struct dep {
    enum tq_err err;              /* TQ_OK: nothing wrong */
    char why[240];                /* what is wrong, "" when nothing */
};
static pthread_mutex_t dep_mu = PTHREAD_MUTEX_INITIALIZER;
static struct dep deps[2];
static char pg_state[240];        /* read-only, unmigrated (heartbeat probe) */

/* One line, printable: details from servers may carry newlines. */
static void one_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = ' ';
}

static const char *redis_class(enum tq_err err, const char *d)
{
    if (err == TQ_ECONNECT)
        return "redis unreachable";
    if (strstr(d, "WRONGTYPE"))
        return "redis: a queue key holds the wrong type";
    if (strstr(d, "OOM"))
        return "redis is out of memory";
    if (strstr(d, "READONLY"))
        return "redis is a read-only replica";
    if (strstr(d, "NOAUTH") || strstr(d, "WRONGPASS") || strstr(d, "NOPERM"))
        return "redis refuses our user";
    return "redis refuses a command";
}

static const char *pg_class(enum tq_err err, const char *d)
{
    if (err == TQ_ECONNECT)
        return "postgresql unreachable";
    if (strstr(d, "SQLSTATE 25006"))
        return "postgresql is read-only";
    if (strstr(d, "SQLSTATE 42P01") || strstr(d, "SQLSTATE 3F000"))
        return "postgresql schema is missing (not migrated)";
    if (strstr(d, "SQLSTATE 42501"))
        return "postgresql denies our role";
    if (strstr(d, "SQLSTATE 53"))
        return "postgresql is out of resources";
    return "postgresql refuses a statement";
}

/*
 * The service answered unless the connection failed: that is
 * tq_dependency_up. What it answered decides readiness. A success of the
 * fetcher or the writer proves the service reachable, not that what the
 * heartbeat found wrong (out of memory, a key of the wrong type) is gone:
 * only the next beat clears that, so /readyz does not flap between the two.
 */
static void report(enum wk_dep d, enum tq_err err, const char *detail, bool beat)
{
    pthread_mutex_lock(&dep_mu);
    struct dep *x = &deps[d];
    if (err != TQ_OK) {
        x->err = err;
        snprintf(x->why, sizeof(x->why), "%s (%s)",
                 d == WK_DEP_REDIS ? redis_class(err, detail ? detail : "")
                                   : pg_class(err, detail ? detail : ""),
                 detail ? detail : "");
        one_line(x->why);
    } else if (beat || x->err == TQ_ECONNECT) {
        x->err = TQ_OK;
        x->why[0] = '\0';
    }
    atomic_store(d == WK_DEP_REDIS ? &wk_metrics.redis_ok : &wk_metrics.pg_ok,
                 err != TQ_ECONNECT);
    pthread_mutex_unlock(&dep_mu);
}

void wk_dep_report(enum wk_dep d, enum tq_err err, const char *detail)
{
    report(d, err, detail, false);
}

void wk_dep_beat(enum wk_dep d, enum tq_err err, const char *detail)
{
    report(d, err, detail, true);
}

void wk_dep_pg_state(const char *problem)
{
    pthread_mutex_lock(&dep_mu);
    snprintf(pg_state, sizeof(pg_state), "%s", problem ? problem : "");
    one_line(pg_state);
    pthread_mutex_unlock(&dep_mu);
}

/* false when ready, else true with "not ready: ...\n" in out. */
static bool not_ready(const atomic_bool *draining, char *out, size_t len)
{
    pthread_mutex_lock(&dep_mu);
    const struct dep *r = &deps[WK_DEP_REDIS], *p = &deps[WK_DEP_PG];
    snprintf(out, len, "not ready:%s%s%s%s%s%s%s\n", atomic_load(draining) ? " draining;" : "",
             r->err ? " " : "", r->why, p->err ? " " : "", p->why, pg_state[0] ? " " : "",
             pg_state);
    bool bad = atomic_load(draining) || r->err || p->err || pg_state[0];
    pthread_mutex_unlock(&dep_mu);
    return bad;
}

/* ------------------------------------------------------------ connections */

static void unlink_conn(struct conn *c)
{
    struct wk_http *h = c->h;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        h->tail = c->prev;
    c->prev = c->next = NULL;
}

static void handle_closed(uv_handle_t *hd)
{
    struct conn *c = hd->data;
    if (--c->handles > 0)
        return;
    free(c->resp);
    free(c);
}

/* Closing gives the descriptor back at once (uv_close); the memory follows. */
static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    c->h->open_conns--;
    unlink_conn(c);
    uv_close((uv_handle_t *)&c->tcp, handle_closed);
    uv_close((uv_handle_t *)&c->timer, handle_closed);
}

static void on_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (!c->responded)
        c->h->dropped++;
    conn_close(c);   /* a head that never completed, or an answer never read */
}

static void on_written(uv_write_t *w, int status)
{
    (void)status;
    conn_close(w->data);
}

static void metrics_body(struct tq_buf *b, const struct wk_http *h)
{
    const atomic_bool *draining = h->draining;
    tq_buf_printf(b, "# HELP tq_http_connections Open connections to this listener.\n"
                     "# TYPE tq_http_connections gauge\ntq_http_connections %d\n"
                     "# HELP tq_http_connections_limit The listener's connection cap.\n"
                     "# TYPE tq_http_connections_limit gauge\ntq_http_connections_limit %d\n"
                     "# HELP tq_http_connections_dropped_total Connections closed before an "
                     "answer: to make room at the cap, after the header timeout, or when out "
                     "of descriptors.\n"
                     "# TYPE tq_http_connections_dropped_total counter\n"
                     "tq_http_connections_dropped_total %llu\n",
                  h->open_conns, h->cap, (unsigned long long)h->dropped);
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
    tq_buf_printf(b, "# HELP tq_rows_fenced_total Rows this worker sent for jobs it no longer "
                     "held, which the epoch fence refused (none of them was written).\n"
                     "# TYPE tq_rows_fenced_total counter\ntq_rows_fenced_total %llu\n",
                  (unsigned long long)atomic_load(&wk_metrics.rows_fenced));
    tq_buf_printf(b, "# HELP tq_step_retries_total Step attempts that failed and were retried.\n"
                     "# TYPE tq_step_retries_total counter\ntq_step_retries_total %llu\n",
                  (unsigned long long)atomic_load(&wk_metrics.step_retries));
    tq_buf_printf(b, "# HELP tq_dependency_up Whether the service answered the last round "
                     "trip (heartbeat, fetch or write, whichever came last); /readyz says "
                     "whether what it answered lets us work.\n"
                     "# TYPE tq_dependency_up gauge\n"
                     "tq_dependency_up{service=\"redis\"} %d\n"
                     "tq_dependency_up{service=\"postgresql\"} %d\n",
                  atomic_load(&wk_metrics.redis_ok) ? 1 : 0,
                  atomic_load(&wk_metrics.pg_ok) ? 1 : 0);
    wk_metrics_write(b);
}

static void respond(struct conn *c, int code, const char *ctype, const char *body)
{
    const char *reason = code == 200   ? "OK"
                         : code == 400 ? "Bad Request"
                         : code == 404 ? "Not Found"
                         : code == 405 ? "Method Not Allowed"
                         : code == 414 ? "URI Too Long"
                         : code == 431 ? "Request Header Fields Too Large"
                                       : "Service Unavailable";
    bool head = c->head_done && wk_http_req_method(&c->req) == HTTP_HEAD;
    /* HEAD: the same headers as GET, Content-Length included, and no body. */
    c->resp = tq_xasprintf("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                           "Connection: close\r\n\r\n%s",
                           code, reason, ctype, strlen(body), head ? "" : body);
    c->responded = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_start(&c->timer, on_timeout, WRITE_TIMEOUT_MS, 0);
    uv_buf_t b = uv_buf_init(c->resp, (unsigned)strlen(c->resp));
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
        conn_close(c);
}

static void handle(struct conn *c)
{
    const char *text = "text/plain; charset=utf-8";
    char path[WK_HTTP_URL_MAX + 1];
    enum http_method m = wk_http_req_method(&c->req);
    wk_http_req_path(&c->req, path, sizeof(path));
    if (wk_http_req_url_too_long(&c->req)) {
        respond(c, 414, text, "request target too long\n");
    } else if (m != HTTP_GET && m != HTTP_HEAD) {
        respond(c, 405, text, "method not allowed\n");
    } else if (strcmp(path, "/healthz") == 0) {
        respond(c, 200, text, "ok\n");
    } else if (strcmp(path, "/readyz") == 0) {
        char body[900];
        if (not_ready(c->h->draining, body, sizeof(body)))
            respond(c, 503, text, body);
        else
            respond(c, 200, text, "ready\n");
    } else if (strcmp(path, "/metrics") == 0) {
        struct tq_buf b;
        tq_buf_init(&b);
        metrics_body(&b, c->h);
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
    *buf = uv_buf_init(c->h->rbuf, sizeof(c->h->rbuf));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = st->data;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (c->responded || c->closing || n == 0)
        return;
    switch (wk_http_req_feed(&c->req, buf->base, (size_t)n)) {
    case WK_HTTP_MORE:
        break;
    case WK_HTTP_DONE:
        c->head_done = true;
        handle(c);
        break;
    case WK_HTTP_TOO_LARGE:
        respond(c, 431, "text/plain", "request head too large\n");
        break;
    case WK_HTTP_BAD:
        respond(c, 400, "text/plain", "bad request\n");
        break;
    }
}

/*
 * At the cap, the oldest connection still waiting for its request head
 * makes room: idle connections cannot keep a probe out.
 */
static bool make_room(struct wk_http *h)
{
    if (h->open_conns < h->cap)
        return true;
    for (struct conn *c = h->head; c; c = c->next) {
        if (!c->responded) {
            h->dropped++;
            conn_close(c);
            return true;
        }
    }
    return false;
}

static void on_connection(uv_stream_t *server, int status)
{
    struct wk_http *h = server->data;
    if (status < 0) {
        /* EMFILE/ENFILE: libuv has already used its reserved descriptor to
           accept and drop what waited. Shed our idle connections too. */
        static uint64_t last_ms;
        if (tq_mono_ms() - last_ms > 10000) {
            last_ms = tq_mono_ms();
            tq_warn("http: cannot accept: %s; dropping idle connections", uv_strerror(status));
        }
        for (struct conn *c = h->head, *next; c; c = next) {
            next = c->next;
            if (!c->responded) {
                h->dropped++;
                conn_close(c);
            }
        }
        return;
    }
    /* Accept even when we will not serve: libuv stops accepting until we do. */
    bool serve = !h->closing && make_room(h);
    if (!serve)
        h->dropped++;
    struct conn *c = tq_xcalloc(1, sizeof(*c));
    c->h = h;
    uv_tcp_init(server->loop, &c->tcp);
    uv_timer_init(server->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    wk_http_req_init(&c->req);
    h->open_conns++;
    c->prev = h->tail;
    if (h->tail)
        h->tail->next = c;
    else
        h->head = c;
    h->tail = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 || !serve ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timeout, HEADER_TIMEOUT_MS, 0);
}

/* The connection cap: what RLIMIT_NOFILE leaves after what the rest needs. */
static int conn_cap(int fds_needed)
{
    struct rlimit rl;
    long cap = CONN_CAP_MAX;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        long spare = (long)rl.rlim_cur - fds_needed;
        if (spare < cap)
            cap = spare;
    }
    if (cap < 4) {
        tq_warn("http: RLIMIT_NOFILE leaves almost no descriptors for the listener; "
                "it takes 4 connections at a time");
        cap = 4;
    }
    return (int)cap;
}

int wk_http_start(uv_loop_t *loop, const char *addr, const atomic_bool *draining,
                  int fds_needed, struct wk_http **out)
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
    h->cap = conn_cap(fds_needed);
    uv_tcp_init(loop, &h->server);
    h->server.data = h;
    int rc = uv_tcp_bind(&h->server, (const struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->server, 128, on_connection);
    if (rc != 0) {
        tq_error("cannot listen on %s: %s", addr, uv_strerror(rc));
        wk_http_close(h);
        return -1;
    }
    tq_debug("http: listening on %s, at most %d connections", addr, h->cap);
    *out = h;
    return 0;
}

static void server_closed(uv_handle_t *hd)
{
    free(hd->data);
}

void wk_http_close(struct wk_http *h)
{
    h->closing = true;
    while (h->head)
        conn_close(h->head);
    if (!uv_is_closing((uv_handle_t *)&h->server))
        uv_close((uv_handle_t *)&h->server, server_closed);
}
