/*
 * Step "pg_tenant": the tenant's PostgreSQL footprint in the platform
 * database: a login role with a generated password, a schema it owns, and a
 * documents table with row-level security enabled and forced. The whole
 * effect is one transaction, so it is all there or not at all; running it
 * again re-asserts the same objects and rotates the password (one effect).
 * The password leaves this process only as a SCRAM verifier (to PostgreSQL)
 * and encrypted into the shared credentials store (worker/credentials.h);
 * it is never logged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../credentials.h"
#include "../worker.h"
#include "tq/log.h"
#include "tq/util.h"

#define PASSWORD_LEN 32

struct names {
    char schema[64];
    char role[64];
    char *q_schema;   /* quoted identifiers and literal, from libpq */
    char *q_role;
    char *q_table;
    char *l_tenant;
};

static void names_free(struct names *n)
{
    PQfreemem(n->q_schema);
    PQfreemem(n->q_role);
    free(n->q_table);
    PQfreemem(n->l_tenant);
}

static enum tq_err names_make(PGconn *c, const char *tenant_id, struct names *n,
                              char *errstr, size_t errlen)
{
    char ident[TQ_TENANT_ID_MAX + 1];
    tq_tenant_ident(tenant_id, ident, sizeof(ident));
    snprintf(n->schema, sizeof(n->schema), "t_%s", ident);
    snprintf(n->role, sizeof(n->role), "tq_t_%s", ident);
    n->q_schema = PQescapeIdentifier(c, n->schema, strlen(n->schema));
    n->q_role = PQescapeIdentifier(c, n->role, strlen(n->role));
    n->l_tenant = PQescapeLiteral(c, tenant_id, strlen(tenant_id));
    n->q_table = NULL;
    if (!n->q_schema || !n->q_role || !n->l_tenant) {
        snprintf(errstr, errlen, "could not quote names: %s", PQerrorMessage(c));
        return TQ_EPG;
    }
    n->q_table = tq_xasprintf("%s.documents", n->q_schema);
    return TQ_OK;
}

static enum tq_err run_sql(PGconn *c, const char *sql, const char *what,
                           char *errstr, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    enum tq_err err = TQ_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        snprintf(errstr, errlen, "could not %s: %s", what,
                 msg ? msg : PQerrorMessage(c));
        err = PQstatus(c) == CONNECTION_OK ? TQ_EPG : TQ_ECONNECT;
    }
    PQclear(r);
    return err;
}

/* The credentials go to the shared store inside the step's transaction. */
static enum tq_err deliver_secret(struct wk_step *ctx, PGconn *c, const char *role,
                                  const char *password)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "host", PQhost(c), "port",
                          PQport(c), "dbname", PQdb(c), "user", role, "password", password,
                          "schema", role + 3); /* "tq_t_x" -> "t_x" */
    enum tq_err err = wk_cred_put(ctx, c, "postgres", o);
    const char *pw = json_string_value(json_object_get(o, "password"));
    if (pw)
        memset((char *)pw, 0, strlen(pw));
    json_decref(o);
    return err;
}

static enum tq_err pg_tenant_run(struct wk_step *ctx, PGconn *c)
{
    struct names n;
    char password[PASSWORD_LEN + 1];
    char *verifier = NULL, *l_verifier = NULL;
    struct tq_buf sql;
    tq_buf_init(&sql);
    enum tq_err err = names_make(c, ctx->claim->tenant_id, &n, ctx->errstr,
                                 sizeof(ctx->errstr));
    if (err)
        goto out;
    if ((err = tq_random_password(password, PASSWORD_LEN))) {
        snprintf(ctx->errstr, sizeof(ctx->errstr), "could not read the OS random source");
        goto out;
    }
    /* Hash on our side: the plaintext never reaches the server or its logs. */
    verifier = PQencryptPasswordConn(c, password, n.role, "scram-sha-256");
    if (!verifier) {
        snprintf(ctx->errstr, sizeof(ctx->errstr), "could not hash the password: %s",
                 PQerrorMessage(c));
        err = TQ_EPG;
        goto out;
    }
    l_verifier = PQescapeLiteral(c, verifier, strlen(verifier));
    if (!l_verifier) {
        err = TQ_EPG;
        snprintf(ctx->errstr, sizeof(ctx->errstr), "could not quote the verifier");
        goto out;
    }

    PGresult *r;
    char *l_role = PQescapeLiteral(c, n.role, strlen(n.role));
    char *q = tq_xasprintf("SELECT 1 FROM pg_roles WHERE rolname = %s", l_role);
    PQfreemem(l_role);
    if ((err = run_sql(c, "BEGIN", "begin", ctx->errstr, sizeof(ctx->errstr)))) {
        free(q);
        goto out;
    }
    /* Serialise concurrent runs for one tenant (a redelivered job). */
    char *lock = tq_xasprintf("SELECT pg_advisory_xact_lock(hashtext('tq_tenant:' || %s))",
                              n.l_tenant);
    err = run_sql(c, lock, "lock the tenant", ctx->errstr, sizeof(ctx->errstr));
    free(lock);
    if (err) {
        free(q);
        goto rollback;
    }
    r = PQexec(c, q);
    free(q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(ctx->errstr, sizeof(ctx->errstr), "could not look up role: %s",
                 PQerrorMessage(c));
        PQclear(r);
        err = TQ_EPG;
        goto rollback;
    }
    bool exists = PQntuples(r) == 1;
    PQclear(r);

