/*
 * Notifications derived from audit events: who hears about what, and the
 * delivery. Its own thread, its own PostgreSQL connection and its own curl
 * multi, so that provisioning never waits on a notification and a slow
 * webhook never holds the loop.
 *
 * The database does the bookkeeping (migration "notifications", common/src/
 * migrate.c): a trigger puts each audit event someone may be told about in
 * tq.notify_outbox, in the transaction that wrote the fact. A round here:
 *   1. fan out: take outbox rows (FOR UPDATE SKIP LOCKED: each event goes to
 *      exactly one worker), insert one tq.notify_deliveries row per channel
 *      its route names (UNIQUE (event_id, channel): one message per event
 *      and channel), delete them from the outbox; one transaction;
 *   2. claim due deliveries (SKIP LOCKED, at most BATCH): attempts + 1,
 *      claimed_by = us, next_attempt_at = now + CLAIM_MS (the claim's
 *      expiry: a worker that dies mid-send leaves them to the others then);
 *   3. send them all at once on the curl multi (each transfer 15 s at most);
 *   4. record each outcome, fenced by (claimed_by, attempts): sent; or
 *      pending again after a backoff (base * 2^(attempt-1), at most 5 min,
 *      jittered); or failed for good after max attempts (or at once when
 *      it can never work: no valid recipient, a channel no longer
 *      configured).
 * Idle, it waits poll_ms between rounds; hourly it deletes deliveries
 * sent or given up more than 30 days ago. At-least-once: a worker that dies
 * after the server took a message but before recording it sends it again
 * (e-mails carry a Message-ID and PagerDuty a dedup_key per event, so the
 * receiver can tell).
 *
 * Routes (TQ_NOTIFY_ROUTES_FILE; deploy/monitoring/README.md has an example):
 *   {"channels": {NAME: {"type": "slack", "url": URL}
 *                     | {"type": "email", "to": [ADDR...], "requester": BOOL,
 *                        "to_approvers": BOOL, "smtp_url": URL}
 *                     | {"type": "pagerduty", "url": URL, "routing_key": KEY, "severity": S}},
 *    "routes": {EVENT: [NAME...]}}
 * "to_approvers": the identities in tq.approvers holding the role the event's
 * detail names (pending_approval and approval_escalated carry the role the
 * tier's policy requires), read when the event is fanned out and kept on the
 * delivery row; identities that are not plain addr-specs are skipped and
 * counted (skipped_recipients), never put in a header.
 * Webhook URLs and routing keys are secrets: they go in request bodies and
 * URLs only, never in a log line, an error, a stored row or a message text.
 * Without a routes file, TQ_NOTIFY_WEBHOOK_URL and TQ_SMTP_URL (TQ_NOTIFY_TO,
 * else the owner) hear about failed, rollback_failed, blocked,
 * drift_detected and performance_warning, as the engine used to tell them.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "notify.h"
#include "tq/log.h"
#include "tq/pg.h"
#include "tq/redact.h"
#include "tq/util.h"
#include "worker.h"

#define BATCH 16
#define FANOUT_BATCH 200
#define CLAIM_MS 60000
#define TRANSFER_MS 15000L
#define MAX_BACKOFF_MS 300000u
#define FINAL_PASS_MS 5000

/* Events a route may name; the audit's "active" and "active_with_warnings" are "activated". */
static const char *const routable[] = {
    "submitted",      "pending_approval", "approved",       "rejected",
    "approval_escalated", "activated",    "failed",         "rollback_failed",
    "drift_detected", "performance_warning", "blocked",     NULL};

enum ch_type { CH_SLACK, CH_EMAIL, CH_PAGERDUTY };
static const char *const type_names[] = {"slack", "email", "pagerduty"};

struct channel {
    char *name;
    enum ch_type type;
    char *url;           /* slack / pagerduty endpoint, email's smtp_url; a secret */
    char *routing_key;   /* pagerduty; a secret */
    char **to;           /* email */
    size_t nto;
    bool requester;      /* email: the tenant's owner too */
    bool approvers;      /* email: tq.approvers of the event's role too */
    char *severity;      /* pagerduty; NULL: by event */
};

struct route {
    const char *event;   /* one of routable[] */
    size_t *ch;
    size_t nch;
};

struct wk_routes {
    struct channel *ch;
    size_t nch;
    struct route rt[sizeof(routable) / sizeof(routable[0])];
};

/* ------------------------------------------------------------ routes */

static const char *canonical(const char *event)
{
    if (strcmp(event, "active") == 0 || strcmp(event, "active_with_warnings") == 0)
        return "activated";
    return event;
}

static int event_index(const char *event)
{
    for (int i = 0; routable[i]; i++)
        if (strcmp(routable[i], event) == 0)
            return i;
    return -1;
}

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 63 || !((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || strchr("_.-", *s)))
            return false;
    return true;
}

static bool scheme_ok(const char *url, const char *const *schemes)
{
    for (; *schemes; schemes++) {
        size_t n = strlen(*schemes);
        if (strncmp(url, *schemes, n) == 0 && url[n])
            return true;
    }
    return false;
}

