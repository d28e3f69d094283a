#!/usr/bin/env bash
# tests/bench/throughput.sh [JOBS] [WORKERS] [CONCURRENCY] [STEPS]
# No-op job throughput of the whole fleet with every claim, step transition
# and outcome durable in PostgreSQL. Starts a private Redis and PostgreSQL
# (fsync on: the durable configuration) on free loopback ports, submits JOBS
# tenants as one batch against a pipeline of STEPS noop steps, starts WORKERS
# workers, and prints jobs/s and step transitions/s from first claim to last
# outcome. Needs a built tree (.build/release, or TQ_BIN_DIR).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/tests/bench/lib.sh"
jobs=${1:-10000}
workers=${2:-2}
conc=${3:-256}
steps=${4:-1}
bench_setup throughput tq-worker
export TQ_HTTP_ADDR="" TQ_LOG_FORMAT=text
bench_trust_env   # a throwaway private trust cluster (lib.sh)
"$bin/tq-enqueue" migrate >/dev/null
[ -z "${TQ_BENCH_SETUP_SQL:-}" ] || psql -qX "$TQ_DATABASE_URL" -c "$TQ_BENCH_SETUP_SQL" >/dev/null
{
  printf '{"name":"bench","steps":['
  for i in $(seq 1 "$steps"); do
    [ "$i" -gt 1 ] && printf ','
    if [ "$i" -gt 1 ]; then printf '{"name":"s%d","kind":"noop","needs":["s%d"]}' "$i" $((i - 1));
    else printf '{"name":"s1","kind":"noop"}'; fi
  done
  printf ']}\n'
} > "$dir/pipeline.json"
"$bin/tq-enqueue" pipeline register "$dir/pipeline.json" --default >/dev/null
awk -v n="$jobs" 'BEGIN { for (i = 0; i < n; i++) printf "{\"tenant_id\":\"t%07d\",\"name\":\"T %d\",\"tier\":\"Bronze\",\"region\":\"us-east-1\",\"budget\":1000,\"owner\":\"o@example.com\"}\n", i, i }' > "$dir/jobs.jsonl"
split -l 10000 -d -a 3 --additional-suffix=.jsonl "$dir/jobs.jsonl" "$dir/part-"   # a batch holds at most 10,000
t0=$(date +%s.%N)
for f in "$dir"/part-*.jsonl; do "$bin/tq-enqueue" submit --file "$f" --batch "bench-$(basename "$f" .jsonl)" >/dev/null; done
t1=$(date +%s.%N)
echo "throughput: submitted $jobs jobs in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b - a}') s (batches of 10,000, one transaction each)"
wpids=()
for i in $(seq 1 "$workers"); do
  TQ_CONCURRENCY=$conc "$bin/tq-worker" 2>"$dir/worker-$i.log" & pids+=($!); wpids+=($!)
done
# TQ_BENCH_ON_START runs beside the burst, e.g. "perf record -a -o /tmp/p.data -- sleep 1"
[ -z "${TQ_BENCH_ON_START:-}" ] || { bash -c "$TQ_BENCH_ON_START" & pids+=($!); }
# One psql session answers the polls (a psql process every 200 ms would cost
# more CPU than a worker; a server-side loop would hold a snapshot and stop
# PostgreSQL from pruning old row versions).
coproc POLL { psql -qAtX "$TQ_DATABASE_URL"; }
poll_pid=$POLL_PID   # bash unsets POLL_PID when the coprocess ends
while :; do
  echo "SELECT count(*) FROM tq.jobs WHERE status = 'succeeded';" >&"${POLL[1]}"
  read -r done_n <&"${POLL[0]}"
  [ "$done_n" -ge "$jobs" ] && break
  alive=0
  for p in "${wpids[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
  if [ "$alive" -eq 0 ]; then   # a bad setting ends every worker at start: say so, do not wait forever
    echo "throughput: every worker exited with $done_n of $jobs jobs done; last lines of worker 1:" >&2
    tail -n 3 "$dir/worker-1.log" >&2
    exit 1
  fi
  sleep 0.2
