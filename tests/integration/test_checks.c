/*
 * The validation checks of issue 15 through the shipped pipeline
 * (deploy/pipelines/tenant-provision.json) against tests/stubs/saas_stub.py
 * (vector DB with per-tenant JWT access, dashboards, /metrics) and a real
 * Prometheus (Debian's) scraping the stub: vector search and latency
 * (check_vector), the tenant's JWT (auth_token, check_auth), the tenant's
 * series in Prometheus (check_monitoring) and cost tags on every SaaS
 * resource (check_tags). Each failure mode is made real in the stand-in
 * (wrong ranking, slow queries, a JWT that opens everything, a missing
 * tag, no scrape) and must end as its class says: rollback, warning, block.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "netutil.h"
#include "tq/jwt.h"
#include "tq/util.h"

#define TOKEN "tok-checks-8d2f61"
/* 32-byte Ed25519 seeds (base64) */
#define AUTH_KEY "k2:Tq2bW8vWJ0y7h3JzZ0m0c3JkV2tQb3hMeDdhZ3JwWmE="
#define OLD_KEY "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

static pid_t stub_pid, prom_pid;
static int stub_port, prom_port;

static int read_port(const char *file)
{
    int port = 0;
    for (int i = 0; i < 200 && !port; i++) {
        FILE *f = fopen(file, "r");
        if (f) {
            if (fscanf(f, "%d", &port) != 1)
                port = 0;
            fclose(f);
        }
        if (!port)
            tq_sleep_ms(50);
    }
    return port;
}

static void start_stub(bool jwks)
{
    char portfile[300], jwksfile[300], keyfile[300];
    snprintf(portfile, sizeof(portfile), "%s/stub.port", H.tmpdir);
    snprintf(jwksfile, sizeof(jwksfile), "%s/jwks.json", H.tmpdir);
    snprintf(keyfile, sizeof(keyfile), "%s/auth.keys", H.tmpdir);
    unlink(portfile);   /* a restart must not read the last server's port */
    h_write_file("auth.keys", AUTH_KEY "\n" OLD_KEY "\n");
    chmod(keyfile, 0600);
    h_setenv("TQ_AUTH_KEY_FILE", keyfile);
    /* publish the public keys the way an operator does */
    char *out = NULL, *err = NULL;
    cr_assert_eq(h_enqueue(&out, &err, "auth", "jwks", NULL), 0, "%s", err);
    h_write_file("jwks.json", out);
    free(out);
    free(err);
    stub_pid = fork();
    cr_assert_neq(stub_pid, -1);
    if (stub_pid == 0) {
        execl("/usr/bin/python3", "python3", TQ_SOURCE_DIR "/tests/stubs/saas_stub.py", "--port",
              "0", "--port-file", portfile, "--token", TOKEN, "--quiet", "--lifetime", "300",
              jwks ? "--jwks" : NULL, jwksfile, (char *)NULL);
        _exit(127);
    }
    stub_port = read_port(portfile);
    cr_assert_gt(stub_port, 0, "saas stub did not start");
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", stub_port);
    h_setenv("TQ_VECTOR_URL", url);
    h_setenv("TQ_DASHBOARD_URL", url);
    h_setenv("TQ_VECTOR_TOKEN", TOKEN);
    h_setenv("TQ_DASHBOARD_TOKEN", TOKEN);
    h_setenv("TQ_ENVIRONMENT", "test");
    h_setenv("TQ_PROMETHEUS_URL", NULL);
    h_setenv("TQ_NOTIFY_WEBHOOK_URL", NULL);
    h_setenv("TQ_SMTP_URL", NULL);
    /* the region map: the tenants' region (eu-west-1) has its vector and
       dashboard APIs on the stand-in; no object storage here */
    char map[512];
    snprintf(map, sizeof(map), "{\"eu-west-1\": {\"s3_region\": \"eu-west-1\", \"s3_endpoint\":"
             " null, \"vector_url\": \"%s\", \"dashboard_url\": \"%s\"}}", url, url);
    h_setenv("TQ_REGIONS_FILE", h_write_file("regions.json", map));
}

