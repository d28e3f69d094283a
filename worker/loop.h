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
/* Listen on addr ("host:port") for /healthz, /readyz, /metrics. 0 or -1 (logged). */
int wk_http_start(uv_loop_t *loop, const char *addr, const atomic_bool *draining,
                  struct wk_http **out);
/* /readyz answers 503 from now on. */
void wk_http_draining(struct wk_http *h);
/* Close the listener and open connections; frees h once closed. */
void wk_http_close(struct wk_http *h);

#endif
