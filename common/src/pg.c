/*
 * The PostgreSQL store over blocking libpq connections (one per thread).
 * Statement text lives next to the function that runs it; the schema is in
 * migrate.c. Fencing (lease epochs) is explained in common/README.md.
 */
#include "pg_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq/config.h"
#include "tq/util.h"

#define PREPARED_MAX 16

struct tq_pg {
    PGconn *conn;
    char *conninfo;
    char errstr[512];
    /* Statements of tq__pg_pipeline prepared on this connection, by text. */
    struct {
        const char *sql;   /* static statement text: compared by address */
        unsigned id;       /* server-side name tq_<id> */
    } prepared[PREPARED_MAX];
    size_t nprepared;
    unsigned next_id;
};

/* A new or reset connection has no prepared statements. */
static void forget_prepared(struct tq_pg *pg)
{
    pg->nprepared = 0;
}

static void quiet_notices(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

static enum tq_err vset_err(struct tq_pg *pg, enum tq_err err, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static enum tq_err vset_err(struct tq_pg *pg, enum tq_err err, const char *fmt, va_list ap)
{
    vsnprintf(pg->errstr, sizeof(pg->errstr), fmt, ap);
    /* libpq messages end in a newline; our messages do not */
    size_t n = strlen(pg->errstr);
    while (n && (pg->errstr[n - 1] == '\n' || pg->errstr[n - 1] == ' '))
        pg->errstr[--n] = '\0';
    return err;
}

enum tq_err tq__pg_set_err(struct tq_pg *pg, enum tq_err err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset_err(pg, err, fmt, ap);
    va_end(ap);
    return err;
}

#define set_err tq__pg_set_err

static enum tq_err connect_now(struct tq_pg *pg)
{
    if (pg->conn && PQstatus(pg->conn) == CONNECTION_OK)
        return TQ_OK;
    forget_prepared(pg);
    if (pg->conn) {
        PQreset(pg->conn);
        if (PQstatus(pg->conn) == CONNECTION_OK)
            return TQ_OK;
        PQfinish(pg->conn);
    }
    pg->conn = PQconnectdb(pg->conninfo);
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        /* PQerrorMessage never holds the password of the conninfo */
        enum tq_err e = set_err(pg, TQ_ECONNECT, "could not connect to postgresql: %s",
                                PQerrorMessage(pg->conn));
        PQfinish(pg->conn);
        pg->conn = NULL;
        return e;
    }
    PQsetNoticeProcessor(pg->conn, quiet_notices, NULL);
    return TQ_OK;
}

enum tq_err tq_pg_open(const char *conninfo, struct tq_pg **out)
{
    struct tq_pg *pg = tq_xcalloc(1, sizeof(*pg));
    pg->conninfo = tq_xstrdup(conninfo);
    *out = pg;
    return connect_now(pg);
}

void tq_pg_close(struct tq_pg *pg)
{
    if (!pg)
        return;
    if (pg->conn)
        PQfinish(pg->conn);
    free(pg->conninfo);
    free(pg);
}

const char *tq_pg_errstr(const struct tq_pg *pg)
{
    return pg->errstr;
}

PGconn *tq_pg_conn(struct tq_pg *pg)
{
    return connect_now(pg) == TQ_OK ? pg->conn : NULL;
}

enum tq_err tq__pg_fail(struct tq_pg *pg, const char *what, PGresult *res)
{
    if (!res && !pg->conn)
        return set_err(pg, TQ_ECONNECT, "could not %s: not connected", what);
    if (!res)
        return set_err(pg, TQ_EPG, "%s", what);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (!msg)
        msg = PQerrorMessage(pg->conn);
    enum tq_err err = tq_pg_classify(pg->conn, res);
    return set_err(pg, err, "could not %s: %s%s%s%s", what, msg, state ? " (SQLSTATE " : "",
                   state ? state : "", state ? ")" : "");
}

enum tq_err tq_pg_connect_classify(const PGconn *db)
{
    const char *m = db ? PQerrorMessage(db) : "";
    /* no FATAL: the server never answered (refused, unreachable, timed out) */
    if (!strstr(m, "FATAL:"))
        return TQ_ECONNECT;
    /* the server answered, but is going away or coming back: an outage too */
    static const char *const away[] = {"starting up", "shutting down", "in recovery",
                                       "connection slots", "too many connections",
                                       "terminating connection", NULL};
    for (size_t i = 0; away[i]; i++)
        if (strstr(m, away[i]))
            return TQ_ECONNECT;
    return TQ_EPG;   /* it refused us (role, password, database): a verdict, not an outage */
}

enum tq_err tq_pg_classify(const PGconn *db, const PGresult *res)
{
    if (!db || PQstatus(db) != CONNECTION_OK)
        return TQ_ECONNECT;
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!st)
        return TQ_EPG;   /* no server verdict (e.g. out of memory in libpq): worth another try */
    /* connection exception; admin or crash shutdown, cannot connect now */
    if (strncmp(st, "08", 2) == 0 || strncmp(st, "57P", 3) == 0)
        return TQ_ECONNECT;
    /* serialization failure, deadlock, lock not available, statement cancelled,
       insufficient resources, system errors: the same statement may succeed later */
    if (strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0 || strcmp(st, "55P03") == 0 ||
        strcmp(st, "57014") == 0 || strncmp(st, "53", 2) == 0 || strncmp(st, "58", 2) == 0 ||
        strncmp(st, "XX", 2) == 0)
        return TQ_EPG;
    /* syntax, permission, constraint, data and everything else: it will be refused again */
    return TQ_ESQL;
}

PGresult *tq__pg_query(struct tq_pg *pg, enum tq_err *err, const char *what,
                       const char *sql, int nparams, const char *const *params)
{
    *err = connect_now(pg);
    if (*err)
        return NULL;
    /* PQexec for parameterless text: it may hold several statements (migrations) */
    PGresult *r = nparams ? PQexecParams(pg->conn, sql, nparams, NULL, params, NULL, NULL, 0)
                          : PQexec(pg->conn, sql);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return r;
    *err = tq__pg_fail(pg, what, r);
    PQclear(r);
    return NULL;
}

