/*
 * The http and notify step kinds, and the engine's notifications, against
 * tests/stubs/saas_stub.py (vector DB, dashboards, Slack webhook) started on
 * a free port for each test: resources created once with an
 * Idempotency-Key, retried through injected 500s, removed on rollback;
 * notification failures never fail a tenant; tokens never stored.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "tq/util.h"

#define TOKEN "tok-5f1c2e9a7b"

static pid_t stub_pid;
static int stub_port;

static void start_stub(void)
{
    char portfile[300];
    snprintf(portfile, sizeof(portfile), "%s/stub.port", H.tmpdir);
    stub_pid = fork();
    cr_assert_neq(stub_pid, -1);
    if (stub_pid == 0) {
        execlp("python3", "python3", TQ_SOURCE_DIR "/tests/stubs/saas_stub.py", "--port", "0",
               "--port-file", portfile, "--token", TOKEN, "--quiet", "--lifetime", "300",
               (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200 && !stub_port; i++) {
        FILE *f = fopen(portfile, "r");
        if (f) {
            if (fscanf(f, "%d", &stub_port) != 1)
                stub_port = 0;
            fclose(f);
        }
        if (!stub_port)
            tq_sleep_ms(50);
    }
    cr_assert_gt(stub_port, 0, "saas stub did not start");
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", stub_port);
    setenv("TQ_VECTOR_URL", url, 1);
    setenv("TQ_DASHBOARD_URL", url, 1);
    setenv("TQ_VECTOR_TOKEN", TOKEN, 1);
    setenv("TQ_DASHBOARD_TOKEN", TOKEN, 1);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hooks/tenantq", stub_port);
    setenv("TQ_NOTIFY_WEBHOOK_URL", url, 1);
    unsetenv("TQ_SMTP_URL");
}

static void init(void)
{
    h_setup();
    start_stub();
}

static void fini(void)
{
    if (stub_pid > 0) {
        kill(stub_pid, SIGTERM);
        waitpid(stub_pid, NULL, 0);
    }
    h_teardown();
}

TestSuite(http, .init = init, .fini = fini, .timeout = 180);

/* GET or POST an admin endpoint of the stub; JSON answer (caller decrefs) or NULL. */
static json_t *admin(const char *method, const char *path)
{
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", stub_port, path);
    char *body = h_http(method, url);
    json_error_t je;
    json_t *o = json_loads(body, 0, &je);
    free(body);
    return o;
}

static void pipeline(const char *name, const char *steps)
{
    char text[8192];
    snprintf(text, sizeof(text), "{\"name\":\"%s\",\"steps\":[%s]}", name, steps);
    h_use_pipeline(h_write_file(name, text));
}

#define VECTOR_STEP                                                                         \
    "{\"name\":\"vector\",\"kind\":\"http\",\"enabled\":\"${env.TQ_VECTOR_URL}\","          \
    " \"params\":{\"method\":\"PUT\",\"url\":\"${env.TQ_VECTOR_URL}/v1/namespaces/${tenant.id}\"," \
    "  \"headers\":{\"Authorization\":\"Bearer ${env.TQ_VECTOR_TOKEN}\"},"                  \
    "  \"body\":{\"replicas\":2,\"tier\":\"${tenant.tier}\"}},"                               \
    " \"undo\":{\"params\":{\"method\":\"DELETE\","                                          \
    "  \"url\":\"${env.TQ_VECTOR_URL}/v1/namespaces/${tenant.id}\","                         \
    "  \"headers\":{\"Authorization\":\"Bearer ${env.TQ_VECTOR_TOKEN}\"},"                  \
    "  \"expect\":[200,204,404]}},"                                                           \
    " \"retry\":{\"max_attempts\":4,\"base_ms\":20,\"max_ms\":100}}"

#define NOTIFY_STEP                                                                          \
    "{\"name\":\"notify\",\"kind\":\"notify\",\"needs\":[\"vector\"],"                        \
    " \"params\":{\"event\":\"activated\",\"text\":\"ready\","                               \
    "  \"webhook_url\":\"${env.TQ_NOTIFY_WEBHOOK_URL}\",\"smtp_url\":\"${env.TQ_SMTP_URL}\"}}"