    tq_buf_printf(&sql, "%s ROLE %s LOGIN NOINHERIT NOCREATEDB NOCREATEROLE PASSWORD %s;",
                  exists ? "ALTER" : "CREATE", n.q_role, l_verifier);
    /* tq_worker is no superuser: with CREATEROLE (PG15) it may grant itself
       the role, which it needs to create objects owned by it. */
    tq_buf_printf(&sql, "GRANT %s TO CURRENT_USER;", n.q_role);
    tq_buf_printf(&sql, "CREATE SCHEMA IF NOT EXISTS %s AUTHORIZATION %s;", n.q_schema,
                  n.q_role);
    tq_buf_printf(&sql, "ALTER SCHEMA %s OWNER TO %s;", n.q_schema, n.q_role);
    tq_buf_printf(&sql, "REVOKE ALL ON SCHEMA %s FROM PUBLIC;", n.q_schema);
    tq_buf_printf(&sql,
                  "CREATE TABLE IF NOT EXISTS %s ("
                  " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                  " tenant_id text NOT NULL DEFAULT %s,"
                  " title text NOT NULL DEFAULT '',"
                  " body text NOT NULL DEFAULT '',"
                  " created_at timestamptz NOT NULL DEFAULT now());",
                  n.q_table, n.l_tenant);
    tq_buf_printf(&sql, "ALTER TABLE %s OWNER TO %s;", n.q_table, n.q_role);
    tq_buf_printf(&sql, "ALTER TABLE %s ENABLE ROW LEVEL SECURITY;", n.q_table);
    tq_buf_printf(&sql, "ALTER TABLE %s FORCE ROW LEVEL SECURITY;", n.q_table);
    tq_buf_printf(&sql, "DROP POLICY IF EXISTS tenant_isolation ON %s;", n.q_table);
    tq_buf_printf(&sql,
                  "CREATE POLICY tenant_isolation ON %s USING (tenant_id = %s)"
                  " WITH CHECK (tenant_id = %s);",
                  n.q_table, n.l_tenant, n.l_tenant);
    if ((err = run_sql(c, sql.data, "create the tenant's role, schema and table",
                       ctx->errstr, sizeof(ctx->errstr))))
        goto rollback;
    /* Deliver before commit (same transaction in the pg store): if delivery
       fails the role keeps its old password. */
    if ((err = deliver_secret(ctx, c, n.role, password)))
        goto rollback;
    if ((err = run_sql(c, "COMMIT", "commit", ctx->errstr, sizeof(ctx->errstr))))
        goto out;
    json_object_set_new(ctx->output, "schema", json_string(n.schema));
    json_object_set_new(ctx->output, "role", json_string(n.role));
    json_object_set_new(ctx->output, "table", json_string("documents"));
    json_object_set_new(ctx->output, "row_level_security", json_true());
    json_object_set_new(ctx->output, "role_existed", json_boolean(exists));
    json_object_set_new(ctx->output, "credentials", json_string("delivered"));
    goto out;
rollback:
    PQclear(PQexec(c, "ROLLBACK"));
out:
    memset(password, 0, sizeof(password));
    if (verifier)
        PQfreemem(verifier);
    if (l_verifier)
        PQfreemem(l_verifier);
    tq_buf_cleanup(&sql);
    names_free(&n);
    return err;
}

static enum tq_err pg_tenant_undo(struct wk_step *ctx, PGconn *c)
{
    struct names n;
    enum tq_err err = names_make(c, ctx->claim->tenant_id, &n, ctx->errstr,
                                 sizeof(ctx->errstr));
    if (!err) {
        /*
         * DROP OWNED BY also revokes privileges someone granted the role on
         * other objects (a widened grant would otherwise pin the role).
         * It fails for a missing role, hence the check inside the block.
         */
        char *l_role = PQescapeLiteral(c, n.role, strlen(n.role));
        char *sql = tq_xasprintf(
            "BEGIN;"
            " DO $tq$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s) THEN"
            "   EXECUTE 'GRANT ' || quote_ident(%s) || ' TO CURRENT_USER'; END IF; END $tq$;"
            " DROP SCHEMA IF EXISTS %s CASCADE;"
            " DO $tq$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s) THEN"
            "   EXECUTE 'DROP OWNED BY ' || quote_ident(%s); END IF; END $tq$;"
            " DROP ROLE IF EXISTS %s; COMMIT;",
            l_role, l_role, n.q_schema, l_role, l_role, n.q_role);
        PQfreemem(l_role);
        err = run_sql(c, sql, "drop the tenant's schema and role", ctx->errstr,
                      sizeof(ctx->errstr));
        free(sql);
        if (err)
            PQclear(PQexec(c, "ROLLBACK"));
    }
    if (!err)
        err = wk_cred_destroy(ctx, c, "postgres");
    names_free(&n);
    return err;
}

static enum tq_err pg_tenant_start(struct wk_step *s)
{
    return wk_step_blocking(s, s->undo ? pg_tenant_undo : pg_tenant_run);
}

const struct wk_step_ops wk_step_pg_tenant = {"pg_tenant", pg_tenant_start,
                                              wk_step_blocking_cancel};
