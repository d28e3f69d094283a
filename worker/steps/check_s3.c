/* Step "check_s3": not implemented yet (placeholder so the kind is registered). */
#include <stdio.h>

#include "../worker.h"

static enum tq_err start(struct wk_step *s)
{
    snprintf(s->errstr, sizeof(s->errstr), "step kind \"check_s3\" is not implemented yet");
    return TQ_EBADJOB;
}

const struct wk_step_ops wk_step_check_s3 = {"check_s3", start, NULL};
