/*
 * Step "check_pg": validation of the tenant's PostgreSQL footprint with the
 * tenant's OWN credentials (from the shared credentials store, where
 * pg_tenant put them, so any worker can check any tenant): a fresh
 * PQconnectdbParams connection on the thread pool (wk_step_offload), never
 * the pooled platform connection. params.check:
 *   connect    SELECT 1, then INSERT + SELECT + DELETE in its documents
 *              table (one transaction); latencies in the output
 *   isolation  as the tenant: every other tenant schema's documents and
 *              every tq.* relation must refuse reads with 42501; the role
 *              must not be superuser or BYPASSRLS; its table must have RLS
 *              enabled and forced; inserting or updating a row to another
 *              tenant id must be refused; rows of other tenants must stay
 *              hidden. Any success is a leak: TQ_ESTEP naming it. Every
 *              probe runs in one transaction that is rolled back.
 *   latency    params.queries (default 50) small queries; p50/p95/max in
 *              ms; p95 over the tier's p95_sla_ms (params.sla_ms
 *              overrides) is TQ_ESTEP with the measurement in errstr
 * Undo: nothing (checks leave no effect). Time is bounded by connect_timeout
 * and statement_timeout, as offloaded work cannot be interrupted.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../credentials.h"
#include "../worker.h"
#include "tenant_util.h"
#include "tq/request.h"
#include "tq/util.h"

#define CONNECT_TIMEOUT_S "5"
#define STATEMENT_TIMEOUT_MS 10000
#define MAX_QUERIES 10000
#define MAX_SCHEMAS "200"
#define FOREIGN_TENANT "someone-else"

enum check { C_CONNECT, C_ISOLATION, C_LATENCY };

struct conn {
    PGconn *db;
    char user[64];
    char host[256];
    char port[16];
    char *q_table;     /* "t_x".documents, quoted with libpq */
    double connect_ms;
};

static void quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

static void conn_close(struct conn *c)
{
    free(c->q_table);
    PQfinish(c->db);
}

