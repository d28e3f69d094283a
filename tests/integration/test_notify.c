/*
 * Notifications derived from audit events (worker/dispatch.c), against a
 * real SMTP server (tests/stubs/smtp_stub.py on Debian's python3-aiosmtpd)
 * and tests/stubs/saas_stub.py (Slack-style webhooks, PagerDuty Events v2).
 * Each test asserts on what the servers received: recipients, subjects,
 * bodies without secrets, one message per event and channel with two
 * workers, and a retry after the endpoint was down (delivered once); also
 * that provisioning goes on while every endpoint is down, that a bad routes
 * file is refused naming every problem, and that /metrics stays clean for
 * promtool with the new histograms and counters.
 *
 * Events a helper of approval governance writes (pending_approval,
 * approved, approval_escalated) are inserted into tq.audit_events here as
 * that code would; activated, failed and rollback_failed come from real
 * pipelines.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "netutil.h"
#include "stubs.h"
#include "tq/util.h"

#define ROUTING_KEY "RK0a1b2c3d4e5f60718293a4b5c6d7e8f9"
#define HOOK_SECRET "Tq7SecretHookPath"

static pid_t helpers[8];
static int nhelpers;
static int saas_port, smtp_port;
static char smtp_out[300], routes_path[300];

static void init(void)
{
    h_setup();
}

static void fini(void)
{
    for (int i = 0; i < nhelpers; i++) {
        kill(helpers[i], SIGTERM);
        waitpid(helpers[i], NULL, 0);
    }
    h_teardown();
}

TestSuite(notify, .init = init, .fini = fini, .timeout = 300);

static bool port_open(int port)
{
    int s = connect_to(port, false);
    if (s >= 0)
        close(s);
    return s >= 0;
}

static pid_t start_server(const char *const *argv, const char *out_path, int port)
{
    pid_t pid = h_spawn(argv, out_path);
    cr_assert_gt(pid, 0);
    helpers[nhelpers++] = pid;
    for (int i = 0; i < 200 && !port_open(port); i++)
        tq_sleep_ms(50);
    cr_assert(port_open(port), "%s did not start on port %d", argv[1], port);
    return pid;
}

static void start_saas(void)
{
    saas_port = free_port();
    char ps[16], out[300];
    snprintf(ps, sizeof(ps), "%d", saas_port);
    snprintf(out, sizeof(out), "%s/saas.log", H.tmpdir);
    const char *argv[] = {"/usr/bin/python3", TQ_SOURCE_DIR "/tests/stubs/saas_stub.py", "--port",
                          ps, "--quiet", "--lifetime", "300", NULL};
    start_server(argv, out, saas_port);
}

/* The SMTP server on smtp_port (chosen before, so it can start late). */
static pid_t start_smtp(void)
{
    char ps[16], out[300];
    snprintf(ps, sizeof(ps), "%d", smtp_port);
    snprintf(out, sizeof(out), "%s/smtp.log", H.tmpdir);
    const char *argv[] = {"/usr/bin/python3", TQ_SOURCE_DIR "/tests/stubs/smtp_stub.py", "--out",
                          smtp_out, "--port", ps, "--lifetime", "300", NULL};
    return start_server(argv, out, smtp_port);
}

/* Routes as an operator writes them; every channel of issue 15's audiences. */
static void write_routes(void)
{
    char text[4096];
    snprintf(text, sizeof(text),
             "{\"channels\": {"
             " \"requests\": {\"type\": \"slack\", \"url\": \"http://127.0.0.1:%d/hooks/requests/" HOOK_SECRET "\"},"
             " \"activations\": {\"type\": \"slack\", \"url\": \"http://127.0.0.1:%d/hooks/activations/" HOOK_SECRET "\"},"
             " \"platform-alerts\": {\"type\": \"slack\", \"url\": \"http://127.0.0.1:%d/hooks/alerts/" HOOK_SECRET "\"},"
             " \"approvers\": {\"type\": \"email\", \"to\": [\"cfo@example.com\", \"controller@example.com\"]},"
             " \"requester\": {\"type\": \"email\", \"requester\": true},"
             " \"paging\": {\"type\": \"pagerduty\", \"url\": \"http://127.0.0.1:%d/v2/enqueue\","
             "   \"routing_key\": \"" ROUTING_KEY "\"}},"
             "\"routes\": {"
             " \"pending_approval\": [\"approvers\", \"requests\"],"
             " \"approval_escalated\": [\"approvers\", \"requests\"],"
             " \"activated\": [\"requester\", \"activations\"],"
             " \"failed\": [\"platform-alerts\"],"
             " \"rollback_failed\": [\"platform-alerts\", \"paging\"],"
             " \"drift_detected\": [\"platform-alerts\"]}}",
             saas_port, saas_port, saas_port, saas_port);
    snprintf(routes_path, sizeof(routes_path), "%s", h_write_file("routes.json", text));
}

