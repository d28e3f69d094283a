# shellcheck shell=bash
# deploy/local/lib.sh: helpers shared by the deploy/local scripts.
# Source it, do not run it. It defines functions and a few variables and
# starts nothing by itself.
#
# State lives in <top>/.tq-local/<name>/ (ignored by git):
#   ports            the ports the services of <name> were started on
#   credentials      0600: generated passwords of every PostgreSQL role and
#                    Redis ACL user, and the tenant secrets key (KEY=VALUE
#                    lines, made once per state folder; docs/security.md)
#   pgpass           0600: the same PostgreSQL passwords for psql (PGPASSFILE)
#   redis/           redis.pid, redis.log, users.acl (0600; default user off)
#                    (no persistence: --save '' --appendonly no)
#   pg/              data/ (the cluster), pg.log, the Unix socket
# As root, PostgreSQL runs as the postgres user. When that user cannot reach
# <top>/.tq-local/<name> (e.g. a checkout under /root, mode 700) or the socket
# path would be too long, pg/ is a symlink to /tmp/tq-local-<hash>/<name>/pg.
#
# Knobs (environment): TQ_SKIP_INSTALL=1 skips the package check,
# TQ_SKIP_BUILD=1 skips the build, TQ_BUILD_JOBS (default 2),
# TQ_PG_BINDIR (default /usr/lib/postgresql/15/bin, else the newest installed).

TQ_SCRIPT_NAME=${TQ_SCRIPT_NAME:-$(basename -- "$0")}
TQ_TOP=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)
# TQ_LOCAL_DIR: where the state folders live (tests point it at a temp dir).
TQ_LOCAL_DIR=${TQ_LOCAL_DIR:-"$TQ_TOP/.tq-local"}

# python3 and curl: the test stubs in tests/stubs (Python standard library);
# libhttp-parser-dev: the worker's HTTP listener; python3-aiosmtpd: an SMTP server
# for the notification tests; clang-14 + libclang-rt-14-dev: tests/fuzz (libFuzzer).
# yamllint and python3-yaml: tests/deploy/k8s.sh (podman, buildah and
# mmdebstrap are installed by tests/deploy/image.sh itself, only for it).
# prometheus: promtool, for /metrics (test_notify) and deploy/monitoring's
# rules and their unit tests.
# iproute2: tests/integration/fleet_netns.sh (ip netns, veth, bridge).
TQ_PACKAGES=(libhiredis-dev libpq-dev libjansson-dev libcurl4-openssl-dev
  libuv1-dev libcriterion-dev libcsv-dev libssl-dev redis-server postgresql
  postgresql-client redis-tools pkg-config cmake gcc make tmux python3 curl
  libhttp-parser-dev python3-aiosmtpd clang-14 libclang-rt-14-dev
  yamllint python3-yaml python3-cryptography prometheus
  iproute2)

# Terminal statuses of a tenant (see tq-enqueue status).
# shellcheck disable=SC2034  # used by the scripts that source this file
TQ_TERMINAL_STATUSES=" active failed rollback_failed rejected blocked cancelled deprovisioned "

tq_log() { printf '%s: %s\n' "$TQ_SCRIPT_NAME" "$*" >&2; }
tq_warn() { printf '%s: warning: %s\n' "$TQ_SCRIPT_NAME" "$*" >&2; }
tq_die() { printf '%s: error: %s\n' "$TQ_SCRIPT_NAME" "$*" >&2; exit 1; }
tq_is_root() { [ "$(id -u)" -eq 0 ]; }

# Last lines of a log file, indented, on stderr.
tq_log_tail() {
  local f=$1 n=${2:-30}
  if [ -r "$f" ]; then
    printf '%s: --- last %s lines of %s ---\n' "$TQ_SCRIPT_NAME" "$n" "$f" >&2
    tail -n "$n" -- "$f" | sed 's/^/    /' >&2
    printf '%s: ---\n' "$TQ_SCRIPT_NAME" >&2
  else
    tq_log "(no log at $f)"
  fi
}

# ---------------------------------------------------------------- packages

tq_pkg_installed() {
  dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

# Installs the packages of TQ_PACKAGES that are missing (Debian/apt only).
tq_ensure_packages() {
  [ "${TQ_SKIP_INSTALL:-0}" = 1 ] && return 0
  if ! command -v dpkg-query >/dev/null 2>&1; then
    tq_warn "dpkg-query not found (not Debian?): make sure these are installed: ${TQ_PACKAGES[*]}"
    return 0
  fi
  local p missing=()
  for p in "${TQ_PACKAGES[@]}"; do
    tq_pkg_installed "$p" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  tq_log "installing missing packages: ${missing[*]}"
  local sudo=()
  if ! tq_is_root; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      tq_log "not root and no sudo; run as root:"
      printf '  apt-get update -q && apt-get install -y -q -o DPkg::Lock::Timeout=600 %s\n' "${missing[*]}" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  # apt's output goes to stderr: stdout of up is meant for eval.
  "${sudo[@]}" apt-get update -q >&2 || tq_die "apt-get update failed"
  "${sudo[@]}" apt-get install -y -q -o DPkg::Lock::Timeout=600 "${missing[@]}" >&2 \
    || tq_die "apt-get install failed for: ${missing[*]}"
}

# ---------------------------------------------------------------- build

# tq_build VARIANT [cmake -D flags...]: configure and build into .build/VARIANT.
tq_build() {
  local variant=$1; shift
  local dir="$TQ_TOP/.build/$variant"
  if [ "${TQ_SKIP_BUILD:-0}" = 1 ]; then
    tq_log "TQ_SKIP_BUILD=1: not building $dir"
    return 0
  fi
  tq_log "building variant '$variant' in $dir"
  # Build output goes to stderr: stdout of up is meant for eval.
  cmake -S "$TQ_TOP" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >&2 \
    || tq_die "cmake configure failed (variant $variant)"
  cmake --build "$dir" -j "${TQ_BUILD_JOBS:-2}" >&2 \
    || tq_die "build failed (variant $variant)"
}

# ---------------------------------------------------------------- helpers

# True when something accepts TCP connections on 127.0.0.1:PORT.
tq_port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# tq_free_port START: prints the first port >= START with no listener.
tq_free_port() {
  local p=$1 last=$(($1 + 200))
  while [ "$p" -le "$last" ]; do
    if ! tq_port_in_use "$p"; then echo "$p"; return 0; fi
    p=$((p + 1))
  done
  tq_die "no free port in $1..$last"
}

tq_pg_bindir() {
  if [ -n "${TQ_PG_BINDIR:-}" ]; then echo "$TQ_PG_BINDIR"; return; fi
  if [ -x /usr/lib/postgresql/15/bin/pg_ctl ]; then echo /usr/lib/postgresql/15/bin; return; fi
  local d
  d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] || tq_die "PostgreSQL server binaries not found under /usr/lib/postgresql (package postgresql)"
  echo "$d"
}

