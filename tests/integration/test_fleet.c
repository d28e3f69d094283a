/*
 * State shared by the fleet, with real workers standing in for hosts (each
 * its own TQ_WORK_DIR, so nothing on one's disk reaches another):
 *  - Terraform state in PostgreSQL (exec's terraform_backend "pg"): a worker
 *    killed in the middle of an apply leaves its Terraform running; another
 *    worker's retry waits for Terraform's lock, finds the resource in the
 *    shared state and creates nothing twice; its undo destroys it once.
 *  - fleet-wide limits (a step's "limit"): limited steps on several workers
 *    never run more than max at once, judged from their attempt rows; a
 *    worker killed with -9 holding a permit loses it within a lease.
 * The multi-host version with network namespaces is tests/integration/fleet_netns.sh.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "tq/util.h"

static pid_t orphan;   /* a Terraform left running by a killed worker */

static void fleet_fini(void)
{
    if (orphan > 0)
        kill(-orphan, SIGKILL);
    h_teardown();
}

TestSuite(fleet, .init = h_setup, .fini = fleet_fini, .timeout = 300);

/* ------------------------------------------------------------ helpers */

/* Pipeline from steps written with ' for " (C strings stay readable), registered
   (as the operator would) as the default: submits name no steps of their own. */
static void pipeline(const char *name, const char *steps)
{
    struct tq_buf b;
    tq_buf_init(&b);
    tq_buf_printf(&b, "{\"name\":\"%s\",\"steps\":[%s]}", name, steps);
    for (char *p = b.data; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t je;
    json_t *ok = json_loads(b.data, 0, &je);
    cr_assert_not_null(ok, "test pipeline %s is not JSON: %s: %s", name, je.text, b.data);
    json_decref(ok);
    h_use_pipeline(h_write_file(name, b.data));   /* registered as the default */
    tq_buf_cleanup(&b);
}

static void submit(const char *id, const char *region)
{
    char *err = NULL;
    int r = h_enqueue(NULL, &err, "submit", "--tenant-id", id, "--name", id, "--tier", "Bronze",
                      "--region", region, "--budget", "150000", "--owner", "ops@example.com",
                      NULL);
    cr_assert_eq(r, 0, "submit %s: %s", id, err);
    free(err);
}

static void assert_status(const char *id, const char *status, int ms)
{
    if (h_wait_sql(status, ms, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", id))
        return;
    char *st = h_sql("SELECT status || ': ' || coalesce(failure_reason, '') FROM tq.tenants"
                     " WHERE tenant_id = '%s'", id);
    cr_assert_fail("tenant %s: expected %s, is %s", id, status, st ? st : "?");
}

/* A worker on "host" name: its own working directory; more K=V in extra. */
static pid_t host_worker(const char *name, const char *lease_ms, const char *extra)
{
    static char work[4][320], lease[4][64];
    static int n;
    int i = n++ % 4;
    snprintf(work[i], sizeof(work[i]), "TQ_WORK_DIR=%s/host-%s", H.tmpdir, name);
    snprintf(lease[i], sizeof(lease[i]), "TQ_LEASE_MS=%s", lease_ms);
    const char *env[] = {work[i], lease[i], extra, NULL};
    return h_worker_start(env);
}

static void kill9(pid_t pid)
{
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
}

/* Lines of path equal to line. */
static int count_lines(const char *path, const char *line)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char buf[512];
    int n = 0;
    while (fgets(buf, sizeof(buf), f)) {
        buf[strcspn(buf, "\n")] = '\0';
        n += strcmp(buf, line) == 0;
    }
    fclose(f);
    return n;
}

/* Entries in dir other than . and .. (-1: no such directory). */
static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static bool wait_file(const char *path, int ms)
{
    for (int waited = 0; waited < ms; waited += 50) {
        if (access(path, F_OK) == 0)
            return true;
        tq_sleep_ms(50);
    }
    return false;
}

/* ------------------------------------------------------------ Terraform */

/*
 * One terraform_data resource whose creation and destruction append a line
 * to TQ_TEST_TF_LOG (provisioners run once per create / destroy: the count
 * of lines is the count of resources made). After the apply, a last command
 * (fleet_exec_helper.sh hold) holds the step while the file TQ_TEST_TF_HOLD
 * exists, recording its pid (which leads its own process group), so a test
 * can kill the worker after Terraform wrote its state and before the step
 * is recorded done.
 */
#define TF(...) "['${env.TQ_TEST_TF_BIN}'," __VA_ARGS__ "]"
#define TF_STEP                                                                                    \
    "{'name':'infra','kind':'exec','timeout_ms':180000,"                                           \
    " 'retry':{'max_attempts':3,'base_ms':200,'max_ms':1000},'params':{"                           \
    "  'terraform_backend':'pg',"                                                                  \
    "  'files':{'main.tf.json':{'resource':{'terraform_data':{'bucket':{'input':'${tenant.id}',"  \
    "   'provisioner':[{'local-exec':{'command':'echo created >> ${env.TQ_TEST_TF_LOG}'}},"        \
    "    {'local-exec':{'when':'destroy','command':'echo destroyed >> ${env.TQ_TEST_TF_LOG}'}}]"   \
    "  }}}}},"                                                                                     \
    "  'env':{'TF_IN_AUTOMATION':'1','CHECKPOINT_DISABLE':'1','TF_CLI_CONFIG_FILE':'/dev/null'},"  \
    "  'steps':[" TF("'init','-input=false','-no-color'") ","                                      \
    TF("'workspace','select','-or-create=true','-no-color','${tenant.id}'") ","                   \
    TF("'apply','-input=false','-no-color','-auto-approve','-lock-timeout=120s'") ","              \
    "   ['${env.TQ_TEST_HELPER}','hold','${env.TQ_TEST_TF_HOLD}']],"                                \
    "  'undo_steps':[" TF("'init','-input=false','-no-color'") ","                                 \
    TF("'workspace','select','-or-create=true','-no-color','${tenant.id}'") ","                   \
    TF("'destroy','-input=false','-no-color','-auto-approve','-lock-timeout=120s'") ","            \
    TF("'workspace','select','-no-color','default'") ","                                          \
    TF("'workspace','delete','-no-color','-lock-timeout=120s','${tenant.id}'") "]}}"

Test(fleet, terraform_state_in_postgresql_survives_a_dead_worker)
{
    const char *bin = getenv("TQ_TERRAFORM_BIN");
    if (!bin || !*bin)
        bin = "/usr/local/bin/terraform";
    if (access(bin, X_OK) != 0)
        cr_skip_test("no terraform binary (%s)", bin);
    setenv("TQ_TEST_TF_BIN", bin, 1);
    /* exec runs only what the worker allows, never a shell: the helper, Terraform */
    setenv("TQ_TEST_HELPER", TQ_SOURCE_DIR "/tests/integration/fleet_exec_helper.sh", 1);
    char allow[1200];
    snprintf(allow, sizeof(allow), "%s:%s", getenv("TQ_TEST_HELPER"), bin);
    setenv("TQ_EXEC_ALLOW", allow, 1);
    char log[320], hold[320], hold_pid[330], url[700];
    snprintf(log, sizeof(log), "%s/tf-effects.log", H.tmpdir);
    snprintf(hold, sizeof(hold), "%s/tf-hold", H.tmpdir);
    snprintf(hold_pid, sizeof(hold_pid), "%s.pid", hold);
    setenv("TQ_TEST_TF_LOG", log, 1);
    setenv("TQ_TEST_TF_HOLD", hold, 1);
    h_write_file("tf-hold", "");
    /* the worker's own role when the suite has service roles (it needs only
       the grants migrate gives it), else the test's login */
    snprintf(url, sizeof(url), "%s sslmode=disable", H.roles ? H.worker_dsn : H.dsn);
    setenv("TQ_TERRAFORM_PG_URL", url, 1);
    char pat[sizeof(url)] = "";
    const char *pw = strstr(url, "password=");
    if (pw)
        snprintf(pat, sizeof(pat), "%.*s", (int)strcspn(pw + 9, " "), pw + 9);
    pipeline("tf-pg.json", TF_STEP);
    const char *t = h_tenant("tf");
    submit(t, "us-east-1");

    /* host A applies, then dies with everything it ran before the step is recorded */
    pid_t a = host_worker("a", "2000", NULL);
    cr_assert(wait_file(hold_pid, 90000), "the apply on host A never finished");
    cr_assert_eq(count_lines(log, "created"), 1);
    char *owner_a = h_sql("SELECT lease_owner FROM tq.jobs WHERE tenant_id = '%s'", t);
    kill9(a);
    char *p = NULL;
    size_t n;
    cr_assert_eq(tq_read_file(hold_pid, 64, &p, &n), TQ_OK);
    orphan = (pid_t)atol(p);
    free(p);
    cr_assert_gt(orphan, 0);
    kill(-orphan, SIGKILL);
    orphan = 0;
    unlink(hold);

    /* Terraform's lock on the workspace (an advisory lock on its row) holds
       host B off while someone else has it */
    long ws = h_sql_long("SELECT id FROM tq_terraform.states WHERE name = '%s'", t);
    cr_assert_gt(ws, 0, "host A's apply made the tenant's workspace in tq_terraform");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM (SELECT pg_advisory_lock(%ld)) l", ws), 1);
    pid_t b = host_worker("b", "2000", NULL);
    cr_assert(h_wait_sql("2", 60000, "SELECT s.attempts FROM tq.job_steps s JOIN tq.jobs j ON"
                         " j.id = s.job_id WHERE j.tenant_id = '%s' AND s.step = 'infra'"
                         " AND j.lease_owner <> '%s'", t, owner_a),
              "host B never took the step over");
    tq_sleep_ms(3000);
    cr_assert_neq(h_sql_long("SELECT count(*) FROM tq.tenants WHERE tenant_id = '%s'"
                             " AND status = 'active'", t), 1,
                  "host B applied although the workspace was locked");
    cr_assert_eq(h_sql_long("SELECT count(*) FROM (SELECT pg_advisory_unlock(%ld)) l", ws), 1);

    /* host B finds host A's resource in the shared state */
    assert_status(t, "active", 120000);
    cr_assert_eq(count_lines(log, "created"), 1,
                 "host B must find host A's resource in the shared state, not create it again");
    char *owner_b = h_sql("SELECT worker FROM tq.step_attempts s JOIN tq.jobs j ON j.id = s.job_id"
                          " WHERE j.tenant_id = '%s' AND s.step = 'infra' AND s.status ="
                          " 'succeeded'", t);
    cr_assert(owner_b && *owner_b && strcmp(owner_a, owner_b) != 0,
              "the step finished on another worker (%s, %s)", owner_a, owner_b);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq_terraform.states WHERE name = '%s'"
                            " AND data LIKE '%%terraform_data%%'", t), 1,
                 "the tenant's workspace in tq_terraform holds the resource");

    /* the undo, on host B as well, destroys it once from the same state */
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "deprovision", t, NULL), 0, "deprovision: %s", err);
    free(err);
    assert_status(t, "deprovisioned", 120000);
    cr_assert_eq(h_worker_stop(b, 20000), 0);
    cr_assert_eq(count_lines(log, "destroyed"), 1, "destroyed once");
    cr_assert_eq(count_lines(log, "created"), 1);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq_terraform.states WHERE name = '%s'", t), 0,
                 "the tenant's workspace is deleted with its resources");

    /* host B's scratch space went with each run; host A's died with it */
    char dir[330];
    snprintf(dir, sizeof(dir), "%s/host-b", H.tmpdir);
    cr_assert_eq(dir_entries(dir), 0, "scratch directories left in %s", dir);
    /* the backend's credentials were in the children's environment only */
    if (!pat[0])
        snprintf(pat, sizeof(pat), "%s", url);   /* no password: the whole string */
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.job_steps WHERE output::text LIKE '%%%s%%'"
                            " OR last_error LIKE '%%%s%%'", pat, pat), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE error LIKE '%%%s%%'",
                            pat), 0);
    free(owner_a);
    free(owner_b);
}

