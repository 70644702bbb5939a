#!/usr/bin/env bash
# A private PostgreSQL server for the store tests: its data and socket directories under DIR, a
# free loopback port, a random password. The host's own clusters, their configuration and their
# passwords are never touched.
#   test-postgres.sh start DIR   starts it; prints its connection URL as the only line on stdout
#   test-postgres.sh stop DIR    stops it and removes DIR
set -Eeuo pipefail
trap 'status=$?; echo "test-postgres: line $LINENO: \"$BASH_COMMAND\" failed (exit $status)" >&2' ERR
# Everything PostgreSQL's tools say goes to stderr; stdout carries only the URL (fd 3).
exec 3>&1 1>&2
usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$2

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "test-postgres: no PostgreSQL server under /usr/lib/postgresql (Debian package postgresql)" >&2
  exit 1
fi
# The server refuses to run as root: as root, it runs as the postgres user the package made.
as_server_user() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$action" in
  start)
    mkdir -p "$dir"
    chmod 700 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    (umask 077 && printf '%s\n' "$password" > "$dir/password")
    [ "$(id -u)" = 0 ] && chown postgres: "$dir/password"
    as_server_user "$bindir/initdb" --pgdata="$dir/data" --username=postgres --auth=scram-sha-256 \
      --pwfile="$dir/password" --encoding=UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 \
      || { tail -n 20 "$dir/initdb.log" >&2; echo "test-postgres: initdb failed" >&2; exit 1; }
    as_server_user mkdir -p "$dir/socket"
    # A free loopback port; another process may take it before the server binds, so retry.
    for attempt in 1 2 3 4 5; do
      port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
      # fsync off: a test server's data need not survive a power cut, and tests run faster.
      if as_server_user "$bindir/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait --timeout=60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir/socket -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start 3>&-; then
        echo "postgres://postgres:$password@127.0.0.1:$port/postgres" >&3
        exit 0
      fi
      [ "$attempt" = 5 ] && break
      sleep 1
    done
    tail -n 20 "$dir/server.log" >&2 || true
    echo "test-postgres: the private PostgreSQL server in $dir did not start" >&2
    exit 1
    ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_server_user "$bindir/pg_ctl" --pgdata="$dir/data" --mode=immediate --wait --timeout=30 stop 3>&- || true
    fi
    rm -rf "$dir"
    ;;
  *) usage ;;
esac