static void setup_notify(bool smtp_up)
{
    start_saas();
    smtp_port = free_port();
    snprintf(smtp_out, sizeof(smtp_out), "%s/smtp.jsonl", H.tmpdir);
    if (smtp_up)
        start_smtp();
    write_routes();
    char url[64];
    snprintf(url, sizeof(url), "smtp://127.0.0.1:%d", smtp_port);
    h_setenv("TQ_SMTP_URL", url);
    h_setenv("TQ_NOTIFY_ROUTES_FILE", routes_path);
    h_setenv("TQ_NOTIFY_FROM", "tenantq@example.com");
    h_setenv("TQ_NOTIFY_POLL_MS", "100");
    h_setenv("TQ_NOTIFY_BACKOFF_MS", "200");
    h_setenv("TQ_NOTIFY_WEBHOOK_URL", NULL);
    h_setenv("TQ_NOTIFY_TO", NULL);
}

static void pipeline(const char *name, const char *steps)
{
    char text[8192];
    snprintf(text, sizeof(text), "{\"name\":\"%s\",\"steps\":[%s]}", name, steps);
    h_use_pipeline(h_write_file(name, text));
}

static void submit(const char *id, const char *owner)
{
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--tenant-id", id, "--name", id, "--tier", "Gold",
                       "--region", "us-east-1", "--budget", "700000", "--owner", owner, NULL);
    cr_assert_eq(rc, 0, "submit %s: %s", id, err);
    free(err);
}

/* A tenant waiting for approval, as submission writes it (no job needed here). */
static void pending_tenant(const char *id)
{
    free(h_sql("INSERT INTO tq.tenants (tenant_id, name, tier, region, budget, owner, status,"
               " created_at) VALUES ('%s', '%s', 'Silver', 'eu-west-1', 9000000, 'req@example.com',"
               " 'pending_approval', now() - interval '2 hours')", id, id));
}

/* An audit event, as the code that owns it writes it; returns its id. */
static long audit(const char *tenant, const char *actor, const char *event, const char *reason)
{
    return h_sql_long("INSERT INTO tq.audit_events (tenant_id, actor, event, detail)"
                      " VALUES ('%s', '%s', '%s', jsonb_build_object('reason', '%s'))"
                      " RETURNING id", tenant, actor, event, reason);
}

static json_t *saas_state(void)
{
    char url[96];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/_admin/state", saas_port);
    char *body = h_http("GET", url);
    json_t *o = json_loads(body, 0, NULL);
    free(body);
    cr_assert_not_null(o, "saas stub state");
    return o;
}

/* Messages the SMTP server accepted, as a JSON array. */
static json_t *smtp_messages(void)
{
    json_t *a = json_array();
    char *text = st_slurp(smtp_out);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        json_t *m = json_loads(line, 0, NULL);
        cr_assert_not_null(m, "an SMTP record: %s", line);
        json_array_append_new(a, m);
    }
    free(text);
    return a;
}

/* Webhook messages (payloads) on /hooks/<channel>/..., optionally only those of event_id. */
static int hooks_for(json_t *st, const char *channel, long event_id, json_t **last)
{
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "/hooks/%s/", channel);
    int n = 0;
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(st, "hooks"), i, h) {
        const char *path = json_string_value(json_object_get(h, "path"));
        json_t *p = json_object_get(h, "payload");
        if (!path || strncmp(path, prefix, strlen(prefix)) != 0)
            continue;
        if (event_id && json_integer_value(json_object_get(p, "event_id")) != event_id)
            continue;
        n++;
        if (last)
            *last = p;
    }
    return n;
}

