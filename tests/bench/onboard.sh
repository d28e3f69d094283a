#!/usr/bin/env bash
# tests/bench/onboard.sh [COUNTS] [WORKERS] [CONCURRENCY]
# Onboarding through the real default pipeline (deploy/pipelines/
# tenant-provision.json) with the stand-ins of tests/stubs (S3, vector DB,
# dashboards, webhook), on a private Redis and PostgreSQL (fsync on).
# COUNTS (default "10 100 1000") are batches submitted one after the other to
# the same fleet (so the database grows: 10, then 110, then 1,110 tenants);
# for each: seconds from submit to the last tenant active, and the
# per-tenant seconds of its first and last hundred activations (the first:
# from submit to the 100th active, / 100; the last: from the (n-100)th to the
# nth, / 100), so a cost that grows with the tenant count shows. Then the
# workers' footprint on that pipeline: idle RSS, peak RSS (VmHWM) and per
# in-flight job, CPU per worker. Prints `name value unit` lines. Needs a
# built tree (.build/release, or TQ_BIN_DIR).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/tests/bench/lib.sh"
counts=${1:-10 100 1000}
workers=${2:-2}
conc=${3:-16}
bench_setup onboard tq-worker
# stand-ins, with throwaway credentials passed by environment
ak="AKIA$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)"
sk=$(head -c 30 /dev/urandom | base64 | tr -d '/+=\n')
tok=$(head -c 24 /dev/urandom | base64 | tr -d '/+=\n')
S3_ACCESS_KEY=$ak S3_SECRET_KEY=$sk python3 "$top/tests/stubs/s3server.py" --port 0 \
  --port-file "$dir/s3.port" --quiet --lifetime 3600 >/dev/null 2>"$dir/s3.log" & pids+=($!)
SAAS_TOKEN=$tok python3 "$top/tests/stubs/saas_stub.py" --port 0 --port-file "$dir/saas.port" \
  --quiet --lifetime 3600 >/dev/null 2>"$dir/saas.log" & pids+=($!)
for i in $(seq 1 100); do [ -s "$dir/s3.port" ] && [ -s "$dir/saas.port" ] && break; sleep 0.1; done
[ -s "$dir/s3.port" ] && [ -s "$dir/saas.port" ] || { echo "onboard: the stand-ins did not start" >&2; exit 1; }
export TQ_HTTP_ADDR="" TQ_LOG_FORMAT=text
export TQ_TENANT_REDIS_URL=$TQ_REDIS_URL TQ_ENVIRONMENT=bench
s3_port=$(cat "$dir/s3.port"); saas_port=$(cat "$dir/saas.port")
export TQ_S3_ENDPOINT="http://127.0.0.1:$s3_port" TQ_S3_REGION=us-east-1
export TQ_S3_ACCESS_KEY=$ak TQ_S3_SECRET_KEY=$sk
export TQ_VECTOR_URL="http://127.0.0.1:$saas_port" TQ_DASHBOARD_URL="http://127.0.0.1:$saas_port"
export TQ_VECTOR_TOKEN=$tok TQ_DASHBOARD_TOKEN=$tok
export TQ_NOTIFY_WEBHOOK_URL="http://127.0.0.1:$saas_port/hooks/bench"
# the region map (TQ_REGIONS_FILE): the tenants' region on the stand-ins
printf '{"us-east-1": {"s3_region": "us-east-1", "s3_endpoint": "http://127.0.0.1:%s", "vector_url": "http://127.0.0.1:%s", "dashboard_url": "http://127.0.0.1:%s", "pg_url": null}}\n' \
  "$s3_port" "$saas_port" "$saas_port" > "$dir/regions.json"
