#!/usr/bin/env bash
# tests/deploy/k8s.sh [TQ_ENQUEUE_BIN]: offline checks of deploy/k8s.
#   1. both overlays render with `kubectl kustomize` (plus base + each
#      component on its own, so a component that breaks only alone shows);
#   2. yamllint passes on the sources and on the rendered output;
#   3. every rendered object validates against the Kubernetes schemas (npm
#      kubernetes-models) and, for KEDA and the Prometheus Operator, against
#      the CRD models and our schemas in tests/deploy/schemas/ (npm packages
#      installed on first use into .tq-local/deploy-check/npm; skipped when
#      the npm registry is unreachable);
#   4. policy tests (k8s_policy.py): probes, limits, non-root, no :latest,
#      grace > drain, secrets, network, one autoscaler, and the KEDA listName
#      equal to the key the real tq-enqueue pushes to for the configured
#      queue (needs TQ_TEST_PG_DSN and TQ_TEST_REDIS_URL, as set by
#      deploy/local/test; skipped without them).
# Prints "N passed, N failed, N skipped"; exit 1 on a failure, 77 when
# kubectl is missing (nothing could be checked).
set -euo pipefail
HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd -- "$HERE/../.." && pwd)
K8S=$REPO/deploy/k8s
ENQUEUE=${1:-${TQ_ENQUEUE_BIN:-$REPO/.build/test/bin/tq-enqueue}}
STATE=${TQ_DEPLOY_STATE:-$REPO/.tq-local/deploy-check}
NPM_DIR=$STATE/npm
# Pinned: what the schemas were checked against.
NPM_PKGS=(kubernetes-models@5.1.0 @kubernetes-models/keda@2.0.0
  @kubernetes-models/prometheus-operator@6.0.0 ajv@8.20.0 yaml@2.9.1)

