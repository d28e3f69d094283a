/*
 * Blocking step work off the loop: fn runs on the libuv thread pool with a
 * platform-database connection borrowed from a small pool (connections are
 * opened on demand and kept; a broken one is reset by tq_pg_conn). A cancel
 * (timeout, drain) sends PQcancel, also from the pool, never from the loop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "step_int.h"
#include "tq/log.h"
#include "tq/pg.h"
#include "tq/util.h"

#define POOL_MAX 64

static struct {
    pthread_mutex_t mu;
    struct tq_pg *idle[POOL_MAX];
    int nidle;
    const char *database_url;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER};

void wk_blocking_init(const char *database_url)
{
    pool.database_url = database_url;
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
        tq_pg_open(pool.database_url, &pg);
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
    struct wk_step_run *r = wk_step_run_of(s);
    pthread_mutex_lock(&r->cancel_mu);
    if (r->pgcancel)
        PQfreeCancel(r->pgcancel);
    r->pgcancel = db ? PQgetCancel(db) : NULL;
    pthread_mutex_unlock(&r->cancel_mu);
    /* cancelled before the statement started: do not start it */
    if (atomic_load(&r->cancelled) && db) {
        pthread_mutex_lock(&r->cancel_mu);
        if (r->pgcancel) {
            char err[256];
            PQcancel(r->pgcancel, err, sizeof(err));
        }
        pthread_mutex_unlock(&r->cancel_mu);
    }
}

static void work(uv_work_t *w)
{
    struct wk_step_run *r = w->data;
    struct wk_step *s = &r->pub;
    struct tq_pg *pg = borrow();
    PGconn *db = tq_pg_conn(pg);
    if (!db) {
        snprintf(s->errstr, sizeof(s->errstr), "%s", tq_pg_errstr(pg));
        r->blocking_err = TQ_ECONNECT;
        s->unsent = true;   /* no connection: the statement never left */
    } else {
        wk_step_set_cancel(s, db);
        r->blocking_err = r->blocking_fn(s, db);
        wk_step_set_cancel(s, NULL);
        /* Never hand a connection back mid-transaction. */
        if (PQtransactionStatus(db) != PQTRANS_IDLE)
            PQclear(PQexec(db, "ROLLBACK"));
    }
    give_back(pg);
}

static void after(uv_work_t *w, int status)
{
    struct wk_step_run *r = w->data;
    if (status == UV_ECANCELED)
        r->pub.unsent = true;   /* dropped before it ran */
    wk_step_done(&r->pub, status == UV_ECANCELED ? TQ_ECANCELED : r->blocking_err);
}

enum tq_err wk_step_blocking(struct wk_step *s, wk_blocking_fn *fn)
{
    struct wk_step_run *r = wk_step_run_of(s);
    r->blocking_fn = fn;
    r->work.data = r;
    int rc = uv_queue_work(s->loop, &r->work, work, after);
    if (rc != 0) {
        snprintf(s->errstr, sizeof(s->errstr), "could not queue work: %s", uv_strerror(rc));
        return TQ_EIO;
    }
    return TQ_OK;
}

static void cancel_work(uv_work_t *w)
{
    struct wk_step_run *r = w->data;
    pthread_mutex_lock(&r->cancel_mu);
    if (r->pgcancel) {
        char err[256];
        PQcancel(r->pgcancel, err, sizeof(err));
    }
    pthread_mutex_unlock(&r->cancel_mu);
}

static void cancel_after(uv_work_t *w, int status)
{
    (void)status;
    wk_step_unref(w->data);
}

void wk_step_blocking_cancel(struct wk_step *s)
{
    struct wk_step_run *r = wk_step_run_of(s);
    atomic_store(&r->cancelled, true);
    /* Not started yet: libuv can drop it, and after() reports TQ_ECANCELED. */
    if (uv_cancel((uv_req_t *)&r->work) == 0)
        return;
    r->cancel_work.data = r;
    r->refs++;
    if (uv_queue_work(s->loop, &r->cancel_work, cancel_work, cancel_after) != 0)
        r->refs--;
}

static void offload_work(uv_work_t *w)
{
    struct wk_step_run *r = w->data;
    r->blocking_err = r->offload_fn(&r->pub);
}

enum tq_err wk_step_offload(struct wk_step *s, wk_offload_fn *fn)
{
    struct wk_step_run *r = wk_step_run_of(s);
    r->offload_fn = fn;
    r->work.data = r;
    int rc = uv_queue_work(s->loop, &r->work, offload_work, after);
    if (rc != 0) {
        snprintf(s->errstr, sizeof(s->errstr), "could not queue work: %s", uv_strerror(rc));
        return TQ_EIO;
    }
    return TQ_OK;
}
