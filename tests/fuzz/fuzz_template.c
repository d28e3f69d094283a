/*
 * Template rendering (tq_template_check, tq_template_render): the first
 * line is the template, the rest the value every known variable takes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tq/pipeline.h"

static const char *lookup(const char *var, void *arg)
{
    if (strncmp(var, "tenant.", 7) == 0 || strncmp(var, "tier.", 5) == 0 ||
        strncmp(var, "env.", 4) == 0 || strcmp(var, "job.id") == 0)
        return arg;
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    char *nl = strchr(s, '\n');
    const char *value = "v";
    if (nl) {
        *nl = '\0';
        value = nl + 1;
    }
    char err[512];
    tq_template_check(s, err, sizeof(err));
    char *out = tq_template_render(s, lookup, (void *)value, err, sizeof(err));
    free(out);
    free(s);
    return 0;
}
