/*
 * Hostile input that reaches the worker from outside (issue: hostile tenants
 * and input): a tenant name that would be Slack markup or an e-mail header,
 * queue values that are not job ids (garbage, overflow, " 8", "+9", ids of
 * jobs that are missing or finished, control characters, 100 MB), and what
 * /readyz and /metrics say when a dependency answers but refuses.
 * Notifications go to tests/stubs/saas_stub.py (webhook) and a real SMTP
 * server (Debian's python3-aiosmtpd).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "harness.h"
#include "stubs.h"
#include "tq/util.h"

static pid_t helpers[4];
static int nhelpers;

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

TestSuite(hostile, .init = init, .fini = fini, .timeout = 240);

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    getsockname(s, (struct sockaddr *)&a, &len);
    close(s);
    return ntohs(a.sin_port);
}

static bool port_open(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(s, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(s);
    return ok;
}

/* Start argv with stdout+stderr to out_path; wait until port accepts. */
static void start_server(const char *const *argv, const char *out_path, int port)
{
    pid_t pid = h_spawn(argv, out_path);
    cr_assert_gt(pid, 0);
    helpers[nhelpers++] = pid;
    for (int i = 0; i < 200 && !port_open(port); i++)
        tq_sleep_ms(50);
    cr_assert(port_open(port), "%s did not start on port %d", argv[0], port);
}

static int start_saas(void)
{
    int port = free_port();
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    char out[300];
    snprintf(out, sizeof(out), "%s/saas.log", H.tmpdir);
    const char *argv[] = {"/usr/bin/python3", TQ_SOURCE_DIR "/tests/stubs/saas_stub.py", "--port",
                          ps, "--quiet", "--lifetime", "300", NULL};
    start_server(argv, out, port);
    return port;
}

static void pipeline(const char *name, const char *steps)
{
    char text[8192];
    snprintf(text, sizeof(text), "{\"name\":\"%s\",\"steps\":[%s]}", name, steps);
    h_use_pipeline(h_write_file(name, text));
}

#define NOTIFY_PIPELINE                                                                     \
    "{\"name\":\"work\",\"kind\":\"noop\"},"                                                  \
    "{\"name\":\"notify\",\"kind\":\"notify\",\"needs\":[\"work\"],"                          \
    " \"params\":{\"event\":\"activated\",\"text\":\"ready\","                               \
    "  \"webhook_url\":\"${env.TQ_NOTIFY_WEBHOOK_URL}\",\"smtp_url\":\"${env.TQ_SMTP_URL}\"}}"

static void submit_named(const char *id, const char *name)
{
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--tenant-id", id, "--name", name, "--tier", "Gold",
                       "--region", "us-east-1", "--budget", "700000", "--owner",
                       "owner@example.com", NULL);
    cr_assert_eq(rc, 0, "submit %s: %s", id, err);
    free(err);
}

#define EVIL_NAME "<!channel> <https://evil.example|click here>"

