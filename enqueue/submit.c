/*
 * tq-enqueue submit: one request from flags, or a batch from a CSV (RFC 4180,
 * parsed by libcsv) or JSON-lines file. The batch is validated whole before
 * anything is written; then one PostgreSQL transaction records it, and only
 * after the commit are the queued job ids pushed to Redis.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <csv.h>

#include "cli.h"
#include "stream.h"
#include "tq/admin.h"
#include "tq/pg.h"
#include "tq/pipeline.h"
#include "tq/pipeline_registry.h"
#include "tq/queue.h"
#include "tq/request.h"
#include "tq/util.h"

#define FILE_MAX_BYTES (16 * 1024 * 1024)
#define BATCH_MAX 10000
#define FIELDS_MAX 16
/* A request is a few KB at most; a longer line is refused before parsing it. */
#define LINE_MAX_BYTES (64 * 1024)

static const char usage[] =
    "usage: tq-enqueue submit --tenant-id ID --name NAME --tier TIER --region REGION\n"
    "                         --budget INR --owner EMAIL [--justification TEXT]\n"
    "       tq-enqueue submit --file FILE [--batch NAME]\n"
    "       (either form also takes [--pipeline NAME] [--not-before TIME] [--json])\n"
    "       tq-enqueue submit --stream [--batch NAME] [--pipeline NAME]\n"
    "\n"
    "Validate tenant requests and queue their provisioning. A batch file is\n"
    "validated whole: if any row is bad, nothing is written and every bad row is\n"
    "reported with its line, field and rule. Submitting the same request again\n"
    "returns the existing one (exit 0); the same tenant id with other details is\n"
    "rejected (exit 3). Budgets above TQ_APPROVAL_THRESHOLD (default 1000000 INR)\n"
    "wait in pending_approval.\n"
    "\n"
    "options:\n"
    "  --tenant-id ID          ^[a-z][a-z0-9-]{2,39}$\n"
    "  --name NAME             display name, unique, at most 100 bytes\n"
    "  --tier TIER             Gold (5-15 lakh INR), Silver (2-5 lakh), Bronze (< 2 lakh)\n"
    "  --region REGION         a region of the region map (TQ_REGIONS_FILE); without a\n"
    "                          map, one of TQ_REGIONS (default us-east-1,us-west-2,eu-west-1)\n"
    "  --budget INR            annual budget, whole rupees\n"
    "  --owner EMAIL           owner's e-mail address\n"
    "  --justification TEXT    business justification (optional)\n"
    "  --idempotency-key KEY   default: the tenant id (single request only)\n"
    "  --file FILE             CSV with header tenant_id,name,tier,region,budget,owner\n"
    "                          [,justification], or JSON lines (.jsonl/.ndjson, or a\n"
    "                          file starting with '{') with the same keys\n"
    "  --batch NAME            group the requests under NAME (status --batch NAME);\n"
    "                          1-64 of letters, digits, '-', '_', '.', ':'\n"
    "  --not-before TIME       start no earlier than TIME: RFC 3339\n"
    "                          (2026-11-27T18:00:00Z, 2026-11-27T23:30:00+05:30) or\n"
    "                          relative +30s, +5m, +2h, +1d; at most 366 days ahead\n"
    "  --stream                one JSON request per line on stdin (the --file keys,\n"
    "                          and optional \"idempotency_key\" and \"ref\"), one JSON\n"
    "                          answer per line on stdout, in order, each committed\n"
    "                          before it is written; connections stay open\n"
    "  --pipeline NAME         one of the operator's named pipelines (tq-enqueue\n"
    "                          pipeline list); default: the fleet's default\n"
    "  --json                  print {\"batch\":..., \"requests\":[...]} on stdout\n"
    "\n"
    "examples:\n"
    "  tq-enqueue submit --tenant-id acme-corp --name \"Acme Corp\" --tier Gold \\\n"
    "      --region us-east-1 --budget 800000 --owner ops@acme.example\n"
    "  tq-enqueue submit --file tenants.csv --batch onboarding-2026-11 --json\n"
    "  tq-enqueue submit --file tenants.jsonl --batch night-run --not-before +2h\n"
    "\n"
    "A file is at most 16 MiB and 10,000 requests; NUL bytes, unknown columns,\n"
    "ragged rows and invalid UTF-8 are reported per line and nothing is written.\n"
    "Every problem is reported at once: exit 2 when the command line itself is\n"
    "malformed (a missing flag, a budget that is not a number, a bad time),\n"
    "3 when the request breaks a rule (including anything inside a file).\n"
    "\n"
    "The pipeline is one an operator registered (tq-enqueue pipeline list):\n"
    "--pipeline NAME, or the fleet's default; a submit never brings its own.\n"
    "The shipped default, for an operator to register, is:\n"
    "  %s\n"
    "\n" CLI_EXIT_CODES;

