/*
 * Strict job ids, safe display of untrusted queue values and the rate
 * limiter for the lines that report them (tq/jobid.h). Pure functions: the
 * fuzz target tests/fuzz/queue_id drives them.
 */
#include "tq/jobid.h"

#include <string.h>

bool tq_job_id_parse(const char *s, size_t len, int64_t *id, const char **why)
{
    static const char max[] = "9223372036854775807";
    const char *w = NULL;
    *id = 0;
    if (len == 0)
        w = "empty";
    else if (len > sizeof(max) - 1)
        w = "longer than any job id";
    else if (s[0] == '0')
        w = "starts with 0";
    for (size_t i = 0; !w && i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            w = "not only digits";
    if (!w && len == sizeof(max) - 1 && memcmp(s, max, len) > 0)
        w = "out of range";
    if (w) {
        if (why)
            *why = w;
        return false;
    }
    int64_t v = 0;
    for (size_t i = 0; i < len; i++)
        v = v * 10 + (s[i] - '0');
    *id = v;
    return true;
}

/* Length of the valid UTF-8 sequence at s, 0 if invalid or a C1 control. */
static size_t utf8_len(const unsigned char *s, size_t left)
{
    unsigned char c = s[0];
    size_t n;
    unsigned cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1fu;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0fu;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07u;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3fu);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
        return 0;
    return n;
}

char *tq_value_escape(const char *s, size_t len, size_t max_in, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t left = len < max_in ? len : max_in, o = 0;
    if (cap == 0)
        return out;
    while (left > 0) {
        size_t n = utf8_len(p, left);
        if (n > 0 && p[0] >= 0x20 && p[0] != 0x7f && p[0] != '\\') {
            if (o + n >= cap)
                break;
            memcpy(out + o, p, n);
            o += n;
        } else {
            n = 1;
            if (o + 4 >= cap)
                break;
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[p[0] >> 4];
            out[o++] = hex[p[0] & 15];
        }
        p += n;
        left -= n;
    }
    out[o] = '\0';
    return out;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t tq_value_unescape(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    while (*s && o + 1 < cap) {
        int hi, lo;
        if (s[0] == '\\' && s[1] == 'x' && (hi = hexval(s[2])) >= 0 && (lo = hexval(s[3])) >= 0) {
            out[o++] = (char)(hi * 16 + lo);
            s += 4;
        } else {
            out[o++] = *s++;
        }
    }
    if (cap)
        out[o] = '\0';
    return o;
}

bool tq_ratelimit_ok(struct tq_ratelimit *rl, uint64_t now_ms, uint64_t *suppressed)
{
    *suppressed = 0;
    if (now_ms - rl->window_start_ms >= rl->period_ms || now_ms < rl->window_start_ms) {
        rl->window_start_ms = now_ms;
        rl->used = 0;
    }
    if (rl->used >= rl->burst) {
        rl->dropped++;
        return false;
    }
    rl->used++;
    *suppressed = rl->dropped;
    rl->dropped = 0;
    return true;
}