static void problem(struct tq_buf *errs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct tq_buf *errs, const char *fmt, ...)
{
    char line[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    tq_buf_printf(errs, "%s%s", errs->len ? "; " : "", line);
}

void wk_routes_free(struct wk_routes *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nch; i++) {
        struct channel *c = &r->ch[i];
        free(c->name);
        free(c->url);
        free(c->routing_key);
        free(c->severity);
        for (size_t k = 0; k < c->nto; k++)
            free(c->to[k]);
        free(c->to);
    }
    free(r->ch);
    for (size_t i = 0; routable[i]; i++)
        free(r->rt[i].ch);
    free(r);
}

static size_t add_channel(struct wk_routes *r, const char *name, enum ch_type type)
{
    r->ch = tq_xrealloc(r->ch, (r->nch + 1) * sizeof(*r->ch));
    struct channel *c = &r->ch[r->nch];
    memset(c, 0, sizeof(*c));
    c->name = tq_xstrdup(name);
    c->type = type;
    return r->nch++;
}

static void add_route(struct wk_routes *r, int ev, size_t ch)
{
    struct route *rt = &r->rt[ev];
    rt->ch = tq_xrealloc(rt->ch, (rt->nch + 1) * sizeof(*rt->ch));
    rt->ch[rt->nch++] = ch;
}

