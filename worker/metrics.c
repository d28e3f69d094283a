/*
 * Labelled metrics for /metrics (docs/design.md §5): provisioning duration per
 * tier and region (histogram), successes per tier, failures per tier and
 * step, step durations per kind (histogram), revalidations by result and
 * drift by step, rollbacks, rollback failures, queue depths; and, from the
 * notification dispatcher (observed once per event in the whole fleet), the
 * request-to-active time without the approval wait, the approval wait, and
 * notification deliveries by channel and outcome.
 * The engine's series are recorded and printed on the loop thread only (the
 * engine and the HTTP responder both live there), so they need no lock; the
 * dispatcher's are behind `shared_mu`; queue depths come from the heartbeat
 * thread through atomics.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq/util.h"
#include "worker.h"

/* Past the platform's 15-minute target, up to two hours (docs/design.md §5). */
static const double duration_buckets[] = {0.05, 0.1, 0.25, 0.5, 1,    2.5,  5,    10,
                                          30,   60,  120,  300, 600, 900, 1800, 3600, 7200};
/* Waiting for a person: minutes to a week. */
static const double wait_buckets[] = {60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400,
                                      259200, 604800};
#define NB(a) (sizeof(a) / sizeof(a[0]))
#define MAXBUCKETS NB(duration_buckets)

struct series {
    char labels[192];                 /* rendered: tier="Gold",region="us-east-1" */
    uint64_t buckets[MAXBUCKETS];     /* cumulative when printed */
    uint64_t count;
    double sum;
    struct series *next;
};

struct family {
    const char *name, *help, *type;   /* type: histogram | counter */
    struct series *head;
    const double *bounds;             /* histograms: NULL = duration_buckets */
    size_t nbounds;
};

static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;

static struct family prov_duration = {"tenant_provisioning_duration_seconds",
                                      "Time a worker spent provisioning a tenant, claim to activation.",
                                      "histogram", NULL, NULL, 0};
static struct family prov_success = {"tenant_provisioning_successes_total",
                                     "Tenants this worker activated.", "counter", NULL, NULL, 0};
static struct family prov_failure = {"tenant_provisioning_failures_total",
                                     "Provisioning jobs that failed, by the step that failed.",
                                     "counter", NULL, NULL, 0};
static struct family revalidations = {"tq_revalidations_total",
                                      "Revalidation jobs this worker finished, by result "
                                      "(clean, drift).",
                                      "counter", NULL, NULL, 0};
static struct family drift = {"tq_drift_detected_total",
                              "Checks that found drift on revalidation, by step.", "counter",
                              NULL, NULL, 0};
static struct family step_duration = {"tq_step_duration_seconds",
                                      "Duration of step attempts, by step kind and phase.",
                                      "histogram", NULL, NULL, 0};

static struct family rollback_failed = {"tq_rollback_failures_total",
                                        "Tenants this worker left rollback_failed (an undo failed: "
                                        "resources may be left behind).",
                                        "counter", NULL, NULL, 0};
/* The dispatcher's (shared_mu) */
static struct family request_to_active = {
    "tenant_request_to_active_seconds",
    "Submission to activation, without the time spent waiting for approval; observed once per "
    "activation in the fleet.",
    "histogram", NULL, NULL, 0};
static struct family approval_wait = {"tenant_approval_wait_seconds",
                                      "Submission to a person's approval; observed once per "
                                      "approval in the fleet.",
                                      "histogram", NULL, wait_buckets, NB(wait_buckets)};
static struct family notifications = {"tq_notifications_total",
                                      "Notification delivery attempts this worker made, by "
                                      "channel and outcome (sent, retry, failed: given up).",
                                      "counter", NULL, NULL, 0};

atomic_llong wk_queue_ready = -1, wk_queue_delayed = -1, wk_queue_dead = -1;

/* Label values come from our own validated data; escape anyway. */
static void label(struct tq_buf *b, const char *k, const char *v)
{
    tq_buf_printf(b, "%s%s=\"", b->len ? "," : "", k);
    for (const char *p = v ? v : ""; *p; p++) {
        if (*p == '"' || *p == '\\')
            tq_buf_append(b, "\\", 1);
        if (*p == '\n')
            tq_buf_puts(b, "\\n");
        else
            tq_buf_append(b, p, 1);
    }
    tq_buf_puts(b, "\"");
}

static struct series *get(struct family *f, const char *labels)
{
    for (struct series *s = f->head; s; s = s->next)
        if (strcmp(s->labels, labels) == 0)
            return s;
    struct series *s = tq_xcalloc(1, sizeof(*s));
    snprintf(s->labels, sizeof(s->labels), "%s", labels);
    s->next = f->head;
    f->head = s;
    return s;
}

static const double *bounds(const struct family *f, size_t *n)
{
    *n = f->bounds ? f->nbounds : NB(duration_buckets);
    return f->bounds ? f->bounds : duration_buckets;
}

static void observe(struct family *f, const char *labels, double value)
{
    struct series *s = get(f, labels);
    size_t nb;
    const double *b = bounds(f, &nb);
    for (size_t i = 0; i < nb; i++)
        if (value <= b[i]) {
            s->buckets[i]++;
            break;
        }
    s->count++;
    s->sum += value;
}

void wk_metrics_provisioned(const char *tier, const char *region, double seconds)
{
    struct tq_buf b;
    tq_buf_init(&b);
    label(&b, "tier", tier);
    struct series *s = get(&prov_success, b.data);
    s->count++;
    label(&b, "region", region);
    observe(&prov_duration, b.data, seconds);
    tq_buf_cleanup(&b);
}