# Runs a PostgreSQL server program as the user that owns the cluster:
# as root that is postgres (via runuser), otherwise the current user.
tq_as_pg() {
  if tq_is_root; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

tq_state_dir() { echo "$TQ_LOCAL_DIR/$1"; }

# /tmp twin of a state folder, for PostgreSQL when postgres cannot reach it.
tq_tmp_twin_root() {
  local h key=$TQ_TOP
  [ "$TQ_LOCAL_DIR" = "$TQ_TOP/.tq-local" ] || key=$TQ_LOCAL_DIR
  h=$(printf '%s' "$key" | sha256sum | cut -c1-10)
  echo "/tmp/tq-local-$h"
}

# tq_write_ports NAME REDIS_PORT PG_PORT / tq_read_ports NAME (sets
# TQ_STATE_REDIS_PORT and TQ_STATE_PG_PORT; returns 1 if nothing recorded).
tq_write_ports() {
  local d
  d=$(tq_state_dir "$1")
  mkdir -p -- "$d"
  printf 'REDIS_PORT=%s\nPG_PORT=%s\n' "$2" "$3" >"$d/ports"
}
tq_read_ports() {
  local f k v
  f="$(tq_state_dir "$1")/ports"
  TQ_STATE_REDIS_PORT='' TQ_STATE_PG_PORT=''
  [ -r "$f" ] || return 1
  while IFS='=' read -r k v; do
    case $k in
      REDIS_PORT) TQ_STATE_REDIS_PORT=$v ;;
      PG_PORT) TQ_STATE_PG_PORT=$v ;;
    esac
  done <"$f"
  [ -n "$TQ_STATE_REDIS_PORT" ] && [ -n "$TQ_STATE_PG_PORT" ]
}

# ---------------------------------------------------------------- Redis

# Alive: PONG, or NOAUTH from a server whose default user is off.
tq_redis_ping() {
  local r
  r=$(timeout 3 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) || return 1
  [ "$r" = PONG ] || [ "${r#NOAUTH}" != "$r" ]
}

# tq_redis_admin NAME PORT ARGS...: redis-cli as the admin ACL user of NAME
# (the password by environment, never on the command line).
tq_redis_admin() {
  local name=$1 port=$2; shift 2
  tq_creds_load "$name" 2>/dev/null || true
  REDISCLI_AUTH=${TQ_CRED_REDIS_ADMIN:-} timeout 10 redis-cli --no-auth-warning \
    --user tq-admin -h 127.0.0.1 -p "$port" "$@"
}

# True when the Redis on PORT is the one whose pidfile is in DIR (of NAME).
tq_redis_is_ours() {
  local port=$1 dir=$2 name=${3:-} pid rpid
  [ -r "$dir/redis.pid" ] || return 1
  pid=$(cat -- "$dir/redis.pid" 2>/dev/null) || return 1
  [ -n "$name" ] || name=$(basename -- "$(dirname -- "$dir")")
  rpid=$(tq_redis_admin "$name" "$port" info server 2>/dev/null \
    | tr -d '\r' | sed -n 's/^process_id://p')
  [ -n "$pid" ] && [ "$pid" = "$rpid" ]
}

# tq_redis_start NAME PORT
tq_redis_start() {
  local name=$1 port=$2 dir
  dir="$(tq_state_dir "$name")/redis"
  mkdir -p -- "$dir"
  if tq_redis_ping "$port"; then
    if tq_redis_is_ours "$port" "$dir" "$name"; then
      tq_log "Redis ($name) already running on 127.0.0.1:$port"
      return 0
    fi
    tq_die "port $port answers as a Redis that is not $dir (another instance?); pick another port"
  fi
  if tq_port_in_use "$port"; then
    tq_die "port $port is in use by something else; pick another port"
  fi
  rm -f -- "$dir/redis.pid"
  tq_creds_ensure "$name"
  tq_redis_acl_file "$name" "$dir/users.acl"
  tq_log "starting Redis ($name) on 127.0.0.1:$port (data in $dir, default user off)"
  # umask 077: files Redis rewrites (ACL SAVE of users.acl) stay 0600.
  (umask 077; exec redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
    --aclfile "$dir/users.acl" --save '' --appendonly no </dev/null) \
    || { tq_log_tail "$dir/redis.log"; tq_die "redis-server failed to start"; }
  for _ in $(seq 1 100); do   # 10 s
    tq_redis_ping "$port" && return 0
    sleep 0.1
  done
  tq_log_tail "$dir/redis.log"
  tq_die "Redis on 127.0.0.1:$port did not answer PING within 10 s"
}

# tq_redis_stop NAME PORT
tq_redis_stop() {
  local name=$1 port=$2 dir pid
  dir="$(tq_state_dir "$name")/redis"
  if tq_redis_ping "$port"; then
    if ! tq_redis_is_ours "$port" "$dir" "$name"; then
      tq_warn "the Redis on port $port is not ours ($dir): leaving it alone"
      return 0
    fi
    tq_log "stopping Redis ($name) on 127.0.0.1:$port"
    tq_redis_admin "$name" "$port" shutdown nosave >/dev/null 2>&1 || true
    for _ in $(seq 1 100); do
      tq_redis_ping "$port" || break
      sleep 0.1
    done
  fi
  if tq_redis_ping "$port" || [ -r "$dir/redis.pid" ]; then
    pid=$(cat -- "$dir/redis.pid" 2>/dev/null || true)
    # Fall back to the pidfile, but only if that pid is still a redis-server.
    if tq_pid_is "$pid" redis-server; then
      tq_log "Redis ($name) pid $pid still there: sending SIGTERM"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do
        tq_redis_ping "$port" || break
        sleep 0.1
      done
    fi
    rm -f -- "$dir/redis.pid"
  fi
  tq_redis_ping "$port" && tq_die "Redis on port $port is still answering"
  return 0
}