static const char *str_field(const json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

/* Connect as the tenant with the credentials pg_tenant delivered. */
static enum tq_err tenant_connect(struct wk_step *s, struct conn *c)
{
    memset(c, 0, sizeof(*c));
    json_t *cred;
    enum tq_err err = wk_cred_get(s, NULL, "postgres", &cred);
    if (err)
        return err;
    struct wk_tenant_names n;
    wk_tenant_names(s->claim->tenant_id, &n);
    snprintf(c->user, sizeof(c->user), "%s", str_field(cred, "user"));
    snprintf(c->host, sizeof(c->host), "%s", str_field(cred, "host"));
    snprintf(c->port, sizeof(c->port), "%s", str_field(cred, "port"));
    char opts[64];
    snprintf(opts, sizeof(opts), "-c statement_timeout=%d", STATEMENT_TIMEOUT_MS);
    const char *kw[] = {"host",    "port",     "dbname",          "user",
                        "password", "options", "connect_timeout", "application_name",
                        NULL};
    const char *val[] = {c->host,
                         c->port,
                         str_field(cred, "dbname"),
                         c->user,
                         str_field(cred, "password"),
                         opts,
                         CONNECT_TIMEOUT_S,
                         "tq-check",
                         NULL};
    uint64_t t0 = wk_now_ns();
    c->db = PQconnectdbParams(kw, val, 0);
    c->connect_ms = wk_ms_since(t0);
    /* best effort: the password's bytes do not outlive the check in our heap */
    const char *pw = json_string_value(json_object_get(cred, "password"));
    if (pw)
        memset((char *)pw, 0, strlen(pw));
    json_decref(cred);
    if (PQstatus(c->db) != CONNECTION_OK) {
        /* libpq's connection messages never contain the password */
        snprintf(s->errstr, sizeof(s->errstr), "could not connect as %s to %s:%s: %s", c->user,
                 c->host, c->port, PQerrorMessage(c->db));
        s->errstr[strcspn(s->errstr, "\n")] = '\0';
        return TQ_ECONNECT;
    }
    PQsetNoticeProcessor(c->db, quiet, NULL);
    char *qs = PQescapeIdentifier(c->db, n.schema, strlen(n.schema));
    c->q_table = tq_xasprintf("%s.documents", qs);
    PQfreemem(qs);
    return TQ_OK;
}

static double round3(double ms)
{
    return round(ms * 1000.0) / 1000.0;
}

static enum tq_err stmt_failed(struct wk_step *s, struct conn *c, PGresult *r, const char *what)
{
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    snprintf(s->errstr, sizeof(s->errstr), "could not %s as %s: %s", what, c->user,
             msg ? msg : PQerrorMessage(c->db));
    s->errstr[strcspn(s->errstr, "\n")] = '\0';
    PQclear(r);
    return PQstatus(c->db) == CONNECTION_OK ? TQ_ESTEP : TQ_ECONNECT;
}

/* ------------------------------------------------------------ connect */

static enum tq_err check_connect(struct wk_step *s, struct conn *c)
{
    uint64_t t0 = wk_now_ns();
    PGresult *r = PQexec(c->db, "SELECT 1");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return stmt_failed(s, c, r, "run SELECT 1");
    PQclear(r);
    double select_ms = wk_ms_since(t0);

    t0 = wk_now_ns();
    r = PQexec(c->db, "BEGIN");
    PQclear(r);
    char *sql = tq_xasprintf("INSERT INTO %s (title, body) VALUES ('tq-check', 'connectivity')"
                             " RETURNING id", c->q_table);
    r = PQexec(c->db, sql);
    free(sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        return stmt_failed(s, c, r, "insert into its documents table");
    char id[32];
    snprintf(id, sizeof(id), "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    const char *pv[] = {id};
    sql = tq_xasprintf("SELECT title FROM %s WHERE id = $1::bigint", c->q_table);
    r = PQexecParams(c->db, sql, 1, NULL, pv, NULL, NULL, 0);
    free(sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return stmt_failed(s, c, r, "read its documents table");
    if (PQntuples(r) != 1) {
        PQclear(r);
        snprintf(s->errstr, sizeof(s->errstr), "%s cannot read back the row it inserted", c->user);
        return TQ_ESTEP;
    }
    PQclear(r);
    sql = tq_xasprintf("DELETE FROM %s WHERE id = $1::bigint", c->q_table);
    r = PQexecParams(c->db, sql, 1, NULL, pv, NULL, NULL, 0);
    free(sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return stmt_failed(s, c, r, "delete from its documents table");
    PQclear(r);
    r = PQexec(c->db, "COMMIT");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return stmt_failed(s, c, r, "commit");
    PQclear(r);
    double rw_ms = wk_ms_since(t0);

    json_object_set_new(s->output, "user", json_string(c->user));
    json_object_set_new(s->output, "host", json_string(c->host));
    json_object_set_new(s->output, "port", json_string(c->port));
    json_object_set_new(s->output, "connect_ms", json_real(round3(c->connect_ms)));
    json_object_set_new(s->output, "select_ms", json_real(round3(select_ms)));
    json_object_set_new(s->output, "insert_select_delete_ms", json_real(round3(rw_ms)));
    return TQ_OK;
}

/* ------------------------------------------------------------ isolation */

struct probes {
    json_t *list;          /* [{probe, result}] */
    struct tq_buf leaks;   /* "a; b" for errstr */
    int nleaks;
    bool lost;             /* the connection broke: the check cannot conclude */
};

static void record(struct probes *p, const char *probe, const char *result, bool leak)
{
    json_array_append_new(p->list, json_pack("{s:s, s:s}", "probe", probe, "result", result));
    if (leak) {
        tq_buf_printf(&p->leaks, "%s%s", p->nleaks ? "; " : "", probe);
        p->nleaks++;
    }
}

/*
 * Run sql, which isolation must refuse with 42501, inside a savepoint (so a
 * leak changes nothing and an error does not end the transaction).
 */
static void expect_denied(struct conn *c, struct probes *p, const char *probe, const char *sql,
                          int nparams, const char *const *params)
{
    PQclear(PQexec(c->db, "SAVEPOINT probe"));
    PGresult *r = PQexecParams(c->db, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    char result[160];
    bool leak = false;
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        snprintf(result, sizeof(result), "ALLOWED");
        leak = true;
    } else if (code && strcmp(code, "42501") == 0) {
        snprintf(result, sizeof(result), "denied (42501)");
    } else {
        /* e.g. 42P01: the other tenant's table is being created or dropped */
        const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        snprintf(result, sizeof(result), "inconclusive (%s: %s)", code ? code : "no code",
                 msg ? msg : "");
        if (PQstatus(c->db) != CONNECTION_OK)
            p->lost = true;
    }
    PQclear(r);
    PQclear(PQexec(c->db, "ROLLBACK TO SAVEPOINT probe"));
    record(p, probe, result, leak);
}

/* The first column of each row of a catalog query (readable by every role). */
static PGresult *catalog(struct wk_step *s, struct conn *c, const char *sql, const char *param,
                         enum tq_err *err)
{
    const char *pv[] = {param};
    PGresult *r = PQexecParams(c->db, sql, param ? 1 : 0, NULL, param ? pv : NULL, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        *err = stmt_failed(s, c, r, "read the catalog");
        return NULL;
    }
    return r;
}

static enum tq_err check_isolation(struct wk_step *s, struct conn *c)
{
    struct wk_tenant_names n;
    wk_tenant_names(s->claim->tenant_id, &n);
    struct probes p = {.list = json_array()};
    tq_buf_init(&p.leaks);
    enum tq_err err = TQ_OK;
    char probe[256];
    int nschemas = 0, nrels = 0;
    PGresult *r = PQexec(c->db, "BEGIN");
    PQclear(r);

    /* the role itself: neither superuser nor able to bypass row-level security */
    r = catalog(s, c, "SELECT rolsuper::text, rolbypassrls::text FROM pg_roles"
                      " WHERE rolname = current_user", NULL, &err);
    if (!r)
        goto out;
    if (PQntuples(r) == 1) {
        bool bad = strcmp(PQgetvalue(r, 0, 0), "true") == 0;
        record(&p, "role is not superuser", bad ? "SUPERUSER" : "ok", bad);
        bad = strcmp(PQgetvalue(r, 0, 1), "true") == 0;
        record(&p, "role cannot bypass row-level security", bad ? "BYPASSRLS" : "ok", bad);
    }
    PQclear(r);

    /* its own table: RLS enabled, and forced (the role owns the table) */
    r = catalog(s, c, "SELECT c.relrowsecurity::text, c.relforcerowsecurity::text FROM pg_class c"
                      " JOIN pg_namespace n ON n.oid = c.relnamespace"
                      " WHERE n.nspname = $1 AND c.relname = 'documents'", n.schema, &err);
    if (!r)
        goto out;
    if (PQntuples(r) != 1) {
        PQclear(r);
        snprintf(s->errstr, sizeof(s->errstr), "cannot check isolation: %s.documents does not exist",
                 n.schema);
        err = TQ_ESTEP;
        goto out;
    }
    snprintf(probe, sizeof(probe), "%s.documents has row-level security enabled and forced",
             n.schema);
    bool rls = strcmp(PQgetvalue(r, 0, 0), "true") == 0 &&
               strcmp(PQgetvalue(r, 0, 1), "true") == 0;
    record(&p, probe, rls ? "ok" : "NOT ENABLED AND FORCED", !rls);
    PQclear(r);

    /* every other tenant's schema */
    r = catalog(s, c, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%' AND nspname <> $1"
                      " ORDER BY nspname LIMIT " MAX_SCHEMAS, n.schema, &err);
    if (!r)
        goto out;
    for (int i = 0; i < PQntuples(r) && !p.lost; i++) {
        const char *other = PQgetvalue(r, i, 0);
        char *q = PQescapeIdentifier(c->db, other, strlen(other));
        char *sql = tq_xasprintf("SELECT 1 FROM %s.documents LIMIT 1", q);
        snprintf(probe, sizeof(probe), "read %s.documents", other);
        expect_denied(c, &p, probe, sql, 0, NULL);
        free(sql);
        PQfreemem(q);
        nschemas++;
    }
    PQclear(r);

    /* every relation of the platform's own schema */
    r = catalog(s, c, "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                      " WHERE n.nspname = 'tq' AND c.relkind IN ('r', 'p', 'v', 'm')"
                      " ORDER BY c.relname", NULL, &err);
    if (!r)
        goto out;
    for (int i = 0; i < PQntuples(r) && !p.lost; i++) {
        const char *rel = PQgetvalue(r, i, 0);
        char *q = PQescapeIdentifier(c->db, rel, strlen(rel));
        char *sql = tq_xasprintf("SELECT 1 FROM tq.%s LIMIT 1", q);
        snprintf(probe, sizeof(probe), "read tq.%s", rel);
        expect_denied(c, &p, probe, sql, 0, NULL);
        free(sql);
        PQfreemem(q);
        nrels++;
    }
    PQclear(r);

    /* row-level security: rows of another tenant id are refused and hidden */
    const char *foreign[] = {FOREIGN_TENANT};
    char *sql = tq_xasprintf("INSERT INTO %s (tenant_id, title) VALUES ($1, 'tq-isolation-probe')",
                             c->q_table);
    expect_denied(c, &p, "insert a row with another tenant_id", sql, 1, foreign);
    free(sql);
    sql = tq_xasprintf("INSERT INTO %s (title) VALUES ('tq-isolation-probe') RETURNING id",
                       c->q_table);
    r = PQexec(c->db, sql);
    free(sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        err = stmt_failed(s, c, r, "insert its own row");
        goto out;
    }
    char id[32];
    snprintf(id, sizeof(id), "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    const char *up[] = {FOREIGN_TENANT, id};
    sql = tq_xasprintf("UPDATE %s SET tenant_id = $1 WHERE id = $2::bigint", c->q_table);
    expect_denied(c, &p, "update its row to another tenant_id", sql, 2, up);
    free(sql);
    sql = tq_xasprintf("SELECT count(*) FROM %s WHERE tenant_id <> $1", c->q_table);
    const char *own[] = {s->claim->tenant_id};
    r = PQexecParams(c->db, sql, 1, NULL, own, NULL, NULL, 0);
    free(sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        err = stmt_failed(s, c, r, "count rows of other tenants");
        goto out;
    }
    bool visible = strcmp(PQgetvalue(r, 0, 0), "0") != 0;
    record(&p, "rows of other tenants are hidden",
           visible ? "VISIBLE" : "ok", visible);
    PQclear(r);

    if (p.lost) {
        snprintf(s->errstr, sizeof(s->errstr), "could not finish the isolation check as %s: %s",
                 c->user, PQerrorMessage(c->db));
        s->errstr[strcspn(s->errstr, "\n")] = '\0';
        err = TQ_ECONNECT;
    } else if (p.nleaks) {
        snprintf(s->errstr, sizeof(s->errstr), "isolation leak: %s can %s", c->user, p.leaks.data);
        err = TQ_ESTEP;
    }
out:
    PQclear(PQexec(c->db, "ROLLBACK"));
    json_object_set_new(s->output, "user", json_string(c->user));
    json_object_set_new(s->output, "other_schemas_tried", json_integer(nschemas));
    json_object_set_new(s->output, "platform_relations_tried", json_integer(nrels));
    json_object_set_new(s->output, "leaks", json_integer(p.nleaks));
    json_object_set_new(s->output, "probes", p.list);
    tq_buf_cleanup(&p.leaks);
    return err;
}

/* ------------------------------------------------------------ latency */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n). */
static double percentile(const double *v, int n, double pct)
{
    int rank = (int)ceil(pct / 100.0 * n);
    if (rank < 1)
        rank = 1;
    return v[rank - 1];
}

static enum tq_err check_latency(struct wk_step *s, struct conn *c)
{
    int nq = 50;
    const json_t *q = json_object_get(s->params, "queries");
    if (json_is_integer(q))
        nq = (int)json_integer_value(q);
    long long sla = -1;
    const json_t *sl = json_object_get(s->params, "sla_ms");
    if (json_is_integer(sl)) {
        sla = json_integer_value(sl);
    } else {
        const struct tq_tier_info *t = tq_tier_lookup(s->claim->tier);
        if (t)
            sla = t->p95_sla_ms;
    }
    if (nq < 1 || nq > MAX_QUERIES || sla < 0) {
        snprintf(s->errstr, sizeof(s->errstr),
                 "cannot check latency: params.queries must be 1..%d and the SLA known"
                 " (tier \"%.16s\" or params.sla_ms >= 0)", MAX_QUERIES, s->claim->tier);
        return TQ_EINVALID;
    }
    double *ms = tq_xcalloc((size_t)nq, sizeof(*ms));
    char *sql = tq_xasprintf("SELECT id, title FROM %s WHERE tenant_id = $1 ORDER BY id DESC"
                             " LIMIT 10", c->q_table);
    const char *pv[] = {s->claim->tenant_id};
    enum tq_err err = TQ_OK;
    for (int i = 0; i < nq; i++) {
        uint64_t t0 = wk_now_ns();
        PGresult *r = PQexecParams(c->db, sql, 1, NULL, pv, NULL, NULL, 0);
        ms[i] = wk_ms_since(t0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            err = stmt_failed(s, c, r, "run the latency query");
            goto out;
        }
        PQclear(r);
    }
    qsort(ms, (size_t)nq, sizeof(*ms), cmp_double);
    double p50 = percentile(ms, nq, 50), p95 = percentile(ms, nq, 95), max = ms[nq - 1];
    json_object_set_new(s->output, "queries", json_integer(nq));
    json_object_set_new(s->output, "p50_ms", json_real(round3(p50)));
    json_object_set_new(s->output, "p95_ms", json_real(round3(p95)));
    json_object_set_new(s->output, "max_ms", json_real(round3(max)));
    json_object_set_new(s->output, "sla_ms", json_integer(sla));
    json_object_set_new(s->output, "connect_ms", json_real(round3(c->connect_ms)));
    if (p95 > (double)sla) {
        snprintf(s->errstr, sizeof(s->errstr),
                 "p95 %.3f ms over the SLA of %lld ms (p50 %.3f ms, max %.3f ms, %d queries)", p95,
                 sla, p50, max, nq);
        err = TQ_ESTEP;
    }
out:
    free(sql);
    free(ms);
    return err;
}

/* ------------------------------------------------------------ step */

static enum tq_err check_run(struct wk_step *s)
{
    struct conn c;
    enum tq_err err = tenant_connect(s, &c);
    if (!err) {
        switch ((enum check)(intptr_t)s->kind_data) {
        case C_CONNECT:
            err = check_connect(s, &c);
            break;
        case C_ISOLATION:
            err = check_isolation(s, &c);
            break;
        case C_LATENCY:
            err = check_latency(s, &c);
            break;
        }
    }
    conn_close(&c);
    return err;
}

static enum tq_err check_start(struct wk_step *s)
{
    if (s->undo) {
        wk_step_done(s, TQ_OK);
        return TQ_OK;
    }
    const char *check = json_string_value(json_object_get(s->params, "check"));
    enum check which;
    if (check && strcmp(check, "connect") == 0)
        which = C_CONNECT;
    else if (check && strcmp(check, "isolation") == 0)
        which = C_ISOLATION;
    else if (check && strcmp(check, "latency") == 0)
        which = C_LATENCY;
    else {
        snprintf(s->errstr, sizeof(s->errstr),
                 "params.check must be \"connect\", \"isolation\" or \"latency\"");
        return TQ_EINVALID;
    }
    json_object_set_new(s->output, "check", json_string(check));
    s->kind_data = (void *)(intptr_t)which;
    return wk_step_offload(s, check_run);
}

/* Offloaded work is bounded by connect_timeout and statement_timeout. */
const struct wk_step_ops wk_step_check_pg = {"check_pg", check_start, NULL};
