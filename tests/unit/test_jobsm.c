/*
 * The job state machine (worker/jobsm.c) without services: every phase ×
 * event against a matrix written here independently of the table, the
 * rules outside the table (a revalidation never moves the tenant, a lost
 * lease makes any job stale, an ended one too), what step states add up to, and whole lives:
 * rollback, cancel, drain hand-back, revalidation.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "jobsm.h"
#include "tq/status.h"

/* One letter per phase, in enum order. */
static const char letters[] = "FKPBXCQHRYDUVSE";

/*
 * Expected next phase per phase (rows, enum order) and event (columns:
 * FAIL BLOCK PARK CANCEL DRAIN LEASE_LOST UNDO_FAIL DONE WARNED LEFT);
 * '-' = the event changes nothing.
 */
static const char *const expected[WK_NPHASES] = {
    [WK_PH_FORWARD] =         "XBPCHS-EE-",
    [WK_PH_CHECKING] =        "--PQHS-EE-",
    [WK_PH_PARKING] =         "XB-C-S-EEE",
    [WK_PH_BLOCKING] =        "X--C-S-EEE",
    [WK_PH_FAILING] =         "---C-S-RRR",
    [WK_PH_CANCELLING] =      "-----S-YYY",
    [WK_PH_CHECK_CANCEL] =    "-----S-EEE",
    [WK_PH_HANDBACK] =        "XBPC-S-EEE",
    [WK_PH_ROLLBACK] =        "---YVSUE--",
    [WK_PH_CANCEL_ROLLBACK] = "----VSUE--",
    [WK_PH_DEPROVISION] =     "----VSUE--",
    [WK_PH_UNDO_FAILING] =    "-----S-EEE",
    [WK_PH_UNDO_HANDBACK] =   "-----SUEEE",
    [WK_PH_STALE] =           "-------EEE",
    [WK_PH_ENDED] =           "-----S----",
};

Test(jobsm, every_phase_and_event_matches_the_matrix)
{
    cr_assert_eq(strlen(letters), WK_NPHASES);
    for (int ph = 0; ph < WK_NPHASES; ph++) {
        cr_assert_eq(strlen(expected[ph]), WK_NEVENTS - 1, "row of %s", wk_phase_name(ph));
        for (int ev = 1; ev < WK_NEVENTS; ev++) {
            struct wk_move m;
            bool ok = wk_decide(ph, ev, true, &m);
            char want = expected[ph][ev - 1];
            char got = ok ? letters[m.next] : '-';
            cr_expect_eq(got, want, "%s on %s: got %c, want %c", wk_phase_name(ph),
                         wk_event_name(ev), got, want);
        }
    }
}

Test(jobsm, none_and_out_of_range_are_refused)
{
    struct wk_move m;
    cr_assert_not(wk_decide(WK_PH_FORWARD, WK_EV_NONE, true, &m));
    cr_assert_not(wk_decide(WK_PH_FORWARD, WK_NEVENTS, true, &m));
    cr_assert_not(wk_decide(WK_NPHASES, WK_EV_DONE, true, &m));
}

/* Moves to ENDED are the job's last word; every other move is not. */
Test(jobsm, only_the_end_acts_on_the_queue)
{
    for (int ph = 0; ph < WK_NPHASES; ph++)
        for (int ev = 1; ev < WK_NEVENTS; ev++) {
            struct wk_move m;
            if (!wk_decide(ph, ev, true, &m))
                continue;
            if (m.next == WK_PH_ENDED) {
                cr_expect_neq(m.act, WK_NONE, "%s on %s", wk_phase_name(ph), wk_event_name(ev));
                cr_expect(m.act == WK_DROP || m.job != TQ_JS_NONE, "%s on %s: no job status",
                          wk_phase_name(ph), wk_event_name(ev));
                cr_expect(m.act != WK_DROP || ph == WK_PH_STALE);
            } else {
                cr_expect_eq(m.act, WK_NONE, "%s on %s", wk_phase_name(ph), wk_event_name(ev));
            }
        }
}

