/*
 * Step "check_pg": validation of the tenant's PostgreSQL footprint with the
 * tenant's OWN credentials (from the shared credentials store, where
 * pg_tenant put them, so any worker can check any tenant): a fresh
 * PQconnectdbParams connection on the thread pool (wk_step_offload), never
 * the pooled platform connection. params.check:
 *   connect    SELECT 1, then INSERT + SELECT + DELETE in its documents
 *              table (one transaction); latencies in the output
 *   isolation  as the tenant: its role has no SUPERUSER, BYPASSRLS,
 *              CREATEROLE or CREATEDB and is a member of no role; its schema
 *              and table are owned by tq_o_<ident> and nobody else holds
 *              more than the login role's USAGE + DML on them; RLS is
 *              enabled and forced; GRANT ... TO PUBLIC, DISABLE ROW LEVEL
 *              SECURITY, DROP POLICY, CREATE TABLE and rows tagged with
 *              another tenant id must all fail; rows of other tenants stay
 *              hidden; every tq.* relation refuses reads. Each of those is
 *              this tenant's leak: TQ_ESTEP, one sentence per leak. Another
 *              tenant's documents must refuse reads too, but one that lets
 *              this clean role in leaks through that tenant's grants: it is
 *              blamed on that schema (output.foreign_leaks, a warning) and
 *              fails that tenant's own check, not this one. Every probe
 *              runs in one transaction that is rolled back.
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

#include "../step.h"
#include "tq/pg.h"
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
    /* our own copy, wiped after use (jansson's strings are const: never written to) */
    char password[256];
    snprintf(password, sizeof(password), "%s", str_field(cred, "password"));
    const char *kw[] = {"host",    "port",     "dbname",          "user",
                        "password", "options", "connect_timeout", "application_name",
                        NULL};
    const char *val[] = {c->host,
                         c->port,
                         str_field(cred, "dbname"),
                         c->user,
                         password,
                         opts,
                         CONNECT_TIMEOUT_S,
                         "tq-check",
                         NULL};
    uint64_t t0 = wk_now_ns();
    c->db = PQconnectdbParams(kw, val, 0);
    c->connect_ms = wk_ms_since(t0);
    memset(password, 0, sizeof(password));
    json_decref(cred);
    if (PQstatus(c->db) != CONNECTION_OK) {
        /* libpq's connection messages never contain the password */
        snprintf(s->errstr, sizeof(s->errstr), "could not connect as %.48s to %.48s:%.8s: %.120s",
                 c->user, c->host, c->port, PQerrorMessage(c->db));
        s->errstr[strcspn(s->errstr, "\n")] = '\0';
        return tq_pg_connect_classify(c->db);
    }
    PQsetNoticeProcessor(c->db, quiet, NULL);
    char *qs = PQescapeIdentifier(c->db, n.schema, strlen(n.schema));
    c->q_table = tq_xasprintf("%s.documents", qs);
    PQfreemem(qs);
    return TQ_OK;
}

