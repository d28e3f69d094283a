/*
 * Operator actions (see tq/admin.h): each PostgreSQL action is one
 * transaction that locks the tenant row first, so two operators acting on
 * one tenant at once serialise and the second sees the first's outcome.
 * The Redis side (moving ids after PostgreSQL decided) is admin_queue.c.
 */
#include "tq/admin.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"
#include "tq/approvers.h"
#include "tq/status.h"
#include "tq/util.h"

/* Status names from the one table (tq/status.h). */
#define TS(x) tq_tenant_status_name(TQ_TS_##x)
#define JS(x) tq_job_status_name(TQ_JS_##x)

/* ms since epoch of not_before when it is still in the future, else 0 */
#define DUE_MS                                                                   \
    "CASE WHEN j.not_before > now() THEN (extract(epoch FROM j.not_before) * 1000)::bigint" \
    " ELSE 0 END"

#define fail tq__pg_set_err

static void copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

/* Run a statement; on failure tq_pg_errstr has the store's detail. */
static PGresult *run(struct tq_pg *pg, enum tq_err *err, const char *what, const char *sql,
                     int n, const char *const *p)
{
    return tq__pg_query(pg, err, what, sql, n, p);
}

static enum tq_err exec(struct tq_pg *pg, const char *what, const char *sql, int n,
                        const char *const *p)
{
    enum tq_err err;
    PQclear(run(pg, &err, what, sql, n, p));
    return err;
}

#define rollback tq__pg_rollback

static const char sql_audit[] =
    "INSERT INTO tq.audit_events (tenant_id, job_id, actor, event, detail)"
    " VALUES ($1, nullif($2, '0')::bigint, $3, $4, jsonb_strip_nulls($5::jsonb))";

/* detail is stolen. */
static enum tq_err audit(struct tq_pg *pg, const char *tenant, int64_t job_id, const char *actor,
                         const char *event, json_t *detail)
{
    char *d = detail ? json_dumps(detail, JSON_COMPACT) : NULL;
    json_decref(detail);
    if (!d)
        return fail(pg, TQ_EINVALID,
                    "cannot write the audit event: its detail is not valid UTF-8");
    char jid[32];
    snprintf(jid, sizeof(jid), "%" PRId64, job_id);
    const char *p[] = {tenant, jid, actor, event, d};
    enum tq_err err = exec(pg, "write the audit event", sql_audit, 5, p);
    free(d);
    return err;
}

/* The locked state of one tenant and its latest job. */
struct state {
    char status[32];
    char batch[128];
    char reason[512];
    bool has_job;
    int64_t job_id;
    char job_status[32];
    char kind[16];
    char phase[16];
    bool cancel_requested;
    char hash[65];
    int64_t due_ms;
};

static const char sql_lock_tenant[] =
    "SELECT status, coalesce(batch_id, ''), coalesce(failure_reason, '')"
    " FROM tq.tenants WHERE tenant_id = $1 FOR UPDATE";

static const char sql_lock_job[] =
    "SELECT j.id, j.status, j.kind, j.phase, j.cancel_requested, j.pipeline_hash, " DUE_MS
    " FROM tq.jobs j WHERE j.tenant_id = $1 ORDER BY j.id DESC LIMIT 1 FOR UPDATE";

