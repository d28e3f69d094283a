/*
 * Step "check_tags" (a compliance check): the cost tags on every resource a
 * step created through a SaaS API with a tag field (the vector-DB
 * namespace, the dashboard), read back from that API. The bucket's are
 * check_s3's "cost_tags"; this kind expects the same five: TenantID, Tier,
 * CostCenter (rag-platform-<tier>), ManagedBy (tenantq) and Environment
 * (params.environment, else TQ_ENVIRONMENT, else "dev", as s3_bucket).
 * Params: environment, resources: [{"name", "url" (GET it), "token",
 * "field" (dotted path to the tags object in the answer, e.g.
 * "config.tags"), "enabled" (a resource whose enabled renders empty is
 * skipped, as a step's would be)}]. A missing or wrong tag, or an absent
 * resource, fails the step naming the resource, the tag and the expected
 * value; the output lists found, missing and wrong per resource.
 * Run: GETs only. Undo: nothing.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../step.h"
#include "tq/request.h"
#include "tq/util.h"

#define NTAGS 5

struct run {
    struct wk_step *s;
    struct wk_jh h;
    size_t i;               /* resource being read */
    const json_t *resources;
    char want[NTAGS][128];
    json_t *report;         /* {name: {...}} */
    char msg[sizeof(((struct wk_step *)0)->errstr)];
    size_t ml;
    bool bad;
};

static const char *const keys[NTAGS] = {"TenantID", "Tier", "CostCenter", "ManagedBy",
                                        "Environment"};

static void on_answer(struct wk_jh *h, void *arg);

static void finish(struct run *r, enum tq_err err)
{
    struct wk_step *s = r->s;
    s->kind_data = NULL;
    if (!err) {
        json_object_set_new(s->output, "check", json_string("cost_tags"));
        json_object_set_new(s->output, "resources", json_incref(r->report));
        if (r->bad) {
            snprintf(s->errstr, sizeof(s->errstr), "%s", r->msg);
            err = TQ_ESTEP;
        }
    }
    wk_jh_cleanup(&r->h);
    json_decref(r->report);
    free(r);
    wk_step_done(s, err);
}

