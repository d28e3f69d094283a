/*
 * Process configuration from the environment (docs/design.md §5); command-line
 * flags override fields after tq_config_from_env(). Strings are owned by the
 * struct and released by tq_config_cleanup().
 */
#ifndef TQ_CONFIG_H
#define TQ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tq/err.h"
#include "tq/log.h"
#include "tq/regions.h"

#define TQ_MAX_REGIONS 16

struct tq_redis_addr {
    char host[256];
    int port;
    char user[128];       /* ACL user; empty: the default user */
    char password[256];   /* empty: no AUTH */
    int db;
};

/* The queue when TQ_QUEUE is not set; also the queue of tenants recorded before
   tenants.queue existed. */
#define TQ_DEFAULT_QUEUE "provision"

struct tq_config {
    char *redis_url;        /* TQ_REDIS_URL, default redis://127.0.0.1:6379/0 */
    char *database_url;     /* TQ_DATABASE_URL, libpq conninfo or URI */
    char *queue;            /* TQ_QUEUE, default TQ_DEFAULT_QUEUE */
    char *prefix;           /* TQ_PREFIX, default "tq" */
    char *http_addr;        /* TQ_HTTP_ADDR, default 127.0.0.1:9464; "" = off */
    char *secrets_store;    /* TQ_SECRETS_STORE: NULL/"" = "pg", or "file:DIR" (tq/secrets.h) */
    bool allow_superuser;   /* TQ_ALLOW_SUPERUSER=1 or --allow-superuser (worker) */
    char *terraform_pg_url; /* TQ_TERRAFORM_PG_URL: conninfo for Terraform's pg backend,
                               handed to exec steps' children as PG_CONN_STR only; NULL = unset */
    char *exec_allow;       /* TQ_EXEC_ALLOW: colon-separated absolute paths exec may run; "" none */
    char *terraform_bin;    /* TQ_TERRAFORM_BIN; when set, exec may run it too; NULL none */
    int concurrency;        /* TQ_CONCURRENCY, default 4, 1..256 */
    uint32_t lease_ms;      /* TQ_LEASE_MS, default 15000 (see worker/README.md) */
    int64_t approval_threshold_inr;   /* TQ_APPROVAL_THRESHOLD, default 1000000 */
    enum tq_log_format log_format;    /* TQ_LOG_FORMAT */
    char *regions[TQ_MAX_REGIONS];    /* allow-list: the region map's keys when
                                         TQ_REGIONS_FILE is set, else TQ_REGIONS */
    size_t nregions;
    struct tq_regions *region_map;    /* TQ_REGIONS_FILE parsed (tq/regions.h); NULL unset */
};

/*
 * Fill c from the environment. On TQ_EINVALID, errbuf names the variable and
 * the rule; c is still safe to clean up.
 */
enum tq_err tq_config_from_env(struct tq_config *c, char *errbuf,
                               size_t errlen);
void tq_config_cleanup(struct tq_config *c);
/* Replace *field with a copy of value. */
void tq_config_set(char **field, const char *value);

/*
 * Parse redis://[[user]:password@]host[:port][/db]. With a user, AUTH is
 * sent as AUTH user password (an ACL user). errbuf says what is wrong and
 * never quotes the password.
 */
enum tq_err tq_redis_url_parse(const char *url, struct tq_redis_addr *out,
                               char *errbuf, size_t errlen);

/* Redis key of the queue: "<prefix>:{<queue>}:<suffix>"; caller frees. */
char *tq_key(const struct tq_config *c, const char *suffix);

/*
 * The shipped default pipeline file, an absolute path (caller frees), which an
 * operator registers (tq-enqueue pipeline register): the installed
 * tenant-provision.json (beside a relocated install first, then
 * TQ_PIPELINE_DIR set at build time), else the checkout's, for a binary
 * run from its build tree.
 */
char *tq_default_pipeline(void);

#endif
