#!/usr/bin/env bash
# A throwaway PostgreSQL server for the Ask-Data PostgreSQL connector tests.
#
#   scripts/pg_test_server.sh start DIR   # initdb + start in DIR; prints the server's URL
#   scripts/pg_test_server.sh stop DIR    # stops it (DIR can then be removed)
#
# Uses the server binaries of Debian's `postgresql` package (/usr/lib/postgresql/*/bin) or any
# on PATH. Listens on 127.0.0.1 at a free port, trust authentication, superuser `shovel`.
# PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` user.
# Exits 3 when no PostgreSQL server binaries are installed.
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?data directory}

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  bin=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
fi
if [ ! -x "$bin/initdb" ] || [ ! -x "$bin/pg_ctl" ]; then
  echo "no PostgreSQL server binaries (apt-get install postgresql)" >&2
  exit 3
fi

as=()
if [ "$(id -u)" = 0 ]; then
  as=(runuser -u postgres --)
fi

case "$cmd" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -U shovel -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgres://shovel@127.0.0.1:$port/postgres"
    ;;
  stop)
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
