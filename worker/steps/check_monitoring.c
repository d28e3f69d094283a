/*
 * Step "check_monitoring": the tenant's metrics actually flow. It asks
 * Prometheus's HTTP API (GET <params.url>/api/v1/query?query=Q) for the
 * tenant's series, Q being params.query (default {tenant="<tenant id>"}),
 * every params.poll_ms (250) until the answer holds at least one series or
 * params.wait_ms (default 15000, at most 120000) passed: a bounded wait for
 * the next scrape. No series by then is TQ_ESTEP naming the query (class
 * integration: rollback after its retries); Prometheus unreachable or
 * answering 5xx is TQ_EIO. The output holds the series count, the first
 * series' labels and how long it waited. Undo: nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../step.h"
#include "tq/util.h"

#define MAX_WAIT_MS 120000

struct run {
    struct wk_step *s;
    struct wk_jh h;
    uv_timer_t timer;
    char *url;
    char query[512];
    uint64_t started, wait_ms, poll_ms;
    int polls;
    enum tq_err err;
};

static void freed(uv_handle_t *t)
{
    struct run *r = t->data;
    struct wk_step *s = r->s;
    enum tq_err err = r->err;
    wk_jh_cleanup(&r->h);
    free(r->url);
    free(r);
    if (s)   /* NULL: the step never started */
        wk_step_done(s, err);
}

static void finish(struct run *r, enum tq_err err)
{
    r->s->kind_data = NULL;
    r->err = err;
    uv_close((uv_handle_t *)&r->timer, freed);
}

static void on_answer(struct wk_jh *h, void *arg);

static void poll_now(uv_timer_t *t)
{
    struct run *r = t->data;
    r->polls++;
    enum tq_err err = wk_jh_send(&r->h, "GET Prometheus /api/v1/query", "GET", r->url, NULL,
                                 NULL, 5000, on_answer, r);
    if (err)
        finish(r, err);
}

static void on_answer(struct wk_jh *h, void *arg)
{
    struct run *r = arg;
    struct wk_step *s = r->s;
    enum tq_err err = wk_jh_result(h);
    if (err) {
        finish(r, err);
        return;
    }
    const char *status = json_string_value(json_object_get(h->json, "status"));
    const json_t *result = json_object_get(json_object_get(h->json, "data"), "result");
    if (!status || strcmp(status, "success") != 0 || !json_is_array(result)) {
        const char *e = json_string_value(json_object_get(h->json, "error"));
        snprintf(s->errstr, sizeof(s->errstr), "Prometheus did not run query %.80s: %.120s",
                 r->query, e ? e : "no success/data.result in its answer");
        finish(r, TQ_ESTEP);
        return;
    }
    uint64_t waited = uv_now(s->loop) - r->started;
    if (json_array_size(result) > 0) {
        json_object_set_new(s->output, "query", json_string(r->query));
        json_object_set_new(s->output, "series", json_integer((json_int_t)json_array_size(result)));
        json_object_set_new(s->output, "labels", json_deep_copy(json_object_get(
                                                     json_array_get(result, 0), "metric")));
        json_object_set_new(s->output, "waited_ms", json_integer((json_int_t)waited));
        json_object_set_new(s->output, "polls", json_integer(r->polls));
        finish(r, TQ_OK);
        return;
    }
    if (waited + r->poll_ms > r->wait_ms) {
        snprintf(s->errstr, sizeof(s->errstr), "Prometheus has no series for %.100s after %llu ms "
                 "(%d queries): the tenant's metrics are not scraped", r->query,
                 (unsigned long long)waited, r->polls);
        finish(r, TQ_ESTEP);
        return;
    }
    uv_timer_start(&r->timer, poll_now, r->poll_ms, 0);
}

static enum tq_err start(struct wk_step *s)
{
    if (s->undo) {
        wk_step_done(s, TQ_OK);
        return TQ_OK;
    }
    const json_t *p = s->params;
    const char *url = json_string_value(json_object_get(p, "url"));
    const char *q = json_string_value(json_object_get(p, "query"));
    const json_t *w = json_object_get(p, "wait_ms"), *pm = json_object_get(p, "poll_ms");
    if (!url || !*url || (w && (!json_is_integer(w) || json_integer_value(w) < 0 ||
                                json_integer_value(w) > MAX_WAIT_MS)) ||
        (pm && (!json_is_integer(pm) || json_integer_value(pm) < 10 ||
                json_integer_value(pm) > 10000))) {
        snprintf(s->errstr, sizeof(s->errstr), "params: url (Prometheus's base URL) is required, "
                 "wait_ms must be 0..%d, poll_ms 10..10000", MAX_WAIT_MS);
        return TQ_EINVALID;
    }
    struct run *r = tq_xcalloc(1, sizeof(*r));
    r->s = s;
    wk_jh_init(&r->h, s);
    if (q && *q)
        snprintf(r->query, sizeof(r->query), "%s", q);
    else
        snprintf(r->query, sizeof(r->query), "{tenant=\"%s\"}", s->claim->tenant_id);
    r->wait_ms = w ? (uint64_t)json_integer_value(w) : 15000;
    r->poll_ms = pm ? (uint64_t)json_integer_value(pm) : 250;
    char *eq = wk_jh_escape(r->query);
    size_t ul = strlen(url);
    r->url = tq_xasprintf("%.*s/api/v1/query?query=%s",
                          (int)(ul && url[ul - 1] == '/' ? ul - 1 : ul), url, eq);
    free(eq);
    uv_timer_init(s->loop, &r->timer);
    r->timer.data = r;
    r->started = uv_now(s->loop);
    s->kind_data = r;
    r->polls = 1;
    enum tq_err err = wk_jh_send(&r->h, "GET Prometheus /api/v1/query", "GET", r->url, NULL,
                                 NULL, 5000, on_answer, r);
    if (err) {
        /* not started: no done call, but the timer handle must still close */
        s->kind_data = NULL;
        r->s = NULL;
        uv_close((uv_handle_t *)&r->timer, freed);
    }
    return err;
}

static void cancel(struct wk_step *s)
{
    struct run *r = s->kind_data;
    if (!r)
        return;
    uv_timer_stop(&r->timer);
    if (!wk_jh_abort(&r->h)) {
        snprintf(s->errstr, sizeof(s->errstr), "cancelled");
        finish(r, TQ_ECANCELED);
    }
}

const struct wk_step_ops wk_step_check_monitoring = {"check_monitoring", start, cancel};
