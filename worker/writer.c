/*
 * The writer thread: group commit of job state. The loop queues step
 * transitions, attempt records and job rows; the writer takes everything
 * queued, writes it in one PostgreSQL transaction (tq_store_flush), then
 * runs the Redis side of jobs that ended (ack, hand back, park, bury) and
 * reports back to the loop. Transitions of one step waiting in the same
 * batch are merged, so a fast step costs one row, not two.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq/log.h"
#include "tq/util.h"
#include "loop.h"
#include "worker.h"

struct pstep {
    struct wk_job *job;
    struct tq_step_row row;   /* error/output point into the owned copies */
    char *error, *output;
};
struct pattempt {
    struct wk_job *job;
    struct tq_attempt_row row;
    char *error;
};
struct pjob {
    struct wk_job *job;
    struct tq_job_row row;
    char *reason, *failed_step;
    enum wk_redis_act act;
    char id[24];
    uint64_t due_ms;
    bool drop_only;           /* no row: only the Redis ack (stale job) */
};

struct batch {
    struct pstep *steps;
    size_t nsteps, capsteps;
    struct pattempt *attempts;
    size_t nattempts, capattempts;
    struct pjob *jobs;
    size_t njobs, capjobs;
};

struct wk_writer {
    uv_loop_t *loop;
    struct wk_settings set;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct batch pending;
    bool stop;
    struct tq_pg *pg;
    struct tq_queue *q;
    uv_async_t async;
    atomic_bool give_up;      /* shutdown past its grace: drop what PostgreSQL will not take */
    atomic_bool exited;       /* the thread has returned; the loop joins it */
    bool joined;
    void (*stopped_cb)(void *);
    void *stopped_arg;
    pthread_mutex_t rmu;
    struct wk_report *reports, *reports_tail;
    void (*deliver)(void *, struct wk_report *);
    void *arg;
};

static void *grow(void *p, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return p;
    *cap = *cap ? *cap * 2 : 64;
    return tq_xrealloc(p, *cap * size);
}

static char *dup_or_null(const char *s)
{
    return s ? tq_xstrdup(s) : NULL;
}

