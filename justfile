# The commands people run. `just --list` shows them.

# Run Wharf locally: gateway, recorder, workers, nats-server, SQLite, demo MCP server.
dev *args:
    ./dev.sh {{args}}

# The whole test suite against real nats-server, Postgres and MCP servers.
test *args:
    ./test.sh {{args}}

# Formatting and clippy, as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

fmt:
    cargo fmt --all

# Rewrite schemas/json and schemas/openapi.json after a deliberate change of a wire type or route.
schemas:
    WHARF_BLESS=1 cargo test -p wharf-contract committed_json_schemas
    WHARF_BLESS=1 cargo test -p wharf-gateway the_committed_document_matches_the_code

# Check the Kubernetes manifests and the Dockerfile offline (part of `just test`); `--bless`
# rewrites the PrometheusRule made from infra/prometheus/alerts.yml.
k8s *args:
    scripts/check-k8s.sh {{args}}

# Fuzz the HTTP API from its OpenAPI document with schemathesis (the end of `just test`).
fuzz *args:
    scripts/fuzz-api.sh {{args}}

# Measure Wharf (raw hops, end to end, scaling, memory) and regenerate docs/benchmarks.md.
bench *args:
    ./bench.sh {{args}}

# Re-render docs/benchmarks.md from docs/benchmarks.jsonl without measuring.
bench-render:
    cargo run --quiet -p wharf -- bench --render-only --out docs/benchmarks.jsonl --page docs/benchmarks.md
