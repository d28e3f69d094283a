/* The worker's loop and its HTTP endpoints (worker-internal). */
#ifndef WK_LOOP_H
#define WK_LOOP_H

#include <stdatomic.h>

#include <uv.h>

#include "tq/config.h"
#include "worker.h"

/* Run the worker until SIGTERM/SIGINT has drained it. Returns the exit code. */
int wk_run(const struct tq_config *cfg);

/*
 * Refuse to run where a worker must not (startup.c): as a PostgreSQL
 * superuser without cfg->allow_superuser, against a missing, older or
 * newer tq schema, or without a usable credentials store. Warns when the
 * single-host file store meets other worker ids. 0 to go on, -1 (logged)
 * to stop.
 */
int wk_startup_checks(const struct wk_settings *set, struct tq_pg *pg, struct tq_queue *q);

struct wk_http;
/*
 * Listen on addr ("host:port") for /healthz, /readyz, /metrics. 0 or -1
 * (logged). fds_needed: descriptors the rest of the worker may need at
 * once (slots, pools, curl); the listener keeps its connections below
 * RLIMIT_NOFILE minus that.
 */
int wk_http_start(uv_loop_t *loop, const char *addr, const atomic_bool *draining,
                  int fds_needed, struct wk_http **out);

/*
 * What /readyz and tq_dependency_up report, from real round trips (any
 * thread; err and detail as the call returned them, detail from
 * tq_queue_errstr/tq_pg_errstr). tq_dependency_up: the service answered
 * the last one. /readyz: any failure is shown at once; a success clears
 * "unreachable", and only a heartbeat's success (wk_dep_beat) clears what
 * the service refused.
 */
enum wk_dep { WK_DEP_REDIS, WK_DEP_PG };
void wk_dep_report(enum wk_dep d, enum tq_err err, const char *detail);
void wk_dep_beat(enum wk_dep d, enum tq_err err, const char *detail);
/* The database answers but cannot serve us (read-only, not migrated); NULL: fine. */
void wk_dep_pg_state(const char *problem);
/* Close the listener and open connections; frees h once closed. */
void wk_http_close(struct wk_http *h);

#endif