static void submit(const char *id)
{
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--tenant-id", id, "--name", id, "--tier", "Gold",
                       "--region", "us-east-1", "--budget", "700000", "--owner", "o@example.com",
                       NULL);
    cr_assert_eq(rc, 0, "%s", err);
    free(err);
}

static bool has_namespace(const char *id)
{
    json_t *st = admin("GET", "/_admin/state");
    cr_assert_not_null(st);
    json_t *ns = json_object_get(st, "namespaces");
    bool found = json_object_get(ns, id) != NULL;
    if (json_is_array(ns)) {
        size_t i;
        json_t *v;
        json_array_foreach(ns, i, v) {
            const char *name = json_string_value(json_object_get(v, "name"));
            if (name && strcmp(name, id) == 0)
                found = true;
        }
    }
    json_decref(st);
    return found;
}

static bool webhook_mentions(const char *what)
{
    json_t *st = admin("GET", "/_admin/state");
    char *dump = json_dumps(json_object_get(st, "hooks"), JSON_COMPACT);
    bool found = dump && strstr(dump, what);
    free(dump);
    json_decref(st);
    return found;
}

Test(http, creates_once_then_notifies)
{
    pipeline("ok.json", VECTOR_STEP "," NOTIFY_STEP);
    const char *t = h_tenant("vec");
    submit(t);
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("active", 30000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", t));
    cr_assert(has_namespace(t), "namespace created in the vector DB");
    bool told = false;
    for (int i = 0; i < 50 && !told; i++) {
        told = webhook_mentions(t);
        if (!told)
            tq_sleep_ms(100);
    }
    cr_assert(told, "the owner's webhook heard about the activation");
    /* run the step again, as a redelivery would: same key, same single namespace */
    char *v = h_sql("UPDATE tq.job_steps SET status = 'pending'");
    free(v);
    v = h_sql("UPDATE tq.jobs SET status = 'queued', finished_at = NULL");
    free(v);
    v = h_redis("LPUSH tq:{%s}:ready 1", H.queue);
    free(v);
    cr_assert(h_wait_sql("2", 30000, "SELECT count(*) FROM tq.step_attempts WHERE step = 'vector'"
                         " AND status = 'succeeded'"));
    cr_assert(h_wait_sql("succeeded", 30000, "SELECT status FROM tq.jobs"));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert(has_namespace(t));
    /* the token was used but is stored nowhere */
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.job_steps WHERE output::text LIKE '%%" TOKEN "%%'"), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.pipelines WHERE body LIKE '%%" TOKEN "%%'"), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE detail::text LIKE '%%" TOKEN "%%'"), 0);
}

Test(http, server_errors_are_retried)
{
    json_t *r = admin("POST", "/_admin/fail?path=/v1/namespaces&status=500&count=2");
    json_decref(r);
    pipeline("retry.json", VECTOR_STEP);
    const char *t = h_tenant("flaky");
    submit(t);
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("active", 30000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", t));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE status = 'failed'"), 2);
    cr_assert(has_namespace(t));
}

Test(http, rollback_deletes_and_failure_is_notified)
{
    pipeline("rb.json", VECTOR_STEP ","
             "{\"name\":\"check\",\"kind\":\"sleep\",\"needs\":[\"vector\"],\"class\":\"integration\","
             " \"params\":{\"ms\":10,\"fail_attempts\":99},\"retry\":{\"max_attempts\":1}}");
    const char *t = h_tenant("gone");
    submit(t);
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("failed", 30000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", t));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_not(has_namespace(t), "the undo removed the namespace");
    bool told = false;
    for (int i = 0; i < 50 && !told; i++) {
        told = webhook_mentions(t);
        if (!told)
            tq_sleep_ms(100);
    }
    cr_assert(told, "the failure was notified");
}

Test(http, a_failing_notification_never_fails_the_tenant)
{
    setenv("TQ_NOTIFY_WEBHOOK_URL", "http://127.0.0.1:9/hooks/nobody-listens", 1);
    pipeline("nf.json", VECTOR_STEP "," NOTIFY_STEP);
    const char *t = h_tenant("quiet");
    submit(t);
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("active", 30000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", t));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event = 'step_warning'"
                            " AND detail->>'reason' LIKE '%%notification not delivered%%'"), 1,
                 "the failed notification is audited");
}
