/*
 * Batched, fenced job-state writes (see tq/store.h). Rows travel as
 * PostgreSQL array literals and are expanded with unnest(): a flush is one
 * prepared statement (fenced by each job row's own UPDATE) per round of job
 * rows, all sent in one pipeline — one round trip and one transaction.
 */
#include "tq/store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"
#include "tq/util.h"

/* ---- array literals ---- */
struct arr {
    struct tq_buf b;
    size_t n;
};

static void arr_init(struct arr *a)
{
    tq_buf_init(&a->b);
    tq_buf_puts(&a->b, "{");
    a->n = 0;
}

static void arr_sep(struct arr *a)
{
    if (a->n++)
        tq_buf_puts(&a->b, ",");
}

static void arr_text(struct arr *a, const char *s)
{
    arr_sep(a);
    if (!s) {
        tq_buf_puts(&a->b, "NULL");
        return;
    }
    tq_buf_puts(&a->b, "\"");
    for (const char *p = s; *p;) {
        size_t run = strcspn(p, "\"\\");
        tq_buf_append(&a->b, p, run);
        p += run;
        if (*p) {
            char esc[2] = {'\\', *p++};
            tq_buf_append(&a->b, esc, 2);
        }
    }
    tq_buf_puts(&a->b, "\"");
}

/* Thousands of numbers per flush: no printf machinery. */
static void arr_i64(struct arr *a, int64_t v)
{
    char t[24], *p = t + sizeof(t);
    uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    arr_sep(a);
    tq_buf_append(&a->b, p, (size_t)(t + sizeof(t) - p));
}

static void arr_bool(struct arr *a, bool v)
{
    arr_sep(a);
    tq_buf_puts(&a->b, v ? "t" : "f");
}

static const char *arr_done(struct arr *a)
{
    tq_buf_puts(&a->b, "}");
    return a->b.data;
}

static void arr_free(struct arr *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tq_buf_cleanup(&a[i].b);
}

/* ---- claim ---- */

static const char sql_dead_on_claim[] =
    "WITH d AS (UPDATE tq.jobs SET status = 'dead', lease_owner = NULL, lease_until = NULL,"
    "   dead_reason = 'delivered ' || deliveries || ' times without progress',"
    "   updated_at = now(), finished_at = now()"
    "   WHERE id = ANY($1::bigint[]) AND status IN ('queued', 'running')"
    "     AND (lease_until IS NULL OR lease_until < now()) AND deliveries >= $2::int"
    "   RETURNING id, tenant_id, dead_reason),"
    " t AS (UPDATE tq.tenants tn SET failure_reason = 'dead-lettered: ' || d.dead_reason,"
    "   updated_at = now() FROM d WHERE tn.tenant_id = d.tenant_id RETURNING 1),"
    " a AS (INSERT INTO tq.audit_events (tenant_id, job_id, actor, event, detail)"
    "   SELECT d.tenant_id, d.id, 'worker:' || $3, 'dead_lettered',"
    "     jsonb_build_object('reason', d.dead_reason) FROM d RETURNING 1)"
    " SELECT id FROM d";

/*
 * The claim writes the job row only: the tenant's status follows with the
 * job's first recorded transition (the engine's first row), so a fast job
 * costs one tenant update, not two.
 */
static const char sql_claim[] =
    "WITH c AS ("
    "  UPDATE tq.jobs j SET status = 'running', lease_owner = $2,"
    "    lease_epoch = j.lease_epoch + 1,"
    "    lease_until = now() + make_interval(secs => $3::int / 1000.0),"
    "    attempt = j.attempt + 1, deliveries = j.deliveries + 1,"
    "    started_at = coalesce(j.started_at, now()), updated_at = now()"
    "  WHERE j.id = ANY($1::bigint[]) AND j.status IN ('queued', 'running')"
    "    AND (j.lease_until IS NULL OR j.lease_until < now())"
    "    AND (j.not_before IS NULL OR j.not_before <= now()) AND j.deliveries < $4::int"
    "  RETURNING j.id, j.tenant_id, j.kind, j.pipeline_hash, j.lease_epoch, j.attempt,"
    "    j.phase, j.cancel_requested)"
    " SELECT c.id, c.lease_epoch, c.attempt, c.kind, c.pipeline_hash, c.phase,"
    "   c.cancel_requested, tn.tenant_id, tn.name, tn.tier, tn.region, tn.owner"
    " FROM c JOIN tq.tenants tn ON tn.tenant_id = c.tenant_id";

