/*
 * Step "check_vector": the tenant's vector-DB namespace answers searches,
 * through its REST API (tests/stubs/saas_stub.py plays it): a real client
 * on the worker's curl multi (json_http.h). Params: url (the API's base,
 * e.g. ${env.TQ_VECTOR_URL}), token (bearer), namespace (default the
 * tenant id), timeout_ms per request (10000). params.check picks one:
 *   search   upsert DOCS probe documents with embeddings (ids
 *            tq-probe-search-<i>), query top_k (3) with a vector close to
 *            each of the first three; the probe it was made from must rank
 *            first, else TQ_ESTEP naming what came first (class
 *            integration: rollback). Then the probes are deleted.
 *   latency  upsert its own probes (tq-probe-latency-<i>, embeddings
 *            pointing away from the search probes, so both checks may run
 *            at once), run
 *            params.queries (default 20, at least 20) queries, up to
 *            params.parallel (4) in flight at once like concurrent clients,
 *            p50/p95/max of their times in the output; p95 over
 *            the tier's p95_sla_ms (Gold 500, Silver 1000, Bronze 2000;
 *            params.sla_ms overrides) is TQ_ESTEP (class performance:
 *            activate with a warning). Then the probes are deleted.
 * Undo: delete the probes (a failed run may have left them); an absent
 * namespace is nothing to undo. Every run upserts the same ids: one effect.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../step.h"
#include "tq/request.h"
#include "tq/util.h"

#define DOCS 5
#define DIM 8
#define SEARCHES 3
#define MIN_QUERIES 20
#define MAX_QUERIES 1000
#define MAX_PARALLEL 16

enum phase { P_UPSERT, P_QUERY, P_DELETE, P_UNDO };

struct run;

/* One request in flight: the upsert and delete use slot 0, queries up to nslots. */
struct slot {
    struct wk_jh h;
    struct run *r;
    int idx;              /* which query */
};

struct run {
    struct wk_step *s;
    struct slot slot[MAX_PARALLEL];
    int nslots, inflight;
    bool holding;         /* cancel() is aborting: finish only after it */
    enum tq_err failed;   /* first error of a query, reported once none is in flight */
    enum phase ph;
    bool latency;
    char *base;           /* <url>/v1/namespaces/<ns> */
    const char *token;
    long timeout_ms;
    int nq, sent_q, done_q, top_k;
    long long sla;
    double *ms;
    double upsert_ms;
    json_t *ranked;       /* search: [{"query", "first", "score"}] */
    enum tq_err verdict;  /* of the search or the latency, reported after the delete */
    char why[256];
};

static void on_answer(struct wk_jh *h, void *arg);

static void run_free(struct run *r)
{
    for (int i = 0; i < MAX_PARALLEL; i++)
        wk_jh_cleanup(&r->slot[i].h);
    free(r->base);
    free(r->ms);
    json_decref(r->ranked);
    free(r);
}

static void finish(struct run *r, enum tq_err err)
{
    struct wk_step *s = r->s;
    s->kind_data = NULL;
    run_free(r);
    wk_step_done(s, err);
}

static void probe_id(const struct run *r, int i, char *buf, size_t len)
{
    snprintf(buf, len, "tq-probe-%s-%d", r->latency ? "latency" : "search", i);
}

/*
 * Probe i's embedding: a unit spike in dimension i over a small shared
 * floor. The latency check's probes are the negation, so its documents
 * never outrank the search check's (cosine -1 against them) when both run
 * in the namespace at once.
 */
static json_t *embedding(const struct run *r, int i, double jitter)
{
    double sign = r->latency ? -1.0 : 1.0;
    json_t *v = json_array();
    for (int d = 0; d < DIM; d++)
        json_array_append_new(v, json_real(sign * (d == i ? 1.0 : 0.05 + jitter *
                                                                   ((d * 7 + i) % 3))));
    return v;
}

