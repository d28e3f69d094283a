/*
 * The job runner: one job from fetch to ack on a slot thread. Claim in
 * PostgreSQL, run the pipeline's steps in dependency order with retries,
 * record every transition (fenced by the lease epoch), finish, then ack.
 * The order of writes and why it is safe is in worker/README.md.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq/log.h"
#include "tq/retry.h"
#include "tq/util.h"
#include "worker.h"

struct wk_metrics wk_metrics;

/* Template values for the running job. */
static const char *lookup(const char *var, void *arg)
{
    const struct tq_claim *c = ((const struct wk_step_ctx *)arg)->claim;
    static _Thread_local char buf[64];
    if (strcmp(var, "tenant.id") == 0)
        return c->tenant_id;
    if (strcmp(var, "tenant.ident") == 0) {
        tq_tenant_ident(c->tenant_id, buf, sizeof(buf));
        return buf;
    }
    if (strcmp(var, "tenant.name") == 0)
        return c->name;
    if (strcmp(var, "tenant.tier") == 0)
        return c->tier;
    if (strcmp(var, "tenant.region") == 0)
        return c->region;
    if (strcmp(var, "tenant.owner") == 0)
        return c->owner;
    if (strcmp(var, "job.id") == 0) {
        snprintf(buf, sizeof(buf), "%" PRId64, c->job_id);
        return buf;
    }
    if (strncmp(var, "env.", 4) == 0)
        return getenv(var + 4);
    return NULL;
}

static json_t *render(const json_t *v, struct wk_step_ctx *ctx, char *errbuf,
                      size_t errlen)
{
    if (json_is_string(v)) {
        char *s = tq_template_render(json_string_value(v), lookup, ctx, errbuf, errlen);
        if (!s)
            return NULL;
        json_t *out = json_string(s);
        free(s);
        return out;
    }
    if (json_is_object(v)) {
        json_t *o = json_object();
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            json_t *r = render(x, ctx, errbuf, errlen);
            if (!r) {
                json_decref(o);
                return NULL;
            }
            json_object_set_new(o, k, r);
        }
        return o;
    }
    if (json_is_array(v)) {
        json_t *a = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            json_t *r = render(x, ctx, errbuf, errlen);
            if (!r) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, r);
        }
        return a;
    }
    return json_deep_copy(v);
}

/* The pipeline a job was submitted with, from the slot's one-entry cache. */
static enum tq_err pipeline_for(struct wk_slot *s, const char *hash, char *errbuf,
                                size_t errlen)
{
    if (s->pipeline && strcmp(s->pipeline->hash, hash) == 0)
        return TQ_OK;
    char *text = NULL;
    enum tq_err err = tq_pg_pipeline_get(s->pg, hash, &text);
    if (err) {
        snprintf(errbuf, errlen, "%s", tq_pg_errstr(s->pg));
        return err;
    }
    struct tq_pipeline *p = NULL;
    err = tq_pipeline_parse(text, strlen(text), "stored pipeline", &p, errbuf, errlen);
    free(text);
    if (err)
        return err;
    tq_pipeline_free(s->pipeline);
    s->pipeline = p;
    return TQ_OK;
}

enum outcome { STEP_OK, STEP_FAILED, JOB_STALE, JOB_RELEASE };

static enum outcome map_write(struct wk_slot *s, enum tq_err err, const struct tq_claim *c)
{
    if (err == TQ_ESTALE) {
        tq_warn("job %" PRId64 " (%s): lease lost; dropping it without further writes",
                c->job_id, c->tenant_id);
        atomic_fetch_add(&wk_metrics.jobs_stale, 1);
        return JOB_STALE;
    }
    tq_error("job %" PRId64 " (%s): %s; handing it back", c->job_id, c->tenant_id,
             tq_pg_errstr(s->pg));
    return JOB_RELEASE;
}

