/*
 * Ed25519-signed JWTs and their JWKS (see tq/jwt.h). The keyring parser is
 * the secrets store's (tq/secrets.h); signing and verifying are OpenSSL
 * EVP_DigestSign/Verify with the raw Ed25519 key, base64 is OpenSSL's
 * EVP_EncodeBlock/DecodeBlock with the URL alphabet swapped in.
 */
#include "tq/jwt.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "tq/secrets.h"
#include "tq/util.h"

#define TOKEN_MAX (16 * 1024)
#define ED25519_SIG_LEN 64
#define ED25519_PUB_LEN 32

struct tq_jwt_key {
    char kid[TQ_SECRETS_KID_MAX + 1];
    EVP_PKEY *priv;
    unsigned char pub[ED25519_PUB_LEN];
};

struct tq_jwt_keys {
    struct tq_jwt_key *keys;
    int n;
};

void tq_jwt_keys_free(struct tq_jwt_keys *k)
{
    if (!k)
        return;
    for (int i = 0; i < k->n; i++)
        EVP_PKEY_free(k->keys[i].priv);
    free(k->keys);
    free(k);
}

static enum tq_err from_keyring(struct tq_keyring *kr, struct tq_jwt_keys **out, char *errbuf,
                                size_t errlen)
{
    int n = tq_keyring_size(kr);
    struct tq_jwt_keys *k = tq_xcalloc(1, sizeof(*k));
    k->keys = tq_xcalloc((size_t)n, sizeof(*k->keys));
    for (int i = 0; i < n; i++) {
        const unsigned char *seed;
        const char *kid = tq_keyring_key_at(kr, i, &seed);
        struct tq_jwt_key *key = &k->keys[i];
        snprintf(key->kid, sizeof(key->kid), "%s", kid);
        key->priv = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed,
                                                 TQ_SECRETS_KEY_LEN);
        size_t plen = sizeof(key->pub);
        if (!key->priv || EVP_PKEY_get_raw_public_key(key->priv, key->pub, &plen) != 1 ||
            plen != ED25519_PUB_LEN) {
            snprintf(errbuf, errlen, "key \"%s\": not usable as an Ed25519 private key", kid);
            k->n = i + 1;
            tq_jwt_keys_free(k);
            tq_keyring_free(kr);
            return TQ_EINVALID;
        }
        k->n = i + 1;
    }
    tq_keyring_free(kr);
    *out = k;
    return TQ_OK;
}

enum tq_err tq_jwt_keys_parse(const char *text, struct tq_jwt_keys **out, char *errbuf,
                              size_t errlen)
{
    *out = NULL;
    struct tq_keyring *kr = NULL;
    enum tq_err err = tq_keyring_parse(text, &kr, errbuf, errlen);
    return err ? err : from_keyring(kr, out, errbuf, errlen);
}

enum tq_err tq_jwt_keys_from_env(struct tq_jwt_keys **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    struct tq_keyring *kr = NULL;
    enum tq_err err = tq_keyring_from_vars("TQ_AUTH_KEY", "TQ_AUTH_KEY_FILE", &kr, errbuf, errlen);
    if (err || !kr)
        return err;
    return from_keyring(kr, out, errbuf, errlen);
}

const char *tq_jwt_keys_current(const struct tq_jwt_keys *k)
{
    return k && k->n ? k->keys[0].kid : "";
}

char *tq_b64url_encode(const unsigned char *data, size_t len)
{
    char *out = tq_xcalloc(4 * ((len + 2) / 3) + 1, 1);
    int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    while (n > 0 && out[n - 1] == '=')
        out[--n] = '\0';
    for (char *p = out; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    return out;
}

unsigned char *tq_b64url_decode(const char *text, size_t n, size_t *len)
{
    if (n % 4 == 1)
        return NULL;
    size_t padded = (n + 3) / 4 * 4;
    char *in = tq_xcalloc(padded + 1, 1);
    for (size_t i = 0; i < n; i++) {
        char c = text[i];
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (c == '+' || c == '/' || c == '=')
            c = '!';   /* the standard alphabet's own characters are not base64url */
        in[i] = c;
    }
    for (size_t i = n; i < padded; i++)
        in[i] = '=';
    unsigned char *out = tq_xcalloc(padded / 4 * 3 + 1, 1);
    int got = padded ? EVP_DecodeBlock(out, (const unsigned char *)in, (int)padded) : 0;
    free(in);
    if (got < 0) {
        free(out);
        return NULL;
    }
    *len = (size_t)got - (padded - n);   /* DecodeBlock counts the padding's zero bytes */
    return out;
}

json_t *tq_jwt_jwks(const struct tq_jwt_keys *k)
{
    json_t *keys = json_array();
    for (int i = 0; k && i < k->n; i++) {
        char *x = tq_b64url_encode(k->keys[i].pub, sizeof(k->keys[i].pub));
        json_array_append_new(keys, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "OKP",
                                              "crv", "Ed25519", "kid", k->keys[i].kid, "x", x,
                                              "alg", "EdDSA", "use", "sig"));
        free(x);
    }
    return json_pack("{s:o}", "keys", keys);
}

