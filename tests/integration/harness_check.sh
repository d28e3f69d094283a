#!/usr/bin/env bash
# tests/integration/harness_check.sh HARNESS_BIN SUITE_BIN: what ctest relies on.
#   1. a suite run without test services exits 77 (ctest: skipped), never 0;
#   2. with TQ_TEST_REQUIRE_SERVICES=1 and no services it fails;
#   3. a test that crashes before .fini leaves no database behind on the
#      servers it was given (they may be someone else's).
# Exits 77 itself when no services are configured (nothing to check 3 on).
set -u
harness=$1 suite=$2
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok - $*"; }
bad() { fail=$((fail + 1)); echo "not ok - $*"; }

rc=0
env -u TQ_TEST_REDIS_PORT -u TQ_TEST_PG_DSN -u TQ_TEST_REQUIRE_SERVICES \
  "$suite" --jobs 1 >/dev/null 2>&1 || rc=$?
if [ "$rc" = 77 ]; then ok "no services: exit 77 (skipped)"; else bad "no services: exit $rc, want 77"; fi
rc=0
env -u TQ_TEST_REDIS_PORT -u TQ_TEST_PG_DSN TQ_TEST_REQUIRE_SERVICES=1 \
  "$suite" --jobs 1 >/dev/null 2>&1 || rc=$?
if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then ok "services required but missing: fails ($rc)"; else bad "required but missing: exit $rc"; fi

if [ -z "${TQ_TEST_PG_DSN:-}" ] || [ -z "${TQ_TEST_REDIS_PORT:-}" ]; then
  echo "$pass passed, $fail failed (no services: the cleanup check is skipped)"
  [ "$fail" -eq 0 ] || exit 1
  exit 77
fi
dbs() { psql -qtAX "$TQ_TEST_PG_DSN" -c "SELECT count(*) FROM pg_database WHERE datname LIKE 'tqt\_%'"; }
before=$(dbs)
rc=0
TQ_TEST_HARNESS_CRASH=1 "$harness" --jobs 1 >/dev/null 2>&1 || rc=$?
after=$(dbs)
if [ "$rc" != 0 ]; then ok "the crashing test failed ($rc)"; else bad "the crashing test passed"; fi
# other suites may run in parallel: count only databases older than none of ours
left=$(psql -qtAX "$TQ_TEST_PG_DSN" -c "SELECT count(*) FROM pg_roles WHERE rolname LIKE '%crash%'")
if [ "$after" -le "$before" ]; then ok "no database left behind ($before before, $after after)"; else
  # a parallel suite may have started meanwhile: check that none is the crashed test's
  bad "databases: $before before, $after after"; fi
if [ "$left" = 0 ]; then ok "no tenant role left behind"; else bad "$left crash roles left"; fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
