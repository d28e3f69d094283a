#!/usr/bin/env bash
# tests/integration/fleet_netns.sh BIN_DIR: a fleet of three real hosts as
# Linux network namespaces, run by ctest as root.
#
#  - a bridge in the root namespace with an address of its own, on which a
#    private Redis, a private PostgreSQL and the S3 and SaaS stand-ins listen;
#  - three hosts h1..h3: each a namespace with its own address and hostname
#    (a UTS namespace) running one tq-worker from BIN_DIR;
#  - batches: 60 tenants on the real default pipeline, 9 on a pipeline whose
#    step is limited to 2 at once per region, 1 whose Terraform step keeps
#    its state in PostgreSQL (limited to 1 per region);
#  - the host running the Terraform step has its worker killed (-9, with what
#    it ran) after the apply and is restarted; mid-batch another host's link
#    goes down for three leases, then comes back. That host also runs a
#    second worker, of queue fleetend, whose 2 jobs END while it is cut off
#    (a worker on another host finishes them meanwhile): once back, their
#    last rows are refused by the fence and counted stale, not succeeded.
# Then, from PostgreSQL, Redis and the stand-ins' own records: every tenant
# active and no Redis list left; every bucket created once (S3 log), every
# role created once (PostgreSQL's DDL log), every vector namespace and
# dashboard created once (SaaS log); the partitioned worker wrote nothing for
# the jobs it lost (the fence refused what it sent) and abandoned them once
# healed; a tenant provisioned on one host revalidates on another with the
# credentials from the shared store (tq.secrets); the Terraform step finished on
# another host from the shared state, its resource made once; the limited
# step never ran 3 at once, and the killed holder's permit came back.
# Prints the figures (jobs resumed, time to resume after the cut, stale
# writes refused, ...) as "fleet_<name> value unit" lines. Exit 0 pass,
# 1 fail, 77 skipped (not root, no namespaces, bridges or UTS namespaces).
#
# Accounts as everywhere else (docs/security.md, deploy/local/lib.sh): the
# services are the test's own (they must listen on the bridge, where the
# hosts reach them), made the way deploy/local makes its services: Redis
# with the default user off and the ACL users of tq_redis_acl_file,
# PostgreSQL with scram-sha-256 only and the roles of tq_pg_roles, passwords
# generated into a 0600 file of this run. Workers run as tq_worker /
# tq-worker, submit and revalidate as tq_cli / tq-cli, migrate and the
# operator's pipeline registrations as tq_migrate; only the checks read the
# records as the superuser and tq-admin.
#
# Traffic goes only to addresses this script made (a 10.x.y.0/24 no
# interface here uses); namespaces, links, services and processes are removed
# on every exit path (trap). Bounded: about a minute under the sanitizers,
# 6 at most (every wait has its own limit; ctest's TIMEOUT 600).
set -uo pipefail

BIN=${1:?usage: fleet_netns.sh BIN_DIR (holding tq-worker and tq-enqueue)}
HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd -- "$HERE/../.." && pwd)
PGBIN=${TQ_PG_BINDIR:-/usr/lib/postgresql/15/bin}
# Short enough to keep the run short, long enough that a worker slowed
# down by a busy machine (sanitizers, two shared cores) keeps its leases.
LEASE_MS=5000
SKIP=77