struct loaded {
    struct tq_request *reqs;
    int *lines;
    size_t n;
    json_t *errors;    /* [{line, field, rule}] */
    bool header_bad;   /* a CSV header we cannot read rows by: rows are not checked */
    bool malformed;    /* some problem is of form (missing, not a number): exit 2 for flags */
};

/* The problems one request can have at most: one per field, and a few more. */
#define PROBLEMS_MAX 16

static bool has_error(const struct loaded *l, int line, const char *field)
{
    size_t i;
    json_t *e;
    json_array_foreach(l->errors, i, e) {
        if (json_integer_value(json_object_get(e, "line")) != line)
            continue;
        if (!field || strcmp(json_string_value(json_object_get(e, "field")), field) == 0)
            return true;
    }
    return false;
}

/*
 * line 0: the request came from flags and has no line. One problem per field
 * and line: a value set refused is not reported again as missing.
 */
static void add_problem(struct loaded *l, int line, const char *field, const char *rule,
                        bool malformed)
{
    /* Rules may quote the file (a column name): keep them printable UTF-8. */
    char safe_rule[512], safe_field[64];
    cli_sanitize(rule, safe_rule, sizeof(safe_rule));
    cli_sanitize(field, safe_field, sizeof(safe_field));
    if (has_error(l, line, safe_field))
        return;
    json_t *e = json_pack("{s:s, s:s}", "field", safe_field, "rule", safe_rule);
    if (line > 0)
        json_object_set_new(e, "line", json_integer(line));
    json_array_append_new(l->errors, e);
    l->malformed |= malformed;
}

static void add_error(struct loaded *l, int line, const char *field, const char *rule)
{
    add_problem(l, line, field, rule, false);
}

static struct tq_request *new_req(struct loaded *l, int line)
{
    l->reqs = tq_xrealloc(l->reqs, (l->n + 1) * sizeof(*l->reqs));
    l->lines = tq_xrealloc(l->lines, (l->n + 1) * sizeof(*l->lines));
    memset(&l->reqs[l->n], 0, sizeof(*l->reqs));
    l->lines[l->n] = line;
    return &l->reqs[l->n++];
}

/* ---- CSV ---- */
struct csvctx {
    struct loaded *l;
    int line;                 /* line being fed */
    char *header[FIELDS_MAX];
    size_t nheader;
    bool have_header;
    bool header_bad;
    struct tq_request *cur;
    size_t col;
    bool row_ragged;
};

static void csv_field(void *field, size_t len, void *data)
{
    struct csvctx *x = data;
    if (!x->have_header) {
        if (x->nheader < FIELDS_MAX) {
            char *h = tq_xmalloc(len + 1);
            memcpy(h, field, len);
            h[len] = '\0';
            x->header[x->nheader] = h;
        }
        x->nheader++;
        return;
    }
    if (!x->cur) {
        x->cur = new_req(x->l, x->line);
        x->col = 0;
        x->row_ragged = false;
    }
    if (x->col < x->nheader && x->col < FIELDS_MAX && !x->header_bad) {
        struct tq_field_error fe;
        if (tq_request_set(x->cur, x->header[x->col], field, len, &fe))
            add_error(x->l, x->line, fe.field, fe.rule);
    }
    x->col++;
}

