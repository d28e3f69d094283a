/*
 * The job state machine's table and its pure helpers (jobsm.h). The engine
 * keeps one phase per job and asks wk_decide() what an event does; nothing
 * here touches the loop, the writer or the clock.
 *
 * Phases (what may follow is in the table below):
 *
 *   FORWARD         provision: start every step whose needs are met
 *   CHECKING        revalidation: the same, over the steps with a class;
 *                   a failing check is drift, recorded, never acted on
 *   PARKING         a retry waits longer than TQ_LONG_WAIT_MS: start
 *                   nothing; once idle, hand back until the retry is due
 *   BLOCKING        a compliance check failed: start nothing; once idle, blocked
 *   FAILING         a step failed for good: start nothing; once idle, roll back
 *   CANCELLING      an operator cancelled: start nothing; once idle, roll back
 *   CHECK_CANCEL    a revalidation was cancelled: once idle, end (no undo)
 *   HANDBACK        the worker drains: start nothing; once idle, hand back
 *   ROLLBACK        undo, in reverse dependency order, every step that may
 *                   have had an effect; then failed
 *   CANCEL_ROLLBACK the same, then cancelled
 *   DEPROVISION     the same for a deprovision job, then deprovisioned
 *   UNDO_FAILING    an undo failed for good: start nothing; once idle,
 *                   rollback_failed (an operator's retry resumes the undo)
 *   UNDO_HANDBACK   the worker drains during an undo: once idle, hand back
 *   STALE           the lease is lost: write nothing; once idle, drop the id
 *                   (unless the writer already answered the job's last row)
 *   ENDED           the last row is queued; the writer reports when it
 *                   committed (then the outcome counts) and the job is
 *                   freed, or that the fence refused it: LEASE_LOST
 *
 * A step outcome is an event only when it changes the job (a failure for
 * good, a long wait, an undo failing for good); everything else only
 * changes the step, and the job moves when it is idle: none of its steps
 * runs or waits on a timer (wk_job_settle). An event a phase does not list
 * changes nothing. Two rules stand outside the table: LEASE_LOST moves
 * every phase but STALE to STALE, once, ENDED included (a last row the
 * fence refused was no outcome: the job was lost; the writer acked its id
 * already, so that move queues nothing), and a job that does not change
 * the tenant's lifecycle (revalidation) never writes a tenant status — a
 * hand-back or redelivery of one then has nothing to restore.
 */
#include "jobsm.h"

#include <string.h>

#define ANY_IDLE WK_NEVENTS   /* in the table: DONE, WARNED or LEFT */

struct row {
    enum wk_phase ph;
    enum wk_event ev;
    enum wk_phase next;
    enum tq_job_status job;
    enum tq_tenant_status tenant;
    const char *audit;
    enum wk_redis_act act;
};

