/*
 * The tenant's API credential (issue 15, "Authentication"):
 *
 * Step "auth_token": issue the tenant a JWT signed with the fleet's current
 * Ed25519 key (tq/jwt.h; keys from TQ_AUTH_KEY / TQ_AUTH_KEY_FILE, loaded
 * by credentials.c) with claims iss "tenantq", sub and tenant_id (the
 * tenant id), tier, region, iat, exp (iat + params.ttl_s, default 90 days)
 * and a random jti, and keep it in the shared secrets store as secret
 * "api" ({"token", "kid", "expires_at"}), where the owner reads it with
 * `tq-enqueue credentials`. The token is never in the output, an error or
 * a log line; the output holds the key id and the claims. A rerun issues a
 * fresh token in the same secret (one effect). Undo: destroy the secret.
 *
 * Step "check_auth" (class security: a failure rolls back at once): read
 * the secret back, verify the signature with the published keys (any key
 * of the keyring, so tokens survive a rotation), and the claims: tenant_id
 * and sub, tier and region equal the tenant's, iat not in the future (60 s
 * skew), exp in the future. With params.url (the vector API's base) it also
 * proves what the token opens: GET <url>/v1/namespaces/<tenant> with it
 * must answer 2xx, and GET .../<params.foreign_namespace> (default
 * "someone-else", another tenant's) must answer 401 or 403; anything else
 * is a leak. Run on the thread pool (store reads; curl easy with 5 s
 * timeouts). Undo: nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../step.h"
#include "tq/jwt.h"
#include "tq/util.h"

#define SECRET "api"
#define DEFAULT_TTL_S (90LL * 86400)
#define SKEW_S 60
#define HTTP_TIMEOUT_MS 5000L

static const struct tq_jwt_keys *keys_or_fail(struct wk_step *s)
{
    const struct tq_jwt_keys *k = wk_cred_auth_keys();
    if (!k)
        snprintf(s->errstr, sizeof(s->errstr), "no JWT signing key: set TQ_AUTH_KEY_FILE (or "
                 "TQ_AUTH_KEY) to lines KID:BASE64 of 32-byte Ed25519 keys");
    return k;
}

/* ------------------------------------------------------------ auth_token */

static enum tq_err issue(struct wk_step *s)
{
    if (s->undo)
        return wk_cred_destroy(s, NULL, SECRET);
    const struct tq_jwt_keys *k = keys_or_fail(s);
    if (!k)
        return TQ_EINVALID;
    json_int_t ttl = DEFAULT_TTL_S;
    const json_t *t = json_object_get(s->params, "ttl_s");
    if (t && (!json_is_integer(t) || json_integer_value(t) < 60 ||
              json_integer_value(t) > 3650LL * 86400)) {
        snprintf(s->errstr, sizeof(s->errstr), "params.ttl_s must be an integer from 60 to "
                 "315360000 (ten years)");
        return TQ_EINVALID;
    }
    if (t)
        ttl = json_integer_value(t);
    unsigned char rnd[16];
    tq_random_bytes(rnd, sizeof(rnd));
    char *jti = tq_b64url_encode(rnd, sizeof(rnd));
    json_int_t now = (json_int_t)(tq_now_ms() / 1000);
    const struct tq_claim *c = s->claim;
    json_t *claims = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s}", "iss", "tenantq", "sub",
                               c->tenant_id, "tenant_id", c->tenant_id, "tier", c->tier, "region",
                               c->region, "iat", now, "exp", now + ttl, "jti", jti);
    free(jti);
    char *token = tq_jwt_sign(k, claims, s->errstr, sizeof(s->errstr));
    if (!token) {
        json_decref(claims);
        return TQ_EINVALID;
    }
    json_t *secret = json_pack("{s:s, s:s, s:I}", "token", token, "kid", tq_jwt_keys_current(k),
                               "expires_at", now + ttl);
    memset(token, 0, strlen(token));
    free(token);
    enum tq_err err = wk_cred_put(s, NULL, SECRET, secret);
    json_t *tok = json_object_get(secret, "token");
    if (tok)   /* wipe the copy too */
        memset((char *)json_string_value(tok), 0, strlen(json_string_value(tok)));
    json_decref(secret);
    if (!err) {
        json_object_set_new(s->output, "kid", json_string(tq_jwt_keys_current(k)));
        json_object_set_new(s->output, "secret", json_string(SECRET));
        json_object_set_new(s->output, "claims", claims);
    } else {
        json_decref(claims);
    }
    return err;
}

static enum tq_err token_start(struct wk_step *s)
{
    return wk_step_offload(s, issue);
}

const struct wk_step_ops wk_step_auth_token = {"auth_token", token_start, NULL};

/* ------------------------------------------------------------ check_auth */