enum tq_err tq_pg_exec(struct tq_pg *pg, const char *sql)
{
    enum tq_err err;
    PQclear(tq__pg_query(pg, &err, "run a statement", sql, 0, NULL));
    return err;
}

/*
 * Pipeline mode: every statement, then one Sync, in one write; the server
 * runs them as one implicit transaction and answers in one read. Statement
 * texts are static, so they are prepared once per connection (named by a
 * counter, never reused: a name whose Parse may or may not have happened
 * is simply not used again). Results are small (ids, a few columns), so
 * sending everything before reading cannot fill the server's output buffer.
 */
static int prepared_slot(struct tq_pg *pg, const char *sql)
{
    for (size_t i = 0; i < pg->nprepared; i++)
        if (pg->prepared[i].sql == sql)
            return (int)i;
    return -1;
}

static void drop_conn(struct tq_pg *pg)
{
    PQfinish(pg->conn);
    pg->conn = NULL;
    forget_prepared(pg);
}

/*
 * Send every statement (a Parse first for those not yet prepared on this
 * connection: fresh[i]) and the Sync. False when the connection broke;
 * *sent then counts the statements written.
 */
static bool pipeline_send(struct tq_pg *pg, struct tq__stmt *st, size_t n, unsigned *id,
                          bool *fresh, size_t *sent)
{
    PGconn *c = pg->conn;
    bool ok = true;
    for (*sent = 0; *sent < n && ok; (*sent)++) {
        size_t i = *sent;
        char name[24];
        int slot = prepared_slot(pg, st[i].sql);
        if (slot >= 0) {
            id[i] = pg->prepared[slot].id;
        } else {
            size_t k = 0;
            while (k < i && st[k].sql != st[i].sql)
                k++;
            if (k < i) {
                id[i] = id[k];   /* parsed earlier in this pipeline */
            } else {
                id[i] = ++pg->next_id;
                fresh[i] = true;
            }
        }
        snprintf(name, sizeof(name), "tq_%u", id[i]);
        if (fresh[i])
            ok = PQsendPrepare(c, name, st[i].sql, st[i].nparams, NULL);
        if (ok)
            ok = PQsendQueryPrepared(c, name, st[i].nparams, st[i].params, NULL, NULL, 0);
    }
    return ok && PQpipelineSync(c);
}

/* Read back in order: [Parse], Execute per statement. The first error is kept. */
static enum tq_err pipeline_read(struct tq_pg *pg, struct tq__stmt *st, size_t n,
                                 const unsigned *id, const bool *fresh)
{
    PGconn *c = pg->conn;
    enum tq_err err = TQ_OK;
    for (size_t i = 0; i < n && !err; i++) {
        for (int part = fresh[i] ? 0 : 1; part < 2 && !err; part++) {
            PGresult *r = PQgetResult(c);
            if (!r) {
                err = tq__pg_fail(pg, st[i].what, NULL);
                break;
            }
            ExecStatusType s = PQresultStatus(r);
            if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK) {
                if (part == 1)
                    st[i].res = r;
                else
                    PQclear(r);
                if (part == 0 && pg->nprepared < PREPARED_MAX && prepared_slot(pg, st[i].sql) < 0) {
                    pg->prepared[pg->nprepared].sql = st[i].sql;
                    pg->prepared[pg->nprepared].id = id[i];
                    pg->nprepared++;
                }
            } else if (s == PGRES_PIPELINE_ABORTED) {
                PQclear(r);   /* an earlier statement failed; its error is kept */
                if (!err)
                    err = TQ_EPG;
            } else {
                err = tq__pg_fail(pg, st[i].what, r);
                PQclear(r);
            }
            PGresult *end = PQgetResult(c);   /* NULL ends each command's results */
            if (end) {
                PQclear(end);
                if (!err)
                    err = set_err(pg, TQ_EPG, "could not %s: unexpected extra result",
                                  st[i].what);
            }
        }
    }
    return err;
}

/*
 * After an error the rest answers ABORTED, each with its NULL, until the
 * Sync. Two NULLs in a row: nothing more is coming (a broken stream).
 * False when the connection is lost.
 */
static bool pipeline_finish(PGconn *c)
{
    for (int nulls = 0;;) {
        PGresult *r = PQgetResult(c);
        if (!r) {
            if (++nulls == 2 || PQstatus(c) != CONNECTION_OK)
                return false;
            continue;
        }
        nulls = 0;
        ExecStatusType s = PQresultStatus(r);
        PQclear(r);
        if (s == PGRES_PIPELINE_SYNC)
            break;
    }
    return PQstatus(c) == CONNECTION_OK && PQexitPipelineMode(c);
}

enum tq_err tq__pg_pipeline(struct tq_pg *pg, struct tq__stmt *st, size_t n)
{
    for (size_t i = 0; i < n; i++)
        st[i].res = NULL;
    enum tq_err err = connect_now(pg);
    if (err)
        return err;
    PGconn *c = pg->conn;
    if (!PQenterPipelineMode(c))
        return set_err(pg, TQ_EPG, "could not enter pipeline mode: %s", PQerrorMessage(c));
    /* per statement: the name it runs under; fresh ones are parsed here first */
    unsigned *id = tq_xcalloc(n + 1, sizeof(unsigned));
    bool *fresh = tq_xcalloc(n + 1, sizeof(bool));
    size_t sent = 0;
    if (!pipeline_send(pg, st, n, id, fresh, &sent)) {
        err = set_err(pg, TQ_ECONNECT, "could not %s: %s", st[sent ? sent - 1 : 0].what,
                      PQerrorMessage(c));
        drop_conn(pg);
    } else {
        err = pipeline_read(pg, st, n, id, fresh);
        if (!pipeline_finish(c)) {
            if (!err)
                err = set_err(pg, TQ_ECONNECT, "could not %s: connection lost", st[0].what);
            drop_conn(pg);
        }
    }
    if (err)
        for (size_t i = 0; i < n; i++) {
            PQclear(st[i].res);
            st[i].res = NULL;
        }
    free(id);
    free(fresh);
    return err;
}