static const char *str_field(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static void parse_channel(struct wk_routes *r, const char *name, const json_t *v,
                          const char *smtp_default, struct tq_buf *errs)
{
    static const char *const http[] = {"http://", "https://", NULL};
    static const char *const smtp[] = {"smtp://", "smtps://", NULL};
    if (!name_ok(name)) {
        problem(errs, "channels: name \"%.64s\" must be 1-63 of a-z 0-9 _ . - starting with a "
                "letter or digit", name);
        return;
    }
    if (!json_is_object(v)) {
        problem(errs, "channels.%s: must be an object", name);
        return;
    }
    const char *type = str_field(v, "type");
    int t = -1;
    for (int i = 0; i < 3 && type; i++)
        if (strcmp(type, type_names[i]) == 0)
            t = i;
    if (t < 0) {
        problem(errs, "channels.%s.type: must be \"slack\", \"email\" or \"pagerduty\"", name);
        return;
    }
    static const char *const allowed[3][6] = {{"type", "url", NULL},
                                              {"type", "to", "requester", "to_approvers", "smtp_url", NULL},
                                              {"type", "url", "routing_key", "severity", NULL}};
    const char *k;
    const json_t *x;
    json_object_foreach((json_t *)v, k, x) {
        bool known = false;
        for (int i = 0; allowed[t][i]; i++)
            known = known || strcmp(allowed[t][i], k) == 0;
        if (!known)
            problem(errs, "channels.%s.%.40s: not a field of a %s channel", name, k, type);
    }
    size_t at = add_channel(r, name, (enum ch_type)t);
    struct channel *c = &r->ch[at];
    const char *url = str_field(v, t == CH_EMAIL ? "smtp_url" : "url");
    if (t == CH_EMAIL) {
        if (url && !scheme_ok(url, smtp))
            problem(errs, "channels.%s.smtp_url: must be an smtp:// or smtps:// URL", name);
        else if (!url && !smtp_default)
            problem(errs, "channels.%s: needs smtp_url (or TQ_SMTP_URL)", name);
        c->url = tq_xstrdup(url ? url : smtp_default ? smtp_default : "");
        if (url && strchr(url, '@') && strlen(url) >= TQ_REDACT_MIN)
            tq_redact_add(url);   /* smtp://user:password@host */
        const json_t *to = json_object_get(v, "to"), *a;
        const json_t *req = json_object_get(v, "requester");
        if (req && !json_is_boolean(req))
            problem(errs, "channels.%s.requester: must be true or false", name);
        c->requester = json_is_true(req);
        const json_t *appr = json_object_get(v, "to_approvers");
        if (appr && !json_is_boolean(appr))
            problem(errs, "channels.%s.to_approvers: must be true or false", name);
        c->approvers = json_is_true(appr);
        if (to && !json_is_array(to))
            problem(errs, "channels.%s.to: must be an array of e-mail addresses", name);
        size_t i;
        json_array_foreach(to, i, a) {
            const char *s = json_string_value(a);
            if (!s || !wk_notify_address_ok(s)) {
                problem(errs, "channels.%s.to[%zu]: must be a plain e-mail address (local@domain)",
                        name, i);
                continue;
            }
            c->to = tq_xrealloc(c->to, (c->nto + 1) * sizeof(*c->to));
            c->to[c->nto++] = tq_xstrdup(s);
        }
        if (c->nto == 0 && !c->requester && !c->approvers)
            problem(errs, "channels.%s: needs at least one address in \"to\", "
                    "\"requester\": true or \"to_approvers\": true", name);
        return;
    }
    if (!url || !scheme_ok(url, http))
        problem(errs, "channels.%s.url: must be an http:// or https:// URL", name);
    c->url = tq_xstrdup(url ? url : "");
    if (t == CH_PAGERDUTY) {
        const char *key = str_field(v, "routing_key");
        if (!key || !*key || strlen(key) > 200)
            problem(errs, "channels.%s.routing_key: must be a non-empty string (at most 200 "
                    "characters)", name);
        c->routing_key = tq_xstrdup(key ? key : "");
        const char *sev = str_field(v, "severity");
        if (json_object_get(v, "severity") &&
            !(sev && (strcmp(sev, "critical") == 0 || strcmp(sev, "error") == 0 ||
                      strcmp(sev, "warning") == 0 || strcmp(sev, "info") == 0)))
            problem(errs, "channels.%s.severity: must be critical, error, warning or info", name);
        c->severity = sev ? tq_xstrdup(sev) : NULL;
        /* it never appears in a message, but a log line may quote text: mask it everywhere */
        if (key && strlen(key) >= TQ_REDACT_MIN)
            tq_redact_add(key);
    }
    if (t == CH_SLACK && url && strlen(url) >= TQ_REDACT_MIN)
        tq_redact_add(url);   /* a webhook URL is its own credential */
}

static void parse_routes(struct wk_routes *r, const json_t *v, struct tq_buf *errs)
{
    const char *ev;
    const json_t *list;
    json_object_foreach((json_t *)v, ev, list) {
        int e = event_index(ev);
        if (e < 0) {
            problem(errs, "routes.%.40s: not an event (submitted, pending_approval, approved, "
                    "rejected, approval_escalated, activated, failed, rollback_failed, "
                    "drift_detected, performance_warning, blocked)", ev);
            continue;
        }
        if (!json_is_array(list) || json_array_size(list) == 0) {
            problem(errs, "routes.%s: must be a non-empty array of channel names", ev);
            continue;
        }
        size_t i;
        const json_t *n;
        json_array_foreach(list, i, n) {
            const char *s = json_string_value(n);
            size_t k = 0;
            while (s && k < r->nch && strcmp(r->ch[k].name, s) != 0)
                k++;
            if (!s || k == r->nch)
                problem(errs, "routes.%s[%zu]: names no channel of \"channels\"", ev, i);
            else
                add_route(r, e, k);
        }
    }
}

static void legacy(struct wk_routes *r, const struct wk_step_settings *st)
{
    static const char *const events[] = {"failed", "rollback_failed", "blocked", "drift_detected",
                                         "performance_warning", NULL};
    size_t hook = (size_t)-1, mail = (size_t)-1;
    if (st->notify_webhook_url) {
        hook = add_channel(r, "webhook", CH_SLACK);
        r->ch[hook].url = tq_xstrdup(st->notify_webhook_url);
    }
    if (st->smtp_url) {
        mail = add_channel(r, "email", CH_EMAIL);
        struct channel *c = &r->ch[mail];
        c->url = tq_xstrdup(st->smtp_url);
        if (st->notify_to) {
            c->to = tq_xcalloc(1, sizeof(*c->to));
            c->to[c->nto++] = tq_xstrdup(st->notify_to);
        } else {
            c->requester = true;
        }
    }
    for (int i = 0; events[i]; i++) {
        if (hook != (size_t)-1)
            add_route(r, event_index(events[i]), hook);
        if (mail != (size_t)-1)
            add_route(r, event_index(events[i]), mail);
    }
}

int wk_routes_load(const struct wk_settings *set, struct wk_routes **out, char *err, size_t errlen)
{
    *out = NULL;
    struct wk_routes *r = tq_xcalloc(1, sizeof(*r));
    for (int i = 0; routable[i]; i++)
        r->rt[i].event = routable[i];
    const char *path = set->notify_routes_file;
    if (!path) {
        legacy(r, &set->steps);
        *out = r;
        return 0;
    }
    char *text = NULL;
    size_t tlen = 0;
    if (tq_read_file(path, 1 << 20, &text, &tlen) != TQ_OK) {
        snprintf(err, errlen, "TQ_NOTIFY_ROUTES_FILE %s: cannot read it (missing, unreadable "
                 "or over 1 MiB)", path);
        wk_routes_free(r);
        return -1;
    }
    json_error_t je;
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!doc || !json_is_object(doc)) {
        snprintf(err, errlen, "TQ_NOTIFY_ROUTES_FILE %s: %s (line %d)", path,
                 doc ? "must be a JSON object" : je.text, doc ? 1 : je.line);
        json_decref(doc);
        wk_routes_free(r);
        return -1;
    }
    struct tq_buf errs;
    tq_buf_init(&errs);
    const char *k;
    json_t *x;
    json_object_foreach(doc, k, x) if (strcmp(k, "channels") != 0 && strcmp(k, "routes") != 0)
        problem(&errs, "%.40s: not a field (channels, routes)", k);
    json_t *chs = json_object_get(doc, "channels"), *rts = json_object_get(doc, "routes");
    if (!json_is_object(chs))
        problem(&errs, "channels: must be an object of channel name -> channel");
    if (!json_is_object(rts))
        problem(&errs, "routes: must be an object of event -> channel names");
    json_object_foreach(chs, k, x)
        parse_channel(r, k, x, set->steps.smtp_url, &errs);
    if (json_is_object(rts))
        parse_routes(r, rts, &errs);
    json_decref(doc);
    if (errs.len) {
        snprintf(err, errlen, "TQ_NOTIFY_ROUTES_FILE %s: %s", path, errs.data);
        tq_buf_cleanup(&errs);
        wk_routes_free(r);
        return -1;
    }
    tq_buf_cleanup(&errs);
    *out = r;
    return 0;
}

/* ------------------------------------------------------------ the thread */

struct wk_dispatch {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    struct wk_routes *routes;
    char *dburl;
    char worker_id[160];
    char *from;
    uint32_t poll_ms, backoff_ms;
    int max_attempts;
    struct tq_pg *pg;
    CURLM *multi;
    uint64_t quiet_until;   /* database warnings: one per 30 s */
    int backend_pid;        /* of the connection statement_timeout was set on */
    uint64_t next_prune_ms;
};