/*
 * The steps recorded so far, read by a statement of its own AFTER the claim
 * committed. Inside the claim statement they would come from its snapshot,
 * taken before the claim waited on the previous holder's last flush: a step
 * that holder recorded as succeeded in that flush would look unfinished and
 * run a second time.
 */
static const char sql_claimed_steps[] =
    "SELECT s.job_id, json_object_agg(s.step, json_build_object('status', s.status,"
    "  'attempts', s.attempts, 'undo_attempts', s.undo_attempts,"
    "  'outage_attempts', s.outage_attempts, 'undo_outage_attempts', s.undo_outage_attempts,"
    "  'reached', EXISTS (SELECT 1 FROM tq.step_attempts a WHERE a.job_id = s.job_id"
    "    AND a.step = s.step AND a.phase = 'run' AND a.reached)))::text"
    " FROM tq.job_steps s WHERE s.job_id = ANY($1::bigint[]) GROUP BY s.job_id";

static void copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src);
}

/* One statement, prepared once per connection (see tq__pg_pipeline). */
static PGresult *run1(struct tq_pg *pg, enum tq_err *err, const char *what, const char *sql,
                      int n, const char *const *p)
{
    struct tq__stmt st = {what, sql, n, p, NULL};
    *err = tq__pg_pipeline(pg, &st, 1);
    return st.res;
}

/* The claim's answer, one struct tq_claimed per row (steps still empty). */
static struct tq_claimed *claimed_rows(PGresult *r, size_t *m)
{
    *m = (size_t)PQntuples(r);
    struct tq_claimed *out = tq_xcalloc(*m ? *m : 1, sizeof(*out));
    for (size_t i = 0; i < *m; i++) {
        struct tq_claimed *x = &out[i];
        int row = (int)i;
        x->c.job_id = strtoll(PQgetvalue(r, row, 0), NULL, 10);
        x->c.epoch = strtoll(PQgetvalue(r, row, 1), NULL, 10);
        x->c.attempt = atoi(PQgetvalue(r, row, 2));
        copy(x->c.kind, sizeof(x->c.kind), PQgetvalue(r, row, 3));
        copy(x->c.pipeline_hash, sizeof(x->c.pipeline_hash), PQgetvalue(r, row, 4));
        x->rollback = strcmp(PQgetvalue(r, row, 5), "rollback") == 0;
        x->cancel_requested = PQgetvalue(r, row, 6)[0] == 't';
        copy(x->c.tenant_id, sizeof(x->c.tenant_id), PQgetvalue(r, row, 7));
        copy(x->c.name, sizeof(x->c.name), PQgetvalue(r, row, 8));
        copy(x->c.tier, sizeof(x->c.tier), PQgetvalue(r, row, 9));
        copy(x->c.region, sizeof(x->c.region), PQgetvalue(r, row, 10));
        copy(x->c.owner, sizeof(x->c.owner), PQgetvalue(r, row, 11));
        x->steps = json_object();
    }
    return out;
}

/*
 * The steps recorded so far of the claimed jobs. Step rows are written only
 * under an epoch some claim handed out, so a first claim (epoch 1) has none:
 * only redeliveries are read.
 */
static enum tq_err claimed_steps(struct tq_pg *pg, struct tq_claimed *out, size_t m)
{
    enum tq_err err = TQ_OK;
    struct arr got;
    arr_init(&got);
    for (size_t i = 0; i < m; i++)
        if (out[i].c.epoch > 1)
            arr_i64(&got, out[i].c.job_id);
    arr_done(&got);
    if (got.n > 0) {
        const char *ps[] = {got.b.data};
        PGresult *r = run1(pg, &err, "read the claimed jobs' steps", sql_claimed_steps, 1, ps);
        for (int row = 0; r && row < PQntuples(r); row++) {
            int64_t id = strtoll(PQgetvalue(r, row, 0), NULL, 10);
            for (size_t i = 0; i < m; i++) {
                if (out[i].c.job_id != id)
                    continue;
                json_error_t je;
                json_t *st = json_loads(PQgetvalue(r, row, 1), 0, &je);
                if (st) {
                    json_decref(out[i].steps);
                    out[i].steps = st;
                }
            }
        }
        PQclear(r);
    }
    arr_free(&got, 1);
    return err;
}

