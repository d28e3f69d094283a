#!/usr/bin/env bash
# tests/bench/footprint.sh [TENANTS] [CONCURRENCY]
# Memory and CPU of one tq-worker, idle and busy: the numbers the Kubernetes
# requests and limits (deploy/k8s/base/deployment.yaml) are sized from.
# Starts a private Redis and PostgreSQL (fsync on), then one worker with
# TQ_CONCURRENCY (default 8, as deploy/k8s) and prints:
#   idle: RSS and CPU over TQ_FOOTPRINT_IDLE_S seconds (default 30) with an
#         empty queue (heartbeats, BLMOVE wake-ups, chores);
#   busy: TENANTS (default 200) real provisioning jobs of
#         deploy/pipelines/tenant-provision.json (PostgreSQL role, schema,
#         RLS table, Redis ACL user, tier config, the checks; no stand-ins),
#         peak RSS (VmHWM), average CPU from first submit to last tenant
#         finished, and the busiest second.
# CPU is utime+stime of the worker from /proc/PID/stat. Needs the binaries
# (TQ_BIN_DIR, default .build/release/bin).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/tests/bench/lib.sh"
tenants=${1:-200}
conc=${2:-8}
idle_s=${TQ_FOOTPRINT_IDLE_S:-30}
bench_setup footprint tq-worker " or set TQ_BIN_DIR"
bench_trust_env   # a throwaway private trust cluster (lib.sh)
export TQ_TENANT_REDIS_URL=$TQ_REDIS_URL TQ_HTTP_ADDR="127.0.0.1:$(free_port)"
export TQ_LOG_FORMAT=json TQ_CONCURRENCY=$conc TQ_PIPELINE="$top/deploy/pipelines/tenant-provision.json"
"$bin/tq-enqueue" migrate >/dev/null
"$bin/tq-enqueue" pipeline register "$TQ_PIPELINE" --default >/dev/null

hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

"$bin/tq-worker" 2>"$dir/worker.log" &
wpid=$!; pids+=("$wpid")
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://$TQ_HTTP_ADDR/readyz" && break; sleep 0.1; done
sleep 2
t0=$(ticks "$wpid"); max_rss=0
for _ in $(seq 1 "$idle_s"); do
  r=$(rss_kb "$wpid"); [ "$r" -gt "$max_rss" ] && max_rss=$r
  sleep 1
done
t1=$(ticks "$wpid")
echo "footprint: idle ${idle_s}s, concurrency $conc: RSS $((max_rss / 1024)) MiB (max of 1 s samples), CPU $(awk -v t=$((t1 - t0)) -v hz="$hz" -v s="$idle_s" 'BEGIN{printf "%.2f", t / hz / s * 1000}') millicores ($((t1 - t0)) ticks of 1/${hz} s)"

awk -v n="$tenants" 'BEGIN { for (i = 0; i < n; i++) printf "{\"tenant_id\":\"fp%05d\",\"name\":\"Footprint %d\",\"tier\":\"%s\",\"region\":\"us-east-1\",\"budget\":%d,\"owner\":\"o@example.com\"}\n", i, i, (i % 3 == 0 ? "Gold" : (i % 3 == 1 ? "Silver" : "Bronze")), (i % 3 == 0 ? 800000 : (i % 3 == 1 ? 300000 : 100000)) }' > "$dir/tenants.jsonl"
s0=$(date +%s.%N); c0=$(ticks "$wpid"); peak=0; prev=$c0
"$bin/tq-enqueue" submit --file "$dir/tenants.jsonl" --batch footprint >/dev/null
while :; do
  sleep 1
  c=$(ticks "$wpid"); [ $((c - prev)) -gt "$peak" ] && peak=$((c - prev)); prev=$c
  left=$(psql -qtAX "$TQ_DATABASE_URL" -c "SELECT count(*) FROM tq.tenants WHERE status NOT IN ('active','failed','rollback_failed','blocked','rejected','cancelled')")
  [ "$left" = 0 ] && break
done
s1=$(date +%s.%N); c1=$(ticks "$wpid")
active=$(psql -qtAX "$TQ_DATABASE_URL" -c "SELECT count(*) FROM tq.tenants WHERE status = 'active'")
wall=$(awk -v a="$s0" -v b="$s1" 'BEGIN{printf "%.1f", b - a}')
echo "footprint: busy $tenants tenants ($active active) in ${wall}s: peak RSS (VmHWM) $(($(hwm_kb "$wpid") / 1024)) MiB, CPU average $(awk -v t=$((c1 - c0)) -v hz="$hz" -v s="$wall" 'BEGIN{printf "%.0f", t / hz / s * 1000}') millicores, busiest second $(awk -v t="$peak" -v hz="$hz" 'BEGIN{printf "%.0f", t / hz * 1000}') millicores"
kill -TERM "$wpid"; rc=0; wait "$wpid" || rc=$?; pids=()
echo "footprint: SIGTERM -> exit $rc"
