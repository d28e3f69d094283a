/*
 * The step API: everything a step kind (worker/steps/<kind>.c) may use, and
 * nothing of the engine, the writer, the fetcher or the metrics. A kind sees
 * its context (struct wk_step), fills in its ops table, and may call the
 * services below: blocking offload to the thread pool, HTTP on the loop's
 * curl multi, notifications, settings, tenant credentials (the shared
 * secrets store), and the helpers several kinds share (steps/tenant_util.h,
 * steps/s3_client.h, included at the end). A kind includes this header and
 * libtq's public headers, nothing else of the worker. The engine's own
 * fields of a step live in a private struct (step_int.h) no kind includes.
 * If a kind needs more, add it here on purpose, with a comment (STYLE.md
 * section 10).
 */
#ifndef WK_STEP_H
#define WK_STEP_H

#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <uv.h>

#include "tq/err.h"
#include "tq/pipeline.h"
#include "tq/store.h"

struct wk_curl;

/*
 * Configuration a step kind may read, loaded once at start from the
 * environment (worker/settings.c); no kind calls getenv. Strings are NULL
 * when unset (never ""), and live as long as the worker.
 */
struct wk_step_settings {
    const char *database_url;       /* TQ_DATABASE_URL: the platform database */
    const char *redis_url;          /* TQ_REDIS_URL: the worker's own Redis */
    const char *tenant_redis_url;   /* TQ_TENANT_REDIS_URL: tenants' namespaces (NULL: redis_url) */
    const char *s3_access_key;      /* TQ_S3_ACCESS_KEY */
    const char *s3_secret_key;      /* TQ_S3_SECRET_KEY */
    const char *environment;        /* TQ_ENVIRONMENT (cost tag) */
    const char *work_dir;           /* TQ_WORK_DIR: where exec's scratch directories go */
    const char *exec_allow;         /* TQ_EXEC_ALLOW: colon-separated programs exec may run */
    const char *terraform_bin;      /* TQ_TERRAFORM_BIN: exec may run it too */
    const char *terraform_pg_url;   /* TQ_TERRAFORM_PG_URL: PG_CONN_STR of exec's
                                       terraform_backend "pg" children; NULL unset */
    const char *child_path;         /* PATH given to exec's children */
    const char *child_home;         /* HOME given to exec's children (NULL: their cwd) */
    const char *notify_webhook_url; /* TQ_NOTIFY_WEBHOOK_URL */
    const char *smtp_url;           /* TQ_SMTP_URL */
    const char *notify_from;        /* TQ_NOTIFY_FROM */
    const char *notify_to;          /* TQ_NOTIFY_TO */
};

/*
 * One attempt of one step (its run, or its undo). The engine fills these
 * fields, calls ops->start() on the loop thread, and frees the step after
 * wk_step_done(). Every pointer is borrowed and valid until wk_step_done()
 * returns (params and output: until then too; a kind that keeps output
 * values takes its own references). A kind keeps its own state in kind_data.
 */
struct wk_step {
    uv_loop_t *loop;
    const struct wk_step_settings *set;
    const struct tq_claim *claim;          /* tenant and job fields */
    struct wk_curl *curl;                  /* HTTP transfers on the loop */
    const struct tq_pipeline_step *def;
    bool undo;                             /* run the undo of the step */
    int attempt;                           /* 1-based, of this phase */
    json_t *params;                        /* rendered params */
    json_t *output;                        /* results the step reports */
    char errstr[256];                      /* why it failed; never a secret */
    char warning[256];                     /* succeeded, but something to audit */
    /*
     * Set by a kind before it reports a failure whose request never left
     * this host (connection refused, name not resolved, no connection to
     * the server): the attempt cannot have had an effect. A step none of
     * whose attempts may have reached its server needs no undo. Left
     * false, a failed attempt counts as "may have run" (the safe default;
     * a timeout after sending always does).
     */
    bool unsent;
    void *kind_data;
};

/*
 * A step kind. start() begins the effect and returns TQ_OK, after which
 * wk_step_done() is called exactly once on the loop thread; any other return
 * means it did not start (no done call). cancel() (timeout, shutdown, lost
 * lease) must make the step end soon; done is still called once. Both run on
 * the loop thread. Every kind must leave one effect however often it runs,
 * and its undo must succeed when there is nothing to undo.
 */
struct wk_step_ops {
    const char *kind;
    enum tq_err (*start)(struct wk_step *s);
    void (*cancel)(struct wk_step *s);
};

/* Report the end of a started step. Loop thread only. */
void wk_step_done(struct wk_step *s, enum tq_err err);

/*
 * For kinds whose effect is blocking libpq work: run fn on the libuv thread
 * pool with a connection to the platform database (TQ_DATABASE_URL) from the
 * worker's pool, then report its result through wk_step_done. A matching
 * wk_step_blocking_cancel sends PQcancel to the statement in progress. db is
 * borrowed for the call only.
 */