static enum tq_err post(struct run *r, struct slot *sl, enum phase ph, const char *what,
                        const char *suffix, json_t *body)
{
    r->ph = ph;
    char *url = tq_xasprintf("%s%s", r->base, suffix);
    enum tq_err err = wk_jh_send(&sl->h, what, "POST", url, r->token, body, r->timeout_ms,
                                 on_answer, sl);
    free(url);
    json_decref(body);
    if (!err)
        r->inflight++;
    return err;
}

static enum tq_err send_upsert(struct run *r)
{
    json_t *vecs = json_array();
    for (int i = 0; i < DOCS; i++) {
        char id[48];
        probe_id(r, i, id, sizeof(id));
        json_array_append_new(vecs, json_pack("{s:s, s:o, s:{s:s, s:i}}", "id", id, "values",
                                              embedding(r, i, 0.0), "metadata", "source",
                                              "tenantq-check", "probe", i));
    }
    return post(r, &r->slot[0], P_UPSERT, "POST vectors (upsert probes)", "/vectors",
                json_pack("{s:o}", "vectors", vecs));
}

static enum tq_err send_query(struct run *r, struct slot *sl)
{
    sl->idx = r->sent_q++;
    int target = sl->idx % SEARCHES;
    return post(r, sl, P_QUERY, "POST query", "/query",
                json_pack("{s:o, s:i}", "vector", embedding(r, target, 0.02), "top_k", r->top_k));
}

