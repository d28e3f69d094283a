/*
 * The small S3 client shared by the s3_bucket and check_s3 step kinds:
 * path-style requests signed by libcurl's AWS SigV4, one at a time per
 * client, on the worker's curl multi. Worker-internal.
 */
#ifndef WK_S3_CLIENT_H
#define WK_S3_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tq/err.h"

struct wk_step;
struct tq_claim;
struct wk_s3;

/*
 * The S3 client of s3_bucket.c and check_s3.c. Loop thread only.
 *
 * wk_s3_new() reads the connection params (above) from s->params; on error
 * it fills s->errstr and returns TQ_EINVALID. wk_s3_send() starts one request
 * (path "/<bucket>" + key_path, query written as AWS's canonical form, e.g.
 * "tagging="); TQ_OK means cb runs exactly once, also when aborted. Only one
 * request is in flight per client. wk_s3_abort() ends it now (cb runs before
 * it returns); false when nothing was in flight. wk_s3_error() classifies the
 * last response that was not a success: TQ_ECANCELED (aborted), TQ_EIO
 * (connection error or 5xx: worth a retry), TQ_ESTEP (other status, with
 * the S3 error Code), and writes "what: status Code" into errstr.
 */
/* The S3 XML namespace of request and response bodies. */
#define S3NS "http://s3.amazonaws.com/doc/2006-03-01/"

typedef void wk_s3_cb(struct wk_s3 *c, void *arg);
enum tq_err wk_s3_new(struct wk_step *s, struct wk_s3 **out);
void wk_s3_free(struct wk_s3 *c);
const char *wk_s3_bucket(const struct wk_s3 *c);
const char *wk_s3_environment(const struct wk_s3 *c);
const char *wk_s3_region(const struct wk_s3 *c);
enum tq_err wk_s3_send(struct wk_s3 *c, const char *what, const char *method,
                       const char *key, const char *query, const char *body, size_t len,
                       bool checksum, wk_s3_cb *cb, void *arg);
bool wk_s3_abort(struct wk_s3 *c);
bool wk_s3_aborted(const struct wk_s3 *c);
long wk_s3_status(const struct wk_s3 *c);          /* 0: no HTTP answer */
const char *wk_s3_code(const struct wk_s3 *c);     /* S3 error Code, "" if none */
const char *wk_s3_body(const struct wk_s3 *c, size_t *len);   /* capped, NUL-terminated */
uint64_t wk_s3_ms(const struct wk_s3 *c);          /* duration of the last request */
enum tq_err wk_s3_error(const struct wk_s3 *c, char *errstr, size_t errlen);
/* Text of the first <tag>...</tag> in [p, end), entities decoded; caller frees. NULL if absent. */
char *wk_s3_xml_text(const char *p, const char *end, const char *tag);
/* The five cost tags docs/design.md §1 puts on every resource. Values borrowed from claim/c. */
#define WK_S3_NTAGS 5
struct wk_s3_tag {
    const char *key;
    char value[128];
};
enum tq_err wk_s3_cost_tags(const struct wk_s3 *c, const struct tq_claim *claim,
                            struct wk_s3_tag tags[WK_S3_NTAGS], char *errstr, size_t errlen);

#endif
