#!/usr/bin/env bash
# tests/deploy/image.sh: build deploy/docker/Dockerfile and run the image
# against the suite's Redis and PostgreSQL (TQ_TEST_REDIS_URL, TQ_TEST_PG_DSN
# from deploy/local/test).
#   1. installs podman, buildah and mmdebstrap when missing (here, not in
#      deploy/local/lib.sh: only this test needs them);
#   2. makes the base images offline: no registry is reachable, so
#      `mmdebstrap --variant=minbase bookworm` (docs, man pages and locales
#      left out, as Debian's slim images do) is imported as both
#      docker.io/library/debian:bookworm-slim and debian:bookworm. The tarball
#      and the image store are kept in .tq-local/image/ between runs;
#   3. builds the image with podman (vfs storage, chroot isolation,
#      --pull=never) and checks its configuration: numeric non-root user,
#      exec-form ENTRYPOINT tq-worker, OCI labels, no compiler inside;
#   4. with `buildah from` + `buildah run --isolation=chroot` (host network)
#      runs the image's tq-enqueue migrate, submit and status and the image's
#      worker in a database of its own; the tenant must become active (its
#      role, schema and Redis ACL user exist), /healthz and /readyz answer;
#   5. sends SIGTERM to the worker and checks that it exits 0;
#   6. prints the image's size and its runtime layers' sizes, and how long
#      the build took.
# Exit 77 (skipped) when not root, when the tools cannot be installed, or
# without the test services. Bounded: TQ_IMAGE_TIMEOUT (default 1500 s)
# for the build, 180 s for the tenant.
set -euo pipefail
HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd -- "$HERE/../.." && pwd)
STATE=${TQ_IMAGE_STATE:-$REPO/.tq-local/image}
IMAGE=localhost/tenantq:test
BUILD_TIMEOUT=${TQ_IMAGE_TIMEOUT:-1500}

say() { echo "image: $*"; }
skip77() { echo "skip - $*"; exit 77; }
PASS=0 FAIL=0
ok()   { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad()  { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
finish() {
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" -eq 0 ]
  exit $?
}
die() { bad "$*"; finish; }

[ "$(id -u)" -eq 0 ] || skip77 "not root: podman/buildah with chroot isolation need root here"
if [ -z "${TQ_TEST_REDIS_URL:-}" ] || [ -z "${TQ_TEST_PG_DSN:-}" ]; then
  [ -n "${TQ_TEST_REQUIRE_SERVICES:-}" ] && { echo "FAIL - TQ_TEST_REDIS_URL and TQ_TEST_PG_DSN must be set"; exit 1; }
  skip77 "TQ_TEST_REDIS_URL / TQ_TEST_PG_DSN not set (run through deploy/local/test)"
fi
need=()
for t in podman buildah mmdebstrap; do command -v "$t" > /dev/null || need+=("$t"); done
if [ "${#need[@]}" -gt 0 ]; then
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q -o DPkg::Lock::Timeout=600 "${need[@]}"; } > /dev/null 2>&1 \
    || skip77 "cannot install ${need[*]}"
fi

mkdir -p "$STATE"
T=$(mktemp -d "${TMPDIR:-/tmp}/tq-image.XXXXXX")
ST=(--storage-driver=vfs --root "$STATE/storage" --runroot "$STATE/run")
podman() { command podman "${ST[@]}" "$@"; }
buildah() { command buildah "${ST[@]}" "$@"; }
CTR="" WPID="" DB="" TENANT=""
QUEUE="image$$"
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  if [ -n "$WPID" ]; then kill "$WPID" 2> /dev/null || true; wait "$WPID" 2> /dev/null || true; fi
  if [ -n "$CTR" ]; then buildah rm "$CTR" > /dev/null 2>&1 || true; fi
  if [ -n "$DB" ]; then
    psql -q "$TQ_TEST_PG_DSN" -c "DROP DATABASE IF EXISTS $DB" > /dev/null 2>&1 || true
    [ -n "$TENANT" ] && psql -q "$TQ_TEST_PG_DSN" -c "DROP ROLE IF EXISTS tq_t_${TENANT//-/_}" > /dev/null 2>&1 || true
  fi
  if [ -n "$TENANT" ]; then redis-cli -u "$TQ_TEST_REDIS_URL" ACL DELUSER "tq_t_${TENANT//-/_}" > /dev/null 2>&1 || true; fi
  redis-cli -u "$TQ_TEST_REDIS_URL" --scan --pattern "tq:{$QUEUE}:*" 2> /dev/null \
    | while read -r k; do redis-cli -u "$TQ_TEST_REDIS_URL" DEL "$k" > /dev/null; done || true
  rm -rf "$T"
}
trap cleanup EXIT

