/*
 * Values that arrive in the queue's lists are untrusted: anyone who can
 * LPUSH can put anything there. This module decides what a job id is, shows
 * any value safely (escaped, capped) and rate-limits the log lines that
 * report values that are not job ids.
 */
#ifndef TQ_JOBID_H
#define TQ_JOBID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tq/err.h"

/* The most of a value that is not a job id we keep (dead list) or show. */
#define TQ_GARBAGE_KEEP 256

/*
 * A job id is 1 to 19 ASCII digits without a sign, spaces or a leading zero,
 * at most INT64_MAX. s need not be NUL-terminated: len bytes are read.
 * Returns true and sets *id; false leaves *id 0 and sets *why (static text)
 * when why is not NULL.
 */
bool tq_job_id_parse(const char *s, size_t len, int64_t *id, const char **why);

/*
 * Show len bytes of s on one line: printable ASCII and valid UTF-8 as is,
 * everything else (controls, C1, bytes that are not UTF-8, and '\') as \xHH.
 * Reversible (tq_value_unescape). At most max_in bytes of s are shown; out
 * always ends with NUL. Returns out.
 */
char *tq_value_escape(const char *s, size_t len, size_t max_in, char *out, size_t cap);
/* Undo tq_value_escape into out (cap >= strlen(s) + 1); returns the length. */
size_t tq_value_unescape(const char *s, char *out, size_t cap);

/*
 * At most burst lines per period_ms; the rest are counted. tq_ratelimit_ok
 * returns true when a line may be written, and *suppressed how many were
 * dropped since the last line written (then reset). One thread per struct.
 */
struct tq_ratelimit {
    uint32_t period_ms;
    uint32_t burst;
    uint64_t window_start_ms;
    uint32_t used;
    uint64_t dropped;
};
bool tq_ratelimit_ok(struct tq_ratelimit *rl, uint64_t now_ms, uint64_t *suppressed);

struct tq_pg;
/*
 * The status of each job id into states[i] ("" when there is no such job),
 * one statement. For logging why ids were not claimable.
 */
enum tq_err tq_pg_job_states(struct tq_pg *pg, const int64_t *ids, size_t n,
                             char (*states)[24]);

/*
 * Audit "dead_value_dropped" {value (as listed), removed}: an operator
 * dropped values from the Redis dead list (no tenant, no job).
 */
enum tq_err tq_pg_audit_dead_drop(struct tq_pg *pg, const char *actor, const char *value,
                                  long long removed);

#endif
