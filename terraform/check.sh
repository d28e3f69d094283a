#!/usr/bin/env bash
# terraform/check.sh [--e2e]: check the Terraform in this folder without a
# cloud account or a network.
#
#  1. parse every .tf file with npm @cdktf/hcl2json (installed on first use
#     into ${TQ_NPM_CACHE:-~/.cache/tenantq-npm}, never into the repository);
#     a syntax error fails with file:line:col;
#  2. assert on the parsed JSON (python3, standard library): the five cost
#     tags on the bucket, archive days 90/60/30 by tier, validations on the
#     variables, encryption, versioning, public-access block, the provider's
#     custom-endpoint switch, the outputs;
#  3. when a `terraform` binary is on PATH: `terraform fmt -check`;
#  4. when also a local provider mirror holds hashicorp/aws
#     (TQ_TF_PLUGIN_DIR, default /opt/tf-plugins): init from it, validate,
#     plan one tenant of each tier and assert on `terraform show -json`
#     (planned tags, lifecycle days), and check that bad variables are
#     refused by their validations;
#  5. with --e2e (and 4's prerequisites): apply a tenant the way the worker's
#     exec step will, against tests/stubs/s3server.py, check the bucket's tags
#     and lifecycle in the stub, detect a removed tag as drift, re-apply,
#     destroy, and check that no bucket is left. Takes about 90 s, most of it
#     the AWS provider waiting for lifecycle consistency.
# Steps whose tools are missing are reported as skipped.
# Prints "N passed, N failed, N skipped"; exits 1 on any failure.
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname -- "$HERE")
PY=${PYTHON:-python3}
CACHE=${TQ_NPM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tenantq-npm}
HCL2JSON_VERSION=0.21.0
PLUGIN_DIR=${TQ_TF_PLUGIN_DIR:-/opt/tf-plugins}
E2E=0
case ${1-} in
  --e2e) E2E=1 ;;
  "") ;;
  *) echo "usage: terraform/check.sh [--e2e]" >&2; exit 2 ;;
esac

T=$(mktemp -d "${TMPDIR:-/tmp}/tq-tfcheck.XXXXXX")
S3_PID=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  if [ -n "$S3_PID" ]; then kill "$S3_PID" 2>/dev/null || true; wait "$S3_PID" 2>/dev/null || true; fi
  rm -rf "$T"
}
trap cleanup EXIT

