/*
 * Argument checks every subcommand shares: tenant ids, free-text fields,
 * times, and making untrusted text safe to echo on a terminal or in JSON.
 * The domain rules themselves live in libtq (tq/request.h).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tq/request.h"

/* Length of the valid UTF-8 sequence at p (1-4), or 0 if it is not one. */
static size_t utf8_seq(const unsigned char *p, size_t left)
{
    size_t n;
    if (p[0] < 0x80)
        return 1;
    if ((p[0] & 0xE0) == 0xC0)
        n = 2;
    else if ((p[0] & 0xF0) == 0xE0)
        n = 3;
    else if ((p[0] & 0xF8) == 0xF0)
        n = 4;
    else
        return 0;
    if (n > left)
        return 0;
    return tq_utf8_valid((const char *)p, n) ? n : 0;
}

void cli_sanitize(const char *in, char *out, size_t outlen)
{
    cli_sanitize_lines(in, out, outlen, false);
}

void cli_sanitize_lines(const char *in, char *out, size_t outlen, bool lines)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t left = strlen(in), o = 0;
    if (outlen == 0)
        return;
    while (left > 0) {
        size_t n = utf8_seq(p, left);
        bool printable = n > 1 || (n == 1 && *p >= 0x20 && *p != 0x7F) ||
                         (lines && (*p == '\n' || *p == '\t'));
        size_t need = printable ? n : 4;
        if (o + need + 4 > outlen) {   /* room for "..." and the NUL */
            if (o + 4 <= outlen) {
                memcpy(out + o, "...", 3);
                o += 3;
            }
            break;
        }
        if (printable) {
            memcpy(out + o, p, n);
            o += n;
            p += n;
            left -= n;
        } else {
            snprintf(out + o, 5, "\\x%02X", *p);
            o += 4;
            p++;
            left--;
        }
    }
    out[o] = '\0';
}

const char *cli_shown(const char *s)
{
    static char bufs[4][200];
    static int next;
    char *b = bufs[next++ % 4];
    cli_sanitize(s, b, sizeof(bufs[0]));
    return b;
}

bool cli_tenant_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > TQ_TENANT_ID_MAX || s[0] < 'a' || s[0] > 'z')
        return false;
    for (size_t i = 1; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

int cli_check_tenant(struct cli *c, const char *id)
{
    if (cli_tenant_id_ok(id))
        return EXIT_DONE;
    /* Nothing that breaks the id rule can exist: not found, and why. */
    json_t *e = json_pack("[{s:s, s:s}]", "field", "tenant_id", "rule",
                          "must match ^[a-z][a-z0-9-]{2,39}$");
    return cli_fail(c, EXIT_NOTFOUND, e,
                    "tenant_id: no such tenant \"%s\" (tenant ids match ^[a-z][a-z0-9-]{2,39}$)",
                    cli_shown(id));
}

int cli_check_text(struct cli *c, const char *field, const char *v, size_t max, bool required,
                   bool multiline)
{
    const char *problem = NULL;
    char rule[128];
    size_t n = v ? strlen(v) : 0;
    int code = EXIT_REJECTED;
    if (n == 0) {
        if (!required)
            return EXIT_DONE;
        problem = "is required";
        code = EXIT_USAGE;   /* a missing option: the command line is incomplete */
    } else if (n > max) {
        snprintf(rule, sizeof(rule), "must be at most %zu bytes (got %zu)", max, n);
        problem = rule;
    } else {
        problem = tq_text_problem(v, n, multiline);
    }
    if (!problem)
        return EXIT_DONE;
    json_t *e = json_pack("[{s:s, s:s}]", "field", field, "rule", problem);
    return cli_fail(c, code, e, "%s: %s", field, problem);
}

static bool digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool rfc3339(const char *s, int64_t *ms)
{
    /* YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM) */
    int y, mo, d, h, mi, sec, frac_ms = 0, oh = 0, om = 0, sign = 0;
    size_t n = strlen(s);
    if (n < 20 || s[4] != '-' || s[7] != '-' || !strchr("Tt ", s[10]) || s[13] != ':' ||
        s[16] != ':')
        return false;
    if (!digits(s, 4, &y) || !digits(s + 5, 2, &mo) || !digits(s + 8, 2, &d) ||
        !digits(s + 11, 2, &h) || !digits(s + 14, 2, &mi) || !digits(s + 17, 2, &sec))
        return false;
    const char *p = s + 19;
    if (*p == '.') {
        p++;
        int k = 0;
        while (*p >= '0' && *p <= '9') {
            if (k < 3)
                frac_ms = frac_ms * 10 + (*p - '0');
            k++;
            p++;
        }
        if (k == 0 || k > 9)
            return false;
        for (; k < 3; k++)
            frac_ms *= 10;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':' &&
               digits(p + 1, 2, &oh) && digits(p + 4, 2, &om)) {
        sign = *p == '+' ? 1 : -1;
        p += 6;
    } else {
        return false;
    }
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (*p || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap) ||
        h > 23 || mi > 59 || sec > 60 || oh > 23 || om > 59)
        return false;
    int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + (sec == 60 ? 59 : sec);
    t -= sign * (oh * 3600 + om * 60);
    *ms = t * 1000 + frac_ms;
    return true;
}

int cli_parse_time(const char *s, int64_t now_ms, int64_t *out_ms, char *why, size_t whylen)
{
    static const int64_t max_ahead_ms = 366LL * 86400 * 1000;
    if (s[0] == '+') {
        size_t n = strlen(s);
        int v;
        int64_t unit = 0;
        if (n >= 3 && n <= 8) {
            switch (s[n - 1]) {
            case 's': unit = 1000; break;
            case 'm': unit = 60 * 1000; break;
            case 'h': unit = 3600 * 1000; break;
            case 'd': unit = 86400 * 1000; break;
            default: break;
            }
        }
        if (!unit || !digits(s + 1, n - 2, &v)) {
            snprintf(why, whylen, "must be RFC 3339 (2026-11-27T18:00:00Z) or +N followed by "
                                  "s, m, h or d (+30s, +5m, +2h)");
            return -1;
        }
        *out_ms = now_ms + v * unit;
    } else if (!rfc3339(s, out_ms)) {
        snprintf(why, whylen, "must be RFC 3339 (2026-11-27T18:00:00Z) or +N followed by "
                              "s, m, h or d (+30s, +5m, +2h)");
        return -1;
    }
    if (*out_ms > now_ms + max_ahead_ms) {
        snprintf(why, whylen, "must be at most 366 days ahead");
        return -1;
    }
    return 0;
}

int cli_flag_opts(struct cli *c, int argc, char **argv, const char *usage, const char *flag,
                  bool *flag_set)
{
    struct option opts[] = {{"json", no_argument, NULL, 'j'},
                            {"help", no_argument, NULL, 'h'},
                            {NULL, 0, NULL, 0},
                            {NULL, 0, NULL, 0}};
    if (flag)
        opts[2] = (struct option){flag, no_argument, NULL, 'f'};
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (o == 'f') {
            *flag_set = true;
        } else if (o == 'j') {
            c->json = true;
        } else if (o == 'h') {
            fputs(usage, stdout);
            return EXIT_DONE;
        } else {
            return cli_fail(c, EXIT_USAGE, NULL, "unknown option \"%s\" (see --help)",
                            cli_shown(argv[optind - 1]));
        }
    }
    return CLI_GO_ON;
}
