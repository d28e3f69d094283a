/*
 * Request validation: every rule of DESIGN.md §1 lives here so that the CLI,
 * the batch loader and tests agree. Messages name the field and the rule.
 */
#include "tq/request.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq/util.h"

static const struct tq_tier_info tiers[] = {
    {"Gold", 5 * TQ_LAKH, 15 * TQ_LAKH, 10000, 100, true, true, true, "gpt-4",
     90, 3, 500},
    {"Silver", 2 * TQ_LAKH, 5 * TQ_LAKH, 5000, 50, false, false, true,
     "gpt-3.5-turbo", 60, 2, 1000},
    {"Bronze", 1, 2 * TQ_LAKH - 1, 2000, 50, false, false, false,
     "gpt-3.5-turbo", 30, 1, 2000},
};

const struct tq_tier_info *tq_tier_lookup(const char *tier)
{
    for (size_t i = 0; tier && i < sizeof(tiers) / sizeof(tiers[0]); i++)
        if (strcmp(tiers[i].name, tier) == 0)
            return &tiers[i];
    return NULL;
}

void tq_request_cleanup(struct tq_request *r)
{
    free(r->tenant_id);
    free(r->name);
    free(r->tier);
    free(r->region);
    free(r->owner);
    free(r->justification);
    memset(r, 0, sizeof(*r));
}

static enum tq_err fail(struct tq_field_error *fe, const char *field,
                        const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum tq_err fail(struct tq_field_error *fe, const char *field,
                        const char *fmt, ...)
{
    if (fe) {
        snprintf(fe->field, sizeof(fe->field), "%s", field);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(fe->rule, sizeof(fe->rule), fmt, ap);
        va_end(ap);
    }
    return TQ_EINVALID;
}

bool tq_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned c = *p;
        size_t n;
        uint32_t cp;
        if (c == 0)
            return false;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, cp = c & 0x07;
        } else {
            return false;
        }
        if ((size_t)(end - p) <= n)
            return false;
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        /* overlong forms, surrogates and values past U+10FFFF */
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) ||
            (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        p += n + 1;
    }
    return true;
}

static bool has_control(const char *s, bool allow_newline)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == 0x7F || (*p < 0x20 && !(allow_newline && (*p == '\n' || *p == '\t'))))
            return true;
    }
    return false;
}

static enum tq_err parse_budget(const char *v, size_t len, int64_t *out,
                                struct tq_field_error *fe)
{
    if (len == 0 || len > 18)
        return fail(fe, "budget",
                    "must be a whole number of INR from 1 to 1500000");
    for (size_t i = 0; i < len; i++)
        if (v[i] < '0' || v[i] > '9')
            return fail(fe, "budget",
                        "must be a whole number of INR (digits only, no sign, "
                        "separators or decimals)");
    char buf[20];
    memcpy(buf, v, len);
    buf[len] = '\0';
    errno = 0;
    long long n = strtoll(buf, NULL, 10);
    if (errno)
        return fail(fe, "budget", "is out of range");
    *out = n;
    return TQ_OK;
}

enum tq_err tq_request_set(struct tq_request *r, const char *field,
                           const char *value, size_t len,
                           struct tq_field_error *fe)
{
    char **slot = NULL;
    if (strcmp(field, "budget") == 0) {
        enum tq_err err = parse_budget(value, len, &r->budget_inr, fe);
        if (!err)
            r->budget_set = true;
        return err;
    }
    if (strcmp(field, "tenant_id") == 0)
        slot = &r->tenant_id;
    else if (strcmp(field, "name") == 0)
        slot = &r->name;
    else if (strcmp(field, "tier") == 0)
        slot = &r->tier;
    else if (strcmp(field, "region") == 0)
        slot = &r->region;
    else if (strcmp(field, "owner") == 0)
        slot = &r->owner;
    else if (strcmp(field, "justification") == 0)
        slot = &r->justification;
    else
        return fail(fe, field,
                    "is not a known field (expected tenant_id, name, tier, "
                    "region, budget, owner, justification)");
    if (memchr(value, '\0', len))
        return fail(fe, field, "must not contain NUL bytes");
    free(*slot);
    *slot = tq_xmalloc(len + 1);
    memcpy(*slot, value, len);
    (*slot)[len] = '\0';
    return TQ_OK;
}

static bool valid_tenant_id(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > TQ_TENANT_ID_MAX || s[0] < 'a' || s[0] > 'z')
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