/* One delivery being sent. */
struct out {
    CURL *e;
    struct curl_slist *hdrs, *rcpt;
    struct wk_body body;   /* what is sent (notify.h) */
    int64_t event_id;
    char channel[64];
    int attempts;
    const struct channel *ch;
    bool done, ok, permanent;
    char err[200];
};

static bool stopping(struct wk_dispatch *d)
{
    pthread_mutex_lock(&d->mu);
    bool s = d->stop;
    pthread_mutex_unlock(&d->mu);
    return s;
}

static void db_warn(struct wk_dispatch *d, const char *what, PGconn *c)
{
    uint64_t now = tq_mono_ms();
    if (now < d->quiet_until)
        return;
    d->quiet_until = now + 30000;
    char msg[300];
    snprintf(msg, sizeof(msg), "%s", c ? PQerrorMessage(c) : "no connection");
    msg[strcspn(msg, "\n")] = '\0';
    tq_redact(msg);
    tq_warn("notifications: cannot %s: %s (retrying)", what, msg);
}

static PGconn *conn(struct wk_dispatch *d)
{
    if (!d->pg && tq_pg_open(d->dburl, &d->pg) != TQ_OK) {
        tq_pg_close(d->pg);
        d->pg = NULL;
        return NULL;
    }
    PGconn *c = tq_pg_conn(d->pg);
    /* a statement never holds the thread (or a stop) long; set again after a reconnect */
    if (c && PQstatus(c) == CONNECTION_OK && PQbackendPID(c) != d->backend_pid) {
        PQclear(PQexec(c, "SET statement_timeout = '10s'"));
        d->backend_pid = PQbackendPID(c);
    }
    return c;
}

static PGresult *q(PGconn *c, const char *sql, int n, const char *const *p, ExecStatusType want)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != want) {
        PQclear(r);
        return NULL;
    }
    return r;
}

static double num(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? -1 : atof(PQgetvalue(r, row, col));
}

/* Move outbox rows to deliveries; returns how many events it took (-1: database error). */
static int fan_out(struct wk_dispatch *d)
{
    PGconn *c = conn(d);
    if (!c) {
        db_warn(d, "connect", NULL);
        return -1;
    }
    PGresult *r = q(c, "BEGIN", 0, NULL, PGRES_COMMAND_OK);
    PQclear(r);
    if (!r)
        goto fail;
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", FANOUT_BATCH);
    const char *p1[] = {lim};
    r = q(c,
          "SELECT o.event_id, e.event, e.actor, coalesce(t.tier, ''),"
          "  extract(epoch FROM e.at - coalesce(t.approved_at, t.created_at)),"
          "  extract(epoch FROM t.approved_at - t.created_at), e.detail->>'role'"
          " FROM tq.notify_outbox o JOIN tq.audit_events e ON e.id = o.event_id"
          " LEFT JOIN tq.tenants t ON t.tenant_id = e.tenant_id"
          " ORDER BY o.event_id LIMIT $1::int FOR UPDATE OF o SKIP LOCKED",
          1, p1, PGRES_TUPLES_OK);
    if (!r)
        goto fail;
    int n = PQntuples(r);
    if (n == 0) {
        PQclear(r);
        PQclear(PQexec(c, "COMMIT"));
        return 0;
    }
    /* the approvers of the roles these events name, for "to_approvers" channels */
    json_t *roles = json_array();
    for (int i = 0; i < n; i++) {
        int e = event_index(canonical(PQgetvalue(r, i, 1)));
        if (e < 0 || PQgetisnull(r, i, 6))
            continue;
        const struct route *rt = &d->routes->rt[e];
        for (size_t k = 0; k < rt->nch; k++)
            if (d->routes->ch[rt->ch[k]].approvers) {
                json_array_append_new(roles, json_string(PQgetvalue(r, i, 6)));
                break;
            }
    }
    PGresult *ra = NULL;
    bool want_approvers = json_array_size(roles) > 0;
    if (want_approvers) {
        char *rj = json_dumps(roles, JSON_COMPACT);
        const char *pa[] = {rj};
        ra = q(c, "SELECT role, identity FROM tq.approvers WHERE role IN"
                  " (SELECT jsonb_array_elements_text($1::jsonb)) ORDER BY role, identity",
               1, pa, PGRES_TUPLES_OK);
        free(rj);
    }
    json_decref(roles);
    if (want_approvers && !ra) {
        PQclear(r);
        goto fail;
    }
    struct tq_buf ids;
    tq_buf_init(&ids);
    tq_buf_puts(&ids, "{");
    json_t *rows = json_array();
    for (int i = 0; i < n; i++) {
        const char *id = PQgetvalue(r, i, 0);
        tq_buf_printf(&ids, "%s%s", i ? "," : "", id);
        int e = event_index(canonical(PQgetvalue(r, i, 1)));
        if (e < 0)
            continue;
        const char *role = PQgetisnull(r, i, 6) ? NULL : PQgetvalue(r, i, 6);
        const struct route *rt = &d->routes->rt[e];
        for (size_t k = 0; k < rt->nch; k++) {
            const struct channel *ch = &d->routes->ch[rt->ch[k]];
            json_t *row = json_pack("{s:I, s:s}", "event_id",
                                    (json_int_t)strtoll(id, NULL, 10), "channel", ch->name);
            if (ch->approvers) {
                json_t *to = json_array();
                int skipped = 0;
                for (int a = 0; role && ra && a < PQntuples(ra); a++) {
                    if (strcmp(PQgetvalue(ra, a, 0), role) != 0)
                        continue;
                    if (wk_notify_address_ok(PQgetvalue(ra, a, 1)))
                        json_array_append_new(to, json_string(PQgetvalue(ra, a, 1)));
                    else
                        skipped++;
                }
                if (skipped)   /* the identities themselves stay out of the log */
                    tq_warn("notifications: event %s, channel %s: %d approver identit%s of role "
                            "%s %s not a plain e-mail address; not sent to %s", id, ch->name,
                            skipped, skipped == 1 ? "y" : "ies", role, skipped == 1 ? "is" : "are",
                            skipped == 1 ? "it" : "them");
                json_object_set_new(row, "recipients", to);
                json_object_set_new(row, "skipped", json_integer(skipped));
            }
            json_array_append_new(rows, row);
        }
    }
    PQclear(ra);
    tq_buf_puts(&ids, "}");
    char *rowtext = json_dumps(rows, JSON_COMPACT);
    json_decref(rows);
    const char *p2[] = {rowtext ? rowtext : "[]", ids.data};
    PGresult *r2 = q(c,
                     "WITH d AS (INSERT INTO tq.notify_deliveries (event_id, channel, recipients,"
                     "   skipped_recipients)"
                     "  SELECT event_id, channel, recipients, coalesce(skipped, 0)"
                     "  FROM jsonb_to_recordset($1::jsonb)"
                     "   AS x(event_id bigint, channel text, recipients jsonb, skipped int)"
                     "  ON CONFLICT (event_id, channel) DO NOTHING RETURNING 1)"
                     " DELETE FROM tq.notify_outbox WHERE event_id = ANY($2::bigint[])",
                     2, p2, PGRES_COMMAND_OK);
    free(rowtext);
    tq_buf_cleanup(&ids);
    PGresult *r3 = r2 ? q(c, "COMMIT", 0, NULL, PGRES_COMMAND_OK) : NULL;
    PQclear(r2);
    PQclear(r3);
    if (!r3) {
        PQclear(r);
        goto fail;
    }
    /* Committed: each of these events is observed once in the whole fleet. */
    for (int i = 0; i < n; i++) {
        const char *ev = canonical(PQgetvalue(r, i, 1));
        const char *tier = PQgetvalue(r, i, 3);
        if (strcmp(ev, "activated") == 0 && num(r, i, 4) >= 0)
            wk_metrics_request_to_active(tier, num(r, i, 4));
        else if (strcmp(ev, "approved") == 0 && strcmp(PQgetvalue(r, i, 2), "auto") != 0 &&
                 num(r, i, 5) >= 0)
            wk_metrics_approval_wait(tier, num(r, i, 5));
    }
    PQclear(r);
    return n;
fail:
    db_warn(d, "take audit events to notify", c);
    PQclear(PQexec(c, "ROLLBACK"));
    return -1;
}

