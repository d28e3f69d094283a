/*
 * Step "pg_tenant": the tenant's PostgreSQL footprint in the platform
 * database, owned so that the tenant cannot widen it:
 *   tq_o_<ident>  NOLOGIN role that owns the schema and every object in it;
 *                 the worker's own role is made a member (PostgreSQL lets
 *                 only members of a role give it objects);
 *   tq_t_<ident>  the tenant's LOGIN role, with a generated password, member
 *                 of no role: USAGE on the schema and SELECT, INSERT, UPDATE,
 *                 DELETE on its table, nothing more (no CREATE, no grant
 *                 option: it cannot GRANT to PUBLIC, ALTER, DISABLE ROW LEVEL
 *                 SECURITY or drop the policy, all of which need ownership);
 *   t_<ident>     the schema; PUBLIC keeps no privilege on it or its table;
 *   documents     row-level security enabled and forced, one policy limiting
 *                 rows to the tenant's id.
 * The whole effect is one transaction, so it is all there or not at all;
 * running it again re-asserts the same objects, ownership and grants (a
 * schema an older version gave to the login role moves to the owner role),
 * and rotates the password (one effect). The password leaves this process
 * only as a SCRAM verifier (to PostgreSQL) and encrypted into the shared
 * credentials store (worker/credentials.h), written inside the step's
 * transaction; it is never logged. A worker that is no superuser (tq_worker,
 * CREATEROLE) grants itself the owner role, which PostgreSQL requires to
 * give the role objects; it is never a member of the login role.
 * Undo: drop the schema, then both roles (DROP OWNED BY first, which also
 * revokes grants someone gave them elsewhere).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../step.h"
#include "tq/log.h"
#include "tq/redact.h"
#include "tq/util.h"

#define PASSWORD_LEN 32

/* The tenant's names, quoted by libpq for this connection. */
struct names {
    struct wk_tenant_names n;
    char *q_schema;
    char *q_role;
    char *q_owner;
    char *q_table;
    char *l_tenant;   /* the tenant id as a literal */
    char *l_role;     /* role names as literals */
    char *l_owner;
};

static void names_free(struct names *n)
{
    PQfreemem(n->q_schema);
    PQfreemem(n->q_role);
    PQfreemem(n->q_owner);
    free(n->q_table);
    PQfreemem(n->l_tenant);
    PQfreemem(n->l_role);
    PQfreemem(n->l_owner);
}

static enum tq_err names_make(PGconn *c, const char *tenant_id, struct names *q,
                              char *errstr, size_t errlen)
{
    memset(q, 0, sizeof(*q));
    wk_tenant_names(tenant_id, &q->n);
    const struct wk_tenant_names *n = &q->n;
    q->q_schema = PQescapeIdentifier(c, n->schema, strlen(n->schema));
    q->q_role = PQescapeIdentifier(c, n->role, strlen(n->role));
    q->q_owner = PQescapeIdentifier(c, n->owner, strlen(n->owner));
    q->l_tenant = PQescapeLiteral(c, tenant_id, strlen(tenant_id));
    q->l_role = PQescapeLiteral(c, n->role, strlen(n->role));
    q->l_owner = PQescapeLiteral(c, n->owner, strlen(n->owner));
    if (!q->q_schema || !q->q_role || !q->q_owner || !q->l_tenant || !q->l_role || !q->l_owner) {
        snprintf(errstr, errlen, "could not quote the tenant's names: %s", PQerrorMessage(c));
        errstr[strcspn(errstr, "\n")] = '\0';
        return TQ_EPG;
    }
    q->q_table = tq_xasprintf("%s.documents", q->q_schema);
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

/* Does role (a literal) exist? -1 when the lookup failed (errstr set). */
static int role_exists(PGconn *c, const char *l_role, char *errstr, size_t errlen)
{
    char *q = tq_xasprintf("SELECT 1 FROM pg_roles WHERE rolname = %s", l_role);
    PGresult *r = PQexec(c, q);
    free(q);
    int n = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        n = PQntuples(r) == 1;
    } else {
        const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        snprintf(errstr, errlen, "could not look up role: %s", msg ? msg : PQerrorMessage(c));
        errstr[strcspn(errstr, "\n")] = '\0';
    }
    PQclear(r);
    return n;
}

