/* Helpers for suites that use the S3 stand-in (see stubs.h). */
#include "stubs.h"

#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tq/util.h"

#define MAX_STUBS 4
static struct st_s3 *running[MAX_STUBS];

char *st_slurp(const char *path)
{
    char *s = NULL;
    size_t n;
    if (tq_read_file(path, 64 * 1024 * 1024, &s, &n) != TQ_OK)
        return tq_xstrdup("");
    return s;
}

void st_s3_start(struct st_s3 *s, const char *region, const char *access_key,
                 const char *secret_key)
{
    static int seq;
    memset(s, 0, sizeof(*s));
    snprintf(s->region, sizeof(s->region), "%s", region);
    snprintf(s->access_key, sizeof(s->access_key), "%s", access_key);
    snprintf(s->secret_key, sizeof(s->secret_key), "%s", secret_key);
    int n = seq++;
    char port_file[300], out_path[300];
    snprintf(port_file, sizeof(port_file), "%s/s3-%d.port", H.tmpdir, n);
    snprintf(out_path, sizeof(out_path), "%s/s3-%d.out", H.tmpdir, n);
    snprintf(s->log_path, sizeof(s->log_path), "%s/s3-%d.log", H.tmpdir, n);
    unlink(port_file);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(s->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        dup2(o, 1);
        dup2(e, 2);
        /* the secret goes on argv here only: the stub is test scaffolding */
        execl("/usr/bin/python3", "python3", TQ_SOURCE_DIR "/tests/stubs/s3server.py", "--port",
              "0", "--port-file", port_file, "--region", region, "--access-key", access_key,
              "--secret-key", secret_key, "--lifetime", "900", (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    for (int i = 0; i < MAX_STUBS; i++)
        if (!running[i]) {
            running[i] = s;
            break;
        }
    for (int waited = 0; waited < 10000 && !s->port; waited += 20) {
        char *p = st_slurp(port_file);
        s->port = atoi(p);
        free(p);
        if (!s->port)
            tq_sleep_ms(20);
    }
    if (!s->port) {
        char *log = st_slurp(s->log_path);
        st_s3_stop(s);
        cr_assert_fail("s3server.py did not start: %s", log);
    }
    snprintf(s->endpoint, sizeof(s->endpoint), "http://127.0.0.1:%d", s->port);
}

void st_s3_stop(struct st_s3 *s)
{
    for (int i = 0; i < MAX_STUBS; i++)
        if (running[i] == s)
            running[i] = NULL;
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGTERM);
    int st;
    bool gone = false;
    for (int waited = 0; waited < 3000 && !gone; waited += 20) {
        if (waitpid(s->pid, &st, WNOHANG) == s->pid)
            gone = true;
        else
            tq_sleep_ms(20);
    }
    if (!gone) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &st, 0);
    }
    s->pid = 0;
}

void st_s3_stop_all(void)
{
    for (int i = 0; i < MAX_STUBS; i++)
        if (running[i])
            st_s3_stop(running[i]);
}

int st_http(int port, const char *method, const char *target, char **body)
{
    if (body)
        *body = NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    char *req = tq_xasprintf("%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 0\r\n"
                             "Connection: close\r\n\r\n", method, target, port);
    size_t len = strlen(req), off = 0;
    while (off < len) {
        ssize_t w = write(fd, req + off, len - off);
        if (w <= 0 && errno != EINTR)
            break;
        off += w > 0 ? (size_t)w : 0;
    }
    free(req);
    struct tq_buf b;
    tq_buf_init(&b);
    char chunk[8192];
    ssize_t r;
    while ((r = read(fd, chunk, sizeof(chunk))) != 0) {
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        tq_buf_append(&b, chunk, (size_t)r);
    }
    close(fd);
    int status = -1;
    if (b.data && sscanf(b.data, "HTTP/1.%*d %d", &status) != 1)
        status = -1;
    const char *sep = b.data ? strstr(b.data, "\r\n\r\n") : NULL;
    if (body)
        *body = tq_xstrdup(sep ? sep + 4 : "");
    tq_buf_cleanup(&b);
    return status;
}

json_t *st_s3_state(const struct st_s3 *s)
{
    char *body = NULL;
    int st = st_http(s->port, "GET", "/_admin/state", &body);
    cr_assert_eq(st, 200, "GET /_admin/state: %d %s", st, body ? body : "");
    json_error_t je;
    json_t *o = json_loads(body, 0, &je);
    cr_assert_not_null(o, "/_admin/state is not JSON: %s", je.text);
    free(body);
    return o;
}

json_t *st_s3_bucket(const struct st_s3 *s, const char *bucket)
{
    json_t *state = st_s3_state(s);
    json_t *b = json_object_get(json_object_get(state, "buckets"), bucket);
    json_incref(b);
    json_decref(state);
    return b;
}

int st_s3_admin(const struct st_s3 *s, const char *action, const char *query)
{
    char target[512];
    snprintf(target, sizeof(target), "/_admin/%s%s%s", action, query ? "?" : "", query ? query : "");
    char *body = NULL;
    int st = st_http(s->port, "POST", target, &body);
    free(body);
    return st;
}

int st_s3_put_object(const struct st_s3 *s, const char *bucket, const char *key_enc,
                     const char *data)
{
    char sha[65], hdr[128], sigv4[64], user[200], url[600];
    tq_sha256_hex(data, strlen(data), sha);
    snprintf(hdr, sizeof(hdr), "x-amz-content-sha256: %s", sha);
    snprintf(sigv4, sizeof(sigv4), "aws:amz:%s:s3", s->region);
    snprintf(user, sizeof(user), "%s:%s", s->access_key, s->secret_key);
    snprintf(url, sizeof(url), "%s/%s/%s", s->endpoint, bucket, key_enc);
    const char *argv[] = {"/usr/bin/curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                          "--path-as-is", "--aws-sigv4", sigv4, "--user", user, "-H", hdr,
                          "-X", "PUT", "--data-binary", data, url, NULL};
    char *out = NULL;
    int rc = h_run(argv, &out, NULL);
    int status = rc == 0 ? atoi(out) : -1;
    free(out);
    return status;
}

pid_t st_worker_start(const char *log_path)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        setpgid(0, 0);
        int devnull = open("/dev/null", O_RDONLY);
        int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(devnull, 0);
        dup2(log, 1);
        dup2(log, 2);
        execl(TQ_WORKER_BIN, "tq-worker", (char *)NULL);
        _exit(127);
    }
    h_worker_adopt(pid);
    return pid;
}

int st_worker_stop(pid_t pid, int timeout_ms, const char *log_path)
{
    int rc = h_worker_stop(pid, timeout_ms);
    char *log = st_slurp(log_path);
    if (strstr(log, "Sanitizer") || strstr(log, "runtime error"))
        fprintf(stderr, "worker log %s:\n%s\n", log_path, log);
    free(log);
    return rc;
}
