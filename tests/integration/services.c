/* Private Redis and PostgreSQL per test (see services.h). */
#include "services.h"

#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#include "harness.h"
#include "tq/util.h"

struct s_svc S;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        cr_assert_fail("cannot find a free port");
    close(fd);
    return ntohs(a.sin_port);
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    cr_assert_eq(rc, 0, "command failed (%d): %s", rc, cmd);
}

/* As root, PostgreSQL's tools run as the postgres user. */
static const char *as_pg(void)
{
    return geteuid() == 0 ? "runuser -u postgres -- " : "";
}

#define PGBIN "/usr/lib/postgresql/15/bin"

static void redis_up(void)
{
    char acl[400] = "";
    if (S.aclfile) {
        sh("touch %s/redis/users.acl", S.dir);
        snprintf(acl, sizeof(acl), " --aclfile %s/redis/users.acl", S.dir);
    }
    sh("redis-server --port %d --bind 127.0.0.1 --dir %s/redis --daemonize yes"
       " --pidfile %s/redis/redis.pid --logfile %s/redis/redis.log --save '' --appendonly no%s",
       S.redis_port, S.dir, S.dir, S.dir, acl);
    for (int i = 0; i < 100; i++) {
        redisContext *c = redisConnect("127.0.0.1", S.redis_port);
        bool ok = c && !c->err;
        redisFree(c);
        if (ok)
            return;
        tq_sleep_ms(50);
    }
    cr_assert_fail("private redis did not start on %d", S.redis_port);
}

static void pg_up(void)
{
    sh("%s" PGBIN "/pg_ctl -D %s/pg/data -l %s/pg/pg.log -w -o \"-c listen_addresses=127.0.0.1"
       " -p %d -k %s/pg -c fsync=off -c max_connections=100\" start >/dev/null",
       as_pg(), S.dir, S.dir, S.pg_port, S.dir);
}

void s_start(void)
{
    s_start_with(false);
}

void s_start_with(bool aclfile)
{
    memset(&S, 0, sizeof(S));
    S.aclfile = aclfile;
    snprintf(S.dir, sizeof(S.dir), "/tmp/tqsvc-%s", H.tag);
    S.redis_port = free_port();
    S.pg_port = free_port();
    sh("rm -rf %s && mkdir -p %s/redis %s/pg && chmod 755 %s %s/pg", S.dir, S.dir, S.dir, S.dir,
       S.dir);
    if (geteuid() == 0)
        sh("chown postgres %s/pg", S.dir);
    redis_up();
    sh("%s" PGBIN "/initdb -D %s/pg/data -U postgres --auth=trust -E UTF8 --no-sync >/dev/null",
       as_pg(), S.dir);
    pg_up();
    S.up = true;
    sh("psql -qX -h 127.0.0.1 -p %d -U postgres -d postgres -c 'CREATE DATABASE tenantq' >/dev/null",
       S.pg_port);
    snprintf(S.dsn, sizeof(S.dsn), "host=127.0.0.1 port=%d user=postgres dbname=tenantq",
             S.pg_port);
    snprintf(S.redis_url, sizeof(S.redis_url), "redis://127.0.0.1:%d/0", S.redis_port);
    setenv("TQ_DATABASE_URL", S.dsn, 1);
    setenv("TQ_REDIS_URL", S.redis_url, 1);
    /* a private trust cluster: the worker runs as its superuser, explicitly */
    setenv("TQ_ALLOW_SUPERUSER", "1", 1);
    cr_assert_eq(h_enqueue(NULL, NULL, "migrate", NULL), 0);
    /* h_sql() now reads the private database */
    PQfinish(H.db);
    H.db = PQconnectdb(S.dsn);
    cr_assert_eq(PQstatus(H.db), CONNECTION_OK);
}

void s_stop(void)
{
    if (!S.up)
        return;
    S.up = false;
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "redis-cli -p %d shutdown nosave >/dev/null 2>&1", S.redis_port);
    if (system(cmd) != 0)
        fprintf(stderr, "services: redis on %d was already down\n", S.redis_port);
    PQfinish(H.db);
    H.db = NULL;
    snprintf(cmd, sizeof(cmd), "%s" PGBIN "/pg_ctl -D %s/pg/data -m immediate -w stop >/dev/null 2>&1",
             as_pg(), S.dir);
    if (system(cmd) != 0)
        fprintf(stderr, "services: postgres in %s was already down\n", S.dir);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", S.dir);
    if (system(cmd) != 0)
        fprintf(stderr, "services: could not remove %s\n", S.dir);
}

void s_redis_restart(bool wipe)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "redis-cli -p %d shutdown nosave >/dev/null 2>&1", S.redis_port);
    if (system(cmd) != 0)
        fprintf(stderr, "services: redis shutdown reported an error\n");
    for (int i = 0; i < 100; i++) {
        redisContext *c = redisConnect("127.0.0.1", S.redis_port);
        bool down = !c || c->err;
        redisFree(c);
        if (down)
            break;
        tq_sleep_ms(50);
    }
    if (wipe)
        sh("rm -f %s/redis/dump.rdb %s/redis/appendonly.aof", S.dir, S.dir);
    redis_up();
}

void s_pg_restart(void)
{
    sh("%s" PGBIN "/pg_ctl -D %s/pg/data -m fast -w restart -o \"-c listen_addresses=127.0.0.1"
       " -p %d -k %s/pg -c fsync=off -c max_connections=100\" >/dev/null",
       as_pg(), S.dir, S.pg_port, S.dir);
    PQreset(H.db);
}

void s_pg_stop(void)
{
    sh("%s" PGBIN "/pg_ctl -D %s/pg/data -m fast -w stop >/dev/null", as_pg(), S.dir);
}

void s_pg_start(void)
{
    pg_up();
    PQreset(H.db);
}

static void redis_wait_down(void)
{
    for (int i = 0; i < 100; i++) {
        redisContext *c = redisConnect("127.0.0.1", S.redis_port);
        bool down = !c || c->err;
        redisFree(c);
        if (down)
            return;
        tq_sleep_ms(50);
    }
}

void s_redis_stop(void)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "redis-cli -p %d shutdown save >/dev/null 2>&1", S.redis_port);
    if (system(cmd) != 0)
        fprintf(stderr, "services: redis shutdown reported an error\n");
    redis_wait_down();
}

void s_redis_start(void)
{
    redis_up();
}

static redisReply *vcmd(const char *fmt, va_list ap)
{
    redisContext *c = redisConnect("127.0.0.1", S.redis_port);
    if (!c || c->err) {
        redisFree(c);
        return NULL;
    }
    redisReply *r = redisvCommand(c, fmt, ap);
    redisFree(c);
    return r;
}

long s_redis_long(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(fmt, ap);
    va_end(ap);
    long n = r && r->type == REDIS_REPLY_INTEGER ? (long)r->integer : -1;
    freeReplyObject(r);
    return n;
}

char *s_redis(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(fmt, ap);
    va_end(ap);
    char *v = tq_xstrdup(r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
                               r->type == REDIS_REPLY_ERROR)
                             ? r->str
                             : "");
    freeReplyObject(r);
    return v;
}

