/*
 * Worker-internal interfaces: the step API every step kind implements, the
 * engine that runs jobs on the loop thread, and the threads that talk to
 * Redis and PostgreSQL for it (fetcher, writer). Only main.c and loop.c
 * touch process-wide state. The design is described in worker/README.md.
 */
#ifndef WK_WORKER_H
#define WK_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>
#include <jansson.h>
#include <uv.h>

#include "tq/config.h"
#include "tq/err.h"
#include "tq/pg.h"
#include "tq/pipeline.h"
#include "tq/queue.h"
#include "tq/store.h"
#include "tq/util.h"

struct wk_job;
struct wk_engine;
struct wk_step;
typedef enum tq_err wk_offload_fn(struct wk_step *s);
struct wk_writer;

/* ------------------------------------------------------------ step API */

/*
 * One attempt of one step (its run, or its undo). The engine fills the
 * public fields, calls ops->start() on the loop thread, and frees the struct
 * after wk_step_done(). A kind keeps its own state in kind_data.
 */
struct wk_step {
    uv_loop_t *loop;
    const struct tq_config *cfg;
    const struct tq_claim *claim;          /* tenant and job fields */
    struct wk_curl *curl;                  /* HTTP transfers on the loop */
    const struct tq_pipeline_step *def;
    bool undo;                             /* run the undo of the step */
    int attempt;                           /* 1-based, of this phase */
    json_t *params;                        /* rendered params (borrowed) */
    json_t *output;                        /* results the step reports (borrowed) */
    char errstr[256];                      /* why it failed; never a secret */
    char warning[256];                     /* succeeded, but something to audit */
    void *kind_data;

    /* engine-private */
    struct wk_job *job;
    size_t index;
    uint64_t started_ms;
    bool done;
    bool cancelled;
    int refs;                              /* engine 1, + an in-flight cancel */
    /* blocking helper state (blocking.c) */
    uv_work_t work;
    uv_work_t cancel_work;
    pthread_mutex_t cancel_mu;
    PGcancel *pgcancel;
    enum tq_err (*blocking_fn)(struct wk_step *s, PGconn *db);
    wk_offload_fn *offload_fn;
    enum tq_err blocking_err;
};

/*
 * A step kind. start() begins the effect and returns TQ_OK, after which
 * wk_step_done() is called exactly once on the loop thread; any other return
 * means it did not start (no done call). cancel() (timeout, shutdown) must
 * make the step end soon; done is still called once. Both run on the loop
 * thread. Every kind must leave one effect however often it runs, and its
 * undo must succeed when there is nothing to undo (docs/design.md §4).
 */
struct wk_step_ops {
    const char *kind;
    enum tq_err (*start)(struct wk_step *s);
    void (*cancel)(struct wk_step *s);
};

/* Report the end of a started step. Loop thread only. */
void wk_step_done(struct wk_step *s, enum tq_err err);
/* Drop a reference; the step is freed with the last one. Loop thread only. */
void wk_step_unref(struct wk_step *s);

/* NULL when no step kind has that name. */
const struct wk_step_ops *wk_step_lookup(const char *kind);

/*
 * For kinds whose effect is blocking libpq work: run fn on the libuv thread
 * pool with a connection to the platform database (TQ_DATABASE_URL) from the
 * worker's pool, then report its result through wk_step_done. A matching
 * cancel sends PQcancel to the statement in progress.
 */
typedef enum tq_err wk_blocking_fn(struct wk_step *s, PGconn *db);
enum tq_err wk_step_blocking(struct wk_step *s, wk_blocking_fn *fn);
void wk_step_blocking_cancel(struct wk_step *s);
/* Register the statement in progress so it can be cancelled (worker thread). */
void wk_step_set_cancel(struct wk_step *s, PGconn *db);
void wk_blocking_init(const struct tq_config *cfg);
void wk_blocking_shutdown(void);

/* ------------------------------------------------------------ HTTP (curl.c) */

