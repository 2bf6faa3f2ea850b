"""The Kubernetes manifests: valid against the Kubernetes schemas (kubernetes-validate,
offline, strict: unknown fields are errors) and wired to each other correctly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
MANIFESTS = ("deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml", "pvc.yaml")
# The oldest Kubernetes still commonly run, and the newest schemas shipped.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((K8S / name).read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_is_valid(name: str, version: str) -> None:
    kubernetes_validate.validate(load(name), version, strict=True)


def test_the_validator_rejects_mistakes() -> None:
    deployment = load("deployment.yaml")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)
    deployment = load("deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}  # typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load("kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(MANIFESTS)
    assert {p.name for p in K8S.glob("*.yaml")} == {*MANIFESTS, "kustomization.yaml"}
    image = load("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.split(":")[0] == kustomization["images"][0]["name"]


def test_deployment_is_safe_to_roll_and_to_run() -> None:
    dep = load("deployment.yaml")
    spec = dep["spec"]
    rolling = spec["strategy"]["rollingUpdate"]
    assert spec["strategy"]["type"] == "RollingUpdate" and rolling["maxUnavailable"] == 0
    assert rolling["maxSurge"] >= 1
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert (
        pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    )
    (api,) = pod["containers"]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert api[probe]["httpGet"]["port"] in {p["name"] for p in api["ports"]}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(api["resources"][kind])
    sc = api["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e for e in api["env"]}
    assert env["TREESURV_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "treesurv-api",
        "key": "api-key",
    }
    assert "value" not in env["TREESURV_API_KEY"]
    # Everything the process writes lands on a mounted volume, never the read-only root.
    mounts = {m["mountPath"]: m["name"] for m in api["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert env["NUMBA_CACHE_DIR"]["value"].startswith("/tmp/")
    log_dir = env["TREESURV_PREDICTION_LOG_DIR"]["value"]
    assert "persistentVolumeClaim" in volumes[mounts[log_dir]]
    assert (
        volumes[mounts[log_dir]]["persistentVolumeClaim"]["claimName"]
        == load("pvc.yaml")["metadata"]["name"]
    )


def test_service_hpa_and_pdb_point_at_the_pods() -> None:
    dep = load("deployment.yaml")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    svc, hpa, pdb = load("service.yaml"), load("hpa.yaml"), load("pdb.yaml")
    assert svc["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert all(p["targetPort"] in port_names for p in svc["spec"]["ports"])
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", dep["metadata"]["name"])
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # The budget never blocks every disruption: the HPA keeps more pods than it protects.
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"] >= 1
    assert hpa["spec"]["minReplicas"] <= dep["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