static void csv_row(int term, void *data)
{
    struct csvctx *x = data;
    (void)term;
    if (!x->have_header) {
        x->have_header = true;
        static const char *const required[] = {"tenant_id", "name", "tier", "region",
                                               "budget", "owner"};
        static const char *const known[] = {"tenant_id", "name", "tier", "region",
                                            "budget", "owner", "justification"};
        if (x->nheader > FIELDS_MAX) {
            add_error(x->l, x->line, "header", "has too many columns");
            x->header_bad = true;
            x->l->header_bad = true;
            return;
        }
        for (size_t i = 0; i < x->nheader; i++) {
            bool ok = false;
            for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
                ok |= strcmp(known[k], x->header[i]) == 0;
            for (size_t k = 0; k < i; k++)
                if (strcmp(x->header[k], x->header[i]) == 0) {
                    char rule[200];
                    snprintf(rule, sizeof(rule),
                             "column \"%.40s\" appears twice (columns %zu and %zu)",
                             x->header[i], k + 1, i + 1);
                    json_array_append_new(x->l->errors,
                                          json_pack("{s:i, s:s, s:s}", "line", x->line, "field",
                                                    "header", "rule", rule));
                    x->header_bad = true;
                    break;
                }
            if (!ok) {
                char rule[200], shown[48];
                cli_sanitize(x->header[i], shown, sizeof(shown));
                snprintf(rule, sizeof(rule),
                         "unknown column \"%s\" (expected tenant_id, name, tier, region, "
                         "budget, owner[, justification])",
                         shown);
                json_array_append_new(x->l->errors,
                                      json_pack("{s:i, s:s, s:s}", "line", x->line, "field",
                                                "header", "rule", rule));
                x->header_bad = true;
            }
        }
        for (size_t k = 0; k < sizeof(required) / sizeof(required[0]); k++) {
            bool found = false;
            for (size_t i = 0; i < x->nheader; i++)
                found |= strcmp(required[k], x->header[i]) == 0;
            if (!found) {
                char rule[80];
                snprintf(rule, sizeof(rule), "column \"%s\" is missing", required[k]);
                json_array_append_new(x->l->errors,
                                      json_pack("{s:i, s:s, s:s}", "line", x->line, "field",
                                                "header", "rule", rule));
                x->header_bad = true;
            }
        }
        x->l->header_bad = x->header_bad;
        return;
    }
    if (!x->cur)
        return;
    if (x->col != x->nheader && !x->row_ragged) {
        char rule[96];
        snprintf(rule, sizeof(rule), "has %zu fields; the header has %zu", x->col, x->nheader);
        add_error(x->l, x->line, "row", rule);
        x->row_ragged = true;
    }
    x->cur = NULL;
}

static int load_csv(const char *data, size_t len, struct loaded *l, char *why, size_t whylen)
{
    struct csv_parser p;
    struct csvctx x;
    memset(&x, 0, sizeof(x));
    x.l = l;
    x.line = 1;
    if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI) != 0) {
        snprintf(why, whylen, "could not start the CSV parser");
        return -1;
    }
    /* libcsv grows a field 128 bytes at a time: quadratic for a long one. */
    csv_set_blk_size(&p, 64 * 1024);
    int rc = 0;
    /* Feed line by line so that errors and requests carry their line number. */
    for (size_t off = 0; off < len;) {
        const char *nl = memchr(data + off, '\n', len - off);
        size_t n = nl ? (size_t)(nl - (data + off)) + 1 : len - off;
        if (n > LINE_MAX_BYTES) {
            snprintf(why, whylen, "line %d: longer than %d bytes (a request is a few KB)",
                     x.line, LINE_MAX_BYTES);
            rc = -1;
            break;
        }
        if (csv_parse(&p, data + off, n, csv_field, csv_row, &x) != n) {
            snprintf(why, whylen, "line %d: malformed CSV: %s", x.line,
                     csv_strerror(csv_error(&p)));
            rc = -1;
            break;
        }
        if (l->n > BATCH_MAX) {
            snprintf(why, whylen, "line %d: more than %d requests in one batch", x.line,
                     BATCH_MAX);
            rc = -1;
            break;
        }
        if (nl)
            x.line++;
        off += n;
    }
    if (rc == 0 && csv_fini(&p, csv_field, csv_row, &x) != 0) {
        snprintf(why, whylen, "line %d: malformed CSV: %s", x.line, csv_strerror(csv_error(&p)));
        rc = -1;
    }
    if (rc == 0 && !x.have_header) {
        snprintf(why, whylen, "the file is empty (expected a header row)");
        rc = -1;
    }
    csv_free(&p);
    for (size_t i = 0; i < x.nheader && i < FIELDS_MAX; i++)
        free(x.header[i]);
    return rc;
}

