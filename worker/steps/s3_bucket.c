/*
 * Step "s3_bucket": the tenant's object-storage bucket through the S3 API,
 * and the small S3 client (wk_s3_*) that check_s3.c uses too. Requests are
 * path-style (<endpoint>/<bucket>[/<key>]), signed by libcurl's AWS SigV4
 * and run on the worker's curl multi, one at a time per step: each step is a
 * little state machine advanced from the transfer's completion callback.
 *
 * Run:  PUT bucket -> PUT ?tagging= (the five cost tags) -> PUT ?lifecycle=
 *       (transition to GLACIER after the tier's archive_after_days).
 * Undo: ListObjectsV2 -> DELETE each object -> list again ... -> DELETE bucket.
 * Every request asserts a state rather than a change, so running either
 * twice leaves one effect: an existing bucket of ours counts as created
 * (200 in us-east-1, 409 BucketAlreadyOwnedByYou elsewhere); tagging and
 * lifecycle PUTs replace the whole set with the same set; DeleteObject
 * answers 204 for a missing key; 404 NoSuchBucket ends the undo as done.
 *
 * Params (endpoint and region required: the shipped pipelines pass the
 * tenant's region's entry of the region map, ${region.s3_endpoint} and
 * ${region.s3_region}; there is no fleet-wide default; the others fall back
 * to the environment variable):
 *   endpoint                        http(s)://host:port, no credentials in it
 *   region                          the bucket's region (LocationConstraint, signing)
 *   access_key TQ_S3_ACCESS_KEY
 *   secret_key TQ_S3_SECRET_KEY     never copied into output, errstr or logs
 *   bucket     default rag-<tenant id>-documents
 *   environment TQ_ENVIRONMENT      the Environment tag, default "dev"
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../step.h"
#include "tq/request.h"
#include "tq/util.h"

/* ------------------------------------------------------------ the step */

enum phase {
    P_CREATE,
    P_TAGS,
    P_LIFECYCLE,
    U_LIST,
    U_DELETE_OBJECT,
    U_DELETE_BUCKET,
};

#define LIST_PAGE 100          /* keys per ListObjectsV2 page: keeps the answer under BODY_MAX */
#define NOT_EMPTY_RETRIES 5    /* DeleteBucket said BucketNotEmpty: list again this often */

struct run {
    struct wk_step *s;
    struct wk_s3 *c;
    enum phase ph;
    int archive_days;
    struct wk_s3_tag tags[WK_S3_NTAGS];
    bool existed;              /* the create found the bucket already there */
    char **keys;               /* the current list page, raw key names */
    size_t nkeys, next_key;
    long deleted;
    int not_empty;
    int requests;
};

static void on_response(struct wk_s3 *c, void *arg);

static void keys_free(struct run *r)
{
    for (size_t i = 0; i < r->nkeys; i++)
        free(r->keys[i]);
    free(r->keys);
    r->keys = NULL;
    r->nkeys = r->next_key = 0;
}

/* The step's only exit after start(): free first, wk_step_done() may free s. */
static void finish(struct run *r, enum tq_err err)
{
    struct wk_step *s = r->s;
    s->kind_data = NULL;
    keys_free(r);
    wk_s3_free(r->c);
    free(r);
    wk_step_done(s, err);
}

static enum tq_err request(struct run *r, const char *what, const char *method, const char *key,
                           const char *query, const char *body, bool checksum)
{
    r->requests++;
    return wk_s3_send(r->c, what, method, key, query, body, body ? strlen(body) : 0, checksum,
                      on_response, r);
}

static enum tq_err put_bucket(struct run *r)
{
    r->ph = P_CREATE;
    /* us-east-1 takes no location constraint; every other region needs one */
    char body[256] = "";
    if (strcmp(wk_s3_region(r->c), "us-east-1") != 0)
        snprintf(body, sizeof(body),
                 "<CreateBucketConfiguration xmlns=\"" S3NS "\"><LocationConstraint>%s"
                 "</LocationConstraint></CreateBucketConfiguration>", wk_s3_region(r->c));
    return request(r, "PUT bucket", "PUT", NULL, NULL, body, false);
}

static void xml_escape(struct tq_buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            tq_buf_puts(b, "&amp;");
            break;
        case '<':
            tq_buf_puts(b, "&lt;");
            break;
        case '>':
            tq_buf_puts(b, "&gt;");
            break;
        case '"':
            tq_buf_puts(b, "&quot;");
            break;
        default:
            tq_buf_append(b, s, 1);
        }
    }
}

