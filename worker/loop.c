/*
 * The worker's event loop: N job slots, each a uv_work_t cycling on the
 * libuv thread pool with its own Redis and PostgreSQL connections; a
 * heartbeat timer; SIGTERM/SIGINT start draining. Nothing here blocks the
 * loop thread: every blocking call runs in a work item.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "loop.h"
#include "tq/log.h"
#include "tq/util.h"

struct worker {
    uv_loop_t *loop;
    const struct tq_config *cfg;
    char id[160];
    atomic_bool draining;
    int nslots;
    int live_slots;
    struct wk_slot *slots;
    uv_work_t *works;
    uv_signal_t sig_term, sig_int;
    uv_timer_t hb_timer;
    uv_work_t hb_work;
    bool hb_busy;
    struct tq_queue *hb_q;
    struct tq_pg *hb_pg;
    struct wk_http *http;
    uint64_t hb_last_ok_ms;
};

static void slot_work(uv_work_t *w)
{
    struct wk_slot *s = w->data;
    wk_runner_cycle(s, 1000);
}

static void maybe_stop(struct worker *wk);

static void slot_after(uv_work_t *w, int status)
{
    struct wk_slot *s = w->data;
    struct worker *wk = w->loop->data;
    (void)status;
    if (!atomic_load(&wk->draining)) {
        uv_queue_work(w->loop, w, slot_work, slot_after);
        return;
    }
    tq_debug("slot %d stopped", s->index);
    wk->live_slots--;
    maybe_stop(wk);
}

/*
 * Fleet chores, run by whichever worker takes the lock this period: return
 * the processing lists of dead workers to ready (reaper), and re-dispatch
 * jobs PostgreSQL calls runnable that no Redis list holds (reconciler:
 * enqueue died after commit, Redis lost data). Duplicates are harmless.
 */
static void chores(struct worker *wk)
{
    bool got = false;
    uint32_t period = wk->cfg->lease_ms / 3;
    if (tq_queue_try_lock(wk->hb_q, "chores", period ? period : 1000, &got) || !got)
        return;
    int dead = 0, moved = 0;
    if (tq_queue_reap(wk->hb_q, &dead, &moved) == TQ_OK && dead > 0)
        tq_warn("reaper: %d worker(s) stopped heartbeating; %d job(s) returned to ready", dead,
                moved);
    int64_t *ids = NULL;
    size_t n = 0;
    if (tq_pg_orphans(wk->hb_pg, wk->cfg->lease_ms, 500, &ids, &n) == TQ_OK && n > 0) {
        char (*buf)[24] = tq_xcalloc(n, sizeof(*buf));
        const char **argv = tq_xcalloc(n, sizeof(char *));
        for (size_t i = 0; i < n; i++) {
            snprintf(buf[i], sizeof(buf[i]), "%" PRId64, ids[i]);
            argv[i] = buf[i];
        }
        int pushed = 0;
        if (tq_queue_push_missing(wk->hb_q, argv, n, &pushed) == TQ_OK && pushed > 0)
            tq_warn("reconciler: %d runnable job(s) were in no Redis list; dispatched again",
                    pushed);
        free(argv);
        free(buf);
    }
    free(ids);
}

/* Heartbeat: tell Redis we live, extend PostgreSQL leases of jobs in hand. */
static void hb_work(uv_work_t *w)
{
    struct worker *wk = w->data;
    uint32_t ttl = wk->cfg->lease_ms;
    enum tq_err err = tq_queue_heartbeat(wk->hb_q, ttl);
    atomic_store(&wk_metrics.redis_ok, err == TQ_OK);
    if (err)
        tq_warn("heartbeat: %s", tq_queue_errstr(wk->hb_q));
    int n = 0;
    err = tq_pg_extend_leases(wk->hb_pg, wk->id, wk->cfg->lease_ms, &n);
    atomic_store(&wk_metrics.pg_ok, err == TQ_OK);
    if (err)
        tq_warn("heartbeat: %s", tq_pg_errstr(wk->hb_pg));
    if (atomic_load(&wk_metrics.redis_ok) && atomic_load(&wk_metrics.pg_ok))
        chores(wk);
}

static void hb_after(uv_work_t *w, int status)
{
    struct worker *wk = w->data;
    (void)status;
    wk->hb_busy = false;
    maybe_stop(wk);
}

static void hb_tick(uv_timer_t *t)
{
    struct worker *wk = t->data;
    if (wk->hb_busy || atomic_load(&wk->draining))
        return;
    wk->hb_busy = true;
    wk->hb_work.data = wk;
    uv_queue_work(wk->loop, &wk->hb_work, hb_work, hb_after);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct worker *wk = h->data;
    if (atomic_exchange(&wk->draining, true)) {
        tq_warn("second %s: still draining %d slot(s)", signum == SIGTERM ? "SIGTERM" : "SIGINT",
                wk->live_slots);
        return;
    }
    tq_info("%s: draining (no new jobs; jobs in hand finish their step or are handed back)",
            signum == SIGTERM ? "SIGTERM" : "SIGINT");
    uv_timer_stop(&wk->hb_timer);
    if (wk->http)
        wk_http_draining(wk->http);
    maybe_stop(wk);
}

