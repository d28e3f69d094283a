/*
 * Approval governance (docs/security.md "Approvals"): approvers by role in
 * PostgreSQL (tq.approvers), the policy naming the role each tier's
 * requests need (tq.approval_policy: data, beside TQ_APPROVAL_THRESHOLD),
 * the authorization of approve/reject, and the escalation of requests left
 * pending too long. Every change writes an audit event in its own
 * transaction: approver_added, approver_removed, approval_escalated.
 *
 * Only the admin account (tq_migrate) may change tq.approvers; the CLI's
 * and the worker's accounts may read it (the database refuses the rest).
 * All functions: one connection, the caller's thread; errbuf says what
 * failed and why.
 */
#ifndef TQ_APPROVERS_H
#define TQ_APPROVERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "tq/err.h"
#include "tq/pg.h"

#define TQ_APPROVER_ID_MAX 200

/* A role name: ^[a-z][a-z0-9_-]{0,31}$. false with why filled otherwise. */
bool tq_approver_role_valid(const char *role, char *why, size_t whylen);

/*
 * Give identity the role (audit approver_added, actor by). *added is false
 * when it already held it (nothing written). TQ_ESQL when the database
 * refuses the account (only the admin account may).
 */
enum tq_err tq_approvers_add(struct tq_pg *pg, const char *role, const char *identity,
                             const char *by, bool *added, char *errbuf, size_t errlen);
/* Take the role away (audit approver_removed); TQ_ENOTFOUND when not held. */
enum tq_err tq_approvers_remove(struct tq_pg *pg, const char *role, const char *identity,
                                const char *by, char *errbuf, size_t errlen);
/* [{"role", "identity", "added_at", "added_by"}] of role (NULL: every role); caller decrefs. */
enum tq_err tq_approvers_list(struct tq_pg *pg, const char *role, json_t **out, char *errbuf,
                              size_t errlen);

/*
 * Inside the caller's transaction, after it locked the tenant: may identity
 * approve (approve true) or reject tenant_id's request? TQ_OK, or
 * TQ_ECONFLICT with errbuf naming the rule: the requester (owner) never
 * approves their own request; identity must hold the role
 * tq.approval_policy names for the tenant's tier. *role gets that role.
 */
enum tq_err tq_approval_authorize(struct tq_pg *pg, const char *tenant_id, const char *identity,
                                  bool approve, char *role, size_t rolelen, char *errbuf,
                                  size_t errlen);

/*
 * Escalate the requests of queue pending approval for more than after_s
 * seconds since submit, or since their last escalation: one audit event
 * approval_escalated each (actor), escalated_at and escalations updated in
 * the same statement, rows another caller holds skipped, so many workers
 * may run it at once and each request is escalated once per period.
 * *n gets how many were escalated.
 */
enum tq_err tq_approvals_escalate(struct tq_pg *pg, const char *queue, uint32_t after_s,
                                  const char *actor, size_t *n);

#endif
