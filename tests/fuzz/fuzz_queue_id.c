/*
 * Queue values (tq/jobid.h): strict job ids and their safe display.
 * Properties, not just "no crash": an accepted id prints back to exactly
 * the input; the escaped form has no control byte and unescapes to the input.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq/jobid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    int64_t id;
    if (tq_job_id_parse(s, size, &id, NULL)) {
        char back[24];
        int n = snprintf(back, sizeof(back), "%" PRId64, id);
        if (id <= 0 || (size_t)n != size || memcmp(back, s, size) != 0)
            abort();
    }
    size_t cap = 4 * size + 1;
    char *shown = malloc(cap);
    tq_value_escape(s, size, size, shown, cap);
    for (const unsigned char *p = (const unsigned char *)shown; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            abort();
    char *raw = malloc(strlen(shown) + 1);
    size_t len = tq_value_unescape(shown, raw, strlen(shown) + 1);
    if (len != size || memcmp(raw, s, size) != 0)
        abort();
    free(raw);
    free(shown);
    return 0;
}