/* Only ids the claim left out can be worn-out redeliveries (usually none). */
static void dead_on_claim(struct tq_pg *pg, const int64_t *ids, size_t n,
                          const struct tq_claimed *out, size_t m, const char *maxd,
                          const char *worker, int64_t **dead, size_t *ndead)
{
    struct arr rest;
    arr_init(&rest);
    for (size_t i = 0; i < n; i++) {
        bool claimed = false;
        for (size_t k = 0; k < m && !claimed; k++)
            claimed = out[k].c.job_id == ids[i];
        if (!claimed)
            arr_i64(&rest, ids[i]);
    }
    arr_done(&rest);
    if (rest.n > 0) {
        enum tq_err err;
        const char *pd[] = {rest.b.data, maxd, worker};
        /* on failure the claims stand; dead-lettering waits for the next delivery */
        PGresult *r = run1(pg, &err, "dead-letter redelivered jobs", sql_dead_on_claim, 3, pd);
        if (r) {
            *ndead = (size_t)PQntuples(r);
            *dead = tq_xcalloc(*ndead ? *ndead : 1, sizeof(int64_t));
            for (size_t i = 0; i < *ndead; i++)
                (*dead)[i] = strtoll(PQgetvalue(r, (int)i, 0), NULL, 10);
            PQclear(r);
        }
    }
    arr_free(&rest, 1);
}

enum tq_err tq_store_claim(struct tq_pg *pg, const int64_t *ids, size_t n, const char *worker,
                           uint32_t lease_ms, int max_deliveries, struct tq_claimed **out,
                           size_t *nout, int64_t **dead, size_t *ndead)
{
    *out = NULL;
    *nout = 0;
    *dead = NULL;
    *ndead = 0;
    if (n == 0)
        return TQ_OK;
    struct arr a;
    arr_init(&a);
    for (size_t i = 0; i < n; i++)
        arr_i64(&a, ids[i]);
    arr_done(&a);
    char lease[16], maxd[16];
    snprintf(lease, sizeof(lease), "%u", lease_ms);
    snprintf(maxd, sizeof(maxd), "%d", max_deliveries);
    enum tq_err err;
    const char *pc[] = {a.b.data, worker, lease, maxd};
    PGresult *r = run1(pg, &err, "claim jobs", sql_claim, 4, pc);
    arr_free(&a, 1);
    if (!r)
        return err;
    *out = claimed_rows(r, nout);
    PQclear(r);
    /* claims that stand but are unusable: the caller hands them back */
    if ((err = claimed_steps(pg, *out, *nout))) {
        for (size_t i = 0; i < *nout; i++)
            json_decref((*out)[i].steps);
        free(*out);
        *out = NULL;
        *nout = 0;
        return err;
    }
    dead_on_claim(pg, ids, n, *out, *nout, maxd, worker, dead, ndead);
    return TQ_OK;
}

/* ---- flush ---- */

/*
 * A flush is one statement (plus one per extra "round", below). Its fence is
 * the UPDATE of each job row, looked up by id: a row whose epoch, owner or
 * status moved on is not updated and not returned, and the step rows,
 * attempts and audit events of that job join nothing and are not written.
 * A concurrent claim of the same job waits for our commit (or we for its,
 * and the recheck then sees the new epoch). Jobs with step rows but no job
 * row of their own get a fence row that changes only updated_at (and, on a
 * redelivered job that made progress, the delivery count and the lease).
 * The fence is written as CASE ... END = epoch so the planner cannot
 * estimate "few jobs are running" from the statistics and scan tq.jobs: it
 * can only look each id up. One UPDATE changes a row once, so a job's second
 * job row of one flush (a warning, then the outcome) goes in a second run of
 * the same statement, with job rows only, fenced again ("rounds").
 */
