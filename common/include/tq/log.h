/*
 * Structured logging to stderr, one line per event, as text or JSON
 * (TQ_LOG_FORMAT). Thread-safe: each line is written with one write(2).
 * Never pass a secret to these functions.
 */
#ifndef TQ_LOG_H
#define TQ_LOG_H

enum tq_log_level { TQ_LOG_DEBUG, TQ_LOG_INFO, TQ_LOG_WARN, TQ_LOG_ERROR };
enum tq_log_format { TQ_LOG_TEXT, TQ_LOG_JSON };

/* Call once at start, before threads exist. component: "worker", "enqueue". */
void tq_log_init(const char *component, enum tq_log_format format,
                 enum tq_log_level min_level);

void tq_log(enum tq_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define tq_debug(...) tq_log(TQ_LOG_DEBUG, __VA_ARGS__)
#define tq_info(...) tq_log(TQ_LOG_INFO, __VA_ARGS__)
#define tq_warn(...) tq_log(TQ_LOG_WARN, __VA_ARGS__)
#define tq_error(...) tq_log(TQ_LOG_ERROR, __VA_ARGS__)

#endif
