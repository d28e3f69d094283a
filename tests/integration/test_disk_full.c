/*
 * A full disk (issue 11 item 9): a step that cannot write its credentials
 * fails cleanly and leaves no empty or partial temp file behind. The secrets
 * folder is a tiny tmpfs, filled up before the worker runs; mounting needs
 * root (CI runs as root), so without it the test is skipped.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static char mnt[300];
static bool mounted;

static void init(void)
{
    h_setup();
    if (geteuid() != 0)
        return;
    snprintf(mnt, sizeof(mnt), "%s/full", H.tmpdir);
    mkdir(mnt, 0700);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "mount -t tmpfs -o size=64k,mode=0700 tmpfs '%s' 2>/dev/null", mnt);
    mounted = system(cmd) == 0;
    if (mounted) {
        /* fill it: every later write fails with ENOSPC */
        snprintf(cmd, sizeof(cmd), "dd if=/dev/zero of='%s/filler' bs=4k 2>/dev/null; true", mnt);
        cr_assert_eq(system(cmd), 0);
    }
}

static void fini(void)
{
    if (mounted) {
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "umount '%s'", mnt);
        if (system(cmd) != 0)
            fprintf(stderr, "test_disk_full: could not unmount %s\n", mnt);
        mounted = false;
    }
    h_teardown();
}

TestSuite(disk_full, .init = init, .fini = fini, .timeout = 120);

Test(disk_full, credentials_on_a_full_disk_leave_no_temp_file)
{
    if (!mounted)
        cr_skip_test("needs root to mount a tiny tmpfs");
    h_use_pipeline(h_write_file("full.json",
                        "{\"name\":\"full\",\"steps\":[{\"name\":\"postgres\",\"kind\":\"pg_tenant\","
                        "\"retry\":{\"max_attempts\":1}}]}"));
    const char *t = h_tenant("full");
    char *err = NULL;
    cr_assert_eq(h_enqueue(NULL, &err, "submit", "--tenant-id", t, "--name", "Full", "--tier",
                           "Bronze", "--region", "us-east-1", "--budget", "1000", "--owner",
                           "o@example.com", NULL), 0, "%s", err);
    free(err);
    char env[400];
    snprintf(env, sizeof(env), "TQ_SECRETS_STORE=file:%s", mnt);
    const char *extra[] = {env, NULL};
    pid_t w = h_worker_start(extra);
    cr_assert(h_wait_sql("failed", 60000, "SELECT status FROM tq.tenants WHERE tenant_id = '%s'", t),
              "the step fails on the full disk and the tenant is rolled back");
    cr_assert_eq(h_worker_stop(w, 15000), 0);
    char cmd[600], *out = NULL;
    snprintf(cmd, sizeof(cmd), "find '%s' -mindepth 1 ! -name filler -type f", mnt);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    cr_assert_eq(h_run(argv, &out, NULL), 0);
    cr_assert_str_eq(out, "", "files left on the full disk: %s", out);
    free(out);
    char *why = h_sql("SELECT failure_reason FROM tq.tenants WHERE tenant_id = '%s'", t);
    cr_assert(strstr(why, "No space left"), "the reason says why: %s", why);
    free(why);
}
