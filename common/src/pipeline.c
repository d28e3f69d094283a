/*
 * Pipeline loading and validation (docs/design.md §4). Every rule a pipeline can
 * break is checked here, once, so the CLI refuses a bad file at submit and a
 * worker never meets one. Templates are checked here and rendered by steps.
 */
#include "tq/pipeline.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq/util.h"

const char *const tq_step_kinds[] = {
    "pg_tenant", "noop", "sleep", "redis_acl", "s3_bucket", "http", "exec", "tenant_config",
    "notify", "check_pg", "check_redis", "check_s3", "check_audit",
    "check_vector", "check_tags", "auth_token", "check_auth", "check_monitoring", NULL};

static const char *const class_names[] = {
    [TQ_CLASS_NONE] = "none",
    [TQ_CLASS_SECURITY] = "security",
    [TQ_CLASS_INTEGRATION] = "integration",
    [TQ_CLASS_PERFORMANCE] = "performance",
    [TQ_CLASS_COMPLIANCE] = "compliance",
};

const char *tq_step_class_name(enum tq_step_class c)
{
    return (size_t)c < sizeof(class_names) / sizeof(class_names[0])
               ? class_names[c]
               : "none";
}

void tq_pipeline_free(struct tq_pipeline *p)
{
    if (!p)
        return;
    json_decref(p->doc);
    free(p->steps);
    free(p->order);
    free(p->text);
    free(p);
}

static const char *const template_vars[] = {
#define X(id, name) [TQ_TV_##id] = name,
    TQ_TEMPLATE_VARS(X)
#undef X
};

enum tq_template_var tq_template_var(const char *v, size_t n)
{
    if (n > 4 && strncmp(v, "env.", 4) == 0) {
        for (size_t i = 4; i < n; i++) {
            char c = v[i];
            if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
                return TQ_TV_UNKNOWN;
        }
        return TQ_TV_ENV;
    }
    for (size_t i = 1; i < sizeof(template_vars) / sizeof(template_vars[0]); i++)
        if (strlen(template_vars[i]) == n && strncmp(template_vars[i], v, n) == 0)
            return (enum tq_template_var)i;
    return TQ_TV_UNKNOWN;
}

/* "tenant.id, tenant.ident, ..., env.NAME": the known variables, for errors. */
static const char *known_vars(void)
{
    static const char list[] =
#define X(id, name) name ", "
        TQ_TEMPLATE_VARS(X)
#undef X
        "env.NAME";
    return list;
}

/* Walk s; for each ${var} call emit(var) or fail. Shared by check and render. */
static enum tq_err template_walk(const char *s, struct tq_buf *out,
                                 tq_template_lookup_cb *lookup, void *arg,
                                 char *errbuf, size_t errlen)
{
    const char *p = s;
    while (*p) {
        const char *d = strstr(p, "${");
        if (!d) {
            if (out)
                tq_buf_puts(out, p);
            break;
        }
        if (out)
            tq_buf_append(out, p, (size_t)(d - p));
        const char *end = strchr(d + 2, '}');
        if (!end) {
            snprintf(errbuf, errlen, "unterminated \"${\" in \"%s\"", s);
            return TQ_EINVALID;
        }
        size_t n = (size_t)(end - (d + 2));
        if (tq_template_var(d + 2, n) == TQ_TV_UNKNOWN) {
            snprintf(errbuf, errlen, "unknown template variable \"${%.*s}\" (known: %s)",
                     (int)(n > 64 ? 64 : n), d + 2, known_vars());
            return TQ_EINVALID;
        }
        if (out) {
            char var[128];
            snprintf(var, sizeof(var), "%.*s", (int)(n < 127 ? n : 127), d + 2);
            const char *val = lookup(var, arg);
            if (!val) {
                if (strncmp(var, "region.", 7) == 0)
                    snprintf(errbuf, errlen, "template variable \"${%s}\" has no value: the "
                             "tenant's region has no entry in the region map (TQ_REGIONS_FILE)",
                             var);
                else
                    snprintf(errbuf, errlen, "template variable \"${%s}\" has no value",
                             var);
                return TQ_EINVALID;
            }
            tq_buf_puts(out, val);
        }
        p = end + 1;
    }
    return TQ_OK;
}

enum tq_err tq_template_check(const char *s, char *errbuf, size_t errlen)
{
    return template_walk(s, NULL, NULL, NULL, errbuf, errlen);
}

char *tq_template_render(const char *s, tq_template_lookup_cb *lookup,
                         void *arg, char *errbuf, size_t errlen)
{
    struct tq_buf b;
    tq_buf_init(&b);
    if (template_walk(s, &b, lookup, arg, errbuf, errlen)) {
        tq_buf_cleanup(&b);
        return NULL;
    }
    return tq_buf_take(&b, NULL);
}

