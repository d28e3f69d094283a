/* tq-enqueue submit --stream (stream.c): requests on stdin, answers on stdout. */
#ifndef TQE_STREAM_H
#define TQE_STREAM_H

#include "cli.h"
#include "tq/request.h"

/* Answer every line of stdin until its end, on the registered pipeline
   `pipeline` (NULL: the fleet's default). EXIT_DONE, or the exit code after
   reporting when PostgreSQL cannot be reached or the pipeline is unknown at
   the start. */
int submit_stream(struct cli *c, const char *batch, const char *pipeline,
                  const struct tq_rules *rules);

#endif