PASS=0 FAIL=0 SKIP=0
ok()   { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad()  { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
skip() { SKIP=$((SKIP + 1)); echo "skip - $*"; }
finish() {
  echo "$PASS passed, $FAIL failed, $SKIP skipped"
  if [ "$FAIL" -eq 0 ]; then exit 0; else exit 1; fi
}
# count "ok   - " / "FAIL - " lines that a python block printed
tally() {
  local out=$1
  cat "$out"
  PASS=$((PASS + $(grep -c '^ok   - ' "$out" || true)))
  FAIL=$((FAIL + $(grep -c '^FAIL - ' "$out" || true)))
}

# ------------------------------------------------------------------ 1. parse
HCL2JSON="$CACHE/node_modules/@cdktf/hcl2json"
if [ ! -f "$HCL2JSON/package.json" ]; then
  if ! command -v npm > /dev/null; then
    bad "npm is needed to install @cdktf/hcl2json (apt-get install npm)"
    finish
  fi
  mkdir -p "$CACHE"
  echo "installing @cdktf/hcl2json@$HCL2JSON_VERSION into $CACHE" >&2
  npm install --prefix "$CACHE" --no-audit --no-fund --no-save --silent "@cdktf/hcl2json@$HCL2JSON_VERSION" >&2
fi

cat > "$T/parse.js" <<'EOF'
// node parse.js ROOT FILE... -> {"relative/path.tf": <parsed>} on stdout;
// syntax errors as "file:line:col: message" on stderr, exit 1.
const { parse } = require(process.env.HCL2JSON);
const fs = require("fs");
const path = require("path");
(async () => {
  const [root, ...files] = process.argv.slice(2);
  const out = {};
  let failed = false;
  for (const f of files) {
    const rel = path.relative(root, f);
    try {
      out[rel] = await parse(f, fs.readFileSync(f, "utf8"));
    } catch (e) {
      failed = true;
      const msg = String((e && e.message) || e);
      // hcl: "<file>:<line>,<col>-<line>,<col>: <summary>; <detail>"
      const m = msg.match(/([^\s\[]+\.tf):(\d+),(\d+)(?:-\d+(?:,\d+)?)?: ([^\]]*)/);
      console.error(m ? `${path.relative(root, m[1])}:${m[2]}:${m[3]}: ${m[4]}` : `${rel}: ${msg}`);
    }
  }
  process.stdout.write(JSON.stringify(out));
  process.exit(failed ? 1 : 0);
})();
EOF

mapfile -t TF_FILES < <(find "$HERE" -name '*.tf' -not -path '*/.terraform/*' | sort)
if [ "${#TF_FILES[@]}" -eq 0 ]; then
  bad "no .tf files under $HERE"
  finish
fi
if HCL2JSON="$HCL2JSON" node "$T/parse.js" "$HERE" "${TF_FILES[@]}" > "$T/parsed.json" 2> "$T/parse.err"; then
  ok "hcl2json parses all ${#TF_FILES[@]} .tf files"
else
  while IFS= read -r line; do bad "syntax: terraform/$line"; done < "$T/parse.err"
fi

# ------------------------------------------------------------------ 2. static asserts
"$PY" - "$T/parsed.json" > "$T/static.out" <<'EOF'
import json, re, sys

parsed = json.load(open(sys.argv[1]))
MOD = "modules/tenant/"
results = []


def check(desc, cond, detail=""):
    print(("ok   - " if cond else "FAIL - ") + desc + ("" if cond or not detail else " (%s)" % detail))


def merged(prefix):
    """Merge the parsed files of one module directory into one document."""
    out = {}
    for rel, doc in parsed.items():
        if rel.startswith(prefix) and "/" not in rel[len(prefix):]:
            for block, body in doc.items():
                if isinstance(body, dict):
                    for name, val in body.items():
                        out.setdefault(block, {}).setdefault(name, val)
                        if block in ("resource", "data") and isinstance(val, dict):
                            out[block][name] = {**out[block].get(name, {}), **val}
                else:
                    out.setdefault(block, []).extend(body if isinstance(body, list) else [body])
    return out


for f in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
    check("module file %s%s exists" % (MOD, f), MOD + f in parsed)
m = merged(MOD)

# versions
tf = (m.get("terraform") or [{}])[0]
rp = (tf.get("required_providers") or [{}])[0].get("aws", {})
check("versions.tf pins hashicorp/aws", rp.get("source") == "hashicorp/aws" and bool(rp.get("version")), rp)
check("versions.tf sets required_version", bool(tf.get("required_version")))

# variables and their validations
var = {k: v[0] for k, v in m.get("variable", {}).items()}
for name in ("tenant_id", "tier", "region", "environment", "cost_center", "s3_endpoint"):
    check("variable %s exists" % name, name in var)
    check("variable %s has a validation" % name, bool(var.get(name, {}).get("validation")))
cond = lambda n: " ".join(v.get("condition", "") for v in var.get(n, {}).get("validation", []))
check("tenant_id validated with ^[a-z][a-z0-9-]{2,39}$", "^[a-z][a-z0-9-]{2,39}$" in cond("tenant_id"), cond("tenant_id"))
rx = re.search(r'regex\("((?:[^"\\]|\\.)*)"', cond("tenant_id"))
if rx:
    r = re.compile(rx.group(1).encode().decode("unicode_escape"))
    good, badids = ["acme-corp", "abc", "a" + "b" * 39, "z9-"], ["ab", "Acme", "1abc", "a" * 41, "acme_corp", "-abc", ""]
    check("tenant_id regex accepts %s and refuses %s" % (good, badids),
          all(r.fullmatch(s) for s in good) and not any(r.fullmatch(s) for s in badids))
check("tier validated against Gold, Silver, Bronze",
      all('"%s"' % t in cond("tier") for t in ("Gold", "Silver", "Bronze")), cond("tier"))
check("cost_center defaults to null (derived from the tier)", "default" in var.get("cost_center", {})
      and var["cost_center"]["default"] is None)
check("s3_endpoint defaults to null (real AWS)", "default" in var.get("s3_endpoint", {})
      and var["s3_endpoint"]["default"] is None)
for name in ("tenant_id", "tier", "region", "environment"):
    check("variable %s is required (no default)" % name, "default" not in var.get(name, {}))

# locals
loc = {}
for block in m.get("locals", []):
    loc.update(block)
check("archive days by tier are Gold 90, Silver 60, Bronze 30",
      loc.get("archive_days") == {"Gold": 90, "Silver": 60, "Bronze": 30}, loc.get("archive_days"))
check("cost center derives rag-platform-<lower tier>",
      "rag-platform-${lower(var.tier)}" in str(loc.get("cost_center")) and "var.cost_center" in str(loc.get("cost_center")),
      loc.get("cost_center"))
want_tags = {"TenantID": "${var.tenant_id}", "Tier": "${var.tier}", "CostCenter": "${local.cost_center}",
             "ManagedBy": "tenantq", "Environment": "${var.environment}"}
check("local.tags are exactly the five cost tags", loc.get("tags") == want_tags, loc.get("tags"))

# resources
res = {t: {n: v[0] for n, v in names.items()} for t, names in m.get("resource", {}).items()}
bucket = res.get("aws_s3_bucket", {}).get("documents", {})
bname = bucket.get("bucket", "")
if bname == "${local.bucket_name}":
    bname = loc.get("bucket_name")
check("bucket is named rag-<tenant>-documents", bname == "rag-${var.tenant_id}-documents", bname)
btags = bucket.get("tags")
if btags == "${local.tags}":
    btags = loc.get("tags")
for k, v in want_tags.items():
    check("bucket tag %s = %s" % (k, v), isinstance(btags, dict) and btags.get(k) == v, btags)
TAGGABLE = {"aws_s3_bucket", "aws_s3_object", "aws_iam_role", "aws_iam_user", "aws_iam_policy", "aws_kms_key",
            "aws_secretsmanager_secret", "aws_sqs_queue", "aws_sns_topic", "aws_cloudwatch_log_group",
            "aws_cloudwatch_metric_alarm", "aws_db_instance", "aws_elasticache_cluster"}
untagged = ["%s.%s" % (t, n) for t, names in res.items() if t in TAGGABLE for n, body in names.items()
            if body.get("tags") not in ("${local.tags}",) and body.get("tags") != want_tags]
check("every taggable resource carries local.tags", not untagged, untagged)
prov = (m.get("provider", {}).get("aws") or [{}])[0]
check("no provider default_tags (tags are explicit)", "default_tags" not in prov)

lc = res.get("aws_s3_bucket_lifecycle_configuration", {}).get("documents", {})
rule = (lc.get("rule") or [{}])[0]
tr = (rule.get("transition") or [{}])[0]
ntr = (rule.get("noncurrent_version_transition") or [{}])[0]
check("lifecycle targets the documents bucket", lc.get("bucket") == "${aws_s3_bucket.documents.id}", lc.get("bucket"))
check("lifecycle rule is Enabled", rule.get("status") == "Enabled", rule.get("status"))
check("lifecycle transition after local.archive_days[var.tier] days to GLACIER",
      tr.get("days") == "${local.archive_days[var.tier]}" and tr.get("storage_class") == "GLACIER", tr)
check("noncurrent versions archived after the same days",
      ntr.get("noncurrent_days") == "${local.archive_days[var.tier]}" and ntr.get("storage_class") == "GLACIER", ntr)
pab = res.get("aws_s3_bucket_public_access_block", {}).get("documents", {})
check("public access block: all four true",
      all(pab.get(k) is True for k in ("block_public_acls", "block_public_policy", "ignore_public_acls",
                                       "restrict_public_buckets")), pab)
sse = res.get("aws_s3_bucket_server_side_encryption_configuration", {}).get("documents", {})
alg = (((sse.get("rule") or [{}])[0].get("apply_server_side_encryption_by_default") or [{}])[0]).get("sse_algorithm")
check("server-side encryption AES256", alg == "AES256", alg)
ver = res.get("aws_s3_bucket_versioning", {}).get("documents", {})
check("versioning Enabled", ((ver.get("versioning_configuration") or [{}])[0]).get("status") == "Enabled", ver)

# provider: custom endpoint switch
check("provider region = var.region", prov.get("region") == "${var.region}", prov.get("region"))
check("provider endpoints.s3 = var.s3_endpoint",
      ((prov.get("endpoints") or [{}])[0]).get("s3") == "${var.s3_endpoint}", prov.get("endpoints"))
for k in ("s3_use_path_style", "skip_credentials_validation", "skip_requesting_account_id", "skip_metadata_api_check"):
    check("provider %s follows var.s3_endpoint" % k, "var.s3_endpoint" in str(prov.get(k)), prov.get(k))

out = m.get("output", {})
for name in ("bucket_name", "bucket_arn", "tags"):
    check("output %s" % name, name in out)
EOF
tally "$T/static.out"

# ------------------------------------------------------------------ 3. fmt
TF=""
if command -v terraform > /dev/null; then TF=$(command -v terraform); fi
export TF_IN_AUTOMATION=1 TF_INPUT=0 CHECKPOINT_DISABLE=1
# Never let the AWS SDK probe the EC2 metadata address or read a real profile.
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_SESSION_TOKEN || true
if [ -z "${TF_CLI_CONFIG_FILE-}" ] || [ ! -e "$TF_CLI_CONFIG_FILE" ]; then
  : > "$T/terraformrc"
  export TF_CLI_CONFIG_FILE="$T/terraformrc"
fi
if [ -n "$TF" ]; then
  if "$TF" fmt -check -recursive -diff "$HERE" > "$T/fmt.out" 2>&1; then
    ok "terraform fmt -check ($("$TF" version | head -1))"
  else
    bad "terraform fmt -check: $(cat "$T/fmt.out")"
  fi
else
  skip "terraform fmt -check (no terraform on PATH; it is not a Debian package)"
fi

# ------------------------------------------------------------------ 4. validate + plan
HAVE_MIRROR=0
[ -n "$TF" ] && [ -d "$PLUGIN_DIR/registry.terraform.io/hashicorp/aws" ] && HAVE_MIRROR=1
if [ "$HAVE_MIRROR" = 0 ]; then
  skip "terraform validate/plan (needs terraform and a provider mirror with hashicorp/aws in $PLUGIN_DIR; the registry is unreachable)"
else
  mkdir -p "$T/root"
  cp "$HERE"/modules/tenant/*.tf "$T/root/"
  if "$TF" -chdir="$T/root" init -input=false -no-color -backend=false -plugin-dir="$PLUGIN_DIR" > "$T/init.out" 2>&1; then
    ok "terraform init from the local provider mirror"
    if "$TF" -chdir="$T/root" validate -no-color > "$T/validate.out" 2>&1; then
      ok "terraform validate"
    else
      bad "terraform validate: $(cat "$T/validate.out")"
    fi
    # The endpoint is a closed port and the keys are dummies: planning a new
    # tenant calls no API.
    for tier in Gold Silver Bronze; do
      if AWS_ACCESS_KEY_ID=AKIAPLANONLY AWS_SECRET_ACCESS_KEY=plan-only "$TF" -chdir="$T/root" plan -input=false -no-color -lock=false -out="$T/$tier.plan" \
          -var tenant_id=acme-corp -var tier=$tier -var region=us-east-1 -var environment=test \
          -var s3_endpoint=http://127.0.0.1:9 > "$T/plan-$tier.out" 2>&1 &&
         "$TF" -chdir="$T/root" show -json "$T/$tier.plan" > "$T/$tier.json" 2> "$T/show-$tier.err"; then
        "$PY" - "$T/$tier.json" "$tier" > "$T/plan-$tier.check" <<'EOF'
import json, sys
plan, tier = json.load(open(sys.argv[1])), sys.argv[2]
days = {"Gold": 90, "Silver": 60, "Bronze": 30}[tier]
res = {r["type"]: r["values"] for r in plan["planned_values"]["root_module"]["resources"]}
want = {"TenantID": "acme-corp", "Tier": tier, "CostCenter": "rag-platform-" + tier.lower(),
        "ManagedBy": "tenantq", "Environment": "test"}
b = res.get("aws_s3_bucket", {})
rule = (res.get("aws_s3_bucket_lifecycle_configuration", {}).get("rule") or [{}])[0]
tr = (rule.get("transition") or [{}])[0]
ok = lambda c, d, x="": print(("ok   - " if c else "FAIL - ") + "plan %s: %s%s" % (tier, d, "" if c else " (%s)" % x))
ok(b.get("bucket") == "rag-acme-corp-documents", "bucket rag-acme-corp-documents", b.get("bucket"))
ok(b.get("tags") == want, "bucket tags %s" % want, b.get("tags"))
ok(tr.get("days") == days and tr.get("storage_class") == "GLACIER", "archive to GLACIER after %d days" % days, tr)
ok(len(res) == 5, "5 resources planned", sorted(res))
EOF
        tally "$T/plan-$tier.check"
      else
        bad "terraform plan for a $tier tenant: $(tail -n 20 "$T/plan-$tier.out"; cat "$T/show-$tier.err" 2>/dev/null || true)"
      fi
    done
    refused() { # refused DESC EXPECTED-MESSAGE -var ...
      local desc=$1 msg=$2
      shift 2
      if AWS_ACCESS_KEY_ID=AKIAPLANONLY AWS_SECRET_ACCESS_KEY=plan-only \
          "$TF" -chdir="$T/root" plan -input=false -no-color -lock=false "$@" > "$T/neg.out" 2>&1; then
        bad "plan refuses $desc (it planned)"
      elif tr -s ' \n' ' ' < "$T/neg.out" | grep -qF "$msg"; then
        ok "plan refuses $desc"
      else
        bad "plan refuses $desc (other error: $(tail -8 "$T/neg.out"))"
      fi
    }
    common=(-var region=us-east-1 -var environment=test -var s3_endpoint=http://127.0.0.1:9)
    refused "tenant_id Acme_Corp" "The tenant_id must match" -var tenant_id=Acme_Corp -var tier=Gold "${common[@]}"
    refused "tenant_id ab (too short)" "The tenant_id must match" -var tenant_id=ab -var tier=Gold "${common[@]}"
    refused "tier Platinum" "The tier must be one of" -var tenant_id=acme-corp -var tier=Platinum "${common[@]}"
    refused "region 'mars'" "The region must look like" -var tenant_id=acme-corp -var tier=Gold -var region=mars \
      -var environment=test -var s3_endpoint=http://127.0.0.1:9
  else
    bad "terraform init from $PLUGIN_DIR: $(tail -20 "$T/init.out")"
  fi
fi

# ------------------------------------------------------------------ 4b. tenant role, fleet
# Static asserts on terraform/fleet (parsed in step 1).
"$PY" - "$T/parsed.json" > "$T/static-fleet.out" <<'EOF'
import json, re, sys

parsed = json.load(open(sys.argv[1]))


def check(desc, cond, detail=""):
    print(("ok   - " if cond else "FAIL - ") + "fleet: " + desc + ("" if cond or not detail else " (%s)" % detail))


def merged(prefix):
    out = {}
    for rel, doc in parsed.items():
        if rel.startswith(prefix) and "/" not in rel[len(prefix):]:
            for block, body in doc.items():
                if isinstance(body, dict):
                    for name, val in body.items():
                        if block in ("resource", "data"):
                            out.setdefault(block, {}).setdefault(name, {}).update(val)
                        else:
                            out.setdefault(block, {}).setdefault(name, val)
                else:
                    out.setdefault(block, []).extend(body if isinstance(body, list) else [body])
    return out


for f in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
    check("file fleet/%s exists" % f, "fleet/" + f in parsed)
m = merged("fleet/")
var = {k: v[0] for k, v in m.get("variable", {}).items()}
for name, v in sorted(var.items()):
    check("variable %s has a type and a description" % name, bool(v.get("type")) and bool(v.get("description")))
    if v.get("type") not in ("${bool}", "bool") and name != "tags":
        check("variable %s has a validation" % name, bool(v.get("validation")))
res = {t: {n: v[0] for n, v in names.items()} for t, names in m.get("resource", {}).items()}
pg = res.get("aws_elasticache_parameter_group", {}).get("redis", {})
params = {p.get("name"): p.get("value") for p in pg.get("parameter", [])}
check("ElastiCache parameter group sets maxmemory-policy noeviction", params.get("maxmemory-policy") == "noeviction", params)
rg = res.get("aws_elasticache_replication_group", {}).get("redis", {})
check("the replication group uses that parameter group",
      rg.get("parameter_group_name") == "${aws_elasticache_parameter_group.redis.name}", rg.get("parameter_group_name"))
db = res.get("aws_db_instance", {}).get("postgres", {})
check("RDS engine postgres, version from a variable validated as 15",
      db.get("engine") == "postgres" and db.get("engine_version") == "${var.postgres_engine_version}"
      and "^15" in json.dumps(var.get("postgres_engine_version", {}).get("validation")))
check("RDS password managed by RDS (Secrets Manager), none in the configuration",
      db.get("manage_master_user_password") is True and "password" not in db)
check("RDS encrypted, private, deletion protection from a variable",
      db.get("storage_encrypted") is True and db.get("publicly_accessible") is False
      and db.get("deletion_protection") == "${var.deletion_protection}")
text = json.dumps({k: v for k, v in parsed.items() if k.startswith("fleet/")})
check("no credentials in the files (access_key, secret_key, token, password literals)",
      not re.search(r'"(access_key|secret_key|token|auth_token|password)"\s*:', text))
check("provider region from var.region only", (m.get("provider", {}).get("aws") or [{}])[0] == {"region": "${var.region}"},
      m.get("provider"))
for out in ("redis_address", "postgres_address", "worker_role_arn", "data_subnet_cidrs", "kustomize_fleet_env"):
    check("output %s" % out, out in m.get("output", {}))
EOF
tally "$T/static-fleet.out"
# Every key the production overlay's fleet.env has is written by the output.
FLEET_ENV="$REPO/deploy/k8s/overlays/production/fleet.env"
if [ -f "$FLEET_ENV" ]; then
  missing=""
  for k in $(sed -n 's/^\([A-Z_][A-Z0-9_]*\)=.*/\1/p' "$FLEET_ENV"); do
    grep -q "\"$k=" "$HERE/fleet/outputs.tf" || missing="$missing $k"
  done
  if [ -z "$missing" ]; then ok "fleet: output kustomize_fleet_env writes every key of deploy/k8s/overlays/production/fleet.env"
  else bad "fleet: kustomize_fleet_env lacks$missing"; fi
fi

if [ "$HAVE_MIRROR" = 1 ]; then
  # The tenant's own role: limited to its bucket and region.
  if AWS_ACCESS_KEY_ID=AKIAPLANONLY AWS_SECRET_ACCESS_KEY=plan-only "$TF" -chdir="$T/root" plan -input=false -no-color -lock=false \
      -out="$T/role.plan" -var tenant_id=acme-corp -var tier=Gold -var region=eu-west-1 -var environment=test \
      -var s3_endpoint=http://127.0.0.1:9 -var 'role_trusted_arns=["arn:aws:iam::123456789012:role/tenantq-prod-worker"]' \
      > "$T/plan-role.out" 2>&1 && "$TF" -chdir="$T/root" show -json "$T/role.plan" > "$T/role.json" 2> "$T/show-role.err"; then
    "$PY" - "$T/role.json" > "$T/role.check" <<'EOF'
import json, sys
plan = json.load(open(sys.argv[1]))
res = {r["address"]: r["values"] for r in plan["planned_values"]["root_module"]["resources"] if r["mode"] == "managed"}
ok = lambda c, d, x="": print(("ok   - " if c else "FAIL - ") + "tenant role: " + d + ("" if c else " (%s)" % (x,)))
role = res.get("aws_iam_role.tenant[0]", {})
ok(role.get("name") == "tenantq-tenant-acme-corp" and role.get("path") == "/tenantq/tenants/",
   "role tenantq-tenant-acme-corp under /tenantq/tenants/", role.get("name"))
trust = json.loads(role.get("assume_role_policy") or "{}")
ok([s["Principal"] for s in trust.get("Statement", [])] == [{"AWS": "arn:aws:iam::123456789012:role/tenantq-prod-worker"}],
   "only the given principal may assume it", trust)
ok(role.get("tags", {}).get("TenantID") == "acme-corp", "role carries the cost tags", role.get("tags"))
pol = json.loads(res.get("aws_iam_role_policy.tenant_bucket[0]", {}).get("policy") or "{}")
stm = pol.get("Statement", [])
resources = sorted(r for s in stm for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]))
ok(resources == ["arn:aws:s3:::rag-acme-corp-documents", "arn:aws:s3:::rag-acme-corp-documents/*"],
   "policy names the tenant's bucket and its objects only", resources)
