/*
 * Worker-internal interfaces (the step API is step.h): the engine that runs
 * jobs on the loop thread, and the threads that talk to
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
#include "jobsm.h"
#include "step.h"

struct wk_job;
struct wk_engine;
struct wk_writer;

/* ------------------------------------------------------------ curl.c */

/* The loop's curl multi (transfers: step.h); loop thread only. */
struct wk_curl *wk_curl_new(uv_loop_t *loop);
/* Transfers in flight (notifications outlive their jobs). */
int wk_curl_transfers(const struct wk_curl *c);
/* Close once no transfer is left. */
void wk_curl_free(struct wk_curl *c);

/* ------------------------------------------------------------ engine */

struct wk_settings {
    const struct tq_config *cfg;
    const char *worker_id;
    struct wk_curl *curl;        /* the loop's curl multi, for HTTP steps */
    struct wk_step_settings steps;   /* what step kinds read (settings.c) */
    uint32_t grace_ms;           /* drain: cancel steps still running after this */
    uint32_t long_wait_ms;       /* retry waits longer than this park the job in delayed */
    int max_deliveries;          /* dead-letter after this many deliveries without progress */
    int batch;                   /* ids reserved and claimed per round trip */
    uint32_t revalidate_ms;      /* drift checks of active tenants, fleet-wide period; 0 = off */
    uint32_t outage_ms;          /* TQ_OUTAGE_MS: how long a step waits out a dependency outage */
    int pipeline_cache;          /* TQ_PIPELINE_CACHE: pipelines the fetcher keeps parsed */
    bool allow_eviction;         /* TQ_ALLOW_EVICTION: run although Redis may evict keys */
    const char *notify_routes_file;  /* TQ_NOTIFY_ROUTES_FILE: event -> channels (dispatch.c) */
    uint32_t notify_poll_ms;     /* TQ_NOTIFY_POLL_MS: idle dispatcher's period (1000) */
    uint32_t notify_backoff_ms;  /* TQ_NOTIFY_BACKOFF_MS: first retry wait, doubling (1000) */
    int notify_max_attempts;     /* TQ_NOTIFY_MAX_ATTEMPTS: then a delivery is failed (10) */
    uint32_t escalate_after_s;   /* TQ_APPROVAL_ESCALATE_AFTER: pending approval longer than
                                    this (s) writes approval_escalated, once a period; 0 = off */
};

/* The map ${region.*} reads (tq/regions.h, template.c); main.c sets it once before any job.
   NULL: no map, so every ${region.*} has no value and its step fails. */
struct tq_regions;
void wk_template_set_regions(const struct tq_regions *m);

/* Fill set from cfg and the environment; strings borrowed from cfg and the environment. */
void wk_settings_load(struct wk_settings *set, const struct tq_config *cfg, const char *worker_id);

/* A parsed pipeline in the fetcher's cache, held by the jobs that run it. */
struct wk_pipeline {
    struct tq_pipeline *pl;
    atomic_int refs;       /* jobs holding it: +1 on the fetcher thread, -1 on the loop */
    uint64_t used;         /* fetcher's clock of its last use (LRU) */
};
/* A job let go of its pipeline (loop thread); the fetcher may evict it now. */
void wk_pipeline_release(struct wk_pipeline *p);