# ---------------------------------------------------------------- PostgreSQL

tq_pg_ready() {
  pg_isready -q -h 127.0.0.1 -p "$1" -t 3 >/dev/null 2>&1
}

# Prints the PostgreSQL folder of NAME (the real path, following the /tmp twin).
# With "create" as 2nd argument, creates it (owned by postgres as root).
tq_pg_dir() {
  local name=$1 mode=${2:-} sdir link twin
  sdir=$(tq_state_dir "$name")
  link="$sdir/pg"
  if [ -L "$link" ]; then
    twin=$(readlink -- "$link")
    if [ "$mode" = create ]; then
      mkdir -p -- "$twin"
      if tq_is_root; then chown postgres: -- "$twin"; fi
      chmod 700 -- "$twin"
    fi
    echo "$twin"
    return 0
  fi
  if [ -d "$link" ] || [ "$mode" != create ]; then
    echo "$link"
    return 0
  fi
  mkdir -p -- "$sdir"
  # 107 bytes is the limit of a Unix socket path: <dir>/.s.PGSQL.NNNNN
  local need_twin=0
  [ $(( ${#link} + 16 )) -gt 100 ] && need_twin=1
  if tq_is_root && ! runuser -u postgres -- test -x "$sdir" 2>/dev/null; then
    need_twin=1
  fi
  if [ "$need_twin" = 1 ]; then
    local root
    root=$(tq_tmp_twin_root)
    twin="$root/$name/pg"
    mkdir -p -- "$twin"
    chmod 755 -- "$root" "$root/$name"
    if tq_is_root; then chown postgres: -- "$twin"; fi
    chmod 700 -- "$twin"
    ln -sfn -- "$twin" "$link"
    tq_log "PostgreSQL files of '$name' live in $twin (linked from $link)"
    echo "$twin"
  else
    mkdir -p -- "$link"
    if tq_is_root; then chown postgres: -- "$link"; fi
    chmod 700 -- "$link"
    echo "$link"
  fi
}

# True when the server on PORT uses the data folder DATA (of NAME).
tq_pg_is_ours() {
  local port=$1 data=$2 name=$3 got
  got=$(PGPASSFILE="$(tq_state_dir "$name")/pgpass" PGCONNECT_TIMEOUT=3 \
    psql -X -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -Atc 'show data_directory' 2>/dev/null) || return 1
  [ "$got" = "$data" ]
}

# tq_pg_start NAME PORT [extra -c settings, e.g. fsync=off max_connections=200]
tq_pg_start() {
  local name=$1 port=$2; shift 2
  local bindir pgdir data opts s
  bindir=$(tq_pg_bindir)
  pgdir=$(tq_pg_dir "$name" create)
  data="$pgdir/data"
  tq_creds_ensure "$name"
  tq_creds_load "$name"
  tq_pgpass_write "$name" "$port"
  if tq_pg_ready "$port"; then
    if tq_pg_is_ours "$port" "$data" "$name"; then
      tq_log "PostgreSQL ($name) already running on 127.0.0.1:$port"
      return 0
    fi
    tq_die "port $port answers as a PostgreSQL that is not $data; pick another port"
  fi
  if tq_port_in_use "$port"; then
    tq_die "port $port is in use by something else; pick another port"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    rm -rf -- "$data"
    tq_log "initdb ($name) in $data (scram-sha-256 for every connection)"
    # The superuser's password reaches initdb by a file only postgres reads.
    local pwfile="$pgdir/.pwfile"
    (umask 077; printf '%s\n' "$TQ_CRED_PG_POSTGRES" >"$pwfile")
    if tq_is_root; then chown postgres: -- "$pwfile"; fi
    if ! tq_as_pg "$bindir/initdb" -D "$data" -U postgres --auth=scram-sha-256 \
        --pwfile="$pwfile" -E UTF8 --no-sync >"$pgdir/initdb.log" 2>&1; then
      rm -f -- "$pwfile"
      tq_log_tail "$pgdir/initdb.log"
      tq_die "initdb failed"
    fi
    rm -f -- "$pwfile"
  elif grep -Eq '^[^#]*[[:space:]]trust([[:space:]]|$)' "$data/pg_hba.conf" 2>/dev/null; then
    tq_die "the PostgreSQL cluster in $data predates passwords (it trusts local connections); run deploy/local/down --purge first"
  fi
  opts="-c listen_addresses=127.0.0.1 -p $port -k $pgdir"
  for s in "$@"; do opts="$opts -c $s"; done
  tq_log "starting PostgreSQL ($name) on 127.0.0.1:$port (data in $data)"
  if ! tq_as_pg "$bindir/pg_ctl" -D "$data" -l "$pgdir/pg.log" -w -t 60 \
      -o "$opts" start >/dev/null; then
    tq_log_tail "$pgdir/pg.log"
    tq_die "pg_ctl start failed"
  fi
  for _ in $(seq 1 100); do   # 10 s
    tq_pg_ready "$port" && return 0
    sleep 0.1
  done
  tq_log_tail "$pgdir/pg.log"
  tq_die "PostgreSQL on 127.0.0.1:$port is not ready after 10 s"
}

# tq_pg_stop NAME PORT
tq_pg_stop() {
  local name=$1 port=$2 bindir pgdir data
  pgdir=$(tq_pg_dir "$name")
  data="$pgdir/data"
  if [ ! -f "$data/postmaster.pid" ]; then
    if tq_pg_ready "$port" && tq_pg_is_ours "$port" "$data" "$name"; then :; else return 0; fi
  fi
  bindir=$(tq_pg_bindir)
  tq_log "stopping PostgreSQL ($name) on 127.0.0.1:$port"
  if ! tq_as_pg "$bindir/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null 2>&1; then
    # pg_ctl says it is not running (stale pid file) or could not stop it.
    if tq_pg_ready "$port" && tq_pg_is_ours "$port" "$data" "$name"; then
      tq_log_tail "$pgdir/pg.log"
      tq_die "could not stop PostgreSQL ($name)"
    fi
  fi
  for _ in $(seq 1 100); do
    tq_pg_ready "$port" || return 0
    sleep 0.1
  done
  tq_die "PostgreSQL on port $port still answers after pg_ctl stop"
}


# ---------------------------------------------------------------- credentials

# Every local service account (docs/security.md): PostgreSQL roles
# postgres (superuser: setup and tests only), tq_migrate, tq_worker, tq_cli;
# Redis ACL users tq-admin (setup and tests only), tq-worker, tq-cli; and
# the tenant secrets key. Stored in STATE/credentials (0600), made once.
TQ_CRED_KEYS=(PG_POSTGRES PG_MIGRATE PG_WORKER PG_CLI REDIS_ADMIN REDIS_WORKER REDIS_CLI)

tq_gen_password() {
  head -c 64 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9' | head -c 32
}

# tq_creds_ensure NAME: writes STATE/credentials if it is missing.
tq_creds_ensure() {
  local d f k
  d=$(tq_state_dir "$1")
  f="$d/credentials"
  mkdir -p -- "$d"
  [ -s "$f" ] && return 0
  (umask 077
   { for k in "${TQ_CRED_KEYS[@]}"; do printf '%s=%s\n' "$k" "$(tq_gen_password)"; done
     printf 'SECRETS_KEY=local1:%s\n' "$(head -c 32 /dev/urandom | base64 -w0)"
   } >"$f.tmp" && mv -f -- "$f.tmp" "$f")
  chmod 600 -- "$f"
}

# tq_creds_load NAME: sets TQ_CRED_<KEY> from STATE/credentials.
tq_creds_load() {
  local f k v
  f="$(tq_state_dir "$1")/credentials"
  [ -r "$f" ] || return 1
  local line
  # (not IFS='=' read: it would drop a trailing '=' of base64 padding)
  while IFS= read -r line; do
    k=${line%%=*} v=${line#*=}
    case $k in
      PG_*|REDIS_*|SECRETS_KEY) printf -v "TQ_CRED_$k" '%s' "$v" ;;
    esac
  done <"$f"
}

# tq_pgpass_write NAME PORT [HOST]: STATE/pgpass (0600) for psql, from the
# credentials (HOST: where the server listens, 127.0.0.1 unless given).
tq_pgpass_write() {
  local name=$1 port=$2 host=${3:-127.0.0.1} f
  f="$(tq_state_dir "$name")/pgpass"
  (umask 077
   { printf '%s:%s:*:postgres:%s\n' "$host" "$port" "$TQ_CRED_PG_POSTGRES"
     printf '%s:%s:*:tq_migrate:%s\n' "$host" "$port" "$TQ_CRED_PG_MIGRATE"
     printf '%s:%s:*:tq_worker:%s\n' "$host" "$port" "$TQ_CRED_PG_WORKER"
     printf '%s:%s:*:tq_cli:%s\n' "$host" "$port" "$TQ_CRED_PG_CLI"
   } >"$f")
}

# tq_redis_acl_file NAME FILE: the ACL users of NAME's Redis (0600; passwords
# as SHA-256, never in clear). Commands and keys are what the code uses
# (common/src/queue.c, admin_queue.c, their Lua scripts, worker/steps/redis_acl.c).
tq_redis_acl_file() {
  local name=$1 f=$2 h
  tq_creds_load "$name"
  h() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
  (umask 077
   {
     echo "user default off resetkeys resetchannels -@all"
     echo "user tq-admin on #$(h "$TQ_CRED_REDIS_ADMIN") ~* &* +@all"
     # worker: dispatch, leases, heartbeats, reaper, delayed; Lua scripts run
     # their redis.call()s as this user. ACL SETUSER/DELUSER/GETUSER/SAVE
     # manage tenant namespaces: that makes this user an administrator in
     # effect (see docs/security.md). CONFIG GET: the noeviction check.
     echo "user tq-worker on #$(h "$TQ_CRED_REDIS_WORKER") ~tq:* resetchannels -@all" \
       "+select +ping +blmove +lmove +lpush +rpush +lrem +lrange +llen +set +get +del" \
       "+exists +sadd +srem +smembers +zadd +zrem +zcard +zcount +zrangebyscore +pttl" \
       "+time +eval +scan +config|get +acl|setuser +acl|deluser +acl|getuser +acl|save"
     # cli: submit (LPUSH/ZADD), status and stats (reads), dead and requeue
     # (LRANGE/LREM and the admin Lua script).
     echo "user tq-cli on #$(h "$TQ_CRED_REDIS_CLI") ~tq:* resetchannels -@all" \
       "+select +ping +lpush +rpush +lrem +lrange +llen +zadd +zrem +zcard +zcount" \
       "+smembers +get +pttl +exists +eval"
   } >"$f")
  unset -f h
}

# tq_pg_roles NAME PORT [HOST]: create or update the service roles with their
# passwords (statements on stdin, never in argv; not logged on error).
tq_pg_roles() {
  local name=$1 port=$2 host=${3:-127.0.0.1}
  tq_creds_load "$name"
  PGPASSFILE="$(tq_state_dir "$name")/pgpass" PGCONNECT_TIMEOUT=5 \
    psql -X -q -v ON_ERROR_STOP=1 -h "$host" -p "$port" -U postgres -d postgres \
    >/dev/null <<SQL || tq_die "could not create the service roles"
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
SET password_encryption = 'scram-sha-256';
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tq_migrate') THEN CREATE ROLE tq_migrate; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tq_worker') THEN CREATE ROLE tq_worker; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tq_cli') THEN CREATE ROLE tq_cli; END IF;
END \$\$;
ALTER ROLE tq_migrate LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '$TQ_CRED_PG_MIGRATE';
ALTER ROLE tq_worker LOGIN NOSUPERUSER NOCREATEDB CREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '$TQ_CRED_PG_WORKER';
ALTER ROLE tq_cli LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '$TQ_CRED_PG_CLI';
SQL
}

# ---------------------------------------------------------------- services

# tq_services_up NAME REDIS_PORT PG_PORT [pg -c settings...]
tq_services_up() {
  local name=$1 rport=$2 pport=$3; shift 3
  mkdir -p -- "$(tq_state_dir "$name")"
  tq_write_ports "$name" "$rport" "$pport"
  tq_redis_start "$name" "$rport"
  tq_pg_start "$name" "$pport" "$@"
  tq_pg_roles "$name" "$pport"
}

# ---------------------------------------------------------------- stand-ins

# tq_stub_start NAME STUB PORT [ARGS...]: runs tests/stubs/STUB.py (a local
# stand-in for a SaaS we cannot run here) on 127.0.0.1:PORT in the background,
# pid in STATE/stub-STUB.pid, log in STATE/stub-STUB.log. Harmless if it runs.
tq_stub_start() {
  local name=$1 stub=$2 port=$3; shift 3
  local d pidf n=0
  d=$(tq_state_dir "$name")
  pidf="$d/stub-$stub.pid"
  if [ -f "$pidf" ] && tq_pid_is "$(cat -- "$pidf")" "$stub.py"; then
    return 0
  fi
  if tq_port_in_use "$port"; then
    tq_die "port $port (for $stub) is in use by something else"
  fi
  mkdir -p -- "$d"
  rm -f -- "$pidf"
  python3 "$TQ_TOP/tests/stubs/$stub.py" --port "$port" --pid-file "$pidf" "$@" \
    >>"$d/stub-$stub.log" 2>&1 </dev/null &
  while ! tq_port_in_use "$port"; do
    n=$((n + 1))
    [ "$n" -lt 100 ] || { tq_log_tail "$d/stub-$stub.log"; tq_die "$stub did not start on port $port"; }
    sleep 0.1
  done
}

# tq_stubs_stop NAME: stops the stand-ins recorded in STATE/stub-*.pid, by pid.
tq_stubs_stop() {
  local d f pid stub
  d=$(tq_state_dir "$1")
  for f in "$d"/stub-*.pid; do
    [ -e "$f" ] || continue
    stub=$(basename -- "$f" .pid)
    stub=${stub#stub-}
    pid=$(cat -- "$f" 2>/dev/null || true)
    if tq_pid_is "$pid" "$stub.py" || { [ "$stub" = prometheus ] && tq_pid_is "$pid" prometheus; }; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
    rm -f -- "$f"
  done
}

# tq_prometheus_start NAME PORT TARGET_PORT: Debian's prometheus on
# 127.0.0.1:PORT scraping the SaaS stand-in's /metrics (per-tenant series)
# every 250 ms, data under STATE/prometheus, pid in STATE/stub-prometheus.pid
# (stopped with the stand-ins). Bounded: gives up after 20 s.
tq_prometheus_start() {
  local name=$1 port=$2 target=$3 d pidf n=0
  d=$(tq_state_dir "$name")
  pidf="$d/stub-prometheus.pid"
  if [ -f "$pidf" ] && tq_pid_is "$(cat -- "$pidf")" prometheus; then
    return 0
  fi
  command -v prometheus >/dev/null 2>&1 || { tq_warn "prometheus is not installed: check-monitoring stays off"; return 1; }
  tq_port_in_use "$port" && tq_die "port $port (for prometheus) is in use by something else"
  mkdir -p -- "$d/prometheus"
  printf '%s\n' "global: {scrape_interval: 250ms, scrape_timeout: 200ms}" "scrape_configs:" \
    "  - job_name: saas" "    static_configs: [{targets: ['127.0.0.1:$target']}]" >"$d/prometheus.yml"
  prometheus --config.file="$d/prometheus.yml" --storage.tsdb.path="$d/prometheus" \
    --storage.tsdb.retention.time=1d --web.listen-address="127.0.0.1:$port" \
    >>"$d/stub-prometheus.log" 2>&1 </dev/null &
  echo $! >"$pidf"
  until curl -sf "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; do
    n=$((n + 1))
    [ "$n" -lt 200 ] || { tq_log_tail "$d/stub-prometheus.log"; tq_die "prometheus did not become ready on port $port"; }
    sleep 0.1
  done
  # and has scraped the stand-in once, so a tenant's check waits one scrape
  # interval at most, never Prometheus's start-up (bounded: 10 s)
  n=0
  until curl -sf "http://127.0.0.1:$port/api/v1/query?query=up%3D%3D1" 2>/dev/null | grep -q '"job":"saas"'; do
    n=$((n + 1))
    [ "$n" -lt 100 ] || { tq_warn "prometheus has not scraped the stand-in yet"; return 0; }
    sleep 0.1
  done
}

# tq_services_down NAME: stops what the ports file of NAME records.
tq_services_down() {
  local name=$1
  tq_stubs_stop "$name"
  if ! tq_read_ports "$name"; then
    tq_log "no services recorded for '$name' ($(tq_state_dir "$name")/ports)"
    return 0
  fi
  tq_redis_stop "$name" "$TQ_STATE_REDIS_PORT"
  tq_pg_stop "$name" "$TQ_STATE_PG_PORT"
}

# tq_redis_running NAME PORT / tq_pg_running NAME PORT: the service of NAME
# answers on PORT (and it is ours, not another instance on the same port).
tq_redis_running() {
  tq_redis_ping "$2" && tq_redis_is_ours "$2" "$(tq_state_dir "$1")/redis" "$1"
}
tq_pg_running() {
  tq_pg_ready "$2" && tq_pg_is_ours "$2" "$(tq_pg_dir "$1")/data" "$1"
}

# tq_purge NAME: deletes the state folder of NAME and its /tmp twin.
# Call after tq_services_down.
tq_purge() {
  local name=$1 sdir link twin root
  sdir=$(tq_state_dir "$name")
  link="$sdir/pg"
  root=$(tq_tmp_twin_root)
  if [ -L "$link" ]; then
    twin=$(readlink -- "$link")
    case $twin in
      /tmp/tq-local-*/"$name"/pg) rm -rf -- "$twin" ;;
      *) tq_warn "not deleting unexpected PostgreSQL folder $twin" ;;
    esac
  fi
  if [ -d "$root/$name" ]; then rm -rf -- "${root:?}/$name"; fi
  rmdir -- "$root" 2>/dev/null || true
  if [ -e "$sdir" ] || [ -L "$sdir" ]; then
    tq_log "deleting $sdir"
    rm -rf -- "$sdir"
  fi
  rmdir -- "$TQ_LOCAL_DIR" 2>/dev/null || true
}

# True when PID is a live (not zombie) process.
tq_pid_alive() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null \
    && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# True when PID is a live process named NAME: its comm, or the program or
# script of its command line (a script's comm is its interpreter's).
tq_pid_is() {
  local pid=$1 name=$2
  tq_pid_alive "$pid" || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && return 0
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n 2 \
    | grep -Eq "(^|/)$name\$"
}

# Stops processes recorded in DIR/worker-*.pid that are still tq-worker
# processes (a leftover of a demo that was killed). Never by name: by pid,
# after checking /proc/PID/comm.
tq_stop_stale_workers() {
  local dir=$1 f pid n
  for f in "$dir"/worker-*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat -- "$f" 2>/dev/null || true)
    if tq_pid_is "$pid" tq-worker; then
      tq_log "stopping leftover worker pid $pid ($f)"
      kill -TERM "$pid" 2>/dev/null || true
      n=0
      while tq_pid_is "$pid" tq-worker && [ "$n" -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
      if tq_pid_is "$pid" tq-worker; then
        tq_warn "worker pid $pid ignored SIGTERM for 30 s: sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
    rm -f -- "$f"
  done
}

# ---------------------------------------------------------------- demo setup

TQ_DEMO=demo
TQ_DEMO_DB=tenantq
TQ_BIN_DIR=${TQ_BIN_DIR:-$TQ_TOP/.build/release/bin}

# Ports of the demo services: what is recorded, else env, else defaults.
# An explicit TQ_LOCAL_*_PORT wins over the record (up checks conflicts).
# The stand-ins' ports are recorded in STATE/stub-ports when they start
# (tq_demo_stubs_up picks free ones); until then they are empty.
tq_demo_ports() {
  local rec_r='' rec_p=''
  if tq_read_ports "$TQ_DEMO"; then rec_r=$TQ_STATE_REDIS_PORT rec_p=$TQ_STATE_PG_PORT; fi
  TQ_DEMO_REDIS_PORT=${TQ_LOCAL_REDIS_PORT:-${rec_r:-6390}}
  TQ_DEMO_PG_PORT=${TQ_LOCAL_PG_PORT:-${rec_p:-5440}}
  tq_read_stub_ports
}

# Sets TQ_DEMO_S3_PORT and TQ_DEMO_SAAS_PORT from STATE/stub-ports (empty
# when the stand-ins have not been started).
tq_read_stub_ports() {
  local f k v
  f="$(tq_state_dir "$TQ_DEMO")/stub-ports"
  TQ_DEMO_S3_PORT='' TQ_DEMO_SAAS_PORT='' TQ_DEMO_PROM_PORT=''
  [ -r "$f" ] || return 0
  while IFS='=' read -r k v; do
    case $k in
      S3_PORT) TQ_DEMO_S3_PORT=$v ;;
      SAAS_PORT) TQ_DEMO_SAAS_PORT=$v ;;
      PROM_PORT) TQ_DEMO_PROM_PORT=$v ;;
    esac
  done <"$f"
}

