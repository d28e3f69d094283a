/* Status names from the tables in tq/status.h. */
#include "tq/status.h"

#include <stddef.h>
#include <string.h>

static const char *const tenant_names[] = {
#define X(n, s, f) [TQ_TS_##n] = s,
    TQ_TENANT_STATUS_MAP(X)
#undef X
};
static const bool tenant_finished[] = {
#define X(n, s, f) [TQ_TS_##n] = f,
    TQ_TENANT_STATUS_MAP(X)
#undef X
};
static const char *const job_names[] = {
#define X(n, s) [TQ_JS_##n] = s,
    TQ_JOB_STATUS_MAP(X)
#undef X
};
static const char *const step_names[] = {
#define X(n, s) [TQ_SS_##n] = s,
    TQ_STEP_STATUS_MAP(X)
#undef X
};
#define N(a) (sizeof(a) / sizeof(a[0]))

static const char *name_of(const char *const *names, size_t n, int v)
{
    return v > 0 && (size_t)v < n ? names[v] : NULL;
}

static int parse(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 1; name && i < n; i++)
        if (strcmp(names[i], name) == 0)
            return (int)i;
    return 0;
}

const char *tq_tenant_status_name(enum tq_tenant_status s)
{
    return name_of(tenant_names, N(tenant_names), (int)s);
}

const char *tq_job_status_name(enum tq_job_status s)
{
    return name_of(job_names, N(job_names), (int)s);
}

const char *tq_step_status_name(enum tq_step_status s)
{
    return name_of(step_names, N(step_names), (int)s);
}

enum tq_tenant_status tq_tenant_status_parse(const char *name)
{
    return (enum tq_tenant_status)parse(tenant_names, N(tenant_names), name);
}

enum tq_job_status tq_job_status_parse(const char *name)
{
    return (enum tq_job_status)parse(job_names, N(job_names), name);
}

enum tq_step_status tq_step_status_parse(const char *name)
{
    return (enum tq_step_status)parse(step_names, N(step_names), name);
}

bool tq_tenant_status_finished(const char *name)
{
    return tenant_finished[tq_tenant_status_parse(name)];
}