static enum tq_err simple(struct tq_pg *pg, const char *what, const char *sql,
                          int n, const char *const *params)
{
    enum tq_err err;
    PQclear(tq__pg_query(pg, &err, what, sql, n, params));
    return err;
}

static char *text_array(const char *const *ids, size_t n);

void tq__pg_rollback(struct tq_pg *pg)
{
    if (pg->conn && PQtransactionStatus(pg->conn) != PQTRANS_IDLE)
        PQclear(PQexec(pg->conn, "ROLLBACK"));
}
#define rollback tq__pg_rollback

/* ------------------------------------------------------------------ submit */

/*
 * A submit is set-based: the requests go into a session-local temporary
 * table by one COPY, and each table gets one INSERT ... SELECT (tenants, jobs
 * with their audit events, batch members). What already exists is read by
 * one query first, so that a rerun answers with the existing rows and a
 * conflicting request is named before anything is written. Every statement
 * runs in the one transaction: all or nothing.
 */
static const char sql_submit_begin[] =
    "BEGIN;"
    "CREATE TEMP TABLE IF NOT EXISTS tq_submit_in ("
    "  ord integer NOT NULL, tenant_id text NOT NULL, name text NOT NULL,"
    "  tier text NOT NULL, region text NOT NULL, budget bigint NOT NULL,"
    "  owner text NOT NULL, justification text NOT NULL, key text NOT NULL,"
    "  status text NOT NULL, queue text, nb bigint NOT NULL,"
    "  existed boolean NOT NULL DEFAULT false) ON COMMIT DELETE ROWS";

static const char sql_submit_copy[] =
    "COPY tq_submit_in (ord, tenant_id, name, tier, region, budget, owner, justification,"
    " key, status, queue, nb) FROM STDIN";

/* What exists already: the job of each key, the tenant of each id or name. */
static const char sql_submit_existing[] =
    "SELECT i.ord, 'key', j.tenant_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, j.id::text"
    "  FROM tq_submit_in i JOIN tq.jobs j ON j.idempotency_key = i.key"
    " UNION ALL "
    "SELECT i.ord, 'id', t.tenant_id, t.name, t.tier, t.region, t.budget::text, t.owner,"
    "  t.justification, t.status, NULL"
    "  FROM tq_submit_in i JOIN tq.tenants t ON t.tenant_id = i.tenant_id"
    " UNION ALL "
    "SELECT i.ord, 'name', t.tenant_id, t.name, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
    "  FROM tq_submit_in i JOIN tq.tenants t ON lower(t.name) = lower(i.name)"
    "  WHERE t.tenant_id <> i.tenant_id";

static const char sql_submit_mark[] =
    "UPDATE tq_submit_in SET existed = true WHERE ord = ANY($1::integer[])";

static const char sql_submit_tenants[] =
    "INSERT INTO tq.tenants (tenant_id, name, tier, region, budget, owner,"
    "  justification, status, approver, approved_at, batch_id, queue)"
    " SELECT tenant_id, name, tier, region, budget, owner, justification, status,"
    "  CASE WHEN status = 'queued' THEN 'auto' END,"
    "  CASE WHEN status = 'queued' THEN now() END, $1, queue"
    " FROM tq_submit_in WHERE NOT existed ORDER BY ord"
    " ON CONFLICT DO NOTHING";

/* Jobs, then per job its audit events in request order: submitted, approved
   (within the threshold) or pending_approval (above it: the role the tier's
   policy names, for the approvers' notification), scheduled (a start time
   given). */
static const char sql_submit_jobs[] =
    "WITH ins AS ("
    "  INSERT INTO tq.jobs (tenant_id, kind, pipeline_hash, idempotency_key, batch_id,"
    "    status, not_before)"
    "  SELECT tenant_id, 'provision', $1, key, $2,"
    "    CASE WHEN status = 'queued' THEN 'queued' ELSE 'held' END,"
    "    CASE WHEN nb > 0 THEN to_timestamp(nb / 1000.0) END"
    "  FROM tq_submit_in WHERE NOT existed ORDER BY ord"
    "  RETURNING id, tenant_id),"
    " j AS (SELECT i.*, ins.id AS job_id FROM ins JOIN tq_submit_in i USING (tenant_id)),"
    " a AS ("
    "  INSERT INTO tq.audit_events (tenant_id, job_id, actor, event, detail)"
    "  SELECT j.tenant_id, j.job_id, e.actor, e.event, e.detail"
    "  FROM j CROSS JOIN LATERAL (VALUES"
    "    (1, $3::text, 'submitted', jsonb_strip_nulls(jsonb_build_object('tier', j.tier,"
    "      'region', j.region, 'owner', j.owner, 'budget', j.budget, 'batch', $2::text))),"
    "    (2, 'auto', 'approved',"
    "      '{\"reason\":\"budget within auto-approval threshold\"}'::jsonb),"
    "    (2, $3::text, 'pending_approval', jsonb_strip_nulls(jsonb_build_object("
    "      'tier', j.tier, 'budget', j.budget, 'role',"
    "      (SELECT p.role FROM tq.approval_policy p WHERE p.tier = j.tier)))),"
    "    (3, $3::text, 'scheduled', jsonb_build_object('not_before_ms', j.nb))"
    "  ) e(seq, actor, event, detail)"
    "  WHERE e.seq = 1 OR (e.seq = 2 AND e.event = 'approved' AND j.status = 'queued')"
    "    OR (e.seq = 2 AND e.event = 'pending_approval' AND j.status = 'pending_approval')"
    "    OR (e.seq = 3 AND j.nb > 0)"
    "  ORDER BY j.ord, e.seq)"
    " SELECT ord, job_id FROM j";