/* BEGIN, lock the tenant and its latest job. The caller rolls back on error. */
static enum tq_err begin_locked(struct tq_pg *pg, const char *tenant, struct state *s,
                                struct tq_admin_result *out)
{
    memset(s, 0, sizeof(*s));
    memset(out, 0, sizeof(*out));
    copy(out->tenant_id, sizeof(out->tenant_id), tenant);
    enum tq_err err = exec(pg, "begin the transaction", "BEGIN", 0, NULL);
    if (err)
        return err;
    const char *p[] = {tenant};
    PGresult *r = run(pg, &err, "lock the tenant", sql_lock_tenant, 1, p);
    if (!r)
        return err;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return fail(pg, TQ_ENOTFOUND, "no such tenant");
    }
    copy(s->status, sizeof(s->status), PQgetvalue(r, 0, 0));
    copy(s->batch, sizeof(s->batch), PQgetvalue(r, 0, 1));
    copy(s->reason, sizeof(s->reason), PQgetvalue(r, 0, 2));
    PQclear(r);
    copy(out->from_status, sizeof(out->from_status), s->status);
    copy(out->tenant_status, sizeof(out->tenant_status), s->status);
    r = run(pg, &err, "lock the tenant's job", sql_lock_job, 1, p);
    if (!r)
        return err;
    if (PQntuples(r) == 1) {
        s->has_job = true;
        s->job_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        copy(s->job_status, sizeof(s->job_status), PQgetvalue(r, 0, 1));
        copy(s->kind, sizeof(s->kind), PQgetvalue(r, 0, 2));
        copy(s->phase, sizeof(s->phase), PQgetvalue(r, 0, 3));
        s->cancel_requested = strcmp(PQgetvalue(r, 0, 4), "t") == 0;
        copy(s->hash, sizeof(s->hash), PQgetvalue(r, 0, 5));
        s->due_ms = strtoll(PQgetvalue(r, 0, 6), NULL, 10);
        out->job_id = s->job_id;
        copy(out->job_status, sizeof(out->job_status), s->job_status);
    }
    PQclear(r);
    return TQ_OK;
}

static enum tq_err commit(struct tq_pg *pg)
{
    return exec(pg, "commit the transaction", "COMMIT", 0, NULL);
}

static enum tq_err set_tenant(struct tq_pg *pg, const char *tenant, const char *status,
                              struct tq_admin_result *out)
{
    const char *p[] = {tenant, status};
    enum tq_err err = exec(pg, "update the tenant",
                           "UPDATE tq.tenants SET status = $2, updated_at = now()"
                           " WHERE tenant_id = $1",
                           2, p);
    if (!err)
        copy(out->tenant_status, sizeof(out->tenant_status), status);
    return err;
}

/* ------------------------------------------------------------ approval */

static enum tq_err decide(struct tq_pg *pg, const char *tenant, const char *by,
                          const char *text, bool approve, struct tq_admin_result *out)
{
    struct state s;
    const char *verb = approve ? "approve" : "reject";
    enum tq_err err = begin_locked(pg, tenant, &s, out);
    if (err)
        goto out;
    if (strcmp(s.status, "pending_approval") != 0) {
        err = fail(pg, TQ_ECONFLICT,
                   "cannot %s: tenant is %s (only a pending_approval tenant can be %s)", verb,
                   s.status, approve ? "approved" : "rejected");
        goto out;
    }
    if (!s.has_job || strcmp(s.job_status, "held") != 0) {
        err = fail(pg, TQ_ECONFLICT,
                   "cannot %s: tenant is pending_approval but has no held job", verb);
        goto out;
    }
    /* Who may decide is data (tq/approvers.h): the tier's role, never the requester. */
    char role[40];
    char why[512];
    err = tq_approval_authorize(pg, tenant, by, approve, role, sizeof(role), why, sizeof(why));
    if (err) {
        if (err == TQ_ECONFLICT || err == TQ_ENOTFOUND)   /* a refusal: its detail, ours */
            fail(pg, err, "%s", why);
        goto out;
    }
    char jid[32];
    snprintf(jid, sizeof(jid), "%" PRId64, s.job_id);
    if (approve) {
        const char *pt[] = {tenant, by};
        err = exec(pg, "update the tenant",
                   "UPDATE tq.tenants SET status = 'queued', approver = $2,"
                   " approved_at = now(), updated_at = now() WHERE tenant_id = $1",
                   2, pt);
    } else {
        /* approver stays NULL: nobody approved; the audit event names who rejected */
        const char *pt[] = {tenant, text};
        err = exec(pg, "update the tenant",
                   "UPDATE tq.tenants SET status = 'rejected', failure_reason = $2,"
                   " updated_at = now() WHERE tenant_id = $1",
                   2, pt);
    }
    if (err)
        goto out;
    const char *pj[] = {jid};
    err = exec(pg, "update the job",
               approve ? "UPDATE tq.jobs SET status = 'queued', updated_at = now()"
                         " WHERE id = $1::bigint"
                       : "UPDATE tq.jobs SET status = 'cancelled', finished_at = now(),"
                         " updated_at = now(), error = 'rejected' WHERE id = $1::bigint",
               1, pj);
    if (err)
        goto out;
    err = audit(pg, tenant, s.job_id, by, approve ? "approved" : "rejected",
                json_pack("{s:s?, s:s}", approve ? "note" : "reason", text, "role", role));
    if (err)
        goto out;
    err = commit(pg);
    if (err)
        goto out;
    copy(out->tenant_status, sizeof(out->tenant_status), approve ? TS(QUEUED) : TS(REJECTED));
    copy(out->job_status, sizeof(out->job_status), approve ? JS(QUEUED) : JS(CANCELLED));
    copy(out->action, sizeof(out->action), approve ? "approved" : "rejected");
    out->dispatch = approve;
    out->due_ms = s.due_ms;
out:
    if (err)
        rollback(pg);
    return err;
}