/* libcurl multi on the loop. Loop thread only. */
struct wk_curl;
typedef void wk_curl_done_cb(CURL *e, CURLcode rc, void *arg);
struct wk_curl *wk_curl_new(uv_loop_t *loop);
/* Start a transfer; cb runs once on the loop thread when it ends (TQ_OK), never if refused. */
enum tq_err wk_curl_start(struct wk_curl *c, CURL *e, wk_curl_done_cb *cb, void *arg);
/* Stop a transfer now; its cb runs at once with CURLE_ABORTED_BY_CALLBACK. */
void wk_curl_abort(struct wk_curl *c, CURL *e);
/* Transfers in flight (notifications outlive their jobs). */
int wk_curl_transfers(const struct wk_curl *c);
/* Close once no transfer is left. */
void wk_curl_free(struct wk_curl *c);

/*
 * Run fn on the libuv thread pool (for blocking client libraries such as
 * hiredis), then report its result through wk_step_done. Not cancellable
 * once started: fn must bound its own time (socket timeouts).
 */
enum tq_err wk_step_offload(struct wk_step *s, wk_offload_fn *fn);

/* ------------------------------------------------------------ notify.c */

/* Results: "sent", "not configured" or "failed: why". Loop thread. */
typedef void wk_notify_cb(const char *webhook, const char *email, void *arg);
/*
 * Send event/text about cl's tenant to the webhook and by e-mail (each only
 * when its URL is non-empty); cb (may be NULL) runs once when both ended.
 */
void wk_notify(struct wk_curl *c, const struct tq_claim *cl, const char *event, const char *text,
               const char *webhook_url, const char *smtp_url, wk_notify_cb *cb, void *arg);

extern const struct wk_step_ops wk_step_pg_tenant;
extern const struct wk_step_ops wk_step_noop;
extern const struct wk_step_ops wk_step_sleep;
extern const struct wk_step_ops wk_step_redis_acl;
extern const struct wk_step_ops wk_step_s3_bucket;
extern const struct wk_step_ops wk_step_http;
extern const struct wk_step_ops wk_step_exec;
extern const struct wk_step_ops wk_step_tenant_config;
extern const struct wk_step_ops wk_step_notify;
extern const struct wk_step_ops wk_step_check_pg;
extern const struct wk_step_ops wk_step_check_redis;
extern const struct wk_step_ops wk_step_check_s3;
extern const struct wk_step_ops wk_step_check_audit;

/* ------------------------------------------------------------ engine */

struct wk_settings {
    const struct tq_config *cfg;
    const char *worker_id;
    struct wk_curl *curl;        /* the loop's curl multi, for HTTP steps */
    uint32_t grace_ms;           /* drain: cancel steps still running after this */
    uint32_t long_wait_ms;       /* retry waits longer than this park the job in delayed */
    int max_deliveries;          /* dead-letter after this many deliveries without progress */
    int batch;                   /* ids reserved and claimed per round trip */
    uint32_t revalidate_ms;      /* drift checks of active tenants, fleet-wide period; 0 = off */
};

/* A job the fetcher claimed, handed to the loop. */
struct wk_claimed {
    struct tq_claimed cl;
    const struct tq_pipeline *pl;   /* owned by the fetcher's cache */
    char id[24];
    struct wk_claimed *next;
};

/* What the writer reports back for a job. */
struct wk_report {
    struct wk_job *job;
    enum { WK_R_STALE, WK_R_CANCEL, WK_R_ENDED } what;
    struct wk_report *next;
};

struct wk_engine *wk_engine_new(uv_loop_t *loop, const struct wk_settings *set,
                                struct wk_writer *w, atomic_int *free_slots,
                                void (*on_slot_free)(void *arg), void *arg);
