#!/usr/bin/env bash
# tests/bench/store_ceiling.sh [JOBS] [CONNS] [BATCH] [full|outcome|bare]
# What PostgreSQL alone can take of the workers' writes on this machine: a
# private PostgreSQL (fsync on), CONNS connections claiming and finishing
# JOBS one-step jobs through the worker's own store functions, no Redis and
# no worker (see store_ceiling.c). Run it beside throughput.sh: the fleet can
# only approach this figure. Needs a built tree (.build/release, or
# TQ_BENCH_STORE=path/to/bench_store).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
bench=${TQ_BENCH_STORE:-$top/.build/release/tests/bench_store}
[ -x "$bench" ] || { echo "store_ceiling: build first (cmake --build .build/release)" >&2; exit 1; }
. "$top/tests/bench/lib.sh"
dir=$(mktemp -d /tmp/tq-bench.XXXXXX)
chmod 755 "$dir"
trap 'bench_pg_stop "$dir"; rm -rf "$dir"' EXIT
bench_pg_start "$dir"   # sets pport
port=$pport
"$bench" "host=127.0.0.1 port=$port user=postgres dbname=tenantq" "${1:-40000}" "${2:-2}" "${3:-128}" "${4:-full}"