#define P(x) WK_PH_##x
#define E(x) WK_EV_##x
#define J(x) TQ_JS_##x
#define T(x) TQ_TS_##x
/* clang-format off */
static const struct row rows[] = {
/*  phase               event       -> phase               job status          tenant status       audit event            queue */
  { P(FORWARD),         E(FAIL),      P(FAILING),          J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(FORWARD),         E(BLOCK),     P(BLOCKING),         J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(FORWARD),         E(PARK),      P(PARKING),          J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(FORWARD),         E(CANCEL),    P(CANCELLING),       J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(FORWARD),         E(DRAIN),     P(HANDBACK),         J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(FORWARD),         E(DONE),      P(ENDED),            J(SUCCEEDED),       T(ACTIVE),          "active",              WK_ACK },
  { P(FORWARD),         E(WARNED),    P(ENDED),            J(SUCCEEDED),       T(ACTIVE),          "active_with_warnings",WK_ACK },
  { P(CHECKING),        E(PARK),      P(PARKING),          J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(CHECKING),        E(CANCEL),    P(CHECK_CANCEL),     J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(CHECKING),        E(DRAIN),     P(HANDBACK),         J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(CHECKING),        E(DONE),      P(ENDED),            J(SUCCEEDED),       T(NONE),            "revalidated",         WK_ACK },
  { P(CHECKING),        E(WARNED),    P(ENDED),            J(SUCCEEDED),       T(NONE),            "drift_detected",      WK_ACK },
  { P(PARKING),         E(FAIL),      P(FAILING),          J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(PARKING),         E(BLOCK),     P(BLOCKING),         J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(PARKING),         E(CANCEL),    P(CANCELLING),       J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(PARKING),         ANY_IDLE,     P(ENDED),            J(QUEUED),          T(QUEUED),          "retry_scheduled",     WK_PARK },
  { P(BLOCKING),        E(FAIL),      P(FAILING),          J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(BLOCKING),        E(CANCEL),    P(CANCELLING),       J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(BLOCKING),        ANY_IDLE,     P(ENDED),            J(BLOCKED),         T(BLOCKED),         "blocked",             WK_ACK },
  { P(FAILING),         E(CANCEL),    P(CANCELLING),       J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(FAILING),         ANY_IDLE,     P(ROLLBACK),         J(RUNNING),         T(ROLLING_BACK),    "rollback_started",    WK_NONE },
  { P(CANCELLING),      ANY_IDLE,     P(CANCEL_ROLLBACK),  J(RUNNING),         T(ROLLING_BACK),    "rollback_started",    WK_NONE },
  { P(CHECK_CANCEL),    ANY_IDLE,     P(ENDED),            J(CANCELLED),       T(NONE),            "cancelled",           WK_ACK },
  { P(HANDBACK),        E(FAIL),      P(FAILING),          J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(HANDBACK),        E(BLOCK),     P(BLOCKING),         J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(HANDBACK),        E(PARK),      P(PARKING),          J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(HANDBACK),        E(CANCEL),    P(CANCELLING),       J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(HANDBACK),        ANY_IDLE,     P(ENDED),            J(QUEUED),          T(QUEUED),          "handed_back",         WK_RELEASE },
  { P(ROLLBACK),        E(CANCEL),    P(CANCEL_ROLLBACK),  J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(ROLLBACK),        E(DRAIN),     P(UNDO_HANDBACK),    J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(ROLLBACK),        E(UNDO_FAIL), P(UNDO_FAILING),     J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(ROLLBACK),        E(DONE),      P(ENDED),            J(FAILED),          T(FAILED),          "failed",              WK_ACK },
  { P(CANCEL_ROLLBACK), E(DRAIN),     P(UNDO_HANDBACK),    J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(CANCEL_ROLLBACK), E(UNDO_FAIL), P(UNDO_FAILING),     J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(CANCEL_ROLLBACK), E(DONE),      P(ENDED),            J(CANCELLED),       T(CANCELLED),       "cancelled",           WK_ACK },
  { P(DEPROVISION),     E(DRAIN),     P(UNDO_HANDBACK),    J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(DEPROVISION),     E(UNDO_FAIL), P(UNDO_FAILING),     J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(DEPROVISION),     E(DONE),      P(ENDED),            J(SUCCEEDED),       T(DEPROVISIONED),   "deprovisioned",       WK_ACK },
  { P(UNDO_FAILING),    ANY_IDLE,     P(ENDED),            J(ROLLBACK_FAILED), T(ROLLBACK_FAILED), "rollback_failed",     WK_ACK },
  { P(UNDO_HANDBACK),   E(UNDO_FAIL), P(UNDO_FAILING),     J(NONE),            T(NONE),            NULL,                  WK_NONE },
  { P(UNDO_HANDBACK),   ANY_IDLE,     P(ENDED),            J(QUEUED),          T(NONE),            "handed_back",         WK_RELEASE },
  { P(STALE),           ANY_IDLE,     P(ENDED),            J(NONE),            T(NONE),            NULL,                  WK_DROP },
};
/* clang-format on */

static bool idle_event(enum wk_event ev)
{
    return ev == WK_EV_DONE || ev == WK_EV_WARNED || ev == WK_EV_LEFT;
}

bool wk_decide(enum wk_phase ph, enum wk_event ev, bool lifecycle, struct wk_move *out)
{
    if ((unsigned)ph >= WK_NPHASES || ev <= WK_EV_NONE || ev >= WK_NEVENTS)
        return false;
    if (ph == WK_PH_ENDED && ev != WK_EV_LEASE_LOST)
        return false;
    const struct row *hit = NULL;
    if (ev == WK_EV_LEASE_LOST) {
        static const struct row stale = {0, 0, WK_PH_STALE, TQ_JS_NONE, TQ_TS_NONE, NULL, WK_NONE};
        hit = ph == WK_PH_STALE ? NULL : &stale;
    }
    for (size_t i = 0; !hit && ev != WK_EV_LEASE_LOST && i < sizeof(rows) / sizeof(rows[0]); i++)
        if (rows[i].ph == ph && rows[i].ev == ev)
            hit = &rows[i];
    for (size_t i = 0; !hit && idle_event(ev) && i < sizeof(rows) / sizeof(rows[0]); i++)
        if (rows[i].ph == ph && rows[i].ev == ANY_IDLE)
            hit = &rows[i];
    if (!hit)
        return false;
    *out = (struct wk_move){hit->next, hit->job, lifecycle ? hit->tenant : TQ_TS_NONE, hit->audit,
                            hit->act};
    return true;
}

