/*
 * Versioned schema migrations for the tq schema. Each runs in its own
 * transaction under one advisory lock, so concurrent `tq-enqueue migrate`
 * calls serialise and the second finds nothing left to do.
 * Table and column names are relied on by tools outside the code
 * (docs/design.md §4): add, never rename.
 */
#include <stdbool.h>
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
    /* tenant credentials shared by the fleet (docs/security.md): only key id,
       nonce and AES-256-GCM ciphertext (tag appended) ever reach this table */
    "CREATE TABLE tq.secrets ("
    "  tenant_id text NOT NULL,"
    "  name text NOT NULL,"
    "  key_id text NOT NULL,"
    "  nonce bytea NOT NULL,"
    "  ciphertext bytea NOT NULL,"
    "  updated_at timestamptz NOT NULL DEFAULT now(),"
    "  PRIMARY KEY (tenant_id, name));"
    "CREATE INDEX secrets_key ON tq.secrets(key_id);"
    /* The owner's read: audited by the database itself, nothing unless active. */
    "CREATE FUNCTION tq.tenant_credentials(p_tenant text, p_actor text)"
    "  RETURNS TABLE (name text, key_id text, nonce bytea, ciphertext bytea)"
    "  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$"
    " DECLARE st text;"
    " BEGIN"
    "  SELECT t.status INTO st FROM tq.tenants t WHERE t.tenant_id = p_tenant;"
    "  INSERT INTO tq.audit_events (tenant_id, actor, event, detail) VALUES (p_tenant, p_actor,"
    "    CASE WHEN st = 'active' THEN 'credentials_read' ELSE 'credentials_refused' END,"
    "    jsonb_build_object('status', st, 'db_user', session_user));"
    "  IF st IS DISTINCT FROM 'active' THEN RETURN; END IF;"
    "  RETURN QUERY SELECT s.name, s.key_id, s.nonce, s.ciphertext FROM tq.secrets s"
    "    WHERE s.tenant_id = p_tenant ORDER BY s.name;"
    " END $$;"
    "REVOKE ALL ON FUNCTION tq.tenant_credentials(text, text) FROM PUBLIC;"
    /* Deprovisioned means no credentials left, whoever moved the status. */
    "CREATE FUNCTION tq.secrets_destroy() RETURNS trigger LANGUAGE plpgsql"
    "  SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$"
    " BEGIN DELETE FROM tq.secrets WHERE tenant_id = NEW.tenant_id; RETURN NULL; END $$;"
    "REVOKE ALL ON FUNCTION tq.secrets_destroy() FROM PUBLIC;"
    "CREATE TRIGGER tenants_secrets_destroy AFTER UPDATE OF status ON tq.tenants FOR EACH ROW"
    "  WHEN (NEW.status = 'deprovisioned' AND OLD.status IS DISTINCT FROM 'deprovisioned')"
    "  EXECUTE FUNCTION tq.secrets_destroy();"
    /* The CLI may release a job's lease, never take or extend one (the
       fencing epoch it cannot touch at all: see tq_pg_grant_roles). */
    "CREATE FUNCTION tq.jobs_lease_guard() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN RAISE EXCEPTION 'role % may release a job lease but not take or extend one',"
    "   current_user USING ERRCODE = 'insufficient_privilege'; END $$;"
    "CREATE TRIGGER jobs_lease_guard BEFORE UPDATE ON tq.jobs FOR EACH ROW"
    "  WHEN (current_user = 'tq_cli' AND ("
    "    (NEW.lease_owner IS NOT NULL AND NEW.lease_owner IS DISTINCT FROM OLD.lease_owner) OR"
    "    (NEW.lease_until IS NOT NULL AND NEW.lease_until IS DISTINCT FROM OLD.lease_until)))"
    "  EXECUTE FUNCTION tq.jobs_lease_guard();",
    /* 10: operator-owned named pipelines (tq/pipeline_registry.h) */
    "CREATE TABLE tq.pipeline_names ("
    "  name text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),"
    "  pipeline_hash text NOT NULL REFERENCES tq.pipelines(hash),"
    "  is_default boolean NOT NULL DEFAULT false,"
    "  registered_at timestamptz NOT NULL DEFAULT now(),"
    "  registered_by text NOT NULL DEFAULT '');"
    "CREATE UNIQUE INDEX pipeline_names_one_default ON tq.pipeline_names (is_default)"
    "  WHERE is_default;",

    /* Per attempt: may the request have reached its server? An attempt that
       never left (connection refused, name not resolved) had no effect, and
       a step none of whose attempts reached its server needs no undo. Rows
       written before this column existed may have. */
    "ALTER TABLE tq.step_attempts ADD COLUMN reached boolean NOT NULL DEFAULT true;",

    /* Terraform state shared by every worker (exec steps with
       terraform_backend "pg"; worker/README.md): the objects Terraform's pg
       backend would create on first use (schema tq_terraform, one row per
       workspace = tenant), made once here so that first inits on several
       workers cannot race on CREATE SCHEMA and the backend's role needs no
       CREATE privilege. */
    "CREATE SCHEMA IF NOT EXISTS tq_terraform;"
    "CREATE SEQUENCE IF NOT EXISTS public.global_states_id_seq AS bigint;"
    "CREATE TABLE IF NOT EXISTS tq_terraform.states ("
    "  id bigint NOT NULL DEFAULT nextval('public.global_states_id_seq') PRIMARY KEY,"
    "  name text UNIQUE,"
    "  data text);"
    "CREATE UNIQUE INDEX IF NOT EXISTS states_by_name ON tq_terraform.states (name);",

    /* Attempts a step waited out while a dependency was unreachable: part of
       attempts / undo_attempts, but not counted against the step's retry
       policy, on whichever worker the job is delivered to next. */
    "ALTER TABLE tq.job_steps ADD COLUMN outage_attempts int NOT NULL DEFAULT 0,"
    "  ADD COLUMN undo_outage_attempts int NOT NULL DEFAULT 0;",

    /* Approval governance (tq/approvers.h): who may approve, by role, managed
       by operators with the admin account (tq-enqueue approvers); which role a
       tier's requests need (the policy is data: tier -> role, beside the
       budget threshold TQ_APPROVAL_THRESHOLD); and when a pending request was
       last escalated (approval_escalated, once per TQ_APPROVAL_ESCALATE_AFTER). */
    "CREATE TABLE tq.approvers ("
    "  role text NOT NULL CHECK (role ~ '^[a-z][a-z0-9_-]{0,31}$'),"
    "  identity text NOT NULL CHECK (length(identity) BETWEEN 1 AND 200),"
    "  added_at timestamptz NOT NULL DEFAULT now(),"
    "  added_by text NOT NULL DEFAULT '',"
    "  PRIMARY KEY (role, identity));"
    "CREATE TABLE tq.approval_policy ("
    "  tier text PRIMARY KEY CHECK (tier IN ('Gold','Silver','Bronze')),"
    "  role text NOT NULL CHECK (role ~ '^[a-z][a-z0-9_-]{0,31}$'));"
    "INSERT INTO tq.approval_policy (tier, role) VALUES"
    "  ('Gold', 'finance'), ('Silver', 'finance'), ('Bronze', 'finance');"
    "ALTER TABLE tq.tenants ADD COLUMN escalated_at timestamptz,"
    "  ADD COLUMN escalations integer NOT NULL DEFAULT 0;"
    /* The same rule as tq_approval_authorize, kept by the database itself:
       whoever writes the row (any account, raw SQL included), a pending
       request becomes queued only with an approver holding the tier's role
       who is not its owner. */
    "CREATE FUNCTION tq.approval_guard() RETURNS trigger LANGUAGE plpgsql"
    "  SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$"
    " BEGIN"
    "  IF NEW.approver IS NULL OR lower(NEW.approver) = lower(OLD.owner) OR NOT EXISTS ("
    "    SELECT 1 FROM tq.approvers a JOIN tq.approval_policy p ON p.role = a.role"
    "    WHERE p.tier = OLD.tier AND a.identity = NEW.approver) THEN"
    "   RAISE EXCEPTION 'approver % may not approve tenant % (needs the role of tier %, never"
    " the owner)', NEW.approver, OLD.tenant_id, OLD.tier USING ERRCODE = 'insufficient_privilege';"
    "  END IF;"
    "  RETURN NEW;"
    " END $$;"
    "REVOKE ALL ON FUNCTION tq.approval_guard() FROM PUBLIC;"
    "CREATE TRIGGER tenants_approval_guard BEFORE UPDATE OF status ON tq.tenants FOR EACH ROW"
    "  WHEN (OLD.status = 'pending_approval' AND NEW.status = 'queued')"
    "  EXECUTE FUNCTION tq.approval_guard();",

    /* Notifications derived from audit events (worker/dispatch.c). An audit
       event someone may be told about lands in an outbox in the same
       transaction as the fact (a trigger: no writer can forget it, and no
       commit order can make a reader skip it, as a cursor over ids could);
       a worker moves it to one delivery row per channel its routes name
       (claimed with SKIP LOCKED, so many workers never fan out the same
       event twice). A delivery is (event, channel), unique: one message per
       event and channel whoever sends it; next_attempt_at is both its retry
       time and, while a worker sends it, that claim's expiry. */
    "CREATE TABLE tq.notify_outbox (event_id bigint PRIMARY KEY);"
    /* once per statement over its new rows, not per row: a 20,000-row insert
       of routable events costs ~1.1x a plain insert, ~2.2x per row */
    "CREATE FUNCTION tq.notify_outbox_add() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN INSERT INTO tq.notify_outbox (event_id) SELECT id FROM new_events"
    "  WHERE event IN ('submitted', 'pending_approval', 'approved', 'rejected',"
    "    'approval_escalated', 'activated', 'active', 'active_with_warnings', 'failed',"
    "    'rollback_failed', 'drift_detected', 'performance_warning', 'blocked');"
    " RETURN NULL; END $$;"
    "CREATE TRIGGER audit_notify AFTER INSERT ON tq.audit_events"
    "  REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT"
    "  EXECUTE FUNCTION tq.notify_outbox_add();"
    "CREATE TABLE tq.notify_deliveries ("
    "  event_id bigint NOT NULL,"
    "  channel text NOT NULL,"
    "  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),"
    "  attempts integer NOT NULL DEFAULT 0,"
    "  next_attempt_at timestamptz NOT NULL DEFAULT now(),"
    "  claimed_by text,"
    "  last_error text,"
    "  created_at timestamptz NOT NULL DEFAULT now(),"
    "  sent_at timestamptz,"
    "  PRIMARY KEY (event_id, channel));"
    "CREATE INDEX notify_deliveries_due ON tq.notify_deliveries (next_attempt_at)"
    "  WHERE status = 'pending';",

    /* The approval policy is tier x budget: a tier may carry its own budget
       threshold (NULL: the fleet's TQ_APPROVAL_THRESHOLD). Read by submit. */
    "ALTER TABLE tq.approval_policy ADD COLUMN threshold_inr bigint"
    "  CHECK (threshold_inr >= 0);",

    /* Notifications to the approvers in tq.approvers (an e-mail channel with
       "to_approvers": worker/dispatch.c): the addresses of the event's role,
       resolved when the event is fanned out (a JSON array of addr-specs; NULL
       for a channel that does not ask), and how many identities of that role
       were skipped because they are not plain e-mail addresses. */
    "ALTER TABLE tq.notify_deliveries ADD COLUMN recipients jsonb,"
    "  ADD COLUMN skipped_recipients integer NOT NULL DEFAULT 0;",
};