done
exec {POLL[1]}>&-
wait "$poll_pid" 2>/dev/null || true
read -r secs <<<"$(psql -qAtX "$TQ_DATABASE_URL" -c "SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM tq.jobs")"
trans=$(psql -qAtX "$TQ_DATABASE_URL" -c "SELECT count(*) FROM tq.step_attempts")
echo "throughput: $jobs jobs x $steps noop step(s), $workers worker(s) x $conc slots: $(awk -v n="$jobs" -v s="$secs" 'BEGIN{printf "%.0f", n / s}') jobs/s ($secs s first claim to last outcome)"
echo "throughput: $(awk -v n="$trans" -v s="$secs" 'BEGIN{printf "%.0f", n * 2 / s}') step transitions/s (running + succeeded of $trans step attempts)"
for i in $(seq 1 "$workers"); do echo "throughput: worker $i error lines: $(grep -c error "$dir/worker-$i.log" || true)"; done
# Dispatch latency with idle workers: jobs are committed with dispatch
# deferred (Redis unreachable for the CLI), then this script LPUSHes each id
# itself over an open connection, noting the time just before; latency =
# the claim statement's start (jobs.started_at) - that time, i.e. LPUSH +
# BLMOVE wake-up + the fetcher reaching PostgreSQL. The push waits 20 ms
# after the submit, so the CLI's exit (process and PostgreSQL backend) is
# not on the two cores at the moment measured.
# The burst above leaves every table due for autovacuum; vacuum now, so the
# latency phase measures dispatch on an idle system, not a vacuum run.
lat_n=${TQ_BENCH_LATENCY_JOBS:-200}
[ "$lat_n" -gt 0 ] && psql -qAtX "$TQ_DATABASE_URL" -c "VACUUM (ANALYZE)" >/dev/null
exec 3<>"/dev/tcp/127.0.0.1/$rport"
: >"$dir/pushed"
for i in $(seq 1 "$lat_n"); do
  id=$(TQ_REDIS_URL="redis://127.0.0.1:1/0" "$bin/tq-enqueue" submit --json \
    --tenant-id "lat$(printf %06d "$i")" --name "Lat $i" --tier Bronze --region us-east-1 \
    --budget 1000 --owner o@example.com --batch latency 2>/dev/null | sed -n 's/.*"job_id":\([0-9]*\).*/\1/p')
  key='tq:{provision}:ready'
  sleep 0.02
  # one write: split writes meet Nagle + delayed ACK (40 ms) on this socket
  printf -v cmd '*3\r\n$5\r\nLPUSH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n' "${#key}" "$key" "${#id}" "$id"
  t=${EPOCHREALTIME/./}   # microseconds, no fork
  printf '%s' "$cmd" >&3
  read -r _reply <&3
  echo "$id $t" >>"$dir/pushed"
  sleep 0.02
done
exec 3<&-
while [ "$(psql -qAtX "$TQ_DATABASE_URL" -c "SELECT count(*) FROM tq.jobs WHERE batch_id = 'latency' AND status = 'succeeded'")" -lt "$lat_n" ]; do sleep 0.2; done
[ "$lat_n" -gt 0 ] && psql -qAtX "$TQ_DATABASE_URL" -F ' ' -c "CREATE TEMP TABLE pushed (id bigint, us bigint)" \
  -c "\\copy pushed FROM '$dir/pushed' WITH (DELIMITER ' ')" \
  -c "SELECT 'throughput: dispatch latency, LPUSH to claim, $lat_n jobs (ms): p50', round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::numeric, 3), 'p99', round((percentile_cont(0.99) WITHIN GROUP (ORDER BY ms))::numeric, 3), 'max', round(max(ms)::numeric, 3) FROM (SELECT (extract(epoch FROM j.started_at) * 1000000 - p.us) / 1000.0 AS ms FROM tq.jobs j JOIN pushed p ON p.id = j.id) x" | grep throughput
if [ -n "${TQ_BENCH_STATEMENTS:-}" ]; then   # needs TQ_BENCH_PG_OPTS="-c shared_preload_libraries=pg_stat_statements"
  psql -qAtX "$TQ_DATABASE_URL" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
  psql -X "$TQ_DATABASE_URL" -c "SELECT calls, round(total_exec_time) AS ms, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS query FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12"
  psql -X "$TQ_DATABASE_URL" -c "SELECT relname, n_tup_ins AS inserted, n_tup_upd AS updated, n_tup_hot_upd AS in_place FROM pg_stat_user_tables WHERE schemaname = 'tq' ORDER BY relname"
  psql -X "$TQ_DATABASE_URL" -c "SELECT wal_records, pg_size_pretty(wal_bytes) AS wal, wal_fpi, wal_write, wal_sync FROM pg_stat_wal"
fi
