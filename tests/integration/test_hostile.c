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
    setenv("TQ_PIPELINE", h_write_file(name, text), 1);
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
    pid_t w = h_worker_start(NULL);
    cr_assert(h_wait_sql("active", 30000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", t));
    char *log = NULL;
    for (int i = 0; i < 100; i++) {
        free(log);
        log = st_slurp(out);
        if (strstr(log, "END MESSAGE"))
            break;
        tq_sleep_ms(100);
    }
    cr_assert_not_null(strstr(log, "END MESSAGE"), "the SMTP server got a message: %s", log);
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
