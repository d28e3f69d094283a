/*
 * Approvers by role, approve/reject authorization and escalation
 * (tq/approvers.h). The rules live in PostgreSQL rows, so changing who may
 * approve is an operator action with an audit event, never a deploy.
 */
#include "tq/approvers.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"
#include "tq/config.h"
#include "tq/util.h"

bool tq_approver_role_valid(const char *role, char *why, size_t whylen)
{
    size_t n = role ? strlen(role) : 0;
    bool ok = n >= 1 && n <= 32 && role[0] >= 'a' && role[0] <= 'z' &&
              strspn(role, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
    if (!ok)
        snprintf(why, whylen, "a role is 1-32 of a-z, 0-9, '_' and '-', starting with a letter");
    return ok;
}

static void rollback(struct tq_pg *pg)
{
    PGconn *c = tq_pg_conn(pg);
    if (c && PQtransactionStatus(c) != PQTRANS_IDLE)
        PQclear(PQexec(c, "ROLLBACK"));
}

static enum tq_err change(struct tq_pg *pg, bool add, const char *role, const char *identity,
                          const char *by, bool *changed, char *errbuf, size_t errlen)
{
    *changed = false;
    char why[160];
    if (!tq_approver_role_valid(role, why, sizeof(why))) {
        snprintf(errbuf, errlen, "--role \"%.40s\": %s", role ? role : "", why);
        return TQ_EINVALID;
    }
    if (!identity || !*identity || strlen(identity) > TQ_APPROVER_ID_MAX) {
        snprintf(errbuf, errlen, "identity: must be 1-%d bytes", TQ_APPROVER_ID_MAX);
        return TQ_EINVALID;
    }
    enum tq_err err;
    PGresult *r = tq__pg_query(pg, &err, "begin", "BEGIN", 0, NULL);
    if (!r)
        goto fail;
    PQclear(r);
    const char *p[] = {role, identity, by};
    /* One statement: the row and its audit event, or neither. */
    r = tq__pg_query(pg, &err, add ? "add the approver" : "remove the approver",
                     add ? "WITH ch AS (INSERT INTO tq.approvers (role, identity, added_by)"
                           "  VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING role, identity)"
                           " INSERT INTO tq.audit_events (actor, event, detail)"
                           " SELECT $3, 'approver_added', jsonb_build_object('role', role,"
                           "   'identity', identity, 'db_user', session_user) FROM ch"
                         : "WITH ch AS (DELETE FROM tq.approvers WHERE role = $1 AND identity = $2"
                           "  RETURNING role, identity)"
                           " INSERT INTO tq.audit_events (actor, event, detail)"
                           " SELECT $3, 'approver_removed', jsonb_build_object('role', role,"
                           "   'identity', identity, 'db_user', session_user) FROM ch",
                     3, p);
    if (!r)
        goto fail;
    *changed = atoi(PQcmdTuples(r)) > 0;
    PQclear(r);
    r = tq__pg_query(pg, &err, "commit", "COMMIT", 0, NULL);
    if (!r)
        goto fail;
    PQclear(r);
    return TQ_OK;
fail:
    snprintf(errbuf, errlen, "%s", tq_pg_errstr(pg));
    rollback(pg);
    return err;
}

enum tq_err tq_approvers_add(struct tq_pg *pg, const char *role, const char *identity,
                             const char *by, bool *added, char *errbuf, size_t errlen)
{
    return change(pg, true, role, identity, by, added, errbuf, errlen);
}

enum tq_err tq_approvers_remove(struct tq_pg *pg, const char *role, const char *identity,
                                const char *by, char *errbuf, size_t errlen)
{
    bool removed = false;
    enum tq_err err = change(pg, false, role, identity, by, &removed, errbuf, errlen);
    if (!err && !removed) {
        snprintf(errbuf, errlen, "\"%.200s\" does not hold role %s: nothing removed", identity,
                 role);
        return TQ_ENOTFOUND;
    }
    return err;
}

enum tq_err tq_approvers_list(struct tq_pg *pg, const char *role, json_t **out, char *errbuf,
                              size_t errlen)
{
    *out = NULL;
    enum tq_err err;
    const char *p[] = {role};
    PGresult *r = tq__pg_query(pg, &err, "list the approvers",
                               "SELECT coalesce(json_agg(json_build_object('role', role,"
                               " 'identity', identity, 'added_at', added_at, 'added_by', added_by)"
                               " ORDER BY role, identity), '[]')::text FROM tq.approvers"
                               " WHERE $1::text IS NULL OR role = $1",
                               1, p);
    if (!r) {
        snprintf(errbuf, errlen, "%s", tq_pg_errstr(pg));
        return err;
    }
    *out = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
    PQclear(r);
    if (!*out) {
        snprintf(errbuf, errlen, "could not read the approvers: the answer was not JSON");
        return TQ_EPG;
    }
    return TQ_OK;
}

enum tq_err tq_approval_authorize(struct tq_pg *pg, const char *tenant_id, const char *identity,
                                  bool approve, char *role, size_t rolelen, char *errbuf,
                                  size_t errlen)
{
    if (rolelen)
        role[0] = '\0';
    enum tq_err err;
    const char *p[] = {tenant_id, identity};
    PGresult *r = tq__pg_query(
        pg, &err, "read the approval policy",
        "SELECT t.owner, t.tier, p.role, lower(t.owner) = lower($2),"
        "  EXISTS (SELECT 1 FROM tq.approvers a WHERE a.role = p.role AND a.identity = $2)"
        " FROM tq.tenants t LEFT JOIN tq.approval_policy p ON p.tier = t.tier"
        " WHERE t.tenant_id = $1",
        2, p);
    if (!r) {
        snprintf(errbuf, errlen, "%s", tq_pg_errstr(pg));
        return err;
    }
    const char *verb = approve ? "approve" : "reject";
    if (PQntuples(r) == 0) {
        PQclear(r);
        snprintf(errbuf, errlen, "no such tenant");
        return TQ_ENOTFOUND;
    }
    if (PQgetisnull(r, 0, 2)) {
        snprintf(errbuf, errlen, "cannot %s: no approval policy names a role for tier %s "
                 "(tq.approval_policy); nobody may decide", verb, PQgetvalue(r, 0, 1));
        PQclear(r);
        return TQ_ECONFLICT;
    }
    snprintf(role, rolelen, "%s", PQgetvalue(r, 0, 2));
    bool own = PQgetvalue(r, 0, 3)[0] == 't';
    bool holds = PQgetvalue(r, 0, 4)[0] == 't';
    err = TQ_OK;
    if (approve && own)
        err = TQ_ECONFLICT, snprintf(errbuf, errlen, "cannot approve: --by \"%.200s\" is the "
                                     "requester (owner) of this request, and the requester "
                                     "can never approve their own request", identity);
    else if (!holds)
        err = TQ_ECONFLICT, snprintf(errbuf, errlen, "cannot %s: --by \"%.200s\" does not hold "
                                     "role %s, which tier %s requests need (tq-enqueue "
                                     "approvers list --role %s)", verb, identity,
                                     PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 1),
                                     PQgetvalue(r, 0, 2));
    PQclear(r);
    return err;
}