enum tq_err tq_admin_approve(struct tq_pg *pg, const char *tenant_id, const char *by,
                             const char *note, struct tq_admin_result *out)
{
    return decide(pg, tenant_id, by, note, true, out);
}

enum tq_err tq_admin_reject(struct tq_pg *pg, const char *tenant_id, const char *by,
                            const char *reason, struct tq_admin_result *out)
{
    return decide(pg, tenant_id, by, reason, false, out);
}

/* -------------------------------------------------------------- cancel */

enum tq_err tq_admin_cancel(struct tq_pg *pg, const char *tenant_id, const char *actor,
                            struct tq_admin_result *out)
{
    struct state s;
    enum tq_err err = begin_locked(pg, tenant_id, &s, out);
    if (err)
        goto out;
    char jid[32];
    snprintf(jid, sizeof(jid), "%" PRId64, s.job_id);
    const char *pj[] = {jid};
    bool waiting = s.has_job && (strcmp(s.job_status, "held") == 0 ||
                                 strcmp(s.job_status, "queued") == 0);
    if (waiting && strcmp(s.phase, "rollback") == 0) {
        err = fail(pg, TQ_ECONFLICT,
                   "nothing to cancel: tenant is %s (its job is queued to finish a rollback, "
                   "which must not be interrupted)",
                   s.status);
        goto out;
    }
    if (waiting) {
        err = exec(pg, "cancel the job",
                   "UPDATE tq.jobs SET status = 'cancelled', lease_owner = NULL,"
                   " lease_until = NULL, finished_at = now(), updated_at = now()"
                   " WHERE id = $1::bigint",
                   1, pj);
        if (err)
            goto out;
        /*
         * A cancelled provision cancels the tenant; a cancelled deprovision
         * leaves it as it was before; any other kind (revalidate) leaves the
         * tenant's status alone.
         */
        char back[32];
        copy(back, sizeof(back), strcmp(s.kind, "provision") == 0 ? TS(CANCELLED) : s.status);
        if (strcmp(s.kind, "deprovision") == 0) {
            PGresult *r = run(pg, &err, "read the status before deprovisioning",
                              "SELECT coalesce((SELECT detail->>'from' FROM tq.audit_events"
                              " WHERE job_id = $1::bigint AND event = 'deprovision_requested'"
                              " ORDER BY id DESC LIMIT 1), 'active')",
                              1, pj);
            if (!r)
                goto out;
            copy(back, sizeof(back), PQgetvalue(r, 0, 0));
            PQclear(r);
        }
        if ((err = set_tenant(pg, tenant_id, back, out)))
            goto out;
        err = audit(pg, tenant_id, s.job_id, actor, "cancelled",
                    json_pack("{s:s, s:s, s:s}", "job_status", s.job_status, "kind", s.kind,
                              "from", s.status));
        if (err || (err = commit(pg)))
            goto out;
        copy(out->job_status, sizeof(out->job_status), JS(CANCELLED));
        copy(out->action, sizeof(out->action), "cancelled");
        goto out;
    }
    if (s.has_job && strcmp(s.job_status, "running") == 0) {
        copy(out->action, sizeof(out->action), "cancel_requested");
        if (s.cancel_requested) {
            out->existed = true;
            err = commit(pg);
            goto out;
        }
        err = exec(pg, "request cancellation",
                   "UPDATE tq.jobs SET cancel_requested = true, updated_at = now()"
                   " WHERE id = $1::bigint",
                   1, pj);
        if (!err)
            err = audit(pg, tenant_id, s.job_id, actor, "cancel_requested",
                        json_pack("{s:s, s:s}", "kind", s.kind, "from", s.status));
        if (!err)
            err = commit(pg);
        goto out;
    }
    err = fail(pg, TQ_ECONFLICT, "nothing to cancel: tenant is %s%s%s%s", s.status,
               s.has_job ? " (its latest job is " : "", s.has_job ? s.job_status : "",
               s.has_job ? ")" : "");
out:
    if (err)
        rollback(pg);
    return err;
}

