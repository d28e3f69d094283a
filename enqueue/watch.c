/*
 * status --watch: poll tq_pg_status about once a second until every listed
 * tenant has a finished status. In a terminal it redraws progress bars in
 * place (ANSI cursor movement); otherwise it prints one line per change, as
 * text or JSON lines, so logs and pipes stay readable. Behaviour and the
 * JSON-lines shape are documented in enqueue/README.md.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "tq/status.h"
#include "tq/util.h"

bool tenant_finished(const char *s)
{
    return tq_tenant_status_finished(s);
}

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static long long num(const json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

/* Done for watching: finished, or its job dead-lettered (an operator must act). */
static bool settled(const json_t *t)
{
    return tenant_finished(str(t, "status")) ||
           tq_job_status_parse(str(t, "job_status")) == TQ_JS_DEAD;
}

/* Percent of a tenant's work done: finished-and-succeeded statuses are whole. */
static int percent(const json_t *t)
{
    enum tq_tenant_status s = tq_tenant_status_parse(str(t, "status"));
    if (s == TQ_TS_ACTIVE || s == TQ_TS_DEPROVISIONED)
        return 100;
    long long done = num(t, "steps_done"), total = num(t, "steps_total");
    if (total <= 0)
        return 0;
    if (done > total)
        done = total;
    return (int)(done * 100 / total);
}

static void bar(char *out, int width, int pct)
{
    int fill = pct * width / 100;
    out[0] = '[';
    for (int i = 0; i < width; i++)
        out[1 + i] = i < fill ? '#' : '-';
    out[1 + width] = ']';
    out[2 + width] = '\0';
}

struct screen {
    int prev_lines;
    int cols, rows;
};

static void term_size(struct screen *s)
{
    struct winsize ws;
    s->cols = 80;
    s->rows = 24;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
        s->cols = ws.ws_col;
        s->rows = ws.ws_row > 0 ? ws.ws_row : 24;
    }
    if (s->cols > 400)
        s->cols = 400;
}

/* One screen line: cut to the terminal width so nothing wraps (wrapping
 * would break the cursor arithmetic of the next redraw). */
static void emit(struct screen *s, int *lines, const char *text)
{
    char cut[512];
    size_t max = (size_t)(s->cols > 1 ? s->cols - 1 : 1);
    if (max >= sizeof(cut))
        max = sizeof(cut) - 1;
    cli_sanitize(text, cut, max + 1);
    printf("\r\x1b[2K%s\n", cut);
    (*lines)++;
}

static void draw(struct screen *s, const json_t *tenants, const struct watch_opts *o,
                 uint64_t elapsed_ms, const char *note)
{
    term_size(s);
    size_t n = json_array_size(tenants), fin = 0;
    long long sd = 0, st = 0;
    int idw = 6;
    size_t i;
    json_t *t;
    json_array_foreach(tenants, i, t) {
        fin += settled(t);
        sd += num(t, "steps_done");
        st += num(t, "steps_total");
        int l = (int)strlen(str(t, "tenant_id"));
        if (l > idw)
            idw = l > 40 ? 40 : l;
    }
    int bw = s->cols - idw - 60;
    bw = bw < 10 ? 10 : bw > 30 ? 30 : bw;
    if (s->prev_lines > 0)
        printf("\x1b[%dA", s->prev_lines);
    int lines = 0;
    char line[1024], b[64], label[128];
    if (o->batch)
        snprintf(label, sizeof(label), "batch %s", o->batch);
    else
        snprintf(label, sizeof(label), "%zu tenant%s", n, n == 1 ? "" : "s");
    snprintf(line, sizeof(line), "tq-enqueue status --watch  %s  %" PRIu64 "s%s%s", label,
             elapsed_ms / 1000, note ? "  " : "", note ? note : "");
    emit(s, &lines, line);
    int bpct = n ? (int)(fin * 100 / n) : 100;
    bar(b, bw, bpct);
    snprintf(line, sizeof(line), "%-*.*s %s %3d%%  %zu/%zu finished  steps %lld/%lld", idw, idw,
             o->batch ? "batch" : "all", b, bpct, fin, n, sd, st);
    emit(s, &lines, line);
    /* Too many for the screen: keep the unfinished, fold the finished. */
    size_t room = s->rows > 5 ? (size_t)(s->rows - 4) : 1, shown = 0, hidden_fin = 0;
    size_t unfinished = n - fin;
    json_array_foreach(tenants, i, t) {
        bool f = settled(t);
        if (n > room && f && shown + unfinished >= room) {
            hidden_fin++;
            continue;
        }
        if (shown >= room) {
            hidden_fin += f;
            continue;
        }
        if (!f)
            unfinished--;
        shown++;
        int pct = percent(t);
        bar(b, bw, pct);
        const char *detail = str(t, "failure_reason");
        if (!*detail)
            detail = str(t, "current_step");
        bool dead = tq_job_status_parse(str(t, "job_status")) == TQ_JS_DEAD;
        snprintf(line, sizeof(line), "%-*.*s %s %3d%%  %lld/%lld  %-15s %s", idw, idw,
                 str(t, "tenant_id"), b, pct, num(t, "steps_done"), num(t, "steps_total"),
                 dead ? "job dead" : str(t, "status"), detail);
        emit(s, &lines, line);
    }
    if (shown < n) {
        snprintf(line, sizeof(line), "... and %zu more (%zu of them finished)", n - shown,
                 hidden_fin);
        emit(s, &lines, line);
    }
    printf("\x1b[J");
    fflush(stdout);
    s->prev_lines = lines;
}

