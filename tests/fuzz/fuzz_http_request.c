/*
 * The worker's request-head parser (worker/http_request.c), fed in chunks
 * as a socket would: the first byte of the input sets the chunk size.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)data[0] % 64 + 1;
    data++;
    size--;
    struct wk_http_req r;
    wk_http_req_init(&r);
    enum wk_http_feed f = WK_HTTP_MORE;
    for (size_t off = 0; off < size && f == WK_HTTP_MORE; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        f = wk_http_req_feed(&r, (const char *)data + off, n);
    }
    if (f == WK_HTTP_DONE) {
        char path[WK_HTTP_URL_MAX + 1];
        if (wk_http_req_path(&r, path, sizeof(path)) && strlen(path) > WK_HTTP_URL_MAX)
            abort();
        (void)wk_http_req_method(&r);
    }
    if (f == WK_HTTP_MORE && r.head_bytes > WK_HTTP_HEAD_MAX)
        abort();   /* a head past the cap must be refused, never waited for */
    return 0;
}
