/*
 * The worker's handle on the shared tenant credentials store (tq/secrets.h,
 * docs/security.md): opened once at start, closed at exit. What step kinds
 * call (wk_cred_put, _get, _destroy) is declared in step.h.
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
/* wk_cred_auth_keys, which the auth kinds call, is in step.h too. */
/* "pg" or "file:DIR"; and whether it is the single-host file store. */
const char *wk_cred_describe(void);
bool wk_cred_is_file(void);

/* The calls step kinds make (wk_cred_put, _get, _destroy) are in step.h. */
#include "step.h"

#endif
