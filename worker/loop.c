/*
 * The worker process: one libuv loop that owns the engine (job state
 * machines, step timers), signals, the heartbeat timer and the HTTP
 * listener; a fetcher thread and a writer thread that do the blocking Redis
 * and PostgreSQL round trips for it. SIGTERM/SIGINT drain: no new jobs,
 * jobs in hand finish their step or are handed back, then exit 0.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "credentials.h"
#include "limits.h"
#include "loop.h"
#include "step_int.h"
#include "tq/approvers.h"
#include "tq/log.h"
#include "tq/probe.h"
#include "tq/util.h"

struct worker {
    uv_loop_t *loop;
    const struct tq_config *cfg;
    struct wk_settings set;
    char id[160];
    atomic_bool draining;
    atomic_int free_slots;
    struct wk_engine *engine;
    struct wk_writer *writer;
    struct wk_fetcher *fetcher;
    struct wk_routes *routes;
    struct wk_dispatch *dispatch;   /* notifications from audit events: its own thread */
    uv_signal_t sig_term, sig_int;
    uv_timer_t hb_timer;
    uv_timer_t final;          /* drain: stop waiting for PostgreSQL after grace + FINAL_SLACK_MS */
    bool abandoned;            /* past it: the writer's reports no longer reach the engine */
    bool fetcher_stopped;      /* drain: its thread has ended */
    bool drain_done;           /* drain: every job gone; the writer is stopping */
    uv_work_t hb_work;
    char last_problem[200];     /* the database's, at the last beat (heartbeat only) */
    bool hb_busy;
    bool tick_err_logged;      /* a failure between beats was logged; reset when one works */
    bool stopping;
    struct tq_queue *hb_q;
    struct tq_pg *hb_pg;
    struct wk_http *http;
    uint64_t next_beat_ms;
    int64_t *cancels;          /* filled by hb_work, read by hb_after */
    size_t ncancels;
    int64_t *held;             /* ids of jobs in hand, snapshot for hb_work */
    size_t nheld;
    /* leases confirmed by hb_work (extended, still ours), for hb_after */
    int64_t *confirmed;
    size_t nconfirmed;
    uint64_t confirm_sent_ms;
    bool confirm_ok;
};

/* Push job ids to ready; errors are left to the reconciler. */
static void push_ids(struct worker *wk, const int64_t *ids, size_t n)
{
    if (tq_queue_dispatch(wk->hb_q, ids, n, 0))
        tq_warn("could not dispatch %zu job(s): %s; the reconciler will", n,
                tq_queue_errstr(wk->hb_q));
}

/*
 * Drift: each active tenant of our queue is revalidated about once per
 * TQ_REVALIDATE_INTERVAL_MS (default a day; 0 = off), on a schedule kept per
 * tenant in PostgreSQL and spread over the interval (tq_pg_revalidate_due).
 * Nothing here depends on Redis keeping its data or on when workers start:
 * a flush or a restart queues no round. At most REVALIDATE_BATCH a pass.
 */
#define REVALIDATE_BATCH 100

static void revalidate_due(struct worker *wk)
{
    uint32_t every = wk->set.revalidate_ms;
    if (every == 0)
        return;
    int64_t *ids = NULL;
    size_t n = 0;
    if (tq_pg_revalidate_due(wk->hb_pg, wk->cfg->queue, every, REVALIDATE_BATCH, "scheduler",
                             &ids, &n) != TQ_OK) {
        tq_warn("drift: could not queue the revalidations due: %s; next period",
                tq_pg_errstr(wk->hb_pg));
    } else if (n > 0) {
        tq_info("drift: queued revalidation of %zu tenant(s) due for their check", n);
        push_ids(wk, ids, n);
    }
    free(ids);
}

/*
 * Approvals waiting longer than TQ_APPROVAL_ESCALATE_AFTER: an audit event
 * approval_escalated per request, once a period (tq_approvals_escalate;
 * delivery to people is the notification dispatcher's, from the event).
 */
static void escalate_due(struct worker *wk)
{
    if (wk->set.escalate_after_s == 0)
        return;
    size_t n = 0;
    if (tq_approvals_escalate(wk->hb_pg, wk->cfg->queue, wk->set.escalate_after_s, "scheduler",
                              &n) == TQ_OK &&
        n > 0)
        tq_info("approvals: escalated %zu request(s) pending longer than %" PRIu32 " s", n,
                wk->set.escalate_after_s);
}