static void now_rfc3339(char *out, size_t len)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Non-terminal output: a line for each tenant whose visible state changed. */
static void changes(struct cli *c, const json_t *tenants, json_t *seen)
{
    size_t i;
    json_t *t;
    json_array_foreach(tenants, i, t) {
        char *key = tq_xasprintf("%s|%s|%lld/%lld|%s|%s", str(t, "status"), str(t, "job_status"),
                                 num(t, "steps_done"), num(t, "steps_total"),
                                 str(t, "current_step"), str(t, "failure_reason"));
        const char *id = str(t, "tenant_id");
        const char *old = json_string_value(json_object_get(seen, id));
        if (!old || strcmp(old, key) != 0) {
            if (c->json) {
                cli_print_json(json_incref(t));
            } else {
                char when[32];
                now_rfc3339(when, sizeof(when));
                printf("%s %s %s %lld/%lld", when, id, str(t, "status"), num(t, "steps_done"),
                       num(t, "steps_total"));
                if (*str(t, "current_step"))
                    printf(" step=%s", cli_shown(str(t, "current_step")));
                if (*str(t, "failure_reason"))
                    printf(" reason=\"%s\"", cli_shown(str(t, "failure_reason")));
                printf("\n");
                fflush(stdout);
            }
            json_object_set_new(seen, id, json_string(key));
        }
        free(key);
    }
}

static json_t *by_status(const json_t *tenants)
{
    json_t *o = json_object();
    size_t i;
    json_t *t;
    json_array_foreach(tenants, i, t) {
        const char *s = str(t, "status");
        json_object_set_new(o, s, json_integer(json_integer_value(json_object_get(o, s)) + 1));
    }
    return o;
}

int status_watch(struct cli *c, struct tq_pg *pg, const struct watch_opts *o)
{
    bool tty = !c->json && isatty(STDOUT_FILENO);
    uint64_t start = tq_mono_ms();
    struct screen scr = {0, 80, 24};
    json_t *seen = json_object();
    bool polled = false;
    int rc = EXIT_DONE;
    for (;;) {
        json_t *tenants = NULL;
        enum tq_err err = tq_pg_status(pg, o->ids, o->nids, o->batch, &tenants);
        uint64_t elapsed = tq_mono_ms() - start;
        if (err && !polled) {
            rc = cli_fail(c, EXIT_UNREACHABLE, NULL, "%s", tq_pg_errstr(pg));
            break;
        }
        if (err) {
            /* Keep watching through a database restart; the timeout still holds. */
            if (tty) {
                /* below the bars; the next redraw covers this line too */
                printf("\r\x1b[2Kdatabase unreachable, retrying: %s\n",
                       cli_shown(tq_pg_errstr(pg)));
                scr.prev_lines++;
            } else
                fprintf(stderr, "%s: database unreachable, retrying: %s\n", c->prog,
                        cli_shown(tq_pg_errstr(pg)));
            fflush(stdout);
        } else {
            polled = true;
            size_t n = json_array_size(tenants), fin = 0, i;
            json_t *t;
            json_array_foreach(tenants, i, t) fin += settled(t);
            if (tty)
                draw(&scr, tenants, o, elapsed, fin == n ? "done" : NULL);
            else
                changes(c, tenants, seen);
            if (fin == n) {
                json_t *bs = by_status(tenants);
                if (c->json) {
                    cli_print_json(json_pack("{s:b, s:I, s:o}", "finished", true, "tenants",
                                             (json_int_t)n, "by_status", bs));
                } else {
                    printf("all %zu tenant%s finished:", n, n == 1 ? "" : "s");
                    const char *k;
                    json_t *v;
                    json_object_foreach(bs, k, v) printf(" %s %lld", k,
                                                         (long long)json_integer_value(v));
                    printf("\n");
                    json_decref(bs);
                }
                json_decref(tenants);
                break;
            }
            if (o->timeout_ms > 0 && elapsed >= (uint64_t)o->timeout_ms) {
                rc = cli_fail(c, EXIT_UNREACHABLE, NULL,
                              "timed out after %" PRId64 " s: %zu of %zu tenants not finished",
                              o->timeout_ms / 1000, n - fin, n);
                json_decref(tenants);
                break;
            }
        }
        json_decref(tenants);
        if (err && o->timeout_ms > 0 && elapsed >= (uint64_t)o->timeout_ms) {
            rc = cli_fail(c, EXIT_UNREACHABLE, NULL, "timed out after %" PRId64
                          " s while the database was unreachable", o->timeout_ms / 1000);
            break;
        }
        uint64_t wait = (uint64_t)o->interval_ms, spent = tq_mono_ms() - start;
        if (o->timeout_ms > 0) {
            uint64_t left = spent < (uint64_t)o->timeout_ms ? (uint64_t)o->timeout_ms - spent : 0;
            if (left < wait)
                wait = left;
        }
        tq_sleep_ms(wait);
    }
    json_decref(seen);
    return rc;
}
