/*
 * Blocking step work off the loop: fn runs on the libuv thread pool with a
 * platform-database connection borrowed from a small pool (connections are
 * opened on demand and kept; a broken one is reset by tq_pg_conn). A cancel
 * (timeout, drain) sends PQcancel, also from the pool, never from the loop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq/log.h"
#include "tq/util.h"
#include "worker.h"

#define POOL_MAX 64

static struct {
    pthread_mutex_t mu;
    struct tq_pg *idle[POOL_MAX];
    int nidle;
    const struct tq_config *cfg;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER};

void wk_blocking_init(const struct tq_config *cfg)
{
    pool.cfg = cfg;
}

void wk_blocking_shutdown(void)
{
    pthread_mutex_lock(&pool.mu);
    for (int i = 0; i < pool.nidle; i++)
        tq_pg_close(pool.idle[i]);
    pool.nidle = 0;
    pthread_mutex_unlock(&pool.mu);
}

static struct tq_pg *borrow(void)
{
    pthread_mutex_lock(&pool.mu);
    struct tq_pg *pg = pool.nidle ? pool.idle[--pool.nidle] : NULL;
    pthread_mutex_unlock(&pool.mu);
    if (!pg)
        tq_pg_open(pool.cfg->database_url, &pg);
    return pg;
}

static void give_back(struct tq_pg *pg)
{
    pthread_mutex_lock(&pool.mu);
    if (pool.nidle < POOL_MAX) {
        pool.idle[pool.nidle++] = pg;
        pg = NULL;
    }
    pthread_mutex_unlock(&pool.mu);
    tq_pg_close(pg);
}

void wk_step_set_cancel(struct wk_step *s, PGconn *db)
{
    pthread_mutex_lock(&s->cancel_mu);
    if (s->pgcancel)
        PQfreeCancel(s->pgcancel);
    s->pgcancel = db ? PQgetCancel(db) : NULL;
    bool cancelled = s->cancelled;
    pthread_mutex_unlock(&s->cancel_mu);
    /* cancelled before the statement started: do not start it */
    if (cancelled && db && s->pgcancel) {
        char err[256];
        PQcancel(s->pgcancel, err, sizeof(err));
    }
}

static void work(uv_work_t *w)
{
    struct wk_step *s = w->data;
    struct tq_pg *pg = borrow();
    PGconn *db = tq_pg_conn(pg);
    if (!db) {
        snprintf(s->errstr, sizeof(s->errstr), "%s", tq_pg_errstr(pg));
        s->blocking_err = TQ_ECONNECT;
    } else {
        wk_step_set_cancel(s, db);
        s->blocking_err = s->blocking_fn(s, db);
        wk_step_set_cancel(s, NULL);
        /* Never hand a connection back mid-transaction. */
        if (PQtransactionStatus(db) != PQTRANS_IDLE)
            PQclear(PQexec(db, "ROLLBACK"));
    }
    give_back(pg);
}

static void after(uv_work_t *w, int status)
{
    struct wk_step *s = w->data;
    enum tq_err err = status == UV_ECANCELED ? TQ_ECANCELED : s->blocking_err;
    wk_step_done(s, err);
}

enum tq_err wk_step_blocking(struct wk_step *s, wk_blocking_fn *fn)
{
    s->blocking_fn = fn;
    s->work.data = s;
    int rc = uv_queue_work(s->loop, &s->work, work, after);
    if (rc != 0) {
        snprintf(s->errstr, sizeof(s->errstr), "could not queue work: %s", uv_strerror(rc));
        return TQ_EIO;
    }
    return TQ_OK;
}

static void cancel_work(uv_work_t *w)
{
    struct wk_step *s = w->data;
    pthread_mutex_lock(&s->cancel_mu);
    if (s->pgcancel) {
        char err[256];
        PQcancel(s->pgcancel, err, sizeof(err));
    }
    pthread_mutex_unlock(&s->cancel_mu);
}

static void cancel_after(uv_work_t *w, int status)
{
    (void)status;
    wk_step_unref(w->data);
}

void wk_step_blocking_cancel(struct wk_step *s)
{
    pthread_mutex_lock(&s->cancel_mu);
    s->cancelled = true;
    pthread_mutex_unlock(&s->cancel_mu);
    /* Not started yet: libuv can drop it, and after() reports TQ_ECANCELED. */
    if (uv_cancel((uv_req_t *)&s->work) == 0)
        return;
    s->cancel_work.data = s;
    s->refs++;
    if (uv_queue_work(s->loop, &s->cancel_work, cancel_work, cancel_after) != 0)
        s->refs--;
}

static void offload_work(uv_work_t *w)
{
    struct wk_step *s = w->data;
    s->blocking_err = s->offload_fn(s);
}

enum tq_err wk_step_offload(struct wk_step *s, wk_offload_fn *fn)
{
    s->offload_fn = fn;
    s->work.data = s;
    int rc = uv_queue_work(s->loop, &s->work, offload_work, after);
    if (rc != 0) {
        snprintf(s->errstr, sizeof(s->errstr), "could not queue work: %s", uv_strerror(rc));
        return TQ_EIO;
    }
    return TQ_OK;
}