void wk_writer_step(struct wk_writer *w, struct wk_job *job, const struct tq_step_row *row)
{
    pthread_mutex_lock(&w->mu);
    struct batch *b = &w->pending;
    /* Merge with a queued transition of the same step (newest wins, counts add up). */
    for (size_t i = b->nsteps; i-- > 0;) {
        struct pstep *p = &b->steps[i];
        if (p->row.job_id != row->job_id || p->row.step != row->step)
            continue;
        p->row.status = row->status;
        p->row.attempts_delta += row->attempts_delta;
        p->row.undo_attempts_delta += row->undo_attempts_delta;
        p->row.outage_attempts_delta += row->outage_attempts_delta;
        p->row.undo_outage_attempts_delta += row->undo_outage_attempts_delta;
        if (row->started_ms)
            p->row.started_ms = row->started_ms;
        p->row.finished_ms = row->finished_ms;
        if (row->error) {
            free(p->error);
            p->error = tq_xstrdup(row->error);
        }
        if (row->output) {
            free(p->output);
            p->output = tq_xstrdup(row->output);
        }
        p->row.progress |= row->progress;
        goto out;
    }
    b->steps = grow(b->steps, &b->capsteps, b->nsteps, sizeof(*b->steps));
    struct pstep *p = &b->steps[b->nsteps++];
    p->job = job;
    p->row = *row;
    p->error = dup_or_null(row->error);
    p->output = dup_or_null(row->output);
out:
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

void wk_writer_attempt(struct wk_writer *w, struct wk_job *job, const struct tq_attempt_row *row)
{
    pthread_mutex_lock(&w->mu);
    struct batch *b = &w->pending;
    b->attempts = grow(b->attempts, &b->capattempts, b->nattempts, sizeof(*b->attempts));
    struct pattempt *p = &b->attempts[b->nattempts++];
    p->job = job;
    p->row = *row;
    p->error = dup_or_null(row->error);
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

static void add_job(struct wk_writer *w, struct wk_job *job, const struct tq_job_row *row,
                    enum wk_redis_act act, const char *id, uint64_t due_ms, bool drop_only)
{
    pthread_mutex_lock(&w->mu);
    struct batch *b = &w->pending;
    /* A queued status-only row of this job (no event, no Redis action) is
       superseded by this one: one UPDATE instead of two rounds. The tenant
       keeps the newest status given; reason and step the newest given. */
    for (size_t i = b->njobs; row && i-- > 0;) {
        struct pjob *q = &b->jobs[i];
        if (q->drop_only || q->row.job_id != row->job_id)
            continue;
        if (q->act != WK_NONE || q->row.event || q->row.epoch != row->epoch)
            break;
        enum tq_tenant_status tstatus = row->tenant_status ? row->tenant_status
                                                           : q->row.tenant_status;
        q->row = *row;
        q->row.tenant_status = tstatus;
        if (row->reason) {
            free(q->reason);
            q->reason = tq_xstrdup(row->reason);
        }
        if (row->failed_step) {
            free(q->failed_step);
            q->failed_step = tq_xstrdup(row->failed_step);
        }
        q->act = act;
        snprintf(q->id, sizeof(q->id), "%s", id ? id : "");
        q->due_ms = due_ms;
        goto out;
    }
    b->jobs = grow(b->jobs, &b->capjobs, b->njobs, sizeof(*b->jobs));
    struct pjob *p = &b->jobs[b->njobs++];
    memset(p, 0, sizeof(*p));
    p->job = job;
    if (row) {
        p->row = *row;
        p->reason = dup_or_null(row->reason);
        p->failed_step = dup_or_null(row->failed_step);
    }
    p->act = act;
    snprintf(p->id, sizeof(p->id), "%s", id ? id : "");
    p->due_ms = due_ms;
    p->drop_only = drop_only;
out:
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

void wk_writer_job(struct wk_writer *w, struct wk_job *job, const struct tq_job_row *row,
                   enum wk_redis_act act, const char *redis_id, uint64_t due_ms)
{
    add_job(w, job, row, act, redis_id, due_ms, false);
}

void wk_writer_drop(struct wk_writer *w, struct wk_job *job, const char *redis_id)
{
    add_job(w, job, NULL, WK_ACK, redis_id, 0, true);
}

static void batch_free(struct batch *b)
{
    for (size_t i = 0; i < b->nsteps; i++) {
        free(b->steps[i].error);
        free(b->steps[i].output);
    }
    for (size_t i = 0; i < b->nattempts; i++)
        free(b->attempts[i].error);
    for (size_t i = 0; i < b->njobs; i++) {
        free(b->jobs[i].reason);
        free(b->jobs[i].failed_step);
    }
    free(b->steps);
    free(b->attempts);
    free(b->jobs);
    memset(b, 0, sizeof(*b));
}

static void report(struct wk_writer *w, struct wk_job *job, int what)
{
    struct wk_report *r = tq_xcalloc(1, sizeof(*r));
    r->job = job;
    r->what = what;
    pthread_mutex_lock(&w->rmu);
    if (w->reports_tail)
        w->reports_tail->next = r;
    else
        w->reports = r;
    w->reports_tail = r;
    pthread_mutex_unlock(&w->rmu);
    uv_async_send(&w->async);
}

static void async_closed(uv_handle_t *h);

static void on_async(uv_async_t *a)
{
    struct wk_writer *w = a->data;
    if (atomic_load(&w->exited) && !w->joined) {
        /* the thread returned (it sent this wake-up last): joining does not wait */
        pthread_join(w->th, NULL);
        w->joined = true;
    }
    pthread_mutex_lock(&w->rmu);
    struct wk_report *r = w->reports;
    w->reports = w->reports_tail = NULL;
    pthread_mutex_unlock(&w->rmu);
    while (r) {
        struct wk_report *next = r->next;
        r->next = NULL;
        w->deliver(w->arg, r);
        r = next;
    }
    if (w->joined && !uv_is_closing((uv_handle_t *)&w->async)) {
        tq_pg_close(w->pg);
        tq_queue_close(w->q);
        void (*cb)(void *) = w->stopped_cb;
        void *arg = w->stopped_arg;
        uv_close((uv_handle_t *)&w->async, async_closed);
        if (cb)
            cb(arg);
    }
}

/*
 * PostgreSQL first; retried until it commits (nothing is lost while PG is
 * away), or until a shutdown gives up: false then, and nothing was written.
 */
static bool write_rows(struct wk_writer *w, struct batch *b, struct tq_flush_result **res,
                       size_t *nres)
{
    struct tq_flush f = {0};
    f.worker = w->set.worker_id;
    f.lease_ms = w->set.cfg->lease_ms;
    f.steps = tq_xcalloc(b->nsteps + 1, sizeof(*f.steps));
    for (size_t i = 0; i < b->nsteps; i++) {
        f.steps[i] = b->steps[i].row;
        f.steps[i].error = b->steps[i].error;
        f.steps[i].output = b->steps[i].output;
    }
    f.nsteps = b->nsteps;
    f.attempts = tq_xcalloc(b->nattempts + 1, sizeof(*f.attempts));
    for (size_t i = 0; i < b->nattempts; i++) {
        f.attempts[i] = b->attempts[i].row;
        f.attempts[i].error = b->attempts[i].error;
    }
    f.nattempts = b->nattempts;
    f.jobs = tq_xcalloc(b->njobs + 1, sizeof(*f.jobs));
    for (size_t i = 0; i < b->njobs; i++) {
        if (b->jobs[i].drop_only)
            continue;
        f.jobs[f.njobs] = b->jobs[i].row;
        f.jobs[f.njobs].reason = b->jobs[i].reason;
        f.jobs[f.njobs].failed_step = b->jobs[i].failed_step;
        f.njobs++;
    }
    uint32_t backoff = 100;
    bool written = false;
    while (!atomic_load(&w->give_up)) {
        enum tq_err err = tq_store_flush(w->pg, &f, res, nres);
        if (!err) {
            wk_dep_report(WK_DEP_PG, TQ_OK, NULL);
            atomic_fetch_add(&wk_metrics.flushes, 1);
            atomic_fetch_add(&wk_metrics.flushed_rows, f.nsteps + f.nattempts + f.njobs);
            written = true;
            break;
        }
        wk_dep_report(WK_DEP_PG, err, tq_pg_errstr(w->pg));
        tq_error("writer: %s; retrying in %u ms", tq_pg_errstr(w->pg), backoff);
        /* sleep in short steps: a shutdown that gives up must not wait out the backoff */
        for (uint64_t until = tq_mono_ms() + backoff;
             tq_mono_ms() < until && !atomic_load(&w->give_up);)
            tq_sleep_ms(20);
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
    if (!written)
        tq_warn("writer: shutting down with %zu step, %zu attempt and %zu job row(s) unwritten;"
                " their jobs stay leased and return to the queue when the lease ends",
                f.nsteps, f.nattempts, f.njobs);
    free(f.steps);
    free(f.attempts);
    free(f.jobs);
    return written;
}

static bool is_stale(struct tq_flush_result *res, size_t n, int64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (res[i].job_id == id)
            return res[i].stale;
    return false;
}

/* The rows of b the fence refused (their jobs are another worker's now). */
static size_t fenced_rows(const struct batch *b, struct tq_flush_result *res, size_t nres)
{
    size_t n = 0;
    for (size_t i = 0; i < b->nsteps; i++)
        n += is_stale(res, nres, b->steps[i].row.job_id);
    for (size_t i = 0; i < b->nattempts; i++)
        n += is_stale(res, nres, b->attempts[i].row.job_id);
    for (size_t i = 0; i < b->njobs; i++)
        n += !b->jobs[i].drop_only && is_stale(res, nres, b->jobs[i].row.job_id);
    return n;
}

/* Redis after PostgreSQL: a few tries, then leave leftovers to the reaper. */
static void redis_actions(struct wk_writer *w, struct batch *b, struct tq_flush_result *res,
                          size_t nres)
{
    const char **ack = tq_xcalloc(b->njobs + 1, sizeof(char *));
    const char **rel = tq_xcalloc(b->njobs + 1, sizeof(char *));
    size_t nack = 0, nrel = 0;
    for (size_t i = 0; i < b->njobs; i++) {
        struct pjob *p = &b->jobs[i];
        if (p->act == WK_NONE)
            continue;
        bool stale = !p->drop_only && is_stale(res, nres, p->row.job_id);
        enum wk_redis_act act = stale ? WK_ACK : p->act;
        for (int tries = 0; tries < 3; tries++) {
            enum tq_err err = TQ_OK;
            if (act == WK_ACK) {
                ack[nack++] = p->id;
            } else if (act == WK_RELEASE) {
                rel[nrel++] = p->id;
            } else if (act == WK_PARK) {
                err = tq_queue_park(w->q, p->id, p->due_ms);
            } else if (act == WK_BURY) {
                err = tq_queue_bury(w->q, p->id);
            }
            if (!err)
                break;
            tq_warn("writer: %s", tq_queue_errstr(w->q));
            tq_sleep_ms(200);
        }
    }
    for (int tries = 0; tries < 3 && nack; tries++) {
        if (tq_queue_ack_batch(w->q, ack, nack) == TQ_OK)
            break;
        tq_warn("writer: could not ack %zu job(s): %s", nack, tq_queue_errstr(w->q));
        tq_sleep_ms(200);
    }
    for (int tries = 0; tries < 3 && nrel; tries++) {
        if (tq_queue_release_batch(w->q, rel, nrel) == TQ_OK)
            break;
        tq_warn("writer: could not hand back %zu job(s): %s", nrel, tq_queue_errstr(w->q));
        tq_sleep_ms(200);
    }
    free(ack);
    free(rel);
}

static void *writer_main(void *arg)
{
    struct wk_writer *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (!w->stop && !w->pending.nsteps && !w->pending.nattempts && !w->pending.njobs)
            pthread_cond_wait(&w->cond, &w->mu);
        struct batch b = w->pending;
        memset(&w->pending, 0, sizeof(w->pending));
        bool stop = w->stop;
        pthread_mutex_unlock(&w->mu);
        if (!b.nsteps && !b.nattempts && !b.njobs) {
            batch_free(&b);
            if (stop)
                break;
            continue;
        }
        struct tq_flush_result *res = NULL;
        size_t nres = 0;
        if (!write_rows(w, &b, &res, &nres)) {
            /* no Redis action and no report: the ids stay in our processing list */
            free(res);
            batch_free(&b);
            continue;
        }
        bool any_stale = false;
        for (size_t i = 0; i < nres && !any_stale; i++)
            any_stale = res[i].stale;
        if (any_stale)
            atomic_fetch_add(&wk_metrics.rows_fenced, fenced_rows(&b, res, nres));
        redis_actions(w, &b, res, nres);
        /* Reports in order: stale/cancel first, then the ends. */
        for (size_t i = 0; i < nres; i++) {
            struct wk_job *job = NULL;
            for (size_t k = 0; k < b.nsteps && !job; k++)
                if (b.steps[k].row.job_id == res[i].job_id)
                    job = b.steps[k].job;
            for (size_t k = 0; k < b.nattempts && !job; k++)
                if (b.attempts[k].row.job_id == res[i].job_id)
                    job = b.attempts[k].job;
            for (size_t k = 0; k < b.njobs && !job; k++)
                if (!b.jobs[k].drop_only && b.jobs[k].row.job_id == res[i].job_id)
                    job = b.jobs[k].job;
            if (!job)
                continue;
            if (res[i].stale)
                report(w, job, WK_R_STALE);
            else if (res[i].cancel_requested)
                report(w, job, WK_R_CANCEL);
        }
        for (size_t i = 0; i < b.njobs; i++)
            if (b.jobs[i].act != WK_NONE)
                report(w, b.jobs[i].job, WK_R_ENDED);
        free(res);
        batch_free(&b);
    }
    atomic_store(&w->exited, true);
    uv_async_send(&w->async);   /* the loop joins us and closes the handle */
    return NULL;
}

struct wk_writer *wk_writer_start(uv_loop_t *loop, const struct wk_settings *set,
                                  void (*deliver)(void *, struct wk_report *), void *arg)
{
    struct wk_writer *w = tq_xcalloc(1, sizeof(*w));
    w->loop = loop;
    w->set = *set;
    w->deliver = deliver;
    w->arg = arg;
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->rmu, NULL);
    pthread_cond_init(&w->cond, NULL);
    tq_pg_open(set->cfg->database_url, &w->pg);   /* reconnects on first use if down */
    tq_queue_open(set->cfg, set->worker_id, &w->q);
    atomic_init(&w->give_up, false);
    atomic_init(&w->exited, false);
    uv_async_init(loop, &w->async, on_async);
    w->async.data = w;
    if (pthread_create(&w->th, NULL, writer_main, w) != 0)
        tq_panic(__FILE__, __LINE__, "cannot start the writer thread");
    return w;
}

static void async_closed(uv_handle_t *h)
{
    struct wk_writer *w = h->data;
    pthread_mutex_destroy(&w->mu);
    pthread_mutex_destroy(&w->rmu);
    pthread_cond_destroy(&w->cond);
    free(w);
}

void wk_writer_stop(struct wk_writer *w, void (*cb)(void *arg), void *arg)
{
    w->stopped_cb = cb;
    w->stopped_arg = arg;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

void wk_writer_give_up(struct wk_writer *w)
{
    atomic_store(&w->give_up, true);
}
