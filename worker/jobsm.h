/*
 * A job's life as a state machine: its phase, the events that move it, and
 * one pure function that decides each move (the job status, tenant status,
 * audit event and queue action it writes). No libuv, no I/O: the engine
 * (engine.c) asks, and tests/unit/test_jobsm.c checks every pair. The table
 * and what each phase means are in jobsm.c; worker/README.md tells the story.
 */
#ifndef WK_JOBSM_H
#define WK_JOBSM_H

#include <stdbool.h>
#include <stddef.h>

#include "tq/pipeline.h"
#include "tq/status.h"

/* What a phase does with steps: start forward runs, start undos, or start nothing. */
enum wk_starts { WK_START_NONE, WK_START_RUN, WK_START_UNDO };

/* X(NAME, "name", starts, stored job phase) */
#define WK_PHASE_MAP(X)                                             \
    X(FORWARD,         "forward",         WK_START_RUN,  "forward")  \
    X(CHECKING,        "checking",        WK_START_RUN,  "forward")  \
    X(PARKING,         "parking",         WK_START_NONE, "forward")  \
    X(BLOCKING,        "blocking",        WK_START_NONE, "forward")  \
    X(FAILING,         "failing",         WK_START_NONE, "forward")  \
    X(CANCELLING,      "cancelling",      WK_START_NONE, "forward")  \
    X(CHECK_CANCEL,    "check_cancel",    WK_START_NONE, "forward")  \
    X(HANDBACK,        "handback",        WK_START_NONE, "forward")  \
    X(ROLLBACK,        "rollback",        WK_START_UNDO, "rollback") \
    X(CANCEL_ROLLBACK, "cancel_rollback", WK_START_UNDO, "rollback") \
    X(DEPROVISION,     "deprovision",     WK_START_UNDO, "rollback") \
    X(UNDO_FAILING,    "undo_failing",    WK_START_NONE, "rollback") \
    X(UNDO_HANDBACK,   "undo_handback",   WK_START_NONE, "rollback") \
    X(STALE,           "stale",           WK_START_NONE, "forward")  \
    X(ENDED,           "ended",           WK_START_NONE, "forward")

enum wk_phase {
#define X(n, s, st, db) WK_PH_##n,
    WK_PHASE_MAP(X)
#undef X
    WK_NPHASES
};

/*
 * What happens to a job. The first seven come from outside (a step's
 * outcome, an operator, the worker, the writer); the last three are what
 * its steps add up to once none runs or waits on a timer (wk_job_settle).
 */
#define WK_EVENT_MAP(X)                                                          \
    X(FAIL,      "a step failed for good (class security, integration, none)") \
    X(BLOCK,     "a compliance check failed for good")                          \
    X(PARK,      "a retry waits longer than TQ_LONG_WAIT_MS")                    \
    X(CANCEL,    "an operator cancelled the job")                               \
    X(DRAIN,     "the worker drains (SIGTERM)")                                 \
    X(LEASE_LOST, "another worker holds the job now")                          \
    X(UNDO_FAIL, "an undo failed for good")                                     \
    X(DONE,      "idle: every step done")                                       \
    X(WARNED,    "idle: every step done, some with a warning (or drift)")      \
    X(LEFT,      "idle: steps left that this phase does not start")

enum wk_event {
    WK_EV_NONE = 0,   /* nothing for the job (busy, or a step outcome without consequence) */
#define X(n, d) WK_EV_##n,
    WK_EVENT_MAP(X)
#undef X
    WK_NEVENTS
};

/* The queue action after the job's last row commits. */
enum wk_redis_act {
    WK_NONE,      /* not the last row */
    WK_ACK,       /* finished: LREM from our processing list */
    WK_RELEASE,   /* handed back: lease released, id to the head of ready */
    WK_PARK,      /* handed back until a due time: id to delayed */
    WK_BURY,      /* dead-lettered */
    WK_DROP,      /* lease lost: only the id leaves our processing list, no row */
};

/* One move: where the job goes and what it writes on the way. */
struct wk_move {
    enum wk_phase next;
    enum tq_job_status job;          /* TQ_JS_NONE: no job row */
    enum tq_tenant_status tenant;    /* TQ_TS_NONE: the tenant's status stays */
    const char *audit;               /* audit event, NULL: none */
    enum wk_redis_act act;           /* != WK_NONE: the job's last word */
};

/*
 * The move of a job in phase ph on event ev; false when the table has no
 * such row (the event changes nothing: ignore it). lifecycle is false for
 * jobs that do not change the tenant's lifecycle (revalidation): their
 * moves never carry a tenant status.
 */
bool wk_decide(enum wk_phase ph, enum wk_event ev, bool lifecycle, struct wk_move *out);

/* Step states as the engine tracks them (stored as tq_step_status names). */
enum wk_st {
    WK_S_PENDING,       /* forward: not started (or waiting for a long retry) */
    WK_S_RUNNING,
    WK_S_WAIT_RETRY,    /* retry timer armed */
    WK_S_SUCCEEDED,
    WK_S_WARNED,        /* performance check failed, or drift: done, with a warning */
    WK_S_FAILED,        /* failed for good */
    WK_S_UNDO_PENDING,
    WK_S_UNDOING,
    WK_S_UNDO_WAIT,
    WK_S_COMPENSATED,
    WK_S_COMP_FAILED,
    WK_S_NOTHING,       /* never ran, or never reached its server: nothing to undo */
    WK_S_SKIPPED,       /* disabled by its "enabled" condition: counts as done */
};

/* The stored status of a step state. */
enum tq_step_status wk_st_status(enum wk_st s);

/*
 * What n step states add up to in phase ph: WK_EV_NONE while a step runs
 * or waits on a timer, else WK_EV_DONE / WK_EV_WARNED / WK_EV_LEFT.
 */
enum wk_event wk_job_settle(enum wk_phase ph, const enum wk_st *st, size_t n);

/*
 * The job event of a forward step failing for good under its validation
 * class; WK_EV_NONE for a performance warning and for every failure of a
 * revalidation (drift is recorded, never acted on).
 */
enum wk_event wk_fail_event(enum tq_step_class cls, bool revalidation);

/* The first phase of a claimed job. */
enum wk_phase wk_first_phase(const char *kind, bool rollback, bool cancel_requested);

const char *wk_phase_name(enum wk_phase ph);
const char *wk_event_name(enum wk_event ev);
enum wk_starts wk_phase_starts(enum wk_phase ph);
/* "forward" or "rollback": the job's phase column. */
const char *wk_phase_stored(enum wk_phase ph);

#endif