# tq_stub_port STUB RECORDED WANTED DEFAULT: the port STUB runs on (if its pid
# file says it runs), else WANTED (TQ_LOCAL_*_PORT, must be free), else the
# first free port from DEFAULT, so two checkouts on one machine never collide.
tq_stub_port() {
  local stub=$1 recorded=$2 wanted=$3 dflt=$4 pidf
  pidf="$(tq_state_dir "$TQ_DEMO")/stub-$stub.pid"
  if [ -n "$recorded" ] && [ -f "$pidf" ] \
     && { tq_pid_is "$(cat -- "$pidf")" "$stub.py" || tq_pid_is "$(cat -- "$pidf")" "$stub"; }; then
    echo "$recorded"
  elif [ -n "$wanted" ]; then
    echo "$wanted"
  else
    tq_free_port "$dflt"
  fi
}

# Starts the stand-ins of the demo with credentials made once per state folder.
tq_demo_stubs_up() {
  local sdir cred
  sdir=$(tq_state_dir "$TQ_DEMO")
  cred="$sdir/stub-credentials"
  if [ ! -s "$cred" ]; then
    (umask 077; {
      printf 'AKIA%s\n' "$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)"
      head -c 30 /dev/urandom | base64 | tr -d '/+=\n'; echo
      head -c 24 /dev/urandom | base64 | tr -d '/+=\n'; echo
    } >"$cred")
  fi
  # Free ports, picked one after the other (the first is taken before the
  # second is looked for) and recorded for `env`.
  tq_read_stub_ports
  TQ_DEMO_S3_PORT=$(tq_stub_port s3server "$TQ_DEMO_S3_PORT" "${TQ_LOCAL_S3_PORT:-}" 9390)
  # Secrets by environment, never on a command line (process lists show those).
  # One S3 stand-in serves every region ('*'): each bucket lives where its
  # CreateBucket's LocationConstraint put it, as GetBucketLocation reports.
  S3_ACCESS_KEY=$(sed -n 1p "$cred") S3_SECRET_KEY=$(sed -n 2p "$cred") \
    tq_stub_start "$TQ_DEMO" s3server "$TQ_DEMO_S3_PORT" --quiet --region '*' --data "$sdir/s3"
  # The tenants' JWT signing key (made once, like the secrets key) and its
  # public half for the vector stand-in, published the operator's way.
  if [ ! -s "$sdir/auth.keys" ]; then
    (umask 077; printf 'demo-%s:%s\n' "$(date -u +%Y%m%d)" "$(head -c 32 /dev/urandom | base64)" >"$sdir/auth.keys")
  fi
  # (not the caller's region map: a shell from before a purge may name one
  # that is gone, and this state's is written below)
  env -u TQ_REGIONS_FILE TQ_AUTH_KEY_FILE="$sdir/auth.keys" \
    "$TQ_BIN_DIR/tq-enqueue" auth jwks >"$sdir/jwks.json" \
    || tq_die "tq-enqueue auth jwks failed"
  TQ_DEMO_SAAS_PORT=$(tq_stub_port saas_stub "$TQ_DEMO_SAAS_PORT" "${TQ_LOCAL_SAAS_PORT:-}" 9391)
  SAAS_TOKEN=$(sed -n 3p "$cred") tq_stub_start "$TQ_DEMO" saas_stub "$TQ_DEMO_SAAS_PORT" --quiet \
    --jwks "$sdir/jwks.json"
  TQ_DEMO_PROM_PORT=$(tq_stub_port prometheus "$TQ_DEMO_PROM_PORT" "${TQ_LOCAL_PROMETHEUS_PORT:-}" 9392)
  tq_prometheus_start "$TQ_DEMO" "$TQ_DEMO_PROM_PORT" "$TQ_DEMO_SAAS_PORT" || TQ_DEMO_PROM_PORT=''
  printf 'S3_PORT=%s\nSAAS_PORT=%s\nPROM_PORT=%s\n' "$TQ_DEMO_S3_PORT" "$TQ_DEMO_SAAS_PORT" \
    "$TQ_DEMO_PROM_PORT" >"$sdir/stub-ports"
  tq_demo_regions_write "$sdir/regions.json"
}