Test(hostile, slack_webhook_text_carries_no_markup)
{
    int port = start_saas();
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hooks/tenantq", port);
    setenv("TQ_NOTIFY_WEBHOOK_URL", url, 1);
    unsetenv("TQ_SMTP_URL");
    pipeline("slack.json", NOTIFY_PIPELINE);
    const char *t = h_tenant("slack");
    submit_named(t, EVIL_NAME);
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("active", 30000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", t));
    json_t *hook = NULL, *st = NULL;
    for (int i = 0; i < 100 && !hook; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/_admin/state");
        char *body = NULL;
        st_http(port, "GET", path, &body);
        json_decref(st);
        st = json_loads(body ? body : "", 0, NULL);
        free(body);
        hook = json_array_get(json_object_get(st, "hooks"), 0);
        if (!hook)
            tq_sleep_ms(100);
    }
    cr_assert_not_null(hook, "the webhook was called");
    const char *text = json_string_value(json_object_get(json_object_get(hook, "payload"), "text"));
    cr_assert_not_null(text);
    cr_assert_not_null(strstr(text, "&lt;!channel&gt; &lt;https://evil.example|click here&gt;"),
                       "the name is shown, escaped: %s", text);
    cr_assert_null(strchr(text, '<'), "no Slack control sequence can start: %s", text);
    cr_assert_null(strchr(text, '>'), "%s", text);
    json_decref(st);
    cr_assert_eq(h_worker_stop(w, 15000), 0);
}

Test(hostile, email_headers_cannot_be_injected)
{
    int port = free_port();
    char listen[64], out[300];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    snprintf(out, sizeof(out), "%s/smtp.log", H.tmpdir);
    const char *argv[] = {"/usr/bin/python3", "-u", "-m", "aiosmtpd", "-n", "-l", listen,
                          "-c", "aiosmtpd.handlers.Debugging", "stdout", NULL};
    start_server(argv, out, port);
    char url[96];
    snprintf(url, sizeof(url), "smtp://%s", listen);
    setenv("TQ_SMTP_URL", url, 1);
    unsetenv("TQ_NOTIFY_WEBHOOK_URL");
    unsetenv("TQ_NOTIFY_TO");
    setenv("TQ_NOTIFY_FROM", "tenantq@example.com", 1);
    pipeline("mail.json", NOTIFY_PIPELINE);
    const char *t = h_tenant("mail");
    submit_named(t, "Zoë Ünicode");
    /* A name that passed no validation (written to the database by someone
       else): it must still not add a header or a recipient. */
    free(h_sql("UPDATE tq.tenants SET name = E'Evil\\r\\nBcc: victim@example.com\\r\\nX-Injected: 1\\n"
               "Zoë' WHERE tenant_id = '%s'", t));
    /* An owner address that would add a recipient or a header: refused, nothing sent. */
    const char *t2 = h_tenant("mail2");
    submit_named(t2, "Second");
    free(h_sql("UPDATE tq.tenants SET owner = E'x@y.example>\\r\\nRCPT TO:<victim@example.com'"
               " WHERE tenant_id = '%s'", t2));
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("active", 30000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", t));
    cr_assert(h_wait_sql("active", 30000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", t2));
    char *log = NULL;
    for (int i = 0; i < 100; i++) {
        free(log);
        log = st_slurp(out);
        if (strstr(log, "END MESSAGE"))
            break;
        tq_sleep_ms(100);
    }
    cr_assert_not_null(strstr(log, "END MESSAGE"), "the SMTP server got a message: %s", log);
    cr_assert_null(strstr(log, "To: <x@y.example"), "no message to the tampered owner: %s", log);
    cr_assert_null(strstr(strstr(log, "END MESSAGE"), "MESSAGE FOLLOWS"),
                   "one message only: the tampered owner got none: %s", log);
    /* Headers end at the first empty line (the server adds X-Peer there). */
    char *start = strstr(log, "MESSAGE FOLLOWS");
    char *hdr_end = strstr(start, "\nX-Peer:");
    cr_assert_not_null(hdr_end, "%s", log);
    *hdr_end = '\0';
    cr_assert_null(strstr(start, "\nBcc:"), "no injected Bcc header: %s", start);
    cr_assert_null(strstr(start, "\nX-Injected:"), "no injected header: %s", start);
    cr_assert_not_null(strstr(start, "\nSubject: =?UTF-8?B?"), "non-ASCII is an encoded-word: %s",
                       start);
    for (char *p = start; *p; p++)
        cr_assert((unsigned char)*p < 0x80, "headers are ASCII: %s", start);
    free(log);
    cr_assert_eq(h_worker_stop(w, 15000), 0);
}

static int count_lines(const char *log, const char *needle)
{
    int n = 0;
    for (const char *p = log; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

Test(hostile, queue_values_that_are_not_jobs_are_dead_lettered_capped_and_logged_once)
{
    pipeline("noop.json", "{\"name\":\"work\",\"kind\":\"noop\"}");
    const char *t = h_tenant("real");
    submit_named(t, "Real Tenant");
    long done_job = h_sql_long("SELECT id FROM tq.jobs WHERE tenant_id = '%s'", t);
    char log_path[300];
    snprintf(log_path, sizeof(log_path), "%s/worker.log", H.tmpdir);
    pid_t w = st_worker_start(log_path);
    cr_assert(h_wait_sql("succeeded", 30000, "SELECT status FROM tq.jobs WHERE id = %ld", done_job));

    redisContext *rc = h_redis_connect();
    char ready[128], dead[128];
    snprintf(ready, sizeof(ready), "tq:{%s}:ready", H.queue);
    snprintf(dead, sizeof(dead), "tq:{%s}:dead", H.queue);
    size_t big_len = 16u << 20;   /* 16 MB: what matters is that it is not kept whole */
    char *big = malloc(big_len);
    memset(big, 'x', big_len);
    const char *garbage[] = {"9223372036854775808", " 8", "+9", "notanumber",
                             "7\n2026-11-29T10:00:00.000Z error worker: \x1b[2Jforged", "0012"};
    size_t ng = sizeof(garbage) / sizeof(garbage[0]);
    for (size_t i = 0; i < ng; i++)
        freeReplyObject(redisCommand(rc, "LPUSH %s %s", ready, garbage[i]));
    freeReplyObject(redisCommand(rc, "LPUSH %s %b", ready, "nul\0byte", (size_t)8));
    freeReplyObject(redisCommand(rc, "LPUSH %s %b", ready, big, big_len));
    freeReplyObject(redisCommand(rc, "LPUSH %s %s", ready, "999999"));   /* no such job */
    freeReplyObject(redisCommand(rc, "LPUSH %s %ld", ready, done_job));  /* finished */
    for (int i = 0; i < 40; i++)
        freeReplyObject(redisCommand(rc, "LPUSH %s flood-%d", ready, i));
    free(big);
    size_t want_dead = ng + 2 + 40;
    long len = 0;
    for (int i = 0; i < 300; i++) {
        redisReply *r = redisCommand(rc, "LLEN %s", dead);
        len = r ? r->integer : -1;
        freeReplyObject(r);
        redisReply *r2 = redisCommand(rc, "LLEN %s", ready);
        long rl = r2 ? r2->integer : -1;
        freeReplyObject(r2);
        if (len == (long)want_dead && rl == 0)
            break;
        tq_sleep_ms(100);
    }
    cr_assert_eq(len, (long)want_dead, "every value that is no job id is dead-lettered");
    redisReply *all = redisCommand(rc, "LRANGE %s 0 -1", dead);
    for (size_t i = 0; i < all->elements; i++)
        cr_assert_leq(all->element[i]->len, 256, "a dead value is kept to 256 bytes, not %zu",
                      all->element[i]->len);
    freeReplyObject(all);
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.jobs WHERE status <> 'succeeded'"), 0,
                 "no real job was touched");

    char *log = st_slurp(log_path);
    cr_assert_null(strchr(log, '\x1b'), "no raw escape in the log");
    cr_assert_null(strstr(log, "\n2026-11-29T10:00:00.000Z error worker"), "no forged line");
    cr_assert_eq(count_lines(log, "\" 8\""), 1, "\" 8\" logged once: %s", log);
    cr_assert_eq(count_lines(log, "\"+9\""), 1, "\"+9\" logged once");
    cr_assert_eq(count_lines(log, "(out of range)"), 1, "the overflow is logged once");
    cr_assert_eq(count_lines(log, "999999 in the ready list is no job"), 1, "%s", log);
    char finished[96];
    snprintf(finished, sizeof(finished), "job %ld in the ready list is already succeeded",
             done_job);
    cr_assert_eq(count_lines(log, finished), 1, "%s", log);
    cr_assert_lt(count_lines(log, "is not a job id"), 40, "rate-limited, not one line per value");
    cr_assert_geq(count_lines(log, "not logged"), 1, "the suppressed lines are counted");
    free(log);

    /* The operator sees every dead value and can drop them. */
    char *out = NULL, *err = NULL;
    cr_assert_eq(h_enqueue(&out, NULL, "--json", "dead", NULL), 0);
    json_t *o = h_json(out, "dead --json");
    json_t *other = json_object_get(o, "other");
    cr_assert_eq(json_array_size(other), want_dead, "%s", out);
    bool seen_big = false, whole = false;
    size_t i;
    json_t *e;
    json_array_foreach(other, i, e) {
        json_int_t bytes = json_integer_value(json_object_get(e, "bytes"));
        whole = whole || bytes == (json_int_t)big_len;
        seen_big = seen_big || bytes == 256;
    }
    cr_assert_not(whole, "the 16 MB value was not kept whole");
    cr_assert(seen_big, "the 16 MB value is listed, cut to 256 bytes");
    json_decref(o);
    free(out);
    out = NULL;
    cr_assert_eq(h_enqueue(&out, &err, "dead", NULL), 0);
    cr_assert_not_null(strstr(out, "notanumber"), "garbage is listed in text too: %s", out);
    cr_assert_null(strchr(out, '\x1b'));
    free(out);
    free(err);
    err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "dead", "--requeue", "notanumber", NULL), 2,
                 "requeue of garbage is a usage error");
    cr_assert_not_null(strstr(err, "not a job id"), "%s", err);
    free(err);
    err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "dead", "--drop", "notanumber", "--by", "ops@example.com",
                           NULL), 0, "%s", err);
    free(err);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.audit_events WHERE event = 'dead_value_dropped'"
                            " AND actor = 'ops@example.com' AND detail->>'value' = 'notanumber'"),
                 1, "the drop is audited");
    cr_assert_eq(h_enqueue(NULL, NULL, "dead", "--drop", "nul\\x00byte", NULL), 0,
                 "a value with a NUL byte is dropped by its listed form");
    cr_assert_eq(h_enqueue(NULL, NULL, "dead", "--drop", "notanumber", NULL), 4, "gone already");
    redisReply *r = redisCommand(rc, "LLEN %s", dead);
    cr_assert_eq(r->integer, (long long)want_dead - 2);
    freeReplyObject(r);
    redisFree(rc);
}
