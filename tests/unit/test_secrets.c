/* The secrets keyring and AES-256-GCM sealing (common/src/secrets.c); no services. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "tq/config.h"
#include "tq/secrets.h"

/* two keys: 32 bytes each, base64 */
#define K1 "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define K2 "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="

static struct tq_keyring *ring(const char *text)
{
    struct tq_keyring *k = NULL;
    char why[200] = "";
    cr_assert_eq(tq_keyring_parse(text, &k, why, sizeof(why)), TQ_OK, "%s", why);
    return k;
}

Test(secrets, keyring_first_key_is_current)
{
    struct tq_keyring *k = ring("# rotation in progress\n" K2 "\n\n" K1 "\n");
    cr_assert_str_eq(tq_keyring_current(k), "k2");
    tq_keyring_free(k);
    k = ring(K1 "," K2);
    cr_assert_str_eq(tq_keyring_current(k), "k1");
    tq_keyring_free(k);
}

Test(secrets, keyring_rejects_bad_input_naming_the_rule)
{
    static const char *bad[] = {
        "",                                              /* no key */
        "k1AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", /* no ':' */
        "k 1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==", /* 31 bytes */
        "k1:not base64 at all!!!!!!!!!!!!!!!!!!!!!!!!",
        K1 "\n" "k1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=", /* duplicate id */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct tq_keyring *k = NULL;
        char why[200] = "";
        cr_assert_eq(tq_keyring_parse(bad[i], &k, why, sizeof(why)), TQ_EINVALID, "case %zu", i);
        cr_assert_null(k);
        cr_assert(strlen(why) > 0, "case %zu has no message", i);
        cr_assert_null(strstr(why, "AAECAwQF"), "key material in the message: %s", why);
    }
}

Test(secrets, seal_then_unseal_roundtrips_and_binds_tenant_and_name)
{
    struct tq_keyring *k = ring(K1);
    const char *plain = "{\"password\":\"hunter2hunter2\"}";
    struct tq_sealed s;
    char why[256];
    cr_assert_eq(tq_secret_seal(k, "acme", "postgres", plain, strlen(plain), &s, why, sizeof(why)),
                 TQ_OK, "%s", why);
    cr_assert_str_eq(s.kid, "k1");
    cr_assert_eq(s.ct_len, strlen(plain) + TQ_SECRETS_TAG_LEN);
    for (size_t i = 0; i + 7 <= s.ct_len; i++)
        cr_assert_neq(memcmp(s.ct + i, "hunter2", 7), 0, "plaintext visible in the ciphertext");
    char *out = NULL;
    size_t len = 0;
    cr_assert_eq(tq_secret_unseal(k, "acme", "postgres", &s, &out, &len, why, sizeof(why)), TQ_OK,
                 "%s", why);
    cr_assert_str_eq(out, plain);
    free(out);
    /* the same row moved to another tenant or name fails authentication */
    cr_assert_eq(tq_secret_unseal(k, "evil", "postgres", &s, &out, &len, why, sizeof(why)),
                 TQ_EINVALID);
    cr_assert(strstr(why, "failed authentication"), "%s", why);
    cr_assert_eq(tq_secret_unseal(k, "acme", "redis", &s, &out, &len, why, sizeof(why)),
                 TQ_EINVALID);
    tq_sealed_cleanup(&s);
    tq_keyring_free(k);
}

Test(secrets, a_tampered_byte_fails_authentication_with_a_clear_error)
{
    struct tq_keyring *k = ring(K1);
    struct tq_sealed s;
    char why[256];
    cr_assert_eq(tq_secret_seal(k, "acme", "redis", "{\"a\":1}", 7, &s, why, sizeof(why)), TQ_OK);
    for (size_t i = 0; i < s.ct_len; i++) {
        s.ct[i] ^= 0x01;
        char *out = NULL;
        size_t len = 0;
        cr_assert_eq(tq_secret_unseal(k, "acme", "redis", &s, &out, &len, why, sizeof(why)),
                     TQ_EINVALID, "byte %zu", i);
        cr_assert_null(out);
        cr_assert(strstr(why, "failed authentication") && strstr(why, "acme"), "%s", why);
        s.ct[i] ^= 0x01;
    }
    s.nonce[0] ^= 0x80;
    char *out = NULL;
    size_t len = 0;
    cr_assert_eq(tq_secret_unseal(k, "acme", "redis", &s, &out, &len, why, sizeof(why)),
                 TQ_EINVALID);
    tq_sealed_cleanup(&s);
    tq_keyring_free(k);
}

Test(secrets, old_key_ids_stay_readable_unknown_ones_are_named)
{
    struct tq_keyring *old = ring(K1), *both = ring(K2 "\n" K1), *only2 = ring(K2);
    struct tq_sealed s;
    char why[256];
    cr_assert_eq(tq_secret_seal(old, "acme", "postgres", "{}", 2, &s, why, sizeof(why)), TQ_OK);
    char *out = NULL;
    size_t len = 0;
    cr_assert_eq(tq_secret_unseal(both, "acme", "postgres", &s, &out, &len, why, sizeof(why)),
                 TQ_OK, "%s", why);
    free(out);
    cr_assert_eq(tq_secret_unseal(only2, "acme", "postgres", &s, &out, &len, why, sizeof(why)),
                 TQ_EINVALID);
    cr_assert(strstr(why, "\"k1\"") && strstr(why, "not in the keyring"), "%s", why);
    tq_sealed_cleanup(&s);
    tq_keyring_free(old);
    tq_keyring_free(both);
    tq_keyring_free(only2);
}

Test(secrets, store_spec_defaults_to_pg_with_a_database_and_needs_a_key)
{
    struct tq_secrets *st = NULL;
    char why[256];
    cr_assert_eq(tq_secrets_open(NULL, true, ring(K1), &st, why, sizeof(why)), TQ_OK, "%s", why);
    cr_assert_str_eq(tq_secrets_describe(st), "pg");
    cr_assert_not(tq_secrets_is_file(st));
    tq_secrets_free(st);
    cr_assert_eq(tq_secrets_open("", true, NULL, &st, why, sizeof(why)), TQ_EINVALID);
    cr_assert(strstr(why, "TQ_SECRETS_KEY"), "%s", why);
    cr_assert_eq(tq_secrets_open("file:/tmp/x", true, NULL, &st, why, sizeof(why)), TQ_OK);
    cr_assert(tq_secrets_is_file(st));
    tq_secrets_free(st);
    cr_assert_eq(tq_secrets_open("file:relative", true, NULL, &st, why, sizeof(why)), TQ_EINVALID);
    cr_assert_eq(tq_secrets_open("vault", true, NULL, &st, why, sizeof(why)), TQ_EINVALID);
    cr_assert(strstr(why, "TQ_SECRETS_STORE"), "%s", why);
}

Test(secrets, redis_url_carries_an_acl_user)
{
    struct tq_redis_addr a;
    char why[128];
    cr_assert_eq(tq_redis_url_parse("redis://tq-worker:pw1@127.0.0.1:6390/0", &a, why, sizeof(why)),
                 TQ_OK);
    cr_assert_str_eq(a.user, "tq-worker");
    cr_assert_str_eq(a.password, "pw1");
    cr_assert_eq(tq_redis_url_parse("redis://:pw2@h:1/0", &a, why, sizeof(why)), TQ_OK);
    cr_assert_str_eq(a.user, "");
    cr_assert_str_eq(a.password, "pw2");
}
