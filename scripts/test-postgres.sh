#!/usr/bin/env bash
# Starts Debian's PostgreSQL on loopback for the store tests and prints the connection URL as its
# only line on stdout: everything the PostgreSQL tools say goes to stderr (pg_ctlcluster prints
# "Removed stale pid file." after an unclean stop, which must not end up inside the URL).
set -euo pipefail
exec 3>&1 1>&2
# (The server started below must not inherit fd 3, or the caller's $(...) would never end.)
version=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)
if [ -z "$version" ]; then echo "PostgreSQL is not installed" >&2; exit 1; fi
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$version main$"; then
  pg_createcluster "$version" main 3>&-
fi
if ! pg_lsclusters -h | awk '$1=="'"$version"'" && $2=="main" {print $4}' | grep -q online; then
  # A server killed uncleanly may leave children holding its shared memory for a moment.
  for attempt in 1 2 3 4 5; do
    pg_ctlcluster "$version" main start 3>&- && break
    [ "$attempt" = 5 ] && { echo "PostgreSQL $version/main does not start" >&2; exit 1; }
    sleep 1
  done
fi
port=$(pg_lsclusters -h | awk '$1=="'"$version"'" && $2=="main" {print $3}')
for _ in $(seq 1 50); do
  su postgres -c "psql -p $port -qAtc 'select 1'" >/dev/null 2>&1 && break
  sleep 0.2
done
su postgres -c "psql -p $port -qc \"ALTER USER postgres PASSWORD 'postgres'\""
echo "postgres://postgres:postgres@127.0.0.1:$port/postgres" >&3