ok(all(s.get("Effect") == "Allow" and "*" not in json.dumps(s["Action"]) for s in stm), "no wildcard actions", stm)
ok(all(s.get("Condition", {}).get("StringEquals", {}).get("aws:RequestedRegion") in ("eu-west-1", ["eu-west-1"]) for s in stm),
   "every statement pinned to the tenant's region eu-west-1", [s.get("Condition") for s in stm])
ok(len(res) == 7, "7 resources planned with a role", sorted(res))
EOF
    tally "$T/role.check"
  else
    bad "plan with role_trusted_arns: $(tail -20 "$T/plan-role.out")"
  fi

  # terraform/fleet: init, validate, and a plan that calls no AWS API (an
  # override file gives the provider dummy keys and a closed endpoint; the
  # module looks nothing up).
  mkdir -p "$T/fleet"
  cp "$HERE"/fleet/*.tf "$T/fleet/"
  if "$TF" -chdir="$T/fleet" init -input=false -no-color -backend=false -plugin-dir="$PLUGIN_DIR" > "$T/finit.out" 2>&1; then
    ok "fleet: terraform init from the local provider mirror"
    if "$TF" -chdir="$T/fleet" validate -no-color > "$T/fvalidate.out" 2>&1; then
      ok "fleet: terraform validate"
    else
      bad "fleet: terraform validate: $(cat "$T/fvalidate.out")"
    fi
    cat > "$T/fleet/offline_override.tf" <<'EOF'
provider "aws" {
  access_key                  = "AKIAPLANONLY"
  secret_key                  = "plan-only"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  endpoints {
    ec2         = "http://127.0.0.1:9"
    elasticache = "http://127.0.0.1:9"
    iam         = "http://127.0.0.1:9"
    rds         = "http://127.0.0.1:9"
    sts         = "http://127.0.0.1:9"
  }
}
EOF
    cat > "$T/fleet/test.tfvars" <<'EOF'
name                      = "tenantq-test"
environment               = "test"
region                    = "us-east-1"
vpc_id                    = "vpc-0123456789abcdef0"
data_subnets              = { "subnet-0aaaaaaaaaaaaaaa1" = "10.0.32.0/20", "subnet-0bbbbbbbbbbbbbbb2" = "10.0.48.0/20" }
client_security_group_ids = ["sg-0123456789abcdef0"]
eks_oidc_provider_arn     = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABCDEF0123456789"
eks_oidc_issuer           = "oidc.eks.us-east-1.amazonaws.com/id/ABCDEF0123456789"
EOF
    if "$TF" -chdir="$T/fleet" plan -input=false -no-color -lock=false -var-file=test.tfvars -out="$T/fleet.plan" \
         > "$T/fplan.out" 2>&1 && "$TF" -chdir="$T/fleet" show -json "$T/fleet.plan" > "$T/fleet.json" 2> "$T/fshow.err"; then
      "$PY" - "$T/fleet.json" > "$T/fleet.check" <<'EOF'
import json, sys
plan = json.load(open(sys.argv[1]))
res = {r["address"]: r["values"] for r in plan["planned_values"]["root_module"]["resources"] if r["mode"] == "managed"}
ok = lambda c, d, x="": print(("ok   - " if c else "FAIL - ") + "fleet plan: " + d + ("" if c else " (%s)" % (x,)))
pg = res.get("aws_elasticache_parameter_group.redis", {})
ok({"name": "maxmemory-policy", "value": "noeviction"} in pg.get("parameter", []) and pg.get("family") == "redis7",
   "ElastiCache redis7 parameter group with maxmemory-policy noeviction", pg.get("parameter"))
rg = res.get("aws_elasticache_replication_group.redis", {})
# at_rest_encryption_enabled is a string in provider 5.100 ("true"), a bool before.
ok(rg.get("num_cache_clusters") == 2 and rg.get("automatic_failover_enabled") is True
   and str(rg.get("at_rest_encryption_enabled")).lower() == "true",
   "Redis primary + 1 replica, failover, encrypted at rest", rg)
db = res.get("aws_db_instance.postgres", {})
ok(db.get("engine") == "postgres" and str(db.get("engine_version")).split(".")[0] == "15", "RDS PostgreSQL 15", db.get("engine_version"))
ok(db.get("manage_master_user_password") is True and not db.get("password"), "RDS master password managed by RDS")
ok(db.get("storage_encrypted") and not db.get("publicly_accessible") and db.get("multi_az"), "RDS encrypted, private, multi-AZ")
role = res.get("aws_iam_role.worker", {})
trust = json.loads(role.get("assume_role_policy") or "{}")
cond = trust["Statement"][0]["Condition"]["StringEquals"] if trust else {}
ok(cond.get("oidc.eks.us-east-1.amazonaws.com/id/ABCDEF0123456789:sub") == "system:serviceaccount:tenantq:tenantq-worker",
   "IRSA trust: only ServiceAccount tenantq/tenantq-worker", cond)
pol = json.loads(res.get("aws_iam_role_policy.worker", {}).get("policy") or "{}")
s3 = sorted({r for s in pol.get("Statement", []) for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
             if r.startswith("arn:aws:s3")})
ok(s3 == ["arn:aws:s3:::rag-*", "arn:aws:s3:::rag-*/*"], "worker's S3 access limited to the tenant bucket prefix rag-*", s3)
iam = sorted({r for s in pol.get("Statement", []) for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
              if r.startswith("arn:aws:iam")})