enum tq_err tq_approvals_escalate(struct tq_pg *pg, const char *queue, uint32_t after_s,
                                  const char *actor, size_t *n)
{
    *n = 0;
    char secs[16];
    snprintf(secs, sizeof(secs), "%" PRIu32, after_s);
    const char *p[] = {queue, secs, actor};
    enum tq_err err;
    /* The row update and its audit event in one statement: both or neither. */
    PGresult *r = tq__pg_query(
        pg, &err, "escalate pending approvals",
        "WITH due AS (SELECT tenant_id FROM tq.tenants"
        "   WHERE status = 'pending_approval' AND coalesce(queue, '" TQ_DEFAULT_QUEUE "') = $1"
        "   AND coalesce(escalated_at, created_at) <= now() - make_interval(secs => $2::int)"
        "   ORDER BY created_at LIMIT 100 FOR UPDATE SKIP LOCKED),"
        " up AS (UPDATE tq.tenants t SET escalated_at = now(), escalations = t.escalations + 1"
        "   FROM due WHERE t.tenant_id = due.tenant_id"
        "   RETURNING t.tenant_id, t.tier, t.budget, t.created_at, t.escalations)"
        " INSERT INTO tq.audit_events (tenant_id, job_id, actor, event, detail)"
        " SELECT up.tenant_id, (SELECT max(j.id) FROM tq.jobs j WHERE j.tenant_id = up.tenant_id"
        "   AND j.status = 'held'), $3, 'approval_escalated',"
        "   jsonb_build_object('escalation', up.escalations, 'pending_since', up.created_at,"
        "   'after_s', $2::int, 'role', p.role, 'tier', up.tier, 'budget', up.budget)"
        " FROM up LEFT JOIN tq.approval_policy p ON p.tier = up.tier",
        3, p);
    if (!r)
        return err;
    *n = (size_t)atoi(PQcmdTuples(r));
    PQclear(r);
    return TQ_OK;
}