/* Debian's prometheus scraping target_port every 200 ms; skips when absent. */
static void start_prometheus(int target_port)
{
    if (access("/usr/bin/prometheus", X_OK) != 0)
        cr_skip_test("prometheus is not installed (Debian package prometheus)");
    prom_port = free_port();
    char cfg[512];
    snprintf(cfg, sizeof(cfg),
             "global: {scrape_interval: 200ms, scrape_timeout: 150ms}\n"
             "scrape_configs:\n"
             "  - job_name: saas\n"
             "    static_configs: [{targets: ['127.0.0.1:%d']}]\n", target_port);
    const char *file = h_write_file("prometheus.yml", cfg);
    char data[300], addr[64], log[300], cfgarg[340], dataarg[320];
    snprintf(data, sizeof(data), "%s/prom-data", H.tmpdir);
    snprintf(addr, sizeof(addr), "--web.listen-address=127.0.0.1:%d", prom_port);
    snprintf(log, sizeof(log), "%s/prometheus.log", H.tmpdir);
    snprintf(cfgarg, sizeof(cfgarg), "--config.file=%s", file);
    snprintf(dataarg, sizeof(dataarg), "--storage.tsdb.path=%s", data);
    const char *argv[] = {"/usr/bin/prometheus", cfgarg, dataarg, addr,
                          "--storage.tsdb.retention.time=1h", NULL};
    prom_pid = h_spawn(argv, log);
    bool ready = false;
    for (int i = 0; i < 300 && !ready; i++) {   /* bounded: 30 s */
        char *r = get(prom_port, "/-/ready");
        ready = r && status_of(r) == 200;
        free(r);
        if (!ready)
            tq_sleep_ms(100);
    }
    cr_assert(ready, "prometheus did not become ready (log %s)", log);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", prom_port);
    h_setenv("TQ_PROMETHEUS_URL", url);
}

static void stop(pid_t *pid)
{
    if (*pid > 0) {
        kill(*pid, SIGTERM);
        waitpid(*pid, NULL, 0);
        *pid = 0;
    }
}

static void init(void)
{
    h_setup();
    start_stub(true);
}

static void fini(void)
{
    stop(&prom_pid);
    stop(&stub_pid);
    h_teardown();
}

TestSuite(checks, .init = init, .fini = fini, .timeout = 240);

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

static void submit(const char *id, const char *tier, const char *budget)
{
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--tenant-id", id, "--name", id, "--tier", tier,
                       "--region", "eu-west-1", "--budget", budget, "--owner", "o@example.com",
                       NULL);
    cr_assert_eq(rc, 0, "%s", err);
    free(err);
}

static char *step_status(const char *tenant, const char *step)
{
    return h_sql("SELECT s.status FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id WHERE"
                 " j.tenant_id = '%s' AND s.step = '%s' ORDER BY j.id DESC LIMIT 1", tenant, step);
}

static json_t *step_output(const char *tenant, const char *step)
{
    char *o = h_sql("SELECT coalesce(s.output::text, 'null') FROM tq.job_steps s JOIN tq.jobs j"
                    " ON j.id = s.job_id WHERE j.tenant_id = '%s' AND s.step = '%s' ORDER BY j.id"
                    " DESC LIMIT 1", tenant, step);
    json_t *v = h_json(o, step);
    free(o);
    return v;
}

static bool has_namespace(const char *id)
{
    json_t *st = admin("GET", "/_admin/state");
    bool found = json_object_get(json_object_get(st, "namespaces"), id) != NULL;
    json_decref(st);
    return found;
}

static void expect_step(const char *tenant, const char *step, const char *want)
{
    char *st = step_status(tenant, step);
    bool ok = st && strcmp(st, want) == 0;
    free(st);
    cr_assert(ok, "step %s of %s is not %s", step, tenant, want);
}

/* A check that failed: its last attempt failed (the step row may be compensated since). */
static void expect_failed(const char *tenant, const char *step)
{
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts a JOIN tq.jobs j ON j.id ="
                            " a.job_id WHERE j.tenant_id = '%s' AND a.step = '%s' AND a.phase ="
                            " 'run' AND a.status = 'succeeded'", tenant, step), 0,
                 "step %s of %s never succeeded", step, tenant);
    cr_assert_gt(h_sql_long("SELECT count(*) FROM tq.step_attempts a JOIN tq.jobs j ON j.id ="
                            " a.job_id WHERE j.tenant_id = '%s' AND a.step = '%s' AND a.phase ="
                            " 'run' AND a.status = 'failed'", tenant, step), 0,
                 "step %s of %s failed", step, tenant);
}