static const char *severity(const struct channel *c, const char *event)
{
    if (c->severity)
        return c->severity;
    if (strcmp(event, "rollback_failed") == 0)
        return "critical";
    if (strcmp(event, "failed") == 0 || strcmp(event, "blocked") == 0)
        return "error";
    if (strcmp(event, "drift_detected") == 0 || strcmp(event, "performance_warning") == 0 ||
        strcmp(event, "approval_escalated") == 0)
        return "warning";
    return "info";
}

/* Columns of a claimed delivery (claim's SELECT). */
enum { C_EVENT_ID, C_CHANNEL, C_ATTEMPTS, C_EVENT, C_TENANT, C_JOB, C_REASON, C_NAME, C_TIER,
       C_REGION, C_OWNER, C_RECIPIENTS };

static const char *col(const PGresult *r, int i, int c)
{
    return PQgetisnull(r, i, c) ? NULL : PQgetvalue(r, i, c);
}

/* Build the transfer of row i; false (o->err set) when it can never be sent. */
static bool build(struct wk_dispatch *d, struct out *o, const PGresult *r, int i)
{
    const char *event = canonical(col(r, i, C_EVENT));
    const char *tenant = col(r, i, C_TENANT), *name = col(r, i, C_NAME);
    const char *reason = col(r, i, C_REASON), *owner = col(r, i, C_OWNER);
    char *line;
    if (tenant)
        line = tq_xasprintf("tenantq: tenant %s \"%s\" (%s, %s): %s%s%s", tenant, name ? name : "",
                            col(r, i, C_TIER) ? col(r, i, C_TIER) : "?",
                            col(r, i, C_REGION) ? col(r, i, C_REGION) : "?", event,
                            reason && *reason ? ": " : "", reason ? reason : "");
    else
        line = tq_xasprintf("tenantq: %s%s%s", event, reason && *reason ? ": " : "",
                            reason ? reason : "");
    tq_redact(line);   /* a failure reason may quote what a step was given */
    const struct channel *ch = o->ch;
    bool ok = true;
    o->e = curl_easy_init();
    curl_easy_setopt(o->e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(o->e, CURLOPT_TIMEOUT_MS, TRANSFER_MS);
    curl_easy_setopt(o->e, CURLOPT_PRIVATE, o);
    curl_easy_setopt(o->e, CURLOPT_URL, ch->url);
    if (ch->type == CH_SLACK || ch->type == CH_PAGERDUTY) {
        json_t *j;
        if (ch->type == CH_SLACK) {
            char *shown = wk_notify_slack_escape(line);
            j = json_pack("{s:s, s:s, s:s, s:I}", "text", shown, "event", event, "tenant_id",
                          tenant ? tenant : "", "event_id", (json_int_t)o->event_id);
            free(shown);
        } else {
            char dedup[64];
            snprintf(dedup, sizeof(dedup), "tenantq-%" PRId64, o->event_id);
            char summary[1025];
            snprintf(summary, sizeof(summary), "%s", line);   /* PagerDuty: at most 1024 */
            j = json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:s, s:s, s:s, s:{s:s, s:s, s:I}}}",
                          "routing_key", ch->routing_key, "event_action", "trigger", "dedup_key",
                          dedup, "payload", "summary", summary, "source",
                          tenant ? tenant : "tenantq", "severity", severity(ch, event),
                          "component", "tenantq", "class", event, "custom_details",
                          "tenant_id", tenant ? tenant : "", "event", event, "event_id",
                          (json_int_t)o->event_id);
        }
        o->body.data = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!o->body.data) {
            snprintf(o->err, sizeof(o->err), "the message could not be encoded as JSON");
            ok = false;
        } else {
            o->body.len = strlen(o->body.data);
        }
        o->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        curl_easy_setopt(o->e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(o->e, CURLOPT_POSTFIELDS, o->body.data ? o->body.data : "");
        curl_easy_setopt(o->e, CURLOPT_HTTPHEADER, o->hdrs);
        curl_easy_setopt(o->e, CURLOPT_WRITEFUNCTION, wk_notify_discard);
    } else {
        struct tq_buf to;
        tq_buf_init(&to);
        char addr[300];
        /* the channel's addresses, the owner, the approvers resolved at fan-out; each once */
        const char *rj = col(r, i, C_RECIPIENTS);
        json_t *appr = rj ? json_loads(rj, 0, NULL) : NULL;
        size_t na = json_array_size(appr);
        const char **cand = tq_xcalloc(ch->nto + 1 + na, sizeof(*cand));
        size_t nc = 0;
        for (size_t k = 0; k < ch->nto + 1 + na; k++) {
            const char *a = k < ch->nto ? ch->to[k]
                          : k == ch->nto ? (ch->requester ? owner : NULL)
                                         : json_string_value(json_array_get(appr, k - ch->nto - 1));
            if (!a)
                continue;
            if (!wk_notify_address_ok(a)) {
                tq_warn("notifications: event %" PRId64 ", channel %s: %s is not a plain e-mail "
                        "address; not sent to it", o->event_id, ch->name,
                        k == ch->nto ? "the requester's address" : "an approver's identity");
                continue;
            }
            bool dup = false;
            for (size_t x = 0; x < nc && !dup; x++)
                dup = strcasecmp(cand[x], a) == 0;
            if (dup)
                continue;
            cand[nc++] = a;
            snprintf(addr, sizeof(addr), "<%s>", a);
            o->rcpt = curl_slist_append(o->rcpt, addr);
            tq_buf_printf(&to, "%s<%s>", to.len ? ", " : "", a);
        }
        free(cand);
        json_decref(appr);
        if (!o->rcpt) {
            snprintf(o->err, sizeof(o->err), "no valid recipient");
            ok = false;
        }
        struct tq_buf m;
        tq_buf_init(&m);
        char date[64];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
        tq_buf_printf(&m, "From: tenantq <%s>\r\nTo: %s\r\nDate: %s\r\n"
                          "Message-ID: <tenantq-%" PRId64 ".%s@tenantq>\r\nSubject: ",
                      d->from, to.len ? to.data : "", date, o->event_id, ch->name);
        char *subject = tq_xasprintf("[tenantq] %s %s%s%s", tenant ? tenant : "-", event,
                                     name ? ": " : "", name ? name : "");
        wk_notify_header_value(&m, subject);
        free(subject);
        tq_buf_puts(&m, "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                        "Content-Transfer-Encoding: 8bit\r\n\r\n");
        for (const char *p = line; *p; p++) {
            if (*p == '\r' || *p == '\n')
                tq_buf_puts(&m, "\r\n");
            else
                tq_buf_append(&m, p, 1);
        }
        tq_buf_puts(&m, "\r\n");
        tq_buf_cleanup(&to);
        o->body.data = tq_buf_take(&m, &o->body.len);
        snprintf(addr, sizeof(addr), "<%s>", d->from);
        curl_easy_setopt(o->e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
        curl_easy_setopt(o->e, CURLOPT_MAIL_FROM, addr);
        curl_easy_setopt(o->e, CURLOPT_MAIL_RCPT, o->rcpt);
        curl_easy_setopt(o->e, CURLOPT_READFUNCTION, wk_notify_read);
        curl_easy_setopt(o->e, CURLOPT_READDATA, &o->body);
        curl_easy_setopt(o->e, CURLOPT_UPLOAD, 1L);
    }
    free(line);
    return ok;
}

static const struct channel *find_channel(const struct wk_routes *rs, const char *name)
{
    for (size_t k = 0; k < rs->nch; k++)
        if (strcmp(rs->ch[k].name, name) == 0)
            return &rs->ch[k];
    return NULL;
}

static uint32_t backoff(const struct wk_dispatch *d, int attempts)
{
    uint64_t ms = d->backoff_ms;
    for (int i = 1; i < attempts && ms < MAX_BACKOFF_MS; i++)
        ms *= 2;
    if (ms > MAX_BACKOFF_MS)
        ms = MAX_BACKOFF_MS;
    return (uint32_t)((double)ms * (0.75 + 0.5 * tq_random_unit()));
}

static void record(struct wk_dispatch *d, PGconn *c, struct out *o)
{
    char id[24], att[16], max[16], wait[24];
    snprintf(id, sizeof(id), "%" PRId64, o->event_id);
    snprintf(att, sizeof(att), "%d", o->attempts);
    snprintf(max, sizeof(max), "%d", d->max_attempts);
    snprintf(wait, sizeof(wait), "%u", o->ok ? 0 : backoff(d, o->attempts));
    const char *p[] = {id, o->channel, o->ok ? "t" : "f", o->ok ? NULL : o->err,
                       max, wait, d->worker_id, att, o->permanent ? "t" : "f"};
    PGresult *r = q(c,
                    "UPDATE tq.notify_deliveries SET"
                    "  status = CASE WHEN $3::bool THEN 'sent'"
                    "    WHEN $9::bool OR attempts >= $5::int THEN 'failed' ELSE 'pending' END,"
                    "  sent_at = CASE WHEN $3::bool THEN now() END,"
                    "  next_attempt_at = CASE WHEN $3::bool THEN next_attempt_at"
                    "    ELSE now() + make_interval(secs => $6::bigint / 1000.0) END,"
                    "  last_error = $4"
                    " WHERE event_id = $1::bigint AND channel = $2 AND claimed_by = $7"
                    "   AND attempts = $8::int AND status = 'pending'"
                    " RETURNING status",
                    9, p, PGRES_TUPLES_OK);
    if (!r) {
        db_warn(d, "record a notification's outcome", c);
        return;   /* its claim expires and it is sent again: at-least-once */
    }
    const char *st = PQntuples(r) ? PQgetvalue(r, 0, 0) : "";
    const char *outcome = strcmp(st, "sent") == 0 ? "sent" : strcmp(st, "failed") == 0 ? "failed"
                                                                                     : "retry";
    if (PQntuples(r))
        wk_metrics_notification(o->channel, outcome);
    if (!o->ok)
        tq_log(strcmp(outcome, "failed") == 0 ? TQ_LOG_WARN : TQ_LOG_INFO,
               "notifications: event %" PRId64 " to channel %s, attempt %d: %s%s", o->event_id,
               o->channel, o->attempts, o->err,
               strcmp(outcome, "failed") == 0 ? "; giving up" : "; will retry");
    PQclear(r);
}

/* Claim due deliveries, send them, record the outcomes; returns how many (-1: database error). */
static int deliver(struct wk_dispatch *d, uint64_t deadline_ms)
{
    PGconn *c = conn(d);
    if (!c) {
        db_warn(d, "connect", NULL);
        return -1;
    }
    char lim[16], lease[16];
    snprintf(lim, sizeof(lim), "%d", BATCH);
    snprintf(lease, sizeof(lease), "%d", CLAIM_MS);
    const char *p[] = {d->worker_id, lim, lease};
    PGresult *r = q(c,
                    "WITH c AS (SELECT event_id, channel FROM tq.notify_deliveries"
                    "   WHERE status = 'pending' AND next_attempt_at <= now()"
                    "   ORDER BY next_attempt_at LIMIT $2::int FOR UPDATE SKIP LOCKED),"
                    " u AS (UPDATE tq.notify_deliveries n SET attempts = n.attempts + 1,"
                    "   claimed_by = $1, next_attempt_at = now() + make_interval(secs => $3::int / 1000.0)"
                    "   FROM c WHERE n.event_id = c.event_id AND n.channel = c.channel"
                    "   RETURNING n.event_id, n.channel, n.attempts, n.recipients)"
                    " SELECT u.event_id, u.channel, u.attempts, e.event, e.tenant_id, e.job_id,"
                    "   coalesce(e.detail->>'reason', e.detail->>'note', ''),"
                    "   t.name, t.tier, t.region, t.owner, u.recipients::text"
                    " FROM u JOIN tq.audit_events e ON e.id = u.event_id"
                    " LEFT JOIN tq.tenants t ON t.tenant_id = e.tenant_id ORDER BY u.event_id",
                    3, p, PGRES_TUPLES_OK);
    if (!r) {
        db_warn(d, "claim notifications", c);
        return -1;
    }
    int n = PQntuples(r);
    struct out *outs = n ? tq_xcalloc((size_t)n, sizeof(*outs)) : NULL;
    int running = 0;
    for (int i = 0; i < n; i++) {
        struct out *o = &outs[i];
        o->event_id = strtoll(PQgetvalue(r, i, C_EVENT_ID), NULL, 10);
        snprintf(o->channel, sizeof(o->channel), "%s", PQgetvalue(r, i, C_CHANNEL));
        o->attempts = atoi(PQgetvalue(r, i, C_ATTEMPTS));
        o->ch = find_channel(d->routes, o->channel);
        if (!o->ch) {
            snprintf(o->err, sizeof(o->err), "channel %s is not configured on this worker",
                     o->channel);
            o->done = o->permanent = true;
            continue;
        }
        if (!build(d, o, r, i)) {
            o->done = o->permanent = true;
            continue;
        }
        curl_multi_add_handle(d->multi, o->e);
        running++;
    }
    PQclear(r);
    while (running > 0) {
        int still = 0;
        curl_multi_perform(d->multi, &still);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(d->multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            struct out *o = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&o);
            long code = 0;
            curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &code);
            CURLcode rc = m->data.result;
            o->done = true;
            if (rc != CURLE_OK)
                snprintf(o->err, sizeof(o->err), "%s", curl_easy_strerror(rc));
            else if (o->ch->type != CH_EMAIL && (code < 200 || code > 299))
                snprintf(o->err, sizeof(o->err), "HTTP %ld", code);
            else
                o->ok = true;
            running--;
        }
        if (running <= 0)
            break;
        if (tq_mono_ms() > deadline_ms) {
            /* stopping: what is still in flight is handed to the next round, anyone's */
            for (int i = 0; i < n; i++)
                if (outs[i].e && !outs[i].done) {
                    outs[i].done = true;
                    snprintf(outs[i].err, sizeof(outs[i].err), "the worker stopped mid-send");
                }
            break;
        }
        curl_multi_poll(d->multi, NULL, 0, 200, NULL);
    }
    for (int i = 0; i < n; i++) {
        struct out *o = &outs[i];
        if (o->e) {
            curl_multi_remove_handle(d->multi, o->e);
            curl_easy_cleanup(o->e);
        }
        record(d, c, o);
        curl_slist_free_all(o->hdrs);
        curl_slist_free_all(o->rcpt);
        free(o->body.data);
    }
    free(outs);
    return n;
}

