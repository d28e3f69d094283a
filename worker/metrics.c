/*
 * Labelled metrics for /metrics (docs/design.md §5): provisioning duration per
 * tier and region (histogram), successes per tier, failures per tier and
 * step, step durations per kind (histogram), revalidations by result and
 * drift by step, rollbacks, queue depths.
 * Recorded and printed on the loop thread only (the engine and the HTTP
 * responder both live there), so the series need no lock; queue depths come
 * from the heartbeat thread through atomics.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq/util.h"
#include "worker.h"

static const double duration_buckets[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
#define NBUCKETS (sizeof(duration_buckets) / sizeof(duration_buckets[0]))

struct series {
    char labels[192];                 /* rendered: tier="Gold",region="us-east-1" */
    uint64_t buckets[NBUCKETS];       /* cumulative when printed */
    uint64_t count;
    double sum;
    struct series *next;
};

struct family {
    const char *name, *help, *type;   /* type: histogram | counter */
    struct series *head;
};

static struct family prov_duration = {"tenant_provisioning_duration_seconds",
                                      "Time a worker spent provisioning a tenant, claim to activation.",
                                      "histogram", NULL};
static struct family prov_success = {"tenant_provisioning_successes_total",
                                     "Tenants this worker activated.", "counter", NULL};
static struct family prov_failure = {"tenant_provisioning_failures_total",
                                     "Provisioning jobs that failed, by the step that failed.",
                                     "counter", NULL};
static struct family revalidations = {"tq_revalidations_total",
                                      "Revalidation jobs this worker finished, by result "
                                      "(clean, drift).",
                                      "counter", NULL};
static struct family drift = {"tq_drift_detected_total",
                              "Checks that found drift on revalidation, by step.", "counter",
                              NULL};
static struct family step_duration = {"tq_step_duration_seconds",
                                      "Duration of step attempts, by step kind and phase.",
                                      "histogram", NULL};

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

static void observe(struct family *f, const char *labels, double value)
{
    struct series *s = get(f, labels);
    for (size_t i = 0; i < NBUCKETS; i++)
        if (value <= duration_buckets[i]) {
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

static void write_family(struct tq_buf *out, const struct family *f)
{
    tq_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, f->type);
    for (const struct series *s = f->head; s; s = s->next) {
        if (strcmp(f->type, "counter") == 0) {
            tq_buf_printf(out, "%s{%s} %llu\n", f->name, s->labels, (unsigned long long)s->count);
            continue;
        }
        uint64_t cum = 0;
        for (size_t i = 0; i < NBUCKETS; i++) {
            cum += s->buckets[i];
            tq_buf_printf(out, "%s_bucket{%s,le=\"%g\"} %llu\n", f->name, s->labels,
                          duration_buckets[i], (unsigned long long)cum);
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
    struct family *fs[] = {&prov_duration, &prov_success, &prov_failure, &step_duration,
                           &revalidations, &drift};
    for (size_t i = 0; i < sizeof(fs) / sizeof(fs[0]); i++) {
        struct series *s = fs[i]->head, *next;
        for (; s; s = next) {
            next = s->next;
            free(s);
        }
        fs[i]->head = NULL;
    }
}