ok(iam == ["arn:aws:iam::123456789012:role/tenantq/tenants/*"], "worker's IAM access limited to the tenant roles' path", iam)
ok(all("*" != a and not a.endswith(":*") for s in pol.get("Statement", []) for a in
       ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])), "no wildcard actions")
ok(len(res) == 12, "12 resources planned", sorted(res))
EOF
      tally "$T/fleet.check"
    else
      bad "fleet: terraform plan: $(tail -20 "$T/fplan.out")"
    fi
    frefused() { # frefused DESC MESSAGE -var ...
      local desc=$1 msg=$2
      shift 2
      if "$TF" -chdir="$T/fleet" plan -input=false -no-color -lock=false -var-file=test.tfvars "$@" > "$T/fneg.out" 2>&1; then
        bad "fleet: plan refuses $desc (it planned)"
      elif tr -s ' \n' ' ' < "$T/fneg.out" | grep -qF "$msg"; then
        ok "fleet: plan refuses $desc"
      else
        bad "fleet: plan refuses $desc (other error: $(tail -8 "$T/fneg.out"))"
      fi
    }
    frefused "redis_engine_version 6.2" "The redis_engine_version must be 7.x" -var redis_engine_version=6.2
    frefused "a single data subnet" "The data_subnets must map at least two" -var 'data_subnets={"subnet-0aaaaaaaaaaaaaaa1"="10.0.32.0/20"}'
  else
    bad "fleet: terraform init from $PLUGIN_DIR: $(tail -20 "$T/finit.out")"
  fi