/* Delivered or given-up rows older than 30 days go (hourly, by whichever worker). */
static void prune(struct wk_dispatch *d)
{
    uint64_t now = tq_mono_ms();
    if (now < d->next_prune_ms)
        return;
    d->next_prune_ms = now + 3600000;
    PGconn *c = conn(d);
    PGresult *r = c ? q(c, "DELETE FROM tq.notify_deliveries WHERE status <> 'pending'"
                           " AND created_at < now() - interval '30 days'",
                        0, NULL, PGRES_COMMAND_OK)
                    : NULL;
    if (c && !r)
        db_warn(d, "prune old deliveries", c);
    PQclear(r);
}

static void *run(void *arg)
{
    struct wk_dispatch *d = arg;
    uint64_t final_deadline = 0;
    bool db_down = false;
    for (;;) {
        bool stop = stopping(d);
        if (stop && db_down)
            break;   /* no last pass against a database that did not answer: the others will */
        if (stop && !final_deadline)
            final_deadline = tq_mono_ms() + FINAL_PASS_MS;
        if (!stop)
            prune(d);
        int fanned = fan_out(d);
        int sent = fanned < 0 ? -1 : deliver(d, stop ? final_deadline : UINT64_MAX);
        db_down = fanned < 0 || sent < 0;
        /* stopping: one last pass for what is due now (bounded), then out */
        if (stop && (sent <= 0 || tq_mono_ms() >= final_deadline))
            break;
        if (fanned == FANOUT_BATCH || sent == BATCH)
            continue;   /* more is waiting */
        pthread_mutex_lock(&d->mu);
        if (!d->stop) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint32_t ms = fanned < 0 || sent < 0 ? d->poll_ms * 5 : d->poll_ms;
            ts.tv_sec += ms / 1000;
            ts.tv_nsec += (long)(ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&d->cv, &d->mu, &ts);
        }
        pthread_mutex_unlock(&d->mu);
    }
    tq_pg_close(d->pg);
    d->pg = NULL;
    return NULL;
}

