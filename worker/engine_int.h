/*
 * Engine internals shared by engine.c (job life), step_run.c (one attempt of
 * a step), progress.c (what the engine hands the writer) and template.c
 * (step parameters). Worker-internal; loop thread only. A job's phase and
 * the moves between phases are jobsm.h's; these structs hold only what the
 * engine needs to carry a job through them.
 */
#ifndef WK_ENGINE_INT_H
#define WK_ENGINE_INT_H

#include "jobsm.h"
#include "step_int.h"
#include "worker.h"

enum wk_job_kind { WK_KIND_PROVISION, WK_KIND_DEPROVISION, WK_KIND_REVALIDATE };

struct stepstate {
    enum wk_st st;
    int attempts;            /* run attempts, across deliveries */
    int undo_attempts;
    int unreached;           /* run attempts in a row that never reached the server (this delivery) */
    uint64_t due_ms;         /* long retry: not before */
    uint64_t outage_since_ms;   /* first of the transient failures in a row, 0: none */
    int outage_attempts;     /* run attempts waited out as an outage, across deliveries:
                                the retry policy does not count them */
    int undo_outage_attempts;
    int outage_unwritten;    /* of those, not yet in a step row (the next one carries them) */
    int undo_outage_unwritten;
    struct wk_step_run *cur;
    uv_timer_t retry_timer;
    uv_timer_t timeout_timer;
    enum { TO_NONE, TO_FIRED } timeout;   /* the timeout of cur fired */
    enum { RCH_NEVER, RCH_MAYBE } reached;   /* did any run attempt possibly reach its server */
    struct wk_job *job;
    size_t index;
};

struct wk_job {
    struct wk_engine *eng;
    struct tq_claimed cl;
    const struct tq_pipeline *pl;   /* held through pref until the job is freed */
    struct wk_pipeline *pref;
    char id[24];
    struct stepstate *ss;
    enum wk_job_kind kind;
    enum wk_phase phase;
    int running;             /* steps with an attempt in flight */
    int open_handles;        /* timers still closing after the job ended */
    uint64_t park_due_ms;    /* PARKING: the earliest long retry */
    uint64_t started_mono_ms;   /* claimed by this worker, for the duration metric */
    char reason[512];
    char failed_step[TQ_STEP_NAME_MAX + 1];
    /* The move that queued the job's last word (its last row, or a stale
       job's drop): .next is WK_PH_ENDED from then on. Its outcome is logged
       and counted when the writer reports the row committed (WK_R_ENDED),
       never when the fence refused it (WK_R_STALE first: the job was lost). */
    struct wk_move end;
    const char *end_reason;     /* j->reason or a literal */
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
    bool abandoned;              /* past the drain's final deadline: ended jobs freed at once */
    void (*drained_cb)(void *);
    void *drained_arg;
    uv_timer_t grace;
};

/* engine.c */
/* Apply ev to j (an event the table does not list changes nothing), then advance. */
void wk_job_event(struct wk_job *j, enum wk_event ev);
/* Start what j's phase starts, and move it on while it is idle. */
void wk_job_advance(struct wk_job *j);

/* step_run.c */
bool wk_step_enabled(struct wk_job *j, size_t i);
void wk_step_skip(struct wk_job *j, size_t i);
/*
 * Start an attempt of step i (its undo when undo). Returns the job event of
 * an attempt that ended inside the call (did not start, or a kind that
 * finished at once), WK_EV_NONE otherwise; the caller applies it.
 */
enum wk_event wk_step_start(struct wk_job *j, size_t i, bool undo);
/* A phase that starts no steps: its retry timers will not fire. */
void wk_step_stop_waits(struct wk_job *j);

/* progress.c: queue rows for the writer (nothing once the job is stale) */
void wk_job_emit_step(struct wk_job *j, size_t i, enum wk_st st, int ad, int ud, uint64_t started,
                      uint64_t finished, const char *error, const char *output, bool progress);
void wk_job_emit_attempt(struct wk_job *j, struct wk_step_run *r, bool ok, bool reached,
                         const char *error);
void wk_job_emit_job(struct wk_job *j, enum tq_job_status jstatus, enum tq_tenant_status tstatus,
                     const char *event, const char *reason, enum wk_redis_act act,
                     uint64_t due_ms);

/* template.c: ${...} values of a job, and params rendered with them */
const char *wk_template_lookup(const char *var, void *arg);
json_t *wk_template_render_json(const json_t *v, const struct tq_claim *c, char *errbuf,
                                size_t errlen);

#endif
