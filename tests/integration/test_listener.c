/*
 * The worker's HTTP listener under attack and what it reports.
 * listener: 20,000 idle connections leave /healthz answering and a tenant
 * provisioned meanwhile active (the worker runs with RLIMIT_NOFILE 512, so
 * the flood is far past its limit); half-sent heads are closed; oversized
 * heads get 431; HEAD has no body; the listener survives junk.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "netutil.h"
#include "stubs.h"
#include "tq/util.h"

#define TOKEN "tok-listener-1"

static pid_t stub_pid;

static void init(void)
{
    h_setup();
}

static void fini(void)
{
    if (stub_pid > 0) {
        kill(stub_pid, SIGTERM);
        waitpid(stub_pid, NULL, 0);
    }
    h_teardown();
}

TestSuite(listener, .init = init, .fini = fini, .timeout = 300);

static void start_saas(void)
{
    char portfile[300];
    snprintf(portfile, sizeof(portfile), "%s/stub.port", H.tmpdir);
    stub_pid = fork();
    cr_assert_neq(stub_pid, -1);
    if (stub_pid == 0) {
        execl("/usr/bin/python3", "python3", TQ_SOURCE_DIR "/tests/stubs/saas_stub.py", "--port",
              "0", "--port-file", portfile, "--token", TOKEN, "--quiet", "--lifetime", "300",
              (char *)NULL);
        _exit(127);
    }
    int port = 0;
    for (int i = 0; i < 200 && !port; i++) {
        FILE *f = fopen(portfile, "r");
        if (f) {
            if (fscanf(f, "%d", &port) != 1)
                port = 0;
            fclose(f);
        }
        if (!port)
            tq_sleep_ms(50);
    }
    cr_assert_gt(port, 0, "saas stub did not start");
    char url[96];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    setenv("TQ_VECTOR_URL", url, 1);
    setenv("TQ_VECTOR_TOKEN", TOKEN, 1);
}

Test(listener, idle_flood_leaves_healthz_and_provisioning_working)
{
    /* The test holds the connections: it needs the descriptors, the worker must not. */
    int want = 20000;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_max < (rlim_t)want + 200) {
        struct rlimit up = {(rlim_t)want + 200, (rlim_t)want + 200};
        if (setrlimit(RLIMIT_NOFILE, &up) != 0)
            up.rlim_cur = rl.rlim_max;
        rl = up;
    } else {
        rl.rlim_cur = (rlim_t)want + 200;
        cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    if ((long)rl.rlim_cur - 200 < want)
        want = (int)rl.rlim_cur - 200;
    cr_assert_gt(want, 2000, "cannot hold enough connections (RLIMIT_NOFILE %ld)",
                 (long)rl.rlim_cur);

    start_saas();
    char text[2048];
    snprintf(text, sizeof(text),
             "{\"name\":\"flood\",\"steps\":[{\"name\":\"vector\",\"kind\":\"http\","
             " \"params\":{\"method\":\"PUT\",\"url\":\"${env.TQ_VECTOR_URL}/v1/namespaces/${tenant.id}\","
             "  \"headers\":{\"Authorization\":\"Bearer ${env.TQ_VECTOR_TOKEN}\"},"
             "  \"body\":{\"replicas\":1}},"
             " \"retry\":{\"max_attempts\":3,\"base_ms\":50,\"max_ms\":200}}]}");
    h_use_pipeline(h_write_file("flood.json", text));
    int port = free_port();
    char log_path[300];
    snprintf(log_path, sizeof(log_path), "%s/worker.log", H.tmpdir);
    pid_t w = worker_with_limit(port, 512, log_path);

    int *fds = tq_xcalloc((size_t)want, sizeof(int));
    int opened = 0;
    for (int i = 0; i < want; i++) {
        fds[i] = connect_from(port, true, 2 + i % 40);
        if (fds[i] >= 0)
            opened++;
    }
    cr_assert_gt(opened, want / 2, "only %d connections opened", opened);
    tq_sleep_ms(1000);   /* let the worker take the flood */

    const char *t = h_tenant("flood");
    char *err = NULL;
    int rc = h_enqueue(NULL, &err, "submit", "--tenant-id", t, "--name", "Flood", "--tier", "Gold",
                       "--region", "us-east-1", "--budget", "700000", "--owner", "o@example.com",
                       NULL);
    cr_assert_eq(rc, 0, "%s", err);
    free(err);
    int healthz = 0;
    for (int i = 0; i < 5 && healthz != 200; i++) {
        char *r = get(port, "/healthz");
        healthz = status_of(r);
        free(r);
    }
    cr_assert_eq(healthz, 200, "/healthz answers while %d connections are held", opened);
    char *m = get(port, "/metrics");
#define SERIES(name) "\n" name " "
    const char *open_s = strstr(m, SERIES("tq_http_connections"));
    const char *cap_s = strstr(m, SERIES("tq_http_connections_limit"));
    const char *drop_s = strstr(m, SERIES("tq_http_connections_dropped_total"));
    cr_assert(open_s && cap_s && drop_s, "%s", m);
    long held = atol(open_s + strlen(SERIES("tq_http_connections")));
    long cap = atol(cap_s + strlen(SERIES("tq_http_connections_limit")));
    long dropped = atol(drop_s + strlen(SERIES("tq_http_connections_dropped_total")));
    cr_assert_leq(held, cap, "the listener holds at most its cap");
    cr_assert_lt(cap, 512, "the cap is below RLIMIT_NOFILE");
    cr_assert_gt(dropped, 0, "the flood met the cap");
    free(m);
    cr_assert(h_wait_sql("active", 60000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", t),
              "the tenant provisioned during the flood is active");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE status = 'failed'"), 0,
                 "no attempt failed (no \"Too many open files\")");
    for (int i = 0; i < want; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(fds);
    cr_assert_eq(h_worker_stop(w, 20000), 0);
    char *log = st_slurp(log_path);
    cr_assert_null(strstr(log, "Too many open files"), "%s", log);
    free(log);
}

Test(listener, half_sent_heads_are_closed_and_heads_are_bounded)
{
    int port = free_port();
    char log_path[300];
    snprintf(log_path, sizeof(log_path), "%s/worker.log", H.tmpdir);
    pid_t w = worker_with_limit(port, 1024, log_path);

    /* A head that never ends: the worker closes the connection (header timeout). */
    const char half[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
    int s = connect_to(port, false);
    struct timeval tv = {30, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    cr_assert_eq(send(s, half, strlen(half), MSG_NOSIGNAL), (ssize_t)strlen(half));
    char c;
    errno = 0;
    ssize_t n = recv(s, &c, 1, 0);
    cr_assert(n == 0 || (n < 0 && errno == ECONNRESET), "the worker closed it (recv %zd, %s)", n,
              strerror(errno));
    close(s);

    /* An oversized head: 431. */
    size_t big = 20000;
    char *req = tq_xmalloc(big + 64);
    int k = snprintf(req, 64, "GET /healthz HTTP/1.1\r\nX-Big: ");
    memset(req + k, 'a', big);
    memcpy(req + k + big, "\r\n\r\n", 5);
    char *r = exchange(port, req, strlen(req), 10000);
    cr_assert_eq(status_of(r), 431, "%s", r);
    free(r);
    free(req);

    /* HEAD: the headers of GET, no body. */
    const char head[] = "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    r = exchange(port, head, strlen(head), 10000);
    cr_assert_eq(status_of(r), 200, "%s", r);
    cr_assert_not_null(strstr(r, "Content-Length: 3\r\n"), "%s", r);
    const char *end = strstr(r, "\r\n\r\n");
    cr_assert_not_null(end);
    cr_assert_str_empty(end + 4, "HEAD has no body: \"%s\"", end + 4);
    free(r);

    /* Not HTTP at all: 400, and the listener still works. */
    const char junk[] = "\x01\x02 not http\r\n\r\n";
    r = exchange(port, junk, strlen(junk), 10000);
    cr_assert_eq(status_of(r), 400, "%s", r);
    free(r);
    r = get(port, "/healthz?x=1");
    cr_assert_eq(status_of(r), 200, "%s", r);
    free(r);
    cr_assert_eq(h_worker_stop(w, 20000), 0);
}


/* A worker whose port is taken refuses to start (exit 1), and the failed
   start frees what it took: the suite's sanitizer scan sees no leak. */
Test(listener, a_taken_port_refuses_the_start_cleanly)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(s, 1), 0);
    socklen_t al = sizeof(a);
    cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &al), 0);
    char http[64];
    snprintf(http, sizeof(http), "TQ_HTTP_ADDR=127.0.0.1:%d", ntohs(a.sin_port));
    const char *env[] = {http, NULL};
    pid_t w = h_worker_start(env);
    int status = 0;
    pid_t got = 0;
    for (int i = 0; i < 600 && got == 0; i++) {   /* up to 60 s on a loaded machine */
        got = waitpid(w, &status, WNOHANG);
        if (got == 0)
            tq_sleep_ms(100);
    }
    close(s);
    cr_assert_eq(got, w, "the worker kept running on a port it could not listen on");
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "exit status %d", status);
}
