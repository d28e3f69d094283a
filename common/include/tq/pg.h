/*
 * The PostgreSQL store: the truth about tenants, jobs, steps and audit
 * (docs/design.md §3-4). One struct tq_pg is one blocking libpq connection owned
 * by one thread; a broken connection is reset by the next call.
 *
 * Job-state writes of workers (claim, fenced transitions, outcomes) are
 * batched and live in tq/store.h.
 */
#ifndef TQ_PG_H
#define TQ_PG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "tq/err.h"
#include "tq/pipeline.h"
#include "tq/request.h"

struct tq_pg;

/* *out is owned by the caller (tq_pg_close) even on error. */
enum tq_err tq_pg_open(const char *conninfo, struct tq_pg **out);
void tq_pg_close(struct tq_pg *pg);
/* Detail of the last error; valid until the next call on pg. */
const char *tq_pg_errstr(const struct tq_pg *pg);
/* The live connection (reconnecting first if needed), or NULL. Borrowed. */
PGconn *tq_pg_conn(struct tq_pg *pg);
/*
 * The error of a failed statement on db, by its SQLSTATE: TQ_ECONNECT when
 * the connection is gone (class 08, 57P01-03), TQ_EPG (retryable) for
 * serialization failures, deadlocks and other conditions a retry may clear,
 * TQ_ESQL (not retryable) for syntax, permission, constraint and data
 * errors. res may be NULL. Any thread owning db.
 */
enum tq_err tq_pg_classify(const PGconn *db, const PGresult *res);
/*
 * The error of a connection attempt that failed: TQ_ECONNECT when the
 * server could not be reached or is starting up or shutting down (an
 * outage), TQ_EPG when it answered and refused (no such role, no login,
 * bad password, no such database).
 */
enum tq_err tq_pg_connect_classify(const PGconn *db);
/* Run SQL text with no parameters and no result; for steps and tests. */
enum tq_err tq_pg_exec(struct tq_pg *pg, const char *sql);

/*
 * Apply pending migrations; safe to run from several processes at once.
 * Ends by granting the service roles (tq_worker, tq_cli) that exist their
 * privileges (docs/security.md).
 */
enum tq_err tq_pg_migrate(struct tq_pg *pg, int *applied, int *version);
/*
 * Is the schema exactly what this build expects? TQ_EINVALID (errstr says
 * which way and what to run) when it is missing, older or newer; *have and
 * *want are the versions.
 */
enum tq_err tq_pg_schema_check(struct tq_pg *pg, int *have, int *want);

/* ---- submit ---- */
struct tq_submit_item {
    const struct tq_request *req;
    const char *idempotency_key;   /* NULL: the tenant id */
    int64_t not_before_ms;         /* start no earlier (epoch ms); 0: now */
    /* filled by tq_pg_submit: */
    int64_t job_id;
    bool existed;                  /* the same request was already there */
    bool queued;                   /* false: waits in pending_approval */
    char status[32];               /* the tenant's status now */
    const char *queue;             /* the queue its jobs are dispatched to (tenants.queue):
                                      the workers of that queue revalidate it */
    const char *conflict;          /* on TQ_ECONFLICT, the field at fault in the item
                                      that conflicts ("tenant_id", "name",
                                      "idempotency_key"); NULL otherwise */
};

/*
 * Write tenants, jobs and audit events for all items in one transaction:
 * all or nothing. TQ_ECONFLICT (tq_pg_errstr names the item and the reason)
 * when an item's tenant id, name or idempotency key belongs to a different
 * request; any other error: tq_pg_errstr has the detail, nothing written.
 */
enum tq_err tq_pg_submit(struct tq_pg *pg, struct tq_submit_item *items,
                         size_t n, const char *batch,
                         const struct tq_pipeline *pl,
                         const struct tq_rules *rules, const char *actor);

/* ---- worker side ---- */
/* A claimed job: what tq_store_claim returns for it. */
struct tq_claim {
    int64_t job_id;
    int64_t epoch;
    int attempt;
    char kind[16];               /* provision | deprovision */
    char pipeline_hash[65];
    char tenant_id[TQ_TENANT_ID_MAX + 1];
    char name[TQ_NAME_MAX * 4 + 1];
    char tier[16];
    char region[64];
    char owner[TQ_OWNER_MAX + 1];
};

/* Pipeline text stored at submit; *text owned by the caller. */
enum tq_err tq_pg_pipeline_get(struct tq_pg *pg, const char *hash, char **text);

/*
 * Heartbeat: extend the leases of the jobs (ids) this worker holds. *out
 * (caller frees; NULL when none) holds the ids whose lease was still ours and is extended now. An id of ids missing from
 * it has lost its lease (lapsed or taken over).
 */
enum tq_err tq_pg_extend_leases_ids(struct tq_pg *pg, const char *worker, const int64_t *ids,
                                    size_t n, uint32_t lease_ms, int64_t **out, size_t *nout);

/*
 * Reconciler input: ids of jobs of queue's tenants that are runnable (queued,
 * or running with an expired lease) and untouched for older_than_ms; marks
 * them touched so the next pass skips them for a while. A tenant submitted
 * before tenants.queue existed counts as TQ_DEFAULT_QUEUE's. *ids is owned by
 * the caller (free).
 */
enum tq_err tq_pg_orphans(struct tq_pg *pg, const char *queue, uint32_t older_than_ms,
                          int limit, int64_t **ids, size_t *n);

/*
 * Queue a revalidation (drift check) job for each active tenant of queue
 * among ids (NULL/0: all of them) that has none queued or running. round
 * names this run in the idempotency key, so a CLI retry of one round creates
 * one job per tenant. *job_ids (caller frees) are the new jobs.
 */
enum tq_err tq_pg_revalidate(struct tq_pg *pg, const char *queue, const char *const *ids,
                             size_t nids, const char *round, const char *actor,
                             int64_t **job_ids, size_t *n);

/*
 * The revalidation schedule, kept per tenant in PostgreSQL
 * (tenants.revalidate_due_at), so that nothing Redis loses or a worker
 * restart does can start a round. For the active tenants of queue:
 *   - a tenant with no due time (new, or activated again since) gets one:
 *     between half an interval and one interval after its last validation
 *     (activation counts), or, if that has passed (tenants older than the
 *     schedule), at a random point of the next interval;
 *   - up to limit tenants that are due, oldest due first, get a revalidation
 *     job and their next due time one interval (+-10%) from now: checks stay
 *     spread over the interval instead of bunching into rounds.
 * Safe to run from several workers at once (SKIP LOCKED). *job_ids (caller
 * frees) are the new jobs, for the caller to dispatch.
 */
enum tq_err tq_pg_revalidate_due(struct tq_pg *pg, const char *queue, uint32_t interval_ms,
                                 int limit, const char *actor, int64_t **job_ids, size_t *n);

/* Those of ids (held by worker) whose cancel an operator requested; *out caller frees. */
enum tq_err tq_pg_cancel_requests(struct tq_pg *pg, const char *worker, const int64_t *ids,
                                  size_t n, int64_t **out, size_t *nout);

/* ---- reading ---- */
/*
 * Tenants with their latest job and steps as a JSON array (see
 * enqueue/README.md for the shape). Select by ids, or by batch, or all.
 */
enum tq_err tq_pg_status(struct tq_pg *pg, const char *const *ids, size_t nids,
                         const char *batch, json_t **out);

#endif