/* The SQL that (re-)asserts the owner role, the login role and their objects. */
static void footprint_sql(struct tq_buf *sql, const struct names *q, bool owner_exists,
                          bool login_exists, const char *l_verifier)
{
    /* SUPERUSER, REPLICATION and BYPASSRLS are off by default and only a
       superuser may touch them (tq_worker may not even name them); check_pg
       verifies them. */
    tq_buf_printf(sql, "%s ROLE %s NOLOGIN NOINHERIT NOCREATEDB NOCREATEROLE;",
                  owner_exists ? "ALTER" : "CREATE", q->q_owner);
    /* Members may give a role objects; a superuser needs no membership. */
    tq_buf_printf(sql, "DO $tq$ BEGIN IF NOT (SELECT rolsuper FROM pg_roles"
                       " WHERE rolname = current_user) AND NOT pg_has_role(current_user, %s,"
                       " 'MEMBER') THEN EXECUTE 'GRANT ' || quote_ident(%s) || ' TO '"
                       " || quote_ident(current_user); END IF; END $tq$;",
                  q->l_owner, q->l_owner);
    tq_buf_printf(sql, "%s ROLE %s LOGIN NOINHERIT NOCREATEDB NOCREATEROLE PASSWORD %s;",
                  login_exists ? "ALTER" : "CREATE", q->q_role, l_verifier);
    /* The login role is a member of no role (it would inherit nothing, but SET ROLE works). */
    tq_buf_printf(sql, "DO $tq$ DECLARE g text; BEGIN FOR g IN SELECT quote_ident(r.rolname)"
                       " FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
                       " WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = %s) LOOP"
                       " EXECUTE 'REVOKE ' || g || ' FROM ' || quote_ident(%s); END LOOP;"
                       " END $tq$;",
                  q->l_role, q->l_role);
    tq_buf_printf(sql, "CREATE SCHEMA IF NOT EXISTS %s AUTHORIZATION %s;", q->q_schema,
                  q->q_owner);
    tq_buf_printf(sql, "ALTER SCHEMA %s OWNER TO %s;", q->q_schema, q->q_owner);
    tq_buf_printf(sql, "REVOKE ALL ON SCHEMA %s FROM PUBLIC, %s;", q->q_schema, q->q_role);
    tq_buf_printf(sql, "GRANT USAGE ON SCHEMA %s TO %s;", q->q_schema, q->q_role);
    tq_buf_printf(sql,
                  "CREATE TABLE IF NOT EXISTS %s ("
                  " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                  " tenant_id text NOT NULL DEFAULT %s,"
                  " title text NOT NULL DEFAULT '',"
                  " body text NOT NULL DEFAULT '',"
                  " created_at timestamptz NOT NULL DEFAULT now());",
                  q->q_table, q->l_tenant);
    tq_buf_printf(sql, "ALTER TABLE %s OWNER TO %s;", q->q_table, q->q_owner);
    tq_buf_printf(sql, "REVOKE ALL ON TABLE %s FROM PUBLIC, %s;", q->q_table, q->q_role);
    tq_buf_printf(sql, "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %s TO %s;", q->q_table,
                  q->q_role);
    tq_buf_printf(sql, "ALTER TABLE %s ENABLE ROW LEVEL SECURITY;", q->q_table);
    tq_buf_printf(sql, "ALTER TABLE %s FORCE ROW LEVEL SECURITY;", q->q_table);
    tq_buf_printf(sql, "DROP POLICY IF EXISTS tenant_isolation ON %s;", q->q_table);
    tq_buf_printf(sql,
                  "CREATE POLICY tenant_isolation ON %s USING (tenant_id = %s)"
                  " WITH CHECK (tenant_id = %s);",
                  q->q_table, q->l_tenant, q->l_tenant);
}

static enum tq_err pg_tenant_run(struct wk_step *ctx, PGconn *c)
{
    struct names q;
    char password[PASSWORD_LEN + 1] = "";
    char *verifier = NULL, *l_verifier = NULL;
    const char *tenant = ctx->claim->tenant_id;
    struct tq_buf sql;
    tq_buf_init(&sql);
    enum tq_err err = names_make(c, tenant, &q, ctx->errstr, sizeof(ctx->errstr));
    if (err)
        goto out;
    if ((err = tq_random_password(password, PASSWORD_LEN))) {
        snprintf(ctx->errstr, sizeof(ctx->errstr), "could not read the OS random source");
        goto out;
    }
    tq_redact_add(password);   /* masked out of anything logged while the step runs */
    /* Hash on our side: the plaintext never reaches the server or its logs. */
    verifier = PQencryptPasswordConn(c, password, q.n.role, "scram-sha-256");
    if (!verifier) {
        snprintf(ctx->errstr, sizeof(ctx->errstr), "could not hash the password: %s",
                 PQerrorMessage(c));
        ctx->errstr[strcspn(ctx->errstr, "\n")] = '\0';
        err = TQ_EPG;
        goto out;
    }
    l_verifier = PQescapeLiteral(c, verifier, strlen(verifier));
    if (!l_verifier) {
        err = TQ_EPG;
        snprintf(ctx->errstr, sizeof(ctx->errstr), "could not quote the verifier");
        goto out;
    }

