"""The service's containers run unprivileged: non-root, read-only root filesystem,
no capabilities, no privilege escalation — in the image, compose and Kubernetes."""

from __future__ import annotations

from typing import Any

import yaml

from tests.helpers import ROOT, env_of, runtime_stage

DEPLOY = ROOT / "deploy"
UID = "10001"


def test_image_runs_as_the_unprivileged_user_and_writes_only_under_tmp() -> None:
    stage = runtime_stage()
    user = next(rest for word, rest in stage if word == "USER")
    assert user == f"{UID}:{UID}"
    env = env_of(stage)
    # Every path the service writes is under /tmp (a tmpfs or emptyDir).
    assert env["NUMBA_CACHE_DIR"].startswith("/tmp/")
    assert next(rest for word, rest in stage if word == "WORKDIR") == "/tmp"


def test_compose_api_service_is_locked_down() -> None:
    api: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["api"]
    assert api["user"].split(":")[0] == UID
    assert api["read_only"] is True
    assert "/tmp" in api["tmpfs"]
    assert api["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in api["security_opt"]
    assert "privileged" not in api
    # Published on the loopback interface only.
    assert all(str(p).startswith("127.0.0.1:") for p in api["ports"])


def test_kubernetes_pod_is_locked_down() -> None:
    deployment = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == UID
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"]
        assert "privileged" not in ctx or ctx["privileged"] is False
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts
        # The admin key comes from a Secret, never a literal in the manifest.
        key = next(e for e in container["env"] if e["name"] == "TREESURV_API_KEY")
        assert "value" not in key and key["valueFrom"]["secretKeyRef"]