/* --------------------------------------------------------------- retry */

static enum tq_err requeue_job(struct tq_pg *pg, int64_t job_id, const char *phase)
{
    char jid[32];
    snprintf(jid, sizeof(jid), "%" PRId64, job_id);
    const char *p[] = {jid, phase};
    return exec(pg, "requeue the job",
                "UPDATE tq.jobs SET status = 'queued', phase = coalesce($2, phase),"
                " lease_owner = NULL, lease_until = NULL, deliveries = 0,"
                " cancel_requested = false, finished_at = NULL, updated_at = now()"
                " WHERE id = $1::bigint",
                2, p);
}

static enum tq_err new_retry_job(struct tq_pg *pg, const char *tenant, const struct state *s,
                                 const struct tq_pipeline *pl, int64_t *job_id)
{
    enum tq_err err;
    const char *pp[] = {pl->hash, pl->name, pl->text};
    err = exec(pg, "store the pipeline",
               "INSERT INTO tq.pipelines (hash, name, body) VALUES ($1, $2, $3)"
               " ON CONFLICT (hash) DO NOTHING",
               3, pp);
    if (err)
        return err;
    const char *pt[] = {tenant};
    PGresult *r = run(pg, &err, "count the tenant's jobs",
                      "SELECT count(*) FROM tq.jobs WHERE tenant_id = $1 AND kind = 'provision'",
                      1, pt);
    if (!r)
        return err;
    long n = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    *job_id = 0;
    /* A key someone chose for a submit could collide: take the next free one. */
    for (long k = n; k < n + 100 && !*job_id; k++) {
        char *key = tq_xasprintf("%s:retry:%ld", tenant, k);
        const char *pj[] = {tenant, pl->hash, key, s->batch[0] ? s->batch : NULL};
        r = run(pg, &err, "insert the retry job",
                "INSERT INTO tq.jobs (tenant_id, kind, pipeline_hash, idempotency_key,"
                " batch_id, status) VALUES ($1, 'provision', $2, $3, $4, 'queued')"
                " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
                4, pj);
        free(key);
        if (!r)
            return err;
        if (PQntuples(r) == 1)
            *job_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
    }
    if (!*job_id)
        return fail(pg, TQ_ECONFLICT, "cannot find a free idempotency key for the retry");
    return TQ_OK;
}