static const char sql_submit_members[] =
    "INSERT INTO tq.batch_tenants (batch_id, tenant_id)"
    " SELECT $1, tenant_id FROM tq_submit_in ORDER BY ord ON CONFLICT DO NOTHING";

/* One COPY text field: backslash, tab, newline and CR escaped; NULL as \N. */
static void copy_field(struct tq_buf *b, const char *v, bool last)
{
    if (!v) {
        tq_buf_append(b, "\\N", 2);
    } else {
        const char *run = v;
        for (const char *p = v; *p; p++) {
            const char *esc = *p == '\\' ? "\\\\" : *p == '\t' ? "\\t" : *p == '\n' ? "\\n"
                              : *p == '\r' ? "\\r" : NULL;
            if (!esc)
                continue;
            tq_buf_append(b, run, (size_t)(p - run));
            tq_buf_append(b, esc, 2);
            run = p + 1;
        }
        tq_buf_puts(b, run);
    }
    tq_buf_append(b, last ? "\n" : "\t", 1);
}

static enum tq_err copy_requests(struct tq_pg *pg, struct tq_submit_item *items, size_t n,
                                 const struct tq_rules *rules)
{
    PGconn *c = pg->conn;
    PGresult *r = PQexec(c, sql_submit_copy);
    if (!r || PQresultStatus(r) != PGRES_COPY_IN) {
        enum tq_err err = tq__pg_fail(pg, "copy the requests", r);
        PQclear(r);
        return err;
    }
    PQclear(r);
    struct tq_buf b;
    tq_buf_init(&b);
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        const struct tq_request *q = items[i].req;
        char ord[24], budget[24], nb[24];
        snprintf(ord, sizeof(ord), "%zu", i);
        snprintf(budget, sizeof(budget), "%" PRId64, q->budget_inr);
        snprintf(nb, sizeof(nb), "%" PRId64, items[i].not_before_ms);
        const char *f[] = {ord, q->tenant_id, q->name, q->tier, q->region, budget, q->owner,
                           q->justification ? q->justification : "",
                           items[i].idempotency_key ? items[i].idempotency_key : q->tenant_id,
                           tq_request_needs_approval(q, rules) ? "pending_approval" : "queued",
                           items[i].queue, nb};
        size_t nf = sizeof(f) / sizeof(f[0]);
        for (size_t k = 0; k < nf; k++)
            copy_field(&b, f[k], k + 1 == nf);
        if (b.len >= 256 * 1024 || i + 1 == n) {
            ok = PQputCopyData(c, b.data, (int)b.len) == 1;
            b.len = 0;
        }
    }
    tq_buf_cleanup(&b);
    if (PQputCopyEnd(c, ok ? NULL : "client gave up") != 1)
        ok = false;
    enum tq_err err = TQ_OK;
    while ((r = PQgetResult(c))) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK && !err)
            err = tq__pg_fail(pg, "copy the requests", r);
        PQclear(r);
    }
    if (!ok && !err)
        err = set_err(pg, TQ_ECONNECT, "could not copy the requests: %s", PQerrorMessage(c));
    return err;
}

/* Same request again? Compare what the caller sent with what is stored. */
static bool same_request(PGresult *r, int row, const struct tq_request *q)
{
    char budget[32];
    snprintf(budget, sizeof(budget), "%" PRId64, q->budget_inr);
    return strcmp(PQgetvalue(r, row, 2), q->tenant_id) == 0 &&
           strcmp(PQgetvalue(r, row, 3), q->name) == 0 &&
           strcmp(PQgetvalue(r, row, 4), q->tier) == 0 &&
           strcmp(PQgetvalue(r, row, 5), q->region) == 0 &&
           strcmp(PQgetvalue(r, row, 6), budget) == 0 &&
           strcmp(PQgetvalue(r, row, 7), q->owner) == 0 &&
           strcmp(PQgetvalue(r, row, 8), q->justification ? q->justification : "") == 0;
}

/* Per request of a submit: its rows in the answer about what exists, or -1. */
struct existing {
    int key_row, id_row, name_row;
};

/* BEGIN, store the pipeline and the batch, COPY the requests, read what exists. */
static PGresult *submit_prepare(struct tq_pg *pg, struct tq_submit_item *items, size_t n,
                                const char *batch, const struct tq_pipeline *pl,
                                const struct tq_rules *rules, const char *actor,
                                enum tq_err *err)
{
    PQclear(tq__pg_query(pg, err, "begin the submit transaction", sql_submit_begin, 0, NULL));
    if (!*err) {
        const char *pp[] = {pl->hash, pl->name, pl->text};
        *err = simple(pg, "store the pipeline",
                      "INSERT INTO tq.pipelines (hash, name, body) VALUES ($1, $2, $3)"
                      " ON CONFLICT (hash) DO NOTHING",
                      3, pp);
    }
    if (!*err && batch) {
        const char *pb[] = {batch, actor};
        *err = simple(pg, "create the batch",
                      "INSERT INTO tq.batches (id, created_by) VALUES ($1, $2)"
                      " ON CONFLICT (id) DO NOTHING",
                      2, pb);
    }
    if (!*err)
        *err = copy_requests(pg, items, n, rules);
    if (*err)
        return NULL;
    return tq__pg_query(pg, err, "read the existing requests", sql_submit_existing, 0, NULL);
}

/*
 * Match each request with what exists; the first in order that conflicts is
 * named (TQ_ECONFLICT, nothing is written). Requests already there are
 * answered from their rows and listed in marks; *nnew counts the new ones.
 */