#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

/*
 * The service roles' privileges (docs/security.md), granted again at the end
 * of every migrate so that roles created after the schema, and tables added
 * by later migrations, are covered. A role that does not exist is skipped:
 * a single-role setup (one superuser) keeps working.
 *   tq_worker  DML on every tq table; audit_events insert-only; never the
 *              migration ledger; CREATE on the database (tenant schemas);
 *              DML on tq_terraform.states and its sequence (Terraform's pg
 *              backend, told to create nothing: worker/README.md)
 *   tq_cli     read every table but secrets; insert and update (no delete),
 *              but never the pipeline registry (operators register with the
 *              admin account, tq_migrate: a submitter cannot name new steps),
 *              nor the approvers and the approval policy (read only: nobody
 *              makes themselves an approver with the CLI's account);
 *              on tq.jobs every column but the fencing epoch (a lease it may
 *              only release: trigger jobs_lease_guard); the owner's audited
 *              credentials read, tq.tenant_credentials()
 */
static const char grants_sql[] =
    "DO $g$ DECLARE cols text; BEGIN"
    " IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tq_worker') THEN"
    "  GRANT USAGE ON SCHEMA tq TO tq_worker;"
    "  GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA tq TO tq_worker;"
    "  GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA tq TO tq_worker;"
    "  REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON tq.schema_migrations FROM tq_worker;"
    "  REVOKE UPDATE, DELETE, TRUNCATE ON tq.audit_events FROM tq_worker;"
    "  REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON tq.approvers FROM tq_worker;"
    "  REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON tq.approval_policy FROM tq_worker;"
    "  GRANT USAGE ON SCHEMA tq_terraform TO tq_worker;"
    "  GRANT SELECT, INSERT, UPDATE, DELETE ON tq_terraform.states TO tq_worker;"
    "  GRANT USAGE, SELECT ON SEQUENCE public.global_states_id_seq TO tq_worker;"
    "  BEGIN"
    "   EXECUTE format('GRANT CONNECT, CREATE ON DATABASE %I TO tq_worker', current_database());"
    "  EXCEPTION WHEN insufficient_privilege THEN"
    "   RAISE WARNING 'cannot grant CREATE on this database to tq_worker (not its owner)';"
    "  END;"
    " END IF;"
    " IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tq_cli') THEN"
    "  GRANT USAGE ON SCHEMA tq TO tq_cli;"
    "  GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA tq TO tq_cli;"
    "  GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA tq TO tq_cli;"
    "  REVOKE ALL ON tq.secrets FROM tq_cli;"
    "  REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON tq.schema_migrations FROM tq_cli;"
    "  REVOKE UPDATE, DELETE, TRUNCATE ON tq.audit_events FROM tq_cli;"
    "  REVOKE UPDATE ON tq.jobs FROM tq_cli;"
    "  REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON tq.pipeline_names FROM tq_cli;"
    "  REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON tq.approvers FROM tq_cli;"
    "  REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON tq.approval_policy FROM tq_cli;"
    "  SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols"
    "   FROM pg_attribute WHERE attrelid = 'tq.jobs'::regclass AND attnum > 0"
    "   AND NOT attisdropped AND attname NOT IN ('id', 'lease_epoch');"
    "  EXECUTE format('GRANT UPDATE (%s) ON tq.jobs TO tq_cli', cols);"
    "  GRANT EXECUTE ON FUNCTION tq.tenant_credentials(text, text) TO tq_cli;"
    " END IF;"
    "END $g$";

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
            if ((err = exec(pg, "grant the service roles their privileges", grants_sql)))
                goto fail;
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

