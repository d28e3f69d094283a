/* Internals shared by pg.c and migrate.c; not part of libtq's contract. */
#ifndef TQ_PG_INT_H
#define TQ_PG_INT_H

#include "tq/pg.h"

/* Record a libpq failure in pg->errstr and map it to a tq error. */
enum tq_err tq__pg_fail(struct tq_pg *pg, const char *what, PGresult *res);
/*
 * Record err with its detail in pg->errstr (what tq_pg_errstr reads) and
 * return err: how a libtq function reports a refusal it decided itself.
 */
enum tq_err tq__pg_set_err(struct tq_pg *pg, enum tq_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Roll back an open transaction on the current connection (no reconnect:
   pg->errstr keeps the error that made us roll back). */
void tq__pg_rollback(struct tq_pg *pg);
/* Run a parameterised statement; NULL with pg->errstr set on failure. */
PGresult *tq__pg_query(struct tq_pg *pg, enum tq_err *err, const char *what,
                       const char *sql, int nparams, const char *const *params);

/* One statement of a pipeline: sql must be static text (prepared once per
   connection, found again by its address). */
struct tq__stmt {
    const char *what;                 /* "record job outcomes": for errors */
    const char *sql;
    int nparams;
    const char *const *params;
    PGresult *res;                    /* out: the caller PQclears it */
};
/*
 * Run statements in one round trip as one implicit transaction: all commit
 * or none does. On error every res is NULL and pg->errstr names the first
 * statement that failed.
 */
enum tq_err tq__pg_pipeline(struct tq_pg *pg, struct tq__stmt *st, size_t n);

#endif