# ------------------------------------------------------------------ 2. base images
SECONDS=0
if podman image exists docker.io/library/debian:bookworm-slim && podman image exists docker.io/library/debian:bookworm; then
  say "base images already in $STATE/storage"
else
  if [ ! -s "$STATE/bookworm-slim.tar" ]; then
    say "mmdebstrap bookworm (minbase, slim) into $STATE/bookworm-slim.tar"
    timeout 600 mmdebstrap --quiet --variant=minbase --format=tar \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
      bookworm "$STATE/bookworm-slim.tar.part" > "$T/mmdebstrap.log" 2>&1 \
      || die "mmdebstrap: $(tail -20 "$T/mmdebstrap.log")"
    mv "$STATE/bookworm-slim.tar.part" "$STATE/bookworm-slim.tar"
  fi
  podman import -q "$STATE/bookworm-slim.tar" docker.io/library/debian:bookworm-slim > /dev/null \
    || die "podman import of the base image failed"
  podman tag docker.io/library/debian:bookworm-slim docker.io/library/debian:bookworm
fi
ok "base images debian:bookworm and debian:bookworm-slim made offline (${SECONDS}s)"

# ------------------------------------------------------------------ 3. build
SECONDS=0
rev=$(git -C "$REPO" rev-parse HEAD 2> /dev/null || echo unknown)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# What the build stage compiles, hashed: podman reuses a cached RUN step
# unless its text or build args change.
source_id=$(cd "$REPO" && find CMakeLists.txt common worker enqueue tests -type f -print0 | LC_ALL=C sort -z \
  | xargs -0 sha256sum | sha256sum | cut -c1-16)
# podman's layer cache keys a LABEL step by its text, not by the build args
# it expands (Docker's does): the same labels as --label, applied on top.
if nice -n 10 timeout "$BUILD_TIMEOUT" podman "${ST[@]}" build --isolation=chroot --pull=never \
     --ignorefile "$REPO/deploy/docker/Dockerfile.dockerignore" -f "$REPO/deploy/docker/Dockerfile" \
     --build-arg REVISION="$rev" --build-arg CREATED="$created" --build-arg SOURCE_ID="$source_id" \
     --label org.opencontainers.image.revision="$rev" --label org.opencontainers.image.created="$created" \
     -t "$IMAGE" "$REPO" > "$T/build.log" 2>&1; then
  ok "podman build deploy/docker/Dockerfile (${SECONDS}s)"
else
  die "podman build (rc $?, ${SECONDS}s): $(tail -40 "$T/build.log")"
fi
build_s=$SECONDS
# Dangling build stages of earlier runs would fill the disk (vfs copies every layer).
podman image prune -f > /dev/null 2>&1 || true