    if ((err = run_sql(c, "BEGIN", "begin", ctx->errstr, sizeof(ctx->errstr))))
        goto out;
    /* Serialise concurrent runs for one tenant (a redelivered job). */
    char *lock = tq_xasprintf("SELECT pg_advisory_xact_lock(hashtext('tq_tenant:' || %s))",
                              q.l_tenant);
    err = run_sql(c, lock, "lock the tenant", ctx->errstr, sizeof(ctx->errstr));
    free(lock);
    if (err)
        goto rollback;
    int owner_exists = role_exists(c, q.l_owner, ctx->errstr, sizeof(ctx->errstr));
    int login_exists = owner_exists < 0 ? -1
                       : role_exists(c, q.l_role, ctx->errstr, sizeof(ctx->errstr));
    if (login_exists < 0) {
        err = PQstatus(c) == CONNECTION_OK ? TQ_EPG : TQ_ECONNECT;
        goto rollback;
    }
    footprint_sql(&sql, &q, owner_exists, login_exists, l_verifier);
    if ((err = run_sql(c, sql.data, "create the tenant's roles, schema and table",
                       ctx->errstr, sizeof(ctx->errstr))))
        goto rollback;
    /* Delivered in the same transaction (pg store): the role's password and
       the stored one change together or not at all. */
    json_t *cred = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "host", PQhost(c), "port",
                             PQport(c), "dbname", PQdb(c), "user", q.n.role, "password",
                             password, "schema", q.n.schema);
    err = wk_cred_put(ctx, c, "postgres", cred);
    json_decref(cred);   /* jansson's copy of the password is freed, not wiped: it is const */
    if (err)
        goto rollback;
    if ((err = run_sql(c, "COMMIT", "commit", ctx->errstr, sizeof(ctx->errstr))))
        goto out;
    json_object_set_new(ctx->output, "schema", json_string(q.n.schema));
    json_object_set_new(ctx->output, "role", json_string(q.n.role));
    json_object_set_new(ctx->output, "owner", json_string(q.n.owner));
    json_object_set_new(ctx->output, "table", json_string("documents"));
    json_object_set_new(ctx->output, "row_level_security", json_true());
    json_object_set_new(ctx->output, "role_existed", json_boolean(login_exists));
    json_object_set_new(ctx->output, "credentials", json_string("delivered"));
    goto out;
rollback:
    PQclear(PQexec(c, "ROLLBACK"));
out:
    if (password[0])
        tq_redact_remove(password);
    memset(password, 0, sizeof(password));
    if (verifier) {
        memset(verifier, 0, strlen(verifier));
        PQfreemem(verifier);
    }
    if (l_verifier)
        PQfreemem(l_verifier);
    tq_buf_cleanup(&sql);
    names_free(&q);
    return err;
}

static enum tq_err pg_tenant_undo(struct wk_step *ctx, PGconn *c)
{
    struct names q;
    enum tq_err err = names_make(c, ctx->claim->tenant_id, &q, ctx->errstr,
                                 sizeof(ctx->errstr));
    if (!err) {
        /*
         * DROP OWNED BY also revokes privileges someone granted the roles on
         * other objects (a widened grant would otherwise pin a role). It
         * needs the role's privileges: a worker that is no superuser grants
         * itself each role first (both go at the end of this transaction).
         * A missing role is skipped, hence the checks inside the block.
         */
        char *sql = tq_xasprintf(
            "BEGIN;"
            " DO $tq$ DECLARE r text; BEGIN FOREACH r IN ARRAY ARRAY[%s, %s] LOOP"
            "   IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN"
            "     IF NOT pg_has_role(current_user, r, 'USAGE') THEN"
            "       EXECUTE 'GRANT ' || quote_ident(r) || ' TO CURRENT_USER'; END IF;"
            "     EXECUTE 'DROP OWNED BY ' || quote_ident(r); END IF; END LOOP; END $tq$;"
            " DROP SCHEMA IF EXISTS %s CASCADE;"
            " DROP ROLE IF EXISTS %s; DROP ROLE IF EXISTS %s; COMMIT;",
            q.l_role, q.l_owner, q.q_schema, q.q_role, q.q_owner);
        err = run_sql(c, sql, "drop the tenant's schema and roles", ctx->errstr,
                      sizeof(ctx->errstr));
        free(sql);
        if (err)
            PQclear(PQexec(c, "ROLLBACK"));
    }
    if (!err)
        err = wk_cred_destroy(ctx, c, "postgres");
    names_free(&q);
    return err;
}

static enum tq_err pg_tenant_start(struct wk_step *s)
{
    return wk_step_blocking(s, s->undo ? pg_tenant_undo : pg_tenant_run);
}

const struct wk_step_ops wk_step_pg_tenant = {"pg_tenant", pg_tenant_start,
                                              wk_step_blocking_cancel};