/* Run one step to success or final failure, retrying per its policy. */
static enum outcome run_step(struct wk_slot *s, const struct tq_claim *c,
                             const struct tq_pipeline_step *st, char *reason,
                             size_t reasonlen)
{
    const struct wk_step_ops *ops = wk_step_lookup(st->kind);
    for (uint32_t attempt = 1;; attempt++) {
        if (atomic_load(s->draining))
            return JOB_RELEASE;
        enum tq_err err = tq_pg_step_begin(s->pg, c, st->name, s->cfg->lease_ms);
        if (err)
            return map_write(s, err, c);

        struct wk_step_ctx ctx = {.cfg = s->cfg, .pg = s->pg, .claim = c, .step = st,
                                  .draining = s->draining};
        ctx.output = json_object();
        char rerr[256] = "";
        json_t *params = render(st->params, &ctx, rerr, sizeof(rerr));
        uint64_t t0 = tq_mono_ms();
        if (!ops) {
            err = TQ_EBADJOB;
            snprintf(ctx.errstr, sizeof(ctx.errstr), "this worker has no step kind \"%s\"",
                     st->kind);
        } else if (!params) {
            err = TQ_EINVALID;
            snprintf(ctx.errstr, sizeof(ctx.errstr), "params: %s", rerr);
        } else {
            ctx.params = params;
            err = ops->run(&ctx);
        }
        json_decref(params);
        json_object_set_new(ctx.output, "duration_ms", json_integer((json_int_t)(tq_mono_ms() - t0)));

        if (!err) {
            enum tq_err werr = tq_pg_step_end(s->pg, c, st->name, "succeeded", NULL, ctx.output);
            json_decref(ctx.output);
            tq_info("job %" PRId64 " (%s): step %s succeeded", c->job_id, c->tenant_id,
                    st->name);
            return werr ? map_write(s, werr, c) : STEP_OK;
        }
        json_decref(ctx.output);
        if (err == TQ_ECANCELED && atomic_load(s->draining))
            return JOB_RELEASE;
        if (!ctx.errstr[0])
            snprintf(ctx.errstr, sizeof(ctx.errstr), "%s", tq_strerror(err));
        bool again = tq_err_retryable(err) && attempt < st->retry.max_attempts;
        if (again) {
            uint32_t delay = tq_retry_delay_ms(&st->retry, attempt, tq_random_unit());
            tq_warn("job %" PRId64 " (%s): step %s attempt %u failed: %s; retrying in %u ms",
                    c->job_id, c->tenant_id, st->name, attempt, ctx.errstr, delay);
            atomic_fetch_add(&wk_metrics.step_retries, 1);
            enum tq_err werr = tq_pg_step_retry(s->pg, c, st->name, ctx.errstr);
            if (werr)
                return map_write(s, werr, c);
            uint64_t until = tq_mono_ms() + delay;
            while (tq_mono_ms() < until && !atomic_load(s->draining))
                tq_sleep_ms(50);
            continue;
        }
        snprintf(reason, reasonlen, "step %s failed after %u attempt%s: %s", st->name,
                 attempt, attempt == 1 ? "" : "s", ctx.errstr);
        tq_error("job %" PRId64 " (%s): %s", c->job_id, c->tenant_id, reason);
        enum tq_err werr = tq_pg_step_end(s->pg, c, st->name, "failed", ctx.errstr, NULL);
        return werr ? map_write(s, werr, c) : STEP_FAILED;
    }
}

