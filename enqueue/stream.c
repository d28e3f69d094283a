/*
 * tq-enqueue submit --stream: one JSON request per line on stdin, one JSON
 * answer per line on stdout, in the same order, for a portal backend that
 * keeps this process as a coprocess. The PostgreSQL and Redis connections
 * stay open across requests; each request is committed (its own
 * transaction, tq_pg_submit) before its answer is written, and dispatched
 * after the commit. A bad line is answered with an error and the stream
 * goes on. A lost PostgreSQL connection is re-established and the request
 * run again: the transaction either committed or left nothing, and a
 * request that did commit is found again by its idempotency key.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "stream.h"
#include "tq/pg.h"
#include "tq/pipeline.h"
#include "tq/queue.h"
#include "tq/request.h"
#include "tq/util.h"

/* The longest request line; a request is a few KB at most. */
#define STREAM_LINE_MAX (64 * 1024)
#define PROBLEMS_MAX 16
/* A lost PostgreSQL is tried again for this long before the answer says so. */
#define RECONNECT_MS 5000

struct stream {
    struct cli *c;
    const char *batch;
    const struct tq_rules *rules;
    struct tq_pipeline *pl;
    struct tq_pg *pg;
    struct tq_queue *q;
};

static void answer(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    fputs(s, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    free(s);
}

/* {"ok":false, "error":{code, exit_code, message, errors}}; steals errors. */
static json_t *error_answer(json_t *ref, int exit_code, json_t *errors, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static json_t *error_answer(json_t *ref, int exit_code, json_t *errors, const char *fmt, ...)
{
    char msg[1024], safe[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cli_sanitize(msg, safe, sizeof(safe));
    const char *code = exit_code == EXIT_UNREACHABLE ? "unreachable"
                       : exit_code == EXIT_USAGE     ? "usage"
                       : exit_code == EXIT_REJECTED  ? "rejected"
                                                     : "error";
    json_t *e = json_pack("{s:s, s:i, s:s}", "code", code, "exit_code", exit_code, "message",
                          safe);
    if (errors)
        json_object_set_new(e, "errors", errors);
    json_t *o = json_pack("{s:b, s:o}", "ok", false, "error", e);
    if (ref)
        json_object_set(o, "ref", ref);
    return o;
}

static void add(json_t *errors, const char *field, const char *rule)
{
    char f[64], r[512];
    cli_sanitize(field, f, sizeof(f));
    cli_sanitize(rule, r, sizeof(r));
    json_array_append_new(errors, json_pack("{s:s, s:s}", "field", f, "rule", r));
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* One request line to its answer. */
static json_t *handle(struct stream *s, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!o) {
        json_t *errors = json_array();
        char rule[256];
        snprintf(rule, sizeof(rule), "invalid JSON at column %d: %s", jerr.column, jerr.text);
        add(errors, "line", rule);
        return error_answer(NULL, EXIT_REJECTED, errors, "rejected: the line is not JSON");
    }
    /* "ref" (any JSON value) is echoed back; "idempotency_key" is not a request field */
    json_t *ref = json_is_object(o) ? json_incref(json_object_get(o, "ref")) : NULL;
    json_t *errors = json_array();
    char *key = NULL;
    if (json_is_object(o)) {
        json_t *k = json_object_get(o, "idempotency_key");
        if (k && (!json_is_string(k) || json_string_length(k) == 0 ||
                  json_string_length(k) > 200)) {
            add(errors, "idempotency_key", "must be a JSON string of 1-200 bytes");
        } else if (k) {
            const char *kp = tq_text_problem(json_string_value(k), json_string_length(k), false);
            if (kp)
                add(errors, "idempotency_key", kp);
            else
                key = tq_xstrdup(json_string_value(k));
        }
        json_object_del(o, "idempotency_key");
        json_object_del(o, "ref");
    }
    struct tq_request r;
    memset(&r, 0, sizeof(r));
    struct tq_field_error fe[PROBLEMS_MAX];
    size_t np = tq_request_load_json(o, &r, fe, PROBLEMS_MAX);
    for (size_t i = 0; i < np && i < PROBLEMS_MAX; i++)
        add(errors, fe[i].field, fe[i].rule);
    bool is_obj = json_is_object(o);
    json_decref(o);
    if (is_obj) {
        /* every problem at once: a field refused above is not also "required" */
        np = tq_request_check(&r, s->rules, fe, PROBLEMS_MAX);
        for (size_t i = 0; i < np && i < PROBLEMS_MAX; i++) {
            bool seen = false;
            size_t k;
            json_t *e;
            json_array_foreach(errors, k, e)
                seen |= strcmp(json_string_value(json_object_get(e, "field")), fe[i].field) == 0;
            if (!seen)
                add(errors, fe[i].field, fe[i].rule);
        }
    }
    json_t *out = NULL;
    if (json_array_size(errors) > 0) {
        size_t n = json_array_size(errors);
        out = error_answer(ref, EXIT_REJECTED, errors, "rejected: %zu problem%s; nothing was submitted",
                           n, n == 1 ? "" : "s");
        goto done;
    }
    json_decref(errors);

    struct tq_submit_item it;
    memset(&it, 0, sizeof(it));
    it.req = &r;
    it.idempotency_key = key;
    it.queue = s->c->cfg.queue;
    char why[1024];
    enum tq_err err;
    int tries = 0;
    /* A lost connection: the transaction committed or left nothing; run it
       again (reconnecting), and a committed one answers as existing. */
    for (long waited = 0, pause = 50;; tries++) {
        err = tq_pg_submit(s->pg, &it, 1, s->batch, s->pl, s->rules, CLI_DEFAULT_ACTOR, why,
                           sizeof(why));
        if (err != TQ_ECONNECT || waited >= RECONNECT_MS)
            break;
        sleep_ms(pause);
        waited += pause;
        pause = pause * 2 > 1000 ? 1000 : pause * 2;
    }
    if (err) {
        json_t *details = NULL;
        if (err == TQ_ECONFLICT && it.conflict) {
            char head[40];
            snprintf(head, sizeof(head), "%s: ", it.conflict);
            const char *rule = strstr(why, head);
            details = json_array();
            add(details, it.conflict, rule ? rule + strlen(head) : "conflicts with an existing tenant");
        }
        out = error_answer(ref, cli_exit_for(err), details, "%s%s", why,
                           err == TQ_ECONFLICT ? "; nothing was submitted"
                           : err == TQ_ECONNECT ? "; nothing was submitted (safe to send again)"
                                                : "");
        if (tries > 0)
            json_object_set_new(out, "reconnect_attempts", json_integer(tries));
        goto done;
    }
    bool deferred = false;
    if (it.queued) {
        if (!s->q && tq_queue_open(&s->c->cfg, NULL, &s->q) != TQ_OK) {
            tq_queue_close(s->q);
            s->q = NULL;
        }
        deferred = !s->q || tq_queue_dispatch(s->q, &it.job_id, 1, 0) != TQ_OK;
    }
    out = json_pack("{s:b, s:s, s:I, s:s, s:b, s:b}", "ok", true, "tenant_id", r.tenant_id,
                    "job_id", (json_int_t)it.job_id, "status", it.status, "existed", it.existed,
                    "dispatch_deferred", deferred);
    if (tries > 0)   /* PostgreSQL was lost and found again: committed once, now */
        json_object_set_new(out, "reconnect_attempts", json_integer(tries));
    if (ref)
        json_object_set(out, "ref", ref);
done:
    json_decref(ref);
    free(key);
    tq_request_cleanup(&r);
    return out;
}

int submit_stream(struct cli *c, const char *batch, const struct tq_rules *rules)
{
    struct stream s = {c, batch, rules, NULL, NULL, NULL};
    char why[1024];
    if (tq_pipeline_load(c->cfg.pipeline_path, &s.pl, why, sizeof(why)))
        return cli_fail(c, EXIT_USAGE, NULL, "TQ_PIPELINE: %s", why);
    /* Not reachable now: every request tries again and answers for itself. */
    (void)tq_pg_open(c->cfg.database_url, &s.pg);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    while ((len = getline(&line, &cap, stdin)) != -1) {
        lineno++;
        size_t k = 0;
        while (k < (size_t)len && strchr(" \t\r\n", line[k]))
            k++;
        if (k == (size_t)len)
            continue;   /* blank lines are not requests and get no answer */
        if ((size_t)len > STREAM_LINE_MAX) {
            json_t *errors = json_array();
            add(errors, "line", "is longer than 65536 bytes (a request is a few KB)");
            answer(error_answer(NULL, EXIT_REJECTED, errors, "rejected: line %ld is too long",
                                lineno));
            continue;
        }
        if (memchr(line, '\0', (size_t)len)) {
            json_t *errors = json_array();
            add(errors, "line", "must not contain NUL bytes");
            answer(error_answer(NULL, EXIT_REJECTED, errors, "rejected: line %ld holds a NUL byte",
                                lineno));
            continue;
        }
        answer(handle(&s, line, (size_t)len));
    }
    free(line);
    tq_queue_close(s.q);
    tq_pg_close(s.pg);
    tq_pipeline_free(s.pl);
    return EXIT_DONE;
}