# tq_demo_regions_write FILE: the demo's region map (TQ_REGIONS_FILE,
# docs/design.md "Data residency"): every region of
# deploy/local/tenants-demo.csv, each on the local stand-ins.
tq_demo_regions_write() {
  local s3="http://127.0.0.1:$TQ_DEMO_S3_PORT" saas="http://127.0.0.1:$TQ_DEMO_SAAS_PORT" r sep=''
  {
    printf '{\n'
    for r in us-east-1 us-west-2 eu-west-1; do
      printf '%s  "%s": {"s3_region": "%s", "s3_endpoint": "%s", "vector_url": "%s", "dashboard_url": "%s", "pg_url": null}' \
        "$sep" "$r" "$r" "$s3" "$saas" "$saas"
      sep=$',\n'
    done
    printf '\n}\n'
  } >"$1.tmp" && mv -f -- "$1.tmp" "$1"
}

# Workers registered with the demo's Redis that still heartbeat (started by
# hand after `eval "$(deploy/local/env)"`): one line "queue worker-id pid" each.
tq_demo_live_workers() {
  local k q id pid
  tq_redis_admin "$TQ_DEMO" "$TQ_DEMO_REDIS_PORT" --scan --pattern '*:workers' 2>/dev/null | while read -r k; do
    q=${k#*\{}; q=${q%%\}*}
    tq_redis_admin "$TQ_DEMO" "$TQ_DEMO_REDIS_PORT" smembers "$k" 2>/dev/null | while read -r id; do
      [ -n "$id" ] || continue
      [ "$(tq_redis_admin "$TQ_DEMO" "$TQ_DEMO_REDIS_PORT" exists "${k%workers}hb:$id" 2>/dev/null)" = 1 ] || continue
      # worker ids are <host>-<pid>-<random>
      pid=${id%-*}; pid=${pid##*-}
      echo "$q $id $pid"
    done
  done
}

# tq_demo_env_lines [cli|worker|migrate]: export lines for one service
# account (default cli: the operator's shell). URLs carry the passwords of
# STATE/credentials; the secrets key (TQ_SECRETS_KEY) is the same for all,
# the CLI needs it for `tq-enqueue credentials` (docs/security.md).
tq_demo_env_lines() {
  local role=${1:-cli} sdir pguser pgpw ruser rpw
  sdir=$(tq_state_dir "$TQ_DEMO")
  tq_creds_load "$TQ_DEMO" || tq_die "no credentials in $sdir (run deploy/local/up)"
  case $role in
    cli) pguser=tq_cli pgpw=$TQ_CRED_PG_CLI ruser=tq-cli rpw=$TQ_CRED_REDIS_CLI ;;
    worker) pguser=tq_worker pgpw=$TQ_CRED_PG_WORKER ruser=tq-worker rpw=$TQ_CRED_REDIS_WORKER ;;
    migrate) pguser=tq_migrate pgpw=$TQ_CRED_PG_MIGRATE ruser=tq-cli rpw=$TQ_CRED_REDIS_CLI ;;
    *) tq_die "unknown role '$role' (cli, worker or migrate)" ;;
  esac
  printf 'export TQ_REDIS_URL=%q\n' "redis://$ruser:$rpw@127.0.0.1:$TQ_DEMO_REDIS_PORT/0"
  printf 'export TQ_DATABASE_URL=%q\n' "postgresql://$pguser:$pgpw@127.0.0.1:$TQ_DEMO_PG_PORT/$TQ_DEMO_DB"
  printf 'export TQ_SECRETS_KEY=%q\n' "$TQ_CRED_SECRETS_KEY"
  # Tenant namespaces live in the same Redis locally; only the worker manages them.
  if [ "$role" = worker ]; then
    printf 'export TQ_TENANT_REDIS_URL=%q\n' "redis://tq-worker:$TQ_CRED_REDIS_WORKER@127.0.0.1:$TQ_DEMO_REDIS_PORT/0"
  fi
  printf 'export TQ_ENVIRONMENT=%q\n' "local"
  # Where each region's resources go (written with the stand-ins' ports).
  if [ -r "$sdir/regions.json" ]; then
    printf 'export TQ_REGIONS_FILE=%q\n' "$sdir/regions.json"
  fi
  # Local stand-ins (tests/stubs): an S3 that checks SigV4, and the SaaS APIs.
  if [ -r "$sdir/stub-credentials" ] && [ -n "$TQ_DEMO_S3_PORT" ]; then
    printf 'export TQ_S3_ENDPOINT=%q\n' "http://127.0.0.1:$TQ_DEMO_S3_PORT"
    printf 'export TQ_S3_ACCESS_KEY=%q\n' "$(sed -n 1p "$sdir/stub-credentials")"
    printf 'export TQ_S3_SECRET_KEY=%q\n' "$(sed -n 2p "$sdir/stub-credentials")"
    printf 'export TQ_VECTOR_URL=%q\n' "http://127.0.0.1:$TQ_DEMO_SAAS_PORT"
    printf 'export TQ_DASHBOARD_URL=%q\n' "http://127.0.0.1:$TQ_DEMO_SAAS_PORT"
    printf 'export TQ_VECTOR_TOKEN=%q\n' "$(sed -n 3p "$sdir/stub-credentials")"
    printf 'export TQ_DASHBOARD_TOKEN=%q\n' "$(sed -n 3p "$sdir/stub-credentials")"
    printf 'export TQ_NOTIFY_WEBHOOK_URL=%q\n' "http://127.0.0.1:$TQ_DEMO_SAAS_PORT/hooks/tenantq-onboarding"
    # the tenants' JWT signing keys (the CLI too: `tq-enqueue auth jwks`)
    [ -r "$sdir/auth.keys" ] && printf 'export TQ_AUTH_KEY_FILE=%q\n' "$sdir/auth.keys"
    [ -z "$TQ_DEMO_PROM_PORT" ] || printf 'export TQ_PROMETHEUS_URL=%q\n' "http://127.0.0.1:$TQ_DEMO_PROM_PORT"
  fi
  # shellcheck disable=SC2016  # $PATH is expanded by the shell that evals this
  printf 'export PATH=%q:"$PATH"\n' "$TQ_BIN_DIR"
}

