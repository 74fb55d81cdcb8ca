# Wharf's image: the `wharf` binary (gateway with the web console built in, recorder, worker, the
# CLI, and the bundled demo MCP server `wharf mcp-demo`) on a distroless base, as a non-root user. Build from the repository:
#   docker build -t wharf:0.1.0 .
# Workers that run stdio MCP servers needing an interpreter (node, python) use an image of their
# own that adds it (docs/deployment.md).

# The web console (console/): static files the gateway embeds at compile time. --ignore-scripts:
# no package runs code at install; npm ci installs exactly console/package-lock.json.
FROM node:20-bookworm-slim AS console
WORKDIR /src
COPY schemas/openapi.json schemas/openapi.json
COPY console/package.json console/package-lock.json console/
RUN npm ci --prefix console --ignore-scripts --no-audit --no-fund
COPY console console
RUN npm run build --prefix console

FROM rust:1.95-slim-bookworm AS build
# make: jemalloc, the binary's allocator, is built from source (the image has gcc already).
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
COPY --from=console /src/console/dist console/dist
# --locked: exactly the dependencies of Cargo.lock. The caches survive between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p wharf \
    && cp target/release/wharf /wharf

# glibc, CA certificates and a `nonroot` user (65532), nothing else: no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /wharf /usr/local/bin/wharf
USER 65532:65532
EXPOSE 8080 9101 9102
# Kubernetes probes /livez and /readyz (infra/k8s); an image without a shell cannot run a
# HEALTHCHECK command of its own.
#checkov:skip=CKV_DOCKER_2:the orchestrator's probes (/livez, /readyz) check health; distroless has no shell for a HEALTHCHECK
ENTRYPOINT ["/usr/local/bin/wharf"]
CMD ["gateway"]
