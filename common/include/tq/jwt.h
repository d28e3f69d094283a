/*
 * Tenant API credentials: JSON Web Tokens signed with Ed25519 (JWS "EdDSA",
 * RFC 8037) through OpenSSL EVP, and the JWKS that publishes the public
 * keys for the platform's services.
 *
 * Signing keys rotate the way the secrets key does (tq/secrets.h): a
 * keyring from TQ_AUTH_KEY (text) or TQ_AUTH_KEY_FILE (a file, e.g. a
 * Kubernetes Secret mount), one `KID:BASE64` per line, BASE64 the 32-byte
 * Ed25519 private key (seed; `head -c 32 /dev/urandom | base64`). The FIRST
 * key signs new tokens; every key listed verifies and is published, so a
 * new key goes first, the old one stays until its tokens expired.
 *
 * Nothing here logs; no error text holds a token or key material.
 */
#ifndef TQ_JWT_H
#define TQ_JWT_H

#include <stddef.h>

#include <jansson.h>

#include "tq/err.h"

struct tq_jwt_keys;

/* Parse keyring text. TQ_EINVALID: errbuf names the line and the rule. */
enum tq_err tq_jwt_keys_parse(const char *text, struct tq_jwt_keys **out, char *errbuf,
                              size_t errlen);
/* From TQ_AUTH_KEY or TQ_AUTH_KEY_FILE; *out NULL (TQ_OK) when neither is set. */
enum tq_err tq_jwt_keys_from_env(struct tq_jwt_keys **out, char *errbuf, size_t errlen);
void tq_jwt_keys_free(struct tq_jwt_keys *k);
/* Id of the signing key (borrowed). */
const char *tq_jwt_keys_current(const struct tq_jwt_keys *k);

/*
 * The public keys as a JWKS: {"keys": [{"kty": "OKP", "crv": "Ed25519",
 * "kid", "x", "alg": "EdDSA", "use": "sig"}, ...]}, current first. New ref.
 */
json_t *tq_jwt_jwks(const struct tq_jwt_keys *k);

/*
 * Sign claims (any JSON object) with the current key; header {"alg":
 * "EdDSA", "typ": "JWT", "kid"}. Heap string (caller frees), or NULL with
 * errbuf set.
 */
char *tq_jwt_sign(const struct tq_jwt_keys *k, const json_t *claims, char *errbuf,
                  size_t errlen);

/*
 * Check token's form, its header (alg EdDSA, a kid of k) and its signature.
 * On TQ_OK *claims is the payload (new ref) and kid (if not NULL) the key id.
 * TQ_ESTEP with errbuf saying what is wrong (never the token) otherwise.
 * Claims are not judged here: the caller compares them with what it expects.
 */
enum tq_err tq_jwt_verify(const struct tq_jwt_keys *k, const char *token, json_t **claims,
                          char *kid, size_t kidlen, char *errbuf, size_t errlen);

/* base64url without padding (RFC 7515 §2), through OpenSSL's base64. Heap strings. */
char *tq_b64url_encode(const unsigned char *data, size_t len);
/* NULL when text is not base64url; *len the decoded length. */
unsigned char *tq_b64url_decode(const char *text, size_t n, size_t *len);

#endif