# Where the demo services run and how to reach them, on stderr; no secret.
tq_demo_how_to_reach() {
  tq_log "ready: Redis 127.0.0.1:$TQ_DEMO_REDIS_PORT, PostgreSQL 127.0.0.1:$TQ_DEMO_PG_PORT (database $TQ_DEMO_DB)"
  [ -z "$TQ_DEMO_S3_PORT" ] || tq_log "stand-ins: S3 http://127.0.0.1:$TQ_DEMO_S3_PORT, SaaS APIs http://127.0.0.1:$TQ_DEMO_SAAS_PORT (credentials in $(tq_state_dir "$TQ_DEMO")/stub-credentials)"
  tq_log "to use them in a shell: eval \"\$(deploy/local/env)\"  (then tq-enqueue status --all, psql \"\$TQ_DATABASE_URL\"); a worker: eval \"\$(deploy/local/env worker)\"; tq-worker"
  tq_log "to stop them: deploy/local/down [--purge]"
}

# Exports the same variables (of ROLE, default cli) into the current shell.
tq_demo_export_env() {
  eval "$(tq_demo_env_lines "${1:-cli}")"
}

# psql as the superuser (setup and checks only; the services never use it).
tq_demo_psql() {
  PGPASSFILE="$(tq_state_dir "$TQ_DEMO")/pgpass" PGCONNECT_TIMEOUT=5 \
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$TQ_DEMO_PG_PORT" -U postgres "$@"
}

