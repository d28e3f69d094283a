/*
 * One error code for all of libtq, generated from one table so that a code's
 * name, retry class and message cannot drift apart. 0 is success.
 * Detail (which key, which statement) rides next to the code in the object
 * that failed, read through its *_errstr() function.
 */
#ifndef TQ_ERR_H
#define TQ_ERR_H

#include <stdbool.h>

#define TQ_ERR_MAP(X)                                          \
    X(NOMEM,    false, "out of memory")                        \
    X(TIMEOUT,  true,  "operation timed out")                  \
    X(REDIS,    true,  "redis command failed")                 \
    X(PG,       true,  "postgres statement failed")            \
    X(SQL,      false, "postgres refused the statement")       \
    X(CONNECT,  true,  "service unreachable")                  \
    X(BADJOB,   false, "job payload is invalid")               \
    X(INVALID,  false, "invalid input")                        \
    X(CONFLICT, false, "conflicts with an existing request")   \
    X(NOTFOUND, false, "not found")                            \
    X(STALE,    false, "lease lost to another worker")         \
    X(IO,       true,  "i/o error")                            \
    X(STEP,     true,  "step failed")                          \
    X(CANCELED, false, "operation canceled")

enum tq_err {
    TQ_OK = 0,
#define X(name, retryable, msg) TQ_E##name,
    TQ_ERR_MAP(X)
#undef X
};

const char *tq_strerror(enum tq_err err);
const char *tq_errname(enum tq_err err);   /* "TQ_EPG" */
bool tq_err_retryable(enum tq_err err);     /* the runner asks only this */

#endif
