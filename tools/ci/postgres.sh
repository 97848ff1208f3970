#!/usr/bin/env bash
# A throwaway PostgreSQL server for wanrt-serve's shared-queue tests (Debian's `postgresql`
# package; installed when missing). Prints the environment the tests read:
#   eval "$(bash tools/ci/postgres.sh start)"     # sets WANRT_TEST_POSTGRES, WANRT_TEST_PGDATA
#   bash tools/ci/postgres.sh stop "$WANRT_TEST_PGDATA"
# The server listens on 127.0.0.1 only, trusts local connections, and lives in a
# temporary folder that `stop` removes. Diagnostics go to stderr.
set -euo pipefail

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
# initdb and postgres refuse to run as root: run them as the package's `postgres` user.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
start)
    if [ -z "$(pg_bin)" ]; then
        export DEBIAN_FRONTEND=noninteractive
        for i in 1 2 3; do
            if $SUDO apt-get update -o DPkg::Lock::Timeout=600 >&2 && \
               $SUDO apt-get install -y -o DPkg::Lock::Timeout=600 --no-install-recommends postgresql >&2; then
                break
            fi
            echo "postgres.sh: apt-get failed (try $i), retrying in 10 s" >&2
            sleep 10
            if [ "$i" -eq 3 ]; then exit 1; fi
        done
    fi
    BIN="$(pg_bin)"
    DIR="$(mktemp -d /tmp/wanrt-pg.XXXXXX)"
    chmod 755 "$DIR"
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$DIR"; fi
    PORT=""
    for p in $(seq 54329 54399); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then PORT=$p; break; fi
    done
    [ -n "$PORT" ] || { echo "postgres.sh: no free port in 54329-54399" >&2; exit 1; }
    as_pg "$BIN/initdb" -D "$DIR/data" -A trust -U postgres >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; exit 1; }
    as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
        -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c max_connections=200" start >&2 \
        || { cat "$DIR/server.log" >&2; exit 1; }
    echo "postgres.sh: PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT ($DIR)" >&2
    echo "export WANRT_TEST_POSTGRES=postgres://postgres@127.0.0.1:$PORT/postgres"
    echo "export WANRT_TEST_PGDATA=$DIR"
    ;;
stop)
    DIR="${2:?usage: postgres.sh stop DIR}"
    if [ -d "$DIR/data" ]; then
        as_pg "$(pg_bin)/pg_ctl" -D "$DIR/data" -m fast -w stop >&2 || true
    fi
    case "$DIR" in /tmp/wanrt-pg.*) rm -rf "$DIR" ;; esac
    ;;
*)
    echo "usage: postgres.sh start | stop DIR" >&2
    exit 2
    ;;
esac
