/* The error table's accessors; the table itself lives in tq/err.h. */
#include "tq/err.h"

#include <stddef.h>

static const struct {
    const char *name;
    const char *msg;
    bool retryable;
} errs[] = {
    [TQ_OK] = {"TQ_OK", "success", false},
#define X(n, r, m) [TQ_E##n] = {"TQ_E" #n, m, r},
    TQ_ERR_MAP(X)
#undef X
};

#define NERRS (sizeof(errs) / sizeof(errs[0]))

const char *tq_strerror(enum tq_err err)
{
    return (size_t)err < NERRS ? errs[err].msg : "unknown error";
}

const char *tq_errname(enum tq_err err)
{
    return (size_t)err < NERRS ? errs[err].name : "TQ_E?";
}

bool tq_err_retryable(enum tq_err err)
{
    return (size_t)err < NERRS && errs[err].retryable;
}