/* Issue: SIGTERM during a revalidation left active tenants "queued" forever. */
Test(jobsm, a_revalidation_never_moves_the_tenant)
{
    for (int ph = 0; ph < WK_NPHASES; ph++)
        for (int ev = 1; ev < WK_NEVENTS; ev++) {
            struct wk_move m;
            if (wk_decide(ph, ev, false, &m))
                cr_expect_eq(m.tenant, TQ_TS_NONE, "%s on %s moves the tenant to %s",
                             wk_phase_name(ph), wk_event_name(ev),
                             tq_tenant_status_name(m.tenant));
        }
}

/* A job never gets stuck: whatever its idle steps add up to, its phase has a move. */
Test(jobsm, every_phase_has_a_way_out_when_idle)
{
    for (int ph = 0; ph < WK_PH_ENDED; ph++) {
        struct wk_move m;
        cr_expect(wk_decide(ph, WK_EV_DONE, true, &m), "%s: no move when done", wk_phase_name(ph));
        if (wk_phase_starts(ph) == WK_START_NONE) {
            cr_expect(wk_decide(ph, WK_EV_LEFT, true, &m), "%s: stuck", wk_phase_name(ph));
            cr_expect(wk_decide(ph, WK_EV_WARNED, true, &m), "%s: stuck", wk_phase_name(ph));
        }
    }
}

static void walk(enum wk_phase ph, enum wk_event ev, bool lifecycle, enum wk_phase next,
                 enum tq_job_status js, enum tq_tenant_status ts, const char *audit,
                 enum wk_redis_act act)
{
    struct wk_move m;
    cr_assert(wk_decide(ph, ev, lifecycle, &m), "%s on %s refused", wk_phase_name(ph),
              wk_event_name(ev));
    cr_assert_eq(m.next, next, "%s on %s -> %s", wk_phase_name(ph), wk_event_name(ev),
                 wk_phase_name(m.next));
    cr_assert_eq(m.job, js);
    cr_assert_eq(m.tenant, ts, "tenant %s", tq_tenant_status_name(m.tenant));
    if (audit)
        cr_assert_str_eq(m.audit, audit);
    else
        cr_assert_null(m.audit);
    cr_assert_eq(m.act, act);
}

Test(jobsm, provision_succeeds)
{
    cr_assert_eq(wk_first_phase("provision", false, false), WK_PH_FORWARD);
    walk(WK_PH_FORWARD, WK_EV_DONE, true, WK_PH_ENDED, TQ_JS_SUCCEEDED, TQ_TS_ACTIVE, "active",
         WK_ACK);
    walk(WK_PH_FORWARD, WK_EV_WARNED, true, WK_PH_ENDED, TQ_JS_SUCCEEDED, TQ_TS_ACTIVE,
         "active_with_warnings", WK_ACK);
}

Test(jobsm, a_failure_rolls_back_then_fails)
{
    walk(WK_PH_FORWARD, WK_EV_FAIL, true, WK_PH_FAILING, TQ_JS_NONE, TQ_TS_NONE, NULL, WK_NONE);
    walk(WK_PH_FAILING, WK_EV_LEFT, true, WK_PH_ROLLBACK, TQ_JS_RUNNING, TQ_TS_ROLLING_BACK,
         "rollback_started", WK_NONE);
    walk(WK_PH_ROLLBACK, WK_EV_DONE, true, WK_PH_ENDED, TQ_JS_FAILED, TQ_TS_FAILED, "failed",
         WK_ACK);
    walk(WK_PH_ROLLBACK, WK_EV_UNDO_FAIL, true, WK_PH_UNDO_FAILING, TQ_JS_NONE, TQ_TS_NONE, NULL,
         WK_NONE);
    walk(WK_PH_UNDO_FAILING, WK_EV_LEFT, true, WK_PH_ENDED, TQ_JS_ROLLBACK_FAILED,
         TQ_TS_ROLLBACK_FAILED, "rollback_failed", WK_ACK);
    cr_assert_eq(wk_first_phase("provision", true, false), WK_PH_ROLLBACK, "an operator's retry");
}