enum tq_err tq_pg_schema_check(struct tq_pg *pg, int *have, int *want)
{
    *have = 0;
    *want = NMIGRATIONS;
    enum tq_err err;
    PGresult *r = tq__pg_query(pg, &err, "look for the tq schema",
                               "SELECT to_regclass('tq.schema_migrations') IS NOT NULL", 0, NULL);
    if (!r)
        return err;
    bool exists = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (exists) {
        r = tq__pg_query(pg, &err, "read the schema version",
                         "SELECT coalesce(max(version), 0) FROM tq.schema_migrations", 0, NULL);
        if (!r)
            return err;
        *have = atoi(PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    char why[200];
    if (*have == 0)
        snprintf(why, sizeof(why), "the database has no tq schema (run `tq-enqueue migrate` "
                 "as the migration role first)");
    else if (*have < NMIGRATIONS)
        snprintf(why, sizeof(why), "the database's tq schema is at version %d, this build "
                 "needs %d (run `tq-enqueue migrate`)", *have, NMIGRATIONS);
    else if (*have > NMIGRATIONS)
        snprintf(why, sizeof(why), "the database's tq schema is at version %d, newer than "
                 "this build's %d (upgrade the binaries)", *have, NMIGRATIONS);
    else
        return TQ_OK;
    tq__pg_fail(pg, why, NULL);
    return TQ_EINVALID;
}

int tq_pg_schema_target(void)
{
    return NMIGRATIONS;
}
