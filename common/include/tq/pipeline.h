/*
 * The pipeline model (docs/design.md §4): a JSON document of steps forming a DAG.
 * Loading validates every rule and reports the file, the step and the rule;
 * a loaded pipeline is immutable and safe to share between threads.
 *
 * Document:
 *   {"name": "tenant-provision", "version": 1,
 *    "steps": [{"name": "pg", "kind": "pg_tenant", "needs": [],
 *               "params": {...}, "retry": {"max_attempts": 3,
 *               "base_ms": 500, "max_ms": 10000}, "timeout_ms": 60000,
 *               "class": "none", "undo": {...},
 *               "enabled": "${env.TQ_S3_ENDPOINT}",
 *               "limit": {"key": "terraform:${tenant.region}", "max": 2}}]}
 */
#ifndef TQ_PIPELINE_H
#define TQ_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "tq/err.h"
#include "tq/retry.h"

#define TQ_PIPELINE_MAX_BYTES (1024 * 1024)
#define TQ_PIPELINE_MAX_STEPS 64
#define TQ_STEP_NAME_MAX 63
#define TQ_LIMIT_KEY_MAX 200      /* characters of a limit's key template */
#define TQ_LIMIT_MAX 10000        /* largest "max" of a limit */

enum tq_step_class {
    TQ_CLASS_NONE,
    TQ_CLASS_SECURITY,
    TQ_CLASS_INTEGRATION,
    TQ_CLASS_PERFORMANCE,
    TQ_CLASS_COMPLIANCE,
};

struct tq_pipeline_step {
    const char *name;        /* borrowed from the pipeline's JSON */
    const char *kind;
    const json_t *params;    /* object, never NULL */
    const json_t *undo;      /* object or NULL */
    size_t needs[TQ_PIPELINE_MAX_STEPS];   /* indexes of earlier-run steps */
    size_t nneeds;
    struct tq_retry_policy retry;
    uint32_t timeout_ms;
    enum tq_step_class cls;
    const char *enabled;     /* template; the step runs only if it renders non-empty
                                and not "false"/"0"; NULL = always */
    const char *limit_key;   /* "limit": {"key": template, "max": n}: at most limit_max
                                steps with the rendered key run at once in the whole
                                fleet (worker/limits.c); NULL = no limit */
    uint32_t limit_max;
};

struct tq_pipeline {
    char hash[65];           /* SHA-256 of the file's bytes */
    char *text;              /* the file's bytes, NUL-terminated */
    const char *name;
    json_t *doc;
    struct tq_pipeline_step *steps;
    size_t nsteps;
    size_t *order;           /* a topological order of step indexes */
};

/* Step kinds a pipeline may name; NULL-terminated. */
extern const char *const tq_step_kinds[];

/*
 * Parse and validate. source names the file in messages. On error returns
 * TQ_EINVALID (or TQ_EBADJOB for malformed JSON) and errbuf reads like
 * `pipeline.json: step "pg": needs "x", which is not a step`.
 * On success *out is owned by the caller (tq_pipeline_free).
 */
enum tq_err tq_pipeline_parse(const char *text, size_t len,
                              const char *source, struct tq_pipeline **out,
                              char *errbuf, size_t errlen);
enum tq_err tq_pipeline_load(const char *path, struct tq_pipeline **out,
                             char *errbuf, size_t errlen);
void tq_pipeline_free(struct tq_pipeline *p);

const char *tq_step_class_name(enum tq_step_class c);

/*
 * Template variables: ${tenant.id}, ${tenant.ident}, ${tenant.name},
 * ${tenant.tier}, ${tenant.region}, ${tenant.owner}, ${job.id}, ${env.NAME},
 * and the tier's facts ${tier.documents_per_month}, ${tier.queries_per_minute},
 * ${tier.vector_replicas}, ${tier.archive_after_days}, ${tier.p95_sla_ms},
 * ${tier.model}, ${tier.cost_center}. A JSON string that is exactly one
 * numeric variable renders as a JSON number.
 * lookup returns the value (borrowed) or NULL for an unknown variable.
 */
typedef const char *tq_template_lookup_cb(const char *var, void *arg);

/*
 * Every template variable, once: the check at submit and the worker's lookup
 * both use this table (add a variable here, and its value in
 * worker/template.c, which the compiler then asks for). X(ID, "name").
 */
#define TQ_TEMPLATE_VARS(X)                                          \
    X(TENANT_ID,               "tenant.id")                          \
    X(TENANT_IDENT,            "tenant.ident")                       \
    X(TENANT_NAME,             "tenant.name")                        \
    X(TENANT_TIER,             "tenant.tier")                        \
    X(TENANT_REGION,           "tenant.region")                      \
    X(TENANT_OWNER,            "tenant.owner")                       \
    X(JOB_ID,                  "job.id")                             \
    X(TIER_DOCUMENTS_PER_MONTH, "tier.documents_per_month")          \
    X(TIER_QUERIES_PER_MINUTE, "tier.queries_per_minute")            \
    X(TIER_VECTOR_REPLICAS,    "tier.vector_replicas")               \
    X(TIER_ARCHIVE_AFTER_DAYS, "tier.archive_after_days")            \
    X(TIER_P95_SLA_MS,         "tier.p95_sla_ms")                    \
    X(TIER_MODEL,              "tier.model")                         \
    X(TIER_COST_CENTER,        "tier.cost_center")               \
    X(FLEET_ENVIRONMENT,       "fleet.environment")                  \
    X(REGION_S3_REGION,        "region.s3_region")                   \
    X(REGION_S3_ENDPOINT,      "region.s3_endpoint")                 \
    X(REGION_VECTOR_URL,       "region.vector_url")                  \
    X(REGION_DASHBOARD_URL,    "region.dashboard_url")

/* TQ_TV_ENV: env.NAME (NAME of A-Z, 0-9, '_'); TQ_TV_UNKNOWN: no such variable. */
enum tq_template_var {
    TQ_TV_UNKNOWN = 0,
#define X(id, name) TQ_TV_##id,
    TQ_TEMPLATE_VARS(X)
#undef X
    TQ_TV_ENV
};
/* The variable named by the n bytes at v. */
enum tq_template_var tq_template_var(const char *v, size_t n);

/* True when every ${...} in s is well formed and names a known variable. */
enum tq_err tq_template_check(const char *s, char *errbuf, size_t errlen);
/* Render s; caller frees. NULL when a variable is unknown (errbuf says which). */
char *tq_template_render(const char *s, tq_template_lookup_cb *lookup,
                         void *arg, char *errbuf, size_t errlen);

#endif
