/* tq-enqueue submit --stream (stream.c): requests on stdin, answers on stdout. */
#ifndef TQE_STREAM_H
#define TQE_STREAM_H

#include "cli.h"
#include "tq/request.h"

/* Answer every line of stdin until its end; EXIT_DONE, or EXIT_USAGE if the
   pipeline cannot be loaded (reported). */
int submit_stream(struct cli *c, const char *batch, const struct tq_rules *rules);

#endif