cfg() { podman image inspect "$IMAGE" --format "$1"; }
user=$(cfg '{{.Config.User}}')
if [[ $user =~ ^[1-9][0-9]*(:[0-9]+)?$ ]]; then ok "USER is numeric and not root ($user)"; else bad "USER is '$user'"; fi
ep=$(cfg '{{json .Config.Entrypoint}}')
if [ "$ep" = '["/usr/local/bin/tq-worker"]' ]; then ok "ENTRYPOINT execs tq-worker as PID 1 ($ep)"; else bad "ENTRYPOINT is $ep"; fi
labels=$(cfg '{{json .Config.Labels}}')
for l in title description version revision created licenses base.name; do
  printf '%s' "$labels" | grep -q "\"org.opencontainers.image.$l\"" || bad "OCI label org.opencontainers.image.$l missing"
done
if printf '%s' "$labels" | grep -qF "\"org.opencontainers.image.revision\":\"$rev\""; then
  ok "OCI labels title, description, version, revision ($rev), created, licenses, base.name"
  if printf '%s' "$labels" | grep -qF '"org.opencontainers.image.base.name":"docker.io/library/debian:bookworm-slim"'; then
    ok "base.name label is docker.io/library/debian:bookworm-slim"
  else
    bad "base.name label: $labels"
  fi
else
  bad "OCI revision label is not $rev: $labels"
fi

CTR=$(buildah from --pull=never "$IMAGE")
mnt=$(buildah mount "$CTR")
extra=""
for f in usr/bin/gcc usr/bin/cc usr/bin/cmake usr/include/hiredis usr/include/postgresql; do
  [ -e "$mnt/$f" ] && extra="$extra /$f"
