/*
 * Versioned schema migrations for the tq schema. Each runs in its own
 * transaction under one advisory lock, so concurrent `tq-enqueue migrate`
 * calls serialise and the second finds nothing left to do.
 * Table and column names are relied on by tools outside the code
 * (docs/design.md §4): add, never rename.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"
#include "tq/util.h"

static const char *const migrations[] = {
    /* 1: the core tables */
    "CREATE TABLE tq.pipelines ("
    "  hash text PRIMARY KEY,"
    "  name text NOT NULL,"
    "  body text NOT NULL,"
    "  created_at timestamptz NOT NULL DEFAULT now());"
    "CREATE TABLE tq.batches ("
    "  id text PRIMARY KEY,"
    "  created_at timestamptz NOT NULL DEFAULT now(),"
    "  created_by text NOT NULL DEFAULT '');"
    "CREATE TABLE tq.tenants ("
    "  tenant_id text PRIMARY KEY CHECK (tenant_id ~ '^[a-z][a-z0-9-]{2,39}$'),"
    "  name text NOT NULL UNIQUE,"
    "  tier text NOT NULL CHECK (tier IN ('Gold','Silver','Bronze')),"
    "  region text NOT NULL,"
    "  budget bigint NOT NULL CHECK (budget > 0),"
    "  owner text NOT NULL,"
    "  justification text NOT NULL DEFAULT '',"
    "  status text NOT NULL CHECK (status IN ('pending_approval','queued',"
    "    'provisioning','validating','active','rejected','blocked',"
    "    'rolling_back','failed','rollback_failed','cancelled',"
    "    'deprovisioning','deprovisioned')),"
    "  approver text,"
    "  approved_at timestamptz,"
    "  failure_reason text,"
    "  batch_id text REFERENCES tq.batches(id),"
    "  created_at timestamptz NOT NULL DEFAULT now(),"
    "  updated_at timestamptz NOT NULL DEFAULT now(),"
    "  activated_at timestamptz);"
    "CREATE INDEX tenants_batch ON tq.tenants(batch_id);"
    "CREATE TABLE tq.jobs ("
    "  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "  tenant_id text NOT NULL REFERENCES tq.tenants(tenant_id),"
    "  kind text NOT NULL CHECK (kind IN ('provision','deprovision')),"
    "  pipeline_hash text NOT NULL REFERENCES tq.pipelines(hash),"
    "  idempotency_key text NOT NULL UNIQUE,"
    "  batch_id text REFERENCES tq.batches(id),"
    "  status text NOT NULL CHECK (status IN ('held','queued','running',"
    "    'succeeded','failed','cancelled','dead')),"
    "  attempt integer NOT NULL DEFAULT 0,"
    "  lease_owner text,"
    "  lease_epoch bigint NOT NULL DEFAULT 0,"
    "  lease_until timestamptz,"
    "  next_attempt_at timestamptz,"
    "  error text,"
    "  created_at timestamptz NOT NULL DEFAULT now(),"
    "  updated_at timestamptz NOT NULL DEFAULT now(),"
    "  started_at timestamptz,"
    "  finished_at timestamptz);"
    "CREATE INDEX jobs_tenant ON tq.jobs(tenant_id);"
    "CREATE INDEX jobs_runnable ON tq.jobs(status) WHERE status IN ('queued','running');"
    "CREATE INDEX jobs_lease_owner ON tq.jobs(lease_owner) WHERE lease_owner IS NOT NULL;"
    "CREATE TABLE tq.job_steps ("
    "  job_id bigint NOT NULL REFERENCES tq.jobs(id),"
    "  step text NOT NULL,"
    "  status text NOT NULL CHECK (status IN ('pending','running','succeeded',"
    "    'failed','skipped','compensated','compensation_failed')),"
    "  attempts integer NOT NULL DEFAULT 0,"
    "  started_at timestamptz,"
    "  finished_at timestamptz,"
    "  last_error text,"
    "  output jsonb,"
    "  PRIMARY KEY (job_id, step));"
    "CREATE TABLE tq.tenant_configs ("
    "  tenant_id text PRIMARY KEY REFERENCES tq.tenants(tenant_id),"
    "  config jsonb NOT NULL,"
    "  updated_at timestamptz NOT NULL DEFAULT now());"
    "CREATE TABLE tq.audit_events ("
    "  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "  at timestamptz NOT NULL DEFAULT clock_timestamp(),"
    "  tenant_id text,"
    "  job_id bigint,"
    "  actor text NOT NULL,"
    "  event text NOT NULL,"
    "  detail jsonb NOT NULL DEFAULT '{}');"
    "CREATE INDEX audit_tenant ON tq.audit_events(tenant_id, at);"
    /* Append-only for everyone, owners included: a trigger, not only grants. */
    "CREATE FUNCTION tq.audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN RAISE EXCEPTION 'tq.audit_events is append-only (% refused)', TG_OP"
    "   USING ERRCODE = 'insufficient_privilege'; END $$;"
    "CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON tq.audit_events"
    "  FOR EACH ROW EXECUTE FUNCTION tq.audit_append_only();"
    "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON tq.audit_events"
    "  FOR EACH STATEMENT EXECUTE FUNCTION tq.audit_append_only();"
    "REVOKE UPDATE, DELETE, TRUNCATE ON tq.audit_events FROM PUBLIC;"
    "REVOKE ALL ON SCHEMA tq FROM PUBLIC;",

    /* 2: what the engine, reliable delivery and the operator CLI need */
    "ALTER TABLE tq.jobs DROP CONSTRAINT jobs_status_check;"
    "ALTER TABLE tq.jobs ADD CONSTRAINT jobs_status_check CHECK (status IN ('held','queued',"
    "  'running','succeeded','failed','cancelled','dead','blocked','rollback_failed'));"
    "ALTER TABLE tq.jobs"
    "  ADD COLUMN phase text NOT NULL DEFAULT 'forward' CHECK (phase IN ('forward','rollback')),"
    "  ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false,"
    "  ADD COLUMN deliveries integer NOT NULL DEFAULT 0,"
    "  ADD COLUMN dead_reason text,"
    "  ADD COLUMN not_before timestamptz,"
    "  ADD COLUMN failed_step text;"
    "ALTER TABLE tq.job_steps"
    "  ADD COLUMN undo_attempts integer NOT NULL DEFAULT 0,"
    "  ADD COLUMN next_attempt_at timestamptz;"
    "CREATE TABLE tq.step_attempts ("
    "  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "  job_id bigint NOT NULL REFERENCES tq.jobs(id),"
    "  step text NOT NULL,"
    "  phase text NOT NULL CHECK (phase IN ('run','undo')),"
    "  attempt integer NOT NULL,"
    "  status text NOT NULL CHECK (status IN ('succeeded','failed')),"
    "  worker text,"
    "  started_at timestamptz NOT NULL,"
    "  finished_at timestamptz NOT NULL DEFAULT now(),"
    "  error text);"
    "CREATE INDEX step_attempts_job ON tq.step_attempts(job_id, step);"
    "CREATE INDEX jobs_dead ON tq.jobs(id) WHERE status = 'dead';",

    /* 3: revalidation (drift) jobs re-run the checks of active tenants */
    "ALTER TABLE tq.jobs DROP CONSTRAINT jobs_kind_check;"
    "ALTER TABLE tq.jobs ADD CONSTRAINT jobs_kind_check"
    "  CHECK (kind IN ('provision','deprovision','revalidate'));"
    "ALTER TABLE tq.tenants ADD COLUMN last_validated_at timestamptz,"
    "  ADD COLUMN drift text;",

    /* 4: let job, tenant and step rows be updated in place (HOT): no index may
       cover a column the claim or outcome changes (status, lease_owner), and
       pages keep room for the new versions. Workers find their jobs by id. */
    "DROP INDEX tq.jobs_runnable, tq.jobs_lease_owner, tq.jobs_dead;"
    "ALTER TABLE tq.jobs SET (fillfactor = 50);"
    "ALTER TABLE tq.tenants SET (fillfactor = 70);"
    "ALTER TABLE tq.job_steps SET (fillfactor = 70);",

    /* 5: step rows and attempts are written only by statements that have
       just read (and locked) their job row, and jobs are never deleted: the
       foreign keys were a second lookup of the same row per insert. Tenants
       leave room for one new version of every row (in-place updates). */
    "ALTER TABLE tq.job_steps DROP CONSTRAINT job_steps_job_id_fkey;"
    "ALTER TABLE tq.step_attempts DROP CONSTRAINT step_attempts_job_id_fkey;"
    "ALTER TABLE tq.tenants SET (fillfactor = 50);",

    /* 6: attempts are read by job and step, never by id alone: one index
       (the key leads with job and step, id keeps it unique) instead of two. */
    "ALTER TABLE tq.step_attempts DROP CONSTRAINT step_attempts_pkey,"
    "  ADD CONSTRAINT step_attempts_pkey PRIMARY KEY (job_id, step, id);"
    "DROP INDEX tq.step_attempts_job;",

    /* tenant names are unique whatever their case ("Idem A" is "IDEM A"); a
       database that already holds such a pair keeps working, with a warning,
       until an operator renames one (the CLI checks the same rule) */
    "DO $$ BEGIN"
    "  IF EXISTS (SELECT 1 FROM tq.tenants GROUP BY lower(name) HAVING count(*) > 1) THEN"
    "    RAISE WARNING 'tq.tenants holds names that differ only in case;"
    " case-insensitive uniqueness is not enforced until they are renamed';"
    "  ELSE"
    "    CREATE UNIQUE INDEX tenants_name_lower ON tq.tenants (lower(name));"
    "  END IF;"
    " END $$;"
    /* a batch names every tenant it asked for, including requests that
       already existed (a rerun of the same file) */
    "CREATE TABLE tq.batch_tenants ("
    "  batch_id text NOT NULL REFERENCES tq.batches(id),"
    "  tenant_id text NOT NULL REFERENCES tq.tenants(tenant_id),"
    "  PRIMARY KEY (batch_id, tenant_id));"
    "INSERT INTO tq.batch_tenants (batch_id, tenant_id)"
    "  SELECT batch_id, tenant_id FROM tq.tenants WHERE batch_id IS NOT NULL;",

    /* the queue whose workers own a tenant (NULL: recorded before this column,
       the default queue's), and its revalidation schedule: when the next
       drift check is due, kept here so that Redis losing its data or a worker
       restarting never starts a round */
    "ALTER TABLE tq.tenants ADD COLUMN queue text,"
    "  ADD COLUMN revalidate_due_at timestamptz;"
    /* due checks are found by time; claims and outcomes never change this
       column, so their tenant updates stay in place (HOT) */
    "CREATE INDEX tenants_revalidate_due ON tq.tenants (revalidate_due_at);",

    /* Per attempt: may the request have reached its server? An attempt that
       never left (connection refused, name not resolved) had no effect, and
       a step none of whose attempts reached its server needs no undo. Rows
       written before this column existed may have. */
    "ALTER TABLE tq.step_attempts ADD COLUMN reached boolean NOT NULL DEFAULT true;",
};

