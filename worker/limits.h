/*
 * Admission of a step (worker/limits.c): under a lease PostgreSQL has
 * confirmed, and, for a step with a "limit" in the pipeline, with one of the
 * fleet-wide permits of its key. The engine's narrow hooks into limits.c;
 * loop thread unless said.
 */
#ifndef WK_LIMITS_H
#define WK_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tq/config.h"

struct wk_job;
struct wk_engine;

/* Once, before the loop runs; worker_id names this worker's permits. */
void wk_limits_init(const struct tq_config *cfg, const char *worker_id);
/* After the loop ended. */
void wk_limits_shutdown(void);

/*
 * Before step i of j starts (run or undo): true when it may start now (no
 * limit, or its permit is held). false: it waits for a permit without a
 * thread or a timer slot of its own — its state is set to a retry wait, and
 * limits.c calls wk_job_advance again once Redis answered or a short timer
 * (the step's retry timer) fired.
 */
bool wk_limit_admit(struct wk_job *j, size_t i, bool undo);
/* After step i of j ended: give its permit back (if it held one). */
void wk_limit_release(struct wk_job *j, size_t i);
/* j is being freed: forget it (and give back anything it still held). */
void wk_limits_forget(struct wk_job *j);
/* Heartbeat (a thread-pool thread): extend the leases of the permits held. */
void wk_limits_renew(void);

/*
 * After the heartbeat extended leases (loop thread): of the jobs in asked,
 * those in ok are still ours as of sent_ms (tq_mono_ms when it asked); the
 * others lost their lease (lapsed, or taken over) and are abandoned now.
 */
void wk_leases_confirmed(struct wk_engine *e, const int64_t *asked, size_t nasked,
                         const int64_t *ok, size_t nok, uint64_t sent_ms);
/* True (once) when a step waits for a confirmation: extend at the next tick. Any thread. */
bool wk_leases_wanted(void);

#endif
