/*
 * Log lines cannot be forged: whatever a message carries (a queued value,
 * a tenant name) stays on one line and reaches no terminal raw.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "tq/log.h"

/* Run one tq_info with stderr captured; returns what was written (caller frees). */
static char *captured(enum tq_log_format fmt, const char *arg)
{
    FILE *tmp = tmpfile();
    cr_assert_not_null(tmp);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fileno(tmp), STDERR_FILENO);
    tq_log_init("test", fmt, TQ_LOG_DEBUG);
    tq_info("%s", arg);
    dup2(saved, STDERR_FILENO);
    close(saved);
    long n = ftell(tmp);
    rewind(tmp);
    char *out = calloc(1, (size_t)n + 1);
    cr_assert_eq(fread(out, 1, (size_t)n, tmp), (size_t)n);
    fclose(tmp);
    return out;
}

static const char forged[] = "7\n2026-11-29T10:00:00.000Z error worker: \x1b[2Jowned\r\x07\x9b\xc2\x9b\\x";

Test(log, text_lines_escape_controls)
{
    char *out = captured(TQ_LOG_TEXT, forged);
    char *nl = strchr(out, '\n');
    cr_assert_not_null(nl);
    cr_assert_eq(nl[1], '\0', "one line, not two: %s", out);
    for (const unsigned char *p = (const unsigned char *)out; p < (const unsigned char *)nl; p++)
        cr_assert(*p >= 0x20 && *p != 0x7f, "raw control byte 0x%02x in %s", *p, out);
    cr_assert_null(strstr(out, "\xc2\x9b"), "a C1 control passed raw");
    cr_assert_null(strstr(out, "\x9b"), "a byte that is not UTF-8 passed raw");
    cr_assert_not_null(strstr(out, "7\\x0a2026"), "the newline is shown as \\x0a: %s", out);
    cr_assert_not_null(strstr(out, "\\x1b[2Jowned"), "%s", out);
    cr_assert_not_null(strstr(out, "\\x5cx"), "a backslash is escaped too: %s", out);
    free(out);
}

Test(log, a_trailing_newline_is_not_shown)
{
    char *out = captured(TQ_LOG_TEXT, "Connection refused\n\tIs the server running?\n");
    cr_assert_not_null(strstr(out, "Connection refused\\x0a\\x09Is the server running?\n"),
                       "%s", out);
    free(out);
}

Test(log, text_keeps_utf8)
{
    char *out = captured(TQ_LOG_TEXT, "Zoë Café 東京");
    cr_assert_not_null(strstr(out, "Zoë Café 東京"), "%s", out);
    free(out);
}

Test(log, json_lines_survive_invalid_utf8)
{
    char *out = captured(TQ_LOG_JSON, forged);
    json_error_t je;
    json_t *o = json_loads(out, 0, &je);
    cr_assert_not_null(o, "one JSON object per line: %s", out);
    const char *msg = json_string_value(json_object_get(o, "msg"));
    cr_assert_not_null(msg, "the message is kept: %s", out);
    cr_assert_not_null(strstr(msg, "\\x1b[2Jowned"), "%s", msg);
    cr_assert_not_null(strstr(msg, "\\x9b"), "bytes that are not UTF-8 shown as \\xHH");
    cr_assert_eq(strchr(out, '\n')[1], '\0');
    json_decref(o);
    free(out);
}
