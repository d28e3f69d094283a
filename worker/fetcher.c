/*
 * The fetcher thread: while the worker has free job slots, move a batch of
 * ids from ready to our processing list (one Lua call), claim them in
 * PostgreSQL (one statement), and hand the claimed jobs to the loop. Ids
 * that are not claimable are acked (a duplicate delivery); jobs delivered
 * too often without progress, or whose pipeline is gone, go to the dead
 * list. It also promotes due ids from the delayed set.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq/jobid.h"
#include "tq/log.h"
#include "tq/util.h"
#include "loop.h"
#include "worker.h"


struct wk_fetcher {
    struct wk_settings set;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    atomic_bool stop;
    atomic_int *free_slots;
    struct tq_queue *q;
    struct tq_pg *pg;
    /* Parsed pipelines by hash, shared with the jobs that run them: at most
       set.pipeline_cache kept unused, least recently used evicted first;
       one a job holds is never evicted (its refs come back from the loop). */
    struct wk_pipeline **pipelines;
    size_t npipelines, cappipelines;
    uint64_t tick;
    uv_async_t async;
    atomic_bool exited;       /* the thread has returned; the loop joins it */
    bool joined;
    void (*stopped_cb)(void *);
    void *stopped_arg;
    pthread_mutex_t omu;
    struct wk_claimed *out, *out_tail;
    void (*deliver)(void *, struct wk_claimed *);
    void *arg;
};

/* Drop least recently used pipelines no job holds until at most keep remain. */
static void evict(struct wk_fetcher *f, size_t keep)
{
    while (f->npipelines > keep) {
        size_t victim = f->npipelines;
        for (size_t i = 0; i < f->npipelines; i++)
            if (atomic_load(&f->pipelines[i]->refs) == 0 &&
                (victim == f->npipelines || f->pipelines[i]->used < f->pipelines[victim]->used))
                victim = i;
        if (victim == f->npipelines)
            return;   /* every one is in use: the cache holds what jobs hold */
        tq_pipeline_free(f->pipelines[victim]->pl);
        free(f->pipelines[victim]);
        f->pipelines[victim] = f->pipelines[--f->npipelines];
    }
}

/* The pipeline with that hash, held for one job (wk_pipeline_release). */
static struct wk_pipeline *pipeline(struct wk_fetcher *f, const char *hash, char *why,
                                    size_t whylen, bool *gone)
{
    *gone = false;
    for (size_t i = 0; i < f->npipelines; i++)
        if (strcmp(f->pipelines[i]->pl->hash, hash) == 0) {
            f->pipelines[i]->used = ++f->tick;
            atomic_fetch_add(&f->pipelines[i]->refs, 1);
            return f->pipelines[i];
        }
    char *text = NULL;
    enum tq_err err = tq_pg_pipeline_get(f->pg, hash, &text);
    if (err) {
        snprintf(why, whylen, "%s", tq_pg_errstr(f->pg));
        *gone = err == TQ_ENOTFOUND;
        return NULL;
    }
    struct tq_pipeline *p = NULL;
    err = tq_pipeline_parse(text, strlen(text), "stored pipeline", &p, why, whylen);
    free(text);
    if (err) {
        *gone = true;   /* it will not parse next time either */
        return NULL;
    }
    evict(f, (size_t)f->set.pipeline_cache - 1);
    if (f->npipelines == f->cappipelines) {
        f->cappipelines = f->cappipelines ? 2 * f->cappipelines : 16;
        f->pipelines = tq_xrealloc(f->pipelines, f->cappipelines * sizeof(*f->pipelines));
    }
    struct wk_pipeline *e = tq_xcalloc(1, sizeof(*e));
    e->pl = p;
    e->used = ++f->tick;
    atomic_init(&e->refs, 1);
    f->pipelines[f->npipelines++] = e;
    return e;
}

void wk_pipeline_release(struct wk_pipeline *p)
{
    atomic_fetch_sub(&p->refs, 1);
}

static void hand_over(struct wk_fetcher *f, struct wk_claimed *c)
{
    pthread_mutex_lock(&f->omu);
    if (f->out_tail)
        f->out_tail->next = c;
    else
        f->out = c;
    f->out_tail = c;
    pthread_mutex_unlock(&f->omu);
}

