/*
 * tq-enqueue submit --stream: one JSON request per line on stdin, one JSON
 * answer per line on stdout, in the same order, for a portal backend that
 * keeps this process as a coprocess. The PostgreSQL and Redis connections
 * stay open across requests; each request is committed (its own
 * transaction, tq_pg_submit) before its answer is written, and dispatched
 * after the commit. Lines that arrive together (already read when the
 * first is taken) share one transaction and one LPUSH; if one of them
 * conflicts, each is run alone, so a request never fails for another's
 * sake. A bad line is answered with an error and the stream
 * goes on. A lost PostgreSQL connection is re-established and the request
 * run again: the transaction either committed or left nothing, and a
 * request that did commit is found again by its idempotency key.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <time.h>

#include "cli.h"
#include "stream.h"
#include "tq/pg.h"
#include "tq/pipeline.h"
#include "tq/pipeline_registry.h"
#include "tq/queue.h"
#include "tq/request.h"
#include "tq/util.h"

/* The longest request line; a request is a few KB at most. */
#define STREAM_LINE_MAX (64 * 1024)
#define PROBLEMS_MAX 16
/* A lost PostgreSQL is tried again for this long before the answer says so. */
#define RECONNECT_MS 5000
/* Lines already read together are committed together, up to this many. */
#define GROUP_MAX 256
#define GROUP_BYTES (1024 * 1024)

struct stream {
    struct cli *c;
    const char *batch;
    const struct tq_rules *rules;
    struct tq_pipeline *pl;
    struct tq_pg *pg;
    struct tq_queue *q;
};

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

/* A request line on its way: its answer once known. */
struct pending {
    json_t *ref;              /* echoed back, may be NULL */
    struct tq_request r;
    char *key;                /* idempotency key, or NULL (the tenant id) */
    json_t *answer;           /* set: a bad line, answered without PostgreSQL */
};

/* Parse and check one line: p->answer is set if it is refused. */
static void prepare(struct stream *s, const char *line, size_t len, struct pending *p)
{
    memset(p, 0, sizeof(*p));
    json_error_t jerr;
    json_t *o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!o) {
        json_t *errors = json_array();
        char rule[256];
        snprintf(rule, sizeof(rule), "invalid JSON at column %d: %s", jerr.column, jerr.text);
        add(errors, "line", rule);
        p->answer = error_answer(NULL, EXIT_REJECTED, errors, "rejected: the line is not JSON");
        return;
    }
    /* "ref" (any JSON value) is echoed back; "idempotency_key" is not a request field */
    p->ref = json_is_object(o) ? json_incref(json_object_get(o, "ref")) : NULL;
    json_t *errors = json_array();
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
                p->key = tq_xstrdup(json_string_value(k));
        }
        json_object_del(o, "idempotency_key");
        json_object_del(o, "ref");
    }
    struct tq_field_error fe[PROBLEMS_MAX];
    size_t np = tq_request_load_json(o, &p->r, fe, PROBLEMS_MAX);
    for (size_t i = 0; i < np && i < PROBLEMS_MAX; i++)
        add(errors, fe[i].field, fe[i].rule);
    bool is_obj = json_is_object(o);
    json_decref(o);
    if (is_obj) {
        /* every problem at once: a field refused above is not also "required" */
        np = tq_request_check(&p->r, s->rules, fe, PROBLEMS_MAX);
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
    size_t n = json_array_size(errors);
    if (n > 0)
        p->answer = error_answer(p->ref, EXIT_REJECTED, errors,
                                 "rejected: %zu problem%s; nothing was submitted", n,
                                 n == 1 ? "" : "s");
    else
        json_decref(errors);
}

static void pending_cleanup(struct pending *p)
{
    json_decref(p->ref);
    json_decref(p->answer);
    free(p->key);
    tq_request_cleanup(&p->r);
}

/*
 * Commit n checked requests in one transaction and answer each. A lost
 * connection: the transaction committed or left nothing; it is run again
 * (reconnecting) and a committed request answers as existing.
 */