static const char sql_flush[] =
    "WITH v AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[],"
    "    $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::bool[], $11::bool[])"
    "  AS v(job_id, epoch, jstatus, tstatus, phase, event, reason, failed_step, nb_ms, rel,"
    "    progress)),"
    " j AS (UPDATE tq.jobs j SET status = coalesce(v.jstatus, j.status),"
    "    phase = coalesce(v.phase, j.phase), updated_at = now(),"
    "    error = coalesce(v.reason, j.error),"
    "    failed_step = coalesce(v.failed_step, j.failed_step),"
    "    deliveries = CASE WHEN v.progress AND j.deliveries > 1 THEN 0 ELSE j.deliveries END,"
    "    not_before = CASE WHEN v.jstatus IS NULL THEN j.not_before"
    "      WHEN v.nb_ms > 0 THEN to_timestamp(v.nb_ms / 1000.0) END,"
    "    next_attempt_at = CASE WHEN v.jstatus IS NULL THEN j.next_attempt_at"
    "      WHEN v.nb_ms > 0 THEN to_timestamp(v.nb_ms / 1000.0) END,"
    "    lease_owner = CASE WHEN v.rel THEN NULL ELSE j.lease_owner END,"
    "    lease_until = CASE WHEN v.rel THEN NULL"
    "      WHEN v.progress AND j.deliveries > 1"
    "        THEN greatest(j.lease_until, now() + make_interval(secs => $29::int / 1000.0))"
    "      ELSE j.lease_until END,"
    "    finished_at = CASE WHEN v.jstatus IN ('succeeded', 'failed', 'cancelled', 'dead',"
    "      'blocked', 'rollback_failed') THEN now() ELSE j.finished_at END"
    "  FROM v WHERE j.id = v.job_id"
    "    AND CASE WHEN j.status = 'running' AND j.lease_owner = $30 THEN j.lease_epoch END"
    "      = v.epoch"
    "  RETURNING j.id, j.tenant_id, j.cancel_requested, v.tstatus, v.event, v.reason,"
    "    v.failed_step),"
    " s AS (INSERT INTO tq.job_steps AS s (job_id, step, status, attempts, undo_attempts,"
    "    outage_attempts, undo_outage_attempts, started_at, finished_at, last_error, output)"
    "  SELECT x.job_id, x.step, x.status, x.ad, x.ud, x.od, x.uod,"
    "    CASE WHEN x.st_ms > 0 THEN to_timestamp(x.st_ms / 1000.0) END,"
    "    CASE WHEN x.fin_ms > 0 THEN to_timestamp(x.fin_ms / 1000.0) END,"
    "    x.error, x.output::jsonb"
    "  FROM unnest($12::bigint[], $13::text[], $14::text[], $15::int[], $16::int[],"
    "      $17::bigint[], $18::bigint[], $19::text[], $20::text[], $32::int[], $33::int[])"
    "    AS x(job_id, step, status, ad, ud, st_ms, fin_ms, error, output, od, uod)"
    "    JOIN j ON j.id = x.job_id"
    "  ON CONFLICT (job_id, step) DO UPDATE SET status = excluded.status,"
    "    attempts = s.attempts + excluded.attempts,"
    "    undo_attempts = s.undo_attempts + excluded.undo_attempts,"
    "    outage_attempts = s.outage_attempts + excluded.outage_attempts,"
    "    undo_outage_attempts = s.undo_outage_attempts + excluded.undo_outage_attempts,"
    "    started_at = coalesce(excluded.started_at, s.started_at),"
    "    finished_at = excluded.finished_at,"
    "    last_error = coalesce(excluded.last_error, s.last_error),"
    "    output = coalesce(excluded.output, s.output)"
    "  RETURNING 1),"
    " at AS (SELECT x.*, j.tenant_id FROM unnest($21::bigint[], $22::text[], $23::text[],"
    "      $24::int[], $25::text[], $26::bigint[], $27::bigint[], $28::text[], $31::bool[])"
    "    AS x(job_id, step, phase, attempt, status, st_ms, fin_ms, error, reached)"
    "    JOIN j ON j.id = x.job_id),"
    " a AS (INSERT INTO tq.step_attempts (job_id, step, phase, attempt, status, worker,"
    "    started_at, finished_at, error, reached)"
    "  SELECT job_id, step, phase, attempt, status, $30, to_timestamp(st_ms / 1000.0),"
    "    to_timestamp(fin_ms / 1000.0), error, reached FROM at RETURNING 1),"
    " ae AS (INSERT INTO tq.audit_events (at, tenant_id, job_id, actor, event, detail)"
    "  SELECT to_timestamp(fin_ms / 1000.0), tenant_id, job_id, 'worker:' || $30,"
    "    CASE WHEN phase = 'run' THEN 'step_' ELSE 'undo_' END || status,"
    "    jsonb_strip_nulls(jsonb_build_object('step', step, 'attempt', attempt, 'error', error))"
    "  FROM at"
    "  UNION ALL"
    "  SELECT clock_timestamp(), j.tenant_id, j.id, 'worker:' || $30, j.event,"
    "    jsonb_strip_nulls(jsonb_build_object('reason', j.reason, 'step', j.failed_step))"
    "  FROM j WHERE j.event IS NOT NULL RETURNING 1),"
    " rv AS (UPDATE tq.tenants tn SET last_validated_at = now(), updated_at = now(),"
    "    drift = CASE WHEN j.event = 'drift_detected' THEN j.reason ELSE NULL END"
    "  FROM j WHERE tn.tenant_id = j.tenant_id AND j.event IN ('revalidated', 'drift_detected')"
    "  RETURNING 1),"
    " t AS (UPDATE tq.tenants tn SET status = j.tstatus, updated_at = now(),"
    "    failure_reason = CASE WHEN j.tstatus IN ('active', 'deprovisioned', 'queued',"
    "      'provisioning') THEN NULL ELSE coalesce(j.reason, tn.failure_reason) END,"
    "    activated_at = CASE WHEN j.tstatus = 'active' THEN now() ELSE tn.activated_at END"
    "  FROM j WHERE tn.tenant_id = j.tenant_id AND j.tstatus IS NOT NULL RETURNING 1)"
    " SELECT id, cancel_requested FROM j";