/*
 * Fleet chores, run by whichever worker takes the lock this period: return
 * the processing lists of dead workers to ready (reaper: registered workers
 * and every processing list found by SCAN, so a worker that died before
 * re-registering after a flush leaves nothing behind), queue the
 * revalidations that are due, and re-dispatch jobs of our queue PostgreSQL
 * calls runnable that no Redis list holds (reconciler: enqueue died after
 * commit, Redis lost data). Duplicates are harmless.
 */
static void chores(struct worker *wk)
{
    bool got = false;
    uint32_t period = wk->cfg->lease_ms / 3;
    if (tq_queue_try_lock(wk->hb_q, "chores", period ? period : 1000, &got)) {
        tq_warn("chores: could not take the fleet lock: %s; next period",
                tq_queue_errstr(wk->hb_q));
        return;
    }
    if (!got)
        return;   /* another worker does them this period */
    int dead = 0, moved = 0;
    if (tq_queue_reap(wk->hb_q, &dead, &moved) != TQ_OK)
        tq_warn("reaper: %s; next period", tq_queue_errstr(wk->hb_q));
    else if (dead > 0)
        tq_warn("reaper: %d worker(s) stopped heartbeating; %d job(s) returned to ready", dead,
                moved);
    revalidate_due(wk);
    escalate_due(wk);
    int64_t *ids = NULL;
    size_t n = 0;
    if (tq_pg_orphans(wk->hb_pg, wk->cfg->queue, wk->cfg->lease_ms, 500, &ids, &n) != TQ_OK)
        tq_warn("reconciler: could not read the runnable jobs: %s; next period",
                tq_pg_errstr(wk->hb_pg));
    else if (n > 0) {
        char (*buf)[24] = tq_xcalloc(n, sizeof(*buf));
        const char **argv = tq_xcalloc(n, sizeof(char *));
        for (size_t i = 0; i < n; i++) {
            snprintf(buf[i], sizeof(buf[i]), "%" PRId64, ids[i]);
            argv[i] = buf[i];
        }
        int pushed = 0;
        if (tq_queue_push_missing(wk->hb_q, argv, n, &pushed) != TQ_OK)
            tq_warn("reconciler: could not dispatch %zu runnable job(s): %s; next period", n,
                    tq_queue_errstr(wk->hb_q));
        else if (pushed > 0)
            tq_warn("reconciler: %d runnable job(s) were in no Redis list; dispatched again",
                    pushed);
        free(argv);
        free(buf);
    }
    free(ids);
}

/*
 * Every second: pick up cancel requests for jobs in hand (so a cancel takes
 * effect at the next step boundary). Every lease/3: tell Redis we live,
 * extend the leases of jobs in hand, do chores.
 */
/* Extend the leases of the jobs in hand, learning which are still ours. */
static enum tq_err confirm_leases(struct worker *wk)
{
    free(wk->confirmed);
    wk->confirmed = NULL;
    wk->nconfirmed = 0;
    wk->confirm_sent_ms = tq_mono_ms();
    enum tq_err err = tq_pg_extend_leases_ids(wk->hb_pg, wk->id, wk->held, wk->nheld,
                                              wk->cfg->lease_ms, &wk->confirmed,
                                              &wk->nconfirmed);
    wk->confirm_ok = err == TQ_OK;
    return err;
}