static enum tq_err submit_match(struct tq_pg *pg, struct tq_submit_item *items, size_t n,
                                PGresult *r, struct existing *ex, struct tq_buf *marks,
                                size_t *nnew)
{
    for (int row = 0; row < PQntuples(r); row++) {
        long ord = strtol(PQgetvalue(r, row, 0), NULL, 10);
        if (ord < 0 || (size_t)ord >= n)
            continue;
        const char *kind = PQgetvalue(r, row, 1);
        int *slot = strcmp(kind, "key") == 0  ? &ex[ord].key_row
                    : strcmp(kind, "id") == 0 ? &ex[ord].id_row
                                              : &ex[ord].name_row;
        *slot = row;
    }
    for (size_t i = 0; i < n; i++) {
        struct tq_submit_item *it = &items[i];
        const struct tq_request *q = it->req;
        const struct existing *e = &ex[i];
        const char *key = it->idempotency_key ? it->idempotency_key : q->tenant_id;
        char why[512] = "";
        if (e->key_row >= 0 && strcmp(PQgetvalue(r, e->key_row, 2), q->tenant_id) != 0) {
            snprintf(why, sizeof(why), "idempotency_key: \"%s\" was used for tenant \"%s\"", key,
                     PQgetvalue(r, e->key_row, 2));
            it->conflict = "idempotency_key";
        } else if (e->id_row < 0 && e->name_row >= 0) {
            snprintf(why, sizeof(why), "name: \"%s\" is already taken by tenant \"%s\"", q->name,
                     PQgetvalue(r, e->name_row, 2));
            it->conflict = "name";
        } else if (e->id_row >= 0 && !same_request(r, e->id_row, q)) {
            snprintf(why, sizeof(why),
                     "tenant_id: \"%s\" already exists with different details "
                     "(a tenant is requested once; change it through the portal)",
                     q->tenant_id);
            it->conflict = "tenant_id";
        } else if (e->id_row >= 0 && e->key_row < 0) {
            snprintf(why, sizeof(why), "tenant_id: \"%s\" exists under another idempotency key",
                     q->tenant_id);
            it->conflict = "tenant_id";
        } else if (e->id_row >= 0) {
            snprintf(it->status, sizeof(it->status), "%s", PQgetvalue(r, e->id_row, 9));
            it->job_id = strtoll(PQgetvalue(r, e->key_row, 10), NULL, 10);
            it->existed = true;
            it->queued = false;   /* already dispatched once; the reconciler owns it */
            tq_buf_printf(marks, "%s%zu", marks->len ? "," : "{", i);
            continue;
        } else {
            (*nnew)++;
            continue;
        }
        if (n > 1)
            return set_err(pg, TQ_ECONFLICT, "request %zu (tenant \"%s\"): %s", i + 1,
                           q->tenant_id, why);
        return set_err(pg, TQ_ECONFLICT, "%s", why);
    }
    return TQ_OK;
}

/* INSERT the new tenants, then their jobs and audit events; answer each new item. */
static enum tq_err submit_insert(struct tq_pg *pg, struct tq_submit_item *items, size_t n,
                                 size_t nnew, const char *batch, const struct tq_pipeline *pl,
                                 const struct tq_rules *rules, const char *actor)
{
    enum tq_err err;
    const char *pt[] = {batch};
    PGresult *r = tq__pg_query(pg, &err, "insert the tenants", sql_submit_tenants, 1, pt);
    if (r && strtoull(PQcmdTuples(r), NULL, 10) != nnew) {
        /* another submit took an id or a name since we looked */
        for (size_t i = 0; i < n; i++)
            if (!items[i].existed) {
                items[i].conflict = "tenant_id";
                break;
            }
        err = set_err(pg, TQ_ECONFLICT,
                      "tenant_id: a request of this submit conflicts with a concurrent "
                      "request (a tenant id or name was taken meanwhile); submit again "
                      "to see which");
    }
    PQclear(r);
    if (err)
        return err;
    const char *pj[] = {pl->hash, batch, actor};
    r = tq__pg_query(pg, &err, "insert the jobs and their audit events", sql_submit_jobs, 3, pj);
    for (int row = 0; r && row < PQntuples(r); row++) {
        long ord = strtol(PQgetvalue(r, row, 0), NULL, 10);
        if (ord < 0 || (size_t)ord >= n)
            continue;
        struct tq_submit_item *it = &items[ord];
        bool approve = tq_request_needs_approval(it->req, rules);
        it->job_id = strtoll(PQgetvalue(r, row, 1), NULL, 10);
        it->queued = !approve;
        snprintf(it->status, sizeof(it->status), "%s", approve ? "pending_approval" : "queued");
    }
    if (r && (size_t)PQntuples(r) != nnew)
        err = set_err(pg, TQ_EPG, "could not insert the jobs: %d of %zu written", PQntuples(r),
                      nnew);
    PQclear(r);
    return err;
}

/* rules with each tier's own approval threshold from the approval policy. */
static enum tq_err with_tier_thresholds(struct tq_pg *pg, const struct tq_rules *in,
                                        struct tq_rules *out)
{
    *out = *in;
    enum tq_err err;
    PGresult *r = tq__pg_query(pg, &err, "read the approval policy",
                               "SELECT tier, threshold_inr FROM tq.approval_policy"
                               " WHERE threshold_inr IS NOT NULL", 0, NULL);
    if (!r)
        return err;
    for (int i = 0; i < PQntuples(r); i++) {
        int t = tq_tier_index(PQgetvalue(r, i, 0));
        if (t < 0)
            continue;
        out->tier_threshold_inr[t] = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        out->tier_threshold_set |= 1u << t;
    }
    PQclear(r);
    return TQ_OK;
}