static void complain(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void complain(struct run *r, const char *fmt, ...)
{
    r->bad = true;
    if (r->ml >= sizeof(r->msg) - 1)
        return;
    if (r->ml)
        r->ml += (size_t)snprintf(r->msg + r->ml, sizeof(r->msg) - r->ml, "; ");
    if (r->ml >= sizeof(r->msg) - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(r->msg + r->ml, sizeof(r->msg) - r->ml, fmt, ap);
    va_end(ap);
    r->ml += n > 0 ? (size_t)n : 0;
    if (r->ml > sizeof(r->msg) - 1)
        r->ml = sizeof(r->msg) - 1;
}

static const json_t *at_path(const json_t *v, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    char *save = NULL;
    for (char *part = strtok_r(buf, ".", &save); part && v; part = strtok_r(NULL, ".", &save))
        v = json_object_get(v, part);
    return v;
}

static void compare(struct run *r, const char *name, const json_t *tags)
{
    json_t *found = json_is_object(tags) ? json_deep_copy(tags) : json_object();
    json_t *missing = json_array(), *wrong = json_array();
    for (int k = 0; k < NTAGS; k++) {
        const char *have = json_string_value(json_object_get(found, keys[k]));
        if (have && strcmp(have, r->want[k]) == 0)
            continue;
        json_array_append_new(have ? wrong : missing, json_string(keys[k]));
        if (have)
            complain(r, "%s: tag %s is \"%.40s\", expected \"%.40s\"", name, keys[k], have,
                     r->want[k]);
        else
            complain(r, "%s: tag %s is missing (expected \"%.40s\")", name, keys[k], r->want[k]);
    }
    json_object_set_new(r->report, name, json_pack("{s:o, s:o, s:o}", "found", found, "missing",
                                                   missing, "wrong", wrong));
}

static enum tq_err next(struct run *r)
{
    struct wk_step *s = r->s;
    for (; r->i < json_array_size(r->resources); r->i++) {
        const json_t *res = json_array_get(r->resources, r->i);
        const char *name = json_string_value(json_object_get(res, "name"));
        const char *url = json_string_value(json_object_get(res, "url"));
        const json_t *en = json_object_get(res, "enabled");
        if (!name || !url || !json_is_string(json_object_get(res, "field"))) {
            snprintf(s->errstr, sizeof(s->errstr), "params.resources[%zu] needs name, url and "
                     "field", r->i);
            return TQ_EINVALID;
        }
        const char *env = json_string_value(en);
        if (en && (!env || !*env || strcmp(env, "false") == 0 || strcmp(env, "0") == 0)) {
            json_object_set_new(r->report, name, json_pack("{s:s}", "skipped", "not enabled"));
            continue;
        }
        char what[96];
        snprintf(what, sizeof(what), "GET %s", name);
        return wk_jh_send(&r->h, what, "GET", url,
                          json_string_value(json_object_get(res, "token")), NULL, 10000,
                          on_answer, r);
    }
    finish(r, TQ_OK);
    return TQ_OK;
}

static void on_answer(struct wk_jh *h, void *arg)
{
    struct run *r = arg;
    const json_t *res = json_array_get(r->resources, r->i);
    const char *name = json_string_value(json_object_get(res, "name"));
    enum tq_err err = wk_jh_result(h);
    if (err && h->status == 404) {
        complain(r, "%s does not exist (HTTP 404)", name);
        json_object_set_new(r->report, name, json_pack("{s:b}", "exists", 0));
    } else if (err) {
        finish(r, err);
        return;
    } else {
        compare(r, name, at_path(h->json, json_string_value(json_object_get(res, "field"))));
    }
    r->i++;
    err = next(r);
    if (err)
        finish(r, err);
}

static enum tq_err start(struct wk_step *s)
{
    if (s->undo) {   /* reading tags changed nothing */
        wk_step_done(s, TQ_OK);
        return TQ_OK;
    }
    const json_t *res = json_object_get(s->params, "resources");
    if (!json_is_array(res) || json_array_size(res) == 0) {
        snprintf(s->errstr, sizeof(s->errstr), "params.resources must be a non-empty array");
        return TQ_EINVALID;
    }
    if (!tq_tier_lookup(s->claim->tier)) {
        snprintf(s->errstr, sizeof(s->errstr), "cannot check tags for tier \"%.20s\": not Gold, "
                 "Silver or Bronze", s->claim->tier);
        return TQ_EINVALID;
    }
    struct run *r = tq_xcalloc(1, sizeof(*r));
    r->s = s;
    r->resources = res;
    r->report = json_object();
    wk_jh_init(&r->h, s);
    const char *env = json_string_value(json_object_get(s->params, "environment"));
    if (!env || !*env)
        env = s->set->environment ? s->set->environment : "dev";
    snprintf(r->want[0], sizeof(r->want[0]), "%s", s->claim->tenant_id);
    snprintf(r->want[1], sizeof(r->want[1]), "%s", s->claim->tier);
    snprintf(r->want[2], sizeof(r->want[2]), "rag-platform-%s", s->claim->tier);
    for (char *p = r->want[2]; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    snprintf(r->want[3], sizeof(r->want[3]), "tenantq");
    snprintf(r->want[4], sizeof(r->want[4]), "%s", env);
    s->kind_data = r;
    enum tq_err err = next(r);
    if (err && s->kind_data) {   /* not started: no done call */
        s->kind_data = NULL;
        wk_jh_cleanup(&r->h);
        json_decref(r->report);
        free(r);
    }
    return err;
}

static void cancel(struct wk_step *s)
{
    struct run *r = s->kind_data;
    if (r && !wk_jh_abort(&r->h)) {
        snprintf(s->errstr, sizeof(s->errstr), "cancelled");
        finish(r, TQ_ECANCELED);
    }
}

const struct wk_step_ops wk_step_check_tags = {"check_tags", start, cancel};