static enum tq_err put_tags(struct run *r)
{
    r->ph = P_TAGS;
    struct tq_buf b;
    tq_buf_init(&b);
    tq_buf_puts(&b, "<Tagging xmlns=\"" S3NS "\"><TagSet>");
    for (int i = 0; i < WK_S3_NTAGS; i++) {
        tq_buf_printf(&b, "<Tag><Key>%s</Key><Value>", r->tags[i].key);
        xml_escape(&b, r->tags[i].value);
        tq_buf_puts(&b, "</Value></Tag>");
    }
    tq_buf_puts(&b, "</TagSet></Tagging>");
    /* PutBucketTagging replaces the whole set: the same set twice is one effect */
    enum tq_err err = request(r, "PUT bucket tagging", "PUT", NULL, "tagging=", b.data, true);
    tq_buf_cleanup(&b);
    return err;
}

static enum tq_err put_lifecycle(struct run *r)
{
    r->ph = P_LIFECYCLE;
    char body[512];
    snprintf(body, sizeof(body),
             "<LifecycleConfiguration xmlns=\"" S3NS "\"><Rule><ID>tenantq-archive</ID>"
             "<Filter><Prefix></Prefix></Filter><Status>Enabled</Status>"
             "<Transition><Days>%d</Days><StorageClass>GLACIER</StorageClass></Transition>"
             "</Rule></LifecycleConfiguration>", r->archive_days);
    return request(r, "PUT bucket lifecycle", "PUT", NULL, "lifecycle=", body, true);
}

static enum tq_err list_objects(struct run *r)
{
    r->ph = U_LIST;
    keys_free(r);
    /* parameters in canonical (sorted) order: curl 7.88 signs the query as written */
    char q[96];
    snprintf(q, sizeof(q), "encoding-type=url&list-type=2&max-keys=%d", LIST_PAGE);
    return request(r, "list bucket objects", "GET", NULL, q, NULL, false);
}

static enum tq_err delete_bucket(struct run *r)
{
    r->ph = U_DELETE_BUCKET;
    return request(r, "DELETE bucket", "DELETE", NULL, NULL, NULL, false);
}

/* encoding-type=url keys: '+' is a space, %XX a byte. */
static char *url_decode(const char *s)
{
    struct tq_buf b;
    tq_buf_init(&b);
    for (const char *p = s; *p; p++) {
        if (*p == '+') {
            tq_buf_append(&b, " ", 1);
        } else if (*p == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
            char ch = (char)strtoul((char[3]){p[1], p[2], 0}, NULL, 16);
            tq_buf_append(&b, &ch, 1);
            p += 2;
        } else {
            tq_buf_append(&b, p, 1);
        }
    }
    return tq_buf_take(&b, NULL);
}

static void parse_keys(struct run *r)
{
    size_t len;
    const char *body = wk_s3_body(r->c, &len);
    const char *p = body, *end = body + len;
    size_t cap = 0;
    while ((p = strstr(p, "<Contents>")) && p < end) {
        const char *ce = strstr(p, "</Contents>");
        if (!ce)
            break;   /* cut off at the cap: the next listing picks it up */
        char *k = wk_s3_xml_text(p, ce, "Key");
        if (k) {
            if (r->nkeys == cap) {
                cap = cap ? cap * 2 : 16;
                r->keys = tq_xrealloc(r->keys, cap * sizeof(*r->keys));
            }
            r->keys[r->nkeys++] = url_decode(k);
            free(k);
        }
        p = ce;
    }
}

static enum tq_err next_object(struct run *r)
{
    if (r->next_key < r->nkeys) {
        r->ph = U_DELETE_OBJECT;
        return request(r, "DELETE object", "DELETE", r->keys[r->next_key++], NULL, NULL, false);
    }
    /* page done: list again from the start; deleted keys are gone from it */
    return list_objects(r);
}

static void succeed(struct run *r)
{
    json_t *o = r->s->output;
    json_object_set_new(o, "bucket", json_string(wk_s3_bucket(r->c)));
    if (!r->s->undo) {
        json_t *tags = json_object();
        for (int i = 0; i < WK_S3_NTAGS; i++)
            json_object_set_new(tags, r->tags[i].key, json_string(r->tags[i].value));
        json_object_set_new(o, "tags", tags);
        json_object_set_new(o, "archive_after_days", json_integer(r->archive_days));
        json_object_set_new(o, "region", json_string(wk_s3_region(r->c)));
        json_object_set_new(o, "already_existed", json_boolean(r->existed));
    } else {
        json_object_set_new(o, "objects_deleted", json_integer(r->deleted));
        json_object_set_new(o, "existed", json_boolean(r->existed));
    }
    json_object_set_new(o, "requests", json_integer(r->requests));
    finish(r, TQ_OK);
}