#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* Any fixed number: the key of the advisory lock migrations hold. */
#define MIGRATE_LOCK_KEY "7301455829"

static enum tq_err exec(struct tq_pg *pg, const char *what, const char *sql)
{
    enum tq_err err;
    PGresult *r = tq__pg_query(pg, &err, what, sql, 0, NULL);
    PQclear(r);
    return err;
}

static void rollback(struct tq_pg *pg)
{
    PGconn *c = tq_pg_conn(pg);
    if (c)
        PQclear(PQexec(c, "ROLLBACK"));
}

enum tq_err tq_pg_migrate(struct tq_pg *pg, int *applied, int *version)
{
    *applied = 0;
    *version = 0;
    for (;;) {
        enum tq_err err;
        if ((err = exec(pg, "begin a migration", "BEGIN")))
            return err;
        if ((err = exec(pg, "take the migration lock",
                        "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK_KEY ")")) ||
            (err = exec(pg, "create schema tq",
                        "CREATE SCHEMA IF NOT EXISTS tq;"
                        "CREATE TABLE IF NOT EXISTS tq.schema_migrations ("
                        " version integer PRIMARY KEY,"
                        " applied_at timestamptz NOT NULL DEFAULT now())")))
            goto fail;
        PGresult *r = tq__pg_query(pg, &err, "read the schema version",
                                   "SELECT coalesce(max(version), 0) FROM tq.schema_migrations",
                                   0, NULL);
        if (!r)
            goto fail;
        int have = atoi(PQgetvalue(r, 0, 0));
        PQclear(r);
        *version = have;
        if (have > NMIGRATIONS) {
            rollback(pg);
            return tq__pg_fail(pg, "migrate: the database is newer than this build", NULL);
        }
        if (have == NMIGRATIONS) {
            return exec(pg, "commit", "COMMIT");
        }
        char what[64];
        snprintf(what, sizeof(what), "apply migration %d", have + 1);
        if ((err = exec(pg, what, migrations[have])))
            goto fail;
        char ins[128];
        snprintf(ins, sizeof(ins),
                 "INSERT INTO tq.schema_migrations(version) VALUES (%d)", have + 1);
        if ((err = exec(pg, what, ins)) || (err = exec(pg, "commit a migration", "COMMIT")))
            goto fail;
        (*applied)++;
        *version = have + 1;
        continue;
    fail:
        rollback(pg);
        return err;
    }
}
