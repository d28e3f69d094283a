/*
 * tq/jwt.h: Ed25519 JWTs and the JWKS. Signing and verifying through
 * OpenSSL, rotation (an old key still verifies), and every way a token can
 * be wrong: another key, a changed payload, a foreign alg, an unknown kid,
 * not a JWT at all.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "tq/jwt.h"

#define K_NEW "new:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
#define K_OLD "old:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

static struct tq_jwt_keys *keys(const char *text)
{
    struct tq_jwt_keys *k = NULL;
    char why[256];
    cr_assert_eq(tq_jwt_keys_parse(text, &k, why, sizeof(why)), TQ_OK, "%s", why);
    return k;
}

static char *sign(struct tq_jwt_keys *k, const char *tenant)
{
    json_t *c = json_pack("{s:s, s:i, s:i}", "tenant_id", tenant, "iat", 1000, "exp", 2000);
    char why[256];
    char *t = tq_jwt_sign(k, c, why, sizeof(why));
    json_decref(c);
    cr_assert_not_null(t, "%s", why);
    return t;
}

static enum tq_err verify(struct tq_jwt_keys *k, const char *token, char *why, size_t len,
                          char *kid)
{
    json_t *c = NULL;
    enum tq_err err = tq_jwt_verify(k, token, &c, kid, 40, why, len);
    if (!err)
        cr_assert_str_eq(json_string_value(json_object_get(c, "tenant_id")), "acme");
    json_decref(c);
    return err;
}

Test(jwt, signs_and_verifies_and_old_keys_still_verify_after_rotation)
{
    struct tq_jwt_keys *old = keys(K_OLD), *rotated = keys(K_NEW "\n" K_OLD);
    char why[256], kid[40];
    char *by_old = sign(old, "acme"), *by_new = sign(rotated, "acme");
    cr_assert_eq(verify(rotated, by_old, why, sizeof(why), kid), TQ_OK, "%s", why);
    cr_assert_str_eq(kid, "old");
    cr_assert_eq(verify(rotated, by_new, why, sizeof(why), kid), TQ_OK, "%s", why);
    cr_assert_str_eq(kid, "new", "the first key signs");
    cr_assert_str_eq(tq_jwt_keys_current(rotated), "new");
    /* the header names the algorithm and the key */
    size_t n;
    unsigned char *hdr = tq_b64url_decode(by_new, (size_t)(strchr(by_new, '.') - by_new), &n);
    cr_assert_not_null(hdr);
    cr_assert(strstr((char *)hdr, "\"alg\":\"EdDSA\"") && strstr((char *)hdr, "\"kid\":\"new\""),
              "%s", hdr);
    free(hdr);
    free(by_old);
    free(by_new);
    tq_jwt_keys_free(old);
    tq_jwt_keys_free(rotated);
}

Test(jwt, refuses_forged_changed_foreign_and_malformed_tokens)
{
    struct tq_jwt_keys *k = keys(K_NEW), *forger = keys("new:" "Zm9yZ2VkLWtleS1mb3JnZWQta2V5LWZvcmdlZC1rZXk=");
    char why[256], kid[40];
    char *forged = sign(forger, "acme");   /* same kid, another key */
    cr_assert_eq(verify(k, forged, why, sizeof(why), kid), TQ_ESTEP);
    cr_assert(strstr(why, "signature does not verify"), "%s", why);

    char *good = sign(k, "acme");
    char *other = sign(k, "globex");
    /* globex's payload under acme's signature */
    char *d1 = strchr(good, '.'), *d2 = strchr(d1 + 1, '.');
    char *o1 = strchr(other, '.'), *o2 = strchr(o1 + 1, '.');
    char spliced[2048];
    snprintf(spliced, sizeof(spliced), "%.*s%.*s%s", (int)(d1 - good), good, (int)(o2 - o1), o1,
             d2);
    cr_assert_eq(verify(k, spliced, why, sizeof(why), kid), TQ_ESTEP);
    cr_assert(strstr(why, "signature does not verify"), "%s", why);

    /* alg none, and an unknown key id */
    char *none = tq_b64url_encode((const unsigned char *)"{\"alg\":\"none\"}", 14);
    snprintf(spliced, sizeof(spliced), "%s%s", none, d1);
    cr_assert_eq(verify(k, spliced, why, sizeof(why), kid), TQ_ESTEP);
    cr_assert(strstr(why, "alg is \"none\""), "%s", why);
    free(none);
    char *unk = tq_b64url_encode((const unsigned char *)"{\"alg\":\"EdDSA\",\"kid\":\"zz\"}", 26);
    snprintf(spliced, sizeof(spliced), "%s%s", unk, d1);
    cr_assert_eq(verify(k, spliced, why, sizeof(why), kid), TQ_ESTEP);
    cr_assert(strstr(why, "\"zz\" is not one of the signing keys"), "%s", why);
    free(unk);

    const char *bad[] = {"", "abc", "a.b", "a.b.c.d", "!!.!!.!!", NULL};
    for (int i = 0; bad[i]; i++)
        cr_assert_eq(verify(k, bad[i], why, sizeof(why), kid), TQ_ESTEP, "%s", bad[i]);
    free(forged);
    free(good);
    free(other);
    tq_jwt_keys_free(k);
    tq_jwt_keys_free(forger);
}

Test(jwt, jwks_publishes_only_public_keys)
{
    struct tq_jwt_keys *k = keys(K_NEW "\n" K_OLD);
    json_t *j = tq_jwt_jwks(k);
    json_t *ks = json_object_get(j, "keys");
    cr_assert_eq(json_array_size(ks), 2);
    json_t *first = json_array_get(ks, 0);
    cr_assert_str_eq(json_string_value(json_object_get(first, "kid")), "new");
    cr_assert_str_eq(json_string_value(json_object_get(first, "kty")), "OKP");
    cr_assert_str_eq(json_string_value(json_object_get(first, "crv")), "Ed25519");
    cr_assert_null(json_object_get(first, "d"), "no private part");
    size_t n;
    const char *x = json_string_value(json_object_get(first, "x"));
    unsigned char *pub = tq_b64url_decode(x, strlen(x), &n);
    cr_assert_eq(n, 32);
    free(pub);
    char *dump = json_dumps(j, 0);
    cr_assert_null(strstr(dump, "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8"), "no seed");
    free(dump);
    json_decref(j);
    tq_jwt_keys_free(k);
}

Test(jwt, base64url_round_trips_and_refuses_the_standard_alphabet)
{
    const unsigned char raw[] = {0xfb, 0xff, 0xbf, 0x00, 0x01};
    for (size_t len = 0; len <= sizeof(raw); len++) {
        char *e = tq_b64url_encode(raw, len);
        cr_assert_null(strpbrk(e, "+/="), "%s", e);
        size_t n;
        unsigned char *d = tq_b64url_decode(e, strlen(e), &n);
        cr_assert_not_null(d);
        cr_assert_eq(n, len);
        cr_assert_eq(memcmp(d, raw, len), 0);
        free(d);
        free(e);
    }
    size_t n;
    cr_assert_null(tq_b64url_decode("+/+/", 4, &n));
    cr_assert_null(tq_b64url_decode("abcde", 5, &n));
}
