/* Raw HTTP helpers for the listener and readiness suites (netutil.h). */
#include "netutil.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "harness.h"
#include "tq/util.h"

int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    getsockname(s, (struct sockaddr *)&a, &len);
    close(s);
    return ntohs(a.sin_port);
}

int connect_from(int port, bool nonblock, int src)
{
    int s = socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (s < 0)
        return -1;
    if (src > 1) {
        /* 127.0.0.<src>, port chosen at connect: a flood spreads over source
           addresses instead of using up the machine's ephemeral ports. */
        int one = 1;
        setsockopt(s, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        struct sockaddr_in b = {.sin_family = AF_INET,
                                .sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)(src & 0xff))};
        if (bind(s, (struct sockaddr *)&b, sizeof(b)) != 0) {
            close(s);
            return -1;
        }
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(s, (struct sockaddr *)&a, sizeof(a)) != 0 && errno != EINPROGRESS) {
        close(s);
        return -1;
    }
    return s;
}

/* Send req, read until the server closes (at most timeout_ms); heap answer. */
int connect_to(int port, bool nonblock)
{
    return connect_from(port, nonblock, 1);
}

char *exchange(int port, const char *req, size_t req_len, int timeout_ms)
{
    int s = connect_to(port, false);
    if (s < 0)
        return tq_xstrdup("");
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    size_t off = 0;
    while (off < req_len) {
        ssize_t n = send(s, req + off, req_len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    struct tq_buf b;
    tq_buf_init(&b);
    char chunk[4096];
    ssize_t n;
    while ((n = recv(s, chunk, sizeof(chunk), 0)) > 0)
        tq_buf_append(&b, chunk, (size_t)n);
    close(s);
    return tq_buf_take(&b, NULL);
}

int status_of(const char *resp)
{
    int code = 0;
    if (sscanf(resp, "HTTP/1.1 %d", &code) != 1)
        code = 0;
    return code;
}

char *get(int port, const char *path)
{
    char req[256];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    return exchange(port, req, strlen(req), 5000);
}

/* A worker with RLIMIT_NOFILE lowered to nofile, listening on port. */
pid_t worker_with_limit(int port, rlim_t nofile, const char *log_path)
{
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    setenv("TQ_HTTP_ADDR", addr, 1);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        setpgid(0, 0);
        struct rlimit rl = {nofile, nofile};
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(126);
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(TQ_WORKER_BIN, "tq-worker", (char *)NULL);
        _exit(127);
    }
    h_worker_adopt(pid);
    for (int i = 0; i < 100; i++) {
        char *r = get(port, "/healthz");
        int code = status_of(r);
        free(r);
        if (code == 200)
            break;
        tq_sleep_ms(100);
    }
    return pid;
}

