/*
 * Request heads for the worker's listener (http_request.h): http-parser does
 * the syntax, we count bytes and keep the target; bodies are never read.
 */
#include "http_request.h"

#include <string.h>

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct wk_http_req *r = p->data;
    if (r->url_too_long || r->url_len + len > WK_HTTP_URL_MAX) {
        r->url_too_long = true;
        return 0;
    }
    memcpy(r->url + r->url_len, at, len);
    r->url_len += len;
    r->url[r->url_len] = '\0';
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct wk_http_req *r = p->data;
    r->head_done = true;
    http_parser_pause(p, 1);   /* answer now; a body is never read */
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_headers_complete = on_headers_complete,
};

void wk_http_req_init(struct wk_http_req *r)
{
    memset(r, 0, sizeof(*r));
    http_parser_init(&r->parser, HTTP_REQUEST);
    r->parser.data = r;
}

enum wk_http_feed wk_http_req_feed(struct wk_http_req *r, const char *data, size_t n)
{
    if (r->head_done)
        return WK_HTTP_DONE;
    /* Count what we were sent, not what the parser took: it stops at errors. */
    size_t room = WK_HTTP_HEAD_MAX - (r->head_bytes < WK_HTTP_HEAD_MAX ? r->head_bytes
                                                                       : WK_HTTP_HEAD_MAX);
    size_t take = n < room + 1 ? n : room + 1;
    http_parser_execute(&r->parser, &settings, data, take);
    r->head_bytes += n;
    if (r->head_done)
        return WK_HTTP_DONE;
    enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
    if (e == HPE_HEADER_OVERFLOW || r->head_bytes > WK_HTTP_HEAD_MAX)
        return WK_HTTP_TOO_LARGE;
    if (e != HPE_OK)
        return WK_HTTP_BAD;
    return WK_HTTP_MORE;
}

enum http_method wk_http_req_method(const struct wk_http_req *r)
{
    return (enum http_method)r->parser.method;
}

bool wk_http_req_url_too_long(const struct wk_http_req *r)
{
    return r->url_too_long;
}

bool wk_http_req_path(const struct wk_http_req *r, char *path, size_t cap)
{
    path[0] = '\0';
    if (r->url_too_long || cap == 0)
        return false;
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(r->url, r->url_len, r->parser.method == HTTP_CONNECT, &u) != 0 ||
        !(u.field_set & (1 << UF_PATH)))
        return false;
    size_t off = u.field_data[UF_PATH].off, len = u.field_data[UF_PATH].len;
    if (off + len > r->url_len || len >= cap)
        return false;
    memcpy(path, r->url + off, len);
    path[len] = '\0';
    return true;
}
