/*
 * The harness's own promises, driven by harness_check.sh (not a suite of
 * its own): a test that crashes before .fini still leaves no database,
 * role, Redis key or temp dir behind once the run ends.
 */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "harness.h"

TestSuite(harness, .init = h_setup, .fini = h_teardown, .timeout = 60);

Test(harness, crash_before_fini_leaves_nothing)
{
    if (!getenv("TQ_TEST_HARNESS_CRASH"))
        cr_skip_test("run by tests/integration/harness_check.sh only");
    h_enqueue(NULL, NULL, "submit", "--tenant-id", h_tenant("crash"), "--name", "Crash",
              "--tier", "Bronze", "--region", "us-east-1", "--budget", "1000", "--owner",
              "o@example.com", NULL);
    abort();   /* no .fini: the runner's POST_ALL hook must clean up */
}