Test(jobsm, compliance_blocks_and_a_failure_outranks_it)
{
    walk(WK_PH_FORWARD, WK_EV_BLOCK, true, WK_PH_BLOCKING, TQ_JS_NONE, TQ_TS_NONE, NULL, WK_NONE);
    walk(WK_PH_BLOCKING, WK_EV_LEFT, true, WK_PH_ENDED, TQ_JS_BLOCKED, TQ_TS_BLOCKED, "blocked",
         WK_ACK);
    walk(WK_PH_BLOCKING, WK_EV_FAIL, true, WK_PH_FAILING, TQ_JS_NONE, TQ_TS_NONE, NULL, WK_NONE);
    struct wk_move m;
    cr_assert_not(wk_decide(WK_PH_FAILING, WK_EV_BLOCK, true, &m));
}

Test(jobsm, cancel_rolls_back_then_cancels)
{
    cr_assert_eq(wk_first_phase("provision", false, true), WK_PH_CANCELLING);
    cr_assert_eq(wk_first_phase("provision", true, true), WK_PH_CANCEL_ROLLBACK);
    walk(WK_PH_FORWARD, WK_EV_CANCEL, true, WK_PH_CANCELLING, TQ_JS_NONE, TQ_TS_NONE, NULL,
         WK_NONE);
    walk(WK_PH_CANCELLING, WK_EV_DONE, true, WK_PH_CANCEL_ROLLBACK, TQ_JS_RUNNING,
         TQ_TS_ROLLING_BACK, "rollback_started", WK_NONE);
    walk(WK_PH_CANCEL_ROLLBACK, WK_EV_DONE, true, WK_PH_ENDED, TQ_JS_CANCELLED, TQ_TS_CANCELLED,
         "cancelled", WK_ACK);
    walk(WK_PH_ROLLBACK, WK_EV_CANCEL, true, WK_PH_CANCEL_ROLLBACK, TQ_JS_NONE, TQ_TS_NONE, NULL,
         WK_NONE);
    struct wk_move m;
    cr_assert_not(wk_decide(WK_PH_DEPROVISION, WK_EV_CANCEL, true, &m), "a deprovision runs on");
}

Test(jobsm, drain_hands_back)
{
    walk(WK_PH_FORWARD, WK_EV_DRAIN, true, WK_PH_HANDBACK, TQ_JS_NONE, TQ_TS_NONE, NULL, WK_NONE);
    walk(WK_PH_HANDBACK, WK_EV_LEFT, true, WK_PH_ENDED, TQ_JS_QUEUED, TQ_TS_QUEUED, "handed_back",
         WK_RELEASE);
    walk(WK_PH_HANDBACK, WK_EV_PARK, true, WK_PH_PARKING, TQ_JS_NONE, TQ_TS_NONE, NULL, WK_NONE);
    walk(WK_PH_PARKING, WK_EV_LEFT, true, WK_PH_ENDED, TQ_JS_QUEUED, TQ_TS_QUEUED,
         "retry_scheduled", WK_PARK);
    /* during an undo the tenant already says rolling_back or deprovisioning: it stays */
    walk(WK_PH_ROLLBACK, WK_EV_DRAIN, true, WK_PH_UNDO_HANDBACK, TQ_JS_NONE, TQ_TS_NONE, NULL,
         WK_NONE);
    walk(WK_PH_UNDO_HANDBACK, WK_EV_LEFT, true, WK_PH_ENDED, TQ_JS_QUEUED, TQ_TS_NONE,
         "handed_back", WK_RELEASE);
    walk(WK_PH_DEPROVISION, WK_EV_DRAIN, true, WK_PH_UNDO_HANDBACK, TQ_JS_NONE, TQ_TS_NONE, NULL,
         WK_NONE);
}