static void on_async(uv_async_t *a)
{
    struct wk_fetcher *f = a->data;
    bool exited = atomic_load(&f->exited) && !f->joined;
    if (exited) {
        /* the thread returned (it sent this wake-up last): joining does not wait */
        int rc = pthread_join(f->th, NULL);
        if (rc != 0)
            tq_warn("fetcher: could not join its thread: %s", strerror(rc));
        f->joined = true;
        tq_queue_close(f->q);
        tq_pg_close(f->pg);
        f->q = NULL;
        f->pg = NULL;
    }
    pthread_mutex_lock(&f->omu);
    struct wk_claimed *c = f->out;
    f->out = f->out_tail = NULL;
    pthread_mutex_unlock(&f->omu);
    while (c) {
        struct wk_claimed *next = c->next;
        c->next = NULL;
        f->deliver(f->arg, c);
        c = next;
    }
    if (exited && f->stopped_cb) {
        void (*cb)(void *) = f->stopped_cb;
        f->stopped_cb = NULL;
        cb(f->stopped_arg);
    }
}

/*
 * Tell the loop there are claims (or that we ended). uv_async_send fails only
 * on a handle that is not an async one: a bug, said once.
 */
static void wake_loop(struct wk_fetcher *f)
{
    static atomic_bool said;
    if (uv_async_send(&f->async) != 0 && !atomic_exchange(&said, true))
        tq_error("fetcher: could not wake the loop; claims wait for its next poke");
}

static void backoff(struct wk_fetcher *f, uint32_t *ms)
{
    uint64_t until = tq_mono_ms() + *ms;
    while (!atomic_load(&f->stop) && tq_mono_ms() < until)
        tq_sleep_ms(50);
    *ms = *ms * 2 > 5000 ? 5000 : *ms * 2;
}

/*
 * Ids that were delivered but not claimed. A job running elsewhere or not
 * yet due is a duplicate delivery (debug); an id with no job, or of a job
 * that has ended, is tampering or a stale push: a warning, rate-limited.
 */
static void explain_unclaimed(struct wk_fetcher *f, const int64_t *ids, size_t n)
{
    static struct tq_ratelimit rl = {.period_ms = 10000, .burst = 10};   /* fetcher thread only */
    if (n == 0)
        return;
    char (*st)[24] = tq_xcalloc(n, sizeof(*st));
    if (tq_pg_job_states(f->pg, ids, n, st) == TQ_OK) {
        for (size_t i = 0; i < n; i++) {
            bool live = strcmp(st[i], "queued") == 0 || strcmp(st[i], "running") == 0;
            uint64_t suppressed = 0;
            if (live) {
                tq_debug("fetcher: job %" PRId64 " (%s) delivered twice; dropped the copy", ids[i],
                         st[i]);
            } else if (tq_ratelimit_ok(&rl, tq_mono_ms(), &suppressed)) {
                if (st[i][0])
                    tq_warn("fetcher: job %" PRId64 " in the ready list is already %s; dropped",
                            ids[i], st[i]);
                else
                    tq_warn("fetcher: %" PRId64 " in the ready list is no job; dropped", ids[i]);
                if (suppressed)
                    tq_warn("fetcher: %llu more ids that were not claimable were not logged",
                            (unsigned long long)suppressed);
            } else if (rl.dropped == 1) {
                tq_warn("fetcher: more ids that are not claimable; they are not logged for up "
                        "to %u s", rl.period_ms / 1000);
            }
        }
    } else {
        tq_debug("fetcher: could not read why %zu id(s) were not claimable: %s", n,
                 tq_pg_errstr(f->pg));
    }
    free(st);
}

/* Log a Redis failure of a follow-up action once; the reaper or reconciler repairs it. */
static void queue_failed(struct wk_fetcher *f, enum tq_err err, const char *what, const char *id)
{
    if (err)
        tq_warn("fetcher: could not %s %s: %s; the reaper or the reconciler will", what, id,
                tq_queue_errstr(f->q));
}

/* Reserved ids the claim did not take: dead-lettered, or already decided elsewhere. */
static void settle_unclaimed(struct wk_fetcher *f, char **ids, size_t n,
                             const struct tq_claimed *cl, size_t ncl, const int64_t *dead,
                             size_t ndead)
{
    int64_t *unclaimed = tq_xcalloc(n, sizeof(int64_t));
    size_t nun = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        bool valid = tq_job_id_parse(ids[i], strlen(ids[i]), &v, NULL);
        bool claimed = false, is_dead = false;
        for (size_t k = 0; k < ncl && !claimed; k++)
            claimed = cl[k].c.job_id == v;
        for (size_t k = 0; k < ndead && !is_dead; k++)
            is_dead = dead[k] == v;
        if (is_dead) {
            tq_error("fetcher: job %s delivered %d times without progress; dead-lettered", ids[i],
                     f->set.max_deliveries);
            queue_failed(f, tq_queue_bury(f->q, ids[i]), "dead-letter", ids[i]);
            atomic_fetch_add(&wk_metrics.jobs_dead, 1);
        } else if (!claimed && valid) {
            const char *one[] = {ids[i]};
            /* the claim decided; say why below */
            queue_failed(f, tq_queue_ack_batch(f->q, one, 1), "drop unclaimable", ids[i]);
            unclaimed[nun++] = v;
        }
    }
    explain_unclaimed(f, unclaimed, nun);
    free(unclaimed);
}