struct wk_dispatch *wk_dispatch_start(const struct wk_settings *set, struct wk_routes *routes)
{
    struct wk_dispatch *d = tq_xcalloc(1, sizeof(*d));
    pthread_mutex_init(&d->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->cv, &ca);
    pthread_condattr_destroy(&ca);
    d->routes = routes;
    d->dburl = tq_xstrdup(set->cfg->database_url);
    snprintf(d->worker_id, sizeof(d->worker_id), "%s", set->worker_id);
    d->from = tq_xstrdup(set->steps.notify_from && wk_notify_address_ok(set->steps.notify_from)
                             ? set->steps.notify_from
                             : "tenantq@localhost");
    d->poll_ms = set->notify_poll_ms ? set->notify_poll_ms : 1000;
    d->backoff_ms = set->notify_backoff_ms ? set->notify_backoff_ms : 1000;
    d->max_attempts = set->notify_max_attempts > 0 ? set->notify_max_attempts : 10;
    d->multi = curl_multi_init();
    curl_multi_setopt(d->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)BATCH);
    if (pthread_create(&d->th, NULL, run, d) != 0) {
        tq_error("notifications: cannot start the dispatcher thread; none will be sent");
        curl_multi_cleanup(d->multi);
        free(d->dburl);
        free(d->from);
        pthread_mutex_destroy(&d->mu);
        pthread_cond_destroy(&d->cv);
        free(d);
        return NULL;
    }
    return d;
}

void wk_dispatch_stop(struct wk_dispatch *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->mu);
    d->stop = true;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    curl_multi_wakeup(d->multi);
    pthread_join(d->th, NULL);
    curl_multi_cleanup(d->multi);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    free(d->dburl);
    free(d->from);
    free(d);
}
