/*
 * A tenant request and the domain rules of docs/design.md §1: id format, tier
 * budget bands, region allow-list, approval threshold, and the per-tier
 * facts later steps carry into the tenant's config. Pure functions: no I/O.
 */
#ifndef TQ_REQUEST_H
#define TQ_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "tq/err.h"

#define TQ_TENANT_ID_MAX 40
#define TQ_NAME_MAX 100
#define TQ_OWNER_MAX 254
#define TQ_JUSTIFICATION_MAX 2000
#define TQ_LAKH 100000LL

struct tq_tier_info {
    const char *name;              /* "Gold" */
    int64_t budget_min_inr;        /* inclusive */
    int64_t budget_max_inr;        /* inclusive */
    int documents_per_month;
    int queries_per_minute;
    bool advanced_search, custom_models, real_time_indexing;
    const char *model;
    int archive_after_days;
    int vector_replicas;
    int p95_sla_ms;
};

/* NULL when tier is not one of Gold, Silver, Bronze (exact spelling). */
const struct tq_tier_info *tq_tier_lookup(const char *tier);
/* 0 Gold, 1 Silver, 2 Bronze; -1 for anything else. */
int tq_tier_index(const char *tier);

/* Fields are owned by the struct; tq_request_cleanup() frees them. */
struct tq_request {
    char *tenant_id;
    char *name;
    char *tier;
    char *region;
    int64_t budget_inr;
    bool budget_set;
    char *budget_text;     /* as given, kept so tq_request_check can name its problem */
    char *owner;
    char *justification;   /* may be NULL */
};

/* Which field broke which rule, for the user: "budget", "must be ...". */
struct tq_field_error {
    char field[32];
    char rule[256];
    bool malformed;   /* missing, or not of the field's form (not a number, not a
                         string): the CLI's usage error; otherwise a broken rule */
};

struct tq_rules {
    const char *const *regions;   /* allow-list */
    size_t nregions;
    int64_t approval_threshold_inr;   /* the fleet's (TQ_APPROVAL_THRESHOLD) */
    bool regions_mapped;          /* the allow-list is the region map (TQ_REGIONS_FILE) */
    /* A tier's own threshold from the approval policy (tq.approval_policy),
       used instead of the fleet's where bit i of tier_threshold_set is on;
       i is the tier's index: tq_tier_index(). */
    int64_t tier_threshold_inr[3];
    unsigned tier_threshold_set;
};

void tq_request_cleanup(struct tq_request *r);

/*
 * Set one field by its CSV/JSON name (tenant_id, name, tier, region, budget,
 * owner, justification) from text. TQ_EINVALID with fe filled when the name
 * is unknown or the budget is not a whole number.
 */
enum tq_err tq_request_set(struct tq_request *r, const char *field,
                           const char *value, size_t len,
                           struct tq_field_error *fe);

/*
 * Check every rule of every field. Fills fe[0..max) with the problems in
 * field order (tenant_id, name, tier, region, budget, owner, justification)
 * and returns how many there are (possibly more than max). A budget that
 * tq_request_set refused is reported here too.
 */
size_t tq_request_check(const struct tq_request *r, const struct tq_rules *rules,
                        struct tq_field_error *fe, size_t max);

/* Check every rule; TQ_EINVALID with the first broken rule in fe. */
enum tq_err tq_request_validate(const struct tq_request *r,
                                const struct tq_rules *rules,
                                struct tq_field_error *fe);

bool tq_request_needs_approval(const struct tq_request *r,
                               const struct tq_rules *rules);

/*
 * Build from a JSON object with the field names above (budget: integer),
 * setting every field it can. Fills fe[0..max) with each key it could not
 * take (unknown, wrong JSON type, NUL bytes) and returns how many.
 */
size_t tq_request_load_json(const json_t *obj, struct tq_request *r,
                            struct tq_field_error *fe, size_t max);

/* Build from a JSON object with the field names above (budget: integer). */
enum tq_err tq_request_from_json(const json_t *obj, struct tq_request *r,
                                 struct tq_field_error *fe);

/* Tenant id → SQL-friendly stem: "acme-corp" → "acme_corp". out >= 41 bytes. */
void tq_tenant_ident(const char *tenant_id, char *out, size_t outlen);

/*
 * The tenant id rule for new tenants: ^[a-z][a-z0-9-]{2,39}$ with no "--"
 * and no '-' at the end.
 */
bool tq_tenant_id_valid(const char *s);

/*
 * What is wrong with free text of len bytes, or NULL: NUL bytes, invalid
 * UTF-8, C0/C1 control characters (newline and tab allowed when multiline),
 * invisible or direction-changing characters (zero-width, bidi controls),
 * or nothing but whitespace. The answer is a static rule text.
 */
const char *tq_text_problem(const char *s, size_t len, bool multiline);

/* True when s is valid UTF-8 of exactly len bytes with no NUL. */
bool tq_utf8_valid(const char *s, size_t len);

#endif