/* Claimed jobs to the loop, each with its pipeline; a job whose pipeline is unusable is buried. */
static void hand_over_claimed(struct wk_fetcher *f, struct tq_claimed *cl, size_t ncl)
{
    for (size_t k = 0; k < ncl; k++) {
        char why[512] = "";
        bool gone = false;
        struct wk_pipeline *p = pipeline(f, cl[k].c.pipeline_hash, why, sizeof(why), &gone);
        char id[24];
        snprintf(id, sizeof(id), "%" PRId64, cl[k].c.job_id);
        if (!p) {
            if (gone) {
                char reason[600];
                snprintf(reason, sizeof(reason), "pipeline %.12s cannot be used: %s",
                         cl[k].c.pipeline_hash, why);
                tq_error("fetcher: job %s: %s; dead-lettered", id, reason);
                if (tq_store_dead(f->pg, cl[k].c.job_id, cl[k].c.epoch, reason))
                    tq_warn("fetcher: could not record job %s dead: %s", id, tq_pg_errstr(f->pg));
                queue_failed(f, tq_queue_bury(f->q, id), "dead-letter", id);
                atomic_fetch_add(&wk_metrics.jobs_dead, 1);
            } else {
                tq_error("fetcher: job %s: %s; handing it back", id, why);
                const char *one[] = {id};
                queue_failed(f, tq_queue_release_batch(f->q, one, 1), "hand back", id);
            }
            json_decref(cl[k].steps);
            continue;
        }
        struct wk_claimed *c = tq_xcalloc(1, sizeof(*c));
        c->cl = cl[k];
        c->pl = p->pl;
        c->pref = p;
        memcpy(c->id, id, sizeof(id));
        atomic_fetch_sub(f->free_slots, 1);
        hand_over(f, c);
    }
}

static void cycle(struct wk_fetcher *f, uint32_t *redis_backoff, uint32_t *pg_backoff)
{
    int free_slots = atomic_load(f->free_slots);
    size_t want = (size_t)(free_slots < f->set.batch ? free_slots : f->set.batch);
    char **ids = NULL;
    size_t n = 0;
    enum tq_err err = tq_queue_reserve_batch(f->q, want, 1000, &ids, &n);
    if (err) {
        wk_dep_report(WK_DEP_REDIS, err, tq_queue_errstr(f->q));
        tq_error("fetcher: %s", tq_queue_errstr(f->q));
        backoff(f, redis_backoff);
        return;
    }
    wk_dep_report(WK_DEP_REDIS, TQ_OK, NULL);
    *redis_backoff = 100;
    if (n == 0)
        return;
    if (atomic_load(&f->stop)) {
        /* draining: a claim now would only be handed back (and count a delivery) */
        if (tq_queue_release_batch(f->q, (const char *const *)ids, n) != TQ_OK)
            tq_warn("fetcher: could not hand back %zu id(s) at shutdown: %s; the reaper will",
                    n, tq_queue_errstr(f->q));
        for (size_t i = 0; i < n; i++)
            free(ids[i]);
        free(ids);
        return;
    }

    /* reserve already dead-lettered (and logged) every value that is not a job id */
    atomic_fetch_add(&wk_metrics.jobs_dead, tq_queue_garbage_taken(f->q));
    int64_t *jid = tq_xcalloc(n, sizeof(int64_t));
    size_t nj = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        if (tq_job_id_parse(ids[i], strlen(ids[i]), &v, NULL))
            jid[nj++] = v;
    }
    struct tq_claimed *cl = NULL;
    int64_t *dead = NULL;
    size_t ncl = 0, ndead = 0;
    err = tq_store_claim(f->pg, jid, nj, f->set.worker_id, f->set.cfg->lease_ms,
                         f->set.max_deliveries, &cl, &ncl, &dead, &ndead);
    if (err) {
        wk_dep_report(WK_DEP_PG, err, tq_pg_errstr(f->pg));
        tq_error("fetcher: %s; handing %zu job(s) back", tq_pg_errstr(f->pg), nj);
        queue_failed(f, tq_queue_release_batch(f->q, (const char *const *)ids, n), "hand back",
                     "the batch");
        backoff(f, pg_backoff);
        goto out;
    }
    wk_dep_report(WK_DEP_PG, TQ_OK, NULL);
    *pg_backoff = 100;
    settle_unclaimed(f, ids, n, cl, ncl, dead, ndead);
    hand_over_claimed(f, cl, ncl);
    wake_loop(f);
