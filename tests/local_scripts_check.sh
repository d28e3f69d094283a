#!/usr/bin/env bash
# tests/local_scripts_check.sh BIN_DIR: deploy/local/{up,env,down} as a new
# user meets them, in a state folder of its own (TQ_LOCAL_DIR) on free ports:
#   - `up` prints no secret (the stand-ins' keys and tokens);
#   - the stand-ins take free ports when the defaults are taken, and `env`
#     prints the ports actually in use (something answers there);
#   - `up` says how to reach the services;
#   - `down` names a worker started by hand against the services (its pid).
set -u
bindir=$(cd -- "$1" && pwd)
top=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok - $*"; }
bad() { fail=$((fail + 1)); echo "not ok - $*"; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { local p=$1; while ! port_free "$p"; do p=$((p + 1)); done; echo "$p"; }

state=$(mktemp -d /tmp/tq-localcheck-XXXXXX)
chmod 755 "$state"
export TQ_LOCAL_DIR=$state TQ_SKIP_INSTALL=1 TQ_SKIP_BUILD=1 TQ_BIN_DIR=$bindir
export TQ_LOCAL_REDIS_PORT TQ_LOCAL_PG_PORT
TQ_LOCAL_REDIS_PORT=$(free_port 26390)
TQ_LOCAL_PG_PORT=$(free_port 25440)
unset TQ_LOCAL_S3_PORT TQ_LOCAL_SAAS_PORT TQ_LOCAL_PROMETHEUS_PORT
blocker='' worker=''
cleanup() {
  [ -z "$worker" ] || kill -TERM "$worker" 2>/dev/null
  [ -z "$blocker" ] || kill "$blocker" 2>/dev/null
  "$top/deploy/local/down" --purge >/dev/null 2>&1
  rm -rf -- "$state"
}
trap cleanup EXIT

# take the default S3 port if it is free, so up must pick another
if port_free 9390; then
  python3 -c 'import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 9390)); s.listen(1); time.sleep(600)' &
  blocker=$!
  for _ in $(seq 50); do port_free 9390 || break; sleep 0.1; done
fi

out=$("$top/deploy/local/up" 2>&1) || { echo "$out" | tail -n 20; bad "up failed"; echo "$pass passed, $fail failed"; exit 1; }
ok "up"
cred="$state/demo/stub-credentials"
leaked=0
while read -r secret; do
  [ -n "$secret" ] && grep -qF -- "$secret" <<<"$out" && leaked=1
done <"$cred"
if [ "$leaked" = 0 ]; then ok "up prints no secret"; else bad "up printed a secret"; fi
if grep -q 'eval "$(deploy/local/env)"' <<<"$out"; then ok "up says how to reach the services"; else bad "up does not say how to reach them"; fi

envout=$("$top/deploy/local/env") || bad "env failed"
s3=$(sed -n 's/^export TQ_S3_ENDPOINT=http:\/\/127.0.0.1:\([0-9]*\)$/\1/p' <<<"$envout")
saas=$(sed -n 's/^export TQ_VECTOR_URL=http:\/\/127.0.0.1:\([0-9]*\)$/\1/p' <<<"$envout")
if [ -n "$s3" ] && [ "$s3" != 9390 ]; then ok "S3 stand-in moved off the taken port 9390 (to $s3)"; else bad "S3 port '$s3'"; fi
if [ -n "$saas" ] && [ "$saas" != "$s3" ]; then ok "SaaS stand-in on its own port $saas"; else bad "SaaS port '$saas'"; fi
if curl -s -o /dev/null "http://127.0.0.1:$s3/"; then ok "env's TQ_S3_ENDPOINT answers"; else bad "nothing on env's S3 port $s3"; fi
if curl -s -o /dev/null "http://127.0.0.1:$saas/"; then ok "env's SaaS URL answers"; else bad "nothing on env's SaaS port $saas"; fi

# a worker started by hand, as a user would: under the worker's account
envworker=$("$top/deploy/local/env" worker) || bad "env worker failed"
(eval "$envworker"; export TQ_HTTP_ADDR=""; exec "$bindir/tq-worker") >"$state/hand-worker.log" 2>&1 &
worker=$!
# (the scripts' own admin account reads the worker set: the default user is off)
# shellcheck source=../deploy/local/lib.sh
workers() { (. "$top/deploy/local/lib.sh"; tq_redis_admin demo "$TQ_LOCAL_REDIS_PORT" scard 'tq:{provision}:workers' 2>/dev/null); }
for _ in $(seq 100); do
  [ "$(workers)" = 1 ] && break
  sleep 0.1
done
downout=$("$top/deploy/local/down" 2>&1)
if grep -q "pid $worker" <<<"$downout"; then ok "down names the hand-started worker (pid $worker)"; else bad "down said nothing of pid $worker: $downout"; fi
kill -TERM "$worker" 2>/dev/null; wait "$worker" 2>/dev/null; worker=''
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
