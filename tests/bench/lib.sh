# Sourced by the benchmarks: a private PostgreSQL (fsync on, loopback only)
# in a folder the caller made, on a free port. PostgreSQL refuses to run as
# root, so as root it runs as the postgres user.
free_port() {   # first port from a random start where nothing listens
  local p=$((20000 + RANDOM % 20000))
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
# bench_pg_start DIR: initdb in DIR/pg, start on a free port (set in pport;
# another port if that one was taken before PostgreSQL bound it: other
# suites pick ports from the same range), create database tenantq
bench_pg_start() {
  local dir=$1 try
  mkdir "$dir/pg" "$dir/pgrun"; if [ "$(id -u)" = 0 ]; then chown postgres "$dir/pg" "$dir/pgrun"; fi
  as_pg /usr/lib/postgresql/15/bin/initdb -D "$dir/pg" -U postgres --auth=trust -E UTF8 >/dev/null
  for try in 1 2 3 4 5; do
    pport=$(free_port)
    as_pg /usr/lib/postgresql/15/bin/pg_ctl -D "$dir/pg" -l "$dir/pgrun/pg.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $pport -k $dir/pgrun -c max_connections=300 -c shared_buffers=512MB -c synchronous_commit=on ${TQ_BENCH_PG_OPTS:-}" start >/dev/null \
      && break
    echo "bench: PostgreSQL did not start on port $pport (try $try): $(tail -n 2 "$dir/pgrun/pg.log")" >&2
    [ "$try" = 5 ] && return 1
  done
  createdb -h 127.0.0.1 -p "$pport" -U postgres tenantq
}
bench_pg_stop() {   # bench_pg_stop DIR
  as_pg /usr/lib/postgresql/15/bin/pg_ctl -D "$1/pg" -m immediate -w stop >/dev/null 2>&1 || true
}
# bench_setup NAME BINARY [HINT]: what every bench does first. Needs $top (the
# checkout). Sets bin (TQ_BIN_DIR or .build/release/bin; exits naming NAME if
# BINARY is not built there), dir (a fresh folder under /tmp), rport and pport
# (free loopback ports), pids (processes to end at exit: add yours), and a
# trap that ends them, Redis and PostgreSQL and removes dir (copying
# PostgreSQL's log to TQ_BENCH_PG_LOG first when set). Starts the private
# Redis and PostgreSQL and exports TQ_REDIS_URL and TQ_DATABASE_URL (over
# loopback TCP; TQ_BENCH_PG_SOCKET=1: PostgreSQL over its Unix socket).
bench_setup() {
  local name=$1 need=$2 hint=${3:-}
  bin=${TQ_BIN_DIR:-$top/.build/release/bin}
  [ -x "$bin/$need" ] || { echo "$name: build first (cmake --build .build/release)$hint" >&2; exit 1; }
  dir=$(mktemp -d /tmp/tq-bench.XXXXXX)
  chmod 755 "$dir"
  pids=()
  trap bench_cleanup EXIT
  # A port free when looked at can be taken before Redis binds it (other
  # suites pick ports from the same range): check Redis answers, else retry.
  local try
  for try in 1 2 3 4 5; do
    rport=$(free_port)
    redis-server --port "$rport" --bind 127.0.0.1 --dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" \
      --logfile "$dir/redis.log" --save '' --appendonly no
    for _ in $(seq 1 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli -p "$rport" ping >/dev/null 2>&1 && break
    echo "$name: redis did not start on port $rport (try $try)" >&2
  done
  bench_pg_start "$dir"   # sets pport
  local pghost=127.0.0.1
  [ "${TQ_BENCH_PG_SOCKET:-0}" = 1 ] && pghost=$dir/pgrun   # PostgreSQL over its Unix socket
  export TQ_REDIS_URL="redis://127.0.0.1:$rport/0" TQ_DATABASE_URL="host=$pghost port=$pport user=postgres dbname=tenantq"
}
bench_cleanup() {
  [ -z "${TQ_BENCH_PG_LOG:-}" ] || cp "$dir/pgrun/pg.log" "$TQ_BENCH_PG_LOG" 2>/dev/null || true
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
  bench_pg_stop "$dir"
  rm -rf "$dir"
}
# bench_trust_env: the bench cluster is a throwaway private trust cluster: its
# superuser is allowed explicitly, and the credentials store gets a key made
# for this run (docs/security.md).
bench_trust_env() {
  export TQ_ALLOW_SUPERUSER=1
  TQ_SECRETS_KEY="bench:$(head -c 32 /dev/urandom | base64 -w0)"
  export TQ_SECRETS_KEY
}
