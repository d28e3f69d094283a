/* The table of step kinds; each kind lives in its own file in this folder. */
#include <string.h>

#include "../worker.h"

static const struct wk_step_ops *const kinds[] = {
    &wk_step_pg_tenant,
    &wk_step_noop,
    &wk_step_sleep,
};

const struct wk_step_ops *wk_step_lookup(const char *kind)
{
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strcmp(kinds[i]->kind, kind) == 0)
            return kinds[i];
    return NULL;
}