/* A pipeline file made from the shipped one with one change (jq-free: jansson). */
static void use_shipped_with(const char *name, void (*edit)(json_t *steps))
{
    json_error_t je;
    json_t *p = json_load_file(TQ_SOURCE_DIR "/deploy/pipelines/tenant-provision.json", 0, &je);
    cr_assert_not_null(p, "%s", je.text);
    json_object_set_new(p, "name", json_string(name));
    edit(json_object_get(p, "steps"));
    char *text = json_dumps(p, JSON_INDENT(2));
    char file[64];
    snprintf(file, sizeof(file), "%s.json", name);
    h_use_pipeline(h_write_file(file, text));
    free(text);
    json_decref(p);
}

static json_t *step_named(json_t *steps, const char *name)
{
    size_t i;
    json_t *s;
    json_array_foreach(steps, i, s) if (strcmp(json_string_value(json_object_get(s, "name")),
                                               name) == 0) return s;
    cr_assert_fail("no step %s in the shipped pipeline", name);
    return NULL;
}

Test(checks, every_check_passes_and_every_resource_carries_its_cost_tags)
{
    const char *t = h_tenant("good");
    submit(t, "Gold", "800000");
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("active", 60000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'",
                         t), "tenant never became active");
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    expect_step(t, "check-vector", "succeeded");
    expect_step(t, "check-vector-latency", "succeeded");
    expect_step(t, "api-credential", "succeeded");
    expect_step(t, "check-auth", "succeeded");
    expect_step(t, "check-saas-cost-tags", "succeeded");
    expect_step(t, "check-monitoring", "skipped");   /* no TQ_PROMETHEUS_URL here */

    /* search: each query's own probe ranked first */
    json_t *o = step_output(t, "check-vector");
    json_t *ranked = json_object_get(o, "ranked");
    cr_assert_eq(json_array_size(ranked), 3);
    size_t i;
    json_t *r;
    json_array_foreach(ranked, i, r)
        cr_assert_str_eq(json_string_value(json_object_get(r, "first")),
                         json_string_value(json_object_get(r, "query")));
    json_decref(o);
    o = step_output(t, "check-vector-latency");
    cr_assert_eq(json_integer_value(json_object_get(o, "queries")), 20);
    cr_assert_eq(json_integer_value(json_object_get(o, "sla_ms")), 500, "Gold's SLA");
    cr_assert(json_is_real(json_object_get(o, "p95_ms")));
    json_decref(o);

    /* the probes are gone again; the namespace and dashboard carry the five tags */
    json_t *st = admin("GET", "/_admin/state");
    json_t *ns = json_object_get(json_object_get(st, "namespaces"), t);
    cr_assert_not_null(ns);
    cr_assert_eq(json_array_size(json_object_get(ns, "vector_ids")), 0, "probes removed");
    char uid[128];
    snprintf(uid, sizeof(uid), "tenant-%s", t);
    json_t *tags[2] = {json_object_get(json_object_get(ns, "config"), "tags"),
                       json_object_get(json_object_get(json_object_get(
                           json_object_get(st, "dashboards"), uid), "dashboard"), "tags")};
    for (int k = 0; k < 2; k++) {
        cr_assert_str_eq(json_string_value(json_object_get(tags[k], "TenantID")), t);
        cr_assert_str_eq(json_string_value(json_object_get(tags[k], "Tier")), "Gold");
        cr_assert_str_eq(json_string_value(json_object_get(tags[k], "CostCenter")),
                         "rag-platform-gold");
        cr_assert_str_eq(json_string_value(json_object_get(tags[k], "ManagedBy")), "tenantq");
        cr_assert_str_eq(json_string_value(json_object_get(tags[k], "Environment")), "test");
    }
    json_decref(st);

    /* the credential: in the store, signed by the current key, with the tenant's claims */
    json_t *api = h_secret(t, "api");
    cr_assert_not_null(api, "no API credential in the store");
    const char *token = json_string_value(json_object_get(api, "token"));
    struct tq_jwt_keys *k = NULL;
    char why[256];
    cr_assert_eq(tq_jwt_keys_parse(AUTH_KEY, &k, why, sizeof(why)), TQ_OK, "%s", why);
    json_t *claims = NULL;
    char kid[40];
    cr_assert_eq(tq_jwt_verify(k, token, &claims, kid, sizeof(kid), why, sizeof(why)), TQ_OK,
                 "%s", why);
    cr_assert_str_eq(kid, "k2");
    cr_assert_str_eq(json_string_value(json_object_get(claims, "tenant_id")), t);
    cr_assert_str_eq(json_string_value(json_object_get(claims, "tier")), "Gold");
    cr_assert_str_eq(json_string_value(json_object_get(claims, "region")), "eu-west-1");
    cr_assert_gt(json_integer_value(json_object_get(claims, "exp")),
                 json_integer_value(json_object_get(claims, "iat")));
    json_decref(claims);
    tq_jwt_keys_free(k);
    o = step_output(t, "check-auth");
    cr_assert_eq(json_integer_value(json_object_get(o, "own_namespace_status")), 200);
    cr_assert_eq(json_integer_value(json_object_get(o, "foreign_namespace_status")), 403);
    json_decref(o);
    /* the token is a secret: nowhere but the store */
    char *like = tq_xasprintf("%%%s%%", strrchr(token, '.') + 1);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.job_steps WHERE output::text LIKE '%s'",
                            like), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE detail::text LIKE '%s'",
                            like), 0);
    free(like);
    json_decref(api);
}