/* SMTP messages whose Message-ID names event_id and channel. */
static int mails_for(json_t *msgs, long event_id, const char *channel, json_t **last)
{
    char mid[96];
    snprintf(mid, sizeof(mid), "Message-ID: <tenantq-%ld.%s@tenantq>", event_id, channel);
    int n = 0;
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        const char *data = json_string_value(json_object_get(m, "data"));
        if (data && strstr(data, mid)) {
            n++;
            if (last)
                *last = m;
        }
    }
    return n;
}

static bool rcpts_are(json_t *m, const char *a, const char *b)
{
    json_t *r = json_object_get(m, "rcpt_tos");
    size_t n = json_array_size(r);
    if (n != (b ? 2u : 1u))
        return false;
    const char *r0 = json_string_value(json_array_get(r, 0));
    const char *r1 = b ? json_string_value(json_array_get(r, 1)) : NULL;
    return r0 && strcmp(r0, a) == 0 && (!b || (r1 && strcmp(r1, b) == 0));
}

static void wait_delivered(long want, int timeout_ms)
{
    char w[32];
    snprintf(w, sizeof(w), "%ld", want);
    bool ok = h_wait_sql(w, timeout_ms, "SELECT count(*) FROM tq.notify_deliveries WHERE status = 'sent'");
    char *detail = h_sql("SELECT coalesce(string_agg(event_id || '/' || channel || ' ' || status"
                         " || ' ' || attempts || ' ' || coalesce(last_error, ''), '; '), '')"
                         " FROM tq.notify_deliveries WHERE status <> 'sent'");
    cr_assert(ok, "%ld deliveries sent; not sent: %s", want, detail);
    free(detail);
}

static void no_secret_in(const char *what, const char *text)
{
    cr_assert_null(strstr(text, ROUTING_KEY), "the routing key is not in %s: %s", what, text);
    cr_assert_null(strstr(text, HOOK_SECRET), "no webhook URL in %s: %s", what, text);
}