PASS=0 FAIL=0 SKIP=0
ok()   { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad()  { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
skip() { SKIP=$((SKIP + 1)); echo "skip - $*"; }
tally() {
  cat "$1"
  PASS=$((PASS + $(grep -c '^ok   - ' "$1" || true)))
  FAIL=$((FAIL + $(grep -c '^FAIL - ' "$1" || true)))
  SKIP=$((SKIP + $(grep -c '^skip - ' "$1" || true)))
}
finish() {
  echo "$PASS passed, $FAIL failed, $SKIP skipped"
  [ "$FAIL" -eq 0 ]
  exit $?
}

T=$(mktemp -d "${TMPDIR:-/tmp}/tq-k8s.XXXXXX")
DB="" KEY="" JOB=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  if [ -n "$KEY" ] && [ -n "$JOB" ]; then redis-cli -u "$TQ_TEST_REDIS_URL" LREM "$KEY" 0 "$JOB" > /dev/null 2>&1 || true; fi
  if [ -n "$DB" ]; then psql -q "$TQ_TEST_PG_DSN" -c "DROP DATABASE IF EXISTS $DB" > /dev/null 2>&1 || true; fi
  rm -rf "$T"
}
trap cleanup EXIT

# ------------------------------------------------------------------ 1. render
if ! command -v kubectl > /dev/null; then
  echo "skip - kubectl is not installed: nothing to render"
  exit 77
fi
render() { # render NAME DIR
  if kubectl kustomize "$2" > "$T/$1.yaml" 2> "$T/$1.err"; then
    ok "kubectl kustomize $(realpath --relative-to="$REPO" "$2") ($(grep -c '^kind:' "$T/$1.yaml") objects)"
  else
    bad "kubectl kustomize $2: $(cat "$T/$1.err")"
  fi
}
render local "$K8S/overlays/local"
render production "$K8S/overlays/production"
render base "$K8S/base"
for c in "$K8S"/components/*/; do
  c=$(basename "$c")
  mkdir -p "$T/with-$c"
  cp -r "$K8S" "$T/with-$c/k8s"
  printf 'resources:\n  - k8s/base\ncomponents:\n  - k8s/components/%s\n' "$c" > "$T/with-$c/kustomization.yaml"
  render "base+$c" "$T/with-$c"
done
[ -s "$T/local.yaml" ] && [ -s "$T/production.yaml" ] || finish

# ------------------------------------------------------------------ 2. yamllint
if command -v yamllint > /dev/null; then
  if yamllint -s -c "$HERE/yamllint.yaml" "$K8S" > "$T/lint.out" 2>&1; then
    ok "yamllint deploy/k8s"
  else
    bad "yamllint deploy/k8s: $(cat "$T/lint.out")"
  fi
  # The rendered ConfigMap holds the pipeline JSON verbatim: long lines there.
  sed '/^  line-length:/,/^    max:/d' "$HERE/yamllint.yaml" > "$T/yamllint-rendered.yaml"
  printf '  line-length: disable\n' >> "$T/yamllint-rendered.yaml"
  if yamllint -s -c "$T/yamllint-rendered.yaml" "$T/local.yaml" "$T/production.yaml" > "$T/lint2.out" 2>&1; then
    ok "yamllint of the rendered overlays"
  else
    bad "yamllint of the rendered overlays: $(cat "$T/lint2.out")"
  fi
else
  bad "yamllint is missing (apt-get install yamllint; deploy/local/lib.sh installs it)"
fi

# ------------------------------------------------------------------ 3. schemas
have_npm=0
if [ -f "$NPM_DIR/.installed" ] && [ "$(cat "$NPM_DIR/.installed")" = "${NPM_PKGS[*]}" ]; then
  have_npm=1
elif command -v npm > /dev/null; then
  mkdir -p "$NPM_DIR"
  if timeout 300 npm install --prefix "$NPM_DIR" --no-audit --no-fund --no-save --silent "${NPM_PKGS[@]}" > "$T/npm.out" 2>&1; then
    echo "${NPM_PKGS[*]}" > "$NPM_DIR/.installed"
    have_npm=1
  fi
fi
if [ "$have_npm" = 1 ]; then
  cp "$HERE/k8s_validate.mjs" "$NPM_DIR/"
  node "$NPM_DIR/k8s_validate.mjs" "$HERE/schemas" "$T/local.yaml" "$T/production.yaml" > "$T/validate.out" 2>&1 || true
  tally "$T/validate.out"
  grep -q '^ok' "$T/validate.out" || bad "schema validation printed no result: $(tail -20 "$T/validate.out")"
else
  skip "schema validation (npm registry unreachable or npm missing: ${NPM_PKGS[*]})"
fi

# ------------------------------------------------------------------ 4. policy
# The configured queue, from the rendered production ConfigMap; then the key
# the real tq-enqueue pushes a job to for it (never a copy of the format).
policy_args=()
if [ -n "${TQ_TEST_PG_DSN:-}" ] && [ -n "${TQ_TEST_REDIS_URL:-}" ] && [ -x "$ENQUEUE" ]; then
  eval "$(python3 - "$T/production.yaml" <<'PY'
import shlex, sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("tenantq-config-"):
        for k in ("TQ_QUEUE", "TQ_PREFIX"):
            print("export %s=%s" % (k, shlex.quote(d["data"].get(k, ""))))
PY
)"
  DB="tq_k8s_$$_$RANDOM"
  psql -q -v ON_ERROR_STOP=1 "$TQ_TEST_PG_DSN" -c "CREATE DATABASE $DB" > "$T/db.out" 2>&1 || bad "create database: $(cat "$T/db.out")"
  export TQ_DATABASE_URL="${TQ_TEST_PG_DSN%/*}/$DB" TQ_REDIS_URL="$TQ_TEST_REDIS_URL"
  PIPELINE_FILE="$REPO/deploy/pipelines/tenant-provision.json"
  redis-cli -u "$TQ_REDIS_URL" --scan > "$T/keys.before"
  if "$ENQUEUE" migrate > "$T/migrate.out" 2>&1 &&
     "$ENQUEUE" pipeline register "$PIPELINE_FILE" --default --by deploy-check >> "$T/migrate.out" 2>&1 &&
     "$ENQUEUE" submit --json --tenant-id k8s-listname --name "K8s listName probe" --tier Bronze \
       --region us-east-1 --budget 1000 --owner ops@example.com > "$T/submit.json" 2> "$T/submit.err"; then
    JOB=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"][0]["job_id"])' "$T/submit.json")
    redis-cli -u "$TQ_REDIS_URL" --scan > "$T/keys.after"
    while read -r k; do
      if [ "$(redis-cli -u "$TQ_REDIS_URL" TYPE "$k")" = list ] &&
         redis-cli -u "$TQ_REDIS_URL" LRANGE "$k" 0 -1 | grep -qx "$JOB"; then
        KEY=$k
      fi
    done < <(sort -u "$T/keys.before" "$T/keys.after")
    if [ -n "$KEY" ]; then
      ok "tq-enqueue submit (TQ_PREFIX=$TQ_PREFIX TQ_QUEUE=$TQ_QUEUE) pushed job $JOB to $KEY"
      policy_args=(--ready-key "$KEY")
    else
      bad "job $JOB is in no Redis list after submit"
    fi
  else
    bad "tq-enqueue migrate/submit: $(cat "$T/migrate.out" "$T/submit.err" "$T/submit.json" 2>/dev/null)"
  fi
fi
python3 "$HERE/k8s_policy.py" "$REPO" local="$T/local.yaml" production="$T/production.yaml" \
  "${policy_args[@]}" > "$T/policy.out" 2>&1 || true
tally "$T/policy.out"
grep -q '^policy: ' "$T/policy.out" || bad "policy tests did not finish: $(tail -20 "$T/policy.out")"
finish