enum tq_err tq_admin_retry(struct tq_pg *pg, const char *tenant_id, const char *actor,
                           const struct tq_pipeline *pl, struct tq_admin_result *out)
{
    struct state s;
    enum tq_err err = begin_locked(pg, tenant_id, &s, out);
    if (err)
        goto out;
    const char *to = NULL;
    int64_t job = s.job_id;
    bool fresh = false;
    enum tq_tenant_status was = tq_tenant_status_parse(s.status);
    if (was == TQ_TS_BLOCKED || was == TQ_TS_ROLLBACK_FAILED) {
        bool rb = was == TQ_TS_ROLLBACK_FAILED;
        if (!s.has_job || strcmp(s.job_status, s.status) != 0) {
            err = fail(pg, TQ_ECONFLICT,
                       "cannot retry: tenant is %s but its latest job is %s", s.status,
                       s.has_job ? s.job_status : "missing");
            goto out;
        }
        if ((err = requeue_job(pg, s.job_id, rb ? "rollback" : NULL)))
            goto out;
        /* a deprovision job is all undo: it resumes as deprovisioning */
        to = !rb                                 ? TS(QUEUED)
             : strcmp(s.kind, "deprovision") == 0 ? TS(DEPROVISIONING)
                                                 : TS(ROLLING_BACK);
    } else if (was == TQ_TS_FAILED) {
        if (!pl) {
            out->needs_pipeline = true;
            err = fail(pg, TQ_ECONFLICT,
                       "cannot retry: a failed tenant is retried as a new job on the"
                       " fleet's default pipeline");
            goto out;
        }
        if ((err = new_retry_job(pg, tenant_id, &s, pl, &job)))
            goto out;
        fresh = true;
        to = TS(QUEUED);
    } else {
        err = fail(pg, TQ_ECONFLICT,
                   "cannot retry: tenant is %s (retry applies to blocked, failed and "
                   "rollback_failed tenants; a dead job is requeued with `dead --requeue`)",
                   s.status);
        goto out;
    }
    const char *pt[] = {tenant_id, to};
    err = exec(pg, "update the tenant",
               "UPDATE tq.tenants SET status = $2, failure_reason = NULL, updated_at = now()"
               " WHERE tenant_id = $1",
               2, pt);
    if (err)
        goto out;
    copy(out->tenant_status, sizeof(out->tenant_status), to);
    json_t *d = json_pack("{s:s, s:I, s:b}", "from", s.status, "previous_job_id",
                          (json_int_t)s.job_id, "new_job", fresh);
    if (s.reason[0])
        json_object_set_new(d, "previous_reason", json_string(s.reason));
    if (fresh)
        json_object_set_new(d, "pipeline_hash", json_string(pl->hash));
    err = audit(pg, tenant_id, job, actor, "retry_requested", d);
    if (err || (err = commit(pg)))
        goto out;
    out->job_id = job;
    copy(out->job_status, sizeof(out->job_status), JS(QUEUED));
    copy(out->action, sizeof(out->action), "retry_requested");
    out->dispatch = true;
    out->due_ms = fresh ? 0 : s.due_ms;
out:
    if (err)
        rollback(pg);
    return err;
}

/* --------------------------------------------------------- deprovision */

enum tq_err tq_admin_deprovision(struct tq_pg *pg, const char *tenant_id, const char *actor,
                                 struct tq_admin_result *out)
{
    struct state s;
    char *key = NULL;
    enum tq_err err = begin_locked(pg, tenant_id, &s, out);
    if (err)
        goto out;
    const char *pt[] = {tenant_id};
    PGresult *r = run(pg, &err, "find the provision job",
                      "SELECT id, pipeline_hash FROM tq.jobs WHERE tenant_id = $1"
                      " AND kind = 'provision' ORDER BY id DESC LIMIT 1",
                      1, pt);
    if (!r)
        goto out;
    if (PQntuples(r) == 0) {
        PQclear(r);
        err = fail(pg, TQ_ECONFLICT,
                   "cannot deprovision: tenant is %s and has no provision job", s.status);
        goto out;
    }
    char pjid[32], hash[65];
    copy(pjid, sizeof(pjid), PQgetvalue(r, 0, 0));
    copy(hash, sizeof(hash), PQgetvalue(r, 0, 1));
    PQclear(r);
    key = tq_xasprintf("deprovision:%s:%s", tenant_id, pjid);
    copy(out->action, sizeof(out->action), "deprovision_requested");