/* The index of id's entry in *res, added (stale until PostgreSQL says otherwise) if new. */
static size_t result_for(struct tq_flush_result **res, size_t *nres, size_t *cap, int64_t id)
{
    for (size_t i = 0; i < *nres; i++)
        if ((*res)[i].job_id == id)
            return i;
    if (*nres == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *res = tq_xrealloc(*res, *cap * sizeof(**res));
    }
    (*res)[*nres].job_id = id;
    (*res)[*nres].stale = true;
    (*res)[*nres].cancel_requested = false;
    return (*nres)++;
}

/* Per job of a flush, its round-0 fence row: epoch, progress, first job row. */
struct fence {
    int64_t epoch;
    bool progress;
    const struct tq_job_row *row;
};

static struct tq_flush_result *find(struct tq_flush_result *res, size_t n, int64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (res[i].job_id == id)
            return &res[i];
    return NULL;
}

/* The parameters of one statement of a flush: array literals plus scalars. */
struct params {
    struct arr a[31];
    int narr;
    char lease[16];
    const char *p[33];
};

static void params_done(struct params *x, int narr)
{
    x->narr = narr;
    for (int i = 0; i < narr; i++)
        x->p[i] = arr_done(&x->a[i]);
}

static void job_row_params(struct arr *a, const struct tq_job_row *s)
{
    /* names from the one table (tq/status.h); NONE is NULL: keep */
    arr_text(&a[2], tq_job_status_name(s->job_status));
    arr_text(&a[3], tq_tenant_status_name(s->tenant_status));
    arr_text(&a[4], s->phase);
    arr_text(&a[5], s->event);
    arr_text(&a[6], s->reason);
    arr_text(&a[7], s->failed_step);
    arr_i64(&a[8], s->not_before_ms);
    arr_bool(&a[9], s->release_lease);
}

/*
 * Round 0: one fence row per job of the batch (its first job row, or a bare
 * fence), then every step row and attempt. Round k > 0: each job's k-th job
 * row, nothing else.
 */
