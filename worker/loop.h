/* The worker's loop and its HTTP endpoints (worker-internal). */
#ifndef WK_LOOP_H
#define WK_LOOP_H

#include <stdatomic.h>

#include <uv.h>

#include "tq/config.h"
#include "worker.h"

/* Run the worker until SIGTERM/SIGINT has drained it. Returns the exit code. */
int wk_run(const struct tq_config *cfg);

struct wk_http;
/* Listen on addr ("host:port") for /healthz, /readyz, /metrics. 0 or -1 (logged). */
int wk_http_start(uv_loop_t *loop, const char *addr, const atomic_bool *draining,
                  struct wk_http **out);
/* Close the listener and open connections; frees h once closed. */
void wk_http_close(struct wk_http *h);

#endif
