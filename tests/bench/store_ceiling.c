/*
 * What PostgreSQL alone can take of a worker's writes: CONNS connections
 * (threads) claim and finish JOBS prepared one-step jobs through
 * tq_store_claim and tq_store_flush, the statements tq-worker runs, BATCH
 * jobs per claim and per flush, with no Redis, no engine, no step run. A
 * fleet of workers can only approach this figure on the same machine; the
 * gap to throughput.sh is what the workers and Redis cost.
 *
 * RECORDS says what each job writes besides its claim:
 *   full     the step row, the attempt row with its audit event, the
 *            outcome with the tenant's status and its audit event (what a
 *            worker writes for a one-step job)
 *   outcome  the outcome with the tenant's status and its audit event
 *   bare     the outcome only (the job row)
 *
 * usage: bench_store CONNINFO [JOBS] [CONNS] [BATCH] [RECORDS]
 * CONNINFO names a freshly created database: the bench migrates and fills it.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tq/pg.h"
#include "tq/store.h"
#include "tq/util.h"

enum records { REC_FULL, REC_OUTCOME, REC_BARE };

struct conn {
    const char *conninfo;
    int64_t first, n;   /* job ids first .. first + n - 1 */
    int batch;
    enum records rec;
    int index;
    int64_t done;
    char err[256];
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Claim and finish one batch; *done counts the jobs whose outcome committed. */
static enum tq_err one_batch(struct tq_pg *pg, struct conn *c, const char *worker,
                             const int64_t *ids, size_t n)
{
    struct tq_claimed *cl = NULL;
    int64_t *dead = NULL;
    size_t ncl = 0, ndead = 0;
    enum tq_err err = tq_store_claim(pg, ids, n, worker, 30000, 10, &cl, &ncl, &dead, &ndead);
    if (err)
        return err;
    struct tq_step_row *steps = tq_xcalloc(ncl + 1, sizeof(*steps));
    struct tq_attempt_row *att = tq_xcalloc(ncl + 1, sizeof(*att));
    struct tq_job_row *jobs = tq_xcalloc(ncl + 1, sizeof(*jobs));
    int64_t ms = (int64_t)(now_s() * 1000);
    for (size_t i = 0; i < ncl; i++) {
        int64_t id = cl[i].c.job_id, epoch = cl[i].c.epoch;
        steps[i] = (struct tq_step_row){.job_id = id, .epoch = epoch, .step = "s1",
                                        .status = TQ_SS_SUCCEEDED, .attempts_delta = 1,
                                        .started_ms = ms, .finished_ms = ms, .progress = true};
        att[i] = (struct tq_attempt_row){.job_id = id, .epoch = epoch, .step = "s1",
                                         .phase = "run", .attempt = 1, .status = TQ_SS_SUCCEEDED,
                                         .started_ms = ms, .finished_ms = ms};
        bool bare = c->rec == REC_BARE;
        jobs[i] = (struct tq_job_row){.job_id = id, .epoch = epoch, .job_status = TQ_JS_SUCCEEDED,
                                      .tenant_status = bare ? TQ_TS_NONE : TQ_TS_ACTIVE,
                                      .phase = "forward", .event = bare ? NULL : "active",
                                      .release_lease = true};
    }
    bool full = c->rec == REC_FULL;
    struct tq_flush f = {.steps = steps, .nsteps = full ? ncl : 0, .attempts = att,
                         .nattempts = full ? ncl : 0, .jobs = jobs, .njobs = ncl,
                         .worker = worker, .lease_ms = 30000};
    struct tq_flush_result *res = NULL;
    size_t nres = 0;
    err = tq_store_flush(pg, &f, &res, &nres);
    for (size_t i = 0; !err && i < nres; i++)
        if (!res[i].stale)
            c->done++;
    free(res);
    free(steps);
    free(att);
    free(jobs);
    for (size_t i = 0; i < ncl; i++)
        json_decref(cl[i].steps);
    free(cl);
    free(dead);
    return err;
}

static void *run(void *arg)
{
    struct conn *c = arg;
    struct tq_pg *pg = NULL;
    char worker[32];
    snprintf(worker, sizeof(worker), "bench-%d", c->index);
    enum tq_err err = tq_pg_open(c->conninfo, &pg);
    int64_t *ids = tq_xcalloc((size_t)c->batch, sizeof(*ids));
    for (int64_t at = 0; !err && at < c->n; at += c->batch) {
        size_t n = 0;
        for (int64_t id = c->first + at; id < c->first + c->n && n < (size_t)c->batch; id++)
            ids[n++] = id;
        err = one_batch(pg, c, worker, ids, n);
    }
    if (err)
        snprintf(c->err, sizeof(c->err), "%s", tq_pg_errstr(pg));
    free(ids);
    tq_pg_close(pg);
    return NULL;
}

