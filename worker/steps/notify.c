/*
 * Step "notify": tell people the tenant is ready — webhook (Slack-compatible)
 * and e-mail, through notify.c. Params: event ("activated"), text,
 * webhook_url ("${env.TQ_NOTIFY_WEBHOOK_URL}"), smtp_url ("${env.TQ_SMTP_URL}").
 * A failed notification never fails the tenant: the step succeeds with a
 * warning (audited as step_warning) and the results in its output.
 * Known secrets in the rendered text are masked (tq/redact.h).
 * Idempotency: a repeat sends the message again; notifications are
 * at-least-once by design.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../step.h"
#include "tq/redact.h"
#include "tq/util.h"

static void sent(const char *webhook, const char *email, void *arg)
{
    struct wk_step *s = arg;
    json_object_set_new(s->output, "webhook", json_string(webhook));
    json_object_set_new(s->output, "email", json_string(email));
    if (strncmp(webhook, "failed", 6) == 0 || strncmp(email, "failed", 6) == 0)
        snprintf(s->warning, sizeof(s->warning), "notification not delivered (webhook %s; e-mail %s)",
                 webhook, email);
    wk_step_done(s, TQ_OK);
}

static enum tq_err start(struct wk_step *s)
{
    const json_t *p = s->params;
    const char *event = json_string_value(json_object_get(p, "event"));
    const char *text = json_string_value(json_object_get(p, "text"));
    /* a template may render a secret into the text: it never leaves in a message */
    char *safe = text ? tq_xstrdup(text) : NULL;
    tq_redact(safe);
    wk_notify(s->curl, s->set, s->claim, event ? event : "activated", safe,
              json_string_value(json_object_get(p, "webhook_url")),
              json_string_value(json_object_get(p, "smtp_url")), sent, s);
    free(safe);
    return TQ_OK;
}

static enum tq_err undo(struct wk_step *s)
{
    wk_step_done(s, TQ_OK);   /* a message cannot be unsent */
    return TQ_OK;
}

static enum tq_err dispatch(struct wk_step *s)
{
    return s->undo ? undo(s) : start(s);
}

const struct wk_step_ops wk_step_notify = {"notify", dispatch, NULL};