Test(jobsm, revalidation_checks_and_reports_drift_without_touching_the_tenant)
{
    cr_assert_eq(wk_first_phase("revalidate", false, false), WK_PH_CHECKING);
    walk(WK_PH_CHECKING, WK_EV_DONE, false, WK_PH_ENDED, TQ_JS_SUCCEEDED, TQ_TS_NONE,
         "revalidated", WK_ACK);
    walk(WK_PH_CHECKING, WK_EV_WARNED, false, WK_PH_ENDED, TQ_JS_SUCCEEDED, TQ_TS_NONE,
         "drift_detected", WK_ACK);
    walk(WK_PH_CHECKING, WK_EV_DRAIN, false, WK_PH_HANDBACK, TQ_JS_NONE, TQ_TS_NONE, NULL,
         WK_NONE);
    walk(WK_PH_HANDBACK, WK_EV_LEFT, false, WK_PH_ENDED, TQ_JS_QUEUED, TQ_TS_NONE, "handed_back",
         WK_RELEASE);
    walk(WK_PH_CHECKING, WK_EV_CANCEL, false, WK_PH_CHECK_CANCEL, TQ_JS_NONE, TQ_TS_NONE, NULL,
         WK_NONE);
    walk(WK_PH_CHECK_CANCEL, WK_EV_LEFT, false, WK_PH_ENDED, TQ_JS_CANCELLED, TQ_TS_NONE,
         "cancelled", WK_ACK);
    for (int c = TQ_CLASS_NONE; c <= TQ_CLASS_COMPLIANCE; c++)
        cr_assert_eq(wk_fail_event(c, true), WK_EV_NONE, "class %d is drift, not a verdict", c);
}

Test(jobsm, a_lost_lease_goes_stale_and_drops_the_id)
{
    for (int ph = 0; ph < WK_PH_STALE; ph++)
        walk(ph, WK_EV_LEASE_LOST, true, WK_PH_STALE, TQ_JS_NONE, TQ_TS_NONE, NULL, WK_NONE);
    walk(WK_PH_STALE, WK_EV_LEFT, true, WK_PH_ENDED, TQ_JS_NONE, TQ_TS_NONE, NULL, WK_DROP);
}

/*
 * Issue 13 (the fleet test, a host cut off then healed): a job that ENDED on
 * the host cut off, whose last row the epoch fence then refused, was logged
 * "active" and never counted stale: LEASE_LOST changed nothing in ENDED.
 * It goes stale once, writes nothing on the way, and ends with the drop.
 */
Test(jobsm, a_last_row_the_fence_refused_makes_the_ended_job_stale_once)
{
    struct wk_move m;
    for (int ev = WK_EV_DONE; ev <= WK_EV_WARNED; ev++) {
        cr_assert(wk_decide(WK_PH_FORWARD, ev, true, &m));
        cr_assert_eq(m.next, WK_PH_ENDED);
        for (int lc = 0; lc < 2; lc++)
            walk(m.next, WK_EV_LEASE_LOST, lc, WK_PH_STALE, TQ_JS_NONE, TQ_TS_NONE, NULL,
                 WK_NONE);
    }
    cr_assert_not(wk_decide(WK_PH_STALE, WK_EV_LEASE_LOST, true, &m), "stale once, not twice");
    walk(WK_PH_STALE, WK_EV_DONE, true, WK_PH_ENDED, TQ_JS_NONE, TQ_TS_NONE, NULL, WK_DROP);
    /* nothing else moves an ended job */
    for (int ev = 1; ev < WK_NEVENTS; ev++)
        if (ev != WK_EV_LEASE_LOST)
            cr_assert_not(wk_decide(WK_PH_ENDED, ev, true, &m), "ended on %s",
                          wk_event_name(ev));
}

Test(jobsm, classes_decide_the_event_of_a_failure)
{
    cr_assert_eq(wk_fail_event(TQ_CLASS_NONE, false), WK_EV_FAIL);
    cr_assert_eq(wk_fail_event(TQ_CLASS_SECURITY, false), WK_EV_FAIL);
    cr_assert_eq(wk_fail_event(TQ_CLASS_INTEGRATION, false), WK_EV_FAIL);
    cr_assert_eq(wk_fail_event(TQ_CLASS_COMPLIANCE, false), WK_EV_BLOCK);
    cr_assert_eq(wk_fail_event(TQ_CLASS_PERFORMANCE, false), WK_EV_NONE);
}

