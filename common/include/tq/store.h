/*
 * Batched job-state writes for workers (docs/design.md §3-4): claim many jobs in
 * one statement, and flush many step transitions, attempt records and job
 * outcomes in one transaction (group commit). Every write is fenced by the
 * lease epoch of the claim: rows of a job whose epoch moved on change
 * nothing, and the job is reported stale.
 *
 * All functions block; call them from the worker's fetcher or writer thread,
 * each with its own struct tq_pg.
 */
#ifndef TQ_STORE_H
#define TQ_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "tq/pg.h"
#include "tq/status.h"

struct tq_claimed {
    struct tq_claim c;         /* job, epoch, tenant fields */
    bool rollback;             /* phase = rollback (resume an undo) */
    bool cancel_requested;
    json_t *steps;             /* step -> {status, attempts, undo_attempts, outage_attempts,
                                  undo_outage_attempts, reached} so far (owned) */
};

/*
 * Claim the claimable jobs among ids for worker, with a lease of lease_ms.
 * Jobs delivered max_deliveries times without progress are marked dead
 * instead and their ids returned in *dead (caller frees).
 * *out (caller frees each .steps and the array) holds the claimed ones; ids
 * in neither list were not claimable (finished, leased, scheduled later).
 */
enum tq_err tq_store_claim(struct tq_pg *pg, const int64_t *ids, size_t n, const char *worker,
                           uint32_t lease_ms, int max_deliveries, struct tq_claimed **out,
                           size_t *nout, int64_t **dead, size_t *ndead);

/* One step's state change; several for one step in a batch must be merged first. */
struct tq_step_row {
    int64_t job_id, epoch;
    const char *step;
    enum tq_step_status status;   /* its name is stored (tq/status.h) */
    int attempts_delta;        /* run attempts started */
    int undo_attempts_delta;   /* undo attempts started */
    int outage_attempts_delta;       /* run attempts waited out as an outage */
    int undo_outage_attempts_delta;  /* undo attempts waited out as an outage */
    int64_t started_ms;        /* 0: keep */
    int64_t finished_ms;       /* 0: NULL */
    const char *error;         /* NULL: keep */
    const char *output;        /* JSON text, NULL: keep */
    bool progress;             /* a success: resets the job's delivery count */
};

/* One finished attempt: history row plus its audit event. */
struct tq_attempt_row {
    int64_t job_id, epoch;
    const char *step;
    const char *phase;         /* run | undo */
    int attempt;
    enum tq_step_status status;   /* TQ_SS_SUCCEEDED | TQ_SS_FAILED */
    int64_t started_ms, finished_ms;
    const char *error;         /* may be NULL */
    bool reached;              /* the request may have reached its server (false: it never left) */
};

/* A job-level change: phase switch, or the outcome (terminal, or handed back). */
struct tq_job_row {
    int64_t job_id, epoch;
    enum tq_job_status job_status;       /* TQ_JS_RUNNING (phase change only), _QUEUED,
                                            _SUCCEEDED, ...; TQ_JS_NONE: keep */
    enum tq_tenant_status tenant_status; /* TQ_TS_NONE: leave the tenant alone */
    const char *phase;         /* forward | rollback */
    const char *event;         /* audit event name */
    const char *reason;        /* failure_reason / error, may be NULL */
    const char *failed_step;   /* may be NULL */
    int64_t not_before_ms;     /* queued with a due time (delayed retry), 0 = none */
    bool release_lease;        /* outcome or hand-back: clear the lease */
};

struct tq_flush {
    struct tq_step_row *steps;
    size_t nsteps;
    struct tq_attempt_row *attempts;
    size_t nattempts;
    struct tq_job_row *jobs;
    size_t njobs;
    const char *worker;
    uint32_t lease_ms;         /* fenced writes extend the lease to now() + lease_ms */
};

/* Per job of the batch, what PostgreSQL said. */
struct tq_flush_result {
    int64_t job_id;
    bool stale;                /* the epoch moved on: abandon the job, write nothing more */
    bool cancel_requested;     /* an operator asked to cancel */
};

/*
 * Write the batch in one transaction. On TQ_OK, *res (caller frees) has one
 * entry per distinct job in the batch. On error nothing was written and the
 * caller may retry the same batch.
 */
enum tq_err tq_store_flush(struct tq_pg *pg, const struct tq_flush *f,
                           struct tq_flush_result **res, size_t *nres);

/* Mark jobs dead with a reason (unknown pipeline, undecodable); returns ids marked. */
enum tq_err tq_store_dead(struct tq_pg *pg, int64_t job_id, int64_t epoch, const char *reason);

#endif
