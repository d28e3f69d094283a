/*
 * Private Redis and PostgreSQL for tests that restart or wipe them (the
 * shared test servers must never be disturbed). Started on free loopback
 * ports under /tmp, stopped by their pid files. After s_start() the
 * binaries the test runs, and h_sql(), talk to the private pair.
 */
#ifndef TQ_TEST_SERVICES_H
#define TQ_TEST_SERVICES_H

#include <stdbool.h>

struct s_svc {
    int redis_port;
    int pg_port;
    char dir[256];
    char dsn[256];
    char redis_url[128];
    bool up;
    bool aclfile;         /* Redis keeps ACL users in a file (they survive a restart) */
};

extern struct s_svc S;

void s_start(void);                 /* after h_setup() */
void s_start_with(bool aclfile);    /* s_start, Redis with an ACL file as production runs it */
void s_stop(void);                  /* before h_teardown() */
void s_redis_restart(bool wipe);    /* SHUTDOWN NOSAVE (+ delete its files), start again */
void s_pg_restart(void);            /* pg_ctl restart -m fast */
void s_pg_stop(void);               /* pg_ctl stop -m fast */
void s_pg_start(void);              /* start it again after s_pg_stop */
void s_redis_stop(void);            /* SHUTDOWN SAVE: an outage that keeps the data */
void s_redis_start(void);           /* start it again after s_redis_stop */
long s_redis_long(const char *fmt, ...);
char *s_redis(const char *fmt, ...);

#endif
