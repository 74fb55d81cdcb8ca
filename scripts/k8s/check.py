"""Checks Wharf's Kubernetes manifests offline, as CI can (no cluster, no container engine).

1. infra/k8s/base/prometheus-rule.yaml is what infra/prometheus/alerts.yml makes (--bless
   rewrites it).
2. Every overlay renders with kustomize (`kubectl kustomize`).
3. Every rendered object of a built-in kind validates against the Kubernetes schemas
   (kubernetes-validate, strict: unknown fields are errors); every custom resource (KEDA's
   ScaledObject, the prometheus-operator's ServiceMonitor and PrometheusRule, CloudNativePG's
   Cluster) against its CRD's schema (tests/node/k8s-validate.mjs). An unknown kind is an error.
4. checkov finds nothing on the rendered manifests and the Dockerfile; each deliberate skip
   carries its reason (a `checkov.io/skipN` annotation, a `#checkov:skip` comment).

--self-test breaks a copy of each kind of input on purpose and insists every check fails on it.
"""

import copy
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
OVERLAYS = ["dev", "prod"]
EXAMPLES = [K8S / "examples" / "postgres-cluster.yaml"]
KUBERNETES_VERSION = "1.32.0"
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("postgresql.cnpg.io/v1", "Cluster"),
}
RULE_FILE = K8S / "base" / "prometheus-rule.yaml"
RULE_HEADER = """\
# Made from infra/prometheus/alerts.yml by scripts/k8s/check.py --bless: edit the alerts there.
# The prometheus-operator loads it into Prometheus (label `release` may need to match your
# Prometheus' ruleSelector).
"""


class BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL, descriptions) as `|` blocks, as people write them."""


BlockDumper.add_representer(
    str,
    lambda dumper, data: dumper.represent_scalar(
        "tag:yaml.org,2002:str", data, style="|" if "\n" in data else None
    ),
)


def prometheus_rule() -> str:
    alerts = yaml.safe_load((ROOT / "infra" / "prometheus" / "alerts.yml").read_text())
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "wharf"},
        "spec": {"groups": alerts["groups"]},
    }
    return RULE_HEADER + yaml.dump(rule, Dumper=BlockDumper, sort_keys=False, width=100)


def render(overlay: str) -> list:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def name_of(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def validate_builtin(objects: list) -> list:
    errors = []
    for obj in objects:
        if (obj.get("apiVersion"), obj.get("kind")) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{name_of(obj)}: no schema for {e.kind} {e.api_version}")
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            errors.append(f"{name_of(obj)}: {path}: {e.message}")
    return errors


def validate_custom(objects: list) -> list:
    custom = [o for o in objects if (o.get("apiVersion"), o.get("kind")) in CUSTOM_KINDS]
    result = subprocess.run(
        ["node", str(ROOT / "tests" / "node" / "k8s-validate.mjs")],
        input=json.dumps(custom),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        return [line for line in (result.stdout + result.stderr).splitlines() if line] or [
            "k8s-validate.mjs failed"
        ]
    return []


def checkov(files: list) -> list:
    """checkov on `files` (rendered manifests, Dockerfiles); its failures, one line each."""
    args = [str(pathlib.Path(sys.executable).parent / "checkov")]
    args += ["--quiet", "--compact", "--output", "json", "--skip-download"]
    args += ["--framework", "kubernetes", "dockerfile", "secrets"]
    for f in files:
        args += ["-f", str(f)]
    # Offline: no download of the vendor's guideline links (it only adds URLs to the report).
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE")
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode == 0:
        return []
    try:
        reports = json.loads(result.stdout)
    except json.JSONDecodeError:
        return [f"checkov: {result.stdout[-2000:]}{result.stderr[-2000:]}"]
    if isinstance(reports, dict):
        reports = [reports]
    failures = []
    for report in reports:
        for check in report.get("results", {}).get("failed_checks", []):
            failures.append(
                f"checkov {check['check_id']} ({check['check_name']}): "
                f"{check.get('resource')} in {pathlib.Path(check['file_path']).name}"
            )
    return failures or [f"checkov exited with {result.returncode}: {result.stderr[-2000:]}"]


def check_all(objects_by_source: dict, dockerfile: pathlib.Path, workdir: pathlib.Path) -> list:
    errors = []
    rendered = []
    for source, objects in objects_by_source.items():
        errors += [f"{source}: {e}" for e in validate_builtin(objects)]
        errors += [f"{source}: {e}" for e in validate_custom(objects)]
        path = workdir / f"{source.replace('/', '_')}.yaml"
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
        rendered.append(path)
    errors += checkov(rendered + [dockerfile])
    return errors


def sources() -> dict:
    out = {f"overlays/{o}": render(o) for o in OVERLAYS}
    for example in EXAMPLES:
        out[f"examples/{example.name}"] = [d for d in yaml.safe_load_all(example.read_text()) if d]
    return out


def self_test(objects_by_source: dict, workdir: pathlib.Path) -> list:
    """Breaks things on purpose; returns the breakages some check let through."""
    prod = objects_by_source["overlays/prod"]
    missed = []

    def broken(change) -> list:
        objects = copy.deepcopy(prod)
        change(objects)
        return objects

    def first(objects, kind):
        return next(o for o in objects if o["kind"] == kind)

    def replicas_as_text(objects):
        first(objects, "Deployment")["spec"]["replicas"] = "two"

    def no_scale_target(objects):
        del first(objects, "ScaledObject")["spec"]["scaleTargetRef"]

    def privileged(objects):
        container = first(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        container["securityContext"] = {"privileged": True, "allowPrivilegeEscalation": True}

    if not validate_builtin(broken(replicas_as_text)):
        missed.append("a Deployment's replicas as text passed the Kubernetes schema")
    if not validate_custom(broken(no_scale_target)):
        missed.append("a ScaledObject without scaleTargetRef passed KEDA's schema")
    path = workdir / "privileged.yaml"
    path.write_text(yaml.safe_dump_all(broken(privileged), sort_keys=False))
    if not checkov([path]):
        missed.append("a privileged container passed checkov")
    root_dockerfile = workdir / "Dockerfile"
    root_dockerfile.write_text("FROM debian:latest\nRUN apt-get update\nUSER root\n")
    if not checkov([root_dockerfile]):
        missed.append("a Dockerfile running as root from :latest passed checkov")
    return missed


def main() -> int:
    if "--bless" in sys.argv:
        RULE_FILE.write_text(prometheus_rule())
        print(f"wrote {RULE_FILE.relative_to(ROOT)}")
        return 0
    errors = []
    if RULE_FILE.read_text() != prometheus_rule():
        errors.append(
            f"{RULE_FILE.relative_to(ROOT)} is not what infra/prometheus/alerts.yml makes: "
            "run scripts/check-k8s.sh --bless"
        )
    objects = sources()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        errors += check_all(objects, ROOT / "Dockerfile", workdir)
        if "--self-test" in sys.argv or not errors:
            errors += [f"self-test: {m}" for m in self_test(objects, workdir)]
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    counts = ", ".join(f"{s}: {len(o)} objects" for s, o in objects.items())
    print(f"k8s: {counts}; {'FAILED' if errors else 'all checks passed'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