enum tq_err tq_pg_submit(struct tq_pg *pg, struct tq_submit_item *items, size_t n,
                         const char *batch, const struct tq_pipeline *pl,
                         const struct tq_rules *given, const char *actor)
{
    struct tq_rules tiered;
    enum tq_err terr = with_tier_thresholds(pg, given, &tiered);
    if (terr)
        return terr;
    const struct tq_rules *rules = &tiered;
    struct existing *ex = tq_xmalloc((n + 1) * sizeof(*ex));
    struct tq_buf marks;
    tq_buf_init(&marks);
    size_t nnew = 0;
    pg->errstr[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        ex[i].key_row = ex[i].id_row = ex[i].name_row = -1;
        items[i].conflict = NULL;
        items[i].existed = items[i].queued = false;
    }
    enum tq_err err;
    /* On failure pg->errstr says what failed (a read-only database, say). */
    PGresult *r = submit_prepare(pg, items, n, batch, pl, rules, actor, &err);
    if (r)
        err = submit_match(pg, items, n, r, ex, &marks, &nnew);
    PQclear(r);
    if (!err && marks.len) {
        tq_buf_puts(&marks, "}");
        const char *pm[] = {marks.data};
        err = simple(pg, "mark the existing requests", sql_submit_mark, 1, pm);
    }
    if (!err && nnew > 0)
        err = submit_insert(pg, items, n, nnew, batch, pl, rules, actor);
    /* A batch names every tenant it asked for, those that existed too:
       `status --batch` of a rerun shows them instead of "no such batch". */
    if (!err && batch) {
        const char *pb[] = {batch};
        err = simple(pg, "record the batch's tenants", sql_submit_members, 1, pb);
    }
    if (!err)
        err = simple(pg, "commit the submit transaction", "COMMIT", 0, NULL);
    if (err)
        rollback(pg);
    tq_buf_cleanup(&marks);
    free(ex);
    return err;
}

/* ------------------------------------------------------------------ worker */

enum tq_err tq_pg_pipeline_get(struct tq_pg *pg, const char *hash, char **text)
{
    *text = NULL;
    const char *p[] = {hash};
    enum tq_err err;
    PGresult *r = tq__pg_query(pg, &err, "read the pipeline",
                               "SELECT body FROM tq.pipelines WHERE hash = $1", 1, p);
    if (!r)
        return err;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return set_err(pg, TQ_ENOTFOUND, "pipeline %.12s is not stored", hash);
    }
    *text = tq_xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return TQ_OK;
}

/* "{1,2,3}" for a bigint[] parameter; caller frees. */
static char *id_array(const int64_t *ids, size_t n)
{
    struct tq_buf b;
    tq_buf_init(&b);
    tq_buf_puts(&b, "{");
    for (size_t i = 0; i < n; i++)
        tq_buf_printf(&b, "%s%" PRId64, i ? "," : "", ids[i]);
    tq_buf_puts(&b, "}");
    return tq_buf_take(&b, NULL);
}

enum tq_err tq_pg_extend_leases_ids(struct tq_pg *pg, const char *worker, const int64_t *ids,
                                    size_t n, uint32_t lease_ms, int64_t **out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (n == 0)
        return TQ_OK;
    char lease[16];
    snprintf(lease, sizeof(lease), "%u", lease_ms);
    char *arr = id_array(ids, n);
    const char *p[] = {worker, lease, arr};
    enum tq_err err;
    PGresult *r = tq__pg_query(pg, &err, "extend leases",
                               "UPDATE tq.jobs SET lease_until = now() +"
                               " make_interval(secs => $2::int / 1000.0)"
                               " WHERE id = ANY($3::bigint[]) AND lease_owner = $1"
                               "   AND status = 'running' AND lease_until > now()"
                               " RETURNING id",
                               3, p);
    free(arr);
    if (!r)
        return err;
    size_t m = (size_t)PQntuples(r);
    if (m > 0) {
        *out = tq_xcalloc(m, sizeof(int64_t));
        for (size_t i = 0; i < m; i++)
            (*out)[i] = strtoll(PQgetvalue(r, (int)i, 0), NULL, 10);
    }
    *nout = m;
    PQclear(r);
    return TQ_OK;
}

/* A tenant's queue; tenants submitted before tenants.queue existed: the default. */
#define TENANT_QUEUE(t) "coalesce(" t ".queue, '" TQ_DEFAULT_QUEUE "')"

static const char sql_orphans[] =
    "UPDATE tq.jobs SET updated_at = now() WHERE id IN ("
    "  SELECT j.id FROM tq.jobs j JOIN tq.tenants t ON t.tenant_id = j.tenant_id"
    "  WHERE j.status IN ('queued', 'running')"
    "    AND (j.lease_until IS NULL OR j.lease_until < now())"
    "    AND (j.not_before IS NULL OR j.not_before <= now())"
    "    AND j.updated_at < now() - make_interval(secs => $1::int / 1000.0)"
    "    AND " TENANT_QUEUE("t") " = $3"
    "  ORDER BY j.id LIMIT $2::int FOR UPDATE OF j SKIP LOCKED)"
    " RETURNING id";

enum tq_err tq_pg_orphans(struct tq_pg *pg, const char *queue, uint32_t older_than_ms,
                          int limit, int64_t **ids, size_t *n)
{
    char age[16], lim[16];
    snprintf(age, sizeof(age), "%u", older_than_ms);
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *p[] = {age, lim, queue};
    enum tq_err err;
    *ids = NULL;
    *n = 0;
    PGresult *r = tq__pg_query(pg, &err, "find runnable jobs", sql_orphans, 3, p);
    if (!r)
        return err;
    *n = (size_t)PQntuples(r);
    *ids = tq_xcalloc(*n ? *n : 1, sizeof(int64_t));
    for (size_t i = 0; i < *n; i++)
        (*ids)[i] = strtoll(PQgetvalue(r, (int)i, 0), NULL, 10);
    PQclear(r);
    return TQ_OK;
}

static const char sql_revalidate[] =
    "WITH n AS (INSERT INTO tq.jobs (tenant_id, kind, pipeline_hash, idempotency_key, status)"
    "  SELECT t.tenant_id, 'revalidate', p.pipeline_hash,"
    "    'revalidate:' || t.tenant_id || ':' || $2, 'queued'"
    "  FROM tq.tenants t"
    "  CROSS JOIN LATERAL (SELECT pipeline_hash FROM tq.jobs pj WHERE pj.tenant_id = t.tenant_id"
    "    AND pj.kind = 'provision' AND pj.status = 'succeeded' ORDER BY pj.id DESC LIMIT 1) p"
    "  WHERE t.status = 'active' AND ($1::text[] IS NULL OR t.tenant_id = ANY($1::text[]))"
    "    AND " TENANT_QUEUE("t") " = $4"
    "    AND NOT EXISTS (SELECT 1 FROM tq.jobs r WHERE r.tenant_id = t.tenant_id"
    "      AND r.kind = 'revalidate' AND r.status IN ('queued', 'running'))"
    "  ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, tenant_id),"
    " a AS (INSERT INTO tq.audit_events (tenant_id, job_id, actor, event)"
    "  SELECT tenant_id, id, $3, 'revalidation_requested' FROM n RETURNING 1)"
    " SELECT id FROM n";