static enum tq_err prepare(const char *conninfo, int64_t jobs, int64_t *first)
{
    struct tq_pg *pg = NULL;
    enum tq_err err = tq_pg_open(conninfo, &pg);
    int applied = 0, version = 0;
    char sql[1024];
    if (!err)
        err = tq_pg_migrate(pg, &applied, &version);
    snprintf(sql, sizeof(sql),
             "INSERT INTO tq.pipelines (hash, name, body) VALUES ('bench', 'bench', '{}');"
             "INSERT INTO tq.batches (id) VALUES ('bench');"
             "INSERT INTO tq.tenants (tenant_id, name, tier, region, budget, owner, status,"
             "  batch_id) SELECT 't' || lpad(i::text, 8, '0'), 'T ' || i, 'Bronze', 'us-east-1',"
             "  1000, 'o@example.com', 'queued', 'bench' FROM generate_series(1, %" PRId64 ") i;"
             "INSERT INTO tq.jobs (tenant_id, kind, pipeline_hash, idempotency_key, batch_id,"
             "  status) SELECT 't' || lpad(i::text, 8, '0'), 'provision', 'bench',"
             "  't' || lpad(i::text, 8, '0'), 'bench', 'queued' FROM generate_series(1, %" PRId64
             ") i",
             jobs, jobs);
    if (!err)
        err = tq_pg_exec(pg, sql);
    if (!err)
        err = tq_pg_exec(pg, "VACUUM (ANALYZE)");
    if (!err)
        err = tq_pg_exec(pg, "CHECKPOINT");
    if (err)
        fprintf(stderr, "bench_store: could not prepare the jobs: %s\n", tq_pg_errstr(pg));
    tq_pg_close(pg);
    *first = 1;   /* a fresh database: the identity starts at 1 */
    return err;
}

static long arg_long(const char *s, const char *name, long lo, long hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "bench_store: %s must be an integer from %ld to %ld (got \"%s\")\n", name,
                lo, hi, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 6) {
        fprintf(stderr, "usage: bench_store CONNINFO [JOBS] [CONNS] [BATCH] [full|outcome|bare]\n");
        return 2;
    }
    int64_t jobs = argc > 2 ? arg_long(argv[2], "JOBS", 1, 10000000) : 40000;
    int conns = argc > 3 ? (int)arg_long(argv[3], "CONNS", 1, 64) : 2;
    int batch = argc > 4 ? (int)arg_long(argv[4], "BATCH", 1, 10000) : 128;
    enum records rec = REC_FULL;
    const char *recs = argc > 5 ? argv[5] : "full";
    if (strcmp(recs, "outcome") == 0)
        rec = REC_OUTCOME;
    else if (strcmp(recs, "bare") == 0)
        rec = REC_BARE;
    else if (strcmp(recs, "full") != 0) {
        fprintf(stderr, "bench_store: RECORDS must be full, outcome or bare (got \"%s\")\n", recs);
        return 2;
    }
    int64_t first = 0;
    if (prepare(argv[1], jobs, &first))
        return 1;
    struct conn *c = tq_xcalloc((size_t)conns, sizeof(*c));
    pthread_t *th = tq_xcalloc((size_t)conns, sizeof(*th));
    int64_t per = (jobs + conns - 1) / conns;
    double t0 = now_s();
    for (int i = 0; i < conns; i++) {
        int64_t lo = first + per * i, n = jobs - per * i < per ? jobs - per * i : per;
        c[i] = (struct conn){.conninfo = argv[1], .first = lo, .n = n > 0 ? n : 0,
                             .batch = batch, .rec = rec, .index = i};
        pthread_create(&th[i], NULL, run, &c[i]);
    }
    int64_t done = 0;
    int rc = 0;
    for (int i = 0; i < conns; i++) {
        pthread_join(th[i], NULL);
        done += c[i].done;
        if (c[i].err[0]) {
            fprintf(stderr, "bench_store: connection %d: %s\n", i, c[i].err);
            rc = 1;
        }
    }
    double secs = now_s() - t0;
    printf("store: %" PRId64 " of %" PRId64 " jobs claimed and finished, %d connection(s) x batch"
           " %d, records %s: %.0f jobs/s (%.3f s)\n",
           done, jobs, conns, batch, recs, (double)done / secs, secs);
    free(c);
    free(th);
    return rc || done != jobs;
}