/* ---- JSON lines ---- */
static int load_jsonl(const char *data, size_t len, struct loaded *l, char *why, size_t whylen)
{
    int lineno = 0;
    for (size_t off = 0; off < len;) {
        const char *line = data + off;
        const char *nl = memchr(line, '\n', len - off);
        size_t n = nl ? (size_t)(nl - line) + 1 : len - off;
        off += n;
        lineno++;
        if (n > LINE_MAX_BYTES) {
            snprintf(why, whylen, "line %d: longer than %d bytes (a request is a few KB)",
                     lineno, LINE_MAX_BYTES);
            return -1;
        }
        size_t k = 0;
        while (k < n && strchr(" \t\r\n", line[k]))
            k++;
        if (k == n)
            continue;
        if (l->n >= BATCH_MAX) {
            snprintf(why, whylen, "line %d: more than %d requests in one batch", lineno,
                     BATCH_MAX);
            return -1;
        }
        json_error_t jerr;
        json_t *o = json_loadb(line, n, JSON_REJECT_DUPLICATES, &jerr);
        struct tq_request *r = new_req(l, lineno);
        if (!o) {
            char rule[200];
            snprintf(rule, sizeof(rule), "invalid JSON at column %d: %s", jerr.column, jerr.text);
            add_error(l, lineno, "line", rule);
            continue;
        }
        struct tq_field_error fe[PROBLEMS_MAX];
        size_t np = tq_request_load_json(o, r, fe, PROBLEMS_MAX);
        for (size_t i = 0; i < np && i < PROBLEMS_MAX; i++)
            add_error(l, lineno, fe[i].field, fe[i].rule);
        json_decref(o);
    }
    return 0;
}


static int load_file(struct cli *c, const char *path, struct loaded *l)
{
    struct stat st;
    FILE *f = fopen(path, "rb");
    if (!f || fstat(fileno(f), &st) != 0) {
        int e = errno;
        if (f)
            fclose(f);
        return cli_fail(c, EXIT_USAGE, NULL, "--file: cannot open \"%s\": %s", cli_shown(path),
                        strerror(e));
    }
    /* A directory or a device is a mistyped path, like a missing file. */
    if (!S_ISREG(st.st_mode)) {
        fclose(f);
        return cli_fail(c, EXIT_USAGE, NULL, "--file: \"%s\" is not a regular file%s",
                        cli_shown(path), S_ISDIR(st.st_mode) ? " (it is a directory)" : "");
    }
    if (st.st_size > FILE_MAX_BYTES) {
        fclose(f);
        return cli_fail(c, EXIT_REJECTED, NULL,
                        "--file: \"%s\" must be at most %d bytes (16 MiB)", cli_shown(path),
                        FILE_MAX_BYTES);
    }
    /* Read it whole (the cap was checked; a file growing meanwhile is cut off). */
    size_t want = (size_t)st.st_size;
    char *data = tq_xmalloc(want + 2);
    size_t len = fread(data, 1, want + 1, f);
    bool bad = ferror(f);
    fclose(f);
    if (bad || len > want) {
        free(data);
        return cli_fail(c, EXIT_REJECTED, NULL, "--file: \"%s\": %s", path,
                        bad ? "read error" : "grew past 16 MiB while being read");
    }
    /* A NUL byte would silently cut a C string short: refuse the file. */
    const char *nul = memchr(data, '\0', len);
    if (nul) {
        int line = 1;
        for (const char *p = data; p < nul; p++)
            line += *p == '\n';
        free(data);
        json_t *e = json_pack("[{s:i, s:s, s:s}]", "line", line, "field", "line", "rule",
                              "must not contain NUL bytes");
        return cli_fail(c, EXIT_REJECTED, e,
                        "--file \"%s\": line %d: contains a NUL byte; nothing was submitted",
                        path, line);
    }
    const char *body = data;
    if (len >= 3 && memcmp(body, "\xEF\xBB\xBF", 3) == 0) {   /* UTF-8 BOM (spreadsheets) */
        body += 3;
        len -= 3;
    }
    size_t plen = strlen(path), k = 0;
    bool jsonl = (plen > 6 && strcmp(path + plen - 6, ".jsonl") == 0) ||
                 (plen > 7 && strcmp(path + plen - 7, ".ndjson") == 0);
    while (k < len && strchr(" \n\r\t", body[k]))
        k++;
    jsonl = jsonl || (k < len && body[k] == '{');
    char why[512] = "";
    int rc = jsonl ? load_jsonl(body, len, l, why, sizeof(why))
                   : load_csv(body, len, l, why, sizeof(why));
    free(data);
    if (rc != 0)
        return cli_fail(c, EXIT_REJECTED, NULL, "--file \"%s\": %s", path, why);
    return EXIT_DONE;
}