static bool valid_email(const char *s)
{
    size_t n = strlen(s);
    const char *at = strchr(s, '@');
    if (n > TQ_OWNER_MAX || !at || at == s || strchr(at + 1, '@'))
        return false;
    for (const char *p = s; p < at; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || strchr("._%+-", c)))
            return false;
    }
    const char *d = at + 1;
    size_t label = 0, dots = 0;
    for (const char *p = d; *p; p++) {
        char c = *p;
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
            dots++;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                   (c >= '0' && c <= '9') || c == '-') {
            label++;
        } else {
            return false;
        }
    }
    return dots > 0 && label > 0;
}

static enum tq_err check_text(const char *field, const char *v, size_t max,
                              bool required, bool multiline,
                              struct tq_field_error *fe)
{
    if (!v || !*v)
        return required ? fail(fe, field, "is required") : TQ_OK;
    size_t n = strlen(v);
    if (n > max)
        return fail(fe, field, "must be at most %zu bytes (got %zu)", max, n);
    if (!tq_utf8_valid(v, n))
        return fail(fe, field, "must be valid UTF-8");
    if (has_control(v, multiline))
        return fail(fe, field, "must not contain control characters");
    return TQ_OK;
}

enum tq_err tq_request_validate(const struct tq_request *r,
                                const struct tq_rules *rules,
                                struct tq_field_error *fe)
{
    enum tq_err err;
    if (!r->tenant_id || !*r->tenant_id)
        return fail(fe, "tenant_id", "is required");
    if (!valid_tenant_id(r->tenant_id))
        return fail(fe, "tenant_id",
                    "must match ^[a-z][a-z0-9-]{2,39}$ (3-40 characters: a "
                    "lowercase letter, then lowercase letters, digits or '-')");
    if ((err = check_text("name", r->name, TQ_NAME_MAX, true, false, fe)))
        return err;
    if (!r->tier || !*r->tier)
        return fail(fe, "tier", "is required");
    const struct tq_tier_info *t = tq_tier_lookup(r->tier);
    if (!t)
        return fail(fe, "tier", "must be one of Gold, Silver, Bronze");
    if (!r->region || !*r->region)
        return fail(fe, "region", "is required");
    bool region_ok = false;
    for (size_t i = 0; i < rules->nregions; i++)
        if (strcmp(rules->regions[i], r->region) == 0)
            region_ok = true;
    if (!region_ok) {
        char list[256] = "";
        for (size_t i = 0; i < rules->nregions; i++) {
            size_t l = strlen(list);
            snprintf(list + l, sizeof(list) - l, "%s%s", i ? ", " : "",
                     rules->regions[i]);
        }
        return fail(fe, "region", "must be one of the allowed regions (%s)",
                    list);
    }
    if (!r->budget_set)
        return fail(fe, "budget", "is required");
    if (r->budget_inr < t->budget_min_inr || r->budget_inr > t->budget_max_inr)
        return fail(fe, "budget",
                    "%" PRId64 " INR is outside the %s band (%" PRId64
                    " to %" PRId64 " INR)",
                    r->budget_inr, t->name, t->budget_min_inr,
                    t->budget_max_inr);
    if (!r->owner || !*r->owner)
        return fail(fe, "owner", "is required");
    if (!valid_email(r->owner))
        return fail(fe, "owner", "must be an e-mail address (local@domain.tld)");
    if ((err = check_text("justification", r->justification,
                          TQ_JUSTIFICATION_MAX, false, true, fe)))
        return err;
    return TQ_OK;
}

bool tq_request_needs_approval(const struct tq_request *r,
                               const struct tq_rules *rules)
{
    return r->budget_inr > rules->approval_threshold_inr;
}

enum tq_err tq_request_from_json(const json_t *obj, struct tq_request *r,
                                 struct tq_field_error *fe)
{
    if (!json_is_object(obj))
        return fail(fe, "line", "must be a JSON object");
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        enum tq_err err;
        if (strcmp(key, "budget") == 0) {
            if (!json_is_integer(v))
                return fail(fe, "budget", "must be a JSON integer (INR)");
            char num[32];
            json_int_t b = json_integer_value(v);
            if (b < 0)
                return fail(fe, "budget", "must be a positive whole number of INR");
            snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, b);
            err = tq_request_set(r, key, num, strlen(num), fe);
        } else {
            if (!json_is_string(v))
                return fail(fe, key, "must be a JSON string");
            err = tq_request_set(r, key, json_string_value(v),
                                 json_string_length(v), fe);
        }
        if (err)
            return err;
    }
    return TQ_OK;
}

void tq_tenant_ident(const char *tenant_id, char *out, size_t outlen)
{
    size_t i = 0;
    for (; tenant_id[i] && i + 1 < outlen; i++)
        out[i] = tenant_id[i] == '-' ? '_' : tenant_id[i];
    out[i] = '\0';
}