done
if [ -z "$extra" ]; then ok "no compiler, cmake or headers in the runtime image"; else bad "in the runtime image:$extra"; fi
differ=""
for f in "$REPO"/deploy/pipelines/*.json; do
  cmp -s "$mnt/usr/share/tenantq/pipelines/$(basename "$f")" "$f" || differ="$differ $(basename "$f")"
done
if [ -z "$differ" ]; then ok "deploy/pipelines/*.json at /usr/share/tenantq/pipelines"; else bad "pipelines missing or different:$differ"; fi
buildah umount "$CTR" > /dev/null

# ------------------------------------------------------------------ 4. run
run() { # run [buildah run options...] -- CMD...: inside the image, as its user, host network
  command buildah "${ST[@]}" run --isolation=chroot "${ENVS[@]}" "$CTR" "$@"
}
DB="tq_image_$$_$RANDOM"
TENANT="img-$$"
http_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# As in production: migrate as tq_migrate (owner of the database), the worker
# as tq_worker, submit and status as tq_cli, each with its own Redis user
# (deploy/local/test exports their DSNs). Without them (an older runner),
# the superuser, explicitly allowed.
if [ -n "${TQ_TEST_PG_WORKER_DSN:-}" ] && [ -n "${TQ_TEST_PG_MIGRATE_DSN:-}" ] && [ -n "${TQ_TEST_PG_CLI_DSN:-}" ]; then
  owner=tq_migrate
  MIG_DB="$TQ_TEST_PG_MIGRATE_DSN dbname=$DB" WRK_DB="$TQ_TEST_PG_WORKER_DSN dbname=$DB" CLI_DB="$TQ_TEST_PG_CLI_DSN dbname=$DB"
  WRK_REDIS=${TQ_TEST_REDIS_WORKER_URL:-$TQ_TEST_REDIS_URL} CLI_REDIS=${TQ_TEST_REDIS_CLI_URL:-$TQ_TEST_REDIS_URL}
  roles="tq_migrate / tq_worker / tq_cli"
else
  owner=postgres
  MIG_DB="${TQ_TEST_PG_DSN%/*}/$DB" WRK_DB=$MIG_DB CLI_DB=$MIG_DB
  WRK_REDIS=$TQ_TEST_REDIS_URL CLI_REDIS=$TQ_TEST_REDIS_URL
  roles="the superuser (TQ_ALLOW_SUPERUSER=1)"
fi
psql -q -v ON_ERROR_STOP=1 "$TQ_TEST_PG_DSN" -c "CREATE DATABASE $DB OWNER $owner" > /dev/null || die "create database $DB"
# The tenant-secrets key as the Deployment has it: a read-only mounted file
# (TQ_SECRETS_KEY_FILE, lines KID:BASE64 of 32 bytes).
mkdir -p "$T/keys"
printf 'img1:%s\n' "$(head -c 32 /dev/urandom | base64 -w0)" > "$T/keys/secrets-key"
chmod 0444 "$T/keys/secrets-key"
COMMON=(--env "TQ_QUEUE=$QUEUE" --env "TQ_LOG_FORMAT=text")
[ "$owner" = postgres ] && COMMON+=(--env TQ_ALLOW_SUPERUSER=1)
MIG_ENV=("${COMMON[@]}" --env "TQ_DATABASE_URL=$MIG_DB")
CLI_ENV=("${COMMON[@]}" --env "TQ_DATABASE_URL=$CLI_DB" --env "TQ_REDIS_URL=$CLI_REDIS")
WRK_ENV=("${COMMON[@]}" --env "TQ_DATABASE_URL=$WRK_DB" --env "TQ_REDIS_URL=$WRK_REDIS"
  --env "TQ_TENANT_REDIS_URL=$WRK_REDIS" --env "TQ_HTTP_ADDR=127.0.0.1:$http_port"
  --env "TQ_SECRETS_KEY_FILE=/etc/tenantq/secrets/secrets-key" --volume "$T/keys:/etc/tenantq/secrets:ro"
  --env "TQ_CONCURRENCY=2" --env "TQ_GRACE_MS=5000")
ENVS=("${COMMON[@]}")

if run -- tq-enqueue --version > "$T/v.out" 2>&1 && run -- tq-worker --version >> "$T/v.out" 2>&1; then
  ok "both binaries start in the image: $(tr '\n' ' ' < "$T/v.out")"
else
  bad "binaries do not start: $(cat "$T/v.out")"
fi
uid=$(run -- /usr/bin/id -u 2> /dev/null || echo "?")
if [ "$uid" = 10001 ]; then ok "commands run as uid 10001"; else bad "commands run as uid $uid"; fi

ENVS=("${MIG_ENV[@]}")
if run -- tq-enqueue migrate > "$T/migrate.out" 2>&1; then
  ok "image's tq-enqueue migrate as $owner: $(cat "$T/migrate.out")"
else
  die "image's tq-enqueue migrate: $(cat "$T/migrate.out")"
fi
# Operators register the pipelines a fleet may run (enqueue/README.md), with
# the migration (admin) account: the CLI's account may only read them.
if run -- tq-enqueue pipeline register /usr/share/tenantq/pipelines/tenant-provision.json --default \
     --by image-test > "$T/register.out" 2>&1; then
  ok "image's tq-enqueue pipeline register of its own pipeline file"
else
  die "image's tq-enqueue pipeline register: $(cat "$T/register.out")"
fi
ENVS=("${CLI_ENV[@]}")
if run -- tq-enqueue submit --json --tenant-id "$TENANT" --name "Image smoke $$" --tier Silver \
     --region us-east-1 --budget 300000 --owner ops@example.com > "$T/submit.json" 2> "$T/submit.err"; then
  ok "image's tq-enqueue submit: $(cat "$T/submit.json")"
else
  die "image's tq-enqueue submit: $(cat "$T/submit.err")"
fi

# The worker: buildah's chroot runtime forks it; SIGTERM goes to the worker
# process itself (found among buildah's descendants by its name), as the
# kubelet's does to PID 1.
ENVS=("${WRK_ENV[@]}")
run -- /usr/local/bin/tq-worker > "$T/worker.log" 2>&1 &
WPID=$!
descendants() { local p; for p in $(cat /proc/"$1"/task/*/children 2> /dev/null); do echo "$p"; descendants "$p"; done; }
worker_pid=""
for _ in $(seq 1 100); do
  for p in $(descendants "$WPID"); do
    [ "$(cat /proc/"$p"/comm 2> /dev/null)" = tq-worker ] && worker_pid=$p
  done
  [ -n "$worker_pid" ] && break
  sleep 0.1
