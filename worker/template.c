/*
 * Step parameters: the ${...} variables of a job (tenant fields, the tier's
 * facts, the tenant's region from the region map, job id, environment) and
 * a params tree rendered with them.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "tq/log.h"
#include "tq/regions.h"
#include "tq/retry.h"
#include "tq/util.h"

/* The region map, set once at start before any job runs, read-only after. */
static const struct tq_regions *region_map;

void wk_template_set_regions(const struct tq_regions *m)
{
    region_map = m;
}

static const char *environment = "dev";

void wk_template_set_environment(const char *env)
{
    environment = env && *env ? env : "dev";
}

/* A tier's number as text in buf; NULL for an unknown tier. */
static const char *tier_number(const struct tq_tier_info *t, int v, char *buf, size_t len)
{
    if (!t)
        return NULL;
    snprintf(buf, len, "%d", v);
    return buf;
}

const char *wk_template_lookup(const char *var, void *arg)
{
    const struct tq_claim *c = arg;
    static _Thread_local char buf[64];
    const struct tq_tier_info *t = tq_tier_lookup(c->tier);
    enum tq_template_var v = tq_template_var(var, strlen(var));
    switch (v) {
    case TQ_TV_UNKNOWN:
        return NULL;
    case TQ_TV_TENANT_ID:
        return c->tenant_id;
    case TQ_TV_TENANT_IDENT:
        tq_tenant_ident(c->tenant_id, buf, sizeof(buf));
        return buf;
    case TQ_TV_TENANT_NAME:
        return c->name;
    case TQ_TV_TENANT_TIER:
        return c->tier;
    case TQ_TV_TENANT_REGION:
        return c->region;
    case TQ_TV_TENANT_OWNER:
        return c->owner;
    case TQ_TV_JOB_ID:
        snprintf(buf, sizeof(buf), "%" PRId64, c->job_id);
        return buf;
    case TQ_TV_TIER_DOCUMENTS_PER_MONTH:
        return tier_number(t, t ? t->documents_per_month : 0, buf, sizeof(buf));
    case TQ_TV_TIER_QUERIES_PER_MINUTE:
        return tier_number(t, t ? t->queries_per_minute : 0, buf, sizeof(buf));
    case TQ_TV_TIER_VECTOR_REPLICAS:
        return tier_number(t, t ? t->vector_replicas : 0, buf, sizeof(buf));
    case TQ_TV_TIER_ARCHIVE_AFTER_DAYS:
        return tier_number(t, t ? t->archive_after_days : 0, buf, sizeof(buf));
    case TQ_TV_TIER_P95_SLA_MS:
        return tier_number(t, t ? t->p95_sla_ms : 0, buf, sizeof(buf));
    case TQ_TV_FLEET_ENVIRONMENT:
        return environment;
    case TQ_TV_TIER_MODEL:
        return t ? t->model : NULL;
    case TQ_TV_TIER_COST_CENTER:
        if (!t)
            return NULL;
        snprintf(buf, sizeof(buf), "rag-platform-%s", t->name);
        for (char *p = buf; *p; p++)
            *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
        return buf;
    case TQ_TV_REGION_S3_REGION:
    case TQ_TV_REGION_S3_ENDPOINT:
    case TQ_TV_REGION_VECTOR_URL:
    case TQ_TV_REGION_DASHBOARD_URL: {
        /* No entry (or no map): no value, so the step fails; never a fleet default. */
        const struct tq_region *r = tq_regions_find(region_map, c->region);
        return r ? tq_region_field(r, var + 7) : NULL;
    }
    case TQ_TV_ENV: {
        const char *e = getenv(var + 4);
        return e ? e : "";   /* unset reads as empty: "enabled" turns the step off */
    }
    }
    return NULL;
}

json_t *wk_template_render_json(const json_t *v, const struct tq_claim *c, char *errbuf, size_t errlen)
{
    if (json_is_string(v)) {
        const char *in = json_string_value(v);
        char *s = tq_template_render(in, wk_template_lookup, (void *)c, errbuf, errlen);
        if (!s)
            return NULL;
        /* "${tier.vector_replicas}" alone: a number, as APIs expect */
        json_t *out = NULL;
        if (strncmp(in, "${tier.", 7) == 0 && strchr(in, '}') == in + strlen(in) - 1 &&
            *s && strspn(s, "0123456789") == strlen(s))
            out = json_integer(strtoll(s, NULL, 10));
        if (!out)
            out = json_string(s);
        free(s);
        return out;
    }
    if (json_is_object(v)) {
        json_t *o = json_object();
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            json_t *r = wk_template_render_json(x, c, errbuf, errlen);
            if (!r) {
                json_decref(o);
                return NULL;
            }
            json_object_set_new(o, k, r);
        }
        return o;
    }
    if (json_is_array(v)) {
        json_t *a = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            json_t *r = wk_template_render_json(x, c, errbuf, errlen);
            if (!r) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, r);
        }
        return a;
    }
    return json_deep_copy(v);
}
