/*
 * One HTTP/1.x request head, parsed incrementally by Debian's http-parser
 * for the worker's listener (health.c). Knows sizes and syntax, nothing of
 * routes or sockets, so tests/fuzz/http_request can drive it directly.
 */
#ifndef WK_HTTP_REQUEST_H
#define WK_HTTP_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include <http_parser.h>

#define WK_HTTP_HEAD_MAX 8192   /* request line + headers; more is 431 */
#define WK_HTTP_URL_MAX 256     /* request target; more is 414 */

struct wk_http_req {
    http_parser parser;
    char url[WK_HTTP_URL_MAX + 1];
    size_t url_len;
    size_t head_bytes;
    bool url_too_long;
    bool head_done;
};

enum wk_http_feed {
    WK_HTTP_MORE,       /* the head is not complete yet */
    WK_HTTP_DONE,       /* head complete: read method and path; no body is read */
    WK_HTTP_TOO_LARGE,  /* the head passed WK_HTTP_HEAD_MAX: answer 431 */
    WK_HTTP_BAD,        /* not HTTP: answer 400 */
};

void wk_http_req_init(struct wk_http_req *r);
/* Feed the next n bytes; after anything but WK_HTTP_MORE, do not feed again. */
enum wk_http_feed wk_http_req_feed(struct wk_http_req *r, const char *data, size_t n);
/* After WK_HTTP_DONE: the request method (HTTP_GET, HTTP_HEAD, ...). */
enum http_method wk_http_req_method(const struct wk_http_req *r);
/*
 * After WK_HTTP_DONE: the path of the target (no query) into path (cap
 * bytes, NUL-terminated). False when the target was too long (414) or has
 * no path ("" then).
 */
bool wk_http_req_path(const struct wk_http_req *r, char *path, size_t cap);
/* The target was longer than WK_HTTP_URL_MAX. */
bool wk_http_req_url_too_long(const struct wk_http_req *r);

#endif
