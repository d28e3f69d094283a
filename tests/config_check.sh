#!/usr/bin/env bash
# tests/config_check.sh BUILD_DIR: defaults and documentation of settings.
#   1. `cmake --install` puts both binaries in bin/ and the pipelines in
#      share/tenantq/pipelines/;
#   2. `tq-enqueue submit` run from another directory names the installed
#      default pipeline in its --help and gets as far as the database (exit 1
#      here; the pipeline is the operator's registered one, never a file);
#   3. `tq-worker --help` names every TQ_ variable the worker's sources
#      read, and README.md's worker settings are all in it.
set -u
build=$(cd -- "$1" && pwd)
top=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok - $*"; }
bad() { fail=$((fail + 1)); echo "not ok - $*"; }
tmp=$(mktemp -d /tmp/tq-install-XXXXXX)
trap 'rm -rf -- "$tmp"' EXIT

if cmake --install "$build" --prefix "$tmp/p" >"$tmp/install.log" 2>&1; then ok "cmake --install"; else bad "cmake --install: $(tail -n 3 "$tmp/install.log")"; fi
for f in bin/tq-worker bin/tq-enqueue share/tenantq/pipelines/tenant-provision.json \
         share/tenantq/pipelines/tenant-provision-terraform.json; do
  if [ -f "$tmp/p/$f" ]; then ok "installed $f"; else bad "not installed: $f"; fi
done

submit() {
  (cd / && env -u TQ_PIPELINE TQ_DATABASE_URL="host=127.0.0.1 port=1 dbname=none connect_timeout=2" \
    TQ_REDIS_URL=redis://127.0.0.1:1/0 "$1" submit --tenant-id install-check --name "Install Check" \
    --tier Bronze --region us-east-1 --budget 1000 --owner ops@example.com) >/dev/null 2>"$tmp/err"
}
# the installed binary names its own share/ as the default
if "$tmp/p/bin/tq-enqueue" submit --help | grep -qF "$tmp/p/share/tenantq/pipelines/tenant-provision.json"; then
  ok "installed tq-enqueue's default pipeline is under its prefix"
else bad "installed tq-enqueue's default: $("$tmp/p/bin/tq-enqueue" submit --help | grep -A1 TQ_PIPELINE)"; fi
for bin in "$tmp/p/bin/tq-enqueue" "$build/bin/tq-enqueue"; do
  rc=0; submit "$bin" || rc=$?
  if [ "$rc" = 1 ]; then ok "default pipeline found from / ($bin)"; else bad "$bin from /: exit $rc: $(cat "$tmp/err")"; fi
done

help=$("$build/bin/tq-worker" --help)
read_vars=$(grep -rhoE '(getenv|env_or|env_u32|env_[a-z0-9_]+)\("TQ_[A-Z0-9_]+"' "$top/worker" \
  | grep -oE 'TQ_[A-Z0-9_]+' | sort -u)
for v in $read_vars TQ_REDIS_URL TQ_DATABASE_URL TQ_QUEUE TQ_PREFIX TQ_CONCURRENCY TQ_HTTP_ADDR TQ_LEASE_MS TQ_LOG_FORMAT; do
  if grep -qw -- "$v" <<<"$help"; then ok "tq-worker --help names $v"; else bad "tq-worker reads $v but --help does not name it"; fi
done
readme_vars=$(sed -n '/^Worker configuration is by environment/,/^$/p' "$top/README.md" \
  | grep -oE 'TQ_[A-Z0-9_]+' | sort -u)
for v in $readme_vars; do
  if grep -qw -- "$v" <<<"$help"; then ok "README's $v is in tq-worker --help"; else bad "README names $v for the worker, --help does not"; fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