    const char *pk[] = {key};
    r = run(pg, &err, "find the deprovision job",
            "SELECT id, status FROM tq.jobs WHERE idempotency_key = $1", 1, pk);
    if (!r)
        goto out;
    if (PQntuples(r) == 1) {
        out->existed = true;
        out->job_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        copy(out->job_status, sizeof(out->job_status), PQgetvalue(r, 0, 1));
        out->dispatch = strcmp(out->job_status, "queued") == 0;
        PQclear(r);
        err = commit(pg);
        goto out;
    }
    PQclear(r);
    if (strcmp(s.status, "active") != 0 && strcmp(s.status, "blocked") != 0) {
        err = fail(pg, TQ_ECONFLICT,
                   "cannot deprovision: tenant is %s (only an active or blocked tenant can be "
                   "deprovisioned)",
                   s.status);
        goto out;
    }
    const char *pj[] = {tenant_id, hash, key};
    r = run(pg, &err, "insert the deprovision job",
            "INSERT INTO tq.jobs (tenant_id, kind, pipeline_hash, idempotency_key, status)"
            " VALUES ($1, 'deprovision', $2, $3, 'queued') RETURNING id",
            3, pj);
    if (!r)
        goto out;
    out->job_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    if ((err = set_tenant(pg, tenant_id, TS(DEPROVISIONING), out)))
        goto out;
    err = audit(pg, tenant_id, out->job_id, actor, "deprovision_requested",
                json_pack("{s:s, s:I, s:s}", "from", s.status, "provision_job_id",
                          (json_int_t)strtoll(pjid, NULL, 10), "pipeline_hash", hash));
    if (err || (err = commit(pg)))
        goto out;
    copy(out->job_status, sizeof(out->job_status), JS(QUEUED));
    out->dispatch = true;
out:
    free(key);
    if (err)
        rollback(pg);
    return err;
}

/* ---------------------------------------------------------------- dead */

static json_t *json_query(struct tq_pg *pg, enum tq_err *err, const char *what, const char *sql,
                          int n, const char *const *p)
{
    PGresult *r = run(pg, err, what, sql, n, p);
    if (!r)
        return NULL;
    json_error_t je;
    json_t *o = json_loads(PQgetvalue(r, 0, 0), 0, &je);
    PQclear(r);
    if (!o)
        *err = fail(pg, TQ_EPG, "could not %s: invalid JSON from the store: %s",
                    what, je.text);
    return o;
}

enum tq_err tq_admin_dead_list(struct tq_pg *pg, json_t **out)
{
    enum tq_err err;
    *out = json_query(pg, &err, "list dead jobs",
                      "SELECT coalesce(json_agg(x ORDER BY x.job_id), '[]')::text FROM ("
                      " SELECT j.id AS job_id, j.tenant_id, j.kind, j.dead_reason,"
                      "  j.deliveries, j.attempt, j.updated_at"
                      " FROM tq.jobs j WHERE j.status = 'dead') x",
                      0, NULL);
    return *out ? TQ_OK : err;
}

/* ---------------------------------------------------------------- history */

/*
 * A tenant's whole story in one document, built by PostgreSQL in one
 * statement: every job (oldest first) with its steps and each step's
 * attempts (run and undo), and every audit event of the tenant.
 */