static enum tq_err send_delete(struct run *r, enum phase ph)
{
    json_t *ids = json_array();
    for (int i = 0; i < DOCS; i++) {
        char id[48];
        probe_id(r, i, id, sizeof(id));
        json_array_append_new(ids, json_string(id));
    }
    return post(r, &r->slot[0], ph, "POST vectors/delete (remove probes)", "/vectors/delete",
                json_pack("{s:o}", "ids", ids));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(const double *v, int n, double pct)
{
    double want = pct / 100.0 * n;   /* nearest rank: ceil without libm */
    int rank = (int)want;
    if (rank < want)
        rank++;
    return v[(rank < 1 ? 1 : rank) - 1];
}

static double round3(double v)   /* no libm for one call: it costs the worker 0.35 MB */
{
    long long k = (long long)(v < 0 ? v * 1000.0 - 0.5 : v * 1000.0 + 0.5);
    return (double)k / 1000.0;
}

/* One query's answer: the probe it was made from must rank first (search). */
static void judge_query(struct run *r, struct slot *sl)
{
    struct wk_step *s = r->s;
    int target = sl->idx % SEARCHES;
    char want[48];
    probe_id(r, target, want, sizeof(want));
    const json_t *first = json_array_get(json_object_get(sl->h.json, "matches"), 0);
    const char *got = json_string_value(json_object_get(first, "id"));
    double score = json_number_value(json_object_get(first, "score"));
    r->ms[sl->idx] = sl->h.ms;
    if (!r->latency) {
        json_array_append_new(r->ranked, json_pack("{s:s, s:s?, s:f}", "query", want, "first",
                                                   got, "score", round3(score)));
        if (!r->verdict && (!got || strcmp(got, want) != 0)) {
            snprintf(r->why, sizeof(r->why),
                     "namespace search is wrong: the query made from %s ranked %s first "
                     "(score %.3f) out of %zu matches", want, got ? got : "nothing", score,
                     json_array_size(json_object_get(sl->h.json, "matches")));
            r->verdict = TQ_ESTEP;
        }
    }
    (void)s;
}

static void report_latency(struct run *r)
{
    struct wk_step *s = r->s;
    qsort(r->ms, (size_t)r->nq, sizeof(*r->ms), cmp_double);
    double p50 = percentile(r->ms, r->nq, 50), p95 = percentile(r->ms, r->nq, 95),
           max = r->ms[r->nq - 1];
    json_object_set_new(s->output, "queries", json_integer(r->nq));
    json_object_set_new(s->output, "p50_ms", json_real(round3(p50)));
    json_object_set_new(s->output, "p95_ms", json_real(round3(p95)));
    json_object_set_new(s->output, "max_ms", json_real(round3(max)));
    json_object_set_new(s->output, "sla_ms", json_integer(r->sla));
    if (p95 > (double)r->sla) {
        snprintf(r->why, sizeof(r->why),
                 "vector query p95 %.3f ms over the %s SLA of %lld ms (p50 %.3f ms, max %.3f ms, "
                 "%d queries)", p95, s->claim->tier, r->sla, p50, max, r->nq);
        r->verdict = TQ_ESTEP;
    }
}

/* The queries are all answered: report, then remove the probes. */
static enum tq_err queries_done(struct run *r)
{
    struct wk_step *s = r->s;
    json_object_set_new(s->output, "check", json_string(r->latency ? "latency" : "search"));
    json_object_set_new(s->output, "upsert_ms", json_real(round3(r->upsert_ms)));
    json_object_set_new(s->output, "documents", json_integer(DOCS));
    if (r->latency) {
        json_object_set_new(s->output, "parallel", json_integer(r->nslots));
        report_latency(r);
    } else {
        json_object_set_new(s->output, "top_k", json_integer(r->top_k));
        json_object_set_new(s->output, "ranked", json_incref(r->ranked));
    }
    return send_delete(r, P_DELETE);
}

/* Start queries on the idle slots, as many as are left to send. */
static enum tq_err fill(struct run *r)
{
    for (int i = 0; i < r->nslots && r->sent_q < r->nq; i++) {
        if (r->slot[i].h.e)
            continue;   /* in flight */
        enum tq_err err = send_query(r, &r->slot[i]);
        if (err)
            return err;
    }
    return TQ_OK;
}

static void on_query(struct run *r, struct slot *sl, enum tq_err err)
{
    struct wk_step *s = r->s;
    if (err && !r->failed) {
        if (sl->h.status == 404)
            snprintf(s->errstr, sizeof(s->errstr), "%s: namespace %s does not exist (HTTP 404)",
                     sl->h.what, s->claim->tenant_id);
        r->failed = err;
    }
    if (!err) {
        judge_query(r, sl);
        r->done_q++;
    }
    if (!r->failed && r->sent_q < r->nq)
        r->failed = fill(r);
    if (r->inflight > 0 || r->holding)
        return;
    if (r->failed) {
        finish(r, r->failed);
        return;
    }
    err = queries_done(r);
    if (err)
        finish(r, err);
}

static void on_answer(struct wk_jh *h, void *arg)
{
    struct slot *sl = arg;
    struct run *r = sl->r;
    struct wk_step *s = r->s;
    enum tq_err err = wk_jh_result(h);
    r->inflight--;
    if (r->holding)   /* aborted by cancel(), which ends the step */
        return;
    if (r->ph == P_QUERY) {
        on_query(r, sl, err);
        return;
    }
    if (r->ph == P_UNDO) {
        if (err && h->status == 404)   /* no namespace: no probes */
            err = TQ_OK;
        if (!err)
            json_object_set_new(s->output, "probes_removed", json_integer(
                json_integer_value(json_object_get(h->json, "deleted"))));
        finish(r, err);
        return;
    }
    if (err) {
        if (h->status == 404)
            snprintf(s->errstr, sizeof(s->errstr), "%s: namespace %s does not exist (HTTP 404)",
                     h->what, s->claim->tenant_id);
        finish(r, err);
        return;
    }
    switch (r->ph) {
    case P_UPSERT:
        r->upsert_ms = h->ms;
        r->ph = P_QUERY;
        err = fill(r);
        if (err && r->inflight > 0) {   /* the ones started end the step */
            r->failed = err;
            return;
        }
        break;
    case P_QUERY:
        break;
    case P_DELETE:
        if (r->verdict)
            snprintf(s->errstr, sizeof(s->errstr), "%s", r->why);
        finish(r, r->verdict);
        return;
    case P_UNDO:
        break;
    }
    if (err)
        finish(r, err);
}

static enum tq_err start(struct wk_step *s)
{
    const json_t *p = s->params;
    const char *check = json_string_value(json_object_get(p, "check"));
    const char *url = json_string_value(json_object_get(p, "url"));
    const char *ns = json_string_value(json_object_get(p, "namespace"));
    bool latency = check && strcmp(check, "latency") == 0;
    if (!latency && !(check && strcmp(check, "search") == 0)) {
        snprintf(s->errstr, sizeof(s->errstr), "params.check must be \"search\" or \"latency\"");
        return TQ_EINVALID;
    }
    if (!url || !*url) {
        snprintf(s->errstr, sizeof(s->errstr), "params.url (the vector API's base URL) is "
                 "required");
        return TQ_EINVALID;
    }
    int nq = latency ? MIN_QUERIES : SEARCHES;
    const json_t *q = json_object_get(p, "queries");
    if (latency && q && (!json_is_integer(q) || json_integer_value(q) < MIN_QUERIES ||
                         json_integer_value(q) > MAX_QUERIES)) {
        snprintf(s->errstr, sizeof(s->errstr), "params.queries must be an integer from %d to %d",
                 MIN_QUERIES, MAX_QUERIES);
        return TQ_EINVALID;
    }
    if (latency && q)
        nq = (int)json_integer_value(q);
    int par = 4;
    const json_t *pp = json_object_get(p, "parallel");
    if (pp && (!json_is_integer(pp) || json_integer_value(pp) < 1 ||
               json_integer_value(pp) > MAX_PARALLEL)) {
        snprintf(s->errstr, sizeof(s->errstr), "params.parallel must be an integer from 1 to %d",
                 MAX_PARALLEL);
        return TQ_EINVALID;
    }
    if (pp)
        par = (int)json_integer_value(pp);
    long long sla = -1;
    const json_t *sl = json_object_get(p, "sla_ms");
    if (json_is_integer(sl)) {
        sla = json_integer_value(sl);
    } else {
        const struct tq_tier_info *t = tq_tier_lookup(s->claim->tier);
        if (t)
            sla = t->p95_sla_ms;
    }
    if (latency && sla < 0) {
        snprintf(s->errstr, sizeof(s->errstr), "cannot check latency: the SLA of tier \"%.16s\" "
                 "is unknown (params.sla_ms >= 0 sets one)", s->claim->tier);
        return TQ_EINVALID;
    }
    struct run *r = tq_xcalloc(1, sizeof(*r));
    r->s = s;
    r->latency = latency;
    r->nq = nq;
    r->sla = sla;
    r->top_k = 3;
    r->ms = tq_xcalloc((size_t)nq, sizeof(*r->ms));
    r->ranked = json_array();
    r->token = json_string_value(json_object_get(p, "token"));
    json_int_t to = json_integer_value(json_object_get(p, "timeout_ms"));
    r->timeout_ms = to > 0 ? (long)to : 10000;
    r->nslots = latency ? par : 1;   /* the search's three queries: one at a time */
    for (int i = 0; i < MAX_PARALLEL; i++) {
        wk_jh_init(&r->slot[i].h, s);
        r->slot[i].r = r;
    }
    char *ens = wk_jh_escape(ns && *ns ? ns : s->claim->tenant_id);
    size_t ul = strlen(url);
    r->base = tq_xasprintf("%.*s/v1/namespaces/%s", (int)(ul && url[ul - 1] == '/' ? ul - 1 : ul),
                           url, ens);
    free(ens);
    s->kind_data = r;
    enum tq_err err = s->undo ? send_delete(r, P_UNDO) : send_upsert(r);
    if (err) {
        s->kind_data = NULL;
        run_free(r);
    }
    return err;
}

/* Timeout or shutdown: abort every request in flight (their callbacks run at once). */
static void cancel(struct wk_step *s)
{
    struct run *r = s->kind_data;
    if (!r)
        return;
    r->holding = true;
    if (!r->failed)
        r->failed = TQ_ECANCELED;
    for (int i = 0; i < MAX_PARALLEL; i++)
        wk_jh_abort(&r->slot[i].h);
    r->holding = false;
    snprintf(s->errstr, sizeof(s->errstr), "cancelled");
    finish(r, TQ_ECANCELED);
}

const struct wk_step_ops wk_step_check_vector = {"check_vector", start, cancel};
