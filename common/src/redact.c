/* Masking of known secrets (see tq/redact.h). */
#include "tq/redact.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "tq/util.h"

extern char **environ;

struct secret {
    char *value;
    size_t len;
    int refs;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct secret *list;
static size_t n, cap;
static bool env_read;

/* With lock held. */
static void add_locked(const char *v, size_t len)
{
    if (len < TQ_REDACT_MIN)
        return;
    for (size_t i = 0; i < n; i++)
        if (list[i].len == len && memcmp(list[i].value, v, len) == 0) {
            list[i].refs++;
            return;
        }
    if (n == cap) {
        cap = cap ? cap * 2 : 16;
        struct secret *grown = tq_xcalloc(cap, sizeof(*grown));
        if (n)
            memcpy(grown, list, n * sizeof(*list));
        free(list);
        list = grown;
    }
    char *copy = tq_xmalloc(len + 1);
    memcpy(copy, v, len);
    copy[len] = '\0';
    list[n++] = (struct secret){copy, len, 1};
}

static bool secret_name(const char *name, size_t len)
{
    static const char *const words[] = {"SECRET", "TOKEN", "PASSWORD", "PASSWD"};
    char up[128];
    if (len >= sizeof(up))
        len = sizeof(up) - 1;
    memcpy(up, name, len);
    up[len] = '\0';
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strstr(up, words[i]))
            return true;
    return len > 4 && strcmp(up + len - 4, "_KEY") == 0;
}

/* scheme://user:PASSWORD@host... -> PASSWORD */
static void add_url_password(const char *v)
{
    const char *s = strstr(v, "://");
    if (!s)
        return;
    s += 3;
    size_t auth = strcspn(s, "/?#@");
    if (s[auth] != '@')
        return;
    const char *colon = memchr(s, ':', auth);
    if (colon)
        add_locked(colon + 1, (size_t)(s + auth - colon - 1));
}

static void add_conninfo_password(const char *v)
{
    if (!strstr(v, "password"))
        return;
    char *err = NULL;
    PQconninfoOption *o = PQconninfoParse(v, &err);
    PQfreemem(err);
    for (PQconninfoOption *p = o; p && p->keyword; p++)
        if (strcmp(p->keyword, "password") == 0 && p->val)
            add_locked(p->val, strlen(p->val));
    PQconninfoFree(o);
}

static void read_env_locked(void)
{
    if (env_read)
        return;
    env_read = true;
    for (char **e = environ; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        const char *v = eq + 1;
        if (secret_name(*e, (size_t)(eq - *e)))
            add_locked(v, strlen(v));
        add_url_password(v);
        add_conninfo_password(v);
    }
}

void tq_redact_add(const char *secret)
{
    if (!secret)
        return;
    pthread_mutex_lock(&lock);
    read_env_locked();
    add_locked(secret, strlen(secret));
    pthread_mutex_unlock(&lock);
}

void tq_redact_remove(const char *secret)
{
    if (!secret)
        return;
    size_t len = strlen(secret);
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < n; i++)
        if (list[i].len == len && memcmp(list[i].value, secret, len) == 0) {
            if (--list[i].refs == 0) {
                memset(list[i].value, 0, len);
                free(list[i].value);
                list[i] = list[--n];
            }
            break;
        }
    pthread_mutex_unlock(&lock);
}

/* First occurrence of needle (nlen > 0) in hay[0..hlen), or NULL. */
static char *find(char *hay, size_t hlen, const char *needle, size_t nlen)
{
    for (char *p = hay; nlen <= (size_t)(hay + hlen - p);) {
        char *c = memchr(p, needle[0], (size_t)(hay + hlen - p) - nlen + 1);
        if (!c)
            return NULL;
        if (memcmp(c, needle, nlen) == 0)
            return c;
        p = c + 1;
    }
    return NULL;
}

bool tq_redact_n(char *buf, size_t len)
{
    if (!buf || !len)
        return false;
    bool found = false;
    pthread_mutex_lock(&lock);
    read_env_locked();
    for (size_t i = 0; i < n; i++) {
        size_t sl = list[i].len;
        for (char *p = find(buf, len, list[i].value, sl); p;
             p = find(p + sl, len - (size_t)(p + sl - buf), list[i].value, sl)) {
            memset(p, '*', sl);
            found = true;
        }
    }
    pthread_mutex_unlock(&lock);
    return found;
}

bool tq_redact(char *buf)
{
    return buf && tq_redact_n(buf, strlen(buf));
}

void tq_redact_json(json_t *v)
{
    if (json_is_string(v)) {
        size_t len = json_string_length(v);
        char *copy = tq_xmalloc(len + 1);
        memcpy(copy, json_string_value(v), len + 1);
        if (tq_redact_n(copy, len))
            json_string_setn(v, copy, len);
        free(copy);
    } else if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x)
            tq_redact_json(x);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
            tq_redact_json(x);
    }
}

void tq_redact_reset(void)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < n; i++) {
        memset(list[i].value, 0, list[i].len);
        free(list[i].value);
    }
    free(list);
    list = NULL;
    n = cap = 0;
    env_read = false;
    pthread_mutex_unlock(&lock);
}