static void hb_work(uv_work_t *w)
{
    struct worker *wk = w->data;
    wk->confirm_ok = false;
    free(wk->cancels);
    wk->cancels = NULL;
    wk->ncancels = 0;
    enum tq_err err = tq_pg_cancel_requests(wk->hb_pg, wk->id, wk->held, wk->nheld,
                                            &wk->cancels, &wk->ncancels);
    if (err) {
        wk->cancels = NULL;
        wk->ncancels = 0;
    }
    uint64_t now = tq_mono_ms();
    if (now < wk->next_beat_ms) {
        /* a step waits for its job's lease to be confirmed (worker/limits.c) */
        if (!err && wk_leases_wanted())
            err = confirm_leases(wk);
        /* between beats, once per outage: the next beat reports the database's state */
        if (err && !wk->tick_err_logged)
            tq_warn("heartbeat: could not read cancel requests or confirm leases: %s",
                    tq_pg_errstr(wk->hb_pg));
        wk->tick_err_logged = err != TQ_OK;
        return;
    }
    wk->next_beat_ms = now + wk->cfg->lease_ms / 3;
    err = tq_queue_heartbeat(wk->hb_q, wk->cfg->lease_ms);
    long long ready, delayed, dead;
    if (!err)
        err = tq_queue_depths(wk->hb_q, &ready, &delayed, &dead);
    if (!err) {
        atomic_store(&wk_queue_ready, ready);
        atomic_store(&wk_queue_delayed, delayed);
        atomic_store(&wk_queue_dead, dead);
    }
    wk_dep_beat(WK_DEP_REDIS, err, tq_queue_errstr(wk->hb_q));
    bool redis_fine = err == TQ_OK;
    if (err)
        tq_warn("heartbeat: %s", tq_queue_errstr(wk->hb_q));
    wk_limits_renew();   /* fleet-wide permits share the worker's lease */
    /* A real round trip every beat, even with no lease to extend: the
       dependency state must not outlive a stopped server. */
    char problem[200] = "";
    err = confirm_leases(wk);
    if (!err)
        err = tq_pg_probe(wk->hb_pg, problem, sizeof(problem));
    wk_dep_beat(WK_DEP_PG, err, tq_pg_errstr(wk->hb_pg));
    wk_dep_pg_state(err ? NULL : problem);
    if (err)
        tq_warn("heartbeat: %s", tq_pg_errstr(wk->hb_pg));
    else if (problem[0] && strcmp(problem, wk->last_problem) != 0)
        tq_warn("heartbeat: %s", problem);   /* once per change, not every beat */
    else if (!problem[0] && wk->last_problem[0])
        tq_info("heartbeat: postgresql serves us again");
    if (!err)
        snprintf(wk->last_problem, sizeof(wk->last_problem), "%s", problem);
    if (redis_fine && !err && !problem[0] && !atomic_load(&wk->draining))
        chores(wk);
}

static void maybe_close(struct worker *wk);

static void hb_after(uv_work_t *w, int status)
{
    struct worker *wk = w->data;
    (void)status;
    wk->hb_busy = false;
    /* steps start only under a lease PostgreSQL confirmed; lost ones are dropped */
    if (wk->confirm_ok && !wk->stopping)
        wk_leases_confirmed(wk->engine, wk->held, wk->nheld, wk->confirmed, wk->nconfirmed,
                            wk->confirm_sent_ms);
    for (size_t i = 0; i < wk->ncancels && !wk->stopping; i++)
        wk_engine_cancel(wk->engine, wk->cancels[i]);
    maybe_close(wk);
}

static void hb_tick(uv_timer_t *t)
{
    struct worker *wk = t->data;
    if (wk->hb_busy || wk->stopping)
        return;
    wk->hb_busy = true;
    /* the jobs in hand, read here on the loop thread for the pool thread */
    wk->held = tq_xrealloc(wk->held, (size_t)(wk->cfg->concurrency + 1) * sizeof(int64_t));
    wk->nheld = wk_engine_job_ids(wk->engine, wk->held, (size_t)wk->cfg->concurrency + 1);
    wk->hb_work.data = wk;
    int rc = uv_queue_work(wk->loop, &wk->hb_work, hb_work, hb_after);
    if (rc != 0) {
        wk->hb_busy = false;   /* the next tick tries again */
        tq_warn("heartbeat: could not queue it: %s", uv_strerror(rc));
    }
}

static void deliver_claimed(void *arg, struct wk_claimed *c)
{
    struct worker *wk = arg;
    wk_engine_run(wk->engine, c);
}

static void deliver_report(void *arg, struct wk_report *r)
{
    struct worker *wk = arg;
    if (wk->abandoned) {
        free(r);   /* its job was let go at the final deadline */
        return;
    }
    wk_engine_report(wk->engine, r);
}

static void slot_free(void *arg)
{
    struct worker *wk = arg;
    if (wk->fetcher)
        wk_fetcher_poke(wk->fetcher);
}

static void maybe_close(struct worker *wk)
{
    if (!wk->stopping || wk->hb_busy || wk->writer)
        return;
    if (!uv_is_closing((uv_handle_t *)&wk->hb_timer)) {
        uv_close((uv_handle_t *)&wk->sig_term, NULL);
        uv_close((uv_handle_t *)&wk->sig_int, NULL);
        uv_close((uv_handle_t *)&wk->hb_timer, NULL);
        uv_close((uv_handle_t *)&wk->final, NULL);
        if (wk->http)
            wk_http_close(wk->http);
        wk_engine_free(wk->engine);
        wk_curl_free(wk->set.curl);
        wk_fetcher_free(wk->fetcher);
        wk->fetcher = NULL;
    }
}

