"""The chart's security promises: keys on, seeded from Secrets only, data stores fenced off."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

from services.core.auth import parse_key
from services.core.db.keys import SeedKey
from tests.chart.render import CHART, by_kind, helm, one, pod_specs, render

SEED = CHART / "ci" / "auth-seed-values.yaml"
STORES = CHART / "ci" / "networkpolicy-values.yaml"


def _api(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return one(manifests, "Deployment", "-api")["spec"]["template"]["spec"]


def test_keys_are_on_by_default_with_a_rate_limit() -> None:
    config = one(render(), "ConfigMap", "-config")["data"]
    assert config["CONVEYOR_AUTH_ENABLED"] == "true"
    assert config["CONVEYOR_RATE_LIMIT"] == "100/second"
    off = one(render(CHART / "ci" / "auth-off-values.yaml"), "ConfigMap", "-config")["data"]
    assert off["CONVEYOR_AUTH_ENABLED"] == "false"
    assert "CONVEYOR_ALLOWED_HOSTS" not in config


def test_keys_off_answers_at_the_service_and_ingress_names_and_those_given() -> None:
    off = one(render(CHART / "ci" / "auth-off-values.yaml"), "ConfigMap", "-config")["data"]
    assert off["CONVEYOR_ALLOWED_HOSTS"].split(",") == [
        "conveyor-api",
        "conveyor-api.tasks",
        "conveyor-api.tasks.svc",
        "conveyor-api.tasks.svc.cluster.local",
        "tasks.example.com",
        "conveyor.internal",
    ]


def test_seeded_keys_live_in_a_secret_mounted_by_the_api_alone() -> None:
    manifests = render(SEED)
    secret = one(manifests, "Secret", "-auth")
    entries = [SeedKey.model_validate(e) for e in json.loads(secret["stringData"]["keys.json"])]
    assert [(e.tenant, e.name) for e in entries] == [("team-a", "team-a CI")]
    api = _api(manifests)
    mounted = {v["name"]: v for v in api["volumes"]}["auth"]["secret"]
    assert mounted["secretName"] == secret["metadata"]["name"]
    env = {e["name"]: e.get("value") for e in api["containers"][0]["env"]}
    assert env["CONVEYOR_AUTH_SEED_FILE"] == "/etc/conveyor/auth/keys.json"
    for owner, spec in pod_specs(manifests):
        volumes = [v.get("secret", {}).get("secretName") for v in spec.get("volumes", [])]
        assert (secret["metadata"]["name"] in volumes) is owner.endswith("-api"), owner


def test_no_key_appears_outside_a_secret() -> None:
    manifests = render(SEED)
    for manifest in manifests:
        if manifest["kind"] != "Secret":
            assert not re.search(r"cvk_[a-z0-9]{12}_", json.dumps(manifest)), manifest["kind"]


def test_helm_test_uses_its_own_seeded_key_of_a_tenant_of_its_own() -> None:
    manifests = render()
    secret = one(manifests, "Secret", "-auth")["stringData"]
    entries = json.loads(secret["keys.json"])
    assert entries == [
        {
            "key": secret["helm-test-key"],
            "tenant": "helm-test",
            "scopes": ["submit", "read"],
            "name": "helm test",
        }
    ]
    assert parse_key(secret["helm-test-key"]) is not None
    pod = next(m for m in manifests if m["kind"] == "Pod")
    env = pod["spec"]["containers"][0]["env"]
    assert env == [
        {
            "name": "CONVEYOR_API_KEY",
            "valueFrom": {
                "secretKeyRef": {
                    "name": one(manifests, "Secret", "-auth")["metadata"]["name"],
                    "key": "helm-test-key",
                }
            },
        }
    ]


def test_an_existing_key_secret_replaces_the_charts() -> None:
    manifests = render(CHART / "ci" / "auth-existing-secret-values.yaml")
    assert not [s for s in by_kind(manifests, "Secret") if s["metadata"]["name"].endswith("-auth")]
    volumes = {v["name"]: v for v in _api(manifests)["volumes"]}
    assert volumes["auth"]["secret"]["secretName"] == "conveyor-api-keys"


def _store_policy(manifests: list[dict[str, Any]], store: str) -> dict[str, Any]:
    return one(manifests, "NetworkPolicy", f"-{store}")["spec"]


def test_only_this_releases_pods_and_keda_reach_postgresql_and_rabbitmq() -> None:
    manifests = render(STORES)
    for store, port, extra in (("postgresql", 5432, 1), ("rabbitmq", 5672, 0)):
        policy = _store_policy(manifests, store)
        assert policy["policyTypes"] == ["Ingress"]
        rule = policy["ingress"][0]
        assert rule["ports"] == [{"port": port}]
        ours, *others = rule["from"]
        assert ours["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "conveyor"
        [components] = ours["podSelector"]["matchExpressions"]
        assert sorted(components["values"]) == ["api", "migrate", "operator", "worker"]
        assert len(others) == extra
    management = _store_policy(manifests, "rabbitmq")["ingress"][1]
    assert management["ports"] == [{"port": 15672}]
    postgres = _store_policy(manifests, "postgresql")["podSelector"]
    assert postgres == {"matchLabels": {"app": "postgres"}}
    # The components let in are exactly those of the chart's pods that use the servers.
    components = {
        m["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        for m in by_kind(manifests, "Deployment") + by_kind(manifests, "Job")
    }
    assert components == {"api", "worker", "operator", "migrate"}


def test_prometheus_and_helm_test_still_reach_an_api_fenced_to_the_ingress() -> None:
    manifests = render(STORES)
    api = one(manifests, "NetworkPolicy", "-api")["spec"]
    peers = [peer for rule in api["ingress"] for peer in rule["from"]]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    } in peers
    test_pod = next(m for m in manifests if m["kind"] == "Pod")["metadata"]["labels"]
    assert any(
        set(peer.get("podSelector", {}).get("matchLabels", {}).items()) <= set(test_pod.items())
        for peer in peers
        if "podSelector" in peer
    )
    assert all(rule["from"] for rule in api["ingress"])  # an empty `from` would admit anyone


def test_no_helm_test_pod_that_could_not_authenticate() -> None:
    assert not [m for m in render(SEED) if m["kind"] == "Pod"]  # helmTestKey: false
    assert [m for m in render(CHART / "ci" / "auth-off-values.yaml") if m["kind"] == "Pod"]


def test_seed_keys_and_an_existing_secret_exclude_each_other() -> None:
    args = [
        helm(),
        "template",
        "conveyor",
        str(CHART),
        "--values",
        str(SEED),
        "--set",
        "auth.existingSecret=conveyor-api-keys",
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "exclude each other" in done.stderr