/* Check every string inside a params/undo value. */
static enum tq_err check_templates(const json_t *v, char *errbuf, size_t errlen)
{
    if (json_is_string(v))
        return tq_template_check(json_string_value(v), errbuf, errlen);
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            enum tq_err err = check_templates(x, errbuf, errlen);
            if (err)
                return err;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            enum tq_err err = check_templates(x, errbuf, errlen);
            if (err)
                return err;
        }
    }
    return TQ_OK;
}

struct ctx {
    const char *source;
    char *errbuf;
    size_t errlen;
};

static enum tq_err bad(struct ctx *c, const char *step, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum tq_err bad(struct ctx *c, const char *step, const char *fmt, ...)
{
    char rule[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rule, sizeof(rule), fmt, ap);
    va_end(ap);
    if (step)
        snprintf(c->errbuf, c->errlen, "%s: step \"%s\": %s", c->source, step,
                 rule);
    else
        snprintf(c->errbuf, c->errlen, "%s: %s", c->source, rule);
    return TQ_EINVALID;
}

static enum tq_err get_u32(struct ctx *c, const char *step, const json_t *obj,
                           const char *key, uint32_t dflt, uint32_t min,
                           uint32_t max, uint32_t *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = dflt;
        return TQ_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min ||
        json_integer_value(v) > max)
        return bad(c, step, "\"%s\" must be an integer from %u to %u", key, min,
                   max);
    *out = (uint32_t)json_integer_value(v);
    return TQ_OK;
}

static bool valid_step_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > TQ_STEP_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

/*
 * "limit": {"key": "terraform:${tenant.region}", "max": 2}. Every rule the
 * object breaks is named in one message.
 */
static enum tq_err parse_limit(struct ctx *c, struct tq_pipeline_step *s, const json_t *lim)
{
    if (!lim)
        return TQ_OK;
    if (!json_is_object(lim))
        return bad(c, s->name, "\"limit\" must be an object such as {\"key\": "
                               "\"terraform:${tenant.region}\", \"max\": 2}");
    char why[600] = "";
    size_t used = 0;
#define WHY(...)                                                                     \
    do {                                                                             \
        if (used < sizeof(why))                                                      \
            used += (size_t)snprintf(why + used, sizeof(why) - used, "%s", used ? "; " : ""); \
        if (used < sizeof(why))                                                      \
            used += (size_t)snprintf(why + used, sizeof(why) - used, __VA_ARGS__);   \
    } while (0)
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)lim, key, v) {
        if (strcmp(key, "key") != 0 && strcmp(key, "max") != 0)
            WHY("unknown field \"%.40s\" (known: key, max)", key);
    }
    const json_t *k = json_object_get(lim, "key");
    if (!json_is_string(k) || json_string_length(k) == 0 ||
        json_string_length(k) > TQ_LIMIT_KEY_MAX) {
        WHY("\"key\" is required: a string of 1 to %d characters (a template such as "
            "\"terraform:${tenant.region}\")", TQ_LIMIT_KEY_MAX);
    } else {
        char terr[512];
        if (tq_template_check(json_string_value(k), terr, sizeof(terr)))
            WHY("\"key\": %s", terr);
    }
    const json_t *m = json_object_get(lim, "max");
    if (!json_is_integer(m) || json_integer_value(m) < 1 ||
        json_integer_value(m) > TQ_LIMIT_MAX)
        WHY("\"max\" is required: an integer from 1 to %d", TQ_LIMIT_MAX);
#undef WHY
    if (why[0])
        return bad(c, s->name, "limit: %s", why);
    s->limit_key = json_string_value(k);
    s->limit_max = (uint32_t)json_integer_value(m);
    return TQ_OK;
}

static enum tq_err parse_params(struct ctx *c, struct tq_pipeline_step *s, const json_t *js);
static enum tq_err parse_policy(struct ctx *c, struct tq_pipeline_step *s, const json_t *js);