static void maybe_stop(struct worker *wk)
{
    if (!atomic_load(&wk->draining) || wk->live_slots > 0 || wk->hb_busy)
        return;
    uv_close((uv_handle_t *)&wk->sig_term, NULL);
    uv_close((uv_handle_t *)&wk->sig_int, NULL);
    uv_close((uv_handle_t *)&wk->hb_timer, NULL);
    if (wk->http)
        wk_http_close(wk->http);
}

static void make_worker_id(char *out, size_t len)
{
    char host[64] = "host";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    unsigned char r[4] = {0};
    tq_random_bytes(r, sizeof(r));
    /* pid + random: unique per process start, never reused after a restart */
    snprintf(out, len, "%s-%ld-%02x%02x%02x%02x", host, (long)getpid(), r[0], r[1], r[2], r[3]);
}

int wk_run(const struct tq_config *cfg)
{
    struct worker wk;
    memset(&wk, 0, sizeof(wk));
    wk.cfg = cfg;
    make_worker_id(wk.id, sizeof(wk.id));
    atomic_store(&wk.draining, false);

    /* Slots + heartbeat each hold a pool thread; size the pool before its first use. */
    char pool[16];
    snprintf(pool, sizeof(pool), "%d", cfg->concurrency + 2);
    setenv("UV_THREADPOOL_SIZE", pool, 1);

    int rc = 1;
    wk.loop = tq_xmalloc(sizeof(uv_loop_t));
    uv_loop_init(wk.loop);
    wk.loop->data = &wk;

    enum tq_err err = tq_queue_open(cfg, wk.id, &wk.hb_q);
    if (err) {
        tq_error("cannot start: %s", tq_queue_errstr(wk.hb_q));
        goto out;
    }
    err = tq_pg_open(cfg->database_url, &wk.hb_pg);
    if (err) {
        tq_error("cannot start: %s", tq_pg_errstr(wk.hb_pg));
        goto out;
    }
    atomic_store(&wk_metrics.redis_ok, true);
    atomic_store(&wk_metrics.pg_ok, true);

    wk.nslots = cfg->concurrency;
    wk.slots = tq_xcalloc((size_t)wk.nslots, sizeof(*wk.slots));
    wk.works = tq_xcalloc((size_t)wk.nslots, sizeof(*wk.works));
    for (int i = 0; i < wk.nslots; i++) {
        struct wk_slot *s = &wk.slots[i];
        s->index = i;
        s->cfg = cfg;
        s->worker_id = wk.id;
        s->draining = &wk.draining;
        tq_queue_open(cfg, wk.id, &s->q);   /* errors: reconnected by the next call */
        tq_pg_open(cfg->database_url, &s->pg);
    }

    if (cfg->http_addr && *cfg->http_addr) {
        if (wk_http_start(wk.loop, cfg->http_addr, &wk.draining, &wk.http) != 0)
            goto out;
    }

    uv_signal_init(wk.loop, &wk.sig_term);
    uv_signal_init(wk.loop, &wk.sig_int);
    wk.sig_term.data = wk.sig_int.data = &wk;
    uv_signal_start(&wk.sig_term, on_signal, SIGTERM);
    uv_signal_start(&wk.sig_int, on_signal, SIGINT);
    uv_timer_init(wk.loop, &wk.hb_timer);
    wk.hb_timer.data = &wk;
    uint64_t every = cfg->lease_ms / 3;
    uv_timer_start(&wk.hb_timer, hb_tick, 0, every ? every : 1000);

    tq_info("worker %s started: queue %s, %d slot(s), lease %u ms%s%s", wk.id, cfg->queue,
            wk.nslots, cfg->lease_ms, wk.http ? ", http " : "", wk.http ? cfg->http_addr : "");
    wk.live_slots = wk.nslots;
    for (int i = 0; i < wk.nslots; i++) {
        wk.works[i].data = &wk.slots[i];
        uv_queue_work(wk.loop, &wk.works[i], slot_work, slot_after);
    }
    uv_run(wk.loop, UV_RUN_DEFAULT);
    tq_queue_unregister(wk.hb_q);
    tq_info("worker %s stopped: %" PRIuFAST64 " succeeded, %" PRIuFAST64
            " failed, %" PRIuFAST64 " handed back",
            wk.id, atomic_load(&wk_metrics.jobs_succeeded), atomic_load(&wk_metrics.jobs_failed),
            atomic_load(&wk_metrics.jobs_released));
    rc = 0;
out:
    if (rc != 0 && wk.http) {
        wk_http_close(wk.http);
        uv_run(wk.loop, UV_RUN_DEFAULT);
    }
    for (int i = 0; wk.slots && i < wk.nslots; i++) {
        tq_queue_close(wk.slots[i].q);
        tq_pg_close(wk.slots[i].pg);
        tq_pipeline_free(wk.slots[i].pipeline);
    }
    free(wk.slots);
    free(wk.works);
    tq_queue_close(wk.hb_q);
    tq_pg_close(wk.hb_pg);
    uv_loop_close(wk.loop);
    free(wk.loop);
    return rc;
}
