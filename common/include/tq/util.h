/*
 * Small helpers every module uses: allocation that aborts on exhaustion
 * (the supervisor restarts us), clocks, the OS random source, SHA-256 via
 * OpenSSL, and a growable string buffer.
 */
#ifndef TQ_UTIL_H
#define TQ_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "tq/err.h"

#define TQ_ASSERT(c)                                                       \
    do {                                                                   \
        if (!(c))                                                          \
            tq_panic(__FILE__, __LINE__, #c);                              \
    } while (0)

_Noreturn void tq_panic(const char *file, int line, const char *what);

/* Abort on out-of-memory; use only for sizes we chose ourselves. */
void *tq_xmalloc(size_t n);
void *tq_xcalloc(size_t n, size_t size);
void *tq_xrealloc(void *p, size_t n);
char *tq_xstrdup(const char *s);
/* Heap string from a format; caller frees. */
char *tq_xasprintf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

uint64_t tq_now_ms(void);        /* CLOCK_REALTIME, milliseconds */
uint64_t tq_mono_ms(void);       /* CLOCK_MONOTONIC, milliseconds */
void tq_sleep_ms(uint64_t ms);

/* Fill buf from getrandom(2). Returns TQ_OK or TQ_EIO. */
enum tq_err tq_random_bytes(void *buf, size_t len);
/* Uniform double in [0, 1) from the OS random source (jitter). */
double tq_random_unit(void);
/*
 * A password of len characters from [A-Za-z0-9] drawn from the OS random
 * source (rejection sampling, no modulo bias). out must hold len + 1.
 */
enum tq_err tq_random_password(char *out, size_t len);

/* Lowercase hex SHA-256 of data; out must hold 65 bytes. */
void tq_sha256_hex(const void *data, size_t len, char out[65]);

/* Growable NUL-terminated buffer; storage owned by the caller's struct. */
struct tq_buf {
    char *data;
    size_t len;
    size_t cap;
};
void tq_buf_init(struct tq_buf *b);
void tq_buf_cleanup(struct tq_buf *b);
void tq_buf_append(struct tq_buf *b, const char *s, size_t n);
void tq_buf_puts(struct tq_buf *b, const char *s);
void tq_buf_printf(struct tq_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Moves the string out (caller frees) and empties b. */
char *tq_buf_take(struct tq_buf *b, size_t *len);

/* Read a whole file (at most max_bytes). Caller frees *out. */
enum tq_err tq_read_file(const char *path, size_t max_bytes, char **out,
                         size_t *len);

#endif