enum tq_step_status wk_st_status(enum wk_st s)
{
    switch (s) {
    case WK_S_RUNNING:
    case WK_S_UNDOING:
        return TQ_SS_RUNNING;
    case WK_S_SUCCEEDED:
        return TQ_SS_SUCCEEDED;
    case WK_S_WARNED:
    case WK_S_FAILED:
        return TQ_SS_FAILED;
    case WK_S_COMPENSATED:
        return TQ_SS_COMPENSATED;
    case WK_S_COMP_FAILED:
        return TQ_SS_COMPENSATION_FAILED;
    case WK_S_SKIPPED:
        return TQ_SS_SKIPPED;
    default:
        return TQ_SS_PENDING;
    }
}

enum wk_event wk_job_settle(enum wk_phase ph, const enum wk_st *st, size_t n)
{
    bool done = true, warned = false;
    bool undo = wk_phase_starts(ph) == WK_START_UNDO || strcmp(wk_phase_stored(ph), "rollback") == 0;
    for (size_t i = 0; i < n; i++) {
        switch (st[i]) {
        case WK_S_RUNNING:
        case WK_S_UNDOING:
        case WK_S_WAIT_RETRY:
        case WK_S_UNDO_WAIT:
            return WK_EV_NONE;
        case WK_S_SKIPPED:
            break;
        case WK_S_SUCCEEDED:
            done &= !undo;
            break;
        case WK_S_WARNED:
            done &= !undo;
            warned = true;
            break;
        case WK_S_COMPENSATED:
        case WK_S_NOTHING:
            done &= undo;
            break;
        default:
            done = false;
        }
    }
    return !done ? WK_EV_LEFT : warned && !undo ? WK_EV_WARNED : WK_EV_DONE;
}

enum wk_event wk_fail_event(enum tq_step_class cls, bool revalidation)
{
    if (revalidation || cls == TQ_CLASS_PERFORMANCE)
        return WK_EV_NONE;
    return cls == TQ_CLASS_COMPLIANCE ? WK_EV_BLOCK : WK_EV_FAIL;
}

enum wk_phase wk_first_phase(const char *kind, bool rollback, bool cancel_requested)
{
    if (strcmp(kind, "deprovision") == 0)
        return WK_PH_DEPROVISION;
    if (strcmp(kind, "revalidate") == 0)
        return cancel_requested ? WK_PH_CHECK_CANCEL : WK_PH_CHECKING;
    if (rollback)
        return cancel_requested ? WK_PH_CANCEL_ROLLBACK : WK_PH_ROLLBACK;
    return cancel_requested ? WK_PH_CANCELLING : WK_PH_FORWARD;
}

static const struct {
    const char *name;
    enum wk_starts starts;
    const char *stored;
} phases[] = {
#define X(n, s, st, db) [WK_PH_##n] = {s, st, db},
    WK_PHASE_MAP(X)
#undef X
};

static const char *const events[] = {
    [WK_EV_NONE] = "none",
#define X(n, d) [WK_EV_##n] = #n,
    WK_EVENT_MAP(X)
#undef X
};

const char *wk_phase_name(enum wk_phase ph)
{
    return (unsigned)ph < WK_NPHASES ? phases[ph].name : "?";
}

const char *wk_event_name(enum wk_event ev)
{
    return (unsigned)ev < WK_NEVENTS ? events[ev] : "?";
}

enum wk_starts wk_phase_starts(enum wk_phase ph)
{
    return (unsigned)ph < WK_NPHASES ? phases[ph].starts : WK_START_NONE;
}

const char *wk_phase_stored(enum wk_phase ph)
{
    return (unsigned)ph < WK_NPHASES ? phases[ph].stored : "forward";
}