/* Sorts request indexes by tenant id, or by name ignoring case, then index. */
static const struct tq_request *sort_reqs;
static bool sort_by_name;

static int cmp_req(const void *a, const void *b)
{
    size_t i = *(const size_t *)a, k = *(const size_t *)b;
    const char *x = sort_by_name ? sort_reqs[i].name : sort_reqs[i].tenant_id;
    const char *y = sort_by_name ? sort_reqs[k].name : sort_reqs[k].tenant_id;
    int c = sort_by_name ? strcasecmp(x, y) : strcmp(x, y);
    return c ? c : (i > k) - (i < k);
}

/*
 * For each request, the first request (in file order) with the same tenant
 * id (by_name: the same name, whatever its case), or itself: O(n log n).
 * Requests without the field are their own first.
 */
static size_t *first_duplicates(const struct tq_request *reqs, size_t n, bool by_name)
{
    size_t *first = tq_xcalloc(n + 1, sizeof(*first));
    size_t *order = tq_xcalloc(n + 1, sizeof(*order));
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        first[i] = i;
        if (by_name ? reqs[i].name != NULL : reqs[i].tenant_id != NULL)
            order[m++] = i;
    }
    sort_reqs = reqs;
    sort_by_name = by_name;
    qsort(order, m, sizeof(*order), cmp_req);
    for (size_t k = 1; k < m; k++) {
        size_t prev = order[k - 1], cur = order[k];
        const char *x = by_name ? reqs[prev].name : reqs[prev].tenant_id;
        const char *y = by_name ? reqs[cur].name : reqs[cur].tenant_id;
        if ((by_name ? strcasecmp(x, y) : strcmp(x, y)) == 0)
            first[cur] = first[prev];
    }
    free(order);
    return first;
}

/* Every problem on stderr, one a line, then the summary (and JSON). */
static int report_problems(struct cli *c, struct loaded *l, int exit_code)
{
    size_t i;
    json_t *e;
    json_array_foreach(l->errors, i, e) {
        int line = (int)json_integer_value(json_object_get(e, "line"));
        const char *field = json_string_value(json_object_get(e, "field"));
        const char *rule = json_string_value(json_object_get(e, "rule"));
        if (line > 0)
            fprintf(stderr, "%s: line %d: %s: %s\n", c->prog, line, field, rule);
        else
            fprintf(stderr, "%s: %s: %s\n", c->prog, field, rule);
    }
    size_t n = json_array_size(l->errors);
    return cli_fail(c, exit_code, json_incref(l->errors),
                    "%s: %zu problem%s; nothing was submitted",
                    exit_code == EXIT_USAGE ? "usage" : "rejected", n, n == 1 ? "" : "s");
}