static void writer_stopped(void *arg)
{
    struct worker *wk = arg;
    wk->writer = NULL;
    maybe_close(wk);
}

static void drained(void *arg);

static void recheck_drained(uv_timer_t *t)
{
    drained(t->data);
}

/*
 * Every job has ended and its last row is written (or given up at the final
 * deadline): let notifications in flight finish (bounded by their own 15 s
 * timeout), then stop the writer. Nothing here waits on a thread.
 */
static void drained(void *arg)
{
    struct worker *wk = arg;
    if (wk_curl_transfers(wk->set.curl) > 0 && !wk->abandoned) {
        wk->hb_timer.data = wk;
        uv_timer_start(&wk->hb_timer, recheck_drained, 50, 0);
        return;
    }
    uv_timer_stop(&wk->final);
    wk->stopping = true;
    wk_writer_stop(wk->writer, writer_stopped, wk);   /* flushes what is left */
}

/*
 * The drain's last word, grace + FINAL_SLACK_MS after the signal: rows the
 * writer could not commit by now (PostgreSQL away) are dropped and the jobs
 * let go. Nothing is lost: they stay leased to us in PostgreSQL and in our
 * processing list in Redis, and return to the queue when the lease ends.
 */
#define FINAL_SLACK_MS 500
static void on_final(uv_timer_t *t)
{
    struct worker *wk = t->data;
    tq_warn("drain: %d job(s) still waiting for PostgreSQL after the grace period; exiting "
            "without them (they return to the queue when their lease ends)",
            wk_engine_jobs(wk->engine));
    wk->abandoned = true;
    wk_writer_give_up(wk->writer);
    wk_engine_abandon(wk->engine);
}

/* Drained: the fetcher has stopped (its last claims reached the engine) and no job is left. */
static void maybe_drained(void *arg)
{
    struct worker *wk = arg;
    if (wk->fetcher_stopped && !wk->drain_done && wk_engine_idle(wk->engine)) {
        wk->drain_done = true;
        drained(wk);
    }
}

static void fetcher_stopped(void *arg)
{
    struct worker *wk = arg;
    wk->fetcher_stopped = true;
    maybe_drained(wk);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct worker *wk = h->data;
    const char *name = signum == SIGTERM ? "SIGTERM" : "SIGINT";
    if (atomic_exchange(&wk->draining, true)) {
        tq_warn("%s again: still draining %d job(s)", name, wk_engine_jobs(wk->engine));
        return;
    }
    tq_info("%s: draining (no new jobs; jobs in hand finish their step or are handed back)", name);
    uv_timer_stop(&wk->hb_timer);
    uv_timer_start(&wk->final, on_final, (uint64_t)wk->set.grace_ms + FINAL_SLACK_MS, 0);
    /* the fetcher's last batch reaches the engine, which hands it back */
    wk_engine_drain(wk->engine, wk->set.grace_ms, maybe_drained, wk);
    wk_fetcher_stop(wk->fetcher, fetcher_stopped, wk);
}

static void make_worker_id(char *out, size_t len)
{
    char host[64] = "host";
    if (gethostname(host, sizeof(host) - 1) != 0)
        snprintf(host, sizeof(host), "host");   /* the pid and random part keep it unique */
    host[sizeof(host) - 1] = '\0';
    unsigned char r[4] = {0};
    tq_random_bytes(r, sizeof(r));
    /* pid + random: unique per process start, never reused after a restart */
    snprintf(out, len, "%s-%ld-%02x%02x%02x%02x", host, (long)getpid(), r[0], r[1], r[2], r[3]);
}

/*
 * A stop that arrives while the worker is still starting (connecting,
 * checking the schema) must drain like any other, not kill the process with
 * the default action (exit 143): a scale-down or a test may stop a worker
 * the moment it is registered. Until the loop's own signal handles exist,
 * this handler only remembers the signal; it is raised again once they do.
 */
static volatile sig_atomic_t early_signal;

static void remember_signal(int signo)
{
    early_signal = signo;
}

/* A libuv call on our own handles fails only through a bug of ours: say where, and stop. */
static void must(int rc, const char *what)
{
    if (rc != 0)
        tq_panic(__FILE__, __LINE__, what);
}

