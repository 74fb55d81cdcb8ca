#!/usr/bin/env bash
# Fuzzes the HTTP API from its own OpenAPI document with schemathesis: thousands of generated
# requests (valid and invalid) against a `wharf dev` that requires an API key, and fails on any
# 5xx, or any answer whose status, media type, headers or body the document does not allow.
# test.sh runs it after the test suite; alone: scripts/fuzz-api.sh [schemathesis arguments].
set -euo pipefail
cd "$(dirname "$0")/.."
WHARF_SCRIPT=fuzz-api.sh
. scripts/common.sh

ensure_nats_server
ensure_schemathesis
cargo build --quiet -p wharf
bin="${CARGO_TARGET_DIR:-target}/debug/wharf"

dir="$(mktemp -d)"
port="$(free_port)"
api="http://127.0.0.1:$port"
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

# A gateway that requires keys, and an admin key for the fuzzer (every route is reachable).
export WHARF_DATABASE_URL="sqlite://$dir/wharf.db?mode=rwc"
key="$("$bin" bootstrap-key --name fuzz --role admin 2>/dev/null)"
# A 5 s request deadline: a tool call on a queue no worker serves (the fuzz picks queues at
# random) then answers 202 after 4 s, as the deadline cuts its wait, instead of holding the
# request for its default 30 s wait, past the fuzzer's own 20 s timeout.
WHARF_GATEWAY__AUTH__MODE=required WHARF_GATEWAY__REQUEST_TIMEOUT_SECS=5 WHARF_LOG_FORMAT=json \
  "$bin" dev --http "127.0.0.1:$port" --data-dir "$dir" >"$dir/dev.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  if curl -fsS -H "Authorization: Bearer $key" "$api/api/v1/tools" 2>/dev/null | grep -q demo.echo; then
    break
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    say "wharf dev exited; its log:"; cat "$dir/dev.log" >&2; exit 1
  fi
  sleep 0.2
done

say "fuzzing $api from its OpenAPI document"
# One worker: with two, schemathesis 4.32's coverage phase once died of an internal KeyError
# (a race in its own caches), and one is no slower on two cores.
status=0
# From the temporary directory, where schemathesis keeps its caches.
# The hooks add `refused_only_for_state`; the config lets it judge every 422 (scripts/fuzz/).
fuzz="$(pwd)/scripts/fuzz"
(cd "$dir" && SCHEMATHESIS_HOOKS="$fuzz/hooks.py" "$WHARF_SCHEMATHESIS" \
  --config-file "$fuzz/schemathesis.toml" run "$api/api/v1/openapi.json" \
  --header "Authorization: Bearer $key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,positive_data_acceptance,refused_only_for_state,negative_data_rejection \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "${WHARF_FUZZ_EXAMPLES:-150}" \
  --workers 1 \
  --no-color \
  "$@") || status=$?
if grep -q '"level":"ERROR"' "$dir/dev.log"; then
  say "wharf dev logged errors while fuzzed:"; grep '"level":"ERROR"' "$dir/dev.log" | head -20 >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  say "the API fuzz failed (see above)"
  exit "$status"
fi
say "the API held: no 5xx, every answer as documented"