static void run_job(struct wk_slot *s, const char *id)
{
    char *end;
    int64_t job_id = strtoll(id, &end, 10);
    if (*end || job_id <= 0) {
        tq_error("dropping malformed job id \"%.40s\" from the ready list", id);
        tq_queue_ack(s->q, id);
        return;
    }
    struct tq_claim c;
    enum tq_err err = tq_pg_claim(s->pg, job_id, s->worker_id, s->cfg->lease_ms, &c);
    if (err == TQ_ENOTFOUND) {
        /* Finished, cancelled or held by a live lease: a duplicate delivery. */
        tq_debug("job %s: not claimable, dropping this delivery", id);
        tq_queue_ack(s->q, id);
        return;
    }
    if (err) {
        tq_error("could not claim job %s: %s; handing it back", id, tq_pg_errstr(s->pg));
        tq_queue_release(s->q, id);
        tq_sleep_ms(500);
        return;
    }
    atomic_store(&s->busy, true);
    atomic_fetch_add(&wk_metrics.in_flight, 1);
    tq_info("job %" PRId64 " (%s): claimed, epoch %" PRId64 ", attempt %d", c.job_id,
            c.tenant_id, c.epoch, c.attempt);

    char reason[512] = "";
    enum outcome out = STEP_OK;
    json_t *states = NULL;
    if ((err = pipeline_for(s, c.pipeline_hash, reason, sizeof(reason)))) {
        /* A stored pipeline that no longer parses is permanent: fail the job. */
        out = err == TQ_ECONNECT || err == TQ_EPG ? JOB_RELEASE : STEP_FAILED;
        if (out == STEP_FAILED) {
            char tmp[512];
            snprintf(tmp, sizeof(tmp), "pipeline %.12s: %s", c.pipeline_hash, reason);
            snprintf(reason, sizeof(reason), "%s", tmp);
        }
    } else if ((err = tq_pg_step_states(s->pg, c.job_id, &states))) {
        out = JOB_RELEASE;
    }
    for (size_t i = 0; out == STEP_OK && i < s->pipeline->nsteps; i++) {
        const struct tq_pipeline_step *st = &s->pipeline->steps[s->pipeline->order[i]];
        const char *was = json_string_value(json_object_get(states, st->name));
        if (was && strcmp(was, "succeeded") == 0)
            continue; /* step-level idempotency: never run a recorded success again */
        out = run_step(s, &c, st, reason, sizeof(reason));
    }
    json_decref(states);

    switch (out) {
    case STEP_OK:
    case STEP_FAILED:
        /* Ack only after the outcome commits: a crash in between replays idempotent steps. */
        err = tq_pg_job_finish(s->pg, &c, out == STEP_OK, reason);
        if (err == TQ_ESTALE) {
            map_write(s, err, &c);
            tq_queue_ack(s->q, id);
        } else if (err) {
            map_write(s, err, &c);
            tq_queue_release(s->q, id);
        } else {
            tq_queue_ack(s->q, id);
            atomic_fetch_add(out == STEP_OK ? &wk_metrics.jobs_succeeded : &wk_metrics.jobs_failed, 1);
            tq_info("job %" PRId64 " (%s): %s", c.job_id, c.tenant_id,
                    out == STEP_OK ? "finished, tenant active" : "failed");
        }
        break;
    case JOB_STALE:
        tq_queue_ack(s->q, id);
        break;
    case JOB_RELEASE:
        tq_pg_job_release(s->pg, &c);
        tq_queue_release(s->q, id);
        atomic_fetch_add(&wk_metrics.jobs_released, 1);
        tq_info("job %" PRId64 " (%s): handed back", c.job_id, c.tenant_id);
        break;
    }
    atomic_fetch_sub(&wk_metrics.in_flight, 1);
    atomic_store(&s->busy, false);
}

void wk_runner_cycle(struct wk_slot *s, uint32_t wait_ms)
{
    char *id = NULL;
    enum tq_err err = tq_queue_reserve(s->q, wait_ms, &id);
    if (err == TQ_ETIMEOUT)
        return;
    if (err) {
        atomic_store(&wk_metrics.redis_ok, false);
        tq_error("slot %d: %s", s->index, tq_queue_errstr(s->q));
        tq_sleep_ms(1000);
        return;
    }
    atomic_store(&wk_metrics.redis_ok, true);
    run_job(s, id);
    free(id);
}
