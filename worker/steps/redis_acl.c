/* Step "redis_acl": not implemented yet (placeholder so the kind is registered). */
#include <stdio.h>

#include "../worker.h"

static enum tq_err start(struct wk_step *s)
{
    snprintf(s->errstr, sizeof(s->errstr), "step kind \"redis_acl\" is not implemented yet");
    return TQ_EBADJOB;
}

const struct wk_step_ops wk_step_redis_acl = {"redis_acl", start, NULL};
