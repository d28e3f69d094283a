/*
 * The table of step kinds, built from WK_STEP_KINDS (step.h); each kind
 * lives in its own file in worker/steps/. Checked at start against libtq's
 * list of kinds a pipeline may name, so the two cannot drift apart.
 */
#include <stdio.h>
#include <string.h>

#include "step_int.h"

static const struct wk_step_ops *const kinds[] = {
#define X(name) &wk_step_##name,
    WK_STEP_KINDS(X)
#undef X
};
#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))

const struct wk_step_ops *wk_step_lookup(const char *kind)
{
    for (size_t i = 0; i < NKINDS; i++)
        if (strcmp(kinds[i]->kind, kind) == 0)
            return kinds[i];
    return NULL;
}

int wk_step_kinds_check(char *why, size_t len)
{
    for (size_t i = 0; i < NKINDS; i++) {
        if (!kinds[i]->kind || !kinds[i]->start) {
            snprintf(why, len, "step kind table: entry %zu has no name or no start", i);
            return -1;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(kinds[k]->kind, kinds[i]->kind) == 0) {
                snprintf(why, len, "step kind table: \"%s\" is listed twice", kinds[i]->kind);
                return -1;
            }
    }
    size_t named = 0;
    for (; tq_step_kinds[named]; named++)
        if (!wk_step_lookup(tq_step_kinds[named])) {
            snprintf(why, len, "pipelines may name step kind \"%s\", which this worker lacks",
                     tq_step_kinds[named]);
            return -1;
        }
    if (named != NKINDS) {
        snprintf(why, len, "this worker has %zu step kinds, pipelines may name %zu", NKINDS, named);
        return -1;
    }
    return 0;
}