static enum tq_err id_rows(PGresult *r, int64_t **ids, size_t *n)
{
    *n = (size_t)PQntuples(r);
    *ids = tq_xcalloc(*n ? *n : 1, sizeof(int64_t));
    for (size_t i = 0; i < *n; i++)
        (*ids)[i] = strtoll(PQgetvalue(r, (int)i, 0), NULL, 10);
    PQclear(r);
    return TQ_OK;
}

enum tq_err tq_pg_revalidate(struct tq_pg *pg, const char *queue, const char *const *ids,
                             size_t nids, const char *round, const char *actor,
                             int64_t **job_ids, size_t *n)
{
    char *arr = nids ? text_array(ids, nids) : NULL;
    const char *p[] = {arr, round, actor, queue};
    enum tq_err err;
    *job_ids = NULL;
    *n = 0;
    PGresult *r = tq__pg_query(pg, &err, "queue revalidation jobs", sql_revalidate, 4, p);
    free(arr);
    if (!r)
        return err;
    return id_rows(r, job_ids, n);
}

/* $1 queue, $2 interval (ms) */
static const char sql_revalidate_schedule[] =
    "UPDATE tq.tenants t SET revalidate_due_at = CASE"
    "  WHEN b.base + b.iv * (0.5 + 0.5 * random()) > now()"
    "    THEN b.base + b.iv * (0.5 + 0.5 * random())"
    "  ELSE now() + b.iv * random() END"
    " FROM (SELECT tenant_id, greatest(coalesce(last_validated_at, activated_at, now()),"
    "         coalesce(activated_at, now())) AS base,"
    "         make_interval(secs => $2::bigint / 1000.0) AS iv"
    "       FROM tq.tenants WHERE status = 'active' AND " TENANT_QUEUE("tenants") " = $1"
    "         AND (revalidate_due_at IS NULL OR revalidate_due_at < activated_at)"
    "       FOR UPDATE SKIP LOCKED) b"
    " WHERE t.tenant_id = b.tenant_id";

/* $1 queue, $2 interval (ms), $3 limit, $4 actor */
static const char sql_revalidate_due[] =
    "WITH d AS (SELECT t.tenant_id, t.revalidate_due_at FROM tq.tenants t"
    "   WHERE t.status = 'active' AND " TENANT_QUEUE("t") " = $1"
    "     AND t.revalidate_due_at <= now()"
    "   ORDER BY t.revalidate_due_at LIMIT $3::int FOR UPDATE SKIP LOCKED),"
    " s AS (UPDATE tq.tenants t SET revalidate_due_at = now()"
    "     + make_interval(secs => $2::bigint / 1000.0) * (0.9 + 0.2 * random())"
    "   FROM d WHERE t.tenant_id = d.tenant_id RETURNING t.tenant_id),"
    " n AS (INSERT INTO tq.jobs (tenant_id, kind, pipeline_hash, idempotency_key, status)"
    "   SELECT d.tenant_id, 'revalidate', p.pipeline_hash, 'revalidate:' || d.tenant_id"
    "     || ':' || (extract(epoch FROM d.revalidate_due_at) * 1000)::bigint, 'queued'"
    "   FROM d CROSS JOIN LATERAL (SELECT pipeline_hash FROM tq.jobs pj"
    "     WHERE pj.tenant_id = d.tenant_id AND pj.kind = 'provision'"
    "       AND pj.status = 'succeeded' ORDER BY pj.id DESC LIMIT 1) p"
    "   WHERE NOT EXISTS (SELECT 1 FROM tq.jobs r WHERE r.tenant_id = d.tenant_id"
    "     AND r.kind = 'revalidate' AND r.status IN ('queued', 'running'))"
    "   ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, tenant_id),"
    " a AS (INSERT INTO tq.audit_events (tenant_id, job_id, actor, event)"
    "   SELECT tenant_id, id, $4, 'revalidation_requested' FROM n RETURNING 1)"
    " SELECT id FROM n";

enum tq_err tq_pg_revalidate_due(struct tq_pg *pg, const char *queue, uint32_t interval_ms,
                                 int limit, const char *actor, int64_t **job_ids, size_t *n)
{
    char iv[24], lim[16];
    snprintf(iv, sizeof(iv), "%u", interval_ms);
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *ps[] = {queue, iv};
    enum tq_err err;
    *job_ids = NULL;
    *n = 0;
    PQclear(tq__pg_query(pg, &err, "schedule revalidations", sql_revalidate_schedule, 2, ps));
    if (err)
        return err;
    const char *pd[] = {queue, iv, lim, actor};
    PGresult *r = tq__pg_query(pg, &err, "queue due revalidations", sql_revalidate_due, 4, pd);
    if (!r)
        return err;
    return id_rows(r, job_ids, n);
}

enum tq_err tq_pg_cancel_requests(struct tq_pg *pg, const char *worker, const int64_t *ids,
                                  size_t n, int64_t **out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (n == 0)
        return TQ_OK;
    char *arr = id_array(ids, n);
    const char *p[] = {worker, arr};
    enum tq_err err;
    PGresult *r = tq__pg_query(pg, &err, "read cancel requests",
                               "SELECT id FROM tq.jobs WHERE id = ANY($2::bigint[])"
                               " AND lease_owner = $1 AND status = 'running' AND cancel_requested",
                               2, p);
    free(arr);
    if (!r)
        return err;
    *nout = (size_t)PQntuples(r);
    *out = tq_xcalloc(*nout ? *nout : 1, sizeof(int64_t));
    for (size_t i = 0; i < *nout; i++)
        (*out)[i] = strtoll(PQgetvalue(r, (int)i, 0), NULL, 10);
    PQclear(r);
    return TQ_OK;
}

