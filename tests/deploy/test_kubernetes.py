"""deploy/k8s: every manifest against the Kubernetes JSON schemas (kubernetes-validate ships them, so
this runs offline), in strict mode (an unknown or misspelt field fails), for the oldest Kubernetes
version we claim and the newest the validator knows; then the wiring between the manifests."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.deploy._files import DEPLOY, K8S, k8s_docs, k8s_files, require

kv = require("kubernetes_validate.utils")

OLDEST = "1.29"  # autoscaling/v2, policy/v1, batch/v1 CronJob: all GA long before


def _versions() -> list[str]:
    return sorted({OLDEST, kv.major_minor(kv.latest_version())})


def _ids(item: tuple[str, dict[str, Any]]) -> str:
    name, doc = item
    return f"{name}:{doc['kind']}/{doc['metadata']['name']}"


@pytest.mark.parametrize("version", _versions())
@pytest.mark.parametrize("item", k8s_docs(), ids=_ids)
def test_manifest_matches_the_kubernetes_schema(item: tuple[str, dict[str, Any]], version: str) -> None:
    name, doc = item
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {path}: {exc.message}")
    except kv.SchemaNotFoundError as exc:
        pytest.fail(f"{name}: {exc.message}")


def test_the_validator_rejects_a_misspelt_field() -> None:
    """The strict schemas really are strict (a typo in a probe would otherwise pass silently)."""
    doc = yaml.safe_load((K8S / "deployment-gateway.yaml").read_text())
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, OLDEST, strict=True)


# ---------------------------------------------------------------- kustomization


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = _kustomization()["resources"]
    assert all((K8S / name).is_file() for name in listed), listed
    expected = {p.name for p in k8s_files()} - {"secret.example.yaml"}
    assert set(listed) == expected
    assert "secret.example.yaml" not in listed  # placeholders must not be applied by accident


def test_kustomize_build_output_validates() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` not checked")
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert len(docs) == sum(1 for name, _ in k8s_docs() if name != "secret.example.yaml")
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "sluicegate", doc["metadata"]
        kv.validate(doc, OLDEST, strict=True)


# ---------------------------------------------------------------- wiring


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in k8s_docs() if doc["kind"] == kind}


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for _, doc in k8s_docs():
        if doc["kind"] == "Deployment":
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]
        elif doc["kind"] == "CronJob":
            yield doc["metadata"]["name"], doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return spec.get("initContainers", []) + spec["containers"]


def _gateway() -> dict[str, Any]:
    return _by_kind("Deployment")["sluicegate"]


def test_gateway_deployment() -> None:
    deployment = _gateway()
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}
    (gateway,) = pod["spec"]["containers"]
    args = gateway["args"]
    assert args[0] == "serve" and "--watch-policy" in args
    assert "--policy=/etc/sluicegate/policy.yaml" in args and "--host=0.0.0.0" in args and "--port=8080" in args
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {p["containerPort"] for p in gateway["ports"]} == {8080}
    # the schema runs before any replica: an init container
    (migrate,) = pod["spec"]["initContainers"]
    assert migrate["args"] == ["migrate"]


def test_policy_configmap_is_mounted_as_a_directory_so_updates_arrive() -> None:
    """A subPath mount never sees ConfigMap updates, and --watch-policy would have nothing to see."""
    for name, spec in _pod_specs():
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in _containers(spec):
            for mount in container.get("volumeMounts", []):
                if "configMap" in volumes[mount["name"]]:
                    assert "subPath" not in mount, (name, container["name"], mount)
                    assert mount.get("readOnly") is True
    gateway_mounts = {m["mountPath"]: m["name"] for m in _gateway()["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    volume = {v["name"]: v for v in _gateway()["spec"]["template"]["spec"]["volumes"]}[gateway_mounts["/etc/sluicegate"]]
    assert volume["configMap"]["name"] == "sluicegate-policy"


def test_every_pod_runs_non_root_read_only_with_resources() -> None:
    for name, spec in _pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        assert spec.get("automountServiceAccountToken") is False, name
        writable = {m["mountPath"] for c in _containers(spec) for m in c.get("volumeMounts", []) if not m.get("readOnly")}
        assert "/tmp" in writable, name
        for container in _containers(spec):
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), (name, container["name"])
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), (name, container["name"])


def test_the_spill_directory_is_writable_in_the_gateway() -> None:
    """The image's working directory /data holds the recorder's spill file (PostgreSQL store)."""
    spec = _gateway()["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/data"]["name"]]
    assert not mounts["/data"].get("readOnly")


def test_arguments_only_expand_variables_the_container_defines() -> None:
    for name, spec in _pod_specs():
        for container in _containers(spec):
            defined = {e["name"] for e in container.get("env", [])}
            used = {v for arg in container.get("args", []) + container.get("command", [])
                    for v in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg)}
            assert used <= defined, (name, container["name"], used - defined)


def test_referenced_secrets_and_configmaps_exist() -> None:
    configmaps = set(_by_kind("ConfigMap"))
    secrets = {name: doc for name, doc in _by_kind("Secret").items()}
    for name, spec in _pod_specs():
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, (name, volume)
        for container in _containers(spec):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in secrets, (name, ref)
                    assert ref["key"] in secrets[ref["name"]]["stringData"], (name, ref)


def test_selectors_match_the_pods() -> None:
    pods = {name: doc["spec"]["template"]["metadata"]["labels"] for name, doc in _by_kind("Deployment").items()}
    for name, doc in _by_kind("Deployment").items():
        assert doc["spec"]["selector"]["matchLabels"].items() <= pods[name].items(), name

    def matches(selector: dict[str, str]) -> list[str]:
        return [name for name, labels in pods.items() if selector.items() <= labels.items()]

    for name, service in _by_kind("Service").items():
        targets = matches(service["spec"]["selector"])
        assert len(targets) == 1, (name, targets)
        ports = {p["name"] for c in _by_kind("Deployment")[targets[0]]["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports, name
    for name, pdb in _by_kind("PodDisruptionBudget").items():
        assert matches(pdb["spec"]["selector"]["matchLabels"]) == ["sluicegate"], name
    for name, hpa in _by_kind("HorizontalPodAutoscaler").items():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in pods, name
        assert hpa["spec"]["minReplicas"] >= 2
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert all("cpu" in c["resources"]["requests"]
                   for c in _by_kind("Deployment")[target["name"]]["spec"]["template"]["spec"]["containers"])


def test_worker_shares_the_queue_and_policy() -> None:
    (worker,) = _by_kind("Deployment")["sluicegate-worker"]["spec"]["template"]["spec"]["containers"]
    assert worker["args"][0] == "worker"
    assert "--queue=$(SLUICEGATE_QUEUE)" in worker["args"]
    assert "--queue=$(SLUICEGATE_QUEUE)" in _gateway()["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--policy=/etc/sluicegate/policy.yaml" in worker["args"]


def test_every_image_is_the_one_kustomize_rewrites() -> None:
    names = {image["name"] for image in _kustomization()["images"]}
    for name, spec in _pod_specs():
        for container in _containers(spec):
            assert container["image"].split(":")[0] in names, (name, container["image"])


def test_configmaps_hold_the_deploy_files_verbatim() -> None:
    configmaps = _by_kind("ConfigMap")
    assert configmaps["sluicegate-policy"]["data"] == {
        "policy.yaml": (DEPLOY / "policy.yaml").read_text(),
        "helpfulness.md": (DEPLOY / "helpfulness.md").read_text(),
    }, "regenerate k8s/configmap-policy.yaml from deploy/policy.yaml and deploy/helpfulness.md"
    assert configmaps["mock-upstream"]["data"] == {
        "mock-upstream.yaml": (DEPLOY / "mock-upstream.yaml").read_text()}