static enum tq_err commit_group(struct stream *s, struct pending **ps, size_t n,
                                char *why, size_t whylen)
{
    struct tq_submit_item *items = tq_xcalloc(n, sizeof(*items));
    for (size_t i = 0; i < n; i++) {
        items[i].req = &ps[i]->r;
        items[i].idempotency_key = ps[i]->key;
        items[i].queue = s->c->cfg.queue;
    }
    enum tq_err err;
    int tries = 0;
    for (long waited = 0, pause = 50;; tries++) {
        err = tq_pg_submit(s->pg, items, n, s->batch, s->pl, s->rules, CLI_DEFAULT_ACTOR);
        if (err)
            snprintf(why, whylen, "%s", tq_pg_errstr(s->pg));
        if (err != TQ_ECONNECT || waited >= RECONNECT_MS)
            break;
        sleep_ms(pause);
        waited += pause;
        pause = pause * 2 > 1000 ? 1000 : pause * 2;
    }
    if (err == TQ_ECONFLICT && n > 1) {
        free(items);
        return err;   /* the caller answers each alone */
    }
    if (err) {
        for (size_t i = 0; i < n; i++) {
            json_t *details = NULL;
            if (err == TQ_ECONFLICT && items[i].conflict) {
                char head[40];
                snprintf(head, sizeof(head), "%s: ", items[i].conflict);
                const char *rule = strstr(why, head);
                details = json_array();
                add(details, items[i].conflict,
                    rule ? rule + strlen(head) : "conflicts with an existing tenant");
            }
            ps[i]->answer = error_answer(ps[i]->ref, cli_exit_for(err), details, "%s%s", why,
                                         err == TQ_ECONFLICT ? "; nothing was submitted"
                                         : err == TQ_ECONNECT
                                             ? "; nothing was submitted (safe to send again)"
                                             : "");
            if (tries > 0)
                json_object_set_new(ps[i]->answer, "reconnect_attempts", json_integer(tries));
        }
        free(items);
        return err;
    }
    /* dispatch after the commit, one LPUSH for the group */
    int64_t *ids = tq_xcalloc(n, sizeof(*ids));
    size_t nq = 0;
    for (size_t i = 0; i < n; i++)
        if (items[i].queued)
            ids[nq++] = items[i].job_id;
    bool deferred = false;
    if (nq > 0) {
        if (!s->q && tq_queue_open(&s->c->cfg, NULL, &s->q) != TQ_OK) {
            tq_queue_close(s->q);
            s->q = NULL;
        }
        deferred = !s->q || tq_queue_dispatch(s->q, ids, nq, 0) != TQ_OK;
    }
    free(ids);
    for (size_t i = 0; i < n; i++) {
        json_t *out = json_pack("{s:b, s:s, s:I, s:s, s:b, s:b}", "ok", true, "tenant_id",
                                ps[i]->r.tenant_id, "job_id", (json_int_t)items[i].job_id,
                                "status", items[i].status, "existed", items[i].existed,
                                "dispatch_deferred", items[i].queued && deferred);
        if (tries > 0)   /* PostgreSQL was lost and found again: committed once, now */
            json_object_set_new(out, "reconnect_attempts", json_integer(tries));
        if (ps[i]->ref)
            json_object_set(out, "ref", ps[i]->ref);
        ps[i]->answer = out;
    }
    free(items);
    return TQ_OK;
}

/* Two requests of one group naming the same tenant, name or key. */
static bool group_overlaps(struct pending **ps, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < i; k++) {
            const char *ki = ps[i]->key ? ps[i]->key : ps[i]->r.tenant_id;
            const char *kk = ps[k]->key ? ps[k]->key : ps[k]->r.tenant_id;
            if (strcmp(ps[i]->r.tenant_id, ps[k]->r.tenant_id) == 0 ||
                strcasecmp(ps[i]->r.name, ps[k]->r.name) == 0 || strcmp(ki, kk) == 0)
                return true;
        }
    return false;
}

/* Answer a group of lines that arrived together, in their order. */
static void answer_group(struct stream *s, struct pending *g, size_t n)
{
    struct pending **ok = tq_xcalloc(n + 1, sizeof(*ok));
    size_t nok = 0;
    for (size_t i = 0; i < n; i++)
        if (!g[i].answer)
            ok[nok++] = &g[i];
    char why[1024];
    /* together when they can be (one commit); alone when one of them conflicts */
    if (nok > 0 && (nok == 1 || group_overlaps(ok, nok) ||
                    commit_group(s, ok, nok, why, sizeof(why)) == TQ_ECONFLICT))
        for (size_t i = 0; i < nok; i++)
            if (!ok[i]->answer)
                commit_group(s, &ok[i], 1, why, sizeof(why));
    free(ok);
    for (size_t i = 0; i < n; i++) {
        char *text = json_dumps(g[i].answer, JSON_COMPACT | JSON_ENSURE_ASCII);
        fputs(text, stdout);
        fputc('\n', stdout);
        free(text);
    }
    fflush(stdout);
}