/* Until the loop owns SIGTERM and SIGINT, remember them (early_signal). */
static void catch_early_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = remember_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
        tq_warn("could not catch SIGTERM/SIGINT during start-up: %s", strerror(errno));
}

/* Process-wide set-up before any connection: thread pool, limits, SIGPIPE. */
static void prepare_process(const struct tq_config *cfg, const char *worker_id)
{
    /* Blocking step work and the heartbeat share the pool: size it first. */
    char pool[16];
    snprintf(pool, sizeof(pool), "%d", cfg->concurrency + 4 > 128 ? 128 : cfg->concurrency + 4);
    if (setenv("UV_THREADPOOL_SIZE", pool, 1) != 0)
        tq_warn("could not size the thread pool (%s threads): %s", pool, strerror(errno));
    wk_blocking_init(cfg->database_url);
    wk_limits_init(cfg, worker_id);
    /* A peer that closes its end (Redis restarted, a scraper gone) must come
       back as EPIPE from write(2), which every client here handles by
       reconnecting; left at its default, SIGPIPE ends the process without a
       word. hiredis and libuv write to sockets without MSG_NOSIGNAL. */
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        tq_warn("could not ignore SIGPIPE: %s", strerror(errno));
}

/* Anything but noeviction silently drops queue keys. 0: fine (or allowed). */
static int check_eviction(struct worker *wk)
{
    char policy[64];
    enum tq_err err = tq_queue_eviction_policy(wk->hb_q, policy, sizeof(policy));
    if (err) {
        tq_warn("could not check redis maxmemory-policy (%s); make sure it is noeviction",
                tq_queue_errstr(wk->hb_q));
        return 0;
    }
    if (strcmp(policy, "noeviction") == 0)
        return 0;
    if (!wk->set.allow_eviction) {
        tq_error("cannot start: redis maxmemory-policy is \"%s\"; anything but noeviction "
                 "silently drops queue keys (set it to noeviction, or TQ_ALLOW_EVICTION=1 "
                 "to run anyway)", policy);
        return -1;
    }
    tq_warn("redis maxmemory-policy is \"%s\" (allowed by TQ_ALLOW_EVICTION)", policy);
    return 0;
}

/* The heartbeat's own connections, and the start-up refusals (startup.c). 0: go on. */
static int connect_services(struct worker *wk)
{
    if (tq_queue_open(wk->cfg, wk->id, &wk->hb_q)) {
        tq_error("cannot start: %s", tq_queue_errstr(wk->hb_q));
        return -1;
    }
    if (check_eviction(wk) != 0)
        return -1;
    if (tq_pg_open(wk->cfg->database_url, &wk->hb_pg)) {
        tq_error("cannot start: %s", tq_pg_errstr(wk->hb_pg));
        return -1;
    }
    if (wk_startup_checks(&wk->set, wk->hb_pg, wk->hb_q) != 0)
        return -1;
    wk_dep_report(WK_DEP_REDIS, TQ_OK, NULL);
    wk_dep_report(WK_DEP_PG, TQ_OK, NULL);
    return 0;
}

/*
 * The loop's parts: HTTP listener, curl, writer, engine, signals, heartbeat,
 * then the fetcher. 0: running (the caller runs the loop).
 */
static int start_loop_parts(struct worker *wk)
{
    const struct tq_config *cfg = wk->cfg;
    if (cfg->http_addr && *cfg->http_addr &&
        wk_http_start(wk->loop, cfg->http_addr, &wk->draining, 64 + 16 * (cfg->concurrency + 4),
                      &wk->http) != 0)
        return -1;
    wk->set.curl = wk_curl_new(wk->loop);   /* libcurl itself starts with the first transfer */
    wk->writer = wk_writer_start(wk->loop, &wk->set, deliver_report, wk);
    wk->dispatch = wk_dispatch_start(&wk->set, wk->routes);
    wk->engine = wk_engine_new(wk->loop, &wk->set, wk->writer, &wk->free_slots, slot_free, wk);
    must(uv_signal_init(wk->loop, &wk->sig_term), "uv_signal_init");
    must(uv_signal_init(wk->loop, &wk->sig_int), "uv_signal_init");
    wk->sig_term.data = wk->sig_int.data = wk;
    must(uv_signal_start(&wk->sig_term, on_signal, SIGTERM), "uv_signal_start");
    must(uv_signal_start(&wk->sig_int, on_signal, SIGINT), "uv_signal_start");
    if (early_signal)
        raise(early_signal);   /* now libuv's: handled by on_signal once the loop runs */
    /* Registered and heartbeating before the fetcher reserves anything, so a
       reaper never takes our first processing list for a dead worker's; and
       only once SIGTERM is ours, so a stop that follows registration drains. */
    if (tq_queue_heartbeat(wk->hb_q, cfg->lease_ms))
        tq_warn("heartbeat: %s", tq_queue_errstr(wk->hb_q));
    must(uv_timer_init(wk->loop, &wk->hb_timer), "uv_timer_init");
    wk->hb_timer.data = wk;
    must(uv_timer_init(wk->loop, &wk->final), "uv_timer_init");
    wk->final.data = wk;
    /* cancel poll every second; heartbeats every lease/3, so tick at least that often */
    uint64_t tick = cfg->lease_ms / 3 < 1000 ? cfg->lease_ms / 3 : 1000;
    must(uv_timer_start(&wk->hb_timer, hb_tick, 0, tick ? tick : 1000), "uv_timer_start");
    wk->fetcher = wk_fetcher_start(wk->loop, &wk->set, &wk->free_slots, deliver_claimed, wk);
    return 0;
}

