#!/usr/bin/env bash
# tests/stubs/test_saas_stub.sh: start saas_stub.py on a free loopback port
# with a bearer token and check every API, the idempotency rules, auth, the
# webhook and the admin endpoints with curl.
# Prints one line per check and "N passed, N failed"; exits 1 on any failure.
#   PYTHON=/usr/bin/python3 tests/stubs/test_saas_stub.sh
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-python3}
T=$(mktemp -d "${TMPDIR:-/tmp}/tq-saastest.XXXXXX")
TOKEN='test-token-9f3c'
PASS=0
FAIL=0
SRV_PID=""

cleanup() {
  if [ -n "$SRV_PID" ]; then kill "$SRV_PID" 2>/dev/null || true; wait "$SRV_PID" 2>/dev/null || true; fi
  rm -rf "$T"
}
trap cleanup EXIT

ok()   { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad()  { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
check() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1 (expected '$2', got '$3')"; fi; }
has()   { if grep -qF -- "$3" "$2"; then ok "$1"; else bad "$1 ('$3' not in: $(head -c 300 "$2"))"; fi; }
hasnt() { if grep -qF -- "$3" "$2"; then bad "$1 ('$3' found)"; else ok "$1"; fi; }
json()  { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

# api METHOD PATH [JSON-BODY] [curl args...]: bearer token, body -> $T/body,
# headers -> $T/hdr, prints the status
api() {
  local method=$1 path=$2 data=${3-}
  shift 2; [ $# -gt 0 ] && shift
  local args=(-X "$method" -H "Authorization: Bearer $TOKEN")
  [ -n "$data" ] && args+=(-H "Content-Type: application/json" --data-binary "$data")
  curl -sS -o "$T/body" -D "$T/hdr" -w '%{http_code}' "${args[@]}" "$@" "$BASE$path"
}
admin() { # admin METHOD PATH [JSON-BODY]
  local args=(-X "$1")
  [ -n "${3-}" ] && args+=(-H "Content-Type: application/json" --data-binary "$3")
  curl -sS -o "$T/admin" -w '%{http_code}' "${args[@]}" "$BASE$2"
}

"$PY" "$HERE/saas_stub.py" --port 0 --port-file "$T/port" --token "$TOKEN" --lifetime 300 > "$T/out" 2> "$T/log" &
SRV_PID=$!
for _ in $(seq 1 100); do [ -s "$T/out" ] && break; sleep 0.05; done
PORT=$(sed -n '1s/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$T/out")
BASE="http://127.0.0.1:$PORT"
if [ -n "$PORT" ] && [ "$(tr -d '\n' < "$T/port")" = "$PORT" ]; then
  ok "first stdout line 'listening on 127.0.0.1:$PORT', same port in --port-file"
else
  bad "server did not announce its port (stdout: $(cat "$T/out"); log: $(tail -5 "$T/log"))"
  echo "$PASS passed, $FAIL failed"
  exit 1
fi
check "admin health" 200 "$(admin GET /_admin/health)"

# ------------------------------------------------------------ auth
check "no bearer token" 401 "$(curl -sS -o "$T/body" -w '%{http_code}' "$BASE/v1/namespaces/acme")"
check "wrong bearer token" 401 "$(curl -sS -o "$T/body" -w '%{http_code}' -H 'Authorization: Bearer nope' "$BASE/v1/namespaces/acme")"
has "  ... error unauthorized" "$T/body" '"error": "unauthorized"'

# ------------------------------------------------------------ vector namespaces
NS='{"replicas": 3, "dimension": 3, "tags": {"TenantID": "acme-corp", "Tier": "Gold"}}'
NS_REORDERED='{"tags": {"Tier": "Gold", "TenantID": "acme-corp"}, "dimension": 3, "replicas": 3}'
check "GET missing namespace" 404 "$(api GET /v1/namespaces/acme-corp)"
check "PUT namespace (Idempotency-Key k1)" 201 "$(api PUT /v1/namespaces/acme-corp "$NS" -H 'Idempotency-Key: job1/vector')"
cp "$T/body" "$T/first"
check "same key, same body (keys reordered): replayed" 201 "$(api PUT /v1/namespaces/acme-corp "$NS_REORDERED" -H 'Idempotency-Key: job1/vector')"
check "  ... same response body" "$(cat "$T/first")" "$(cat "$T/body")"
has "  ... Idempotent-Replayed header" "$T/hdr" "Idempotent-Replayed: true"
check "same key, different body" 422 "$(api PUT /v1/namespaces/acme-corp '{"replicas": 1}' -H 'Idempotency-Key: job1/vector')"
has "  ... idempotency_key_reused" "$T/body" "idempotency_key_reused"
check "new key, same config: exists, 200" 200 "$(api PUT /v1/namespaces/acme-corp "$NS" -H 'Idempotency-Key: job2/vector')"
check "no key, other config: 409" 409 "$(api PUT /v1/namespaces/acme-corp '{"replicas": 2}')"
check "bad replicas" 400 "$(api PUT /v1/namespaces/bad-ns '{"replicas": 0}')"
check "GET namespace" 200 "$(api GET /v1/namespaces/acme-corp)"
check "  ... replicas" 3 "$(json "$T/body" "d['config']['replicas']")"
check "  ... tags kept" Gold "$(json "$T/body" "d['config']['tags']['Tier']")"
check "insert vectors" 200 "$(api POST /v1/namespaces/acme-corp/vectors '{"vectors": [{"id": "a", "values": [1, 0, 0], "metadata": {"doc": "x"}}, {"id": "b", "values": [0, 1, 0]}, {"id": "c", "values": [0.9, 0.1, 0]}]}')"
check "  ... upserted 3" 3 "$(json "$T/body" "d['upserted']")"
check "wrong dimension" 400 "$(api POST /v1/namespaces/acme-corp/vectors '{"vectors": [{"id": "z", "values": [1, 0]}]}')"
check "query" 200 "$(api POST /v1/namespaces/acme-corp/query '{"vector": [1, 0, 0], "top_k": 2}')"
check "  ... nearest first" "['a', 'c']" "$(json "$T/body" "[m['id'] for m in d['matches']]")"
check "query of a missing namespace" 404 "$(api POST /v1/namespaces/nobody/query '{"vector": [1, 0, 0]}')"

# ------------------------------------------------------------ latency and faults
check "admin latency 300 ms on query" 200 "$(admin POST "/_admin/latency?path=/v1/namespaces/acme-corp/query&ms=300")"
MS=$(curl -sS -o /dev/null -w '%{time_total}' -X POST -H "Authorization: Bearer $TOKEN" --data-binary '{"vector":[1,0,0]}' "$BASE/v1/namespaces/acme-corp/query")
if "$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= 0.3 else 1)' "$MS"; then ok "  ... query took >= 300 ms (${MS}s)"; else bad "  ... query took ${MS}s"; fi
check "admin latency cleared" 200 "$(admin POST "/_admin/latency?path=/v1/namespaces/acme-corp/query&ms=0")"
check "admin fail 2x 500 under /api/dashboards" 200 "$(admin POST "/_admin/fail?path=/api/dashboards&status=500&count=2")"
DASH='{"title": "acme-corp", "tags": ["TenantID:acme-corp", "Tier:Gold"]}'
check "  ... PUT dashboard fails (1)" 500 "$(api PUT /api/dashboards/acme-corp "$DASH" -H 'Idempotency-Key: job1/dash')"
check "  ... PUT dashboard fails (2)" 500 "$(api PUT /api/dashboards/acme-corp "$DASH" -H 'Idempotency-Key: job1/dash')"
check "  ... retry with the same key creates it (5xx not stored)" 201 "$(api PUT /api/dashboards/acme-corp "$DASH" -H 'Idempotency-Key: job1/dash')"
check "admin fail 429 with Retry-After" 200 "$(admin POST "/_admin/fail?path=/api/&status=429&count=1&retry_after=2")"
check "  ... 429" 429 "$(api GET /api/dashboards/acme-corp)"
has "  ... Retry-After" "$T/hdr" "Retry-After: 2"

# ------------------------------------------------------------ dashboards
check "GET dashboard" 200 "$(api GET /api/dashboards/acme-corp)"
check "  ... version 1" 1 "$(json "$T/body" "d['version']")"
check "PUT other dashboard, no overwrite" 409 "$(api PUT /api/dashboards/acme-corp '{"title": "other"}')"
check "PUT other dashboard, ?overwrite=true" 200 "$(api PUT "/api/dashboards/acme-corp?overwrite=true" '{"title": "other"}')"
check "  ... version 2" 2 "$(json "$T/body" "d['version']")"
check "DELETE dashboard" 204 "$(api DELETE /api/dashboards/acme-corp)"
check "DELETE dashboard again" 404 "$(api DELETE /api/dashboards/acme-corp)"

# ------------------------------------------------------------ webhook
check "webhook without bearer token (Slack-style)" 200 "$(curl -sS -o "$T/body" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary '{"text": "tenant acme-corp active"}' "$BASE/hooks/T000/B000/XXXX")"
check "  ... answers ok" ok "$(cat "$T/body")"
check "webhook without text" 400 "$(curl -sS -o "$T/body" -w '%{http_code}' --data-binary '{"username": "x"}' "$BASE/hooks/T000/B000/XXXX")"
check "  ... no_text" no_text "$(cat "$T/body")"
check "webhook with invalid JSON" 400 "$(curl -sS -o "$T/body" -w '%{http_code}' --data-binary '{' "$BASE/hooks/x")"

# ------------------------------------------------------------ PagerDuty Events API v2
PD='{"routing_key": "R0UT1NGKEY", "event_action": "trigger", "dedup_key": "tenantq-7", "payload": {"summary": "rollback failed", "source": "acme-corp", "severity": "critical"}}'
check "PagerDuty enqueue without bearer token" 202 "$(curl -sS -o "$T/body" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "$PD" "$BASE/v2/enqueue")"
check "  ... success with the dedup_key" "success tenantq-7" "$(json "$T/body" "d['status'] + ' ' + d['dedup_key']")"
check "PagerDuty enqueue, bad severity and no routing_key" 400 "$(curl -sS -o "$T/body" -w '%{http_code}' --data-binary '{"event_action": "trigger", "payload": {"summary": "s", "source": "x", "severity": "loud"}}' "$BASE/v2/enqueue")"
check "  ... names both" "2" "$(json "$T/body" "len(d['errors'])")"

# ------------------------------------------------------------ admin state / set / delete
admin GET /_admin/state > /dev/null
check "state: the webhook message" "tenant acme-corp active" "$(json "$T/admin" "d['hooks'][0]['payload']['text']")"
check "state: the page, once" "1 tenantq-7" "$(json "$T/admin" "'%d %s' % (len(d['pages']), d['pages'][0]['event']['dedup_key'])")"
check "state: namespace vector ids" "['a', 'b', 'c']" "$(json "$T/admin" "d['namespaces']['acme-corp']['vector_ids']")"
check "state: idempotency key recorded" 201 "$(json "$T/admin" "d['idempotency_keys']['job1/vector']['status']")"
check "metrics: no token needed" 200 "$(curl -sS -o "$T/metrics" -w '%{http_code}' "$BASE/metrics")"
has "  ... the tenant's vector count" "$T/metrics" 'saas_namespace_vectors{tenant="acme-corp"} 3'
has "  ... the tenant's request counter" "$T/metrics" 'saas_namespace_requests_total{tenant="acme-corp"}'
check "query: the nearest vector first" a "$(api POST /v1/namespaces/acme-corp/query '{"vector": [1, 0, 0], "top_k": 3}' >/dev/null; json "$T/body" "d['matches'][0]['id']")"
check "quirk reverse_ranking" 200 "$(admin POST "/_admin/quirk?name=reverse_ranking")"
check "  ... the farthest vector first" False "$(api POST /v1/namespaces/acme-corp/query '{"vector": [1, 0, 0], "top_k": 3}' >/dev/null; json "$T/body" "d['matches'][0]['id'] == 'a'")"
check "  ... off again" 200 "$(admin POST "/_admin/quirk?name=reverse_ranking&on=0")"
check "unknown quirk" 400 "$(admin POST "/_admin/quirk?name=nope")"
check "delete vectors" 200 "$(api POST /v1/namespaces/acme-corp/vectors/delete '{"ids": ["c", "zz"]}')"
check "  ... only the ones there count" 1 "$(json "$T/body" "d['deleted']")"
check "delete vectors: ids must be strings" 400 "$(api POST /v1/namespaces/acme-corp/vectors/delete '{"ids": [1]}')"
check "admin set: drop the namespace's tags" 200 "$(admin POST "/_admin/set?path=/v1/namespaces/acme-corp" '{"replicas": 3, "dimension": 3}')"
api GET /v1/namespaces/acme-corp > /dev/null
check "  ... GET shows no tags" False "$(json "$T/body" "'tags' in d['config']")"
admin GET /_admin/requests > /dev/null
check "requests log: auth and key of the first PUT" "ok job1/vector" "$(json "$T/admin" "' '.join(str(r[k]) for r in d['requests'] if r['method']=='PUT' for k in ('auth','idempotency_key'))" | cut -d' ' -f1-2)"
check "DELETE namespace with a key" 204 "$(api DELETE /v1/namespaces/acme-corp "" -H 'Idempotency-Key: job1/vector/undo')"
check "  ... replayed DELETE still 204" 204 "$(api DELETE /v1/namespaces/acme-corp "" -H 'Idempotency-Key: job1/vector/undo')"
check "DELETE namespace again, no key" 404 "$(api DELETE /v1/namespaces/acme-corp)"
check "admin reset" 200 "$(admin POST /_admin/reset)"
admin GET /_admin/state > /dev/null
check "  ... empty" "0 0 0" "$(json "$T/admin" "'%d %d %d' % (len(d['namespaces']), len(d['dashboards']), len(d['hooks']))")"

PID_WAS=$SRV_PID
if kill -TERM "$SRV_PID" && wait "$SRV_PID"; then ok "SIGTERM stops the server (PID $PID_WAS), exit 0"; else bad "exit status after SIGTERM"; fi
SRV_PID=""
hasnt "log has no token" "$T/log" "$TOKEN"
has "log has one line per request" "$T/log" "PUT /v1/namespaces/acme-corp 201 auth=ok idem=yes"

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
