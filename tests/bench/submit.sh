#!/usr/bin/env bash
# tests/bench/submit.sh [ROWS] [RUNS]
# Bulk submit throughput: a private Redis and PostgreSQL (fsync on) on free
# loopback ports, then RUNS times `tq-enqueue submit --file` of a fresh
# ROWS-row JSON-lines batch (default 10,000: the most one batch holds), timed
# from process start to exit: parsing, validation, the one transaction and
# the LPUSHes. Prints one `submit_bulk_rps VALUE requests/s` line (the best
# run) and each run's seconds on stderr. TQ_BENCH_PERF=FILE records the last
# run with `perf record -g` into FILE. Needs a built tree (.build/release, or
# TQ_BIN_DIR). TQ_BENCH_PG_LOG=FILE keeps PostgreSQL's log (with
# TQ_BENCH_PG_OPTS="-c log_min_duration_statement=0": each statement's time).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/tests/bench/lib.sh"
rows=${1:-10000}
runs=${2:-3}
bench_setup submit tq-enqueue
export TQ_LOG_FORMAT=text
"$bin/tq-enqueue" migrate >/dev/null
printf '{"name":"bench","steps":[{"name":"s1","kind":"noop"}]}\n' > "$dir/pipeline.json"
"$bin/tq-enqueue" pipeline register "$dir/pipeline.json" --default >/dev/null
[ -z "${TQ_BENCH_SETUP_SQL:-}" ] || psql -qX "$TQ_DATABASE_URL" -c "$TQ_BENCH_SETUP_SQL" >/dev/null
best=0
for r in $(seq 1 "$runs"); do
  awk -v n="$rows" -v r="$r" 'BEGIN { for (i = 0; i < n; i++) printf "{\"tenant_id\":\"b%02d-%07d\",\"name\":\"B %d %d\",\"tier\":\"Bronze\",\"region\":\"us-east-1\",\"budget\":1000,\"owner\":\"o@example.com\"}\n", r, i, r, i }' > "$dir/run-$r.jsonl"
  pre=()
  [ -n "${TQ_BENCH_PERF:-}" ] && [ "$r" = "$runs" ] && pre=(perf record -q -g -o "$TQ_BENCH_PERF" --)
  t0=${EPOCHREALTIME/./}
  "${pre[@]}" "$bin/tq-enqueue" submit --file "$dir/run-$r.jsonl" --batch "bench-$r" >/dev/null
  t1=${EPOCHREALTIME/./}
  rps=$(( rows * 1000000 / (t1 - t0) ))
  echo "submit: run $r: $rows rows in $(awk -v d=$((t1 - t0)) 'BEGIN{printf "%.3f", d / 1e6}') s ($rps requests/s)" >&2
  [ "$rps" -gt "$best" ] && best=$rps
done
n=$(psql -qAtX "$TQ_DATABASE_URL" -c "SELECT count(*) FROM tq.jobs")
q=$(redis-cli -p "$rport" llen 'tq:{provision}:ready')
[ "$n" = $((rows * runs)) ] && [ "$q" = $((rows * runs)) ] || { echo "submit: expected $((rows * runs)) jobs and pushes, got $n and $q" >&2; exit 1; }
echo "submit_bulk_rps $best requests/s"