/* Everything wk_run set up, in reverse; started says the loop ran. */
static void release_all(struct worker *wk, bool started)
{
    if (!started) {
        /* a failed start may have closed handles of its own (a listener that
           could not bind): let their close callbacks run before the loop goes */
        if (wk->http)
            wk_http_close(wk->http);
        uv_run(wk->loop, UV_RUN_DEFAULT);
    }
    wk_dispatch_stop(wk->dispatch);
    wk->dispatch = NULL;
    wk_routes_free(wk->routes);
    tq_queue_close(wk->hb_q);
    tq_pg_close(wk->hb_pg);
    free(wk->cancels);
    free(wk->held);
    free(wk->confirmed);
    wk_metrics_free();
    wk_limits_shutdown();
    wk_blocking_shutdown();
    wk_cred_shutdown();
    curl_global_cleanup();   /* a no-op unless a step's curl_easy_init() started libcurl */
    if (uv_loop_close(wk->loop) != 0)
        tq_warn("exiting with libuv handles still open");
    free(wk->loop);
}

int wk_run(const struct tq_config *cfg)
{
    catch_early_signals();
    struct worker wk;
    memset(&wk, 0, sizeof(wk));
    wk.cfg = cfg;
    make_worker_id(wk.id, sizeof(wk.id));
    atomic_store(&wk.draining, false);
    atomic_store(&wk.free_slots, cfg->concurrency);
    wk_settings_load(&wk.set, cfg, wk.id);
    char why[256];
    if (wk_step_kinds_check(why, sizeof(why)) != 0) {
        tq_error("cannot start: %s", why);
        return 1;
    }
    char rwhy[2048];
    if (wk_routes_load(&wk.set, &wk.routes, rwhy, sizeof(rwhy)) != 0) {
        tq_error("cannot start: %s", rwhy);
        return 1;
    }
    prepare_process(cfg, wk.id);
    wk.loop = tq_xmalloc(sizeof(uv_loop_t));
    must(uv_loop_init(wk.loop), "uv_loop_init");
    if (connect_services(&wk) != 0 || start_loop_parts(&wk) != 0) {
        release_all(&wk, false);
        return 1;
    }
    tq_info("worker %s started: queue %s, %d slot(s), lease %u ms%s%s", wk.id, cfg->queue,
            cfg->concurrency, cfg->lease_ms, wk.http ? ", http " : "",
            wk.http ? cfg->http_addr : "");
    uv_run(wk.loop, UV_RUN_DEFAULT);
    /* every row is written: what the last jobs wrote is told now (bounded) */
    wk_dispatch_stop(wk.dispatch);
    wk.dispatch = NULL;
    if (tq_queue_unregister(wk.hb_q))
        tq_warn("could not unregister from redis: %s; the reaper will after the lease",
                tq_queue_errstr(wk.hb_q));
    tq_info("worker %s stopped: %" PRIuFAST64 " succeeded, %" PRIuFAST64 " failed, %" PRIuFAST64
            " handed back, %" PRIuFAST64 " lost to other workers",
            wk.id, atomic_load(&wk_metrics.jobs_succeeded), atomic_load(&wk_metrics.jobs_failed),
            atomic_load(&wk_metrics.jobs_released), atomic_load(&wk_metrics.jobs_stale));
    release_all(&wk, true);
    return 0;
}