/* A job the fetcher claimed, handed to the loop. */
struct wk_claimed {
    struct tq_claimed cl;
    const struct tq_pipeline *pl;   /* the cache's (pref), valid until wk_pipeline_release */
    struct wk_pipeline *pref;
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
/*
 * Stop starting steps; hand back jobs (also those run after this call);
 * after grace_ms cancel the steps still running. cb runs whenever no job is
 * left (each one's last row written, or let go): at once if none is held,
 * and again if jobs delivered later have gone too.
 */
void wk_engine_drain(struct wk_engine *e, uint32_t grace_ms, void (*cb)(void *arg), void *arg);
/* No job held, none still closing. */
bool wk_engine_idle(const struct wk_engine *e);
/*
 * The drain's final deadline: stop waiting for the writer. Jobs whose last
 * row is queued are let go now, the others as soon as they end; the writer's
 * reports must no longer be delivered (loop.c drops them).
 */
void wk_engine_abandon(struct wk_engine *e);
int wk_engine_jobs(const struct wk_engine *e);
/* Ids of the jobs held now, at most cap; returns how many were written. */
size_t wk_engine_job_ids(const struct wk_engine *e, int64_t *out, size_t cap);
void wk_engine_free(struct wk_engine *e);

/* ------------------------------------------------------------ writer */

struct wk_writer;

/* Redis action after the job row commits. */
/* enum wk_redis_act (the Redis action after the job row commits) is jobsm.h's. */

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
/*
 * Flush what is queued, then stop the thread; never blocks the caller. cb
 * runs once on the loop thread after the thread has ended (reports still
 * queued delivered first); w is freed after cb returns.
 */
void wk_writer_stop(struct wk_writer *w, void (*cb)(void *arg), void *arg);
/*
 * Shutdown past its grace: stop retrying PostgreSQL and drop what is not
 * written (no Redis action, no report follows for it). Nothing is lost: the
 * jobs stay leased to us, and return to the queue when the lease ends.
 * Any thread.
 */
void wk_writer_give_up(struct wk_writer *w);

/* ------------------------------------------------------------ fetcher */

struct wk_fetcher;
struct wk_fetcher *wk_fetcher_start(uv_loop_t *loop, const struct wk_settings *set,
                                    atomic_int *free_slots,
                                    void (*deliver)(void *arg, struct wk_claimed *c), void *arg);
/* Wake the fetcher: a slot is free. Any thread. */
void wk_fetcher_poke(struct wk_fetcher *f);
/*
 * Stop reserving; never blocks the caller. cb runs once on the loop thread
 * after the thread ended (at most one reserve timeout, 1 s) and the jobs it
 * claimed last reached the engine.
 */
void wk_fetcher_stop(struct wk_fetcher *f, void (*cb)(void *arg), void *arg);
/* Release the pipelines and handles once no job uses them. */
void wk_fetcher_free(struct wk_fetcher *f);

/* ------------------------------------------------------------ dispatch.c */

/* Notifications derived from audit events (routes, delivery thread). */
struct wk_routes;
struct wk_dispatch;
/* Routes from TQ_NOTIFY_ROUTES_FILE (or the legacy webhook/SMTP settings); -1 and err naming every problem. */
int wk_routes_load(const struct wk_settings *set, struct wk_routes **out, char *err, size_t errlen);
void wk_routes_free(struct wk_routes *r);
/* Start the dispatcher thread (routes borrowed until wk_dispatch_stop); NULL if it could not start. */
struct wk_dispatch *wk_dispatch_start(const struct wk_settings *set, struct wk_routes *routes);
/* One last bounded pass over what is due (at most 5 s), then join the thread; NULL is fine. */
void wk_dispatch_stop(struct wk_dispatch *d);

/* ------------------------------------------------------------ metrics */

struct wk_metrics {
    atomic_uint_fast64_t jobs_succeeded;
    atomic_uint_fast64_t jobs_failed;
    atomic_uint_fast64_t jobs_released;
    atomic_uint_fast64_t jobs_stale;
    atomic_uint_fast64_t rows_fenced;   /* rows the epoch fence refused (a lost job's) */
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
/* A revalidation ended: clean, or with drift (tq_revalidations_total{result}). */
void wk_metrics_revalidated(bool drifted);
/* A check found drift on revalidation (tq_drift_detected_total{step}). */
void wk_metrics_drift(const char *step);
/* A tenant ended rollback_failed (tq_rollback_failures_total{tier}); loop thread. */
void wk_metrics_rollback_failed(const char *tier);
/* Any thread (the dispatcher's): observed once per event in the fleet. */
void wk_metrics_request_to_active(const char *tier, double seconds);
void wk_metrics_approval_wait(const char *tier, double seconds);
void wk_metrics_notification(const char *channel, const char *outcome);
void wk_metrics_write(struct tq_buf *out);
void wk_metrics_free(void);
/* Queue depths from the last heartbeat (-1: unknown); any thread. */
extern atomic_llong wk_queue_ready, wk_queue_delayed, wk_queue_dead;

#endif
