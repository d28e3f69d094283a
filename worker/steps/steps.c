/* The table of step kinds; each kind lives in its own file in this folder. */
#include <string.h>

#include "../worker.h"

static const struct wk_step_ops *const kinds[] = {
    &wk_step_pg_tenant,
    &wk_step_noop,
    &wk_step_sleep,
    &wk_step_redis_acl,
    &wk_step_s3_bucket,
    &wk_step_http,
    &wk_step_exec,
    &wk_step_tenant_config,
    &wk_step_notify,
    &wk_step_check_pg,
    &wk_step_check_redis,
    &wk_step_check_s3,
    &wk_step_check_audit,
};

const struct wk_step_ops *wk_step_lookup(const char *kind)
{
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strcmp(kinds[i]->kind, kind) == 0)
            return kinds[i];
    return NULL;
}