/* ------------------------------------------------------------ limits */

/* Most attempts of step that ran at one instant (from their recorded times). */
static long max_overlap(const char *step)
{
    return h_sql_long("SELECT coalesce(max(c), 0) FROM (SELECT (SELECT count(*)"
                      " FROM tq.step_attempts b WHERE b.step = '%s' AND b.phase = 'run'"
                      " AND b.started_at <= a.started_at AND b.finished_at > a.started_at) c"
                      " FROM tq.step_attempts a WHERE a.step = '%s' AND a.phase = 'run') x",
                      step, step);
}

Test(fleet, limited_steps_never_run_more_than_max_at_once_across_workers)
{
    char steps[600];
    snprintf(steps, sizeof(steps),
             "{'name':'gate','kind':'sleep','params':{'ms':1000},"
             " 'limit':{'key':'tf:${tenant.region}:%s','max':2}},"
             "{'name':'after','kind':'noop','needs':['gate']}", H.tag);
    pipeline("limit.json", steps);
    char ids[8][64];
    for (int i = 0; i < 8; i++) {
        snprintf(ids[i], sizeof(ids[i]), "lim%c-%s", 'a' + i, H.tag);
        submit(ids[i], "eu-west-1");
    }
    pid_t w[3];
    for (int i = 0; i < 3; i++)
        w[i] = host_worker(i == 0 ? "a" : i == 1 ? "b" : "c", "3000", "TQ_CONCURRENCY=4");
    /* a step waiting for its permit says so where status reads it */
    cr_assert(h_wait_sql("t", 60000, "SELECT count(*) > 0 FROM tq.job_steps WHERE step = 'gate'"
                         " AND status = 'pending' AND last_error = 'waiting for limit"
                         " tf:eu-west-1:%s (2/2)'", H.tag),
              "no step was seen waiting for the limit");
    /* the batch view names the wait of a tenant with no running step */
    bool shown = false;
    for (int i = 0; i < 100 && !shown; i++) {
        char *all = NULL;
        cr_assert_eq(h_enqueue(&all, NULL, "status", "--all", NULL), 0);
        shown = strstr(all, "waiting for limit tf:eu-west-1:") != NULL;
        free(all);
    }
    cr_assert(shown, "status --all never showed a step waiting for the limit");
    for (int i = 0; i < 8; i++)
        if (!h_wait_sql("active", 60000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'",
                        ids[i]))
            cr_assert_fail("tenant %s did not become active", ids[i]);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(h_worker_stop(w[i], 15000), 0);
    cr_assert_eq(h_sql_long("SELECT count(*) FROM tq.step_attempts WHERE step = 'gate'"
                            " AND phase = 'run' AND status = 'succeeded'"), 8);
    long most = max_overlap("gate");
    cr_assert_leq(most, 2, "%ld limited steps ran at once (max 2)", most);
    cr_assert_eq(most, 2, "the limit let two run at once");
    cr_assert_geq(h_sql_long("SELECT count(DISTINCT worker) FROM tq.step_attempts"
                             " WHERE step = 'gate'"), 2, "the limit was shared by several workers");
    /* and `tq-enqueue status` shows it */
    char *waited = h_sql("SELECT j.tenant_id FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id"
                         " WHERE s.step = 'gate' AND s.last_error LIKE 'waiting for limit%%'"
                         " LIMIT 1");
    char *out = NULL;
    cr_assert_eq(h_enqueue(&out, NULL, "status", waited, NULL), 0);
    cr_assert(strstr(out, "waiting for limit tf:eu-west-1:"), "status of %s: %s", waited, out);
    free(out);
    free(waited);
    /* nothing held once they are done */
    char key[128];
    snprintf(key, sizeof(key), "tq:limit:tf:eu-west-1:%s", H.tag);
    cr_assert_eq(h_redis_long("ZCARD %s", key), 0, "permits left in %s", key);
}