typedef enum tq_err wk_blocking_fn(struct wk_step *s, PGconn *db);
enum tq_err wk_step_blocking(struct wk_step *s, wk_blocking_fn *fn);
void wk_step_blocking_cancel(struct wk_step *s);
/* Register the statement in progress on db so it can be cancelled (pool thread). */
void wk_step_set_cancel(struct wk_step *s, PGconn *db);

/*
 * Run fn on the libuv thread pool (for blocking client libraries such as
 * hiredis), then report its result through wk_step_done. Not cancellable
 * once started: fn must bound its own time (socket timeouts).
 */
typedef enum tq_err wk_offload_fn(struct wk_step *s);
enum tq_err wk_step_offload(struct wk_step *s, wk_offload_fn *fn);

/* ------------------------------------------------------------ HTTP (curl.c) */

/* libcurl multi on the loop. Loop thread only. */
typedef void wk_curl_done_cb(CURL *e, CURLcode rc, void *arg);
/* Start a transfer; cb runs once on the loop thread when it ends (TQ_OK), never if refused. */
enum tq_err wk_curl_start(struct wk_curl *c, CURL *e, wk_curl_done_cb *cb, void *arg);
/* Stop a transfer now; its cb runs at once with CURLE_ABORTED_BY_CALLBACK. */
void wk_curl_abort(struct wk_curl *c, CURL *e);
/* True when rc says the request never left this host (refused, not resolved). */
bool wk_curl_unsent(CURLcode rc);

/* ------------------------------------------------------------ notify.c */

/* Results: "sent", "not configured" or "failed: why". Loop thread. */
typedef void wk_notify_cb(const char *webhook, const char *email, void *arg);
/*
 * Send event/text about cl's tenant to the webhook and by e-mail (each only
 * when its URL is non-empty; sender and recipient from set); cb (may be
 * NULL) runs once when both ended. Every argument is copied before the call
 * returns.
 */
void wk_notify(struct wk_curl *c, const struct wk_step_settings *set, const struct tq_claim *cl,
               const char *event, const char *text, const char *webhook_url,
               const char *smtp_url, wk_notify_cb *cb, void *arg);

/* ------------------------------------------------------------ credentials.c */

/*
 * Tenant credentials: the shared store (tq/secrets.h, docs/security.md).
 * Steps write and read a tenant's credentials ONLY through these calls,
 * never to local files, so a retry, a check or a revalidation on any worker
 * finds them. Every call works on s->claim->tenant_id and puts its error
 * text (never a secret) in s->errstr. db is a platform connection the step
 * already holds (the write then belongs to its open transaction), or NULL to
 * borrow one from a small pool. Thread-pool threads only (they block).
 */
/* Store value (a JSON object, e.g. {"user":..,"password":..}) as name. */
enum tq_err wk_cred_put(struct wk_step *s, PGconn *db, const char *name, const json_t *value);
/* *out owned by the caller (json_decref); TQ_ENOTFOUND when there is none. */
enum tq_err wk_cred_get(struct wk_step *s, PGconn *db, const char *name, json_t **out);
/* Destroy name (NULL: all of the tenant's); nothing there is success. */
enum tq_err wk_cred_destroy(struct wk_step *s, PGconn *db, const char *name);

/*
 * The tenants' JWT signing keys (tq/jwt.h), loaded by wk_cred_init from
 * TQ_AUTH_KEY / TQ_AUTH_KEY_FILE (a bad key refuses the start); NULL when
 * neither is set. Read-only, shared by threads.
 */
struct tq_jwt_keys;
const struct tq_jwt_keys *wk_cred_auth_keys(void);

/* ------------------------------------------------------------ the kinds */

/* Every step kind, once: step_kinds.c builds its table from this list. */
#define WK_STEP_KINDS(X)                                                                          \
    X(pg_tenant)                                                                                  \
    X(noop)                                                                                       \
    X(sleep)                                                                                      \
    X(redis_acl)                                                                                  \
    X(s3_bucket)                                                                                  \
    X(http)                                                                                       \
    X(exec)                                                                                       \
    X(tenant_config)                                                                              \
    X(notify)                                                                                     \
    X(check_pg)                                                                                   \
    X(check_redis)                                                                                \
    X(check_s3)                                                                                   \
    X(check_audit)                                                                                \
    X(check_vector)                                                                               \
    X(check_tags)                                                                                 \
    X(auth_token)                                                                                 \
    X(check_auth)                                                                                 \
    X(check_monitoring)

#define X(name) extern const struct wk_step_ops wk_step_##name;
WK_STEP_KINDS(X)
#undef X

/* Helpers shared by several kinds, part of this API on purpose. */
#include "steps/json_http.h"
#include "steps/s3_client.h"
#include "steps/tenant_util.h"

#endif
