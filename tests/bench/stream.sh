#!/usr/bin/env bash
# tests/bench/stream.sh [REQUESTS] [LATENCY_REQUESTS]
# The portal's view of `tq-enqueue submit --stream`, on a private Redis and
# PostgreSQL (fsync on) on free loopback ports, one-step no-op pipeline:
#  1. REQUESTS requests written at once (no worker): requests/s from the
#     first line written to the last answer read;
#  2. one idle worker (8 slots), then LATENCY_REQUESTS requests one at a
#     time (write, read the answer, next): end-to-end latency from writing
#     the line to the job's claim (jobs.started_at, microseconds) and to its
#     first step's start (job_steps.started_at, the worker's clock in whole
#     milliseconds), p50 and p99; before that, idle workers with 256, 64
#     and 8 slots: RSS (VmRSS) and CPU (utime+stime over TQ_BENCH_IDLE_S,
#     default 3 s), from /proc;
#  3. a worker with 256 slots draining REQUESTS no-op jobs: its peak RSS
#     (VmHWM), that less the idle 256-slot RSS per slot (in-flight job), and
#     its CPU from start to the last job done.
# Prints `name value unit` lines. Needs a built tree (.build/release, or TQ_BIN_DIR).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/tests/bench/lib.sh"
n=${1:-5000}
lat_n=${2:-1000}
bench_setup stream tq-enqueue
export TQ_HTTP_ADDR="" TQ_LOG_FORMAT=text
bench_trust_env   # a throwaway private trust cluster (lib.sh)
"$bin/tq-enqueue" migrate >/dev/null
printf '{"name":"bench","steps":[{"name":"s1","kind":"noop"}]}\n' > "$dir/pipeline.json"
"$bin/tq-enqueue" pipeline register "$dir/pipeline.json" --default >/dev/null
gen() {   # gen PREFIX COUNT
  awk -v n="$2" -v p="$1" 'BEGIN { for (i = 0; i < n; i++) printf "{\"tenant_id\":\"%s%07d\",\"name\":\"%s %d\",\"tier\":\"Bronze\",\"region\":\"us-east-1\",\"budget\":1000,\"owner\":\"o@example.com\"}\n", p, i, p, i }'
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime
hz=$(getconf CLK_TCK)

# 1. throughput: everything written at once, answers read as they come
gen s "$n" > "$dir/stream.jsonl"
t0=${EPOCHREALTIME/./}
"$bin/tq-enqueue" submit --stream --batch stream < "$dir/stream.jsonl" > "$dir/answers"
t1=${EPOCHREALTIME/./}
ok=$(grep -c '"ok":true' "$dir/answers" || true)
[ "$ok" = "$n" ] || { echo "stream: $ok of $n answers ok" >&2; head -n 3 "$dir/answers" >&2; exit 1; }
echo "submit_stream_rps $(( n * 1000000 / (t1 - t0) )) requests/s"
redis-cli -p "$rport" del 'tq:{provision}:ready' >/dev/null   # not for the workers below
psql -qAtX "$TQ_DATABASE_URL" -c "UPDATE tq.jobs SET status = 'cancelled' WHERE batch_id = 'stream'" -c "VACUUM (ANALYZE)" >/dev/null

# 2. idle footprint at 256 and 64 slots (started, 2 s for the pool and the
#    connections, RSS and CPU over 3 s, stopped), then latency, one request at a
#    time, on an idle worker with 8 slots (its RSS and CPU measured the same way first)
idle_s=${TQ_BENCH_IDLE_S:-3}   # run --quick/--smoke: 1
for slots in 256 64 8; do
  TQ_CONCURRENCY=$slots "$bin/tq-worker" 2>"$dir/worker-idle-$slots.log" & wpid=$!; pids+=("$wpid")
  sleep $(( idle_s < 3 ? 1 : 2 ))   # the pool and the connections up
  c0=$(ticks "$wpid"); sleep "$idle_s"; c1=$(ticks "$wpid")
  echo "worker_rss_idle_${slots}_slots $(rss_kb "$wpid") kB"
  echo "worker_cpu_idle_${slots}_slots $(awk -v t=$((c1 - c0)) -v hz="$hz" -v s="$idle_s" 'BEGIN { printf "%.1f", t / hz / s * 1000 }') millicores"
  [ "$slots" = 256 ] && idle256=$(rss_kb "$wpid")
  [ "$slots" = 8 ] && break   # this one stays for the latency run
  kill -TERM "$wpid"; wait "$wpid" 2>/dev/null || true
done
gen l "$lat_n" > "$dir/lat.jsonl"
coproc S { "$bin/tq-enqueue" submit --stream --batch latency 2>"$dir/stream.err"; }
spid=$S_PID; pids+=("$spid")
: > "$dir/sent"
while IFS= read -r line; do
  sleep 0.005   # a portal's requests arrive apart: the worker is idle each time
  t=${EPOCHREALTIME/./}
  printf '%s\n' "$line" >&"${S[1]}"
  read -r ans <&"${S[0]}"
  id=${ans#*\"job_id\":}; id=${id%%,*}
  echo "$id $t" >> "$dir/sent"
done < "$dir/lat.jsonl"
eval "exec ${S[1]}>&-"   # our end of its stdin: the stream ends
wait "$spid" 2>/dev/null || true
until [ "$(psql -qAtX "$TQ_DATABASE_URL" -c "SELECT count(*) FROM tq.jobs WHERE batch_id = 'latency' AND status = 'succeeded'")" -ge "$lat_n" ]; do sleep 0.2; done
psql -qAtX "$TQ_DATABASE_URL" -F ' ' -c "CREATE TEMP TABLE sent (id bigint, us bigint)" \
  -c "\\copy sent FROM '$dir/sent' WITH (DELIMITER ' ')" \
  -c "SELECT 'e2e_stream_to_claim_p50', round((percentile_cont(0.5) WITHIN GROUP (ORDER BY c))::numeric, 3), 'ms',
             'e2e_stream_to_claim_p99', round((percentile_cont(0.99) WITHIN GROUP (ORDER BY c))::numeric, 3), 'ms',
             'e2e_stream_to_step_p50', round((percentile_cont(0.5) WITHIN GROUP (ORDER BY s))::numeric, 3), 'ms',
             'e2e_stream_to_step_p99', round((percentile_cont(0.99) WITHIN GROUP (ORDER BY s))::numeric, 3), 'ms'
      FROM (SELECT (extract(epoch FROM j.started_at) * 1000000 - p.us) / 1000.0 AS c,
                   (extract(epoch FROM st.started_at) * 1000000 - p.us) / 1000.0 AS s
            FROM sent p JOIN tq.jobs j ON j.id = p.id JOIN tq.job_steps st ON st.job_id = j.id) x" \
  | tail -n 1 | awk '{ for (i = 1; i <= NF; i += 3) print $i, $(i+1), $(i+2) }'
kill -TERM "$wpid"; wait "$wpid" 2>/dev/null || true

# 3. busy: 256 slots draining no-op jobs; the largest RSS seen
gen b "$n" > "$dir/busy.jsonl"
split -l 10000 -d -a 3 --additional-suffix=.jsonl "$dir/busy.jsonl" "$dir/busy-part-"
for f in "$dir"/busy-part-*.jsonl; do "$bin/tq-enqueue" submit --file "$f" --batch "busy-$(basename "$f" .jsonl)" >/dev/null; done
t0=${EPOCHREALTIME/./}
TQ_CONCURRENCY=256 "$bin/tq-worker" 2>"$dir/worker-busy.log" & wpid=$!; pids+=("$wpid")
coproc POLL { psql -qAtX "$TQ_DATABASE_URL"; }   # one session answers the polls
poll_pid=$POLL_PID
while :; do
  echo "SELECT count(*) FROM tq.jobs WHERE batch_id LIKE 'busy-%' AND status <> 'succeeded';" >&"${POLL[1]}"
  read -r left <&"${POLL[0]}"
  [ "$left" = 0 ] && break
  sleep 0.1
done
c=$(ticks "$wpid"); t1=${EPOCHREALTIME/./}; max=$(hwm_kb "$wpid")
exec {POLL[1]}>&-
wait "$poll_pid" 2>/dev/null || true
echo "worker_rss_busy_256_slots $max kB"
echo "worker_rss_per_job_busy_256_slots $(awk -v b="$max" -v i="$idle256" 'BEGIN { printf "%.1f", (b - i) / 256 }') kB"
echo "worker_cpu_busy_256_slots $(awk -v t="$c" -v hz="$hz" -v us=$((t1 - t0)) 'BEGIN { printf "%.0f", t / hz / (us / 1e6) * 1000 }') millicores"
