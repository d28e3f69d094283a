/*
 * The status names of tenants, jobs and steps, each from one table, so the
 * engine that writes them, the store that checks them and the CLI that
 * shows them cannot disagree (the migrations' CHECK constraints list the
 * same names). Names are the strings stored in PostgreSQL.
 */
#ifndef TQ_STATUS_H
#define TQ_STATUS_H

#include <stdbool.h>

/* X(NAME, "name", finished: nothing more happens without an operator) */
#define TQ_TENANT_STATUS_MAP(X)                              \
    X(PENDING_APPROVAL, "pending_approval", false)           \
    X(QUEUED,           "queued",           false)           \
    X(PROVISIONING,     "provisioning",     false)           \
    X(VALIDATING,       "validating",       false)           \
    X(ACTIVE,           "active",           true)            \
    X(REJECTED,         "rejected",         true)            \
    X(BLOCKED,          "blocked",          true)            \
    X(ROLLING_BACK,     "rolling_back",     false)           \
    X(FAILED,           "failed",           true)            \
    X(ROLLBACK_FAILED,  "rollback_failed",  true)            \
    X(CANCELLED,        "cancelled",        true)            \
    X(DEPROVISIONING,   "deprovisioning",   false)           \
    X(DEPROVISIONED,    "deprovisioned",    true)

/* X(NAME, "name") */
#define TQ_JOB_STATUS_MAP(X)                 \
    X(HELD,            "held")               \
    X(QUEUED,          "queued")             \
    X(RUNNING,         "running")            \
    X(SUCCEEDED,       "succeeded")          \
    X(FAILED,          "failed")             \
    X(CANCELLED,       "cancelled")          \
    X(DEAD,            "dead")               \
    X(BLOCKED,         "blocked")            \
    X(ROLLBACK_FAILED, "rollback_failed")

#define TQ_STEP_STATUS_MAP(X)                         \
    X(PENDING,             "pending")                 \
    X(RUNNING,             "running")                 \
    X(SUCCEEDED,           "succeeded")               \
    X(FAILED,              "failed")                  \
    X(SKIPPED,             "skipped")                 \
    X(COMPENSATED,         "compensated")             \
    X(COMPENSATION_FAILED, "compensation_failed")

/* TQ_TS_NONE / TQ_JS_NONE / TQ_SS_NONE: "no change" where a status is optional. */
enum tq_tenant_status {
    TQ_TS_NONE = 0,
#define X(n, s, f) TQ_TS_##n,
    TQ_TENANT_STATUS_MAP(X)
#undef X
};
enum tq_job_status {
    TQ_JS_NONE = 0,
#define X(n, s) TQ_JS_##n,
    TQ_JOB_STATUS_MAP(X)
#undef X
};
enum tq_step_status {
    TQ_SS_NONE = 0,
#define X(n, s) TQ_SS_##n,
    TQ_STEP_STATUS_MAP(X)
#undef X
};

/* The stored name; NULL for *_NONE or an unknown value. */
const char *tq_tenant_status_name(enum tq_tenant_status s);
const char *tq_job_status_name(enum tq_job_status s);
const char *tq_step_status_name(enum tq_step_status s);
/* The value of a stored name; *_NONE when name is NULL or unknown. */
enum tq_tenant_status tq_tenant_status_parse(const char *name);
enum tq_job_status tq_job_status_parse(const char *name);
enum tq_step_status tq_step_status_parse(const char *name);
/* A tenant status nothing changes without an operator (watch stops there). */
bool tq_tenant_status_finished(const char *name);

#endif