static void flush_params(struct params *x, const struct tq_flush *f, const int *round, int k,
                         const struct tq_flush_result *res, const struct fence *fc, size_t nres)
{
    for (int i = 0; i < 31; i++)
        arr_init(&x->a[i]);
    for (size_t i = 0; k > 0 && i < f->njobs; i++) {
        if (round[i] != k)
            continue;
        arr_i64(&x->a[0], f->jobs[i].job_id);
        arr_i64(&x->a[1], f->jobs[i].epoch);
        job_row_params(x->a, &f->jobs[i]);
        arr_bool(&x->a[10], false);
    }
    for (size_t r = 0; k == 0 && r < nres; r++) {
        arr_i64(&x->a[0], res[r].job_id);
        arr_i64(&x->a[1], fc[r].epoch);
        if (fc[r].row) {
            job_row_params(x->a, fc[r].row);
        } else {
            for (int i = 2; i < 8; i++)
                arr_text(&x->a[i], NULL);
            arr_i64(&x->a[8], 0);
            arr_bool(&x->a[9], false);
        }
        arr_bool(&x->a[10], fc[r].progress);
    }
    for (size_t i = 0; k == 0 && i < f->nsteps; i++) {
        const struct tq_step_row *s = &f->steps[i];
        arr_i64(&x->a[11], s->job_id);
        arr_text(&x->a[12], s->step);
        arr_text(&x->a[13], tq_step_status_name(s->status));
        arr_i64(&x->a[14], s->attempts_delta);
        arr_i64(&x->a[15], s->undo_attempts_delta);
        arr_i64(&x->a[16], s->started_ms);
        arr_i64(&x->a[17], s->finished_ms);
        arr_text(&x->a[18], s->error);
        arr_text(&x->a[19], s->output);
        arr_i64(&x->a[29], s->outage_attempts_delta);
        arr_i64(&x->a[30], s->undo_outage_attempts_delta);
    }
    for (size_t i = 0; k == 0 && i < f->nattempts; i++) {
        const struct tq_attempt_row *s = &f->attempts[i];
        arr_i64(&x->a[20], s->job_id);
        arr_text(&x->a[21], s->step);
        arr_text(&x->a[22], s->phase);
        arr_i64(&x->a[23], s->attempt);
        arr_text(&x->a[24], tq_step_status_name(s->status));
        arr_i64(&x->a[25], s->started_ms);
        arr_i64(&x->a[26], s->finished_ms);
        arr_text(&x->a[27], s->error);
        arr_bool(&x->a[28], s->reached);
    }
    params_done(x, 31);
    /* $29 and $30 are scalars; arrays added later follow them: the attempts'
       reached ($31), the steps' outage attempts ($32, $33) */
    const char *reached = x->p[28], *od = x->p[29], *uod = x->p[30];
    x->p[30] = reached;
    x->p[31] = od;
    x->p[32] = uod;
    snprintf(x->lease, sizeof(x->lease), "%u", f->lease_ms);
    x->p[28] = x->lease;
    x->p[29] = f->worker;
}

/* The flush statement returns the jobs that passed the fence; the rest are stale. */
static void flush_result(PGresult *r, struct tq_flush_result *res, size_t nres)
{
    for (int i = 0; i < PQntuples(r); i++) {
        struct tq_flush_result *x = find(res, nres, strtoll(PQgetvalue(r, i, 0), NULL, 10));
        if (x) {
            x->stale = false;
            x->cancel_requested = PQgetvalue(r, i, 1)[0] == 't';
        }
    }
}

/* A later round decides again for its jobs: absent from RETURNING means stale. */
static void jobs_result(PGresult *r, const struct tq_flush *f, const int *round, int k,
                        struct tq_flush_result *res, size_t nres)
{
    for (size_t i = 0; i < f->njobs; i++) {
        if (round[i] != k)
            continue;
        struct tq_flush_result *x = find(res, nres, f->jobs[i].job_id);
        if (!x)
            continue;
        bool ok = false;
        for (int row = 0; row < PQntuples(r) && !ok; row++)
            ok = strtoll(PQgetvalue(r, row, 0), NULL, 10) == f->jobs[i].job_id;
        if (!ok)
            x->stale = true;
    }
}