say() { echo "fleet: $*" >&2; }
skip() { echo "SKIPPED: $*"; exit "$SKIP"; }
FAILS=0
ok() { echo "ok   - $*"; }
bad() { echo "FAIL - $*"; FAILS=$((FAILS + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
die() { echo "FAIL - $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || skip "not root: hosts as network namespaces need root"
for c in ip unshare redis-server redis-cli psql pg_isready python3 curl runuser; do
  command -v "$c" >/dev/null 2>&1 || skip "$c is not installed"
done
[ -x "$PGBIN/initdb" ] || skip "no PostgreSQL server binaries in $PGBIN"
[ -x "$BIN/tq-worker" ] && [ -x "$BIN/tq-enqueue" ] || die "no tq-worker/tq-enqueue in $BIN"
unshare --uts true 2>/dev/null || skip "cannot make UTS namespaces here (a hostname per host)"

ID=$(($$ % 100000))
NS=("" "tqf${ID}h1" "tqf${ID}h2" "tqf${ID}h3")
BR="tqf${ID}br"
T=$(mktemp -d /tmp/tqfleet.XXXXXX)
chmod 755 "$T"
T_START=$(date +%s.%N)
# The service accounts' passwords and the ACL file, made by deploy/local's
# own functions into this run's folder (0600).
export TQ_LOCAL_DIR="$T/local"
TQ_SCRIPT_NAME=fleet_netns
# shellcheck source=../../deploy/local/lib.sh
. "$REPO/deploy/local/lib.sh"
WPID=(0 0 0 0)
STUB_PIDS=()
END_PIDS=(0 0)   # the two workers of queue fleetend (below)
MADE_NS=()
MADE_LINKS=()

cleanup() {
  set +e
  exec 2>/dev/null   # best effort; and no "Killed" notices for our own kills
  local p n
  for p in "${WPID[@]}" "${END_PIDS[@]}" "${STUB_PIDS[@]}"; do
    [ "$p" -gt 0 ] 2>/dev/null && kill -9 "$p" 2>/dev/null
  done
  # whatever still runs on our hosts (a killed worker's Terraform, say)
  for n in "${MADE_NS[@]}"; do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  done
  for p in "${WPID[@]}" "${END_PIDS[@]}" "${STUB_PIDS[@]}"; do
    [ "$p" -gt 0 ] 2>/dev/null && wait "$p" 2>/dev/null
  done
  if [ -n "${BRIP:-}" ] && [ -f "$T/redis/redis.pid" ]; then
    r shutdown nosave >/dev/null 2>&1 || kill -9 "$(cat "$T/redis/redis.pid")" 2>/dev/null
  fi
  if [ -d "$T/pg/data" ]; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$T/pg/data" -m immediate -w stop >/dev/null 2>&1
  fi
  for n in "${MADE_NS[@]}"; do ip netns del "$n" 2>/dev/null; done
  for n in "${MADE_LINKS[@]}"; do ip link del "$n" 2>/dev/null; done
  if [ "${TQ_FLEET_KEEP:-0}" = 1 ]; then echo "fleet: kept $T"; else rm -rf -- "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# ------------------------------------------------------------------ network
# A /24 that no interface or route here knows.
PFX=""
for _ in $(seq 1 50); do
  cand="10.$((100 + RANDOM % 150)).$((RANDOM % 256))"
  if ! ip -4 addr show | grep -q " inet $cand\." && ! ip -4 route show | grep -q "^$cand\."; then
    PFX=$cand
    break
  fi
done
[ -n "$PFX" ] || skip "no free 10.x.y.0/24 found"
BRIP="$PFX.1"
ip link add "$BR" type bridge 2>/dev/null || skip "cannot create a bridge here"
MADE_LINKS+=("$BR")
ip addr add "$BRIP/24" dev "$BR" && ip link set "$BR" up || die "bridge address"
for i in 1 2 3; do
  ip netns add "${NS[$i]}" || skip "cannot create network namespaces here"
  MADE_NS+=("${NS[$i]}")
  ip link add "tqf${ID}a$i" type veth peer name "tqf${ID}b$i" || die "veth pair"
  MADE_LINKS+=("tqf${ID}a$i")
  ip link set "tqf${ID}b$i" netns "${NS[$i]}" &&
    ip link set "tqf${ID}a$i" master "$BR" up &&
    ip -n "${NS[$i]}" addr add "$PFX.1$i/24" dev "tqf${ID}b$i" &&
    ip -n "${NS[$i]}" link set "tqf${ID}b$i" up &&
    ip -n "${NS[$i]}" link set lo up || die "host h$i's network"
done
say "bridge $BR $BRIP/24; hosts h1..h3 at $PFX.11-13 (namespaces ${NS[*]:1})"

# ------------------------------------------------------------------ services
mkdir -p "$T/redis" "$T/pg" "$T/s3" "$T/h1" "$T/h2" "$T/h3"
CRED=fleet
tq_creds_ensure "$CRED" && tq_creds_load "$CRED" || die "service account passwords"
tq_redis_acl_file "$CRED" "$T/redis/users.acl"
(umask 077; exec redis-server --port 6379 --bind "$BRIP" --dir "$T/redis" --daemonize yes \
  --pidfile "$T/redis/redis.pid" --logfile "$T/redis/redis.log" --save '' --appendonly no \
  --aclfile "$T/redis/users.acl" </dev/null >/dev/null) || die "redis did not start"
chown postgres "$T/pg"
(umask 077; printf '%s\n' "$TQ_CRED_PG_POSTGRES" >"$T/pg/.pwfile") && chown postgres "$T/pg/.pwfile"
runuser -u postgres -- "$PGBIN/initdb" -D "$T/pg/data" -U postgres --auth=scram-sha-256 \
  --pwfile="$T/pg/.pwfile" -E UTF8 --no-sync >/dev/null || die "initdb"
rm -f -- "$T/pg/.pwfile"
# the hosts reach PostgreSQL over the bridge, with passwords (scram-sha-256)
echo "host all all $PFX.0/24 scram-sha-256" >>"$T/pg/data/pg_hba.conf"
grep -Eq '^[^#]*[[:space:]](trust|password|md5)([[:space:]]|$)' "$T/pg/data/pg_hba.conf" &&
  die "pg_hba.conf accepts something other than scram-sha-256"
tq_pgpass_write "$CRED" 5432 "$BRIP"
PGPASS="$TQ_LOCAL_DIR/$CRED/pgpass"   # psql's, for the checks (not the workers')
# log_statement=all: PostgreSQL's own record of every CREATE ROLE and of the
# COMMIT or ROLLBACK that followed it on that connection (how many times each
# role was created for good). The cluster is private to this test and removed.
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$T/pg/data" -l "$T/pg/pg.log" -w -o \
  "-c listen_addresses=$BRIP -p 5432 -k $T/pg -c fsync=off -c max_connections=300 -c log_statement=all -c log_line_prefix='%m [%p] '" \
  start >/dev/null || die "postgres did not start: $(tail -5 "$T/pg/pg.log")"
# tq-admin: the checks' account (as the suite's harness), never a worker's
r() { REDISCLI_AUTH=$TQ_CRED_REDIS_ADMIN redis-cli --no-auth-warning --user tq-admin -h "$BRIP" -p 6379 "$@"; }
for _ in $(seq 1 100); do r ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
tq_pg_roles "$CRED" 5432 "$BRIP"
PGPASSFILE=$PGPASS psql -qX -h "$BRIP" -U postgres -d postgres -c 'CREATE DATABASE tenantq OWNER tq_migrate' \
  >/dev/null || die "create database"

S3_KEY="AKfleet$ID"
S3_SECRET=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
SAAS_TOKEN=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
python3 "$REPO/tests/stubs/s3server.py" --bind "$BRIP" --port 9000 --access-key "$S3_KEY" \
  --secret-key "$S3_SECRET" --region '*' --lifetime 900 >"$T/s3.out" 2>"$T/s3.log" &
STUB_PIDS+=($!)
python3 "$REPO/tests/stubs/saas_stub.py" --bind "$BRIP" --port 9001 --token "$SAAS_TOKEN" \
  --lifetime 900 >"$T/saas.out" 2>"$T/saas.log" &
STUB_PIDS+=($!)
for port in 9000 9001; do
  for _ in $(seq 1 100); do
    curl -s -m 1 "http://$BRIP:$port/_admin/health" | grep -q true && break
    sleep 0.1
  done
done

# ------------------------------------------------------------------ fleet configuration
# Every URL carries its account's password (the environment, never argv).
PG_AT="host=$BRIP port=5432 dbname=tenantq"
WORKER_DB="$PG_AT user=tq_worker password=$TQ_CRED_PG_WORKER"
CLI_DB="$PG_AT user=tq_cli password=$TQ_CRED_PG_CLI"
MIGRATE_DB="$PG_AT user=tq_migrate password=$TQ_CRED_PG_MIGRATE"
WORKER_REDIS="redis://tq-worker:$TQ_CRED_REDIS_WORKER@$BRIP:6379/0"
CLI_REDIS="redis://tq-cli:$TQ_CRED_REDIS_CLI@$BRIP:6379/0"
# what the workers get (tq_worker, tq-worker; the worker refuses a superuser)
export TQ_DATABASE_URL="$WORKER_DB" TQ_REDIS_URL="$WORKER_REDIS"
export TQ_QUEUE=fleet TQ_LEASE_MS=$LEASE_MS TQ_CONCURRENCY=6 TQ_LOG_FORMAT=text
export TQ_REVALIDATE_INTERVAL_MS=0 TQ_ENVIRONMENT=test
unset TQ_ALLOW_SUPERUSER
export TQ_TENANT_REDIS_URL="$WORKER_REDIS"
export TQ_S3_ENDPOINT="http://$BRIP:9000"
# the region map: each region's bucket where the tenant asked (one S3 stand-in serves all)
for r in us-east-1 us-west-2 eu-west-1; do
  printf '"%s": {"s3_region": "%s", "s3_endpoint": "http://%s:9000", "vector_url": "http://%s:9001", "dashboard_url": "http://%s:9001"}\n' \
    "$r" "$r" "$BRIP" "$BRIP" "$BRIP"
done | paste -sd, | sed 's/^/{/; s/$/}/' > "$T/regions.json"
export TQ_REGIONS_FILE="$T/regions.json"
export TQ_S3_ACCESS_KEY="$S3_KEY" TQ_S3_SECRET_KEY="$S3_SECRET"
export TQ_VECTOR_URL="http://$BRIP:9001" TQ_VECTOR_TOKEN="$SAAS_TOKEN"
export TQ_DASHBOARD_URL="http://$BRIP:9001" TQ_DASHBOARD_TOKEN="$SAAS_TOKEN"
export TQ_NOTIFY_WEBHOOK_URL="http://$BRIP:9001/hooks/fleet"
export TQ_TERRAFORM_PG_URL="$WORKER_DB sslmode=disable"
export TQ_TEST_TF_BIN=${TQ_TERRAFORM_BIN:-/usr/local/bin/terraform}
export TQ_TEST_TF_LOG="$T/tf-effects.log" TQ_TEST_TF_HOLD="$T/tf-hold"
export TQ_TEST_HELPER="$HERE/fleet_exec_helper.sh"
# exec runs only what the worker allows (and never a shell): the helper, Terraform
export TQ_EXEC_ALLOW="$TQ_TEST_HELPER:$TQ_TEST_TF_BIN"
unset TQ_PREFIX TQ_HTTP_ADDR TQ_SECRETS_STORE TQ_SECRETS_KEY_FILE
# Tenant credentials: the store every worker shares (tq.secrets), one key
# for the fleet.
export TQ_SECRETS_KEY="fleet1:$(head -c 32 /dev/urandom | base64 -w0)"
HAVE_TF=0
[ -x "$TQ_TEST_TF_BIN" ] && HAVE_TF=1

# the CLI as its accounts: tq_cli / tq-cli (submit, revalidate), and the
# operator's tq_migrate (migrate, pipeline register)
cli() { TQ_DATABASE_URL=$CLI_DB TQ_REDIS_URL=$CLI_REDIS "$BIN/tq-enqueue" "$@"; }
admin() { TQ_DATABASE_URL=$MIGRATE_DB TQ_REDIS_URL=$CLI_REDIS "$BIN/tq-enqueue" "$@"; }
admin migrate >/dev/null || die "migrate (as tq_migrate)"

# the checks read the records as the superuser
q() { PGPASSFILE=$PGPASS psql -qAtX -h "$BRIP" -U postgres -d tenantq -c "$1"; }
now() { date +%s.%N; }
ms_since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", (b - a) * 1000 }'; }

# ------------------------------------------------------------------ pipelines and batches
# gate: a step limited to 2 at once per region, fleet-wide
cat >"$T/gate.json" <<'EOF'
{"name": "fleet-gate", "steps": [
  {"name": "gate", "kind": "sleep", "params": {"ms": 1500},
   "limit": {"key": "fleet-gate:${tenant.region}", "max": 2}},
  {"name": "after", "kind": "noop", "needs": ["gate"]}]}
EOF
# tf: Terraform with its state in PostgreSQL, 1 at once per region; after
# the apply it holds while TQ_TEST_TF_HOLD exists (so its host can be killed
# between the apply and the step's record); provisioners count creations.
cat >"$T/tf.json" <<'EOF'
{"name": "fleet-tf", "steps": [
  {"name": "infra", "kind": "exec", "timeout_ms": 180000,
   "retry": {"max_attempts": 3, "base_ms": 200, "max_ms": 1000},
   "limit": {"key": "terraform:${tenant.region}", "max": 1},
   "params": {
     "terraform_backend": "pg",
     "files": {"main.tf.json": {"resource": {"terraform_data": {"bucket": {
       "input": "${tenant.id}",
       "provisioner": [
         {"local-exec": {"command": "echo created >> ${env.TQ_TEST_TF_LOG}"}},
         {"local-exec": {"when": "destroy", "command": "echo destroyed >> ${env.TQ_TEST_TF_LOG}"}}]}}}}},
     "env": {"TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", "TF_CLI_CONFIG_FILE": "/dev/null"},
     "steps": [
       ["${env.TQ_TEST_TF_BIN}", "init", "-input=false", "-no-color"],
       ["${env.TQ_TEST_TF_BIN}", "workspace", "select", "-or-create=true", "-no-color", "${tenant.id}"],
       ["${env.TQ_TEST_TF_BIN}", "apply", "-input=false", "-no-color", "-auto-approve", "-lock-timeout=120s"],
       ["${env.TQ_TEST_HELPER}", "hold", "${env.TQ_TEST_TF_HOLD}"]]}}]}
EOF

# cut: a step that waits until the test lets it go, then fails on the host cut
# off (a file in that host's own work folder says so) while it is cut off,
# after a step whose undo leaves a mark
# in a shared file: the cut-off host must not begin undoing once it cannot
# confirm its lease (its rollback would destroy what another host made).
cat >"$T/cut.json" <<'EOF'
{"name": "fleet-cut", "steps": [
  {"name": "mark", "kind": "exec", "params": {
     "argv": ["${env.TQ_TEST_HELPER}", "mark", "${env.TQ_TEST_CUT_LOG}", "made"],
     "undo_argv": ["${env.TQ_TEST_HELPER}", "mark", "${env.TQ_TEST_CUT_LOG}", "undone"]}},
  {"name": "wait", "kind": "exec", "needs": ["mark"], "retry": {"max_attempts": 1},
   "timeout_ms": 120000, "params": {
     "argv": ["${env.TQ_TEST_HELPER}", "gate", "${env.TQ_TEST_CUT_HOLD}",
              "${env.TQ_WORK_DIR}/cut-fail"]}}]}
EOF
export TQ_TEST_CUT_LOG="$T/cut-effects.log" TQ_TEST_CUT_HOLD="$T/cut-hold"
# end: one step that waits until the test lets it go, then succeeds and
# writes its host's name: jobs that END on the host while it is cut off,
# whose last row the fence refuses once it is back (another host finished
# them meanwhile). They run on a queue of their own, fleetend, served by a
# second worker on the host to be cut off, then by one on another host.
cat >"$T/end.json" <<'EOF'
{"name": "fleet-end", "steps": [
  {"name": "wait", "kind": "exec", "retry": {"max_attempts": 1}, "timeout_ms": 120000,
   "params": {"argv": ["${env.TQ_TEST_HELPER}", "gate", "${env.TQ_TEST_END_HOLD}",
                       "${env.TQ_WORK_DIR}/never-made", "${env.TQ_TEST_END_LOG}"]}}]}
EOF
export TQ_TEST_END_LOG="$T/end-effects.log" TQ_TEST_END_HOLD="$T/end-hold"
# pipelines are the operator's: registered by name (as the migration
# account, as the suite's harness does), then named by each submit
for p in "$REPO/deploy/pipelines/tenant-provision.json:tenant-provision" \
         "$T/gate.json:fleet-gate" "$T/tf.json:fleet-tf" "$T/cut.json:fleet-cut" \
         "$T/end.json:fleet-end"; do
  admin pipeline register "${p%%:*}" --name "${p##*:}" --by fleet-test >/dev/null ||
    die "register pipeline ${p##*:}"
done
CUT_TENANT="cut-fleet-$ID"
TF_TENANT="tf-fleet-$ID"
if [ "$HAVE_TF" = 1 ]; then
  : >"$TQ_TEST_TF_HOLD"
  cli submit --pipeline fleet-tf --tenant-id "$TF_TENANT" --name "$TF_TENANT" \
    --tier Bronze --region eu-west-1 --budget 150000 --owner ops@example.com >/dev/null ||
    die "submit the Terraform tenant"
fi
{ echo "tenant_id,name,tier,region,budget,owner"
  for i in $(seq 1 9); do echo "gate$i-$ID,Gate $i $ID,Bronze,eu-west-1,150000,ops@example.com"; done
} >"$T/gate.csv"

# ------------------------------------------------------------------ hosts
WID=("" "" "" "")
start_worker() {
  local i=$1 log="$T/h$1/worker.log" n
  local before
  before=$(grep -c ' started: queue' "$log" 2>/dev/null)
  TQ_HTTP_ADDR="$PFX.1$i:9464" TQ_WORK_DIR="$T/h$i/work" \
    ip netns exec "${NS[$i]}" unshare --uts /bin/sh -c 'hostname "$0" && exec "$@"' \
    "fleet-h$i" "$BIN/tq-worker" >>"$log" 2>&1 </dev/null &
  WPID[$i]=$!
  for n in $(seq 1 200); do
    [ "$(grep -c ' started: queue' "$log" 2>/dev/null)" -gt "${before:-0}" ] && break
    sleep 0.05
  done
  WID[$i]=$(grep -o 'worker fleet-h[0-9]-[^ ]* started' "$log" | tail -1 | awk '{print $2}')
  [ -n "${WID[$i]}" ] || die "worker on h$i did not start: $(tail -5 "$log")"
}
# start_end_worker HOST: a worker of queue fleetend on HOST (metrics on :9465);
# sets END_PID / END_ID
start_end_worker() {
  local i=$1 log="$T/h$1/end-worker.log" n
  TQ_QUEUE=fleetend TQ_HTTP_ADDR="$PFX.1$i:9465" TQ_WORK_DIR="$T/h$i/work" \
    ip netns exec "${NS[$i]}" unshare --uts /bin/sh -c 'hostname "$0" && exec "$@"' \
    "fleet-h$i" "$BIN/tq-worker" >>"$log" 2>&1 </dev/null &
  END_PID=$!
  for n in $(seq 1 200); do grep -q ' started: queue' "$log" 2>/dev/null && break; sleep 0.05; done
  END_ID=$(grep -o 'worker fleet-h[0-9]-[^ ]* started' "$log" | tail -1 | awk '{print $2}')
  [ -n "$END_ID" ] || die "the fleetend worker on h$i did not start: $(tail -5 "$log")"
}
host_of() { # worker id -> host number
  case $1 in fleet-h1-*) echo 1 ;; fleet-h2-*) echo 2 ;; fleet-h3-*) echo 3 ;; *) echo 0 ;; esac
}
T0=$(now)
for i in 1 2 3; do start_worker "$i"; done
say "workers: ${WID[*]:1}"
# The limited batch once every host waits for work: one push serves each
# waiting worker an id, so the limit is shared by several hosts (submitted
# before the workers, the first to start could take them all).
cli submit --pipeline fleet-gate --file "$T/gate.csv" --batch "gate-$ID" \
  >/dev/null || die "submit the gate batch"

wait_for() { # seconds, then a command; true once it succeeds
  local until=$((SECONDS + $1)); shift
  while [ "$SECONDS" -lt "$until" ]; do "$@" && return 0; sleep 0.2; done
  return 1
}

# ------------------------------------------------------------------ kill the Terraform host
KILLED_ID="" TF_HOST=0
if [ "$HAVE_TF" = 1 ]; then
  wait_for 120 test -s "$TQ_TEST_TF_HOLD.pid" || die "the Terraform apply never finished"
  KILLED_ID=$(q "SELECT lease_owner FROM tq.jobs WHERE tenant_id = '$TF_TENANT'")
  TF_HOST=$(host_of "$KILLED_ID")
  [ "$TF_HOST" -gt 0 ] || die "Terraform job held by '$KILLED_ID'"
  # the permit of its step (limited to 1 per region) is the killed worker's
  TF_PERMIT_BEFORE=$(r zrange "tq:limit:terraform:eu-west-1" 0 -1 | paste -sd' ' -)
  kill -9 "${WPID[$TF_HOST]}"; wait "${WPID[$TF_HOST]}" 2>/dev/null
  kill -9 -- "-$(cat "$TQ_TEST_TF_HOLD.pid")" 2>/dev/null   # the host's processes die with it
  rm -f -- "$TQ_TEST_TF_HOLD"
  T_KILL=$(now)
  say "h$TF_HOST ($KILLED_ID) killed after its Terraform apply; restarting its worker"
  start_worker "$TF_HOST"
fi

# ------------------------------------------------------------------ partition mid-batch
: >"$TQ_TEST_CUT_HOLD"
cli submit --pipeline fleet-cut --tenant-id "$CUT_TENANT" --name "$CUT_TENANT" \
  --tier Bronze --region us-east-1 --budget 150000 --owner ops@example.com >/dev/null ||
  die "submit the cut tenant"
# the host to cut off: the one running the cut tenant's held step
cut_running() {
  [ "$(q "SELECT s.status FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id
          WHERE j.tenant_id = '$CUT_TENANT' AND s.step = 'wait'")" = running ]
}
wait_for 60 cut_running || die "the cut tenant's step never ran"
P=$(host_of "$(q "SELECT lease_owner FROM tq.jobs WHERE tenant_id = '$CUT_TENANT'")")
[ "$P" -gt 0 ] || die "no host holds the cut tenant: $(q "SELECT status || ' ' || coalesce(lease_owner, '-') FROM tq.jobs WHERE tenant_id = '$CUT_TENANT'")"
P_ID=${WID[$P]}
Q=$((P % 3 + 1))   # the host that takes the fleetend jobs over
# two jobs that will end on h$P while it is cut off
start_end_worker "$P"; END_PIDS[0]=$END_PID; E_ID=$END_ID
: >"$TQ_TEST_END_HOLD"
END_TENANTS="'end1-fleet-$ID','end2-fleet-$ID'"
for e in 1 2; do
  TQ_QUEUE=fleetend cli submit --pipeline fleet-end --tenant-id "end$e-fleet-$ID" \
    --name "end$e-fleet-$ID" --tier Bronze --region us-east-1 --budget 150000 \
    --owner ops@example.com >/dev/null || die "submit end tenant $e"
done
ends_running() {
  [ "$(q "SELECT count(*) FROM tq.job_steps s JOIN tq.jobs j ON j.id = s.job_id
          WHERE j.tenant_id IN ($END_TENANTS) AND s.step = 'wait' AND s.status = 'running'
            AND j.lease_owner = '$E_ID'")" -eq 2 ]
}
wait_for 60 ends_running || die "the fleetend jobs never ran on h$P"
# their epochs under h$P's fleetend worker (any later holder has a higher one)
q "SELECT id || ' ' || lease_epoch FROM tq.jobs WHERE tenant_id IN ($END_TENANTS)
     AND lease_owner = '$E_ID'" >"$T/end-lost.txt"
# another host serves fleetend too from now on (nothing is ready there now):
# it takes those two over a lease after the cut
start_end_worker "$Q"; END_PIDS[1]=$END_PID; E2_ID=$END_ID
tiers=(Gold Silver Bronze); budgets=(800000 300000 150000); regions=(us-east-1 us-west-2 eu-west-1)
{ echo "tenant_id,name,tier,region,budget,owner"
  for i in $(seq 1 60); do
    echo "fl$i-$ID,Fleet $i $ID,${tiers[$((i % 3))]},${regions[$(((i / 3) % 3))]},${budgets[$((i % 3))]},ops@example.com"
  done
} >"$T/fleet.csv"
cli submit --pipeline tenant-provision \
  --file "$T/fleet.csv" --batch "fleet-$ID" >/dev/null || die "submit the fleet batch"
TOTAL=$(q "SELECT count(*) FROM tq.tenants")
say "submitted the batch of 60 on the default pipeline ($TOTAL tenants in all)"
active() { q "SELECT count(*) FROM tq.tenants WHERE status = 'active'"; }
# cut it off once the batch is under way
batch_going() {
  [ "$(q "SELECT count(*) FROM tq.tenants WHERE status = 'active' AND batch_id = 'fleet-$ID'")" -ge 5 ]
}
wait_for 3 batch_going
mkdir -p "$T/h$P/work" && : >"$T/h$P/work/cut-fail"
ip link set "tqf${ID}a$P" down
T_CUT=$(now)
q "SELECT id || ' ' || lease_epoch FROM tq.jobs WHERE lease_owner = '$P_ID' AND status = 'running'" \
  >"$T/lost.txt"
LOST_IDS=$(awk '{print $1}' "$T/lost.txt" | paste -sd, -)
rm -f -- "$TQ_TEST_CUT_HOLD"   # the held step ends now, failing on the host cut off
rm -f -- "$TQ_TEST_END_HOLD"   # the fleetend jobs end now, on the host cut off
NLOST=$(grep -c . "$T/lost.txt")
say "h$P ($P_ID) cut off at $(active) active, holding $NLOST job(s): ${LOST_IDS:-none}; and 2 of queue fleetend ($E_ID)"
sleep $((3 * LEASE_MS / 1000))
ip link set "tqf${ID}a$P" up
T_HEAL=$(now)
say "h$P healed after $(ms_since "$T_CUT" "$T_HEAL") ms"

# ------------------------------------------------------------------ the end of the batch
finished() {
  local left
  left=$(q "SELECT count(*) FROM tq.tenants WHERE status NOT IN ('active','failed','rollback_failed','blocked','cancelled')")
  [ "$left" -eq 0 ]
}
wait_for 240 finished || bad "tenants still unfinished after 240 s: $(q "SELECT string_agg(tenant_id || ':' || status, ' ') FROM tq.tenants WHERE status <> 'active'")"
T_DONE=$(now)
say "batch finished $(ms_since "$T0" "$T_DONE") ms after the workers started"
# the hosts' connections now, by account: the workers' (and their
# Terraform's) as tq_worker, checks as a tenant's own login; no superuser
HOST_USERS=$(q "SELECT string_agg(DISTINCT a.usename || CASE WHEN r.rolsuper THEN '(superuser)' ELSE '' END, ',')
                FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
                WHERE host(a.client_addr) IN ('$PFX.11', '$PFX.12', '$PFX.13')")
check "the hosts reach PostgreSQL as tq_worker (and tenants' logins), never a superuser: $HOST_USERS" \
  test -z "$(echo "$HOST_USERS" | tr ',' '\n' | grep -v -x -e tq_worker -e 'tq_t_[a-z0-9_]*')" \
    -a "${HOST_USERS#*tq_worker}" != "$HOST_USERS"
# the healed worker has caught up with what it lost
metric() { curl -s -m 3 "http://$PFX.1$1:${3:-9464}/metrics" | awk -v m="$2" '$1 == m {print $2; exit}'; }
STALE=0 FENCED=0
if [ "$NLOST" -gt 0 ]; then
  stale_all() { [ "$(metric "$P" 'tq_jobs_total{outcome="stale"}')" -ge "$NLOST" ] 2>/dev/null; }
  wait_for 60 stale_all
  STALE=$(metric "$P" 'tq_jobs_total{outcome="stale"}')
  FENCED=$(metric "$P" 'tq_rows_fenced_total')
fi
# the jobs that ended on h$P while it was cut off: the fence refused their
# last rows; the worker counts them stale, not succeeded
end_stale() { [ "$(metric "$P" 'tq_jobs_total{outcome="stale"}' 9465)" -ge 2 ] 2>/dev/null; }
wait_for 60 end_stale
E_STALE=$(metric "$P" 'tq_jobs_total{outcome="stale"}' 9465)
E_SUCCEEDED=$(metric "$P" 'tq_jobs_total{outcome="succeeded"}' 9465)
E_FENCED=$(metric "$P" 'tq_rows_fenced_total' 9465)

# ------------------------------------------------------------------ revalidation on another host
# A tenant whose database step (which generates its login's password) ran on
# h1: h1 leaves, and its revalidation runs on another host, whose check-db
# steps log in as the tenant with the password from tq.secrets.
X=$(q "SELECT j.tenant_id FROM tq.step_attempts s JOIN tq.jobs j ON j.id = s.job_id
       WHERE s.step = 'postgres' AND s.status = 'succeeded' AND j.kind = 'provision'
         AND s.worker = '${WID[1]}' AND j.tenant_id LIKE 'fl%' LIMIT 1")
if [ -n "$X" ]; then
  kill -TERM "${WPID[1]}"; wait "${WPID[1]}" 2>/dev/null; WPID[1]=0   # host A leaves
  cli revalidate "$X" >/dev/null || bad "revalidate $X refused"
  reval_done() {
    [ "$(q "SELECT status FROM tq.jobs WHERE tenant_id = '$X' AND kind = 'revalidate'
            ORDER BY id DESC LIMIT 1")" = succeeded ]
  }
  wait_for 60 reval_done
  check "tenant $X provisioned on h1 revalidates cleanly on another host" \
    test "$(q "SELECT count(*) FROM tq.tenants t JOIN tq.jobs j ON j.tenant_id = t.tenant_id
               WHERE t.tenant_id = '$X' AND j.kind = 'revalidate' AND j.status = 'succeeded'
                 AND t.drift IS NULL AND t.last_validated_at IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM tq.step_attempts s WHERE s.job_id = j.id
                                 AND s.worker LIKE 'fleet-h1-%')")" = 1
  check "its checks logged in as the tenant there (check-db, check-db-isolation succeeded off h1)" \
    test "$(q "SELECT count(DISTINCT s.step) FROM tq.step_attempts s JOIN tq.jobs j ON j.id = s.job_id
               WHERE j.tenant_id = '$X' AND j.kind = 'revalidate' AND s.status = 'succeeded'
                 AND s.step IN ('check-db', 'check-db-isolation') AND s.worker NOT LIKE 'fleet-h1-%'")" = 2
  check "with the shared credentials: tq.secrets holds them as key id, nonce and ciphertext only" \
    test "$(q "SELECT count(*) FROM tq.secrets WHERE tenant_id = '$X' AND key_id = 'fleet1'
               AND length(nonce) > 0 AND length(ciphertext) > 0")" -ge 1
else
  bad "no tenant whose database step ran on h1"
fi
T_REVAL=$(now)

for i in 1 2 3; do
  if [ "${WPID[$i]}" -gt 0 ]; then
    kill -TERM "${WPID[$i]}"
    wait "${WPID[$i]}"; rc=$?
    WPID[$i]=0
    check "worker on h$i drains and exits 0" test "$rc" -eq 0
  fi
done
for k in 0 1; do
  if [ "${END_PIDS[$k]}" -gt 0 ]; then
    kill -TERM "${END_PIDS[$k]}"
    wait "${END_PIDS[$k]}"; rc=$?
    END_PIDS[$k]=0
    check "fleetend worker $((k + 1)) drains and exits 0" test "$rc" -eq 0
  fi
done

# ------------------------------------------------------------------ what the records show
echo "--- every tenant active, nothing left in Redis"
check "all $TOTAL tenants active" test "$(active)" -eq "$TOTAL"
lists=0
for k in $(r --scan --pattern 'tq:*'); do
  [ "$(r type "$k")" = list ] && { lists=$((lists + 1)); echo "  list left: $k ($(r llen "$k"))"; }
done
check "no Redis list left (ready, processing, dead)" test "$lists" -eq 0
check "nothing delayed" test "$(r zcard "tq:{fleet}:delayed")" -eq 0
# a permit whose holder vanished (the cut-off host could not give it back)
# lapses with its lease: count only those still valid by Redis's clock
live_permits() {
  r eval "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)
          return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')" 1 "$1"
}
# Every worker has stopped: a permit still valid belongs to no one (a
# request the cut-off host sent before the cut can reach Redis when the
# link comes back, after that host gave up on it) and must lapse within a
# lease.
permits_held() {
  r --scan --pattern 'tq:limit:*' | while read -r k; do
    [ "$(live_permits "$k")" -gt 0 ] && echo "$k"; done
}
no_permits() { [ -z "$(permits_held)" ]; }
wait_for $((LEASE_MS / 1000 + 2)) no_permits
held=$(r --scan --pattern 'tq:limit:*' | while read -r k; do
  [ "$(live_permits "$k")" -gt 0 ] && echo "$k $(r zrange "$k" 0 -1 withscores | paste -sd' ' -) now $(r time | head -1)"; done)
check "no limit permit held (a lease after the last worker stopped)${held:+: $held}" test -z "$held"

echo "--- no effect applied twice"
# Created once = created, and never deleted (so never created again): a
# CreateBucket on a bucket of ours is answered 200 without a new bucket (as
# AWS does in us-east-1), and a PUT repeated with its Idempotency-Key is
# answered from the first answer; neither makes anything. A second creation
# needs a DELETE first, which the stand-ins' logs would show.
curl -s -m 5 "http://$BRIP:9000/_admin/state" >"$T/s3state.json"
curl -s -m 5 "http://$BRIP:9001/_admin/state" >"$T/saasstate.json"
python3 - "$T" "$ID" >"$T/effects.txt" <<'PY'
import json, re, sys
t, run = sys.argv[1], sys.argv[2]
fleet = ["fl%d-%s" % (i, run) for i in range(1, 61)]
s3 = json.load(open(t + "/s3state.json"))["buckets"]
saas = json.load(open(t + "/saasstate.json"))
ops = {}
for line in open(t + "/s3.log"):
    f = line.split()
    if len(f) >= 8 and f[1] == "s3server:" and f[2][0].isdigit() and f[5].isdigit():
        ops.setdefault(f[4].split("?")[0].lstrip("/").split("/")[0], []).append((f[3], int(f[5]), f[7]))
calls = {}
for line in open(t + "/saas.log"):
    f = line.split()
    if len(f) >= 6 and f[1] == "saas_stub:" and f[2][0].isdigit() and f[5].isdigit():
        calls.setdefault(f[4].split("?")[0], []).append((f[3], int(f[5])))
def report(kind, name, present, made, deleted, repeats):
    print("%s %s present=%d made=%d deleted=%d repeats=%d" % (kind, name, present, made, deleted, repeats))
for tid in fleet:
    b = "rag-%s-documents" % tid
    o = ops.get(b, [])
    made = sum(1 for m, st, op in o if op == "op=CreateBucket" and st == 200)
    deleted = sum(1 for m, st, op in o if op == "op=DeleteBucket" and st < 300)
    report("bucket", b, b in s3, made, deleted, made - 1)
    for kind, path, key in (("namespace", "/v1/namespaces/" + tid, "namespaces"),
                            ("dashboard", "/api/dashboards/tenant-" + tid, "dashboards")):
        c = calls.get(path, [])
        made = sum(1 for m, st in c if m == "PUT" and st == 201)
        deleted = sum(1 for m, st in c if m == "DELETE" and st < 300)
        name = path.rsplit("/", 1)[1]
        report(kind, name, name in saas.get(key, {}), made, deleted, made - 1)
PY
check "60 buckets, 60 vector namespaces, 60 dashboards exist (the stand-ins' state)" \
  test "$(awk '$3 == "present=1"' "$T/effects.txt" | wc -l)" -eq 180
check "each created once: none ever deleted (so none created again)$(awk '$5 != "deleted=0" {printf " [%s %s]", $1, $2}' "$T/effects.txt")" \
  test -z "$(awk '$5 != "deleted=0" || $4 == "made=0"' "$T/effects.txt")"
REPEATS=$(awk '{split($6, a, "="); n += a[2]} END {print n + 0}' "$T/effects.txt")
say "create calls repeated on what existed (idempotent, nothing made): $REPEATS"
# PostgreSQL: a CREATE ROLE counts once its connection COMMITs; a ROLLBACK,
# an error or a connection lost (a killed worker) before that means it
# never happened
awk '
  match($0, /\[[0-9]+\] /) { pid = substr($0, RSTART, RLENGTH) }
  /statement: CREATE ROLE/ { if (match($0, /CREATE ROLE "?tq_t_[a-z0-9_]+/)) {
      role = substr($0, RSTART + 12, RLENGTH - 12); gsub(/"/, "", role); pending[pid] = role }
    next }
  /statement: COMMIT/ { if (pid in pending) { print pending[pid]; delete pending[pid] } next }
  /statement: ROLLBACK|ERROR:|unexpected EOF on client connection/ { delete pending[pid] }
  END { for (p in pending) print pending[p] }' "$T/pg/pg.log" | sort | uniq -c >"$T/roles.txt"
check "60 tenant roles created (PostgreSQL's statement log)" test "$(grep -c . "$T/roles.txt")" -eq 60
check "each role created once$(awk '$1 != 1 {printf " [%s: %d]", $2, $1}' "$T/roles.txt")" \
  test -z "$(awk '$1 != 1' "$T/roles.txt")"
check "no role dropped" test "$(grep -c 'statement: .*DROP ROLE' "$T/pg/pg.log")" -eq 0

echo "--- the partition"
RESUMED=0 FIGS=""
if [ "$NLOST" -gt 0 ]; then
  check "h$P's jobs were taken over (new epochs) and finished" test "$(q "
    SELECT count(*) FROM tq.jobs j JOIN (VALUES $(awk '{printf "%s(%s,%s)", (NR > 1 ? "," : ""), $1, $2}' "$T/lost.txt")) AS l(id, epoch)
      ON j.id = l.id WHERE j.lease_epoch > l.epoch AND j.status = 'succeeded'")" -eq "$NLOST"
  # A lost job is normally finished by another host during the cut; on a
  # slow run h$P may claim one back once healed (a new epoch: its rows from
  # then on are legitimate). Under its old epochs it wrote nothing: no
  # attempt it began before the heal landed, and no audit event of it after
  # the cut for a job it did not claim back.
  q "SELECT DISTINCT job_id FROM tq.step_attempts WHERE job_id IN ($LOST_IDS)
       AND worker = '$P_ID' AND started_at > to_timestamp($T_HEAL)" >"$T/reclaimed.txt"
  RECLAIMED=$(grep -c . "$T/reclaimed.txt")
  NOT_BACK=$( (awk '{print $1}' "$T/lost.txt"; cat "$T/reclaimed.txt") | sort | uniq -u | paste -sd, -)
  check "h$P wrote nothing under the epochs it lost at the cut (attempts, audit events; $RECLAIMED claimed back once healed)" test "$(q "
    SELECT (SELECT count(*) FROM tq.step_attempts WHERE job_id IN ($LOST_IDS) AND worker = '$P_ID'
              AND finished_at > to_timestamp($T_CUT) AND started_at < to_timestamp($T_HEAL))
         + (SELECT count(*) FROM tq.audit_events WHERE job_id IN (${NOT_BACK:-0})
              AND actor = 'worker:$P_ID' AND at > to_timestamp($T_CUT))")" -eq 0
  check "h$P, healed, abandoned every job it lost (stale: ${STALE:-?} of $NLOST)" \
    test "${STALE:-0}" -eq "$NLOST"
  # at least the cut tenant's failed step (attempt and step rows), queued
  # while cut off, reached PostgreSQL after the heal and was refused
  check "the fence refused what h$P sent for them once healed (${FENCED:-?} rows, none written)" \
    test "${FENCED:-0}" -ge 1
  # when each lost job ran again: its first step attempt or event under a
  # new epoch (on another host after the cut, or on h$P after the heal)
  q "SELECT round(extract(epoch FROM min(x.at)) * 1000 - $T_CUT * 1000) FROM (
       SELECT job_id, started_at AS at FROM tq.step_attempts WHERE job_id IN ($LOST_IDS)
         AND started_at > to_timestamp(CASE WHEN worker = '$P_ID' THEN $T_HEAL ELSE $T_CUT END)
       UNION ALL SELECT job_id, at FROM tq.audit_events WHERE job_id IN ($LOST_IDS)
         AND actor LIKE 'worker:%' AND actor <> 'worker:$P_ID' AND at > to_timestamp($T_CUT)) x
     GROUP BY x.job_id ORDER BY 1" >"$T/resume.txt"
  RESUMED=$(grep -c . "$T/resume.txt")
  FIGS=$(awk '{a[NR] = $1} END {if (NR) printf "min %d ms, median %d ms, max %d ms", a[1], a[int((NR + 1) / 2)], a[NR]}' "$T/resume.txt")
  check "every lost job resumed ($((RESUMED - RECLAIMED)) on another host, $RECLAIMED on h$P once healed)" \
    test "$RESUMED" -eq "$NLOST"
else
  bad "h$P held no job when it was cut off (nothing to take over)"
fi

check "the cut tenant's step failed on the host cut off, which decided to roll back (its log)" \
  grep -q "($CUT_TENANT): rolling back: step wait" "$T/h$P/worker.log"
check "the host cut off undid nothing after its lease could have lapsed" \
  test "$(grep -c '^undone$' "$TQ_TEST_CUT_LOG" 2>/dev/null)" -eq 0
check "the cut tenant finished on another host" \
  test "$(q "SELECT status FROM tq.tenants WHERE tenant_id = '$CUT_TENANT'")" = active
# Jobs that ENDED on the host while it was cut off (their step succeeded
# there: the helper's record), whose last rows the fence refused once it
# was back: the worker counts them stale, not succeeded, and writes nothing.
ENDED_ON_P=$(grep -cx "fleet-h$P" "$TQ_TEST_END_LOG" 2>/dev/null)
check "2 fleetend jobs claimed by h$P before the cut ($(grep -c . "$T/end-lost.txt"))" \
  test "$(grep -c . "$T/end-lost.txt")" -eq 2
check "both ended on h$P while it was cut off (their step succeeded there: $ENDED_ON_P)" \
  test "${ENDED_ON_P:-0}" -eq 2
check "and were finished by h$Q from new epochs (tenants active, nothing of h$P's after the cut)" \
  test "$(q "SELECT count(*) FROM tq.jobs j JOIN tq.tenants t ON t.tenant_id = j.tenant_id
             JOIN (VALUES $(awk '{printf "%s(%s,%s)", (NR > 1 ? "," : ""), $1, $2}' "$T/end-lost.txt")) AS l(id, epoch)
               ON j.id = l.id
             WHERE j.lease_epoch > l.epoch AND j.status = 'succeeded' AND t.status = 'active'
               AND EXISTS (SELECT 1 FROM tq.step_attempts s WHERE s.job_id = j.id
                           AND s.worker = '$E2_ID' AND s.status = 'succeeded')
               AND NOT EXISTS (SELECT 1 FROM tq.step_attempts s WHERE s.job_id = j.id
                               AND s.worker = '$E_ID' AND s.finished_at > to_timestamp($T_CUT))
               AND NOT EXISTS (SELECT 1 FROM tq.audit_events a WHERE a.job_id = j.id
                               AND a.actor = 'worker:$E_ID' AND a.at > to_timestamp($T_CUT))")" -eq 2
check "h$P's fleetend worker, healed, counted them stale, not succeeded (stale ${E_STALE:-?}, succeeded ${E_SUCCEEDED:-?}, rows fenced ${E_FENCED:-?})" \
  test "${E_STALE:-0}" -eq 2 -a "${E_SUCCEEDED:-1}" -eq 0 -a "${E_FENCED:-0}" -ge 2

echo "--- Terraform and limits"
if [ "$HAVE_TF" = 1 ]; then
  check "the Terraform tenant is active" test "$(q "SELECT status FROM tq.tenants WHERE tenant_id = '$TF_TENANT'")" = active
  check "its resource was created once (provisioner log)" test "$(grep -c '^created$' "$TQ_TEST_TF_LOG")" -eq 1
  TF_DONE_BY=$(q "SELECT s.worker FROM tq.step_attempts s JOIN tq.jobs j ON j.id = s.job_id
                  WHERE j.tenant_id = '$TF_TENANT' AND s.step = 'infra' AND s.status = 'succeeded'")
  check "the step finished on another worker ($TF_DONE_BY, killed: $KILLED_ID)" \
    test -n "$TF_DONE_BY" -a "$TF_DONE_BY" != "$KILLED_ID"
  check "from the shared state in tq_terraform" test "$(q "SELECT count(*) FROM tq_terraform.states
    WHERE name = '$TF_TENANT' AND data LIKE '%terraform_data%'")" -eq 1
  TF_RESUME=$(q "SELECT round(extract(epoch FROM min(s.started_at)) * 1000 - $T_KILL * 1000)
                 FROM tq.step_attempts s JOIN tq.jobs j ON j.id = s.job_id
                 WHERE j.tenant_id = '$TF_TENANT' AND s.step = 'infra' AND s.worker <> '$KILLED_ID'")
  # its step is limited to 1 per region: it could only start again elsewhere
  # once the killed holder's permit had lapsed
  check "the killed worker held the step's permit (max 1) when it died: $TF_PERMIT_BEFORE" \
    test "${TF_PERMIT_BEFORE#"$KILLED_ID/"}" != "$TF_PERMIT_BEFORE" -a "${TF_PERMIT_BEFORE// /}" = "$TF_PERMIT_BEFORE"
  check "the killed holder's permit came back (another worker took it and ran the step ${TF_RESUME} ms after the kill)" \
    test -n "$TF_DONE_BY" -a "$TF_DONE_BY" != "$KILLED_ID"
else
  echo "SKIPPED sub-check: no terraform binary at $TQ_TEST_TF_BIN"
fi
MOST=$(q "SELECT coalesce(max(c), 0) FROM (SELECT (SELECT count(*) FROM tq.step_attempts b
          WHERE b.step = 'gate' AND b.phase = 'run' AND b.started_at <= a.started_at
            AND b.finished_at > a.started_at) c
          FROM tq.step_attempts a WHERE a.step = 'gate' AND a.phase = 'run') x")
check "the step limited to 2 per key never ran 3 at once across the hosts (most at once: $MOST)" \
  test "$MOST" -le 2
check "and did run 2 at once" test "$MOST" -eq 2
check "on several hosts" test "$(q "SELECT count(DISTINCT split_part(worker, '-', 2)) FROM tq.step_attempts
  WHERE step = 'gate'")" -ge 2

echo "--- sanitizers"
for f in "$T"/h[123]/worker.log "$T"/h[123]/end-worker.log; do
  [ -f "$f" ] || continue
  if grep -q 'Sanitizer\|runtime error' "$f"; then
    bad "sanitizer report in ${f#"$T"/}"
    grep -A20 'Sanitizer\|runtime error' "$f" | head -40
  fi
done

echo "fleet: jobs resumed after the cut: $RESUMED of $NLOST; time to resume after the cut: ${FIGS:-n/a} (lease $LEASE_MS ms, cut $(ms_since "$T_CUT" "$T_HEAL") ms); stale writes refused: ${FENCED:-0} row(s) of ${STALE:-0} job(s) the healed worker abandoned, 0 written; batch of $TOTAL in $(ms_since "$T0" "$T_DONE") ms"
# The closing note's figures, one "name value unit" line each.
secs() { awk -v v="$1" 'BEGIN { if (v == "") print "n/a"; else printf "%.1f", v / 1000 }'; }
nth() { awk -v k="$1" '{a[NR] = $1} END {i = k == "min" ? 1 : k == "max" ? NR : int((NR + 1) / 2); if (NR) print a[i]}' "$T/resume.txt" 2>/dev/null; }
{
  echo "fleet_tenants $TOTAL tenants"
  echo "fleet_lease $(secs "$LEASE_MS") s"
  echo "fleet_cut $(secs "$(ms_since "$T_CUT" "$T_HEAL")") s"
  echo "fleet_jobs_lost $NLOST jobs"
  echo "fleet_jobs_resumed $RESUMED jobs"
  echo "fleet_jobs_claimed_back_after_heal ${RECLAIMED:-0} jobs"
  echo "fleet_resume_after_cut_min $(secs "$(nth min)") s"
  echo "fleet_resume_after_cut_median $(secs "$(nth median)") s"
  echo "fleet_resume_after_cut_max $(secs "$(nth max)") s"
  echo "fleet_stale_jobs_abandoned ${STALE:-0} jobs"
  echo "fleet_stale_writes_refused ${FENCED:-0} rows"
  echo "fleet_ended_while_cut_off ${ENDED_ON_P:-0} jobs"
  echo "fleet_ended_while_cut_off_stale ${E_STALE:-0} jobs"
  echo "fleet_ended_while_cut_off_writes_refused ${E_FENCED:-0} rows"
  echo "fleet_terraform_resume_after_kill $(secs "${TF_RESUME:-}") s"
  echo "fleet_limit_most_at_once $MOST steps"
  echo "fleet_batch $(secs "$(ms_since "$T0" "$T_DONE")") s"
  echo "fleet_wall $(secs "$(ms_since "$T_START" "$(now)")") s"
} | tee "$T/figures.txt"
if [ "$FAILS" -gt 0 ]; then
  for i in 1 2 3; do echo "--- h$i worker log (tail)"; tail -20 "$T/h$i/worker.log"; done
  for f in "$T"/h[123]/end-worker.log; do echo "--- ${f#"$T"/} (tail)"; tail -20 "$f"; done
  echo "$FAILS check(s) failed"
  exit 1
fi
echo "all checks passed"
exit 0