static double round3(double ms)   /* ms >= 0: elapsed times; no libm for one call */
{
    return (double)(int64_t)(ms * 1000.0 + 0.5) / 1000.0;
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

/*
 * Each probe is something tried and what happened; a leak is written as one
 * sentence, "Tried to <tried>, and <happened>." A leak is blamed on whoever
 * holds the object or attribute that lets it through: this tenant (its
 * role's attributes and memberships, its own objects' owner, grants and row
 * security), or the tenant whose schema grants too much. Reading another
 * tenant's table while this role holds nothing but its own grants is that
 * other tenant's leak: recorded in output.foreign_leaks and the step's
 * warning, and it fails only that tenant's check (its own ACL probe finds
 * the grant), never this one.
 */
struct probes {
    struct wk_probes w;    /* what was tried, and the leaks blamed on this tenant */
    json_t *foreign;       /* [{schema, probe, result}] */
    bool lost;             /* the connection broke: the check cannot conclude */
};

static void record(struct probes *p, const char *tried, const char *happened, bool leak)
{
    wk_probe(&p->w, tried, happened, leak);
}

enum outcome { O_DENIED, O_ALLOWED, O_OTHER };

/*
 * Run sql inside a savepoint (so whatever it does is undone and an error
 * does not end the transaction); check, when not NULL, is a query run
 * before the rollback whose first value "t" means the statement had an
 * effect (a GRANT without grant option succeeds with a warning and grants
 * nothing). happened gets the sentence's second half.
 */
static enum outcome attempt(struct conn *c, struct probes *p, const char *sql, int nparams,
                            const char *const *params, const char *check, char *happened,
                            size_t hlen)
{
    PQclear(PQexec(c->db, "SAVEPOINT probe"));
    PGresult *r = PQexecParams(c->db, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    enum outcome o;
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        o = O_ALLOWED;
        snprintf(happened, hlen, "it was allowed");
        if (check) {
            PGresult *e = PQexec(c->db, check);
            if (PQresultStatus(e) == PGRES_TUPLES_OK && PQntuples(e) == 1 &&
                strcmp(PQgetvalue(e, 0, 0), "t") != 0) {
                o = O_DENIED;
                snprintf(happened, hlen, "it changed nothing (no grant option)");
            }
            PQclear(e);
        }
    } else if (code && strcmp(code, "42501") == 0) {
        o = O_DENIED;
        snprintf(happened, hlen, "it was refused (42501)");
    } else {
        /* e.g. 42P01: the other tenant's table is being created or dropped */
        const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        o = O_OTHER;
        snprintf(happened, hlen, "it was inconclusive (%s: %s)", code ? code : "no code",
                 msg ? msg : "");
        if (PQstatus(c->db) != CONNECTION_OK)
            p->lost = true;
    }
    PQclear(r);
    PQclear(PQexec(c->db, "ROLLBACK TO SAVEPOINT probe"));
    return o;
}

/* sql must be refused: anything that changes something is this tenant's leak. */
static void expect_denied(struct conn *c, struct probes *p, const char *tried, const char *sql,
                          int nparams, const char *const *params, const char *check)
{
    char happened[200];
    enum outcome o = attempt(c, p, sql, nparams, params, check, happened, sizeof(happened));
    record(p, tried, happened, o == O_ALLOWED);
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

/* Privileges on the tenant's schema and table held by anyone but their owner and
   the login role's USAGE + DML (no grant option): "PUBLIC holds SELECT on ..." */
#define FOREIGN_GRANTS_SQL                                                                     \
    "SELECT coalesce(string_agg(x, ', ' ORDER BY x), '') FROM ("                               \
    " SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END"        \
    "   || ' holds ' || a.privilege_type || CASE WHEN a.is_grantable THEN ' with grant option'" \
    "   ELSE '' END || ' on schema ' || n.nspname AS x"                                        \
    " FROM pg_namespace n, aclexplode(n.nspacl) a"                                             \
    " WHERE n.nspname = $1 AND a.grantee <> n.nspowner AND NOT (a.grantee = ("                 \
    "   SELECT oid FROM pg_roles WHERE rolname = current_user) AND a.privilege_type = 'USAGE'"  \
    "   AND NOT a.is_grantable)"                                                               \
    " UNION ALL"                                                                               \
    " SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END"        \
    "   || ' holds ' || a.privilege_type || CASE WHEN a.is_grantable THEN ' with grant option'" \
    "   ELSE '' END || ' on ' || n.nspname || '.' || c.relname"                                \
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a"   \
    " WHERE n.nspname = $1 AND c.relname = 'documents' AND a.grantee <> c.relowner AND NOT ("  \
    "   a.grantee = (SELECT oid FROM pg_roles WHERE rolname = current_user)"                   \
    "   AND a.privilege_type IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE') AND NOT a.is_grantable)" \
    ") g"

/* Does PUBLIC now hold anything on the schema or table $1 (inside a probe's savepoint)? */
#define PUBLIC_HOLDS_SQL(schema_lit)                                                           \
    "SELECT (EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(n.nspacl) a WHERE"               \
    " n.nspname = " schema_lit " AND a.grantee = 0) OR EXISTS (SELECT 1 FROM pg_class c"        \
    " JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a WHERE"             \
    " n.nspname = " schema_lit " AND c.relname = 'documents' AND a.grantee = 0))::text::char"

/* This role's own standing: attributes, memberships, its objects' owner, grants, RLS. */
/* The login role's attributes and memberships; *self_clean when both are clean. */
static enum tq_err role_probes(struct wk_step *s, struct conn *c, struct probes *p,
                               bool *self_clean)
{
    enum tq_err err = TQ_OK;
    char tried[256], happened[256];
    *self_clean = false;

    PGresult *r = catalog(s, c, "SELECT concat_ws(', ', CASE WHEN rolsuper THEN 'SUPERUSER' END,"
                                " CASE WHEN rolbypassrls THEN 'BYPASSRLS' END, CASE WHEN"
                                " rolcreaterole THEN 'CREATEROLE' END, CASE WHEN rolcreatedb"
                                " THEN 'CREATEDB' END) FROM pg_roles WHERE rolname = current_user",
                          NULL, &err);
    if (!r)
        return err;
    const char *attrs = PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "";
    bool attrs_ok = !*attrs;
    snprintf(tried, sizeof(tried), "confirm that %s has no SUPERUSER, BYPASSRLS, CREATEROLE"
             " or CREATEDB attribute", c->user);
    snprintf(happened, sizeof(happened), attrs_ok ? "it has none" : "it has %s", attrs);
    record(p, tried, happened, !attrs_ok);
    PQclear(r);

    r = catalog(s, c, "SELECT coalesce(string_agg(g.rolname, ', ' ORDER BY g.rolname), '')"
                      " FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
                      " WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user)",
                NULL, &err);
    if (!r)
        return err;
    bool members_ok = !*PQgetvalue(r, 0, 0);
    snprintf(tried, sizeof(tried), "confirm that %s is a member of no role", c->user);
    snprintf(happened, sizeof(happened), members_ok ? "it is a member of none"
                                                    : "it is a member of %s", PQgetvalue(r, 0, 0));
    record(p, tried, happened, !members_ok);
    PQclear(r);
    *self_clean = attrs_ok && members_ok;
    return TQ_OK;
}

/* Its schema and table: row security, owners, grants to anyone else. */
static enum tq_err object_probes(struct wk_step *s, struct conn *c,
                                 const struct wk_tenant_names *n, struct probes *p)
{
    enum tq_err err = TQ_OK;
    char tried[256], happened[256];
    PGresult *r = catalog(s, c, "SELECT c.relrowsecurity::text, c.relforcerowsecurity::text,"
                      " pg_get_userbyid(n.nspowner), pg_get_userbyid(c.relowner),"
                      " (SELECT rolcanlogin FROM pg_roles WHERE oid = c.relowner)::text"
                      " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                      " WHERE n.nspname = $1 AND c.relname = 'documents'", n->schema, &err);
    if (!r)
        return err;
    if (PQntuples(r) != 1) {
        PQclear(r);
        snprintf(s->errstr, sizeof(s->errstr), "Tried to check the isolation of %s.documents,"
                 " and it does not exist.", n->schema);
        return TQ_ESTEP;
    }
    bool enabled = strcmp(PQgetvalue(r, 0, 0), "true") == 0;
    bool forced = strcmp(PQgetvalue(r, 0, 1), "true") == 0;
    snprintf(tried, sizeof(tried), "confirm that %s.documents has row-level security enabled"
             " and forced", n->schema);
    record(p, tried, enabled && forced ? "it has" : !enabled ? "it is not enabled"
                                                             : "it is enabled but not forced",
           !(enabled && forced));
    const char *nsp_owner = PQgetvalue(r, 0, 2), *rel_owner = PQgetvalue(r, 0, 3);
    bool owned = strcmp(nsp_owner, n->owner) == 0 && strcmp(rel_owner, n->owner) == 0;
    bool can_login = strcmp(PQgetvalue(r, 0, 4), "true") == 0;
    snprintf(tried, sizeof(tried), "confirm that schema %s and its documents table are owned"
             " by %s, which cannot log in", n->schema, n->owner);
    if (!owned)
        snprintf(happened, sizeof(happened), "the schema is owned by %s and the table by %s",
                 nsp_owner, rel_owner);
    else
        snprintf(happened, sizeof(happened), can_login ? "%s can log in" : "they are",
                 n->owner);
    record(p, tried, happened, !owned || can_login);
    PQclear(r);

    r = catalog(s, c, FOREIGN_GRANTS_SQL, n->schema, &err);
    if (!r)
        return err;
    const char *extra = PQgetvalue(r, 0, 0);
    snprintf(tried, sizeof(tried), "confirm that no other role holds privileges on its schema"
             " and table");
    snprintf(happened, sizeof(happened), *extra ? "%s" : "no one else does", extra);
    record(p, tried, happened, *extra != '\0');
    PQclear(r);
    return TQ_OK;
}

/* What an owner could do: the login role must not be able to. */
static enum tq_err owner_power_probes(struct wk_step *s, struct conn *c,
                                      const struct wk_tenant_names *n, struct probes *p)
{
    char *ls = PQescapeLiteral(c->db, n->schema, strlen(n->schema));
    char *qs = PQescapeIdentifier(c->db, n->schema, strlen(n->schema));
    if (!ls || !qs) {
        PQfreemem(ls);
        PQfreemem(qs);
        snprintf(s->errstr, sizeof(s->errstr), "could not quote schema %s", n->schema);
        return TQ_EPG;
    }
    char *holds = tq_xasprintf(PUBLIC_HOLDS_SQL("%s"), ls, ls);
    struct {
        const char *tried;
        char *sql;
        const char *check;
    } own[] = {
        {"grant SELECT on its documents table to PUBLIC",
         tq_xasprintf("GRANT SELECT ON %s TO PUBLIC", c->q_table), holds},
        {"grant USAGE on its schema to PUBLIC",
         tq_xasprintf("GRANT USAGE ON SCHEMA %s TO PUBLIC", qs), holds},
        {"disable row-level security on its documents table",
         tq_xasprintf("ALTER TABLE %s DISABLE ROW LEVEL SECURITY", c->q_table), NULL},
        {"drop the row-level security policy of its documents table",
         tq_xasprintf("DROP POLICY tenant_isolation ON %s", c->q_table), NULL},
        {"create a table in its schema",
         tq_xasprintf("CREATE TABLE %s.tq_isolation_probe (x int)", qs), NULL},
    };
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++) {
        if (!p->lost)
            expect_denied(c, p, own[i].tried, own[i].sql, 0, NULL, own[i].check);
        free(own[i].sql);
    }
    free(holds);
    PQfreemem(ls);
    PQfreemem(qs);
    return TQ_OK;
}

static enum tq_err own_probes(struct wk_step *s, struct conn *c, const struct wk_tenant_names *n,
                              struct probes *p, bool *self_clean)
{
    enum tq_err err = role_probes(s, c, p, self_clean);
    if (!err)
        err = object_probes(s, c, n, p);
    if (!err)
        err = owner_power_probes(s, c, n, p);
    return err;
}

/* Every other tenant's schema: reading it is a leak, blamed on whoever grants it. */
static enum tq_err other_schema_probes(struct wk_step *s, struct conn *c,
                                       const struct wk_tenant_names *n, struct probes *p,
                                       bool self_clean, int *nschemas)
{
    enum tq_err err = TQ_OK;
    char tried[256], happened[200];
    PGresult *r = catalog(s, c, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%'"
                                " AND nspname <> $1 ORDER BY nspname LIMIT " MAX_SCHEMAS,
                          n->schema, &err);
    if (!r)
        return err;
    for (int i = 0; i < PQntuples(r) && !p->lost; i++) {
        const char *other = PQgetvalue(r, i, 0);
        char *q = PQescapeIdentifier(c->db, other, strlen(other));
        char *sql = tq_xasprintf("SELECT 1 FROM %s.documents LIMIT 1", q);
        snprintf(tried, sizeof(tried), "read %s.documents", other);
        enum outcome o = attempt(c, p, sql, 0, NULL, NULL, happened, sizeof(happened));
        if (o == O_ALLOWED && self_clean) {
            /* this role holds nothing that reaches there: the other schema's grants do */
            snprintf(happened, sizeof(happened), "it was allowed by a grant on %s's objects"
                     " (that tenant's leak)", other);
            json_array_append_new(p->foreign, json_pack("{s:s, s:s, s:s}", "schema", other,
                                                        "probe", tried, "result", happened));
            json_array_append_new(p->w.list, json_pack("{s:s, s:s, s:s}", "probe", tried,
                                                       "result", happened, "blame", other));
            if (!s->warning[0])
                snprintf(s->warning, sizeof(s->warning), "%s could read %s.documents: schema %s"
                         " grants too much (blamed on that tenant, not this one)", c->user,
                         other, other);
        } else {
            record(p, tried, happened, o == O_ALLOWED);
        }
        free(sql);
        PQfreemem(q);
        (*nschemas)++;
    }
    PQclear(r);
    return TQ_OK;
}

/* Every relation of the platform's own schema must be unreadable. */
static enum tq_err platform_probes(struct wk_step *s, struct conn *c, struct probes *p,
                                   int *nrels)
{
    enum tq_err err = TQ_OK;
    char tried[256];
    PGresult *r = catalog(s, c, "SELECT c.relname FROM pg_class c JOIN pg_namespace n"
                                " ON n.oid = c.relnamespace WHERE n.nspname = 'tq'"
                                " AND c.relkind IN ('r', 'p', 'v', 'm') ORDER BY c.relname",
                          NULL, &err);
    if (!r)
        return err;
    for (int i = 0; i < PQntuples(r) && !p->lost; i++) {
        const char *rel = PQgetvalue(r, i, 0);
        char *q = PQescapeIdentifier(c->db, rel, strlen(rel));
        char *sql = tq_xasprintf("SELECT 1 FROM tq.%s LIMIT 1", q);
        snprintf(tried, sizeof(tried), "read tq.%s", rel);
        expect_denied(c, p, tried, sql, 0, NULL, NULL);
        free(sql);
        PQfreemem(q);
        (*nrels)++;
    }
    PQclear(r);
    return TQ_OK;
}

/* Row-level security: rows of another tenant id are refused and hidden. */
static enum tq_err row_security_probes(struct wk_step *s, struct conn *c, struct probes *p)
{
    char happened[200];
    const char *foreign[] = {FOREIGN_TENANT};
    char *sql = tq_xasprintf("INSERT INTO %s (tenant_id, title) VALUES ($1, 'tq-isolation-probe')",
                             c->q_table);
    expect_denied(c, p, "insert a row tagged with another tenant's id", sql, 1, foreign, NULL);
    free(sql);
    sql = tq_xasprintf("INSERT INTO %s (title) VALUES ('tq-isolation-probe') RETURNING id",
                       c->q_table);
    PGresult *r = PQexec(c->db, sql);
    free(sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        return stmt_failed(s, c, r, "insert its own row");
    char id[32];
    snprintf(id, sizeof(id), "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    const char *up[] = {FOREIGN_TENANT, id};
    sql = tq_xasprintf("UPDATE %s SET tenant_id = $1 WHERE id = $2::bigint", c->q_table);
    expect_denied(c, p, "retag its own row with another tenant's id", sql, 2, up, NULL);
    free(sql);
    sql = tq_xasprintf("SELECT count(*) FROM %s WHERE tenant_id <> $1", c->q_table);
    const char *own[] = {s->claim->tenant_id};
    r = PQexecParams(c->db, sql, 1, NULL, own, NULL, NULL, 0);
    free(sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return stmt_failed(s, c, r, "count rows of other tenants");
    bool visible = strcmp(PQgetvalue(r, 0, 0), "0") != 0;
    snprintf(happened, sizeof(happened), visible ? "it saw %s of them" : "it saw none",
             PQgetvalue(r, 0, 0));
    record(p, "see rows of other tenants in its documents table", happened, visible);
    PQclear(r);
    return TQ_OK;
}

static enum tq_err check_isolation(struct wk_step *s, struct conn *c)
{
    struct wk_tenant_names n;
    wk_tenant_names(s->claim->tenant_id, &n);
    struct probes p = {.foreign = json_array()};
    wk_probes_init(&p.w);
    int nschemas = 0, nrels = 0;
    bool self_clean = false;
    PQclear(PQexec(c->db, "BEGIN"));
    enum tq_err err = own_probes(s, c, &n, &p, &self_clean);
    if (!err)
        err = other_schema_probes(s, c, &n, &p, self_clean, &nschemas);
    if (!err)
        err = platform_probes(s, c, &p, &nrels);
    if (!err)
        err = row_security_probes(s, c, &p);
    if (!err && p.lost) {
        snprintf(s->errstr, sizeof(s->errstr), "could not finish the isolation check as %s: %s",
                 c->user, PQerrorMessage(c->db));
        s->errstr[strcspn(s->errstr, "\n")] = '\0';
        err = TQ_ECONNECT;
    } else if (!err) {
        err = wk_probes_verdict(&p.w, s, c->user);
    }
    PQclear(PQexec(c->db, "ROLLBACK"));
    json_object_set_new(s->output, "user", json_string(c->user));
    json_object_set_new(s->output, "other_schemas_tried", json_integer(nschemas));
    json_object_set_new(s->output, "platform_relations_tried", json_integer(nrels));
    wk_probes_output(&p.w, s->output);
    json_object_set_new(s->output, "foreign_leaks", p.foreign);
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