static const char sql_history[] =
    "SELECT json_build_object('tenant_id', t.tenant_id, 'name', t.name, 'status', t.status,"
    " 'created_at', t.created_at, 'activated_at', t.activated_at,"
    " 'last_validated_at', t.last_validated_at, 'drift', t.drift,"
    " 'failure_reason', t.failure_reason,"
    " 'jobs', coalesce((SELECT json_agg(json_build_object('job_id', j.id, 'kind', j.kind,"
    "   'status', j.status, 'phase', j.phase, 'attempt', j.attempt, 'batch', j.batch_id,"
    "   'idempotency_key', j.idempotency_key, 'pipeline', p.name, 'pipeline_hash',"
    "   j.pipeline_hash, 'created_at', j.created_at, 'started_at', j.started_at,"
    "   'finished_at', j.finished_at, 'error', j.error, 'failed_step', j.failed_step,"
    "   'dead_reason', j.dead_reason, 'deliveries', j.deliveries, 'worker', j.lease_owner,"
    "   'steps', coalesce((SELECT json_agg(json_build_object('step', s.step,"
    "     'status', s.status, 'attempts', s.attempts, 'undo_attempts', s.undo_attempts,"
    "     'started_at', s.started_at, 'finished_at', s.finished_at,"
    "     'last_error', s.last_error,"
    "     'attempt_log', coalesce((SELECT json_agg(json_build_object('phase', a.phase,"
    "       'attempt', a.attempt, 'status', a.status, 'worker', a.worker,"
    "       'started_at', a.started_at, 'finished_at', a.finished_at, 'error', a.error)"
    "       ORDER BY a.id) FROM tq.step_attempts a WHERE a.job_id = j.id"
    "       AND a.step = s.step), '[]'))"
    "     ORDER BY s.started_at NULLS LAST, s.step)"
    "     FROM tq.job_steps s WHERE s.job_id = j.id), '[]'))"
    "   ORDER BY j.id) FROM tq.jobs j LEFT JOIN tq.pipelines p ON p.hash = j.pipeline_hash"
    "   WHERE j.tenant_id = t.tenant_id), '[]'),"
    " 'events', coalesce((SELECT json_agg(json_build_object('at', e.at, 'actor', e.actor,"
    "   'event', e.event, 'job_id', e.job_id, 'detail', e.detail) ORDER BY e.at, e.id)"
    "   FROM tq.audit_events e WHERE e.tenant_id = t.tenant_id), '[]'))::text"
    " FROM tq.tenants t WHERE t.tenant_id = $1";

enum tq_err tq_admin_history(struct tq_pg *pg, const char *tenant_id, json_t **out)
{
    *out = NULL;
    enum tq_err err;
    const char *p[] = {tenant_id};
    PGresult *r = run(pg, &err, "read the tenant's history", sql_history, 1, p);
    if (!r)
        return err;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return fail(pg, TQ_ENOTFOUND, "no such tenant \"%s\"", tenant_id);
    }
    json_error_t je;
    *out = json_loads(PQgetvalue(r, 0, 0), 0, &je);
    PQclear(r);
    if (!*out)
        return fail(pg, TQ_EPG,
                    "could not read the tenant's history: invalid JSON from the store: %s",
                    je.text);
    return TQ_OK;
}

static bool all_digits(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 18)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