/* Take over a claimed job (loop thread); frees c. */
void wk_engine_run(struct wk_engine *e, struct wk_claimed *c);
void wk_engine_report(struct wk_engine *e, struct wk_report *r);
/* An operator asked to cancel job_id (if this engine holds it). */
void wk_engine_cancel(struct wk_engine *e, int64_t job_id);
/* Stop starting steps; hand back jobs; cb runs once no job is left. */
void wk_engine_drain(struct wk_engine *e, void (*cb)(void *arg), void *arg);
int wk_engine_jobs(const struct wk_engine *e);
/* Ids of the jobs held now, at most cap; returns how many were written. */
size_t wk_engine_job_ids(const struct wk_engine *e, int64_t *out, size_t cap);
void wk_engine_free(struct wk_engine *e);

/* ------------------------------------------------------------ writer */

struct wk_writer;

/* Redis action after the job row commits. */
enum wk_redis_act { WK_ACK, WK_RELEASE, WK_PARK, WK_BURY, WK_NONE };

struct wk_writer *wk_writer_start(uv_loop_t *loop, const struct wk_settings *set,
                                  void (*deliver)(void *arg, struct wk_report *r), void *arg);
/* Queue a step transition (merged with a pending one of the same step). */
void wk_writer_step(struct wk_writer *w, struct wk_job *job, const struct tq_step_row *row);
void wk_writer_attempt(struct wk_writer *w, struct wk_job *job, const struct tq_attempt_row *row);
/*
 * Queue a job row. With act != WK_NONE it is the job's last word: after it
 * commits, the Redis action runs and an WK_R_ENDED report follows.
 */
void wk_writer_job(struct wk_writer *w, struct wk_job *job, const struct tq_job_row *row,
                   enum wk_redis_act act, const char *redis_id, uint64_t due_ms);
/* Only a Redis action (a stale job's id leaves our processing list), then WK_R_ENDED. */
void wk_writer_drop(struct wk_writer *w, struct wk_job *job, const char *redis_id);
/* Flush what is queued, then stop the thread. Blocks the caller until done. */
void wk_writer_stop(struct wk_writer *w);

/* ------------------------------------------------------------ fetcher */

struct wk_fetcher;
struct wk_fetcher *wk_fetcher_start(uv_loop_t *loop, const struct wk_settings *set,
                                    atomic_int *free_slots,
                                    void (*deliver)(void *arg, struct wk_claimed *c), void *arg);
/* Wake the fetcher: a slot is free. Any thread. */
void wk_fetcher_poke(struct wk_fetcher *f);
/* Stop reserving; joins the thread (at most one reserve timeout, 1 s). */
void wk_fetcher_stop(struct wk_fetcher *f);
/* Release the pipelines and handles once no job uses them. */
void wk_fetcher_free(struct wk_fetcher *f);

/* ------------------------------------------------------------ metrics */

struct wk_metrics {
    atomic_uint_fast64_t jobs_succeeded;
    atomic_uint_fast64_t jobs_failed;
    atomic_uint_fast64_t jobs_released;
    atomic_uint_fast64_t jobs_stale;
    atomic_uint_fast64_t jobs_dead;
    atomic_uint_fast64_t step_retries;
    atomic_uint_fast64_t rollbacks;
    atomic_uint_fast64_t flushes;
    atomic_uint_fast64_t flushed_rows;
    atomic_int in_flight;
    atomic_bool redis_ok;
    atomic_bool pg_ok;
};
extern struct wk_metrics wk_metrics;

/* metrics.c: labelled series, loop thread only (docs/design.md §5 names). */
void wk_metrics_provisioned(const char *tier, const char *region, double seconds);
void wk_metrics_failed(const char *tier, const char *step);
void wk_metrics_step(const char *kind, bool undo, double seconds);
void wk_metrics_write(struct tq_buf *out);
void wk_metrics_free(void);
/* Queue depths from the last heartbeat (-1: unknown); any thread. */
extern atomic_llong wk_queue_ready, wk_queue_delayed, wk_queue_dead;

#endif
