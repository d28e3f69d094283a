/*
 * Request validation: every rule of docs/design.md §1 lives here so that the CLI,
 * the batch loader and tests agree. Messages name the field and the rule.
 */
#include "tq/request.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
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

int tq_tier_index(const char *tier)
{
    const struct tq_tier_info *t = tq_tier_lookup(tier);
    return t ? (int)(t - tiers) : -1;
}

void tq_request_cleanup(struct tq_request *r)
{
    free(r->tenant_id);
    free(r->name);
    free(r->tier);
    free(r->region);
    free(r->owner);
    free(r->justification);
    free(r->budget_text);
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
        fe->malformed = true;   /* set's problems are all of form */
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

/* The code point at p (valid UTF-8 assumed) and its length in *n. */
static uint32_t code_point(const unsigned char *p, size_t *n)
{
    if (p[0] < 0x80) {
        *n = 1;
        return p[0];
    }
    if ((p[0] & 0xE0) == 0xC0) {
        *n = 2;
        return ((uint32_t)(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
    }
    if ((p[0] & 0xF0) == 0xE0) {
        *n = 3;
        return ((uint32_t)(p[0] & 0x0F) << 12) | ((uint32_t)(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    }
    *n = 4;
    return ((uint32_t)(p[0] & 0x07) << 18) | ((uint32_t)(p[1] & 0x3F) << 12) |
           ((uint32_t)(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
}

/*
 * Characters that change how text looks without being seen: they let a
 * name pass for another one, or reorder what a terminal or portal shows.
 */
static bool invisible(uint32_t cp)
{
    return cp == 0x061C ||                     /* Arabic letter mark */
           (cp >= 0x200B && cp <= 0x200F) ||   /* zero-width space/joiners, LRM, RLM */
           (cp >= 0x2028 && cp <= 0x202E) ||   /* line/paragraph separators, bidi embeddings */
           (cp >= 0x2060 && cp <= 0x2064) ||   /* word joiner, invisible operators */
           (cp >= 0x2066 && cp <= 0x2069) ||   /* bidi isolates */
           cp == 0xFEFF;                       /* zero-width no-break space (BOM) */
}

static bool is_space(uint32_t cp)
{
    return cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || cp == 0xA0 ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

const char *tq_text_problem(const char *s, size_t len, bool multiline)
{
    if (memchr(s, '\0', len))
        return "must not contain NUL bytes";
    if (!tq_utf8_valid(s, len))
        return "must be valid UTF-8";
    bool blank = true;
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        size_t n;
        uint32_t cp = code_point(p, &n);
        p += n;
        if (cp == 0x7F || (cp < 0x20 && !(multiline && (cp == '\n' || cp == '\t'))) ||
            (cp >= 0x80 && cp <= 0x9F))
            return "must not contain control characters";
        if (invisible(cp))
            return "must not contain invisible or direction-changing characters "
                   "(zero-width, bidi controls)";
        if (!is_space(cp))
            blank = false;
    }
    if (blank && len > 0)
        return "must not be blank (only whitespace)";
    return NULL;
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
        if (memchr(value, '\0', len))
            len = (size_t)((const char *)memchr(value, '\0', len) - value);
        free(r->budget_text);
        r->budget_text = tq_xmalloc(len + 1);
        memcpy(r->budget_text, value, len);
        r->budget_text[len] = '\0';
        r->budget_set = false;
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

bool tq_tenant_id_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > TQ_TENANT_ID_MAX || s[0] < 'a' || s[0] > 'z' || s[n - 1] == '-')
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
        /* "--" would map to "__" in SQL names and reads as a typo */
        if (c == '-' && s[i - 1] == '-')
            return false;
    }
    return true;
}

/* RFC 5322 atext: what an unquoted local part may hold besides dots. */
static bool atext(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/*
 * local@domain: the local part a dot-atom (RFC 5322: atext, single dots
 * between), the domain at least two labels of letters, digits and '-'
 * (RFC 1035: 1-63 bytes, no '-' at either end), the last not all digits.
 */
static bool valid_email(const char *s)
{
    size_t n = strlen(s);
    const char *at = strrchr(s, '@');
    if (n > TQ_OWNER_MAX || !at || at == s || at - s > 64)
        return false;
    for (const char *p = s; p < at; p++) {
        if (*p == '.') {
            if (p == s || p + 1 == at || p[1] == '.')
                return false;
        } else if (!atext(*p)) {
            return false;
        }
    }
    const char *label = at + 1;
    size_t labels = 0;
    bool all_digits = true;
    for (const char *p = at + 1;; p++) {
        if (*p == '.' || *p == '\0') {
            size_t ll = (size_t)(p - label);
            if (ll == 0 || ll > 63 || label[0] == '-' || p[-1] == '-')
                return false;
            labels++;
            if (*p == '\0')
                break;
            label = p + 1;
            all_digits = true;
            continue;
        }
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-'))
            return false;
        if (c < '0' || c > '9')
            all_digits = false;
    }
    return labels >= 2 && !all_digits;
}

/* Collects problems: fe[0..max) filled, count in *n (which may pass max). */
/* A key from the input as a field name: cut to fit (it is echoed sanitized). */
static void cut_name(const char *key, char *out, size_t len)
{
    snprintf(out, len, "%s", key);
}

struct problems {
    struct tq_field_error *fe;
    size_t max, n;
};

static void add(struct problems *ps, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void add(struct problems *ps, const char *field, const char *fmt, ...)
{
    if (ps->n < ps->max) {
        struct tq_field_error *fe = &ps->fe[ps->n];
        snprintf(fe->field, sizeof(fe->field), "%s", field);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(fe->rule, sizeof(fe->rule), fmt, ap);
        va_end(ap);
        fe->malformed = false;
    }
    ps->n++;
}

/* The problem just added is of form (missing, wrong type), not of a rule. */
static void malformed(struct problems *ps)
{
    if (ps->n > 0 && ps->n <= ps->max)
        ps->fe[ps->n - 1].malformed = true;
}

static bool check_text(struct problems *ps, const char *field, const char *v, size_t max,
                       bool required, bool multiline)
{
    if (!v || !*v) {
        if (required) {
            add(ps, field, "is required");
            malformed(ps);
        }
        return !required;
    }
    size_t n = strlen(v);
    if (n > max) {
        add(ps, field, "must be at most %zu bytes (got %zu)", max, n);
        return false;
    }
    const char *problem = tq_text_problem(v, n, multiline);
    if (problem) {
        add(ps, field, "%s", problem);
        return false;
    }
    return true;
}

size_t tq_request_check(const struct tq_request *r, const struct tq_rules *rules,
                        struct tq_field_error *fe, size_t max)
{
    struct problems ps = {fe, max, 0};
    if (!r->tenant_id || !*r->tenant_id) {
        add(&ps, "tenant_id", "is required");
        malformed(&ps);
    } else if (!tq_tenant_id_valid(r->tenant_id))
        add(&ps, "tenant_id",
            "must match ^[a-z][a-z0-9-]{2,39}$ (3-40 characters: a lowercase letter, then "
            "lowercase letters, digits or single '-'; no '--', no '-' at the end)");
    check_text(&ps, "name", r->name, TQ_NAME_MAX, true, false);
    const struct tq_tier_info *t = NULL;
    if (!r->tier || !*r->tier) {
        add(&ps, "tier", "is required");
        malformed(&ps);
    } else if (!(t = tq_tier_lookup(r->tier)))
        add(&ps, "tier", "must be one of Gold, Silver, Bronze");
    if (!r->region || !*r->region) {
        add(&ps, "region", "is required");
        malformed(&ps);
    } else {
        bool region_ok = false;
        for (size_t i = 0; i < rules->nregions; i++)
            if (strcmp(rules->regions[i], r->region) == 0)
                region_ok = true;
        if (!region_ok) {
            char list[256] = "";
            for (size_t i = 0; i < rules->nregions; i++) {
                size_t l = strlen(list);
                snprintf(list + l, sizeof(list) - l, "%s%s", i ? ", " : "", rules->regions[i]);
            }
            if (rules->regions_mapped)
                add(&ps, "region", "has no entry in the region map (TQ_REGIONS_FILE), so no "
                    "resource could be placed there; mapped regions: %s", list);
            else
                add(&ps, "region", "must be one of the allowed regions (%s)", list);
        }
    }
    struct tq_field_error bfe;
    int64_t budget = 0;
    if (r->budget_text && parse_budget(r->budget_text, strlen(r->budget_text), &budget, &bfe)) {
        add(&ps, "budget", "%s", bfe.rule);
        malformed(&ps);
    } else if (!r->budget_set) {
        add(&ps, "budget", "is required");
        malformed(&ps);
    } else if (t && (r->budget_inr < t->budget_min_inr || r->budget_inr > t->budget_max_inr))
        add(&ps, "budget",
            "%" PRId64 " INR is outside the %s band (%" PRId64 " to %" PRId64 " INR)",
            r->budget_inr, t->name, t->budget_min_inr, t->budget_max_inr);
    if (!r->owner || !*r->owner) {
        add(&ps, "owner", "is required");
        malformed(&ps);
    } else if (!valid_email(r->owner))
        add(&ps, "owner", "must be an e-mail address (local@domain.tld)");
    check_text(&ps, "justification", r->justification, TQ_JUSTIFICATION_MAX, false, true);
    return ps.n;
}

enum tq_err tq_request_validate(const struct tq_request *r,
                                const struct tq_rules *rules,
                                struct tq_field_error *fe)
{
    struct tq_field_error tmp;
    return tq_request_check(r, rules, fe ? fe : &tmp, 1) ? TQ_EINVALID : TQ_OK;
}

bool tq_request_needs_approval(const struct tq_request *r,
                               const struct tq_rules *rules)
{
    int t = tq_tier_index(r->tier);
    if (t >= 0 && (rules->tier_threshold_set & (1u << t)))
        return r->budget_inr > rules->tier_threshold_inr[t];
    return r->budget_inr > rules->approval_threshold_inr;
}

size_t tq_request_load_json(const json_t *obj, struct tq_request *r,
                            struct tq_field_error *fe, size_t max)
{
    struct problems ps = {fe, max, 0};
    if (!json_is_object(obj)) {
        add(&ps, "line", "must be a JSON object");
        return ps.n;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        struct tq_field_error one;
        char name[32];
        cut_name(key, name, sizeof(name));
        if (strcmp(key, "budget") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 0) {
                add(&ps, "budget", "must be a JSON integer of INR, not negative");
                malformed(&ps);
                continue;
            }
            char num[32];
            snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            if (tq_request_set(r, key, num, strlen(num), &one)) {
                add(&ps, one.field, "%s", one.rule);
                malformed(&ps);
            }
        } else if (!json_is_string(v)) {
            add(&ps, name, "must be a JSON string");
            malformed(&ps);
        } else if (tq_request_set(r, key, json_string_value(v), json_string_length(v), &one)) {
            add(&ps, one.field, "%s", one.rule);
            malformed(&ps);
        }
    }
    return ps.n;
}

enum tq_err tq_request_from_json(const json_t *obj, struct tq_request *r,
                                 struct tq_field_error *fe)
{
    struct tq_field_error tmp;
    return tq_request_load_json(obj, r, fe ? fe : &tmp, 1) ? TQ_EINVALID : TQ_OK;
}

void tq_tenant_ident(const char *tenant_id, char *out, size_t outlen)
{
    size_t i = 0;
    for (; tenant_id[i] && i + 1 < outlen; i++)
        out[i] = tenant_id[i] == '-' ? '_' : tenant_id[i];
    out[i] = '\0';
}