enum tq_err tq_admin_dead_requeue(struct tq_pg *pg, const char *target, const char *actor,
                                  json_t **requeued)
{
    *requeued = NULL;
    bool by_job = all_digits(target);
    enum tq_err err = exec(pg, "begin the transaction", "BEGIN", 0, NULL);
    if (err)
        return err;
    const char *p[] = {target};
    PGresult *r;
    if (by_job) {
        r = run(pg, &err, "lock the job",
                "SELECT status FROM tq.jobs WHERE id = $1::bigint FOR UPDATE", 1, p);
        if (!r)
            goto out;
        if (PQntuples(r) == 0)
            err = fail(pg, TQ_ENOTFOUND, "no such job: %s", target);
        else if (strcmp(PQgetvalue(r, 0, 0), "dead") != 0)
            err = fail(pg, TQ_ECONFLICT, "job %s is %s, not dead", target,
                       PQgetvalue(r, 0, 0));
        PQclear(r);
    } else {
        r = run(pg, &err, "lock the tenant",
                "SELECT status FROM tq.tenants WHERE tenant_id = $1 FOR UPDATE", 1, p);
        if (!r)
            goto out;
        if (PQntuples(r) == 0)
            err = fail(pg, TQ_ENOTFOUND, "no such tenant or job");
        PQclear(r);
    }
    if (err)
        goto out;
    /* One statement: jobs, tenants and audit change together. */
    const char *pq[] = {by_job ? target : NULL, by_job ? NULL : target, actor};
    r = run(pg, &err, "requeue dead jobs",
            "WITH j AS (UPDATE tq.jobs jj SET status = 'queued', deliveries = 0,"
            "   dead_reason = NULL, lease_owner = NULL, lease_until = NULL, finished_at = NULL,"
            "   updated_at = now()"
            "   FROM (SELECT id, dead_reason FROM tq.jobs WHERE status = 'dead'"
            "     AND (id = $1::bigint OR tenant_id = $2::text)) old"
            "   WHERE jj.id = old.id"
            "   RETURNING jj.id, jj.tenant_id, jj.kind, jj.phase, old.dead_reason AS reason),"
            /* The worker leaves the tenant's status as it was and notes the dead
               letter in failure_reason; the tenant is waiting again now. */
            " t AS (UPDATE tq.tenants tn SET updated_at = now(),"
            "   failure_reason = CASE WHEN tn.failure_reason LIKE 'dead-lettered: %'"
            "     THEN NULL ELSE tn.failure_reason END,"
            "   status = CASE WHEN tn.status NOT IN ('queued', 'provisioning', 'validating',"
            "       'rolling_back', 'deprovisioning') THEN tn.status"
            "     WHEN j.kind = 'deprovision' THEN 'deprovisioning'"
            "     WHEN j.phase = 'rollback' THEN 'rolling_back' ELSE 'queued' END"
            "   FROM j WHERE tn.tenant_id = j.tenant_id RETURNING tn.tenant_id),"
            " a AS (INSERT INTO tq.audit_events (tenant_id, job_id, actor, event, detail)"
            "   SELECT j.tenant_id, j.id, $3, 'requeued',"
            "     jsonb_strip_nulls(jsonb_build_object('from', 'dead', 'dead_reason', j.reason))"
            "   FROM j RETURNING job_id)"
            " SELECT coalesce(json_agg(json_build_object('job_id', j.id, 'tenant_id',"
            "   j.tenant_id) ORDER BY j.id), '[]')::text FROM j",
            3, pq);
    if (!r)
        goto out;
    json_error_t je;
    *requeued = json_loads(PQgetvalue(r, 0, 0), 0, &je);
    PQclear(r);
    if (!*requeued) {
        err = fail(pg, TQ_EPG, "could not requeue: invalid JSON from the store");
        goto out;
    }
    if (json_array_size(*requeued) == 0) {
        err = fail(pg, TQ_ECONFLICT, "tenant %s has no dead job", target);
        goto out;
    }
    err = commit(pg);
out:
    if (err) {
        rollback(pg);
        json_decref(*requeued);
        *requeued = NULL;
    }
    return err;
}


/* -------------------------------------------------------------- stats */

enum tq_err tq_admin_pg_stats(struct tq_pg *pg, json_t **out)
{
    enum tq_err err;
    *out = json_query(
        pg, &err, "read job and tenant counts",
        "SELECT json_build_object("
        " 'jobs_running', (SELECT count(*) FROM tq.jobs WHERE status = 'running'),"
        " 'jobs_by_status', (SELECT coalesce(json_object_agg(status, n), '{}') FROM"
        "   (SELECT status, count(*) AS n FROM tq.jobs GROUP BY status) s),"
        " 'tenants_by_status', (SELECT coalesce(json_object_agg(status, n), '{}') FROM"
        "   (SELECT status, count(*) AS n FROM tq.tenants GROUP BY status) s))::text",
        0, NULL);
    return *out ? TQ_OK : err;
}
