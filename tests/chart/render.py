"""Render the chart with the real helm binary, and validate what it renders, offline."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.support.tools import need, tool

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "conveyor"
# The CRD and skaffold schemas live beside the checkout, not in it.
SCHEMAS = Path(os.environ.get("CONVEYOR_SCHEMAS", ROOT / "tests" / "schemas"))
# Every ci/ file, and the values skaffold deploys to kind.
VALUES_FILES = [*sorted((CHART / "ci").glob("*-values.yaml")), ROOT / "k8s" / "dev-values.yaml"]
Manifest = dict[str, Any]
# libyaml's parser where PyYAML has it: the same documents as SafeLoader, many times faster
# on helm's output, which the chart tests parse over a hundred times.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def helm() -> str:
    return tool("helm")


# The APIs of the operators the chart's optional objects need: KEDA and prometheus-operator.
OPERATOR_APIS = [
    "keda.sh/v1alpha1/ScaledObject",
    "keda.sh/v1alpha1/TriggerAuthentication",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
]


def render(*values_files: Path, bare: bool = False, **sets: str) -> list[Manifest]:
    """`helm template` of the chart, as a list of objects (tests included), for a cluster
    with KEDA and prometheus-operator, or with neither (`bare`)."""
    # The same values render the same objects: helm runs once for them, and each test
    # gets a copy of its own to change.
    return copy.deepcopy(_rendered(values_files, bare, tuple(sets.items())))


@cache
def _rendered(
    values_files: tuple[Path, ...], bare: bool, sets: tuple[tuple[str, str], ...]
) -> list[Manifest]:
    args = [helm(), "template", "conveyor", str(CHART), "--namespace", "tasks"]
    for api in [] if bare else OPERATOR_APIS:
        args += ["--api-versions", api]
    for path in values_files:
        args += ["--values", str(path)]
    for key, value in sets:
        args += ["--set", f"{key}={value}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.load_all(done.stdout, Loader=_LOADER) if doc]


def refusal(**sets: str) -> str:
    """What `helm template` says when the schema or a template refuses `sets`."""
    args = [helm(), "template", "x", str(CHART)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, f"{sets} was accepted"
    return done.stderr


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    found = [m for m in by_kind(manifests, kind) if m["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, [m["metadata"]["name"] for m in by_kind(manifests, kind)]
    return found[0]


def pod_specs(manifests: list[Manifest]) -> list[tuple[str, dict[str, Any]]]:
    """Every pod spec the chart renders, with the name of its owner."""
    specs = []
    for m in manifests:
        name = f"{m['kind']}/{m['metadata']['name']}"
        if m["kind"] == "Pod":
            specs.append((name, m["spec"]))
        elif m["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
            specs.append((name, m["spec"]["template"]["spec"]))
    return specs


# --- CRD schemas, converted as `kubectl --validate=strict` reads them ----------------------


def _strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {k: _strict(v) for k, v in schema.items()}
    if isinstance(schema.get("pattern"), str) and "(?i)" in schema["pattern"]:
        # Go's regexp allows an inline flag anywhere; Python's only at the start.
        schema["pattern"] = "(?i)" + schema["pattern"].replace("(?i)", "")
    if schema.pop("x-kubernetes-int-or-string", False):
        schema.pop("type", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.pop("nullable", False) and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        schema.setdefault("additionalProperties", False)
    return schema


@cache
def crd_schemas(shared: bool = True) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> JSON schema, from the chart's own CRDs and, with `shared`,
    from every CRD in the schemas folder (KEDA, prometheus-operator)."""
    paths = list((CHART / "crds").glob("*.yaml"))
    if shared:
        need(f"the CRD schemas folder {SCHEMAS}", SCHEMAS.is_dir())
        paths += SCHEMAS.glob("*.yaml")
    schemas = {}
    for path in paths:
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            # apiVersion, kind and metadata are checked by the API server, not the CRD.
            schema["properties"].update({"apiVersion": {}, "kind": {}, "metadata": {}})
            schemas[f"{group}/{version['name']}", kind] = _strict(schema)
    return schemas


def validate_custom(manifest: Manifest, schemas: dict[tuple[str, str], Any]) -> None:
    schema = schemas[manifest["apiVersion"], manifest["kind"]]
    jsonschema.Draft7Validator(schema).validate(manifest)


def validate_skaffold(path: Path) -> None:
    need(f"the skaffold schema in {SCHEMAS}", (SCHEMAS / "skaffold-v4beta13.json").exists())
    schema = json.loads((SCHEMAS / "skaffold-v4beta13.json").read_text())
    for config in yaml.safe_load_all(path.read_text()):
        jsonschema.validate(config, schema)
