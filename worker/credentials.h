/*
 * Tenant credentials for step kinds: the worker's handle on the shared
 * store (tq/secrets.h, docs/security.md). Steps write and read a tenant's
 * credentials ONLY through these calls, never to local files, so a retry,
 * a check or a revalidation on any worker finds them.
 *
 * Every call works on s->claim->tenant_id and puts its error text (never a
 * secret) in s->errstr. db is a platform connection the step already holds
 * (the write then belongs to its open transaction), or NULL to borrow one
 * from a small pool here. Thread-pool threads only (they block).
 */
#ifndef WK_CREDENTIALS_H
#define WK_CREDENTIALS_H

#include <stdbool.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "tq/config.h"
#include "tq/err.h"

struct wk_step;

/*
 * Open the store the configuration names (TQ_SECRETS_STORE, the key from
 * TQ_SECRETS_KEY / TQ_SECRETS_KEY_FILE). Call once from wk_run before any
 * step. TQ_EINVALID with errbuf naming the variable and the rule.
 */
enum tq_err wk_cred_init(const struct tq_config *cfg, char *errbuf, size_t errlen);
void wk_cred_shutdown(void);
/*
 * The tenants' JWT signing keys (tq/jwt.h), loaded by wk_cred_init from
 * TQ_AUTH_KEY / TQ_AUTH_KEY_FILE (a bad key refuses the start); NULL when
 * neither is set. Read-only, shared by threads.
 */
struct tq_jwt_keys;
const struct tq_jwt_keys *wk_cred_auth_keys(void);
/* "pg" or "file:DIR"; and whether it is the single-host file store. */
const char *wk_cred_describe(void);
bool wk_cred_is_file(void);

/* Store value (a JSON object, e.g. {"user":..,"password":..}) as name. */
enum tq_err wk_cred_put(struct wk_step *s, PGconn *db, const char *name, const json_t *value);
/* *out owned by the caller (json_decref); TQ_ENOTFOUND when there is none. */
enum tq_err wk_cred_get(struct wk_step *s, PGconn *db, const char *name, json_t **out);
/* Destroy name (NULL: all of the tenant's); nothing there is success. */
enum tq_err wk_cred_destroy(struct wk_step *s, PGconn *db, const char *name);

#endif
