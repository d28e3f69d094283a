/*
 * Fleet-wide limits per resource key. A step that declares
 * "limit": {"key": "terraform:${tenant.region}", "max": 2} starts only with
 * one of the key's max permits. The permits live in Redis (tq/limits.h: a
 * sorted set of holder -> expiry per key) with this worker's lease: the
 * heartbeat renews them every lease/3, so a worker that dies or is cut off
 * loses them one lease later and the fleet gets them back.
 *
 * Waiting costs no thread and no slot of the thread pool between tries:
 * the step is parked in the engine's retry-wait state; one Redis round trip
 * (EVAL, on the thread pool) asks for a permit; when refused, the step's own
 * retry timer on the loop asks again after POLL_MS. The wait is recorded on
 * the step (status pending, last_error "waiting for limit KEY (held/max)"),
 * which is what `tq-enqueue status` shows. Permits are not handed out in
 * arrival order: whoever asks first after one is given back gets it.
 *
 * Before any of that, a step starts only under a lease PostgreSQL has
 * confirmed: since the claim, or the heartbeat's last extension of the
 * job's lease, less than 3/4 of a lease ago; and an undo only under a
 * confirmation sent after the job decided to roll back (unless it was
 * claimed to roll back). A worker cut off from PostgreSQL thus starts
 * nothing once its leases may have lapsed, and never begins undoing what
 * its partition made fail: once it can reach PostgreSQL again, the
 * heartbeat learns which jobs are no longer its own and they are abandoned
 * before they run another step. (A step already running when the link
 * went down still ends, and its effect may land after another worker's:
 * every step kind is idempotent for that.) The heartbeat extends at its
 * next 1 s tick, not at lease/3, when a step is waiting for this.
 *
 * Hooks (keep them small, the engine is refactored around them):
 * wk_step_start -> wk_limit_admit, wk_step_done -> wk_limit_release,
 * job_free -> wk_limits_forget, the heartbeat -> wk_limits_renew and
 * wk_leases_confirmed.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "limits.h"
#include "tq/limits.h"
#include "tq/log.h"
#include "tq/util.h"

#define POLL_MS 250   /* between two tries of a waiting step (+ up to 50% jitter) */
#define BUSY_MS 20    /* the permit connection was in use: try again this soon */
#define CONFIRM_POLL_MS 100   /* a step waiting for its lease to be confirmed looks again */

enum pst {
    P_ASKING,    /* a round trip is in flight (the job counts it as running) */
    P_WAITING,   /* refused; the step's retry timer asks again */
    P_GRANTED,   /* held, the step about to start */
    P_HELD,      /* held by a running step */
};

struct permit {
    struct wk_job *job;
    size_t index;
    bool undo;
    enum pst st;
    char *key;        /* rendered */
    char *holder;     /* "<worker>/<job>.<epoch>/<step>" */
    uint32_t max;
    char shown[160];  /* the wait as last recorded on the step */
    struct permit *next;
};

/* What PostgreSQL last confirmed about a job's lease. Loop thread only. */
struct lease {
    struct wk_job *job;
    uint64_t at_ms;          /* tq_mono_ms when the last confirmation was asked for */
    uint64_t undo_from_ms;   /* an undo needs a confirmation asked after this; 0: none yet */
    bool logged;
    struct lease *next;
};

static struct lease *leases;
static atomic_bool want_confirm;

static struct {
    pthread_mutex_t mu;        /* the list (loop thread writes, heartbeat reads) */
    pthread_mutex_t conn_mu;   /* the Redis connection (thread pool) */
    struct permit *list;
    struct tq_queue *q;
    const struct tq_config *cfg;
    char worker_id[160];
} L = {.mu = PTHREAD_MUTEX_INITIALIZER, .conn_mu = PTHREAD_MUTEX_INITIALIZER};

void wk_limits_init(const struct tq_config *cfg, const char *worker_id)
{
    L.cfg = cfg;
    snprintf(L.worker_id, sizeof(L.worker_id), "%s", worker_id);
    /* connects on first use; a failure then is a refused try, retried */
    tq_queue_open(cfg, NULL, &L.q);
}

static void permit_free(struct permit *p)
{
    free(p->key);
    free(p->holder);
    free(p);
}