static void on_response(struct wk_s3 *c, void *arg)
{
    struct run *r = arg;
    struct wk_step *s = r->s;
    long st = wk_s3_status(c);
    const char *code = wk_s3_code(c);
    bool ok = !wk_s3_aborted(c) && st >= 200 && st < 300;
    bool no_bucket = st == 404 && strcmp(code, "NoSuchBucket") == 0;
    enum tq_err err = TQ_OK;

    switch (r->ph) {
    case P_CREATE:
        /* 200 (us-east-1 answers 200 again to its owner), or 409 "already yours" elsewhere */
        if (ok || (st == 409 && strcmp(code, "BucketAlreadyOwnedByYou") == 0)) {
            r->existed = !ok;
            err = put_tags(r);
        } else if (st == 409 && strcmp(code, "BucketAlreadyExists") == 0) {
            snprintf(s->errstr, sizeof(s->errstr), "cannot create bucket %s: the name belongs to "
                     "another account (409 BucketAlreadyExists)", wk_s3_bucket(c));
            err = TQ_ESTEP;
        } else {
            err = wk_s3_error(c, s->errstr, sizeof(s->errstr));
        }
        break;
    case P_TAGS:
        err = ok ? put_lifecycle(r) : wk_s3_error(c, s->errstr, sizeof(s->errstr));
        break;
    case P_LIFECYCLE:
        if (!ok) {
            err = wk_s3_error(c, s->errstr, sizeof(s->errstr));
            break;
        }
        succeed(r);
        return;
    case U_LIST:
        if (no_bucket) {   /* nothing to undo: the bucket is already gone */
            succeed(r);
            return;
        }
        if (!ok) {
            err = wk_s3_error(c, s->errstr, sizeof(s->errstr));
            break;
        }
        r->existed = true;
        parse_keys(r);
        err = r->nkeys ? next_object(r) : delete_bucket(r);
        break;
    case U_DELETE_OBJECT:
        if (no_bucket) {   /* deleted behind our back meanwhile */
            succeed(r);
            return;
        }
        if (!ok) {         /* DeleteObject answers 204 even for a missing key */
            err = wk_s3_error(c, s->errstr, sizeof(s->errstr));
            break;
        }
        r->deleted++;
        err = next_object(r);
        break;
    case U_DELETE_BUCKET:
        if (ok || no_bucket) {
            succeed(r);
            return;
        }
        if (st == 409 && strcmp(code, "BucketNotEmpty") == 0 && ++r->not_empty <= NOT_EMPTY_RETRIES) {
            err = list_objects(r);   /* someone wrote meanwhile: empty it again */
            break;
        }
        err = wk_s3_error(c, s->errstr, sizeof(s->errstr));
        if (st == 409 && strcmp(code, "BucketNotEmpty") == 0)
            snprintf(s->errstr, sizeof(s->errstr), "cannot delete bucket %s: still not empty after "
                     "%d passes (versioned objects, or a writer that keeps adding)",
                     wk_s3_bucket(c), NOT_EMPTY_RETRIES);
        break;
    }
    if (err)
        finish(r, err);
}

static enum tq_err start(struct wk_step *s)
{
    struct run *r = tq_xcalloc(1, sizeof(*r));
    r->s = s;
    enum tq_err err = wk_s3_new(s, &r->c);
    if (err)
        goto fail;
    if (!s->undo) {
        const struct tq_tier_info *ti = tq_tier_lookup(s->claim->tier);
        if ((err = wk_s3_cost_tags(r->c, s->claim, r->tags, s->errstr, sizeof(s->errstr))))
            goto fail;
        r->archive_days = ti->archive_after_days;
        err = put_bucket(r);
    } else {
        err = list_objects(r);
    }
    if (err)
        goto fail;
    s->kind_data = r;
    return TQ_OK;
fail:
    wk_s3_free(r->c);
    free(r);
    return err;
}

/* Timeout or shutdown: abort the request in flight; its callback ends the step. */
static void cancel(struct wk_step *s)
{
    struct run *r = s->kind_data;
    if (!r)
        return;
    if (!wk_s3_abort(r->c)) {
        snprintf(s->errstr, sizeof(s->errstr), "cancelled");
        finish(r, TQ_ECANCELED);
    }
}

const struct wk_step_ops wk_step_s3_bucket = {"s3_bucket", start, cancel};