static enum tq_err parse_step(struct ctx *c, struct tq_pipeline *p, size_t i,
                              const json_t *js)
{
    struct tq_pipeline_step *s = &p->steps[i];
    char label[32];
    snprintf(label, sizeof(label), "#%zu", i + 1);
    if (!json_is_object(js))
        return bad(c, label, "must be a JSON object");
    const json_t *name = json_object_get(js, "name");
    if (!json_is_string(name))
        return bad(c, label, "\"name\" is required and must be a string");
    s->name = json_string_value(name);
    if (!valid_step_name(s->name))
        return bad(c, label,
                   "\"name\" must be 1-63 characters of a-z, 0-9, '_' or '-'");
    for (size_t k = 0; k < i; k++)
        if (strcmp(p->steps[k].name, s->name) == 0)
            return bad(c, s->name, "the name is used by another step");

    const char *known[] = {"name", "kind", "needs", "params", "retry",
                           "timeout_ms", "class", "undo", "description", "enabled", "limit",
                           NULL};
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)js, key, v) {
        size_t k = 0;
        while (known[k] && strcmp(known[k], key) != 0)
            k++;
        if (!known[k])
            return bad(c, s->name, "unknown field \"%s\"", key);
    }

    const json_t *kind = json_object_get(js, "kind");
    if (!json_is_string(kind))
        return bad(c, s->name, "\"kind\" is required and must be a string");
    s->kind = json_string_value(kind);
    size_t k = 0;
    while (tq_step_kinds[k] && strcmp(tq_step_kinds[k], s->kind) != 0)
        k++;
    if (!tq_step_kinds[k])
        return bad(c, s->name, "unknown kind \"%s\"", s->kind);

    enum tq_err err = parse_params(c, s, js);
    if (!err)
        err = parse_limit(c, s, json_object_get(js, "limit"));
    if (!err)
        err = parse_policy(c, s, js);
    return err;
}

/* params and undo (templates checked), and the "enabled" template. */
static enum tq_err parse_params(struct ctx *c, struct tq_pipeline_step *s, const json_t *js)
{
    s->params = json_object_get(js, "params");
    if (s->params && !json_is_object(s->params))
        return bad(c, s->name, "\"params\" must be an object");
    if (!s->params) {
        json_object_set_new((json_t *)js, "params", json_object());
        s->params = json_object_get(js, "params");
    }
    s->undo = json_object_get(js, "undo");
    if (s->undo && !json_is_object(s->undo))
        return bad(c, s->name, "\"undo\" must be an object");
    char terr[512];
    if (check_templates(s->params, terr, sizeof(terr)) ||
        (s->undo && check_templates(s->undo, terr, sizeof(terr))))
        return bad(c, s->name, "%s", terr);

    const json_t *en = json_object_get(js, "enabled");
    if (en) {
        if (!json_is_string(en))
            return bad(c, s->name, "\"enabled\" must be a template string such as "
                                   "\"${env.TQ_S3_ENDPOINT}\"");
        if (tq_template_check(json_string_value(en), terr, sizeof(terr)))
            return bad(c, s->name, "enabled: %s", terr);
        s->enabled = json_string_value(en);
    }
    return TQ_OK;
}

/* retry, timeout_ms and class: what a failure of the step means. */
static enum tq_err parse_policy(struct ctx *c, struct tq_pipeline_step *s, const json_t *js)
{
    const json_t *retry = json_object_get(js, "retry");
    s->retry = TQ_RETRY_DEFAULT;
    if (retry) {
        if (!json_is_object(retry))
            return bad(c, s->name, "\"retry\" must be an object");
        enum tq_err err;
        if ((err = get_u32(c, s->name, retry, "max_attempts", 3, 1, 100,
                           &s->retry.max_attempts)) ||
            (err = get_u32(c, s->name, retry, "base_ms", 1000, 1, 3600000,
                           &s->retry.base_ms)) ||
            (err = get_u32(c, s->name, retry, "max_ms", 30000, 1, 86400000,
                           &s->retry.max_ms)))
            return err;
        if (s->retry.max_ms < s->retry.base_ms)
            return bad(c, s->name, "retry \"max_ms\" must be >= \"base_ms\"");
    }
    enum tq_err err = get_u32(c, s->name, js, "timeout_ms", 300000, 1, 86400000,
                              &s->timeout_ms);
    if (err)
        return err;

    const json_t *cls = json_object_get(js, "class");
    s->cls = TQ_CLASS_NONE;
    if (cls) {
        size_t n = sizeof(class_names) / sizeof(class_names[0]);
        size_t m = 0;
        while (m < n && !(json_is_string(cls) &&
                          strcmp(class_names[m], json_string_value(cls)) == 0))
            m++;
        if (m == n)
            return bad(c, s->name,
                       "\"class\" must be one of none, security, integration, "
                       "performance, compliance");
        s->cls = (enum tq_step_class)m;
    }
    return TQ_OK;
}

static enum tq_err resolve_needs(struct ctx *c, struct tq_pipeline *p, size_t i,
                                 const json_t *js)
{
    struct tq_pipeline_step *s = &p->steps[i];
    const json_t *needs = json_object_get(js, "needs");
    if (!needs)
        return TQ_OK;
    if (!json_is_array(needs))
        return bad(c, s->name, "\"needs\" must be an array of step names");
    size_t k;
    json_t *n;
    json_array_foreach(needs, k, n) {
        if (!json_is_string(n))
            return bad(c, s->name, "\"needs\" must be an array of step names");
        size_t m = 0;
        while (m < p->nsteps && strcmp(p->steps[m].name, json_string_value(n)) != 0)
            m++;
        if (m == p->nsteps)
            return bad(c, s->name, "needs \"%s\", which is not a step",
                       json_string_value(n));
        if (m == i)
            return bad(c, s->name, "needs itself");
        for (size_t d = 0; d < s->nneeds; d++)
            if (s->needs[d] == m)
                return bad(c, s->name, "needs \"%s\" twice", p->steps[m].name);
        s->needs[s->nneeds++] = m;
    }
    return TQ_OK;
}