Test(jobsm, settle_adds_up_step_states)
{
    enum wk_st busy[] = {WK_S_SUCCEEDED, WK_S_RUNNING};
    enum wk_st waiting[] = {WK_S_SUCCEEDED, WK_S_WAIT_RETRY};
    enum wk_st done[] = {WK_S_SUCCEEDED, WK_S_SKIPPED};
    enum wk_st warned[] = {WK_S_SUCCEEDED, WK_S_WARNED, WK_S_SKIPPED};
    enum wk_st left[] = {WK_S_SUCCEEDED, WK_S_PENDING};
    enum wk_st failed[] = {WK_S_FAILED, WK_S_SUCCEEDED};
    cr_assert_eq(wk_job_settle(WK_PH_FORWARD, busy, 2), WK_EV_NONE);
    cr_assert_eq(wk_job_settle(WK_PH_FORWARD, waiting, 2), WK_EV_NONE);
    cr_assert_eq(wk_job_settle(WK_PH_FORWARD, done, 2), WK_EV_DONE);
    cr_assert_eq(wk_job_settle(WK_PH_CHECKING, warned, 3), WK_EV_WARNED);
    cr_assert_eq(wk_job_settle(WK_PH_FORWARD, left, 2), WK_EV_LEFT);
    cr_assert_eq(wk_job_settle(WK_PH_FAILING, failed, 2), WK_EV_LEFT);

    enum wk_st undone[] = {WK_S_COMPENSATED, WK_S_NOTHING, WK_S_SKIPPED};
    enum wk_st undoing[] = {WK_S_COMPENSATED, WK_S_UNDOING};
    enum wk_st undo_wait[] = {WK_S_COMPENSATED, WK_S_UNDO_WAIT};
    enum wk_st undo_left[] = {WK_S_COMPENSATED, WK_S_UNDO_PENDING};
    enum wk_st undo_failed[] = {WK_S_COMPENSATED, WK_S_COMP_FAILED};
    cr_assert_eq(wk_job_settle(WK_PH_ROLLBACK, undone, 3), WK_EV_DONE);
    cr_assert_eq(wk_job_settle(WK_PH_DEPROVISION, undoing, 2), WK_EV_NONE);
    cr_assert_eq(wk_job_settle(WK_PH_ROLLBACK, undo_wait, 2), WK_EV_NONE);
    cr_assert_eq(wk_job_settle(WK_PH_UNDO_HANDBACK, undo_left, 2), WK_EV_LEFT);
    cr_assert_eq(wk_job_settle(WK_PH_UNDO_FAILING, undo_failed, 2), WK_EV_LEFT);
    cr_assert_eq(wk_job_settle(WK_PH_ROLLBACK, done, 2), WK_EV_LEFT, "succeeded is not undone");
}

Test(jobsm, step_states_store_as_status_names)
{
    cr_assert_str_eq(tq_step_status_name(wk_st_status(WK_S_WARNED)), "failed");
    cr_assert_str_eq(tq_step_status_name(wk_st_status(WK_S_UNDOING)), "running");
    cr_assert_str_eq(tq_step_status_name(wk_st_status(WK_S_COMP_FAILED)), "compensation_failed");
    cr_assert_str_eq(tq_step_status_name(wk_st_status(WK_S_NOTHING)), "pending");
    cr_assert_str_eq(wk_phase_stored(WK_PH_UNDO_HANDBACK), "rollback");
    cr_assert_str_eq(wk_phase_stored(WK_PH_CHECKING), "forward");
}

Test(status, names_round_trip_and_finished_is_the_watch_rule)
{
    for (int s = 1; tq_tenant_status_name(s); s++)
        cr_assert_eq(tq_tenant_status_parse(tq_tenant_status_name(s)), s);
    for (int s = 1; tq_job_status_name(s); s++)
        cr_assert_eq(tq_job_status_parse(tq_job_status_name(s)), s);
    cr_assert_eq(tq_job_status_parse("nonsense"), TQ_JS_NONE);
    cr_assert_null(tq_tenant_status_name(TQ_TS_NONE));
    cr_assert(tq_tenant_status_finished("active"));
    cr_assert(tq_tenant_status_finished("rollback_failed"));
    cr_assert_not(tq_tenant_status_finished("rolling_back"));
    cr_assert_not(tq_tenant_status_finished(NULL));
}
