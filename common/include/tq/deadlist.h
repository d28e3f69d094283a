/*
 * The Redis dead list as it is, not as PostgreSQL remembers it: every
 * value in it, garbage included, for `tq-enqueue dead`, and dropping one.
 * PostgreSQL's dead jobs are tq_admin_dead_list's (tq/admin.h).
 */
#ifndef TQ_DEADLIST_H
#define TQ_DEADLIST_H

#include <stddef.h>

#include <jansson.h>

#include "tq/err.h"

struct tq_queue;

/*
 * Every value of the dead list, in order, as a new array of
 * {"value": tq_value_escape of its first TQ_GARBAGE_KEEP bytes,
 *  "bytes": its length, "job_id": the id or null when it is no job id}.
 * Only the first TQ_GARBAGE_KEEP bytes of a value leave Redis.
 */
enum tq_err tq_deadlist_entries(struct tq_queue *q, json_t **out);

/*
 * Remove every dead-list value equal to raw (len bytes), or, for a value
 * longer than TQ_GARBAGE_KEEP, whose first TQ_GARBAGE_KEEP bytes are raw.
 * *removed says how many went.
 */
enum tq_err tq_deadlist_drop(struct tq_queue *q, const char *raw, size_t len, long long *removed);

#endif