out:
    free(cl);
    free(dead);
    free(jid);
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
}

static void *fetcher_main(void *arg)
{
    struct wk_fetcher *f = arg;
    uint32_t rb = 100, pb = 100;
    uint64_t next_promote = 0;
    while (!atomic_load(&f->stop)) {
        if (tq_mono_ms() >= next_promote) {
            int moved = 0;
            if (tq_queue_promote(f->q, 1000, &moved) && atomic_load(&wk_metrics.redis_ok))
                tq_warn("fetcher: could not promote due delayed ids: %s", tq_queue_errstr(f->q));
            next_promote = tq_mono_ms() + 250;
        }
        pthread_mutex_lock(&f->mu);
        while (!atomic_load(&f->stop) && atomic_load(f->free_slots) <= 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 250 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            /* ETIMEDOUT is the point: look at the slots and the promote clock again */
            (void)pthread_cond_timedwait(&f->cond, &f->mu, &ts);
            if (tq_mono_ms() >= next_promote)
                break;
        }
        pthread_mutex_unlock(&f->mu);
        if (atomic_load(&f->stop))
            break;
        if (atomic_load(f->free_slots) > 0)
            cycle(f, &rb, &pb);
    }
    atomic_store(&f->exited, true);
    wake_loop(f);   /* the loop joins us and delivers the last claims */
    return NULL;
}

struct wk_fetcher *wk_fetcher_start(uv_loop_t *loop, const struct wk_settings *set,
                                    atomic_int *free_slots,
                                    void (*deliver)(void *, struct wk_claimed *), void *arg)
{
    struct wk_fetcher *f = tq_xcalloc(1, sizeof(*f));
    f->set = *set;
    f->free_slots = free_slots;
    f->deliver = deliver;
    f->arg = arg;
    atomic_store(&f->stop, false);
    atomic_init(&f->exited, false);
    pthread_mutex_init(&f->mu, NULL);
    pthread_mutex_init(&f->omu, NULL);
    pthread_cond_init(&f->cond, NULL);
    /* A connection that fails now is made again by the thread's first call,
       which reports the outage (wk_dep_report) and backs off. */
    if (tq_queue_open(set->cfg, set->worker_id, &f->q))
        tq_warn("fetcher: %s; retrying", tq_queue_errstr(f->q));
    if (tq_pg_open(set->cfg->database_url, &f->pg))
        tq_warn("fetcher: %s; retrying", tq_pg_errstr(f->pg));
    if (uv_async_init(loop, &f->async, on_async) != 0)
        tq_panic(__FILE__, __LINE__, "cannot create the fetcher's wake-up handle");
    f->async.data = f;
    if (pthread_create(&f->th, NULL, fetcher_main, f) != 0)
        tq_panic(__FILE__, __LINE__, "cannot start the fetcher thread");
    return f;
}

void wk_fetcher_poke(struct wk_fetcher *f)
{
    pthread_mutex_lock(&f->mu);
    pthread_cond_signal(&f->cond);
    pthread_mutex_unlock(&f->mu);
}

static void async_closed(uv_handle_t *h)
{
    struct wk_fetcher *f = h->data;
    for (size_t i = 0; i < f->npipelines; i++) {
        tq_pipeline_free(f->pipelines[i]->pl);
        free(f->pipelines[i]);
    }
    free(f->pipelines);
    pthread_mutex_destroy(&f->mu);
    pthread_mutex_destroy(&f->omu);
    pthread_cond_destroy(&f->cond);
    free(f);
}

void wk_fetcher_stop(struct wk_fetcher *f, void (*cb)(void *), void *arg)
{
    f->stopped_cb = cb;
    f->stopped_arg = arg;
    atomic_store(&f->stop, true);
    wk_fetcher_poke(f);
}

/* Free after the engine has let go of every job (pipelines are shared with them). */
void wk_fetcher_free(struct wk_fetcher *f)
{
    uv_close((uv_handle_t *)&f->async, async_closed);
}
