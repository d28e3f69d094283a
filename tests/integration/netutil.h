/*
 * Raw HTTP against a worker's listener, for the listener and readiness
 * suites: free ports, plain and non-blocking connects, one exchange read to
 * the server's close, and a worker started with a chosen RLIMIT_NOFILE.
 */
#ifndef TQ_TEST_NETUTIL_H
#define TQ_TEST_NETUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/types.h>

int free_port(void);
/* A connected (or, nonblock, connecting) socket to 127.0.0.1:port; -1 on error. */
int connect_to(int port, bool nonblock);
/* The same from 127.0.0.<src> (2..254); src 1: the default source. */
int connect_from(int port, bool nonblock, int src);
/* Send req, read until the server closes (at most timeout_ms); heap answer. */
char *exchange(int port, const char *req, size_t req_len, int timeout_ms);
/* The status of an HTTP/1.1 answer, 0 when there is none. */
int status_of(const char *resp);
/* GET path; heap answer. */
char *get(int port, const char *path);
/* A worker with RLIMIT_NOFILE nofile, listening on port, output to log_path;
   waits until /healthz answers. Adopted by the harness (killed in .fini). */
pid_t worker_with_limit(int port, rlim_t nofile, const char *log_path);

#endif