else
  skip "fleet and tenant-role validate/plan (needs terraform and the provider mirror)"
fi

# ------------------------------------------------------------------ 5. e2e against the S3 stub
if [ "$E2E" = 0 ]; then
  skip "apply/destroy against tests/stubs/s3server.py (run with --e2e)"
  finish
fi
if [ "$HAVE_MIRROR" = 0 ]; then
  skip "--e2e needs terraform and the provider mirror"
  finish
fi

export AWS_ACCESS_KEY_ID=AKIATFCHECK AWS_SECRET_ACCESS_KEY="tf-check-$RANDOM$RANDOM"
"$PY" "$REPO/tests/stubs/s3server.py" --port 0 --port-file "$T/s3.port" --access-key "$AWS_ACCESS_KEY_ID" \
  --secret-key "$AWS_SECRET_ACCESS_KEY" --lifetime 900 --quiet > "$T/s3.out" 2> "$T/s3.log" &
S3_PID=$!
for _ in $(seq 1 100); do [ -s "$T/s3.out" ] && break; sleep 0.05; done
S3_PORT=$(sed -n '1s/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$T/s3.out")
if [ -z "$S3_PORT" ]; then
  bad "s3server did not start: $(cat "$T/s3.log")"
  finish
fi
S3="http://127.0.0.1:$S3_PORT"
state() { curl -sS "$S3/_admin/state" > "$T/state.json"; "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$T/state.json" "$1"; }

# The per-tenant working directory, as the worker's exec step lays it out.
TD="$T/tenants/acme-corp"
mkdir -p "$TD"
cat > "$TD/main.tf.json" <<EOF
{
  "module": {"tenant": {"source": "$HERE/modules/tenant", "tenant_id": "acme-corp", "tier": "Silver",
                        "region": "us-east-1", "environment": "test", "s3_endpoint": "$S3"}},
  "output": {"bucket_name": {"value": "\${module.tenant.bucket_name}"}}
}
EOF
tfrun() { # tfrun NAME ARGS... : output in $T/NAME.out
  local name=$1
  shift
  "$TF" -chdir="$TD" "$@" -no-color > "$T/$name.out" 2>&1
}
B=rag-acme-corp-documents
SECONDS=0
if tfrun init init -input=false -plugin-dir="$PLUGIN_DIR" && tfrun plan plan -input=false -out=tfplan &&
   tfrun apply apply -input=false tfplan; then
  ok "init, plan -out=tfplan, apply tfplan in a per-tenant directory (${SECONDS}s)"
else
  bad "init/plan/apply: $(tail -25 "$T"/{init,plan,apply}.out 2>/dev/null)"
  finish
fi
check() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1 (expected '$2', got '$3')"; fi; }
check "stub has the bucket" True "$(state "'$B' in d['buckets']")"
check "stub: bucket tags" "[('CostCenter', 'rag-platform-silver'), ('Environment', 'test'), ('ManagedBy', 'tenantq'), ('TenantID', 'acme-corp'), ('Tier', 'Silver')]" \
  "$(state "sorted(d['buckets']['$B']['tags'].items())")"
check "stub: lifecycle GLACIER after 60 days" "[(60, 'GLACIER')]" \
  "$(state "[(t['days'], t['storage_class']) for t in d['buckets']['$B']['lifecycle_rules'][0]['transitions']]")"
check "stub: versioning, encryption, public access block set" "True" \
  "$(state "all(s in d['buckets']['$B']['subresources'] for s in ('versioning', 'encryption', 'publicAccessBlock'))")"
rc=0; tfrun replan plan -input=false -detailed-exitcode || rc=$?
check "plan again: no changes (exit 0)" 0 "$rc"
curl -sS -o /dev/null -X POST "$S3/_admin/untag?bucket=$B&key=CostCenter"
rc=0; tfrun drift plan -input=false -detailed-exitcode || rc=$?
check "tag removed behind Terraform's back: plan shows drift (exit 2)" 2 "$rc"
if tfrun reapply apply -input=false -auto-approve; then ok "apply restores it"; else bad "re-apply: $(tail -20 "$T/reapply.out")"; fi
check "  ... CostCenter back" rag-platform-silver "$(state "d['buckets']['$B']['tags'].get('CostCenter')")"
H=$(printf 'doc' | sha256sum | cut -d' ' -f1)
curl -sS -o /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
  -H "x-amz-content-sha256: $H" -X PUT --data-binary doc "$S3/$B/doc.txt"
check "an object in the bucket" 1 "$(state "len(d['buckets']['$B']['objects'])")"
if tfrun destroy destroy -input=false -auto-approve; then ok "destroy -auto-approve (force_destroy empties the bucket)"; else bad "destroy: $(tail -20 "$T/destroy.out")"; fi
check "stub has no bucket left" 0 "$(state "len(d['buckets'])")"
if grep -qF "$AWS_SECRET_ACCESS_KEY" "$T"/*.out "$T/s3.log"; then bad "the secret key shows in terraform or stub output"; else ok "no secret in terraform or stub output"; fi
kill "$S3_PID"
wait "$S3_PID" || true
S3_PID=""
finish
