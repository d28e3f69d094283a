# Sourced by the benchmarks: a private PostgreSQL (fsync on, loopback only)
# in a folder the caller made, on a free port. PostgreSQL refuses to run as
# root, so as root it runs as the postgres user.
free_port() {   # first port from a random start where nothing listens
  local p=$((20000 + RANDOM % 20000))
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
# bench_pg_start DIR PORT: initdb in DIR/pg, start, create database tenantq
bench_pg_start() {
  local dir=$1 port=$2
  mkdir "$dir/pg" "$dir/pgrun"; if [ "$(id -u)" = 0 ]; then chown postgres "$dir/pg" "$dir/pgrun"; fi
  as_pg /usr/lib/postgresql/15/bin/initdb -D "$dir/pg" -U postgres --auth=trust -E UTF8 >/dev/null
  as_pg /usr/lib/postgresql/15/bin/pg_ctl -D "$dir/pg" -l "$dir/pgrun/pg.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/pgrun -c max_connections=300 -c shared_buffers=512MB -c synchronous_commit=on ${TQ_BENCH_PG_OPTS:-}" start >/dev/null \
    || { tail -n 5 "$dir/pgrun/pg.log" >&2; return 1; }
  createdb -h 127.0.0.1 -p "$port" -U postgres tenantq
}
bench_pg_stop() {   # bench_pg_stop DIR
  as_pg /usr/lib/postgresql/15/bin/pg_ctl -D "$1/pg" -m immediate -w stop >/dev/null 2>&1 || true
}