static char *b64url_json(const json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text)
        return NULL;
    char *out = tq_b64url_encode((const unsigned char *)text, strlen(text));
    free(text);
    return out;
}

char *tq_jwt_sign(const struct tq_jwt_keys *k, const json_t *claims, char *errbuf,
                  size_t errlen)
{
    if (!k || !k->n || !json_is_object(claims)) {
        snprintf(errbuf, errlen, "cannot sign: %s", !k || !k->n ? "no signing key" :
                 "the claims are not a JSON object");
        return NULL;
    }
    json_t *hdr = json_pack("{s:s, s:s, s:s}", "alg", "EdDSA", "typ", "JWT", "kid",
                            k->keys[0].kid);
    char *h = b64url_json(hdr), *p = b64url_json(claims);
    json_decref(hdr);
    char *input = h && p ? tq_xasprintf("%s.%s", h, p) : NULL;
    free(h);
    free(p);
    if (!input) {
        snprintf(errbuf, errlen, "cannot sign: the claims do not encode as JSON");
        return NULL;
    }
    unsigned char sig[ED25519_SIG_LEN];
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && EVP_DigestSignInit(md, NULL, NULL, NULL, k->keys[0].priv) == 1 &&
              EVP_DigestSign(md, sig, &siglen, (const unsigned char *)input, strlen(input)) == 1;
    EVP_MD_CTX_free(md);
    if (!ok) {
        snprintf(errbuf, errlen, "cannot sign: OpenSSL refused the Ed25519 signature");
        free(input);
        return NULL;
    }
    char *s = tq_b64url_encode(sig, siglen);
    char *token = tq_xasprintf("%s.%s", input, s);
    free(s);
    free(input);
    return token;
}

static json_t *decode_json(const char *p, size_t n)
{
    size_t len;
    unsigned char *raw = tq_b64url_decode(p, n, &len);
    if (!raw)
        return NULL;
    json_error_t je;
    json_t *v = json_loadb((const char *)raw, len, 0, &je);
    free(raw);
    if (v && !json_is_object(v)) {
        json_decref(v);
        return NULL;
    }
    return v;
}

enum tq_err tq_jwt_verify(const struct tq_jwt_keys *k, const char *token, json_t **claims,
                          char *kid, size_t kidlen, char *errbuf, size_t errlen)
{
    *claims = NULL;
    size_t tl = token ? strnlen(token, TOKEN_MAX + 1) : 0;
    const char *d1 = tl ? memchr(token, '.', tl) : NULL;
    const char *d2 = d1 ? memchr(d1 + 1, '.', tl - (size_t)(d1 + 1 - token)) : NULL;
    if (!tl || tl > TOKEN_MAX || !d2 || memchr(d2 + 1, '.', tl - (size_t)(d2 + 1 - token))) {
        snprintf(errbuf, errlen, "not a JWT (three base64url parts separated by dots)");
        return TQ_ESTEP;
    }
    json_t *hdr = decode_json(token, (size_t)(d1 - token));
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    const char *hkid = json_string_value(json_object_get(hdr, "kid"));
    enum tq_err err = TQ_ESTEP;
    const struct tq_jwt_key *key = NULL;
    if (!hdr) {
        snprintf(errbuf, errlen, "the JWT header is not a base64url JSON object");
        goto out;
    }
    if (!alg || strcmp(alg, "EdDSA") != 0) {
        snprintf(errbuf, errlen, "the JWT header's alg is \"%.16s\", expected \"EdDSA\"",
                 alg ? alg : "(none)");
        goto out;
    }
    for (int i = 0; hkid && k && i < k->n; i++)
        if (strcmp(k->keys[i].kid, hkid) == 0)
            key = &k->keys[i];
    if (!key) {
        snprintf(errbuf, errlen, "the JWT's key id \"%.32s\" is not one of the signing keys",
                 hkid ? hkid : "(none)");
        goto out;
    }
    size_t siglen;
    unsigned char *sig = tq_b64url_decode(d2 + 1, tl - (size_t)(d2 + 1 - token), &siglen);
    EVP_PKEY *pub = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, key->pub,
                                                sizeof(key->pub));
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = sig && siglen == ED25519_SIG_LEN && pub && md &&
              EVP_DigestVerifyInit(md, NULL, NULL, NULL, pub) == 1 &&
              EVP_DigestVerify(md, sig, siglen, (const unsigned char *)token,
                               (size_t)(d2 - token)) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pub);
    free(sig);
    if (!ok) {
        snprintf(errbuf, errlen, "the JWT's signature does not verify with key \"%s\"", key->kid);
        goto out;
    }
    *claims = decode_json(d1 + 1, (size_t)(d2 - d1 - 1));
    if (!*claims) {
        snprintf(errbuf, errlen, "the JWT's payload is not a base64url JSON object");
        goto out;
    }
    if (kid)
        snprintf(kid, kidlen, "%s", key->kid);
    err = TQ_OK;
out:
    json_decref(hdr);
    return err;
}
