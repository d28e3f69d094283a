/* Allocation, clocks, randomness and the string buffer (see tq/util.h). */
#include "tq/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/evp.h>

void tq_panic(const char *file, int line, const char *what)
{
    fprintf(stderr, "tenantq: fatal: %s:%d: %s\n", file, line, what);
    abort();
}

void *tq_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        tq_panic(__FILE__, __LINE__, "out of memory");
    return p;
}

void *tq_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        tq_panic(__FILE__, __LINE__, "out of memory");
    return p;
}

void *tq_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        tq_panic(__FILE__, __LINE__, "out of memory");
    return q;
}

char *tq_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(tq_xmalloc(n), s, n);
}

char *tq_xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        tq_panic(__FILE__, __LINE__, "bad format");
    char *s = tq_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static uint64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t tq_now_ms(void) { return clock_ms(CLOCK_REALTIME); }
uint64_t tq_mono_ms(void) { return clock_ms(CLOCK_MONOTONIC); }

void tq_sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000),
                          .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

enum tq_err tq_random_bytes(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return TQ_EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    return TQ_OK;
}

double tq_random_unit(void)
{
    uint64_t r = 0;
    if (tq_random_bytes(&r, sizeof(r)) != TQ_OK)
        return 0.5;
    return (double)(r >> 11) / (double)(1ULL << 53);
}

enum tq_err tq_random_password(char *out, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    size_t i = 0;
    unsigned char pool[64];
    while (i < len) {
        enum tq_err err = tq_random_bytes(pool, sizeof(pool));
        if (err)
            return err;
        for (size_t k = 0; k < sizeof(pool) && i < len; k++) {
            /* 62 * 4 = 248: reject 248..255 so every character is equally likely. */
            if (pool[k] < 248)
                out[i++] = alphabet[pool[k] % 62];
        }
    }
    out[len] = '\0';
    return TQ_OK;
}

void tq_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        tq_panic(__FILE__, __LINE__, "sha256 failed");
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

void tq_buf_init(struct tq_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void tq_buf_cleanup(struct tq_buf *b)
{
    free(b->data);
    tq_buf_init(b);
}

static void buf_reserve(struct tq_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1)
        cap *= 2;
    b->data = tq_xrealloc(b->data, cap);
    b->cap = cap;
}

void tq_buf_append(struct tq_buf *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void tq_buf_puts(struct tq_buf *b, const char *s)
{
    tq_buf_append(b, s, strlen(s));
}

void tq_buf_printf(struct tq_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *tq_buf_take(struct tq_buf *b, size_t *len)
{
    char *s = b->data ? b->data : tq_xstrdup("");
    if (len)
        *len = b->len;
    tq_buf_init(b);
    return s;
}

enum tq_err tq_read_file(const char *path, size_t max_bytes, char **out,
                         size_t *len)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT ? TQ_ENOTFOUND : TQ_EIO;
    struct tq_buf b;
    tq_buf_init(&b);
    char chunk[8192];
    size_t n;
    enum tq_err err = TQ_OK;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (b.len + n > max_bytes) {
            err = TQ_EINVALID;
            break;
        }
        tq_buf_append(&b, chunk, n);
    }
    if (!err && ferror(f))
        err = TQ_EIO;
    fclose(f);
    if (err) {
        tq_buf_cleanup(&b);
        return err;
    }
    *out = tq_buf_take(&b, len);
    return TQ_OK;
}