done
[ -n "$worker_pid" ] || die "no tq-worker process under buildah run: $(cat "$T/worker.log")"
wuid=$(awk '/^Uid:/ {print $2}' /proc/"$worker_pid"/status)
if [ "$wuid" = 10001 ]; then ok "the worker runs as uid 10001 (pid $worker_pid)"; else bad "the worker runs as uid $wuid"; fi

ENVS=("${CLI_ENV[@]}")
status=""
for _ in $(seq 1 180); do
  status=$(run -- tq-enqueue status --json "$TENANT" 2> /dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["tenants"][0]["status"])' 2> /dev/null || true)
  case $status in active|failed|rollback_failed|blocked|rejected|cancelled) break ;; esac
  kill -0 "$WPID" 2> /dev/null || break
  sleep 1
done
if [ "$status" = active ]; then
  ok "tenant $TENANT provisioned by the image's worker ($roles); image's tq-enqueue status says active"
else
  bad "tenant $TENANT status '$status'; worker log: $(tail -30 "$T/worker.log")"
fi
q() { psql -qtA "${TQ_TEST_PG_DSN%/*}/$DB" -c "$1"; }
if [ "$(q "SELECT count(*) FROM tq.secrets")" -ge 1 ] 2> /dev/null; then
  ok "the tenant's credentials are stored encrypted in PostgreSQL (tq.secrets), no file on the worker's disk"
else
  bad "no row in tq.secrets"
fi
ident=${TENANT//-/_}
if [ "$(q "SELECT status FROM tq.tenants WHERE tenant_id = '$TENANT'")" = active ] &&
   [ "$(q "SELECT count(*) FROM pg_namespace WHERE nspname = 't_$ident'")" = 1 ] &&
   [ "$(q "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'tq_t_$ident'")" = t ]; then
  ok "PostgreSQL: tenant row active, schema t_$ident, login role tq_t_$ident"
else
  bad "PostgreSQL rows of the tenant missing"
fi
if redis-cli -u "$TQ_TEST_REDIS_URL" ACL GETUSER "tq_t_$ident" 2> /dev/null | grep -q 'keys\|~t:'; then
  ok "Redis: ACL user tq_t_$ident exists"
else
  bad "Redis: no ACL user tq_t_$ident"
fi
for path in healthz readyz; do
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$http_port/$path" || true)
  if [ "$code" = 200 ]; then ok "/$path answers 200"; else bad "/$path answers $code"; fi
done

# ------------------------------------------------------------------ 5. SIGTERM
kill -TERM "$worker_pid"
rc=0
timeout 60 tail --pid="$worker_pid" -f /dev/null || bad "the worker did not exit within 60 s of SIGTERM"
wait "$WPID" || rc=$?
WPID=""
if [ "$rc" = 0 ]; then ok "SIGTERM: the worker drained and exited 0"; else bad "the worker exited $rc after SIGTERM: $(tail -20 "$T/worker.log")"; fi
if grep -qiE 'AddressSanitizer|runtime error' "$T/worker.log"; then bad "sanitizer report in the worker log"; fi

# ------------------------------------------------------------------ 6. sizes
size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
base=$(podman image inspect docker.io/library/debian:bookworm-slim --format '{{.Size}}')
say "image $IMAGE: $((size / 1000000)) MB; base debian:bookworm-slim (mmdebstrap minbase): $((base / 1000000)) MB; layers on top: $(((size - base) / 1000000)) MB"
podman history --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" | awk -F'\t' '$1 != "0 B" {print "image:   " $1 "\t" substr($2, 1, 90)}'
say "build took ${build_s}s"
finish