Test(checks, a_search_that_ranks_the_wrong_document_first_rolls_back)
{
    json_decref(admin("POST", "/_admin/quirk?name=reverse_ranking"));
    const char *t = h_tenant("badrank");
    submit(t, "Silver", "300000");
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("failed", 90000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'",
                         t), "a wrong ranking must fail the tenant");
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    expect_failed(t, "check-vector");
    char *e = h_sql("SELECT s.last_error FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id"
                    " WHERE j.tenant_id = '%s' AND s.step = 'check-vector'", t);
    cr_assert(e && strstr(e, "ranked") && strstr(e, "tq-probe-search-0"), "%s", e);
    free(e);
    cr_assert_not(has_namespace(t), "rolled back: the namespace was deleted");
    cr_assert_null(h_secret(t, "api"), "rolled back: the credential was destroyed");
}

Test(checks, slow_vector_queries_activate_with_a_performance_warning)
{
    char path[200];
    const char *t = h_tenant("slow");
    /* Gold's SLA is 500 ms: every query of this tenant takes 520 ms */
    snprintf(path, sizeof(path), "/_admin/latency?path=/v1/namespaces/%s/query&ms=520", t);
    json_decref(admin("POST", path));
    submit(t, "Gold", "800000");
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("active", 120000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'",
                         t), "a slow vector DB is a warning, not a failure");
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    expect_step(t, "check-vector", "succeeded");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE tenant_id = '%s' AND"
                            " event = 'performance_warning' AND detail::text LIKE"
                            " '%%vector query p95%%over the Gold SLA of 500 ms%%'", t), 1);
}

Test(checks, a_jwt_that_opens_another_tenants_namespace_rolls_back_at_once)
{
    /* the stand-in without the JWKS: the tenant's token opens nothing */
    stop(&stub_pid);
    start_stub(false);
    const char *t = h_tenant("nojwks");
    submit(t, "Bronze", "100000");
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("failed", 60000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'",
                         t));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    expect_failed(t, "check-auth");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts a JOIN tq.jobs j ON j.id ="
                            " a.job_id WHERE j.tenant_id = '%s' AND a.step = 'check-auth' AND a.phase = 'run'", t), 1,
                 "security: no retry");
    char *e = h_sql("SELECT s.last_error FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id"
                    " WHERE j.tenant_id = '%s' AND s.step = 'check-auth'", t);
    cr_assert(e && strstr(e, "does not open its own namespace") && strstr(e, "401"), "%s", e);
    free(e);
    cr_assert_null(h_secret(t, "api"));
}

