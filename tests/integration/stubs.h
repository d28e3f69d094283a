/*
 * Helpers for suites that drive the S3 stand-in (tests/stubs/s3server.py):
 * start it on a free port and kill it by pid, read and poke its admin
 * endpoints over a plain loopback socket, put objects with curl's own SigV4
 * signer, and run a worker whose stderr goes to a file the test can search.
 * Call from the test process only (Criterion runs each test in its own).
 */
#ifndef TQ_TEST_STUBS_H
#define TQ_TEST_STUBS_H

#include <stdbool.h>
#include <sys/types.h>

#include <jansson.h>

struct st_s3 {
    pid_t pid;
    int port;
    char endpoint[64];     /* "http://127.0.0.1:PORT" */
    char region[32];
    char access_key[64];
    char secret_key[128];
    char log_path[300];    /* the stub's stderr */
};

/*
 * Start s3server.py with Debian's /usr/bin/python3 on port 0 (--port-file)
 * under H.tmpdir; fails the test if it does not come up within 10 s. The
 * struct is registered so st_s3_stop_all() (call it in .fini) kills it.
 */
void st_s3_start(struct st_s3 *s, const char *region, const char *access_key,
                 const char *secret_key);
/* SIGTERM by pid, SIGKILL after 3 s; safe to call twice. */
void st_s3_stop(struct st_s3 *s);
void st_s3_stop_all(void);

/* HTTP on 127.0.0.1:port; returns the status (-1: no answer); *body heap, may be NULL. */
int st_http(int port, const char *method, const char *target, char **body);
/* GET /_admin/state, parsed (test fails otherwise). Caller decrefs. */
json_t *st_s3_state(const struct st_s3 *s);
/* The bucket's entry in /_admin/state (new reference) or NULL when absent. */
json_t *st_s3_bucket(const struct st_s3 *s, const char *bucket);
/* POST /_admin/<action>?<query>; returns the HTTP status. */
int st_s3_admin(const struct st_s3 *s, const char *action, const char *query);
/* Signed PutObject via the curl CLI (--aws-sigv4); key already URI-encoded. Status. */
int st_s3_put_object(const struct st_s3 *s, const char *bucket, const char *key_enc,
                     const char *data);

/* A tq-worker (own process group) with stdout and stderr appended to log_path. */
pid_t st_worker_start(const char *log_path);
/* h_worker_stop, then echo sanitizer reports found in log_path to stderr. */
int st_worker_stop(pid_t pid, int timeout_ms, const char *log_path);

/* Whole file as a heap string ("" when unreadable). */
char *st_slurp(const char *path);

#endif
