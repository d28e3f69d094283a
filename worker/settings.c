/*
 * The worker's settings, read from the environment once at start: the
 * engine's (struct wk_settings) and what step kinds may read (struct
 * wk_step_settings). The only place besides main.c that calls getenv, so
 * a setting's name and default are written once.
 */
#include <stdlib.h>

#include "worker.h"

static uint32_t env_u32(const char *name, uint32_t dflt)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return dflt;
    char *end;
    unsigned long n = strtoul(v, &end, 10);
    return *end ? dflt : (uint32_t)n;
}

/* NULL when unset or empty: a kind tests one thing. */
static const char *env_str(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

void wk_settings_load(struct wk_settings *set, const struct tq_config *cfg, const char *worker_id)
{
    *set = (struct wk_settings){
        .cfg = cfg,
        .worker_id = worker_id,
        .grace_ms = env_u32("TQ_GRACE_MS", 20000),
        .long_wait_ms = env_u32("TQ_LONG_WAIT_MS", 15000),
        .max_deliveries = (int)env_u32("TQ_MAX_DELIVERIES", 10),
        .batch = (int)env_u32("TQ_BATCH", 128),
        .revalidate_ms = env_u32("TQ_REVALIDATE_INTERVAL_MS", 86400000),
        .outage_ms = env_u32("TQ_OUTAGE_MS", 300000),
        .pipeline_cache = (int)env_u32("TQ_PIPELINE_CACHE", 32),
        .allow_eviction = env_str("TQ_ALLOW_EVICTION") != NULL,
        .notify_routes_file = env_str("TQ_NOTIFY_ROUTES_FILE"),
        .notify_poll_ms = env_u32("TQ_NOTIFY_POLL_MS", 1000),
        .notify_backoff_ms = env_u32("TQ_NOTIFY_BACKOFF_MS", 1000),
        .notify_max_attempts = (int)env_u32("TQ_NOTIFY_MAX_ATTEMPTS", 10),
        .escalate_after_s = env_u32("TQ_APPROVAL_ESCALATE_AFTER", 0),
        .steps =
            {
                .database_url = cfg->database_url,
                .redis_url = cfg->redis_url,
                .tenant_redis_url = env_str("TQ_TENANT_REDIS_URL"),
                .s3_access_key = env_str("TQ_S3_ACCESS_KEY"),
                .s3_secret_key = env_str("TQ_S3_SECRET_KEY"),
                .environment = env_str("TQ_ENVIRONMENT"),
                .work_dir = env_str("TQ_WORK_DIR"),
                .exec_allow = cfg->exec_allow,
                .terraform_bin = cfg->terraform_bin,
                .terraform_pg_url = cfg->terraform_pg_url,
                .child_path = env_str("PATH"),
                .child_home = env_str("HOME"),
                .notify_webhook_url = env_str("TQ_NOTIFY_WEBHOOK_URL"),
                .smtp_url = env_str("TQ_SMTP_URL"),
                .notify_from = env_str("TQ_NOTIFY_FROM"),
                .notify_to = env_str("TQ_NOTIFY_TO"),
            },
    };
    if (set->batch < 1)
        set->batch = 1;
    if (set->pipeline_cache < 1)
        set->pipeline_cache = 1;
}