void wk_metrics_failed(const char *tier, const char *step)
{
    struct tq_buf b;
    tq_buf_init(&b);
    label(&b, "tier", tier);
    label(&b, "step", step && *step ? step : "none");
    get(&prov_failure, b.data)->count++;
    tq_buf_cleanup(&b);
}

void wk_metrics_revalidated(bool drifted)
{
    struct tq_buf b;
    tq_buf_init(&b);
    label(&b, "result", drifted ? "drift" : "clean");
    get(&revalidations, b.data)->count++;
    tq_buf_cleanup(&b);
}

void wk_metrics_drift(const char *step)
{
    struct tq_buf b;
    tq_buf_init(&b);
    label(&b, "step", step);
    get(&drift, b.data)->count++;
    tq_buf_cleanup(&b);
}

void wk_metrics_step(const char *kind, bool undo, double seconds)
{
    struct tq_buf b;
    tq_buf_init(&b);
    label(&b, "kind", kind);
    label(&b, "phase", undo ? "undo" : "run");
    observe(&step_duration, b.data, seconds);
    tq_buf_cleanup(&b);
}

void wk_metrics_rollback_failed(const char *tier)
{
    struct tq_buf b;
    tq_buf_init(&b);
    label(&b, "tier", tier);
    get(&rollback_failed, b.data)->count++;
    tq_buf_cleanup(&b);
}

static void shared_observe(struct family *f, const char *tier, double seconds)
{
    struct tq_buf b;
    tq_buf_init(&b);
    label(&b, "tier", tier && *tier ? tier : "unknown");
    pthread_mutex_lock(&shared_mu);
    observe(f, b.data, seconds);
    pthread_mutex_unlock(&shared_mu);
    tq_buf_cleanup(&b);
}

void wk_metrics_request_to_active(const char *tier, double seconds)
{
    shared_observe(&request_to_active, tier, seconds);
}

void wk_metrics_approval_wait(const char *tier, double seconds)
{
    shared_observe(&approval_wait, tier, seconds);
}

void wk_metrics_notification(const char *channel, const char *outcome)
{
    struct tq_buf b;
    tq_buf_init(&b);
    label(&b, "channel", channel);
    label(&b, "outcome", outcome);
    pthread_mutex_lock(&shared_mu);
    get(&notifications, b.data)->count++;
    pthread_mutex_unlock(&shared_mu);
    tq_buf_cleanup(&b);
}

static void write_family(struct tq_buf *out, const struct family *f)
{
    tq_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, f->type);
    for (const struct series *s = f->head; s; s = s->next) {
        if (strcmp(f->type, "counter") == 0) {
            tq_buf_printf(out, "%s{%s} %llu\n", f->name, s->labels, (unsigned long long)s->count);
            continue;
        }
        uint64_t cum = 0;
        size_t nb;
        const double *b = bounds(f, &nb);
        for (size_t i = 0; i < nb; i++) {
            cum += s->buckets[i];
            tq_buf_printf(out, "%s_bucket{%s,le=\"%g\"} %llu\n", f->name, s->labels,
                          b[i], (unsigned long long)cum);
        }
        tq_buf_printf(out, "%s_bucket{%s,le=\"+Inf\"} %llu\n", f->name, s->labels,
                      (unsigned long long)s->count);
        tq_buf_printf(out, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", f->name, s->labels, s->sum,
                      f->name, s->labels, (unsigned long long)s->count);
    }
}

void wk_metrics_write(struct tq_buf *out)
{
    write_family(out, &prov_duration);
    write_family(out, &prov_success);
    write_family(out, &prov_failure);
    write_family(out, &step_duration);
    write_family(out, &revalidations);
    write_family(out, &drift);
    write_family(out, &rollback_failed);
    pthread_mutex_lock(&shared_mu);
    write_family(out, &request_to_active);
    write_family(out, &approval_wait);
    write_family(out, &notifications);
    pthread_mutex_unlock(&shared_mu);
    tq_buf_printf(out, "# HELP tq_rollbacks_total Rollbacks this worker started.\n"
                       "# TYPE tq_rollbacks_total counter\ntq_rollbacks_total %llu\n",
                  (unsigned long long)atomic_load(&wk_metrics.rollbacks));
    long long ready = atomic_load(&wk_queue_ready), delayed = atomic_load(&wk_queue_delayed),
              dead = atomic_load(&wk_queue_dead);
    if (ready >= 0)
        tq_buf_printf(out,
                      "# HELP tq_queue_depth Job ids waiting in Redis, by list (last heartbeat).\n"
                      "# TYPE tq_queue_depth gauge\n"
                      "tq_queue_depth{list=\"ready\"} %lld\n"
                      "tq_queue_depth{list=\"delayed\"} %lld\n"
                      "tq_queue_depth{list=\"dead\"} %lld\n",
                      ready, delayed, dead);
}

void wk_metrics_free(void)
{
    struct family *fs[] = {&prov_duration, &prov_success,      &prov_failure,
                           &step_duration, &revalidations,     &drift,
                           &rollback_failed, &request_to_active, &approval_wait,
                           &notifications};
    for (size_t i = 0; i < sizeof(fs) / sizeof(fs[0]); i++) {
        struct series *s = fs[i]->head, *next;
        for (; s; s = next) {
            next = s->next;
            free(s);
        }
        fs[i]->head = NULL;
    }
}
