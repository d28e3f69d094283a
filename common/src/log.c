/*
 * Log lines to stderr as text or JSON. Whatever a message carries (queued
 * values, tenant names) cannot split a line or reach a terminal raw: control
 * characters, C1 controls, backslashes and bytes that are not UTF-8 are shown
 * as \xHH (tq_value_escape), in both formats; JSON then has only valid
 * UTF-8 to encode, which jansson requires.
 */
#include "tq/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "tq/jobid.h"
#include "tq/redact.h"
#include "tq/util.h"

static const char *component = "tenantq";
static enum tq_log_format format = TQ_LOG_TEXT;
static enum tq_log_level min_level = TQ_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void tq_log_init(const char *comp, enum tq_log_format fmt,
                 enum tq_log_level min)
{
    component = comp;
    format = fmt;
    min_level = min;
}

void tq_log(enum tq_log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    tq_redact(msg);   /* no known secret reaches a log line */
    /* libpq's messages end with a newline: a line end is ours to write. */
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    /* Every byte may become four: the escaped copy is cut, never overrun. */
    char shown[4 * sizeof(msg)];
    tq_value_escape(msg, n, sizeof(msg), shown, sizeof(shown));

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t w = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof(when) - w, ".%03ldZ", ts.tv_nsec / 1000000L);

    char *line;
    if (format == TQ_LOG_JSON) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "ts", when, "level",
                              level_names[level], "component", component,
                              "msg", shown);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        line = tq_xasprintf("%s\n", s ? s : "{}");
        free(s);
    } else {
        line = tq_xasprintf("%s %-5s %s: %s\n", when, level_names[level],
                            component, shown);
    }
    ssize_t rc = write(STDERR_FILENO, line, strlen(line));
    (void)rc;
    free(line);
}
