/*
 * Connection strings from the environment: our Redis URL parser, and
 * libpq's conninfo/URI parser that TQ_DATABASE_URL goes through.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "tq/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    struct tq_redis_addr a;
    char err[256];
    if (tq_redis_url_parse(s, &a, err, sizeof(err)) == TQ_OK) {
        if (!a.host[0] || a.port < 1 || a.port > 65535 || a.db < 0 ||
            !memchr(a.host, '\0', sizeof(a.host)) || !memchr(a.password, '\0', sizeof(a.password)))
            abort();
    } else if (!memchr(err, '\0', sizeof(err))) {
        abort();
    }
    char *perr = NULL;
    PQconninfoOption *o = PQconninfoParse(s, &perr);
    PQconninfoFree(o);
    PQfreemem(perr);
    free(s);
    return 0;
}