Test(fleet, a_killed_holders_permit_comes_back_within_a_lease)
{
    char steps[600];
    snprintf(steps, sizeof(steps),
             "{'name':'hold','kind':'sleep','params':{'ms':4000},"
             " 'limit':{'key':'solo:%s','max':1}}", H.tag);
    pipeline("solo.json", steps);
    const char *t = h_tenant("solo");
    submit(t, "us-east-1");
    char key[128];
    snprintf(key, sizeof(key), "tq:limit:solo:%s", H.tag);
    pid_t a = host_worker("a", "2000", NULL);
    cr_assert(h_wait_sql("running", 30000, "SELECT status FROM tq.job_steps WHERE step = 'hold'"));
    char *owner_a = h_sql("SELECT lease_owner FROM tq.jobs");
    cr_assert_eq(h_redis_long("ZCARD %s", key), 1, "host A holds the only permit");
    char *holder = h_redis("ZRANDMEMBER %s", key);
    cr_assert(strncmp(holder, owner_a, strlen(owner_a)) == 0, "holder %s is not %s", holder,
              owner_a);
    kill9(a);
    /* host B gets the job after A's lease, and the permit once A's lapses */
    pid_t b = host_worker("b", "2000", NULL);
    assert_status(t, "active", 60000);
    cr_assert_eq(h_worker_stop(b, 15000), 0);
    char *owner_b = h_sql("SELECT worker FROM tq.step_attempts WHERE step = 'hold'"
                          " AND status = 'succeeded'");
    cr_assert(owner_b && *owner_b && strcmp(owner_b, owner_a) != 0);
    char *score = h_redis("ZSCORE %s %s", key, holder);
    cr_assert_str_empty(score, "the dead holder's permit is gone");
    free(score);
    cr_assert_eq(h_redis_long("ZCARD %s", key), 0);
    free(holder);
    free(owner_a);
    free(owner_b);
}