enum tq_err tq_store_flush(struct tq_pg *pg, const struct tq_flush *f,
                           struct tq_flush_result **res, size_t *nres)
{
    size_t cap = 0;
    *res = NULL;
    *nres = 0;
    size_t *idx = tq_xcalloc(f->nsteps + f->nattempts + f->njobs + 1, sizeof(size_t));
    size_t *sidx = idx, *aidx = idx + f->nsteps, *jidx = aidx + f->nattempts;
    for (size_t i = 0; i < f->nsteps; i++)
        sidx[i] = result_for(res, nres, &cap, f->steps[i].job_id);
    for (size_t i = 0; i < f->nattempts; i++)
        aidx[i] = result_for(res, nres, &cap, f->attempts[i].job_id);
    for (size_t i = 0; i < f->njobs; i++)
        jidx[i] = result_for(res, nres, &cap, f->jobs[i].job_id);
    if (*nres == 0) {
        free(idx);
        return TQ_OK;
    }

    /* Round k holds each job's k-th job row; round 0 also every fence. */
    struct fence *fc = tq_xcalloc(*nres, sizeof(*fc));
    int *seen = tq_xcalloc(*nres, sizeof(int));
    int *round = tq_xcalloc(f->njobs + 1, sizeof(int));
    int rounds = 1;
    for (size_t i = 0; i < f->njobs; i++) {
        round[i] = seen[jidx[i]]++;
        if (round[i] == 0) {
            fc[jidx[i]].row = &f->jobs[i];
            fc[jidx[i]].epoch = f->jobs[i].epoch;
        }
        if (round[i] + 1 > rounds)
            rounds = round[i] + 1;
    }
    for (size_t i = 0; i < f->nsteps; i++) {
        struct fence *x = &fc[sidx[i]];
        x->progress = x->progress || f->steps[i].progress;
        if (f->steps[i].epoch > x->epoch)
            x->epoch = f->steps[i].epoch;
    }
    for (size_t i = 0; i < f->nattempts; i++)
        if (f->attempts[i].epoch > fc[aidx[i]].epoch)
            fc[aidx[i]].epoch = f->attempts[i].epoch;
    free(seen);
    free(idx);
    size_t n = (size_t)rounds;
    struct params *x = tq_xcalloc(n, sizeof(*x));
    struct tq__stmt *st = tq_xcalloc(n, sizeof(*st));
    for (int r = 0; r < rounds; r++) {
        flush_params(&x[r], f, round, r, *res, fc, *nres);
        st[r] = (struct tq__stmt){r == 0 ? "record job transitions" : "record job outcomes",
                                  sql_flush, 33, x[r].p, NULL};
    }
    /* One round trip, one transaction: on error nothing was written. */
    enum tq_err err = tq__pg_pipeline(pg, st, n);
    if (!err) {
        flush_result(st[0].res, *res, *nres);
        for (int r = 1; r < rounds; r++)
            jobs_result(st[r].res, f, round, r, *res, *nres);
    }
    for (size_t i = 0; i < n; i++) {
        PQclear(st[i].res);
        arr_free(x[i].a, (size_t)x[i].narr);
    }
    free(st);
    free(x);
    free(round);
    free(fc);
    if (err) {
        free(*res);
        *res = NULL;
        *nres = 0;
    }
    return err;
}

enum tq_err tq_store_dead(struct tq_pg *pg, int64_t job_id, int64_t epoch, const char *reason)
{
    char id[24], ep[24];
    snprintf(id, sizeof(id), "%" PRId64, job_id);
    snprintf(ep, sizeof(ep), "%" PRId64, epoch);
    const char *p[] = {id, ep, reason};
    enum tq_err err;
    PGresult *r = tq__pg_query(
        pg, &err, "dead-letter a job",
        "WITH d AS (UPDATE tq.jobs SET status = 'dead', dead_reason = $3, lease_owner = NULL,"
        "   lease_until = NULL, updated_at = now(), finished_at = now()"
        "   WHERE id = $1::bigint AND lease_epoch = $2::bigint RETURNING id, tenant_id),"
        " t AS (UPDATE tq.tenants tn SET failure_reason = 'dead-lettered: ' || $3,"
        "   updated_at = now() FROM d WHERE tn.tenant_id = d.tenant_id RETURNING 1)"
        " INSERT INTO tq.audit_events (tenant_id, job_id, actor, event, detail)"
        " SELECT d.tenant_id, d.id, 'worker', 'dead_lettered', jsonb_build_object('reason', $3::text)"
        " FROM d",
        3, p);
    PQclear(r);
    return err;
}