void wk_limits_shutdown(void)
{
    pthread_mutex_lock(&L.mu);
    struct permit *p = L.list, *next;
    L.list = NULL;
    pthread_mutex_unlock(&L.mu);
    for (; p; p = next) {
        next = p->next;
        permit_free(p);
    }
    tq_queue_close(L.q);
    L.q = NULL;
}

static struct permit *find(struct wk_job *j, size_t i)
{
    for (struct permit *p = L.list; p; p = p->next)
        if (p->job == j && p->index == i)
            return p;
    return NULL;
}

static void unlink_permit(struct permit *p)
{
    pthread_mutex_lock(&L.mu);
    for (struct permit **pp = &L.list; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    pthread_mutex_unlock(&L.mu);
}

/* ------------------------------------------------------------ Redis, off the loop */

struct call {
    uv_work_t w;
    struct permit *p;       /* acquire: alive while the job counts it running */
    char *key, *holder;     /* release: copies (the permit is gone) */
    bool got;
    bool busy;              /* not asked: the connection was in use */
    long long held;
    enum tq_err err;
    char errstr[200];
};

static void release_work(uv_work_t *w)
{
    struct call *c = w->data;
    pthread_mutex_lock(&L.conn_mu);
    enum tq_err err = tq_limit_release(L.q, c->key, c->holder);
    if (err)
        tq_warn("limit %s: could not give a permit back (%s); it lapses within a lease",
                c->key, tq_queue_errstr(L.q));
    pthread_mutex_unlock(&L.conn_mu);
}

static void release_after(uv_work_t *w, int status)
{
    (void)status;
    struct call *c = w->data;
    free(c->key);
    free(c->holder);
    free(c);
}

/* Give p's permit back (fire and forget) and drop p. Loop thread. */
static void give_back(uv_loop_t *loop, struct permit *p)
{
    unlink_permit(p);
    struct call *c = tq_xcalloc(1, sizeof(*c));
    c->key = p->key;
    c->holder = p->holder;
    p->key = p->holder = NULL;
    permit_free(p);
    c->w.data = c;
    uv_queue_work(loop, &c->w, release_work, release_after);
}

static void acquire_work(uv_work_t *w)
{
    struct call *c = w->data;
    /* The connection busy (another try in flight, or Redis slow to answer):
       do not hold a pool thread waiting for it, try again on the timer. */
    if (pthread_mutex_trylock(&L.conn_mu) != 0) {
        c->busy = true;
        return;
    }
    c->err = tq_limit_acquire(L.q, c->key, c->holder, c->p->max, L.cfg->lease_ms, &c->got,
                              &c->held);
    if (c->err)
        snprintf(c->errstr, sizeof(c->errstr), "%s", tq_queue_errstr(L.q));
    pthread_mutex_unlock(&L.conn_mu);
}

/* ------------------------------------------------------------ on the loop */

static void on_wait_over(uv_timer_t *t)
{
    struct stepstate *ss = t->data;
    if (ss->st == WK_S_WAIT_RETRY)
        ss->st = WK_S_PENDING;
    else if (ss->st == WK_S_UNDO_WAIT)
        ss->st = WK_S_UNDO_PENDING;
    wk_job_advance(ss->job);
}

static void acquire_after(uv_work_t *w, int status)
{
    (void)status;
    struct call *c = w->data;
    struct permit *p = c->p;
    struct wk_job *j = p->job;
    struct stepstate *ss = &j->ss[p->index];
    size_t i = p->index;
    bool undo = p->undo;
    uv_loop_t *loop = j->eng->loop;
    j->running--;
    /* still wanted while the job's phase starts steps of this kind (not
       stale, ended, handed back for a drain or a park, or failing) */
    bool wanted = wk_phase_starts(j->phase) == (undo ? WK_START_UNDO : WK_START_RUN);
    if (!wanted || c->got) {
        /* back to pending: the engine starts it now (our permit is waiting
           for it) or decides what else happens to it */
        ss->st = undo ? WK_S_UNDO_PENDING : WK_S_PENDING;
        if (c->got && wanted) {
            p->st = P_GRANTED;
            tq_debug("job %" PRId64 " (%s): step %s took a permit of limit %s (%lld/%u)",
                     j->cl.c.job_id, j->cl.c.tenant_id, j->pl->steps[i].name, p->key, c->held,
                     p->max);
        } else if (c->got) {
            give_back(loop, p);
        } else {
            unlink_permit(p);
            permit_free(p);
        }
        free(c);
        wk_job_advance(j);
        p = find(j, i);
        if (p && p->st == P_GRANTED)   /* it did not start after all */
            give_back(loop, p);
        return;
    }
    /* refused, Redis unreachable or the connection busy: try again on the
       step's retry timer */
    p->st = P_WAITING;
    char why[sizeof(p->shown)];
    if (c->err)
        snprintf(why, sizeof(why), "waiting for limit %.60s (redis: %.60s)", p->key, c->errstr);
    else
        snprintf(why, sizeof(why), "waiting for limit %.100s (%lld/%u)", p->key, c->held, p->max);
    if (!c->busy && strcmp(why, p->shown) != 0) {
        if (!p->shown[0])
            tq_info("job %" PRId64 " (%s): step %s %s", j->cl.c.job_id, j->cl.c.tenant_id,
                    j->pl->steps[i].name, why);
        snprintf(p->shown, sizeof(p->shown), "%s", why);
        wk_job_emit_step(j, i, WK_S_PENDING, 0, 0, 0, 0, why, NULL, false);
    }
    /* busy: only the connection was taken, ask again soon */
    uint64_t base = c->busy ? BUSY_MS : POLL_MS;
    free(c);
    uint64_t delay = base + (uint64_t)(tq_random_unit() * (double)base / 2);
    uv_timer_start(&ss->retry_timer, on_wait_over, delay, 0);
    wk_job_advance(j);   /* decisions the round trip held up (rollback, drain) */
}

static struct lease *lease_of(struct wk_job *j)
{
    for (struct lease *l = leases; l; l = l->next)
        if (l->job == j)
            return l;
    struct lease *l = tq_xcalloc(1, sizeof(*l));
    l->job = j;
    l->at_ms = j->started_mono_ms;   /* the claim took the lease just before */
    if (j->cl.rollback || j->kind == WK_KIND_DEPROVISION)
        l->undo_from_ms = j->started_mono_ms - 1;   /* claimed to undo: the claim confirms it */
    l->next = leases;
    leases = l;
    return l;
}

bool wk_leases_wanted(void)
{
    return atomic_exchange(&want_confirm, false);
}

void wk_leases_confirmed(struct wk_engine *e, const int64_t *asked, size_t nasked,
                         const int64_t *ok, size_t nok, uint64_t sent_ms)
{
    for (struct wk_job *j = e->jobs; j; j = j->next) {
        if (j->phase == WK_PH_ENDED || j->phase == WK_PH_STALE)
            continue;
        int64_t id = j->cl.c.job_id;
        bool was_asked = false, still = false;
        for (size_t k = 0; k < nasked && !was_asked; k++)
            was_asked = asked[k] == id;
        if (!was_asked)
            continue;   /* claimed after the heartbeat looked */
        for (size_t k = 0; k < nok && !still; k++)
            still = ok[k] == id;
        if (still) {
            struct lease *l = lease_of(j);
            if (sent_ms > l->at_ms)
                l->at_ms = sent_ms;
            continue;
        }
        /* lapsed or taken over: abandon it now, not at its next write */
        struct wk_report *r = tq_xcalloc(1, sizeof(*r));
        r->job = j;
        r->what = WK_R_STALE;
        wk_engine_report(e, r);
    }
}

/* The lease condition of the file comment; false: parked, looked at again soon. */
static bool lease_confirmed(struct wk_job *j, size_t i, bool undo)
{
    uint32_t lease = L.cfg ? L.cfg->lease_ms : 0;
    if (!lease)
        return true;
    struct lease *l = lease_of(j);
    uint64_t now = tq_mono_ms();
    if (undo && !l->undo_from_ms)
        l->undo_from_ms = now;
    bool fresh = now < l->at_ms + lease - lease / 4;
    if (fresh && (!undo || l->at_ms > l->undo_from_ms))
        return true;
    atomic_store(&want_confirm, true);
    if (!l->logged) {
        l->logged = true;
        tq_debug("job %" PRId64 " (%s): step %s waits for PostgreSQL to confirm the job's lease",
                 j->cl.c.job_id, j->cl.c.tenant_id, j->pl->steps[i].name);
    }
    j->ss[i].st = undo ? WK_S_UNDO_WAIT : WK_S_WAIT_RETRY;
    uv_timer_start(&j->ss[i].retry_timer, on_wait_over, CONFIRM_POLL_MS, 0);
    return false;
}

bool wk_limit_admit(struct wk_job *j, size_t i, bool undo)
{
    const struct tq_pipeline_step *def = &j->pl->steps[i];
    if (!lease_confirmed(j, i, undo))
        return false;
    if (!def->limit_key || !L.q)
        return true;
    struct permit *p = find(j, i);
    if (p && p->st == P_GRANTED) {
        p->st = P_HELD;
        return true;
    }
    if (p && (p->st == P_ASKING || p->st == P_HELD))
        return false;   /* not expected: the engine does not start a step twice */
    if (!p) {
        p = tq_xcalloc(1, sizeof(*p));
        p->job = j;
        p->index = i;
        p->max = def->limit_max;
        char err[256];
        p->key = tq_template_render(def->limit_key, wk_template_lookup, &j->cl.c, err,
                                    sizeof(err));
        if (!p->key)   /* templates were checked at submit: not expected */
            p->key = tq_xstrdup(def->limit_key);
        p->holder = tq_xasprintf("%s/%" PRId64 ".%" PRId64 "/%s", L.worker_id, j->cl.c.job_id,
                                 j->cl.c.epoch, def->name);
        pthread_mutex_lock(&L.mu);
        p->next = L.list;
        L.list = p;
        pthread_mutex_unlock(&L.mu);
    }
    p->undo = undo;
    p->st = P_ASKING;
    j->running++;   /* the engine waits for the answer as for a running step */
    j->ss[i].st = undo ? WK_S_UNDO_WAIT : WK_S_WAIT_RETRY;
    struct call *c = tq_xcalloc(1, sizeof(*c));
    c->p = p;
    c->key = p->key;
    c->holder = p->holder;
    c->w.data = c;
    uv_queue_work(j->eng->loop, &c->w, acquire_work, acquire_after);
    return false;
}

void wk_limit_release(struct wk_job *j, size_t i)
{
    if (!j->pl->steps[i].limit_key)
        return;
    struct permit *p = find(j, i);
    if (p && (p->st == P_HELD || p->st == P_GRANTED))
        give_back(j->eng->loop, p);
}

void wk_limits_forget(struct wk_job *j)
{
    for (struct lease **lp = &leases; *lp; lp = &(*lp)->next)
        if ((*lp)->job == j) {
            struct lease *l = *lp;
            *lp = l->next;
            free(l);
            break;
        }
    struct permit *p = L.list, *next;
    for (; p; p = next) {
        next = p->next;
        if (p->job != j)
            continue;
        if (p->st == P_HELD || p->st == P_GRANTED) {
            give_back(j->eng->loop, p);
        } else {
            unlink_permit(p);
            permit_free(p);
        }
    }
}

void wk_limits_renew(void)
{
    pthread_mutex_lock(&L.mu);
    size_t n = 0;
    for (struct permit *p = L.list; p; p = p->next)
        n += p->st == P_HELD || p->st == P_GRANTED;
    char **keys = tq_xcalloc(n ? n : 1, sizeof(*keys));
    char **holders = tq_xcalloc(n ? n : 1, sizeof(*holders));
    size_t k = 0;
    for (struct permit *p = L.list; p && k < n; p = p->next)
        if (p->st == P_HELD || p->st == P_GRANTED) {
            keys[k] = tq_xstrdup(p->key);
            holders[k++] = tq_xstrdup(p->holder);
        }
    pthread_mutex_unlock(&L.mu);
    if (k > 0) {
        int lost = 0;
        pthread_mutex_lock(&L.conn_mu);
        if (tq_limit_renew(L.q, (const char *const *)keys, (const char *const *)holders, k,
                           L.cfg->lease_ms, &lost) != TQ_OK)
            tq_warn("limits: could not renew %zu permit(s): %s", k, tq_queue_errstr(L.q));
        else if (lost > 0)
            tq_warn("limits: %d permit(s) had lapsed (this worker was cut off for longer than"
                    " a lease); their steps run on, the fleet may briefly exceed the limit", lost);
        pthread_mutex_unlock(&L.conn_mu);
    }
    for (size_t x = 0; x < k; x++) {
        free(keys[x]);
        free(holders[x]);
    }
    free(keys);
    free(holders);
}
