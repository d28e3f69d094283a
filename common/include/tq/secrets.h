/*
 * Tenant credentials in a store every worker shares (docs/security.md).
 *
 * Keyring: AES-256 keys with ids, from TQ_SECRETS_KEY (the text itself) or
 * TQ_SECRETS_KEY_FILE (a file, the shape of a Kubernetes Secret mount).
 * Either holds one key per line (or comma separated) as `KID:BASE64`, KID
 * of 1-32 characters [A-Za-z0-9._-], BASE64 of exactly 32 bytes; blank
 * lines and lines starting with '#' are ignored. The FIRST key is current
 * (new secrets and `secrets rotate` use it); the others stay readable.
 *
 * Store: "pg" (default whenever a database is configured) keeps one row
 * per (tenant, name) in tq.secrets holding only key id, nonce and
 * ciphertext (AES-256-GCM via OpenSSL EVP, 16-byte tag appended to the
 * ciphertext, AAD = tenant id, NUL, secret name). "file:DIR" keeps
 * DIR/<tenant>/<name> (0600 JSON, atomic rename) for a single laptop.
 *
 * Nothing here logs; no error text contains a secret or key material.
 * A struct tq_secrets is read-only after tq_secrets_open and may be shared
 * by threads; every pg call takes the caller's connection (which may be in
 * a transaction: the write is then part of it).
 */
#ifndef TQ_SECRETS_H
#define TQ_SECRETS_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "tq/err.h"

#define TQ_SECRETS_KID_MAX 32
#define TQ_SECRETS_KEY_LEN 32
#define TQ_SECRETS_NONCE_LEN 12
#define TQ_SECRETS_TAG_LEN 16

struct tq_keyring;

/*
 * Parse keyring text (see above). *out owned by the caller
 * (tq_keyring_free). TQ_EINVALID: errbuf names the line and the rule.
 */
enum tq_err tq_keyring_parse(const char *text, struct tq_keyring **out, char *errbuf,
                             size_t errlen);
/*
 * From TQ_SECRETS_KEY or TQ_SECRETS_KEY_FILE (both set is an error).
 * *out is NULL (and TQ_OK) when neither is set.
 */
enum tq_err tq_keyring_from_env(struct tq_keyring **out, char *errbuf, size_t errlen);
/*
 * The same from any pair of variables (e.g. TQ_AUTH_KEY / TQ_AUTH_KEY_FILE,
 * the JWT signing keys of tq/jwt.h); errors name the variable.
 */
enum tq_err tq_keyring_from_vars(const char *var, const char *file_var, struct tq_keyring **out,
                                 char *errbuf, size_t errlen);
void tq_keyring_free(struct tq_keyring *k);
/* Number of keys; key i's id (NULL past the end) and its 32 bytes in *key (borrowed). */
int tq_keyring_size(const struct tq_keyring *k);
const char *tq_keyring_key_at(const struct tq_keyring *k, int i, const unsigned char **key);
/* Id of the current key; borrowed from k. */
const char *tq_keyring_current(const struct tq_keyring *k);

/* One sealed secret: what the database holds. */
struct tq_sealed {
    char kid[TQ_SECRETS_KID_MAX + 1];
    unsigned char nonce[TQ_SECRETS_NONCE_LEN];
    unsigned char *ct;   /* ciphertext || tag, owned (tq_sealed_cleanup) */
    size_t ct_len;
};
void tq_sealed_cleanup(struct tq_sealed *s);

/* Encrypt under the current key with a fresh random nonce. */
enum tq_err tq_secret_seal(const struct tq_keyring *k, const char *tenant, const char *name,
                           const void *plain, size_t len, struct tq_sealed *out,
                           char *errbuf, size_t errlen);
/*
 * Decrypt and authenticate. *plain (NUL-terminated, caller wipes and frees)
 * and *len. TQ_EINVALID with "failed authentication" in errbuf when the
 * row was altered (or sealed for another tenant/name), TQ_ENOTFOUND-style
 * TQ_EINVALID when the key id is unknown.
 */
enum tq_err tq_secret_unseal(const struct tq_keyring *k, const char *tenant, const char *name,
                             const struct tq_sealed *in, char **plain, size_t *len,
                             char *errbuf, size_t errlen);

/* ---- the store ---- */
struct tq_secrets;

/*
 * spec: NULL or "" (the default: "pg" when have_database), "pg", or
 * "file:DIR". The pg store needs a keyring: kr is taken (freed with the
 * store, also on error). TQ_EINVALID names TQ_SECRETS_STORE / the key.
 */
enum tq_err tq_secrets_open(const char *spec, bool have_database, struct tq_keyring *kr,
                            struct tq_secrets **out, char *errbuf, size_t errlen);
/* From TQ_SECRETS_STORE, TQ_SECRETS_KEY / TQ_SECRETS_KEY_FILE. */
enum tq_err tq_secrets_from_env(bool have_database, struct tq_secrets **out, char *errbuf,
                                size_t errlen);
void tq_secrets_free(struct tq_secrets *s);
bool tq_secrets_is_file(const struct tq_secrets *s);
/* "pg" or "file:DIR" (borrowed). */
const char *tq_secrets_describe(const struct tq_secrets *s);

/* Store value (a JSON object) as tenant's secret name; replaces the old one. */
enum tq_err tq_secrets_put(struct tq_secrets *s, PGconn *db, const char *tenant,
                           const char *name, const json_t *value, char *errbuf, size_t errlen);
/* *out owned by the caller (json_decref); TQ_ENOTFOUND when there is none. */
enum tq_err tq_secrets_get(struct tq_secrets *s, PGconn *db, const char *tenant,
                           const char *name, json_t **out, char *errbuf, size_t errlen);
/* Destroy one secret (name) or all of the tenant's (name NULL); none is success. */
enum tq_err tq_secrets_delete(struct tq_secrets *s, PGconn *db, const char *tenant,
                              const char *name, char *errbuf, size_t errlen);
/*
 * Re-encrypt every row not under the current key (pg store), in one
 * transaction. *rotated: rows rewritten. A row that fails authentication
 * stops it (nothing changed) with the tenant and name in errbuf.
 */
enum tq_err tq_secrets_rotate(struct tq_secrets *s, PGconn *db, int *rotated, char *errbuf,
                              size_t errlen);
/*
 * For the tenant's owner: every secret of tenant, decrypted, as an object
 * {name: value}, through tq.tenant_credentials() which records an audit
 * event (actor) for every read and returns nothing unless the tenant is
 * active. TQ_ENOTFOUND when it returned nothing. pg store only.
 */
enum tq_err tq_secrets_owner_read(struct tq_secrets *s, PGconn *db, const char *tenant,
                                  const char *actor, json_t **out, char *errbuf, size_t errlen);

#endif