/* ------------------------------------------------------------------ status */

/*
 * The whole view is built by PostgreSQL as one JSON document: one round trip,
 * and the shape documented in enqueue/README.md is fixed here.
 */
static const char sql_status[] =
    "SELECT coalesce(json_agg(x ORDER BY x.created_at, x.tenant_id), '[]')::text FROM ("
    " SELECT t.tenant_id, t.name, t.tier, t.region, t.budget, t.owner, t.status,"
    "  t.batch_id AS batch, t.approver, t.failure_reason, t.created_at,"
    "  t.updated_at, t.activated_at, t.last_validated_at,"
    /* escalated: pending approval longer than TQ_APPROVAL_ESCALATE_AFTER */
    "  (t.status = 'pending_approval' AND t.escalated_at IS NOT NULL) AS escalated,"
    "  t.escalated_at, t.escalations,"
    "  j.id AS job_id, j.kind AS job_kind, j.status AS job_status,"
    "  j.attempt AS job_attempt, j.lease_owner AS worker, j.error AS job_error,"
    "  coalesce((SELECT count(*) FROM tq.job_steps s WHERE s.job_id = j.id"
    "    AND s.status IN ('succeeded','skipped')), 0) AS steps_done,"
    "  coalesce(jsonb_array_length(p.body::jsonb -> 'steps'), 0) AS steps_total,"
    "  (SELECT s.step FROM tq.job_steps s WHERE s.job_id = j.id"
    "    AND s.status = 'running' ORDER BY s.started_at DESC LIMIT 1) AS current_step,"
    "  coalesce((SELECT json_agg(json_build_object('step', s.step, 'status', s.status,"
    "    'attempts', s.attempts, 'started_at', s.started_at,"
    "    'finished_at', s.finished_at, 'last_error', s.last_error)"
    "    ORDER BY s.started_at NULLS LAST, s.step)"
    "    FROM tq.job_steps s WHERE s.job_id = j.id), '[]') AS steps,"
    /* the last revalidation, beside the lifecycle job, never instead of it */
    "  CASE WHEN rv.id IS NULL THEN NULL ELSE json_build_object('job_id', rv.id,"
    "    'status', rv.status, 'created_at', rv.created_at, 'started_at', rv.started_at,"
    "    'finished_at', rv.finished_at, 'error', rv.error,"
    "    'checks_failed', (SELECT count(*) FROM tq.job_steps s WHERE s.job_id = rv.id"
    "      AND s.status = 'failed')) END AS revalidation,"
    /* drift: what the last revalidation that found any found, check by check */
    "  CASE WHEN t.drift IS NULL THEN NULL ELSE json_build_object("
    "    'summary', t.drift, 'detected_at', t.last_validated_at, 'job_id', dj.id,"
    "    'checks', coalesce((SELECT json_agg(json_build_object('check', s.step,"
    "      'message', s.last_error) ORDER BY s.step) FROM tq.job_steps s"
    "      WHERE s.job_id = dj.id AND s.status = 'failed'), '[]')) END AS drift"
    " FROM tq.tenants t"
    " LEFT JOIN LATERAL (SELECT * FROM tq.jobs jj WHERE jj.tenant_id = t.tenant_id"
    "   AND jj.kind <> 'revalidate' ORDER BY jj.id DESC LIMIT 1) j ON true"
    " LEFT JOIN LATERAL (SELECT * FROM tq.jobs jr WHERE jr.tenant_id = t.tenant_id"
    "   AND jr.kind = 'revalidate' ORDER BY jr.id DESC LIMIT 1) rv ON true"
    " LEFT JOIN LATERAL (SELECT jd.id FROM tq.jobs jd WHERE jd.tenant_id = t.tenant_id"
    "   AND jd.kind = 'revalidate' AND t.drift IS NOT NULL AND jd.status = 'succeeded'"
    "   AND EXISTS (SELECT 1 FROM tq.job_steps s WHERE s.job_id = jd.id AND s.status = 'failed')"
    "   ORDER BY jd.id DESC LIMIT 1) dj ON true"
    " LEFT JOIN tq.pipelines p ON p.hash = j.pipeline_hash"
    " WHERE ($1::text[] IS NULL OR t.tenant_id = ANY($1::text[]))"
    "   AND ($2::text IS NULL OR t.batch_id = $2 OR t.tenant_id IN"
    "     (SELECT bt.tenant_id FROM tq.batch_tenants bt WHERE bt.batch_id = $2))) x";

/* Encode ids as a PostgreSQL array literal: {"a","b"} with quotes escaped. */
static char *text_array(const char *const *ids, size_t n)
{
    struct tq_buf b;
    tq_buf_init(&b);
    tq_buf_puts(&b, "{");
    for (size_t i = 0; i < n; i++) {
        tq_buf_puts(&b, i ? ",\"" : "\"");
        for (const char *p = ids[i]; *p; p++) {
            if (*p == '"' || *p == '\\')
                tq_buf_append(&b, "\\", 1);
            tq_buf_append(&b, p, 1);
        }
        tq_buf_puts(&b, "\"");
    }
    tq_buf_puts(&b, "}");
    return tq_buf_take(&b, NULL);
}

enum tq_err tq_pg_status(struct tq_pg *pg, const char *const *ids, size_t nids,
                         const char *batch, json_t **out)
{
    *out = NULL;
    char *arr = nids ? text_array(ids, nids) : NULL;
    const char *p[] = {arr, batch};
    enum tq_err err;
    PGresult *r = tq__pg_query(pg, &err, "read tenant status", sql_status, 2, p);
    free(arr);
    if (!r)
        return err;
    json_error_t jerr;
    *out = json_loads(PQgetvalue(r, 0, 0), 0, &jerr);
    PQclear(r);
    if (!*out)
        return set_err(pg, TQ_EPG, "status query returned invalid JSON: %s", jerr.text);
    return TQ_OK;
}
