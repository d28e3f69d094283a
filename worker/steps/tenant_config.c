/* Step "tenant_config": not implemented yet (placeholder so the kind is registered). */
#include <stdio.h>

#include "../worker.h"

static enum tq_err start(struct wk_step *s)
{
    snprintf(s->errstr, sizeof(s->errstr), "step kind \"tenant_config\" is not implemented yet");
    return TQ_EBADJOB;
}

const struct wk_step_ops wk_step_tenant_config = {"tenant_config", start, NULL};
