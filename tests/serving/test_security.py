"""Security of the service: admin key handling, security headers, CORS closed by
default, limits on a real process, and no pickle/joblib anywhere on the serving path."""

from __future__ import annotations

import contextlib
import hmac
import http.client
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.helpers import API_KEY, BIN, free_port, request, running
from treesurv.core import schema
from treesurv.serving import middleware
from treesurv.serving.settings import Settings

# ------------------------------------------------------------------ headers


def csp(response: Any) -> dict[str, str]:
    """The Content-Security-Policy as {directive: sources}."""
    policy = response.headers["content-security-policy"]
    pairs = (part.strip().partition(" ") for part in policy.split(";") if part.strip())
    return {name: value for name, _, value in pairs}


def test_every_answer_carries_the_security_headers(make_client: Any, bundle_v1: Path) -> None:
    client = make_client(bundle_v1, max_body_bytes=1024)
    answers = [
        client.get("/healthz"),
        client.get("/metrics"),
        client.get("/no/such/page"),
        client.post("/v1/predictions", json={"instances": [schema.EXAMPLE]}),
        client.post("/v1/predictions", json={"instances": [{"Species": "Oak"}]}),
        client.post("/v1/predictions", json={"instances": [schema.EXAMPLE] * 10}),  # 413
        client.post("/v1/admin/reload"),  # 401
    ]
    assert [r.status_code for r in answers] == [200, 200, 404, 200, 422, 413, 401]
    for r in answers:
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        policy = csp(r)
        assert policy["default-src"] == "'self'"
        assert policy["script-src"] == "'self'"  # no inline or remote script on our pages
        assert policy["frame-ancestors"] == "'none'"
        assert "'unsafe-inline'" in policy["style-src"]  # inline SVG styles only


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_get_a_policy_that_lets_them_load(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200
    policy = csp(r)
    assert policy["frame-ancestors"] == "'none'"
    assert r.headers["x-frame-options"] == "DENY"
    # Every remote script and stylesheet the page loads is allowed by its policy.
    for tag, attributes in re.findall(r"<(script|link)\b([^>]*)>", r.text):
        url = re.search(r"(?:src|href)=\"(https://[^\"]+)\"", attributes)
        if url is None:
            continue
        host = "/".join(url.group(1).split("/")[:3])
        kind = "script" if tag == "script" else "img" if "icon" in attributes else "style"
        assert host in policy[f"{kind}-src"], (url.group(1), policy)
    if "<script>" in r.text:  # Swagger UI starts with an inline script
        assert "'unsafe-inline'" in policy["script-src"]
    # The wider policy is for these pages only.
    assert middleware.security_headers("/v1/model") == middleware.HEADERS


# --------------------------------------------------------------------- CORS


def test_cors_is_closed_by_default(client: TestClient) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    r = client.post("/v1/predictions", json={"instances": [schema.EXAMPLE]}, headers=origin)
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    preflight = client.options(
        "/v1/predictions",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_opens_only_to_the_configured_origins(make_client: Any, bundle_v1: Path) -> None:
    client = make_client(bundle_v1, cors_origins=["https://app.example"])
    body = {"instances": [schema.EXAMPLE]}
    ok = client.post("/v1/predictions", json=body, headers={"Origin": "https://app.example"})
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    other = client.post("/v1/predictions", json=body, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    preflight = client.options(
        "/v1/admin/reload",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"


# ---------------------------------------------------------------- admin key


def test_the_key_is_compared_in_constant_time(client: TestClient) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    with mock.patch("treesurv.serving.deps.hmac.compare_digest", side_effect=spy):
        assert client.post("/v1/admin/reload", headers={"X-API-Key": "nope"}).status_code == 401
        assert client.post("/v1/admin/reload", headers={"X-API-Key": API_KEY}).status_code == 200
    assert calls == [(b"nope", API_KEY.encode()), (API_KEY.encode(), API_KEY.encode())]


def test_the_key_never_shows_in_settings_or_answers(make_client: Any, bundle_v1: Path) -> None:
    settings = Settings(model_dir=bundle_v1, api_key=API_KEY)
    assert API_KEY not in repr(settings) and API_KEY not in str(settings.model_dump())
    client = make_client(bundle_v1)
    wrong = client.post("/v1/admin/reload", headers={"X-API-Key": "a-guess-" + API_KEY[:4]})
    assert wrong.status_code == 401 and "a-guess" not in wrong.text
    for path in ("/readyz", "/metrics", "/v1/model", "/openapi.json"):
        assert API_KEY not in client.get(path).text


def post_too_much(port: int, payload: Any) -> tuple[int, Any]:
    """POST a body the server refuses before reading it: it answers 413 and closes, so
    sending the rest may fail; the answer is read all the same."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request(
                "POST",
                "/v1/predictions",
                body=orjson.dumps(payload),
                headers={"Content-Type": "application/json"},
            )
        r = conn.getresponse()
        return r.status, orjson.loads(r.read())
    finally:
        conn.close()


@pytest.mark.slow
def test_a_real_server_never_logs_the_key_and_enforces_its_limits(
    bundle_dir: Path, tmp_path: Path
) -> None:
    secret = "k3y-" + "Zq9" * 10
    key_file = tmp_path / "admin-key"
    key_file.write_text(secret + "\n")
    port = free_port()
    cmd = [str(BIN / "treesurv"), "serve", "--port", str(port), "--access-log"]
    cmd += ["--model", str(bundle_dir)]
    env = {"TREESURV_API_KEY_FILE": str(key_file), "TREESURV_WATCH_INTERVAL": "0"}
    with running(cmd, env, port, tmp_path, "/readyz") as base:
        for headers, expected in (
            ({"X-API-Key": secret}, 200),
            ({"Authorization": f"Bearer {secret}"}, 200),
            ({"X-API-Key": secret[:-1]}, 401),
            ({}, 401),
        ):
            req = urllib.request.Request(f"{base}/v1/admin/reload", method="POST", headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    status = r.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            assert status == expected, headers
        # The body limit (2 MiB) and the batch limit (1,000) hold on the real server too.
        status, body = post_too_much(port, {"instances": [schema.EXAMPLE] * 12_000})
        assert status == 413 and body["detail"][0]["type"] == "body_too_large"
        status, body = request(f"{base}/v1/predictions", {"instances": [schema.EXAMPLE] * 1001})
        assert status == 422 and body["detail"][0]["allowed"] == "a list of 1 to 1000 instances"
    log = (tmp_path / f"server-{port}.log").read_text()
    assert "POST /v1/admin/reload" in log  # the access log was on
    assert secret not in log and secret[:-1] not in log


# ------------------------------------------------------------------- pickle

NO_PICKLE = """
import pickle, sys
from pathlib import Path

events = []

def audit(event, args):
    # Every unpickling of a global goes through find_class: refuse it.
    if event == "pickle.find_class":
        events.append(args)
        raise RuntimeError(f"pickle.find_class{args!r} on the serving path")

sys.addaudithook(audit)

def refuse(*args, **kwargs):
    raise RuntimeError("pickle/joblib load on the serving path")

pickle.load = pickle.loads = refuse
try:
    import joblib
    joblib.load = refuse
except ImportError:
    pass
import numpy as np
real_np_load = np.load
def np_load(*args, allow_pickle=False, **kwargs):
    assert not allow_pickle, "numpy.load with allow_pickle"
    return real_np_load(*args, allow_pickle=False, **kwargs)
np.load = np_load

from fastapi.testclient import TestClient
from treesurv.core import schema
from treesurv.serving.app import create_app
from treesurv.serving.settings import Settings

app = create_app(Settings(model_dir=Path(sys.argv[1]), api_key="k", watch_interval=0))
with TestClient(app) as c:
    assert c.get("/readyz").status_code == 200
    r = c.post("/v1/predictions", json={"instances": [schema.EXAMPLE] * 100})
    assert r.status_code == 200, r.text
    assert c.post("/v1/predic", json=schema.EXAMPLE).status_code == 200
    assert c.get("/v1/model").status_code == 200
    r = c.post("/v1/admin/reload", headers={"X-API-Key": "k"})
    assert r.status_code == 200, r.text
assert not events, events
print("ok")
"""


@pytest.mark.slow
def test_the_serving_path_never_unpickles(bundle_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", NO_PICKLE, str(bundle_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_the_no_pickle_guard_would_catch_an_unpickle(tmp_path: Path) -> None:
    """The guard above is not blind: the same hook stops a real pickle load."""
    guard = NO_PICKLE.split("from fastapi.testclient")[0]
    code = (
        guard
        + "import io\n"
        + "data = pickle.dumps(Path('x'))\n"
        + "pickle.Unpickler(io.BytesIO(data)).load()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "pickle.find_class" in proc.stderr