/* Kahn's algorithm; a leftover step sits on a cycle. */
static enum tq_err topo_sort(struct ctx *c, struct tq_pipeline *p)
{
    size_t indeg[TQ_PIPELINE_MAX_STEPS] = {0};
    for (size_t i = 0; i < p->nsteps; i++)
        indeg[i] = p->steps[i].nneeds;
    p->order = tq_xcalloc(p->nsteps, sizeof(size_t));
    size_t done = 0;
    bool placed[TQ_PIPELINE_MAX_STEPS] = {false};
    while (done < p->nsteps) {
        size_t pick = p->nsteps;
        for (size_t i = 0; i < p->nsteps && pick == p->nsteps; i++)
            if (!placed[i] && indeg[i] == 0)
                pick = i;
        if (pick == p->nsteps) {
            for (size_t i = 0; i < p->nsteps; i++)
                if (!placed[i])
                    return bad(c, p->steps[i].name,
                               "is part of a cycle in \"needs\"");
        }
        placed[pick] = true;
        p->order[done++] = pick;
        for (size_t i = 0; i < p->nsteps; i++)
            for (size_t d = 0; d < p->steps[i].nneeds; d++)
                if (p->steps[i].needs[d] == pick)
                    indeg[i]--;
    }
    return TQ_OK;
}

enum tq_err tq_pipeline_parse(const char *text, size_t len, const char *source,
                              struct tq_pipeline **out, char *errbuf,
                              size_t errlen)
{
    struct ctx c = {source ? source : "pipeline", errbuf, errlen};
    *out = NULL;
    if (len > TQ_PIPELINE_MAX_BYTES)
        return bad(&c, NULL, "is larger than %d bytes", TQ_PIPELINE_MAX_BYTES);
    struct tq_pipeline *p = tq_xcalloc(1, sizeof(*p));
    p->text = tq_xmalloc(len + 1);
    memcpy(p->text, text, len);
    p->text[len] = '\0';
    tq_sha256_hex(text, len, p->hash);

    enum tq_err err = TQ_OK;
    json_error_t jerr;
    p->doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!p->doc) {
        snprintf(errbuf, errlen, "%s:%d:%d: invalid JSON: %s", c.source,
                 jerr.line, jerr.column, jerr.text);
        err = TQ_EBADJOB;
        goto out;
    }
    if (!json_is_object(p->doc)) {
        err = bad(&c, NULL, "must be a JSON object");
        goto out;
    }
    const json_t *name = json_object_get(p->doc, "name");
    if (!json_is_string(name) || !json_string_length(name)) {
        err = bad(&c, NULL, "\"name\" is required and must be a string");
        goto out;
    }
    p->name = json_string_value(name);
    const json_t *steps = json_object_get(p->doc, "steps");
    if (!json_is_array(steps) || json_array_size(steps) == 0) {
        err = bad(&c, NULL, "\"steps\" must be a non-empty array");
        goto out;
    }
    if (json_array_size(steps) > TQ_PIPELINE_MAX_STEPS) {
        err = bad(&c, NULL, "has more than %d steps", TQ_PIPELINE_MAX_STEPS);
        goto out;
    }
    p->nsteps = json_array_size(steps);
    p->steps = tq_xcalloc(p->nsteps, sizeof(*p->steps));
    for (size_t i = 0; i < p->nsteps && !err; i++)
        err = parse_step(&c, p, i, json_array_get(steps, i));
    for (size_t i = 0; i < p->nsteps && !err; i++)
        err = resolve_needs(&c, p, i, json_array_get(steps, i));
    if (!err)
        err = topo_sort(&c, p);
out:
    if (err) {
        tq_pipeline_free(p);
        return err;
    }
    *out = p;
    return TQ_OK;
}

enum tq_err tq_pipeline_load(const char *path, struct tq_pipeline **out,
                             char *errbuf, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    *out = NULL;
    enum tq_err err = tq_read_file(path, TQ_PIPELINE_MAX_BYTES, &text, &len);
    if (err) {
        snprintf(errbuf, errlen, "cannot read pipeline \"%s\": %s", path,
                 err == TQ_ENOTFOUND ? "no such file"
                 : err == TQ_EINVALID ? "file is too large"
                                      : "read error");
        return err == TQ_EIO ? TQ_EIO : TQ_EINVALID;
    }
    err = tq_pipeline_parse(text, len, path, out, errbuf, errlen);
    free(text);
    return err;
}
