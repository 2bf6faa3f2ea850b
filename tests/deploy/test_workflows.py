"""The GitHub workflows: linted, wired to Make targets, secrets only from secrets."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent


def workflow(name: str) -> dict[Any, Any]:
    return dict(yaml.safe_load((WORKFLOWS / name).read_text()))


def triggers(wf: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads a bare `on` as True; a workflow's triggers are a mapping.
    return dict(cast(dict[str, Any], wf.get("on", wf.get(True))))


def run_lines(wf: dict[Any, Any]) -> str:
    return "\n".join(
        str(step.get("run", "")) for job in wf["jobs"].values() for step in job["steps"]
    )


def test_actionlint_passes_on_every_workflow() -> None:
    assert {p.name for p in WORKFLOWS.glob("*.yml")} >= {"test.yml", "ct.yml", "cd.yml"}
    out = subprocess.run(
        [str(BIN / "actionlint"), "-shellcheck", str(BIN / "shellcheck"), "-no-color"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_shell_scripts_pass_shellcheck() -> None:
    scripts = sorted((ROOT / ".github" / "scripts").glob("*.sh"))
    assert scripts
    out = subprocess.run(
        [str(BIN / "shellcheck"), *map(str, scripts)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout


def test_test_workflow_lints_type_checks_and_tests() -> None:
    wf = workflow("test.yml")
    assert {"push", "pull_request"} <= set(triggers(wf))
    runs = run_lines(wf)
    for target in ("make lint", "make typecheck", "make test", "make test-e2e"):
        assert target in runs


def test_ct_workflow_triggers_and_runs_the_local_command() -> None:
    wf = workflow("ct.yml")
    on = triggers(wf)
    assert on["schedule"][0]["cron"]
    assert on["workflow_dispatch"]["inputs"]["reason"]["required"] is True
    assert on["push"]["paths"] == ["data/raw/Tree_Data.csv.dvc"]
    runs = run_lines(wf)
    assert "make retrain" in runs and "make publish" in runs
    assert "cml comment create" in runs and "reports/retrain.md" in runs
    report_step = next(
        s for j in wf["jobs"].values() for s in j["steps"] if "cml comment" in s.get("run", "")
    )
    assert "always()" in report_step["if"]  # the report is posted whatever the decision


def test_cd_workflow_fires_on_production_tags_and_deploys_that_version() -> None:
    wf = workflow("cd.yml")
    patterns = triggers(wf)["push"]["tags"]
    # GitHub's tag filter is a glob: the GTO stage tags match, version tags do not.
    assert any(fnmatch.fnmatch("tree-survival#prod#12", p) for p in patterns)
    assert not any(fnmatch.fnmatch("tree-survival@v1.2.0", p) for p in patterns)
    assert wf["permissions"]["packages"] == "write"
    runs = run_lines(wf)
    assert "treesurv registry checkout" in runs and "--tag" in runs
    assert "make image" in runs and "docker push" in runs and "make redeploy" in runs
    assert "ghcr.io/" in runs


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-zA-Z][\w-]*):", text, flags=re.M))


def test_every_make_target_a_workflow_calls_exists() -> None:
    called = set()
    for path in WORKFLOWS.glob("*.yml"):
        called |= set(re.findall(r"\bmake ([a-z][\w-]*)", run_lines(workflow(path.name))))
    assert called, "the workflows call no make target"
    assert called <= makefile_targets(), called - makefile_targets()


SECRET_ENV = re.compile(r"(TOKEN|KEY|SECRET|PASSWORD|CREDENTIALS|HOOK)", re.I)
SECRET_VALUE = re.compile(
    r"^\$\{\{ *(secrets\.[A-Z0-9_]+|github\.token)( *\|\| *github\.token)? *\}\}$"
)


def env_blocks(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, dict):
                yield value
            yield from env_blocks(value)
    elif isinstance(node, list):
        for item in node:
            yield from env_blocks(item)


def test_credentials_come_only_from_secrets_and_are_documented() -> None:
    # The lifecycle page of the docs lists every secret a workflow reads.
    page = (ROOT / "docs" / "lifecycle.md").read_text()
    used: set[str] = set()
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        used |= set(re.findall(r"secrets\.([A-Z0-9_]+)", text))
        for env in env_blocks(yaml.safe_load(text)):
            for name, value in env.items():
                if SECRET_ENV.search(name):
                    assert SECRET_VALUE.match(str(value)), f"{path.name}: {name}={value}"
    assert used >= {"DVC_REMOTE_URL", "DEPLOY_HOOK_URL", "CT_PUSH_TOKEN"}
    for name in used:
        assert f"`{name}`" in page, f"docs/lifecycle.md does not list the secret {name}"


@pytest.mark.slow  # asks git for the tracked files
def test_no_credential_is_committed() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    patterns = re.compile(
        r"(AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}|-----BEGIN [A-Z ]*PRIVATE KEY-----"
        r"|\"private_key\": *\"-----)"
    )
    for rel in tracked:
        path = ROOT / rel
        if not rel or not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        assert not patterns.search(text), f"{rel} looks like it holds a credential"


# ------------------------------------------------------------ the redeploy hook


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    status: ClassVar[int] = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"received": [], "status": 200})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/deploy?token=abc", handler
    finally:
        server.shutdown()
        server.server_close()


def redeploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOY_HOOK")}
    return subprocess.run(
        ["make", "--no-print-directory", "redeploy", "IMAGE=ghcr.io/org/treesurv:1.4.0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **env},
    )


def test_redeploy_posts_the_image_to_the_hook(hook: tuple[str, type[_Hook]]) -> None:
    url, handler = hook
    out = redeploy({"DEPLOY_HOOK_URL": url})
    assert out.returncode == 0, out.stderr
    assert handler.received == [{"image": "ghcr.io/org/treesurv:1.4.0", "version": "1.4.0"}]
    assert "token=abc" not in out.stdout + out.stderr  # the secret URL is never echoed
    # A platform that keeps failing: one try, the retries asked for, then an error.
    handler.status = 500
    failed = redeploy({"DEPLOY_HOOK_URL": url, "DEPLOY_HOOK_RETRIES": "1"})
    assert failed.returncode != 0
    assert len(handler.received) == 1 + 2


def test_redeploy_can_run_a_command_instead(tmp_path: Path) -> None:
    marker = tmp_path / "deployed"
    out = redeploy({"DEPLOY_HOOK_COMMAND": f'echo "$IMAGE $MODEL_VERSION" > {marker}'})
    assert out.returncode == 0, out.stderr
    assert marker.read_text().strip() == "ghcr.io/org/treesurv:1.4.0 1.4.0"


def test_redeploy_without_a_hook_says_what_to_set() -> None:
    out = redeploy({})
    assert out.returncode != 0
    assert "DEPLOY_HOOK_URL or DEPLOY_HOOK_COMMAND" in out.stderr


# ------------------------------------------------------------------ Dockerfile


DOCKERFILES = sorted(
    p for p in ROOT.glob("deploy/**/Dockerfile*") if not p.name.endswith(".dockerignore")
)


def test_there_are_dockerfiles_to_lint() -> None:
    assert ROOT / "deploy" / "Dockerfile" in DOCKERFILES


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_passes(dockerfile: Path) -> None:
    out = subprocess.run(
        [str(BIN / "hadolint"), str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
