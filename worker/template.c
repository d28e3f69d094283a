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

const char *wk_template_lookup(const char *var, void *arg)
{
    const struct tq_claim *c = arg;
    static _Thread_local char buf[64];
    if (strcmp(var, "tenant.id") == 0)
        return c->tenant_id;
    if (strcmp(var, "tenant.ident") == 0) {
        tq_tenant_ident(c->tenant_id, buf, sizeof(buf));
        return buf;
    }
    if (strcmp(var, "tenant.name") == 0)
        return c->name;
    if (strcmp(var, "tenant.tier") == 0)
        return c->tier;
    if (strcmp(var, "tenant.region") == 0)
        return c->region;
    if (strcmp(var, "tenant.owner") == 0)
        return c->owner;
    if (strcmp(var, "job.id") == 0) {
        snprintf(buf, sizeof(buf), "%" PRId64, c->job_id);
        return buf;
    }
    if (strncmp(var, "tier.", 5) == 0) {
        const struct tq_tier_info *t = tq_tier_lookup(c->tier);
        if (!t)
            return NULL;
        const char *f = var + 5;
        if (strcmp(f, "model") == 0)
            return t->model;
        if (strcmp(f, "cost_center") == 0) {
            snprintf(buf, sizeof(buf), "rag-platform-%s", t->name);
            for (char *p = buf; *p; p++)
                *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
            return buf;
        }
        int v = strcmp(f, "documents_per_month") == 0 ? t->documents_per_month
              : strcmp(f, "queries_per_minute") == 0  ? t->queries_per_minute
              : strcmp(f, "vector_replicas") == 0     ? t->vector_replicas
              : strcmp(f, "archive_after_days") == 0  ? t->archive_after_days
              : strcmp(f, "p95_sla_ms") == 0          ? t->p95_sla_ms
                                                      : -1;
        if (v < 0)
            return NULL;
        snprintf(buf, sizeof(buf), "%d", v);
        return buf;
    }
    if (strncmp(var, "region.", 7) == 0) {
        /* No entry (or no map): no value, so the step fails; never a fleet default. */
        const struct tq_region *r = tq_regions_find(region_map, c->region);
        return r ? tq_region_field(r, var + 7) : NULL;
    }
    if (strncmp(var, "env.", 4) == 0) {
        const char *v = getenv(var + 4);
        return v ? v : "";   /* unset reads as empty: "enabled" turns the step off */
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