export TQ_REGIONS_FILE="$dir/regions.json"
bench_trust_env   # a throwaway private trust cluster (lib.sh)
"$bin/tq-enqueue" migrate >/dev/null
"$bin/tq-enqueue" pipeline register "$top/deploy/pipelines/tenant-provision.json" --default >/dev/null
wpids=()
for i in $(seq 1 "$workers"); do
  TQ_CONCURRENCY=$conc "$bin/tq-worker" 2>"$dir/worker-$i.log" & pids+=($!); wpids+=($!)
done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime
kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
sleep 2
idle=$(kb "${wpids[0]}" VmRSS)
echo "worker_rss_idle_${conc}_slots $idle kB"
c0=0; for p in "${wpids[@]}"; do c0=$((c0 + $(ticks "$p"))); done
s0=${EPOCHREALTIME/./}
round=0
for n in $counts; do
  round=$((round + 1))
  awk -v n="$n" -v r="$round" 'BEGIN { printf "tenant_id,name,tier,region,budget,owner\n"; for (i = 0; i < n; i++) printf "o%d-%05d,Onboard %d %d,Bronze,us-east-1,100000,ops@example.com\n", r, i, r, i }' > "$dir/b$round.csv"
  t0=$(date +%s.%N)
  "$bin/tq-enqueue" submit --file "$dir/b$round.csv" --batch "onboard-$round" >/dev/null
  while :; do
    read -r act bad <<<"$(psql -qAtX "$TQ_DATABASE_URL" -F ' ' -c "SELECT count(*) FILTER (WHERE status = 'active'), count(*) FILTER (WHERE status IN ('failed','rollback_failed','blocked','rejected','cancelled')) FROM tq.tenants WHERE batch_id = 'onboard-$round'")"
    [ "$bad" = 0 ] || { echo "onboard: $bad tenant(s) of batch $round did not become active; last worker lines:" >&2; tail -n 5 "$dir/worker-1.log" >&2; exit 1; }
    [ "$act" -ge "$n" ] && break
    sleep 0.2
  done
  psql -qAtX "$TQ_DATABASE_URL" -F ' ' -c "
    WITH a AS (SELECT extract(epoch FROM activated_at) AS t, row_number() OVER (ORDER BY activated_at) AS k
               FROM tq.tenants WHERE batch_id = 'onboard-$round'),
         h AS (SELECT least(100, count(*)) AS h, count(*) AS n FROM a)
    SELECT 'onboard_${n}_total', round((max(t) - $t0)::numeric, 2), 's',
           'onboard_${n}_first_hundred_per_tenant', round(((SELECT t FROM a, h WHERE k = h.h) - $t0)::numeric / (SELECT h FROM h), 3), 's',
           'onboard_${n}_last_hundred_per_tenant', round(((SELECT max(t) FROM a) - coalesce((SELECT t FROM a, h WHERE k = h.n - h.h), $t0))::numeric / (SELECT h FROM h), 3), 's'
    FROM a" | awk '{ for (i = 1; i <= NF; i += 3) print $i, $(i+1), $(i+2) }'
done
# Footprint on the default pipeline: the larger peak RSS (VmHWM) of the
# workers, that less the idle RSS per slot (an in-flight job), and their
# CPU per worker from the first submit to the last tenant active.
hwm=0; c1=0
for p in "${wpids[@]}"; do
  h=$(kb "$p" VmHWM); [ "$h" -gt "$hwm" ] && hwm=$h
  c1=$((c1 + $(ticks "$p")))
done
s1=${EPOCHREALTIME/./}
echo "worker_rss_busy_${conc}_slots_pipeline $hwm kB"
echo "worker_rss_per_job_busy_${conc}_slots_pipeline $(awk -v b="$hwm" -v i="$idle" -v n="$conc" 'BEGIN { printf "%.1f", (b - i) / n }') kB"
echo "worker_cpu_busy_${conc}_slots_pipeline $(awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v us=$((s1 - s0)) -v w="$workers" 'BEGIN { printf "%.0f", t / hz / (us / 1e6) / w * 1000 }') millicores"
