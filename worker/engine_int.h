/*
 * Engine internals shared by engine.c (job life), step_run.c (one attempt of
 * a step), progress.c (what the engine hands the writer) and template.c
 * (step parameters). Worker-internal; loop thread only.
 */
#ifndef WK_ENGINE_INT_H
#define WK_ENGINE_INT_H

#include "worker.h"

enum st {
    S_PENDING,       /* forward: not started (or waiting for a long retry) */
    S_RUNNING,
    S_WAIT_RETRY,    /* timer armed */
    S_SUCCEEDED,
    S_WARNED,        /* performance check failed: counts as done, with a warning */
    S_FAILED,        /* failed for good */
    S_UNDO_PENDING,
    S_UNDOING,
    S_UNDO_WAIT,
    S_COMPENSATED,
    S_COMP_FAILED,
    S_NOTHING,       /* never ran: nothing to undo */
    S_SKIPPED,       /* disabled by its "enabled" condition: counts as done */
};

struct stepstate {
    enum st st;
    int attempts;        /* run attempts in this delivery */
    int undo_attempts;
    uint64_t due_ms;     /* long retry: not before */
    struct wk_step *cur;
    uv_timer_t retry_timer;
    uv_timer_t timeout_timer;
    bool timed_out;
    struct wk_job *job;
    size_t index;
};

struct wk_job {
    struct wk_engine *eng;
    struct tq_claimed cl;
    const struct tq_pipeline *pl;
    char id[24];
    struct stepstate *ss;
    bool rollback;           /* phase */
    bool deprovision;
    bool revalidate;         /* re-run the checks only; never touch resources */
    int drifted;             /* checks that failed on revalidation */
    bool stopping;           /* start no new forward steps */
    bool need_rollback;
    bool blocked;
    bool cancel;
    bool draining;
    bool stale;
    bool ended;              /* last row queued; waiting for the writer */
    bool comp_failed;
    bool warned;
    int running;
    int open_handles;
    int in_advance;
    bool again;
    uint64_t park_due_ms;
    uint64_t started_mono_ms;   /* claimed by this worker, for the duration metric */
    char reason[512];
    char failed_step[TQ_STEP_NAME_MAX + 1];
    struct wk_job *prev, *next;
};

struct wk_engine {
    uv_loop_t *loop;
    struct wk_settings set;
    struct wk_writer *w;
    atomic_int *free_slots;
    void (*on_slot_free)(void *);
    void *arg;
    struct wk_job *jobs;
    int njobs;
    int closing;                 /* jobs ended whose timers are still closing */
    bool draining;
    void (*drained_cb)(void *);
    void *drained_arg;
    uv_timer_t grace;
    bool grace_armed;
};

/* engine.c */
void wk_job_advance(struct wk_job *j);
void wk_job_notify(struct wk_job *j, const char *event, const char *text);

/* step_run.c */
bool wk_step_enabled(struct wk_job *j, size_t i);
void wk_step_skip(struct wk_job *j, size_t i);
void wk_step_start(struct wk_job *j, size_t i, bool undo);

/* progress.c: queue rows for the writer (nothing once the job is stale) */
void wk_job_emit_step(struct wk_job *j, size_t i, enum st st, int ad, int ud, uint64_t started,
                      uint64_t finished, const char *error, const char *output, bool progress);
void wk_job_emit_attempt(struct wk_job *j, struct wk_step *s, bool ok, const char *error);
void wk_job_emit_job(struct wk_job *j, const char *jstatus, const char *tstatus,
                     const char *event, const char *reason, bool last, enum wk_redis_act act,
                     uint64_t due_ms);

/* template.c: ${...} values of a job, and params rendered with them */
const char *wk_template_lookup(const char *var, void *arg);
json_t *wk_template_render_json(const json_t *v, const struct tq_claim *c, char *errbuf,
                                size_t errlen);

#endif
