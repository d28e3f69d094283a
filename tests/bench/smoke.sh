#!/usr/bin/env bash
# tests/bench/smoke.sh BIN_DIR: the suite's check that the benchmarks run
# (ctest bench_smoke). Runs `tests/bench/run --smoke` against the binaries
# in BIN_DIR and checks that every figure the bench promises is printed as
# one `name number unit` line. The values are not judged: the suite has no
# timed assertions (tests/README.md). Exit 77 (skipped) without the
# PostgreSQL 15 server binaries or redis-server.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
[ -x /usr/lib/postgresql/15/bin/initdb ] && command -v redis-server >/dev/null || {
  echo "bench_smoke: PostgreSQL 15 server or redis-server not installed; skipped" >&2; exit 77; }
out=$(mktemp /tmp/tq-bench-smoke.XXXXXX)
trap 'rm -f "$out"' EXIT
TQ_BIN_DIR=$1 "$top/tests/bench/run" --smoke > "$out"
want="noop_jobs_per_s_1_step noop_jobs_per_s_5_steps lpush_to_claim_p50 lpush_to_claim_p99
  submit_bulk_rps submit_stream_rps e2e_stream_to_claim_p50 e2e_stream_to_claim_p99
  e2e_stream_to_step_p50 e2e_stream_to_step_p99
  worker_rss_idle_8_slots worker_rss_idle_64_slots worker_rss_idle_256_slots
  worker_cpu_idle_8_slots worker_cpu_idle_64_slots worker_cpu_idle_256_slots
  worker_rss_busy_256_slots worker_rss_per_job_busy_256_slots worker_cpu_busy_256_slots
  store_ceiling_jobs_per_s onboard_3_total onboard_3_first_hundred_per_tenant
  onboard_3_last_hundred_per_tenant worker_rss_idle_16_slots
  worker_rss_busy_16_slots_pipeline worker_rss_per_job_busy_16_slots_pipeline
  worker_cpu_busy_16_slots_pipeline bench_seconds"
bad=0
for n in $want; do
  grep -Eq "^$n -?[0-9]+(\.[0-9]+)? [a-zA-Z/]+$" "$out" || { echo "bench_smoke: no \"$n NUMBER UNIT\" line" >&2; bad=1; }
done
# nothing else either: one fixed format
if grep -Evq '^[a-z0-9_]+ -?[0-9]+(\.[0-9]+)? [a-zA-Z/]+$' "$out"; then
  echo "bench_smoke: lines not in the name value unit format:" >&2
  grep -Ev '^[a-z0-9_]+ -?[0-9]+(\.[0-9]+)? [a-zA-Z/]+$' "$out" >&2; bad=1
fi
[ "$bad" = 0 ] || { echo "bench_smoke: the bench printed:" >&2; cat "$out" >&2; exit 1; }
echo "bench_smoke: $(wc -l < "$out") figures, each name value unit"