static void print_result(struct cli *c, const char *batch, struct tq_submit_item *items,
                         size_t n, bool deferred, int64_t not_before_ms)
{
    if (c->json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, json_pack("{s:s, s:I, s:s, s:b}", "tenant_id",
                                               items[i].req->tenant_id, "job_id",
                                               (json_int_t)items[i].job_id, "status",
                                               items[i].status, "existed", items[i].existed));
        json_t *o = json_pack("{s:s?, s:o, s:b}", "batch", batch, "requests", a,
                              "dispatch_deferred", deferred);
        json_object_set_new(o, "not_before_ms",
                            not_before_ms ? json_integer(not_before_ms) : json_null());
        cli_print_json(o);
        return;
    }
    for (size_t i = 0; i < n; i++)
        printf("%s: %s (job %" PRId64 ")%s\n", items[i].req->tenant_id, items[i].status,
               items[i].job_id, items[i].existed ? ", already submitted" : "");
    if (batch)
        printf("batch %s: %zu request%s\n", batch, n, n == 1 ? "" : "s");
    if (not_before_ms) {
        time_t t = (time_t)(not_before_ms / 1000);
        struct tm tm;
        char when[32];
        gmtime_r(&t, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        printf("not before %s\n", when);
    }
}

int cmd_submit(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"tenant-id", required_argument, NULL, 't'},
        {"name", required_argument, NULL, 'n'},
        {"tier", required_argument, NULL, 'T'},
        {"region", required_argument, NULL, 'r'},
        {"budget", required_argument, NULL, 'b'},
        {"owner", required_argument, NULL, 'o'},
        {"justification", required_argument, NULL, 'J'},
        {"idempotency-key", required_argument, NULL, 'k'},
        {"file", required_argument, NULL, 'f'},
        {"batch", required_argument, NULL, 'B'},
        {"not-before", required_argument, NULL, 'N'},
        {"pipeline", required_argument, NULL, 'P'},
        {"json", no_argument, NULL, 'j'},
        {"stream", no_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct loaded l = {NULL, NULL, 0, json_array(), false, false};
    struct tq_request one;
    memset(&one, 0, sizeof(one));
    bool by_flags = false, stream = false;
    const char *file = NULL, *batch = NULL, *key = NULL, *not_before = NULL;
    const char *pipeline = NULL;   /* a registered name; NULL: the fleet's default */
    int64_t due_ms = 0;
    struct tq_pipeline *pl = NULL;
    struct tq_pg *pg = NULL;
    struct tq_queue *q = NULL;
    struct tq_submit_item *items = NULL;
    int rc = EXIT_DONE, o;
    struct tq_field_error fe;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        const char *field = NULL;
        switch (o) {
        case 't': field = "tenant_id"; break;
        case 'n': field = "name"; break;
        case 'T': field = "tier"; break;
        case 'r': field = "region"; break;
        case 'b': field = "budget"; break;
        case 'o': field = "owner"; break;
        case 'J': field = "justification"; break;
        case 'k': key = optarg; break;
        case 'f': file = optarg; break;
        case 'B': batch = optarg; break;
        case 'N': not_before = optarg; break;
        case 'P': pipeline = optarg; break;
        case 'j': c->json = true; break;
        case 'S': stream = true; break;
        case 'h': {
            char *dflt = tq_default_pipeline();
            printf(usage, dflt);
            free(dflt);
            goto out;
        }
        case ':':
            rc = cli_fail(c, EXIT_USAGE, NULL, "option \"%s\" needs a value",
                          cli_shown(argv[optind - 1]));
            goto out;
        default:
            rc = cli_fail(c, EXIT_USAGE, NULL, "unknown option \"%s\" (see --help)",
                          cli_shown(argv[optind - 1]));
            goto out;
        }
        if (field) {
            by_flags = true;
            /* a refused budget is reported with every other problem below */
            if (tq_request_set(&one, field, optarg, strlen(optarg), &fe) &&
                strcmp(field, "budget") != 0)
                add_problem(&l, 0, fe.field, fe.rule, true);
        }
    }
    if (optind < argc) {
        rc = cli_fail(c, EXIT_USAGE, NULL, "unexpected argument \"%s\"", cli_shown(argv[optind]));
        goto out;
    }
    if (stream && (by_flags || file || key || not_before)) {
        rc = cli_fail(c, EXIT_USAGE, NULL,
                      "--stream reads requests from stdin: give no request flags, --file, "
                      "--idempotency-key or --not-before with it");
        goto out;
    }
    if (!stream && by_flags == (file != NULL)) {
        rc = cli_fail(c, EXIT_USAGE, NULL,
                      "give either the request's flags (--tenant-id ...) or --file, not %s",
                      file ? "both" : "neither");
        goto out;
    }
    if (key && file) {
        rc = cli_fail(c, EXIT_USAGE, NULL, "--idempotency-key applies to a single request only");
        goto out;
    }
    if (batch) {
        size_t bl = strlen(batch);
        bool ok = bl >= 1 && bl <= 64;
        for (size_t i = 0; ok && i < bl; i++)
            ok = (batch[i] >= 'a' && batch[i] <= 'z') || (batch[i] >= 'A' && batch[i] <= 'Z') ||
                 (batch[i] >= '0' && batch[i] <= '9') || strchr("-_.:", batch[i]);
        if (!ok)
            add_problem(&l, 0, "batch",
                        "must be 1-64 characters of letters, digits, '-', '_', '.', ':'", true);
    }
    if (not_before) {
        char why[200];
        if (cli_parse_time(not_before, (int64_t)tq_now_ms(), &due_ms, why, sizeof(why)) != 0)
            add_problem(&l, 0, "not_before", why, true);
    }
    if (key) {
        const char *kp = tq_text_problem(key, strlen(key), false);
        if (strlen(key) == 0 || strlen(key) > 200)
            add_problem(&l, 0, "idempotency_key", "must be 1-200 bytes", false);
        else if (kp)
            add_problem(&l, 0, "idempotency_key", kp, false);
    }
    if (stream && json_array_size(l.errors) > 0) {
        rc = report_problems(c, &l, EXIT_USAGE);
        goto out;
    }
    if (stream) {
        const struct tq_rules srules = {.regions = (const char *const *)c->cfg.regions,
                                        .nregions = c->cfg.nregions,
                                        .approval_threshold_inr = c->cfg.approval_threshold_inr,
                                        .regions_mapped = c->cfg.region_map != NULL};
        rc = submit_stream(c, batch, pipeline, &srules);
        goto out;
    }
    /* A file cannot be read with the command line's own problems unsolved. */
    if (file && json_array_size(l.errors) > 0) {
        rc = report_problems(c, &l, EXIT_USAGE);
        goto out;
    }

    if (file) {
        if ((rc = load_file(c, file, &l)) != EXIT_DONE)
            goto out;
        if (l.n == 0 && json_array_size(l.errors) == 0) {
            rc = cli_fail(c, EXIT_REJECTED, NULL, "--file \"%s\": holds no requests", file);
            goto out;
        }
    } else {
        struct tq_request *r = new_req(&l, 0);
        *r = one;
        memset(&one, 0, sizeof(one));
    }

    /*
     * Validate everything before writing anything, and report every problem
     * of every request. Rows under a header we cannot read are not checked:
     * their fields went nowhere, and "tenant_id is required" would mislead.
     */
    const struct tq_rules rules = {.regions = (const char *const *)c->cfg.regions,
                                   .nregions = c->cfg.nregions,
                                   .approval_threshold_inr = c->cfg.approval_threshold_inr,
                                   .regions_mapped = c->cfg.region_map != NULL};
    /* duplicates by sorting (a pairwise scan of 10,000 rows took seconds) */
    size_t *dup_id = l.header_bad ? NULL : first_duplicates(l.reqs, l.n, false);
    size_t *dup_name = l.header_bad ? NULL : first_duplicates(l.reqs, l.n, true);
    for (size_t i = 0; i < l.n && !l.header_bad; i++) {
        struct tq_field_error pe[PROBLEMS_MAX];
        size_t np = tq_request_check(&l.reqs[i], &rules, pe, PROBLEMS_MAX);
        for (size_t k = 0; k < np && k < PROBLEMS_MAX; k++)
            add_problem(&l, l.lines[i], pe[k].field, pe[k].rule, pe[k].malformed);
        char rule[96];
        if (dup_id[i] != i) {
            snprintf(rule, sizeof(rule), "duplicates the tenant id of line %d",
                     l.lines[dup_id[i]]);
            add_error(&l, l.lines[i], "tenant_id", rule);
        }
        /* names are unique whatever their case ("Idem A" and "IDEM A" are one) */
        if (dup_name[i] != i) {
            snprintf(rule, sizeof(rule), "duplicates the name of line %d", l.lines[dup_name[i]]);
            add_error(&l, l.lines[i], "name", rule);
        }
    }
    free(dup_id);
    free(dup_name);
    if (json_array_size(l.errors) > 0) {
        /* the command line's own request: missing or malformed flags are usage errors */
        rc = report_problems(c, &l, !file && l.malformed ? EXIT_USAGE : EXIT_REJECTED);
        goto out;
    }

    char why[1024];
    enum tq_err err;
    if ((err = tq_pg_open(c->cfg.database_url, &pg))) {
        rc = cli_fail(c, EXIT_UNREACHABLE, NULL, "%s", tq_pg_errstr(pg));
        goto out;
    }
    /* only an operator-registered pipeline, never steps of the submitter's own */
    if ((err = tq_pipeline_named(pg, pipeline, &pl))) {
        snprintf(why, sizeof(why), "%s", tq_pg_errstr(pg));
        rc = cli_fail(c, err == TQ_ENOTFOUND ? EXIT_USAGE : cli_exit_for(err), NULL,
                      "--pipeline: %s; nothing was submitted", why);
        goto out;
    }
    items = tq_xcalloc(l.n, sizeof(*items));
    for (size_t i = 0; i < l.n; i++) {
        items[i].req = &l.reqs[i];
        items[i].idempotency_key = key;
        items[i].not_before_ms = not_before ? due_ms : 0;   /* in the submit transaction */
        items[i].queue = c->cfg.queue;
    }
    err = tq_pg_submit(pg, items, l.n, batch, pl, &rules, "tq-enqueue");
    if (err) {
        snprintf(why, sizeof(why), "%s", tq_pg_errstr(pg));
        json_t *details = NULL;
        for (size_t i = 0; err == TQ_ECONFLICT && i < l.n && !details; i++) {
            if (!items[i].conflict)
                continue;
            char head[40];
            snprintf(head, sizeof(head), "%s: ", items[i].conflict);
            const char *rule = strstr(why, head);
            details = json_pack("[{s:s, s:s}]", "field", items[i].conflict, "rule",
                                rule ? cli_shown(rule + strlen(head))
                                     : "conflicts with an existing tenant");
            if (l.lines[i] > 0)
                json_object_set_new(json_array_get(details, 0), "line",
                                    json_integer(l.lines[i]));
        }
        rc = cli_fail(c, cli_exit_for(err), details, "%s%s", why,
                      err == TQ_ECONFLICT ? "; nothing was submitted" : "");
        goto out;
    }

    /* Now dispatch; if Redis is away the reconciler dispatches later. */
    int64_t *nids = tq_xcalloc(l.n, sizeof(*nids));
    size_t nq = 0;
    for (size_t i = 0; i < l.n; i++)
        if (items[i].queued)
            nids[nq++] = items[i].job_id;
    bool deferred = false;
    if (nq > 0) {
        err = tq_queue_open(&c->cfg, NULL, &q);
        if (!err)
            err = tq_queue_dispatch(q, nids, nq, due_ms > (int64_t)tq_now_ms() ? due_ms : 0);
        if (err) {
            deferred = true;
            fprintf(stderr,
                    "%s: warning: requests are recorded but dispatch is deferred (%s); "
                    "a worker's reconciler will dispatch them\n",
                    c->prog, tq_queue_errstr(q));
        }
    }
    free(nids);
    print_result(c, batch, items, l.n, deferred, not_before ? due_ms : 0);
out:
    tq_queue_close(q);
    tq_pg_close(pg);
    tq_pipeline_free(pl);
    free(items);
    for (size_t i = 0; i < l.n; i++)
        tq_request_cleanup(&l.reqs[i]);
    free(l.reqs);
    free(l.lines);
    json_decref(l.errors);
    tq_request_cleanup(&one);
    return rc;
}
