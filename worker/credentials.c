/*
 * The worker's handle on the shared credentials store (see credentials.h):
 * one process-wide store opened by wk_run, and a few platform connections
 * for steps that run without one (Redis steps, checks on the thread pool).
 */
#include "credentials.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "tq/jwt.h"
#include "tq/pg.h"
#include "tq/secrets.h"
#include "worker.h"

#define POOL_MAX 8

static struct {
    pthread_mutex_t mu;
    struct tq_secrets *store;
    struct tq_jwt_keys *auth_keys;   /* TQ_AUTH_KEY / TQ_AUTH_KEY_FILE, or NULL */
    const char *database_url;
    struct tq_pg *idle[POOL_MAX];
    int nidle;
} cred = {.mu = PTHREAD_MUTEX_INITIALIZER};

enum tq_err wk_cred_init(const struct tq_config *cfg, char *errbuf, size_t errlen)
{
    struct tq_keyring *kr = NULL;
    enum tq_err err = tq_keyring_from_env(&kr, errbuf, errlen);
    if (err)
        return err;
    bool have_db = cfg->database_url && *cfg->database_url;
    err = tq_secrets_open(cfg->secrets_store, have_db, kr, &cred.store, errbuf, errlen);
    cred.database_url = cfg->database_url;
    if (!err)
        err = tq_jwt_keys_from_env(&cred.auth_keys, errbuf, errlen);
    return err;
}

void wk_cred_shutdown(void)
{
    pthread_mutex_lock(&cred.mu);
    for (int i = 0; i < cred.nidle; i++)
        tq_pg_close(cred.idle[i]);
    cred.nidle = 0;
    tq_secrets_free(cred.store);
    cred.store = NULL;
    tq_jwt_keys_free(cred.auth_keys);
    cred.auth_keys = NULL;
    pthread_mutex_unlock(&cred.mu);
}

const struct tq_jwt_keys *wk_cred_auth_keys(void)
{
    return cred.auth_keys;
}

const char *wk_cred_describe(void)
{
    return tq_secrets_describe(cred.store);
}

bool wk_cred_is_file(void)
{
    return tq_secrets_is_file(cred.store);
}

/* A connection for a step that has none; *pg to give back (NULL for file:). */
static PGconn *borrow(struct wk_step *s, PGconn *db, struct tq_pg **pg)
{
    *pg = NULL;
    if (db || tq_secrets_is_file(cred.store))
        return db;
    pthread_mutex_lock(&cred.mu);
    *pg = cred.nidle ? cred.idle[--cred.nidle] : NULL;
    pthread_mutex_unlock(&cred.mu);
    if (!*pg)
        tq_pg_open(cred.database_url, pg);
    PGconn *c = tq_pg_conn(*pg);
    if (!c)
        snprintf(s->errstr, sizeof(s->errstr), "could not reach the credentials store: %s",
                 tq_pg_errstr(*pg));
    return c;
}

static void give_back(struct tq_pg *pg)
{
    if (!pg)
        return;
    PGconn *c = tq_pg_conn(pg);
    if (c && PQtransactionStatus(c) != PQTRANS_IDLE)
        PQclear(PQexec(c, "ROLLBACK"));
    pthread_mutex_lock(&cred.mu);
    if (cred.nidle < POOL_MAX) {
        cred.idle[cred.nidle++] = pg;
        pg = NULL;
    }
    pthread_mutex_unlock(&cred.mu);
    tq_pg_close(pg);
}

static bool ready(struct wk_step *s)
{
    if (cred.store)
        return true;
    snprintf(s->errstr, sizeof(s->errstr), "cannot use the credentials store: not configured");
    return false;
}

enum tq_err wk_cred_put(struct wk_step *s, PGconn *db, const char *name, const json_t *value)
{
    if (!ready(s))
        return TQ_EINVALID;
    struct tq_pg *pg;
    PGconn *c = borrow(s, db, &pg);
    if (!c && !tq_secrets_is_file(cred.store)) {
        give_back(pg);
        return TQ_ECONNECT;
    }
    enum tq_err err = tq_secrets_put(cred.store, c, s->claim->tenant_id, name, value, s->errstr,
                                     sizeof(s->errstr));
    give_back(pg);
    return err;
}

enum tq_err wk_cred_get(struct wk_step *s, PGconn *db, const char *name, json_t **out)
{
    *out = NULL;
    if (!ready(s))
        return TQ_EINVALID;
    struct tq_pg *pg;
    PGconn *c = borrow(s, db, &pg);
    if (!c && !tq_secrets_is_file(cred.store)) {
        give_back(pg);
        return TQ_ECONNECT;
    }
    enum tq_err err = tq_secrets_get(cred.store, c, s->claim->tenant_id, name, out, s->errstr,
                                     sizeof(s->errstr));
    give_back(pg);
    return err;
}

enum tq_err wk_cred_destroy(struct wk_step *s, PGconn *db, const char *name)
{
    if (!ready(s))
        return TQ_EINVALID;
    struct tq_pg *pg;
    PGconn *c = borrow(s, db, &pg);
    if (!c && !tq_secrets_is_file(cred.store)) {
        give_back(pg);
        return TQ_ECONNECT;
    }
    enum tq_err err = tq_secrets_delete(cred.store, c, s->claim->tenant_id, name, s->errstr,
                                        sizeof(s->errstr));
    give_back(pg);
    return err;
}
