#!/usr/bin/env bash
# Runs the benchmark harness (`wharf bench`) on this machine: installs nats-server, Redis and
# BullMQ (the peer), and for the console scenario Chromium and playwright-core, when missing,
# starts a throwaway Postgres cluster with durable settings, builds the release binary, measures,
# and renders docs/benchmarks.md from the results. Stops what it started by PID.
# Usage: ./bench.sh [wharf bench arguments], e.g. ./bench.sh --scale 0.1 --only raw_mcp
set -euo pipefail
cd "$(dirname "$0")"
WHARF_SCRIPT=bench.sh
. scripts/common.sh

ensure_nats_server
# The peer the throughput is held against (scenario peer_bullmq): Redis and BullMQ.
ensure_redis
ensure_bench_peer
# The console scenario: the web console built into the binary, Chromium and playwright-core.
ensure_console
ensure_chromium
if [ ! -d tests/node/node_modules/playwright-core ]; then
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
fi
# Durable: fsync and synchronous commit stay on (the defaults). Room for many connections.
start_postgres -c shared_buffers=256MB
# WHARF_BENCH_BINARY runs a binary built before (an A/B comparison of two builds, runs
# interleaved) instead of building this tree.
bin="${WHARF_BENCH_BINARY:-}"
if [ -z "$bin" ]; then
  cargo build --release -p wharf
  bin="${CARGO_TARGET_DIR:-target}/release/wharf"
fi
"$bin" bench --database-url "$PG_URL" \
  --out docs/benchmarks.jsonl --page docs/benchmarks.md "$@"
