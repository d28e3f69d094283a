/* Internals of the Redis queue shared inside common/ (admin.c); not libtq's contract. */
#ifndef TQ_QUEUE_INT_H
#define TQ_QUEUE_INT_H

#include <hiredis/hiredis.h>

#include "tq/queue.h"

/*
 * Run one command on q's connection (reconnecting first if needed). On
 * TQ_OK the reply is the caller's (freeReplyObject); an error reply is
 * TQ_EREDIS with tq_queue_errstr(q) set, and no reply is returned.
 */
redisReply *tq__queue_cmd(struct tq_queue *q, enum tq_err *err, const char *what, int argc,
                          const char **argv);
/* The same, binary-safe: lens[i] bytes of argv[i]. */
redisReply *tq__queue_cmd_len(struct tq_queue *q, enum tq_err *err, const char *what, int argc,
                              const char **argv, const size_t *lens);
/* "<prefix>:{<queue>}:<suffix>" for q's configuration; caller frees. */
char *tq__queue_key(const struct tq_queue *q, const char *suffix);
/* The configuration q was opened with (fleet-wide keys such as limits). */
const struct tq_config *tq__queue_cfg(const struct tq_queue *q);

#endif