Test(notify, each_event_reaches_its_audience_without_secrets)
{
    setup_notify(true);
    char log[300];
    snprintf(log, sizeof(log), "%s/worker.log", H.tmpdir);
    /* activated: a real tenant through a pipeline */
    pipeline("ok.json", "{\"name\":\"work\",\"kind\":\"noop\"}");
    const char *ok = h_tenant("ok");
    submit(ok, "owner-ok@example.com");
    pid_t w = st_worker_start(log);
    cr_assert(h_wait_sql("active", 30000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", ok));
    /* rollback_failed: a check fails, and undoing the work fails too */
    char flag[300];
    snprintf(flag, sizeof(flag), "%s/undo-fails", H.tmpdir);
    FILE *f = fopen(flag, "w");
    cr_assert_not_null(f);
    fclose(f);
    char steps[1024];
    snprintf(steps, sizeof(steps),
             "{\"name\":\"work\",\"kind\":\"sleep\",\"params\":{\"ms\":10,\"undo_fail_if_exists\":\"%s\","
             "  \"undo_error\":\"bucket still has objects\"},\"retry\":{\"max_attempts\":1}},"
             "{\"name\":\"check\",\"kind\":\"sleep\",\"needs\":[\"work\"],\"class\":\"integration\","
             " \"params\":{\"ms\":10,\"fail_attempts\":99,\"error\":\"probe refused\"},"
             " \"retry\":{\"max_attempts\":1}}", flag);
    pipeline("rbf.json", steps);
    const char *rbf = h_tenant("rbf");
    submit(rbf, "owner-rbf@example.com");
    cr_assert(h_wait_sql("rollback_failed", 30000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", rbf));
    /* failed: the same without the undo failure */
    unlink(flag);
    const char *bad = h_tenant("bad");
    submit(bad, "owner-bad@example.com");
    cr_assert(h_wait_sql("failed", 30000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", bad));
    /* approval governance's events */
    const char *pend = h_tenant("pend");
    pending_tenant(pend);
    long ev_pending = audit(pend, "cli:req@example.com", "pending_approval", "budget over the threshold");
    long ev_esc = audit(pend, "worker", "approval_escalated", "pending for more than 24 h");
    long ev_drift = audit(ok, "worker", "drift_detected", "check-redis (security): ACL changed");
    long ev_submitted = audit(pend, "cli", "submitted", "");   /* routed nowhere */
    long ev_active = h_sql_long("SELECT id FROM tq.audit_events WHERE tenant_id = '%s'"
                                " AND event IN ('active', 'active_with_warnings')", ok);
    long ev_failed = h_sql_long("SELECT id FROM tq.audit_events WHERE tenant_id = '%s'"
                                " AND event = 'failed'", bad);
    long ev_rbf = h_sql_long("SELECT id FROM tq.audit_events WHERE tenant_id = '%s'"
                             " AND event = 'rollback_failed'", rbf);
    cr_assert(ev_active > 0 && ev_failed > 0 && ev_rbf > 0);
    /* activated 2 + failed 1 + rollback_failed 2 + pending 2 + escalated 2 + drift 1 */
    wait_delivered(10, 30000);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.notify_deliveries WHERE event_id = %ld", ev_submitted), 0,
                 "an event with no route makes no delivery");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.notify_outbox"), 0, "the outbox is drained");

    json_t *st = saas_state(), *p = NULL;
    json_t *mails = smtp_messages(), *m = NULL;
    /* activated -> the requester (the owner only) + the activations channel */
    cr_assert_eq(mails_for(mails, ev_active, "requester", &m), 1);
    cr_assert(rcpts_are(m, "owner-ok@example.com", NULL), "the owner alone: %s",
              json_dumps(m, JSON_COMPACT));
    const char *data = json_string_value(json_object_get(m, "data"));
    char subj[160];
    snprintf(subj, sizeof(subj), "Subject: [tenantq] %s activated: %s", ok, ok);
    cr_assert_not_null(strstr(data, subj), "subject: %s", data);
    cr_assert_not_null(strstr(data, "To: <owner-ok@example.com>"), "%s", data);
    cr_assert_eq(hooks_for(st, "activations", ev_active, &p), 1);
    cr_assert_not_null(strstr(json_string_value(json_object_get(p, "text")), ok));
    /* pending_approval and approval_escalated -> both approvers + the requests channel */
    cr_assert_eq(mails_for(mails, ev_pending, "approvers", &m), 1);
    cr_assert(rcpts_are(m, "cfo@example.com", "controller@example.com"), "%s",
              json_dumps(m, JSON_COMPACT));
    data = json_string_value(json_object_get(m, "data"));
    snprintf(subj, sizeof(subj), "Subject: [tenantq] %s pending_approval: %s", pend, pend);
    cr_assert_not_null(strstr(data, subj), "subject: %s", data);
    cr_assert_not_null(strstr(data, "budget over the threshold"), "the reason is in the body: %s", data);
    cr_assert_eq(hooks_for(st, "requests", ev_pending, NULL), 1);
    cr_assert_eq(mails_for(mails, ev_esc, "approvers", NULL), 1);
    cr_assert_eq(hooks_for(st, "requests", ev_esc, NULL), 1);
    /* failures, rollback_failed and drift -> platform-alerts; nobody else */
    cr_assert_eq(hooks_for(st, "alerts", ev_failed, &p), 1);
    cr_assert_not_null(strstr(json_string_value(json_object_get(p, "text")), "probe refused"));
    cr_assert_eq(hooks_for(st, "alerts", ev_rbf, NULL), 1);
    cr_assert_eq(hooks_for(st, "alerts", ev_drift, NULL), 1);
    cr_assert_eq(hooks_for(st, "alerts", 0, NULL), 3, "platform-alerts heard only its three");
    cr_assert_eq(hooks_for(st, "requests", 0, NULL), 2);
    cr_assert_eq(hooks_for(st, "activations", 0, NULL), 1);
    cr_assert_eq(json_array_size(mails), 3, "three e-mails in all");
    /* rollback_failed -> also one page, in the PagerDuty Events v2 shape */
    json_t *pages = json_object_get(st, "pages");
    cr_assert_eq(json_array_size(pages), 1, "one page: %s", json_dumps(pages, JSON_COMPACT));
    json_t *pe = json_object_get(json_array_get(pages, 0), "event");
    char dedup[64];
    snprintf(dedup, sizeof(dedup), "tenantq-%ld", ev_rbf);
    cr_assert_str_eq(json_string_value(json_object_get(pe, "routing_key")), ROUTING_KEY);
    cr_assert_str_eq(json_string_value(json_object_get(pe, "event_action")), "trigger");
    cr_assert_str_eq(json_string_value(json_object_get(pe, "dedup_key")), dedup);
    json_t *pl = json_object_get(pe, "payload");
    cr_assert_str_eq(json_string_value(json_object_get(pl, "severity")), "critical");
    cr_assert_str_eq(json_string_value(json_object_get(pl, "source")), rbf);
    cr_assert_not_null(strstr(json_string_value(json_object_get(pl, "summary")), "rollback_failed"));
    /* secrets: in no message text, no stored row, no log line */
    char *dump = json_dumps(mails, 0);
    no_secret_in("the e-mails", dump);
    free(dump);
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(st, "hooks"), i, h) {   /* the path is the URL: the payload only */
        dump = json_dumps(json_object_get(h, "payload"), 0);
        no_secret_in("a webhook payload", dump);
        free(dump);
    }
    dump = json_dumps(pl, 0);
    no_secret_in("the page's payload", dump);
    free(dump);
    cr_assert_eq(st_worker_stop(w, 15000, log), 0);
    char *text = st_slurp(log);
    no_secret_in("the worker's log", text);
    free(text);
    char *rows = h_sql("SELECT coalesce(string_agg(channel || coalesce(last_error, '') || coalesce(claimed_by, ''), ' '), '')"
                       " FROM tq.notify_deliveries");
    no_secret_in("tq.notify_deliveries", rows);
    free(rows);
    json_decref(mails);
    json_decref(st);
}

Test(notify, one_message_per_event_and_channel_with_two_workers)
{
    setup_notify(true);
    pipeline("noop.json", "{\"name\":\"work\",\"kind\":\"noop\"}");
    const char *t = h_tenant("dup");
    pending_tenant(t);
    pid_t w1 = h_worker_start(NULL), w2 = h_worker_start(NULL);
    /* 30 events in one transaction, then 30 more one by one while both poll */
    free(h_sql("INSERT INTO tq.audit_events (tenant_id, actor, event, detail)"
               " SELECT '%s', 'cli', 'pending_approval', jsonb_build_object('reason', 'n' || g)"
               " FROM generate_series(1, 30) g", t));
    for (int i = 0; i < 30; i++)
        audit(t, "cli", "pending_approval", "one by one");
    wait_delivered(120, 60000);
    cr_assert_eq(h_worker_stop(w1, 15000), 0);
    cr_assert_eq(h_worker_stop(w2, 15000), 0);
    json_t *st = saas_state(), *mails = smtp_messages();
    cr_assert_eq(hooks_for(st, "requests", 0, NULL), 60, "one webhook message per event");
    cr_assert_eq(json_array_size(mails), 60, "one e-mail per event");
    /* each event exactly once per channel */
    long ids[60];
    size_t n = 0;
    char *list = h_sql("SELECT string_agg(id::text, ' ' ORDER BY id) FROM tq.audit_events"
                       " WHERE tenant_id = '%s' AND event = 'pending_approval'", t);
    for (char *tok = strtok(list, " "); tok && n < 60; tok = strtok(NULL, " "))
        ids[n++] = atol(tok);
    free(list);
    cr_assert_eq(n, 60);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(mails_for(mails, ids[i], "approvers", NULL), 1, "event %ld mailed once", ids[i]);
        cr_assert_eq(hooks_for(st, "requests", ids[i], NULL), 1, "event %ld posted once", ids[i]);
    }
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.notify_deliveries WHERE attempts <> 1"), 0,
                 "no delivery was sent twice");
    json_decref(mails);
    json_decref(st);
}

Test(notify, retried_after_the_endpoints_were_down_and_delivered_once)
{
    setup_notify(false);   /* the SMTP server is down: connection refused */
    /* the webhook answers 503 three times, then takes messages */
    char url[160];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/_admin/fail?path=/hooks/activations/&status=503&count=3",
             saas_port);
    free(h_http("POST", url));
    pipeline("noop.json", "{\"name\":\"work\",\"kind\":\"noop\"}");
    const char *t = h_tenant("down");
    submit(t, "owner-down@example.com");
    pid_t w = h_worker_start(NULL);
    /* provisioning does not wait for notifications */
    cr_assert(h_wait_sql("active", 30000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", t));
    long ev = h_sql_long("SELECT id FROM tq.audit_events WHERE tenant_id = '%s'"
                         " AND event IN ('active', 'active_with_warnings')", t);
    /* the e-mail was tried and failed at least twice, and waits to be retried */
    cr_assert(h_wait_sql("t", 30000, "SELECT attempts >= 2 AND status = 'pending' AND last_error"
                         " IS NOT NULL FROM tq.notify_deliveries WHERE event_id = %ld"
                         " AND channel = 'requester'", ev));
    start_smtp();   /* the endpoint comes back */
    wait_delivered(2, 30000);
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    json_t *st = saas_state(), *mails = smtp_messages();
    cr_assert_eq(mails_for(mails, ev, "requester", NULL), 1, "mailed once after the server came up");
    cr_assert_eq(json_array_size(mails), 1);
    cr_assert_eq(hooks_for(st, "activations", ev, NULL), 1, "posted once after three 503s");
    cr_assert_geq(h_sql_long("SELECT attempts FROM tq.notify_deliveries WHERE event_id = %ld"
                            " AND channel = 'activations'", ev), 4);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.notify_deliveries WHERE sent_at IS NULL"), 0);
    json_decref(mails);
    json_decref(st);
}

/* tq-enqueue approvers, as an operator runs it with the admin account. */
static void add_approver(const char *role, const char *identity)
{
    char db[600], redis[300];
    snprintf(db, sizeof(db), "TQ_DATABASE_URL=%s", H.roles ? H.migrate_dsn : H.dsn);
    snprintf(redis, sizeof(redis), "TQ_REDIS_URL=%s", H.roles ? H.cli_redis_url : H.redis_url);
    const char *env[] = {db, redis, NULL};
    const char *argv[] = {TQ_ENQUEUE_BIN, "approvers", "add", "--role", role, identity,
                          "--by", "ops@example.com", NULL};
    char *err = NULL;
    int rc = h_run_env(argv, env, NULL, &err);
    cr_assert_eq(rc, 0, "approvers add --role %s %s: %s", role, identity, err);
    free(err);
}

Test(notify, pending_approval_reaches_the_approvers_configured_in_postgresql)
{
    setup_notify(true);
    /* recipients from tq.approvers, for the role the tier's policy names (finance) */
    snprintf(routes_path, sizeof(routes_path), "%s",
             h_write_file("approver-routes.json",
                          "{\"channels\": {\"approvers\": {\"type\": \"email\", \"to_approvers\": true}},"
                          " \"routes\": {\"pending_approval\": [\"approvers\"],"
                          "  \"approval_escalated\": [\"approvers\"]}}"));
    h_setenv("TQ_NOTIFY_ROUTES_FILE", routes_path);
    add_approver("finance", "cfo@example.com");
    add_approver("finance", "Jane CFO <jane@example.com>");   /* not an addr-spec: skipped */
    add_approver("legal", "counsel@example.com");              /* another role: not told */
    pipeline("noop.json", "{\"name\":\"work\",\"kind\":\"noop\"}");
    const char *t = h_tenant("big");
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--tenant-id", t, "--name", t, "--tier", "Gold",
                       "--region", "us-east-1", "--budget", "1200000", "--owner",
                       "owner-big@example.com", NULL);
    cr_assert_eq(rc, 0, "submit: %s", err);
    free(err);
    long ev = h_sql_long("SELECT id FROM tq.audit_events WHERE tenant_id = '%s'"
                         " AND event = 'pending_approval' AND detail->>'role' = 'finance'", t);
    cr_assert_gt(ev, 0, "the submission waits for finance");
    pid_t w = h_worker_start(NULL);
    wait_delivered(1, 30000);
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    json_t *mails = smtp_messages(), *m = NULL;
    cr_assert_eq(json_array_size(mails), 1, "one e-mail: %s", json_dumps(mails, JSON_COMPACT));
    cr_assert_eq(mails_for(mails, ev, "approvers", &m), 1);
    cr_assert(rcpts_are(m, "cfo@example.com", NULL), "the finance approver alone: %s",
              json_dumps(m, JSON_COMPACT));
    const char *data = json_string_value(json_object_get(m, "data"));
    cr_assert_not_null(strstr(data, "To: <cfo@example.com>\r\n"), "%s", data);
    cr_assert_null(strstr(data, "jane"), "a skipped identity is in no header: %s", data);
    cr_assert_null(strstr(data, "counsel@"), "%s", data);
    cr_assert_eq(h_sql_long("SELECT skipped_recipients FROM tq.notify_deliveries"
                            " WHERE event_id = %ld AND channel = 'approvers'", ev), 1,
                 "the identity that is not an address is counted");
    json_decref(mails);
}

Test(notify, a_bad_routes_file_is_refused_naming_every_problem)
{
    const char *path = h_write_file("bad-routes.json",
        "{\"channels\": {"
        " \"hook\": {\"type\": \"slack\", \"url\": \"ftp://x/" HOOK_SECRET "\"},"
        " \"pd\": {\"type\": \"pagerduty\", \"url\": \"http://127.0.0.1:1/v2/enqueue\", \"severity\": \"loud\"},"
        " \"mail\": {\"type\": \"email\", \"to\": [\"not an address\"], \"smtp_url\": \"smtp://127.0.0.1:1\"},"
        " \"Bad Name\": {\"type\": \"slack\", \"url\": \"http://x/\"},"
        " \"fax\": {\"type\": \"fax\"},"
        " \"appr\": {\"type\": \"email\", \"to_approvers\": \"yes\", \"smtp_url\": \"smtp://127.0.0.1:1\"}},"
        "\"routes\": {\"activated\": [\"hook\", \"nowhere\"], \"exploded\": [\"hook\"], \"failed\": []}}");
    char env_routes[400];
    snprintf(env_routes, sizeof(env_routes), "TQ_NOTIFY_ROUTES_FILE=%s", path);
    const char *argv[] = {TQ_WORKER_BIN, NULL};
    const char *env[] = {env_routes, NULL};
    char *out = NULL, *err = NULL;
    int rc = h_run_env(argv, env, &out, &err);
    cr_assert_eq(rc, 1, "refused: %s", err);
    const char *want[] = {"channels.hook.url", "channels.pd.routing_key", "channels.pd.severity",
                          "channels.mail.to[0]", "\"Bad Name\"", "channels.fax.type",
                          "routes.activated[1]", "routes.exploded", "routes.failed",
                          "channels.appr.to_approvers"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        cr_assert_not_null(strstr(err, want[i]), "names %s: %s", want[i], err);
    cr_assert_null(strstr(err, HOOK_SECRET), "no URL in the error: %s", err);
    free(out);
    free(err);
}

/* The routes the repository ships (the operators' example; the k8s local
   overlay's Secret) are files a worker starts with. */
Test(notify, the_shipped_routes_files_are_accepted)
{
    const char *files[] = {TQ_SOURCE_DIR "/deploy/monitoring/notify-routes.example.json",
                           TQ_SOURCE_DIR "/deploy/k8s/overlays/local/notify-routes.json"};
    h_setenv("TQ_SMTP_URL", "smtp://127.0.0.1:1");   /* the example leaves it to TQ_SMTP_URL */
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        h_setenv("TQ_NOTIFY_ROUTES_FILE", files[i]);
        char log[300];
        snprintf(log, sizeof(log), "%s/worker-%zu.log", H.tmpdir, i);
        pid_t w = st_worker_start(log);
        bool started = false;   /* the line comes after the routes are loaded */
        for (int k = 0; k < 300 && !started; k++) {
            char *text = st_slurp(log);
            started = strstr(text, "started: queue") != NULL;
            free(text);
            if (!started)
                nanosleep(&(struct timespec){.tv_nsec = 100000000L}, NULL);
        }
        char *text = st_slurp(log);
        cr_assert(started, "%s: the worker did not start: %s", files[i], text);
        free(text);
        cr_assert_eq(st_worker_stop(w, 15000, log), 0, "%s refused", files[i]);
    }
}

Test(notify, metrics_are_promtool_clean_with_the_new_series)
{
    setup_notify(true);
    pipeline("noop.json", "{\"name\":\"work\",\"kind\":\"noop\"}");
    const char *t = h_tenant("met");
    submit(t, "owner-met@example.com");
    /* a person approved a request two hours after it was made */
    const char *p = h_tenant("appr");
    pending_tenant(p);
    free(h_sql("UPDATE tq.tenants SET approved_at = created_at + interval '2 hours', approver ="
               " 'cfo@example.com' WHERE tenant_id = '%s'", p));
    audit(p, "cli:cfo@example.com", "approved", "");
    int hp = free_port();
    char addr[64];
    snprintf(addr, sizeof(addr), "TQ_HTTP_ADDR=127.0.0.1:%d", hp);
    const char *env[] = {addr, NULL};
    pid_t w = h_worker_start(env);
    cr_assert(h_wait_sql("active", 30000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", t));
    wait_delivered(2, 30000);
    cr_assert(h_wait_sql("0", 10000, "SELECT count(*) FROM tq.notify_outbox"));
    char *m = NULL;
    for (int i = 0; i < 100; i++) {
        free(m);
        m = get(hp, "/metrics");
        if (m && strstr(m, "tenant_approval_wait_seconds_count") && strstr(m, "tq_queue_depth{") &&
            strstr(m, "tq_notifications_total{channel=\"activations\",outcome=\"sent\"} 1"))
            break;
        tq_sleep_ms(100);
    }
    cr_assert_not_null(m);
    char *body = strstr(m, "\r\n\r\n");
    cr_assert_not_null(body, "%s", m);
    body += 4;
    cr_assert_not_null(strstr(body, "tenant_provisioning_duration_seconds_bucket{tier=\"Gold\",region=\"us-east-1\",le=\"3600\"} 1"),
                       "provisioning buckets reach an hour: %s", body);
    cr_assert_not_null(strstr(body, "tenant_request_to_active_seconds_bucket{tier=\"Gold\",le=\"3600\"} 1"),
                       "request to active: %s", body);
    cr_assert_not_null(strstr(body, "tenant_approval_wait_seconds_bucket{tier=\"Silver\",le=\"3600\"} 0"),
                       "two hours of approval wait is above an hour: %s", body);
    cr_assert_not_null(strstr(body, "tenant_approval_wait_seconds_bucket{tier=\"Silver\",le=\"7200\"} 1"),
                       "%s", body);
    cr_assert_not_null(strstr(body, "tq_notifications_total{channel=\"requester\",outcome=\"sent\"} 1"),
                       "%s", body);
    cr_assert_not_null(strstr(body, "tq_notifications_total{channel=\"activations\",outcome=\"sent\"} 1"),
                       "%s", body);
    cr_assert_not_null(strstr(body, "# TYPE tq_revalidations_total counter"), "%s", body);
    cr_assert_not_null(strstr(body, "# TYPE tq_drift_detected_total counter"), "%s", body);
    cr_assert_not_null(strstr(body, "# TYPE tq_rollback_failures_total counter"), "%s", body);
    const char *mf = h_write_file("metrics.txt", body);
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "promtool check metrics < '%s' > '%s.out' 2>&1", mf, mf);
    int rc = system(cmd);
    char outp[400];
    snprintf(outp, sizeof(outp), "%s.out", mf);
    char *out = st_slurp(outp);
    cr_assert_eq(rc, 0, "promtool check metrics: %s", out);
    free(out);
    /* deploy/monitoring queries nothing this worker does not export */
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 " TQ_SOURCE_DIR "/tests/monitoring_names.py '%s' "
             TQ_SOURCE_DIR "/deploy/monitoring/tenantq-dashboard.json " TQ_SOURCE_DIR
             "/deploy/monitoring/alerts.yml > '%s.out' 2>&1", mf, mf);
    rc = system(cmd);
    out = st_slurp(outp);
    cr_assert_eq(rc, 0, "dashboard and alerts name only exported metrics: %s", out);
    free(out);
    free(m);
    cr_assert_eq(h_worker_stop(w, 15000), 0);
}