# tq_demo_up build|nobuild: everything `up` does but printing the env lines;
# "nobuild" skips installing packages and building.
tq_demo_up() {
  local what=$1
  if [ "$what" = build ]; then
    tq_ensure_packages
    tq_build release
  fi
  tq_demo_ports
  if tq_read_ports "$TQ_DEMO" \
     && { [ "$TQ_STATE_REDIS_PORT" != "$TQ_DEMO_REDIS_PORT" ] || [ "$TQ_STATE_PG_PORT" != "$TQ_DEMO_PG_PORT" ]; } \
     && { tq_redis_running "$TQ_DEMO" "$TQ_STATE_REDIS_PORT" || tq_pg_running "$TQ_DEMO" "$TQ_STATE_PG_PORT"; }; then
    tq_die "demo services already run on ports $TQ_STATE_REDIS_PORT/$TQ_STATE_PG_PORT; run deploy/local/down first to move them to $TQ_DEMO_REDIS_PORT/$TQ_DEMO_PG_PORT"
  fi
  tq_services_up "$TQ_DEMO" "$TQ_DEMO_REDIS_PORT" "$TQ_DEMO_PG_PORT"
  tq_demo_stubs_up
  if [ -z "$(tq_demo_psql -d postgres -Atc "select 1 from pg_database where datname = '$TQ_DEMO_DB'")" ]; then
    tq_log "creating database $TQ_DEMO_DB (owner tq_migrate)"
    tq_demo_psql -d postgres -c "create database $TQ_DEMO_DB owner tq_migrate" >/dev/null \
      || tq_die "could not create database $TQ_DEMO_DB"
  fi
  [ -f "$TQ_TOP/deploy/pipelines/tenant-provision.json" ] \
    || tq_warn "pipeline file $TQ_TOP/deploy/pipelines/tenant-provision.json is missing"
  [ -x "$TQ_BIN_DIR/tq-enqueue" ] || tq_die "$TQ_BIN_DIR/tq-enqueue not found (did the build succeed?)"
  tq_log "tq-enqueue migrate (as tq_migrate)"
  ( eval "$(tq_demo_env_lines migrate)"; "$TQ_BIN_DIR/tq-enqueue" migrate >&2 ) \
    || tq_die "tq-enqueue migrate failed"
  # The operator's named pipelines (submit picks one; tenant-provision is the
  # default), registered with the admin account: tq_cli may only read them.
  local pl
  for pl in "$TQ_TOP"/deploy/pipelines/*.json; do
    local extra=()
    [ "$(basename -- "$pl")" != tenant-provision.json ] || extra=(--default)
    ( eval "$(tq_demo_env_lines migrate)"
      "$TQ_BIN_DIR/tq-enqueue" pipeline register "$pl" --by deploy/local "${extra[@]}" >&2 ) \
      || tq_die "tq-enqueue pipeline register $pl failed"
  done
  tq_demo_export_env cli
}

# ---------------------------------------------------------------- JSON

# Reads the JSON of `tq-enqueue status --json` on stdin and prints one line
# "tenant_id<TAB>status" for each object of the top-level "tenants" array.
# Only keys of those objects count (nested objects with their own "status",
# e.g. steps, are ignored). A tiny tokenizer in awk: no jq or python needed.
tq_json_tenant_statuses() {
  awk '
    { s = s $0 "\n" }
    function intenant() {
      return depth == 3 && type[1] == "{" && key[1] == "tenants" && type[2] == "[" && type[3] == "{"
    }
    function value(v) {
      if (intenant()) {
        if (key[3] == "tenant_id") tid = v
        else if (key[3] == "status") st = v
      }
    }
    END {
      n = length(s); i = 1; depth = 0
      while (i <= n) {
        c = substr(s, i, 1)
        if (c == "\"") {
          j = i + 1; str = ""
          while (j <= n) {
            d = substr(s, j, 1)
            if (d == "\\") { str = str substr(s, j, 2); j += 2; continue }
            if (d == "\"") break
            str = str d; j++
          }
          i = j + 1
          k = i
          while (k <= n && index(" \t\r\n", substr(s, k, 1)) > 0) k++
          if (type[depth] == "{" && substr(s, k, 1) == ":") { key[depth] = str; i = k + 1; continue }
          value(str)
          continue
        }
        if (c == "{" || c == "[") {
          depth++; type[depth] = c; key[depth] = ""
          if (intenant()) { tid = ""; st = "" }
          i++; continue
        }
        if (c == "}" || c == "]") {
          if (c == "}" && intenant()) print (tid == "" ? "?" : tid) "\t" (st == "" ? "unknown" : st)
          depth--; i++; continue
        }
        if (index("-0123456789tfn", c) > 0) {
          j = i
          while (j <= n && index(",}] \t\r\n", substr(s, j, 1)) == 0) j++
          value(substr(s, i, j - i)); i = j; continue
        }
        i++
      }
    }'
}
