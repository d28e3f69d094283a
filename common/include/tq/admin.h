/*
 * Operator and portal actions on tenants and jobs (approve, reject, cancel,
 * retry, deprovision, dead letters, stats, scheduled submits). Each
 * PostgreSQL change is one transaction that also writes its audit event;
 * Redis is told afterwards by the caller (tq_queue_dispatch and friends),
 * and if it cannot be reached the worker's reconciler dispatches later.
 *
 * Every function here takes its user-supplied values as statement
 * parameters, never as SQL text. Like tq_pg and tq_queue, a call uses the
 * caller's connection and must come from the thread that owns it.
 *
 * Errors of the tq_admin_* PostgreSQL actions; the detail rides on the
 * connection, tq_pg_errstr(pg), valid until the next call on pg:
 *   TQ_ENOTFOUND   no such tenant (or job); tq_pg_errstr says which
 *   TQ_ECONFLICT   the tenant or job is not in a state the action applies
 *                  to; tq_pg_errstr names the state and the rule; nothing
 *                  changed
 *   TQ_ECONNECT, TQ_EPG, TQ_ESQL   tq_pg_errstr has the detail; nothing
 *                  changed
 */
#ifndef TQ_ADMIN_H
#define TQ_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "tq/pg.h"
#include "tq/pipeline.h"
#include "tq/queue.h"
#include "tq/request.h"

/* What an action did; filled on TQ_OK (and partly on TQ_ECONFLICT). */
struct tq_admin_result {
    char tenant_id[TQ_TENANT_ID_MAX + 1];
    char from_status[32];     /* the tenant's status before the action */
    char tenant_status[32];   /* ... and after it */
    int64_t job_id;           /* the job acted on or created; 0: none */
    char job_status[32];      /* that job's status after the action */
    char action[32];          /* the audit event written, see each function */
    bool existed;             /* nothing new: the same action had been taken */
    bool dispatch;            /* the caller should hand job_id to Redis */
    int64_t due_ms;           /* with dispatch: > 0 means "not before" this
                                 time (ms since epoch): ZADD delayed, not LPUSH */
    bool needs_pipeline;      /* TQ_ECONFLICT from retry: pass a pipeline */
};

/*
 * pending_approval -> queued: approver = by, approved_at = now(), the held
 * job -> queued; audit "approved" {note}. action "approved", dispatch set.
 * TQ_ECONFLICT when the tenant is in any other status (approving twice).
 */
enum tq_err tq_admin_approve(struct tq_pg *pg, const char *tenant_id, const char *by,
                             const char *note, struct tq_admin_result *out);

/*
 * pending_approval -> rejected (failure_reason = reason), the held job ->
 * cancelled; audit "rejected" {reason}. Nothing to dispatch.
 */
enum tq_err tq_admin_reject(struct tq_pg *pg, const char *tenant_id, const char *by,
                            const char *reason, struct tq_admin_result *out);

/*
 * The tenant's latest job:
 *   held or queued (forward) -> job cancelled, audit "cancelled"; the tenant
 *     becomes cancelled for a provision job, returns to the status it had
 *     for a deprovision job, and keeps its status for any other kind;
 *     action "cancelled": the caller may drop the id from Redis.
 *   running -> cancel_requested = true, audit "cancel_requested"; the worker
 *     stops at the next step boundary and rolls back. A second call finds
 *     it requested already: existed, no new audit event.
 * TQ_ECONFLICT "nothing to cancel: tenant is <status>" otherwise.
 */
enum tq_err tq_admin_cancel(struct tq_pg *pg, const char *tenant_id, const char *actor,
                            struct tq_admin_result *out);

/*
 * blocked -> its job blocked -> queued (phase kept: the worker re-runs the
 * steps not recorded succeeded), tenant queued.
 * rollback_failed -> its job -> queued with phase rollback, tenant
 * rolling_back (deprovisioning for a deprovision job): the worker resumes
 * the undo.
 * failed -> a new provision job (idempotency key "<tenant>:retry:<n>") on pl,
 * which is stored like submit stores it; tenant queued. pl may be NULL for
 * the other two cases; NULL here gives TQ_ECONFLICT with needs_pipeline.
 * Audit "retry_requested"; action "retry_requested", dispatch set.
 */
enum tq_err tq_admin_retry(struct tq_pg *pg, const char *tenant_id, const char *actor,
                           const struct tq_pipeline *pl, struct tq_admin_result *out);

/*
 * active or blocked -> a deprovision job on the pipeline of the tenant's
 * latest provision job (idempotency key "deprovision:<tenant>:<job id>"),
 * tenant deprovisioning; audit "deprovision_requested". Asking again finds
 * that job: existed, dispatch only while it is still queued.
 */
enum tq_err tq_admin_deprovision(struct tq_pg *pg, const char *tenant_id, const char *actor,
                                 struct tq_admin_result *out);

/*
 * Dead jobs, oldest first, as a JSON array of {job_id, tenant_id, kind,
 * dead_reason, deliveries, attempt, updated_at}. *out owned by the caller.
 */
enum tq_err tq_admin_dead_list(struct tq_pg *pg, json_t **out);

/*
 * Requeue dead jobs: target is a job id (digits) or a tenant id (all its
 * dead jobs). dead -> queued, deliveries = 0, dead_reason = NULL; audit
 * "requeued". *requeued: JSON array of {job_id, tenant_id}, caller owns it;
 * hand the ids to tq_admin_requeue_dead. TQ_ECONFLICT when the job (or every
 * job of the tenant) is not dead.
 */
enum tq_err tq_admin_dead_requeue(struct tq_pg *pg, const char *target, const char *actor,
                                  json_t **requeued);


/*
 * PostgreSQL side of `stats`: {"jobs_running": n, "jobs_by_status": {...},
 * "tenants_by_status": {...}}. *out owned by the caller.
 */
enum tq_err tq_admin_pg_stats(struct tq_pg *pg, json_t **out);

/*
 * A tenant's history as one JSON object (shape in enqueue/README.md,
 * `history`): every job with its steps and their attempts, and every audit
 * event. *out is the caller's (json_decref). TQ_ENOTFOUND for an unknown
 * tenant.
 */
enum tq_err tq_admin_history(struct tq_pg *pg, const char *tenant_id, json_t **out);

/* ---- Redis side: safe to repeat, so safe to retry ---- */

/* Drop id from ready and delayed (a cancelled job); harmless if absent. */
enum tq_err tq_admin_undispatch(struct tq_queue *q, int64_t id);

/* For each id, atomically: LREM dead, LPUSH ready. */
enum tq_err tq_admin_requeue_dead(struct tq_queue *q, const int64_t *ids, size_t n);

/*
 * Redis side of `stats`: {"ready", "delayed", "delayed_due", "processing",
 * "dead", "workers_live", "workers": [{"id", "live", "last_heartbeat_ms",
 * "heartbeat_age_ms", "ttl_ms", "processing"}]}. now_ms is passed in so
 * ages are computed against one clock. *out owned by the caller.
 */
enum tq_err tq_admin_queue_stats(struct tq_queue *q, uint64_t now_ms, json_t **out);

#endif