/* Lines of stdin read in blocks: those already there form one group. */
struct reader {
    char *buf;
    size_t len, cap;
    bool eof;
    bool skipping;   /* inside a line longer than STREAM_LINE_MAX */
    long lineno;
};

/* Block until some input (or its end), then take whatever else is there. */
static void fill(struct reader *rd)
{
    bool first = true;
    while (!rd->eof && rd->len < GROUP_BYTES) {
        if (!first) {
            struct pollfd pfd = {0, POLLIN, 0};
            if (poll(&pfd, 1, 0) <= 0)
                break;
        }
        if (rd->cap - rd->len < 64 * 1024) {
            rd->cap = rd->cap * 2 + 128 * 1024;
            rd->buf = tq_xrealloc(rd->buf, rd->cap);
        }
        ssize_t got = read(0, rd->buf + rd->len, rd->cap - rd->len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            rd->eof = true;
            break;
        }
        rd->len += (size_t)got;
        first = false;
    }
}

int submit_stream(struct cli *c, const char *batch, const char *pipeline,
                  const struct tq_rules *rules)
{
    struct stream s = {c, batch, rules, NULL, NULL, NULL};
    char why[1024];
    enum tq_err err = tq_pg_open(c->cfg.database_url, &s.pg);
    /* only an operator-registered pipeline, read once: the stream's requests
       all run on it */
    if (!err)
        err = tq_pipeline_named(s.pg, pipeline, &s.pl);
    if (err)
        snprintf(why, sizeof(why), "%s", tq_pg_errstr(s.pg));
    if (err) {
        tq_pg_close(s.pg);
        return cli_fail(c, err == TQ_ENOTFOUND ? EXIT_USAGE : cli_exit_for(err), NULL,
                        "%s%s; nothing was submitted", err == TQ_ENOTFOUND ? "--pipeline: " : "",
                        why);
    }
    struct reader rd = {NULL, 0, 0, false, false, 0};
    struct pending *g = tq_xcalloc(GROUP_MAX, sizeof(*g));
    while (!rd.eof || rd.len > 0) {
        fill(&rd);
        size_t n = 0, off = 0;
        while (n < GROUP_MAX && off < rd.len) {
            char *line = rd.buf + off;
            char *nl = memchr(line, '\n', rd.len - off);
            if (!nl && !rd.eof && !(rd.len - off > STREAM_LINE_MAX))
                break;   /* the rest of this line is still on its way */
            size_t len = nl ? (size_t)(nl - line) : rd.len - off;
            off += len + (nl ? 1 : 0);
            bool was_skipping = rd.skipping;
            rd.skipping = !nl;   /* a line too long: dropped up to its newline */
            if (was_skipping)
                continue;
            rd.lineno++;
            size_t k = 0;
            while (k < len && strchr(" \t\r", line[k]))
                k++;
            if (k == len)
                continue;   /* blank lines are not requests and get no answer */
            struct pending *p = &g[n++];
            memset(p, 0, sizeof(*p));
            if (len > STREAM_LINE_MAX) {
                json_t *errors = json_array();
                add(errors, "line", "is longer than 65536 bytes (a request is a few KB)");
                p->answer = error_answer(NULL, EXIT_REJECTED, errors,
                                         "rejected: line %ld is too long", rd.lineno);
            } else if (memchr(line, '\0', len)) {
                json_t *errors = json_array();
                add(errors, "line", "must not contain NUL bytes");
                p->answer = error_answer(NULL, EXIT_REJECTED, errors,
                                         "rejected: line %ld holds a NUL byte", rd.lineno);
            } else {
                prepare(&s, line, len, p);
            }
        }
        memmove(rd.buf, rd.buf + off, rd.len - off);
        rd.len -= off;
        if (n > 0)
            answer_group(&s, g, n);
        for (size_t i = 0; i < n; i++)
            pending_cleanup(&g[i]);
    }
    free(g);
    free(rd.buf);
    tq_queue_close(s.q);
    tq_pg_close(s.pg);
    tq_pipeline_free(s.pl);
    return EXIT_DONE;
}
