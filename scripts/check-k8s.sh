#!/usr/bin/env bash
# Checks the Kubernetes manifests (infra/k8s) and the Dockerfile offline: renders every overlay,
# validates every object against the Kubernetes schemas and the CRDs' schemas, runs checkov, and
# breaks copies on purpose to prove each check can fail (scripts/k8s/check.py says more).
# test.sh runs it; alone: scripts/check-k8s.sh [--bless: rewrite the generated PrometheusRule].
set -euo pipefail
cd "$(dirname "$0")/.."
WHARF_SCRIPT=check-k8s.sh
. scripts/common.sh

if ! command -v kubectl >/dev/null 2>&1; then
  say "kubectl (which renders kustomize overlays) is missing: install it from your distribution or https://kubernetes.io/docs/tasks/tools/"
  exit 1
fi
ensure_k8s_checkers
if [ ! -d tests/node/node_modules/@kubernetes-models/keda ]; then
  say "installing the tests' node packages with npm"
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
fi
"$WHARF_K8S_PYTHON" scripts/k8s/check.py "$@"
