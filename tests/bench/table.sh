#!/usr/bin/env bash
# tests/bench/table.sh FILE: the README's Performance table from the output
# of `tests/bench/run` (FILE: its stdout, `name value unit` lines), one row
# per figure with the script that measures it, in markdown on stdout.
# Usage: tests/bench/run > bench.out; tests/bench/table.sh bench.out
set -euo pipefail
awk '
function row(what, cmd) { printf "| %s | `%s` | %s %s |\n", what, cmd, $2, $3 }
BEGIN { print "| what | command (as the full run calls it) | value |"; print "|---|---|---|" }
$1 == "noop_jobs_per_s_1_step"  { row("no-op jobs/s, 1 step, 2 workers × 256 slots", "tests/bench/throughput.sh 20000 2 256 1") }
$1 == "noop_jobs_per_s_5_steps" { row("no-op jobs/s, 5 steps, 2 workers × 256 slots", "tests/bench/throughput.sh 10000 2 256 5") }
$1 ~ /^lpush_to_claim_pg_socket_p/ { row("dispatch latency, LPUSH to claim, PostgreSQL over its Unix socket, " substr($1, 26), "TQ_BENCH_PG_SOCKET=1 TQ_BENCH_LATENCY_JOBS=300 tests/bench/throughput.sh 500 1 8 1"); next }
$1 ~ /^lpush_to_claim_p/        { row("dispatch latency, LPUSH to claim, idle workers, " substr($1, 16), "TQ_BENCH_LATENCY_JOBS=1000 tests/bench/throughput.sh 20000 2 256 1") }
$1 == "submit_bulk_rps"         { row("bulk submit, 10,000-row batch (best of 3)", "tests/bench/submit.sh 10000 3") }
$1 == "submit_stream_rps"       { row("`submit --stream`, 10,000 requests written at once", "tests/bench/stream.sh 10000 1000") }
$1 ~ /^e2e_stream_to_claim_p/   { row("end to end, stream write → claim, 1,000 sequential requests, " substr($1, 21), "tests/bench/stream.sh 10000 1000") }
$1 ~ /^e2e_stream_to_step_p/    { row("end to end, stream write → first step started, " substr($1, 20), "tests/bench/stream.sh 10000 1000") }
$1 ~ /^worker_rss_idle_[0-9]+_slots$/ { n = $1; gsub(/[^0-9]/, "", n); row("worker RSS idle, " n " slots (VmRSS)", n == 16 ? "tests/bench/onboard.sh" : "tests/bench/stream.sh") }
$1 ~ /^worker_cpu_idle_/        { n = $1; gsub(/[^0-9]/, "", n); row("worker CPU idle, " n " slots (3 s)", "tests/bench/stream.sh") }
$1 == "worker_rss_busy_256_slots" { row("worker peak RSS, 256 slots on no-op jobs (VmHWM)", "tests/bench/stream.sh 10000 1000") }
$1 == "worker_rss_per_job_busy_256_slots" { row("… per in-flight job (peak − idle) / 256", "tests/bench/stream.sh 10000 1000") }
$1 == "worker_cpu_busy_256_slots" { row("worker CPU, 256 slots draining no-op jobs", "tests/bench/stream.sh 10000 1000") }
$1 == "worker_rss_busy_16_slots_pipeline" { row("worker peak RSS, 16 slots on the default pipeline (VmHWM)", "tests/bench/onboard.sh") }
$1 == "worker_rss_per_job_busy_16_slots_pipeline" { row("… per in-flight job (peak − idle) / 16, libcurl start included", "tests/bench/onboard.sh") }
$1 == "worker_cpu_busy_16_slots_pipeline" { row("worker CPU per worker, onboarding on the default pipeline", "tests/bench/onboard.sh") }
$1 == "store_ceiling_jobs_per_s" { row("store ceiling: PostgreSQL alone, the same writes", "tests/bench/store_ceiling.sh 40000 2 128 full") }
$1 ~ /^onboard_[0-9]+_total$/   { n = $1; gsub(/[^0-9]/, "", n); row("onboard " n " tenants, default pipeline with the stand-ins, 2 workers × 16 slots", "tests/bench/onboard.sh \"10 100 1000\"") }
$1 ~ /^onboard_[0-9]+_first_hundred/ { n = $1; sub(/^onboard_/, "", n); sub(/_.*/, "", n); row("… of " n ": per tenant, first hundred", "tests/bench/onboard.sh \"10 100 1000\"") }
$1 ~ /^onboard_[0-9]+_last_hundred/  { n = $1; sub(/^onboard_/, "", n); sub(/_.*/, "", n); row("… of " n ": per tenant, last hundred", "tests/bench/onboard.sh \"10 100 1000\"") }
$1 == "bench_seconds"           { row("the whole bench", "tests/bench/run") }
' "$1"