Test(checks, a_forged_or_foreign_token_is_refused_by_the_stand_in)
{
    /* a token of tenant A: opens A's namespace, not B's; one signed by an unknown key: nothing */
    struct tq_jwt_keys *k = NULL, *forger = NULL;
    char why[256];
    cr_assert_eq(tq_jwt_keys_parse(AUTH_KEY, &k, why, sizeof(why)), TQ_OK);
    cr_assert_eq(tq_jwt_keys_parse("k2:" "Zm9yZ2VkLWtleS1mb3JnZWQta2V5LWZvcmdlZC1rZXk=", &forger,
                                   why, sizeof(why)), TQ_OK, "%s", why);
    long now = (long)(tq_now_ms() / 1000);
    json_t *claims = json_pack("{s:s, s:s, s:i, s:i}", "tenant_id", "tenant-a", "sub",
                               "tenant-a", "iat", now, "exp", now + 600);
    char *good = tq_jwt_sign(k, claims, why, sizeof(why));
    char *forged = tq_jwt_sign(forger, claims, why, sizeof(why));
    json_object_set_new(claims, "exp", json_integer(now - 1));
    char *expired = tq_jwt_sign(k, claims, why, sizeof(why));
    json_decref(claims);
    cr_assert(good && forged && expired);
    {
        char url[160];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/namespaces/tenant-a", stub_port);
        const char *argv[] = {"/usr/bin/curl", "-sf", "-o", "/dev/null", "-X", "PUT", "-H",
                              "Authorization: Bearer " TOKEN, "-H",
                              "Content-Type: application/json", "-d", "{\"replicas\": 1}", url,
                              NULL};
        cr_assert_eq(h_run(argv, NULL, NULL), 0, "create namespace tenant-a");
    }
    struct {
        const char *tok, *ns;
        const char *want;
    } cases[] = {{good, "tenant-a", "200"}, {good, "tenant-b", "403"},
                 {forged, "tenant-a", "401"}, {expired, "tenant-a", "401"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char url[200], hdr[2048];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/namespaces/%s", stub_port,
                 cases[i].ns);
        snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s", cases[i].tok);
        const char *argv[] = {"/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                              "-H", hdr, url, NULL};
        char *out = NULL;
        cr_assert_eq(h_run(argv, &out, NULL), 0);
        cr_assert_str_eq(out, cases[i].want, "case %zu (%s)", i, cases[i].ns);
        free(out);
    }
    /* and the worker's own verification refuses the forged one */
    json_t *c = NULL;
    cr_assert_eq(tq_jwt_verify(k, forged, &c, NULL, 0, why, sizeof(why)), TQ_ESTEP);
    cr_assert(strstr(why, "signature does not verify"), "%s", why);
    free(good);
    free(forged);
    free(expired);
    tq_jwt_keys_free(k);
    tq_jwt_keys_free(forger);
}

static void drop_environment_tag(json_t *steps)
{
    json_t *tags = json_object_get(json_object_get(json_object_get(step_named(steps, "dashboard"),
                                                                   "params"), "body"), "tags");
    json_object_del(tags, "Environment");
}

Test(checks, a_resource_without_its_cost_tags_blocks_activation)
{
    use_shipped_with("untagged", drop_environment_tag);
    const char *t = h_tenant("untagged");
    submit(t, "Silver", "300000");
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("blocked", 60000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'",
                         t), "a missing cost tag is a compliance failure: blocked");
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    expect_failed(t, "check-saas-cost-tags");
    char *e = h_sql("SELECT s.last_error FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id"
                    " WHERE j.tenant_id = '%s' AND s.step = 'check-saas-cost-tags'", t);
    cr_assert(e && strstr(e, "dashboard: tag Environment is missing (expected \"test\")"), "%s", e);
    free(e);
}

/* A fleet that never set TQ_ENVIRONMENT tags every resource "dev", the
   default the bucket and the tag check share, and activates. */
Test(checks, without_TQ_ENVIRONMENT_every_resource_is_tagged_dev_and_activates)
{
    h_setenv("TQ_ENVIRONMENT", NULL);
    const char *t = h_tenant("noenv");
    submit(t, "Gold", "800000");
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("active", 60000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'",
                         t), "tenant never became active");
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    expect_step(t, "check-saas-cost-tags", "succeeded");
}

static void short_monitoring_wait(json_t *steps)
{
    json_t *m = step_named(steps, "check-monitoring");
    json_object_set_new(json_object_get(m, "params"), "wait_ms", json_integer(2000));
    json_object_set_new(m, "retry", json_pack("{s:i}", "max_attempts", 1));
}

Test(checks, the_tenants_series_reach_prometheus)
{
    start_prometheus(stub_port);
    const char *t = h_tenant("metrics");
    submit(t, "Gold", "800000");
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("active", 60000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'",
                         t));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    expect_step(t, "check-monitoring", "succeeded");
    json_t *o = step_output(t, "check-monitoring");
    cr_assert_geq(json_integer_value(json_object_get(o, "series")), 1);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(o, "labels"), "tenant")),
                     t);
    json_decref(o);
}

Test(checks, no_series_in_prometheus_rolls_back)
{
    /* Prometheus scrapes a port where nothing listens: the tenant's series never come */
    start_prometheus(free_port());
    use_shipped_with("nometrics", short_monitoring_wait);
    const char *t = h_tenant("nometrics");
    submit(t, "Gold", "800000");
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("failed", 60000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'",
                         t));
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    expect_failed(t, "check-monitoring");
    char *e = h_sql("SELECT s.last_error FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id"
                    " WHERE j.tenant_id = '%s' AND s.step = 'check-monitoring'", t);
    cr_assert(e && strstr(e, "no series for saas_namespace_vectors"), "%s", e);
    free(e);
    cr_assert_not(has_namespace(t), "rolled back");
}