static enum tq_err claim_is(struct wk_step *s, const json_t *claims, const char *name,
                            const char *want)
{
    const char *got = json_string_value(json_object_get(claims, name));
    if (got && strcmp(got, want) == 0)
        return TQ_OK;
    snprintf(s->errstr, sizeof(s->errstr), "the tenant's JWT claims %s \"%.40s\", expected "
             "\"%.40s\"", name, got ? got : "(none)", want);
    return TQ_ESTEP;
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

/* GET url with the token; the status, or -1 with errstr when no answer came. */
static long get_with(struct wk_step *s, const char *url, const char *token)
{
    CURL *e = curl_easy_init();
    if (!e)
        return -1;
    char *line = tq_xasprintf("Authorization: Bearer %s", token);
    struct curl_slist *h = curl_slist_append(NULL, line);
    memset(line, 0, strlen(line));
    free(line);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, HTTP_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, HTTP_TIMEOUT_MS);
    CURLcode rc = curl_easy_perform(e);
    long status = -1;
    if (rc == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    else
        snprintf(s->errstr, sizeof(s->errstr), "GET %s failed: %s", url, curl_easy_strerror(rc));
    if (rc != CURLE_OK)
        s->unsent = wk_curl_unsent(rc);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    return status;
}

static enum tq_err prove(struct wk_step *s, const char *token)
{
    const char *url = json_string_value(json_object_get(s->params, "url"));
    if (!url || !*url) {
        json_object_set_new(s->output, "resources", json_string("not configured (params.url)"));
        return TQ_OK;
    }
    const char *foreign = json_string_value(json_object_get(s->params, "foreign_namespace"));
    if (!foreign || !*foreign)
        foreign = "someone-else";
    if (strcmp(foreign, s->claim->tenant_id) == 0) {
        snprintf(s->errstr, sizeof(s->errstr), "params.foreign_namespace is this tenant's own");
        return TQ_EINVALID;
    }
    size_t ul = strlen(url);
    int base = (int)(ul && url[ul - 1] == '/' ? ul - 1 : ul);
    char *own_ns = wk_jh_escape(s->claim->tenant_id), *other_ns = wk_jh_escape(foreign);
    char *own = tq_xasprintf("%.*s/v1/namespaces/%s", base, url, own_ns);
    char *other = tq_xasprintf("%.*s/v1/namespaces/%s", base, url, other_ns);
    free(own_ns);
    free(other_ns);
    enum tq_err err = TQ_OK;
    long st = get_with(s, own, token);
    if (st < 0) {
        err = TQ_EIO;
        goto out;
    }
    json_object_set_new(s->output, "own_namespace_status", json_integer(st));
    if (st >= 500 || st == 429) {
        snprintf(s->errstr, sizeof(s->errstr), "GET %s with the tenant's JWT answered HTTP %ld",
                 own, st);
        err = TQ_EIO;
        goto out;
    }
    if (st < 200 || st > 299) {
        snprintf(s->errstr, sizeof(s->errstr), "the tenant's JWT does not open its own namespace: "
                 "GET %s answered HTTP %ld", own, st);
        err = TQ_ESTEP;
        goto out;
    }
    st = get_with(s, other, token);
    if (st < 0) {
        err = TQ_EIO;
        goto out;
    }
    json_object_set_new(s->output, "foreign_namespace_status", json_integer(st));
    if (st >= 500 || st == 429) {
        snprintf(s->errstr, sizeof(s->errstr), "GET %s answered HTTP %ld", other, st);
        err = TQ_EIO;
    } else if (st != 401 && st != 403) {
        snprintf(s->errstr, sizeof(s->errstr), "the tenant's JWT is not refused by another "
                 "tenant's namespace: GET %s answered HTTP %ld, expected 401 or 403", other, st);
        err = TQ_ESTEP;
    }
out:
    free(own);
    free(other);
    return err;
}

static enum tq_err check(struct wk_step *s)
{
    const struct tq_jwt_keys *k = keys_or_fail(s);
    if (!k)
        return TQ_EINVALID;
    json_t *secret = NULL;
    enum tq_err err = wk_cred_get(s, NULL, SECRET, &secret);
    if (err == TQ_ENOTFOUND) {
        snprintf(s->errstr, sizeof(s->errstr), "the tenant has no API credential (secret \"%s\"):"
                 " no auth_token step issued one", SECRET);
        return TQ_ESTEP;
    }
    if (err)
        return err;
    const char *token = json_string_value(json_object_get(secret, "token"));
    json_t *claims = NULL;
    char kid[40] = "";
    err = tq_jwt_verify(k, token, &claims, kid, sizeof(kid), s->errstr, sizeof(s->errstr));
    if (err)
        goto out;
    const struct tq_claim *c = s->claim;
    if ((err = claim_is(s, claims, "tenant_id", c->tenant_id)) ||
        (err = claim_is(s, claims, "sub", c->tenant_id)) ||
        (err = claim_is(s, claims, "tier", c->tier)) ||
        (err = claim_is(s, claims, "region", c->region)))
        goto out;
    json_int_t now = (json_int_t)(tq_now_ms() / 1000);
    const json_t *iat = json_object_get(claims, "iat"), *exp = json_object_get(claims, "exp");
    if (!json_is_integer(iat) || json_integer_value(iat) > now + SKEW_S) {
        snprintf(s->errstr, sizeof(s->errstr), "the tenant's JWT has %s iat", json_is_integer(iat)
                 ? "a future" : "no");
        err = TQ_ESTEP;
        goto out;
    }
    if (!json_is_integer(exp) || json_integer_value(exp) <= now) {
        snprintf(s->errstr, sizeof(s->errstr), "the tenant's JWT has %s", json_is_integer(exp) ?
                 "expired" : "no exp claim");
        err = TQ_ESTEP;
        goto out;
    }
    json_object_set_new(s->output, "kid", json_string(kid));
    json_object_set_new(s->output, "signature", json_string("valid"));
    json_object_set_new(s->output, "expires_at", json_integer(json_integer_value(exp)));
    err = prove(s, token);
out:
    json_decref(claims);
    if (token)
        memset((char *)token, 0, strlen(token));
    json_decref(secret);
    return err;
}

static enum tq_err check_start(struct wk_step *s)
{
    if (s->undo) {
        wk_step_done(s, TQ_OK);
        return TQ_OK;
    }
    return wk_step_offload(s, check);
}

const struct wk_step_ops wk_step_check_auth = {"check_auth", check_start, NULL};
