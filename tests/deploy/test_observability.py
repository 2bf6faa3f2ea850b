"""The observability files in deploy/: Compose, Prometheus, alert rules, Grafana.

Validated with the real tools where they exist here (promtool from Debian's
prometheus package, installed into .venv by `make setup`; check-jsonschema's
copy of the compose-spec and GitHub workflow schemas), and against the metric
names contract in deploy/METRICS.md.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from prometheus_client import CollectorRegistry

from treesurv.core import schema
from treesurv.core.files import write_json
from treesurv.core.profile import reference_profile
from treesurv.monitoring.drift import Thresholds, compare
from treesurv.monitoring.gauges import DriftCollector
from treesurv.monitoring.prediction_log.queue import PredictionLog

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "treesurv.json"
METRIC = re.compile(r"\btreesurv_[a-z_]+\b")


def promtool() -> str:
    found = BIN / "promtool"
    if found.exists():
        return str(found)
    on_path = shutil.which("promtool")
    if on_path is None:
        pytest.fail("promtool is missing: `make setup` unpacks it into .venv/bin")
    return on_path


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


def contract() -> dict[str, str]:
    """Metric name -> type, from the tables of deploy/METRICS.md."""
    rows = re.findall(
        r"^\| `(treesurv_[a-z_]+)` \| (counter|gauge|histogram) \|",
        (DEPLOY / "METRICS.md").read_text(),
        flags=re.MULTILINE,
    )
    return dict(rows)


def series_names() -> set[str]:
    """Every series name the contract allows in a query (histograms have three)."""
    out: set[str] = set()
    for name, kind in contract().items():
        out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


# ---------------------------------------------------------------- Prometheus


def test_prometheus_config_and_rules_pass_promtool() -> None:
    proc = tool(promtool(), "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 9 rules found" in proc.stdout + proc.stderr


@pytest.mark.slow  # promtool evaluates the rules over series: seconds
def test_alert_rules_fire_on_their_series(tmp_path: Path) -> None:
    proc = tool(promtool(), "test", "rules", str(PROMETHEUS / "alerts.test.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Every alert is exercised by the unit tests, firing at least once.
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    fired = {
        case["alertname"] for t in tests for case in t["alert_rule_test"] if case.get("exp_alerts")
    }
    assert fired == {r["alert"] for r in alert_rules()}


@pytest.mark.slow  # promtool evaluates the rules over series: seconds
def test_promtool_would_catch_a_wrong_expectation(tmp_path: Path) -> None:
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    broken = (PROMETHEUS / "alerts.test.yml").read_text().replace("error rate 5%", "error rate 7%")
    (tmp_path / "alerts.test.yml").write_text(broken)
    proc = tool(promtool(), "test", "rules", str(tmp_path / "alerts.test.yml"))
    assert proc.returncode != 0 and "TreesurvHighErrorRate" in proc.stdout + proc.stderr


def test_every_alert_covers_the_issue_and_is_documented() -> None:
    rules = {r["alert"]: r for r in alert_rules()}
    for name in ("TreesurvHighErrorRate", "TreesurvHighLatency", "TreesurvNotReady"):
        assert name in rules
    assert any("treesurv_drift" in r["expr"] for r in rules.values())
    for rule in rules.values():
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_rules_and_dashboard_use_only_contract_metrics() -> None:
    allowed = series_names()
    used = {m for r in alert_rules() for m in METRIC.findall(r["expr"])}
    used |= {m for e in dashboard_exprs() for m in METRIC.findall(e)}
    assert used - allowed == set()
    # The dashboard shows what the issue asks for.
    for needed in (
        "treesurv_http_requests_total",
        "treesurv_http_request_duration_seconds_bucket",
        "treesurv_predicted_death_probability_bucket",
        "treesurv_model_info",
        "treesurv_drift_psi",
        "treesurv_drift_detected",
    ):
        assert any(needed in e for e in dashboard_exprs()), needed


def test_monitoring_code_exposes_the_contract_names(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    PredictionLog(tmp_path / "log", registry=registry).close()
    frame = pd.DataFrame([schema.EXAMPLE] * 5)
    report = compare(reference_profile(frame), frame, Thresholds.from_params(min_rows=1))
    write_json(report.to_dict(), tmp_path / "drift.json")
    registry.register(DriftCollector(tmp_path / "drift.json"))
    names = contract()
    ours = {n for n in names if n.startswith(("treesurv_prediction_log_", "treesurv_drift_"))}
    assert _exposed(registry, names) == ours


def _exposed(registry: CollectorRegistry, names: dict[str, str]) -> set[str]:
    # prometheus-client reports counter families without their _total suffix.
    produced = {m.name for m in registry.collect()}
    return {n + "_total" if names.get(n + "_total") == "counter" else n for n in produced}


def test_serving_metrics_match_the_contract() -> None:
    from treesurv.serving import metrics as metrics_mod

    names = contract()
    service = {
        n for n in names if not n.startswith(("treesurv_prediction_log_", "treesurv_drift_"))
    }
    assert _exposed(metrics_mod.Metrics().registry, names) == service


def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    # promtool parses every expression of a rules file: load the dashboard's
    # queries as recording rules (Grafana's $__ variables replaced by a range).
    rules = [
        {"record": f"dashboard:query_{i}", "expr": e.replace("$__rate_interval", "5m")}
        for i, e in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = tool(promtool(), "check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "r", "expr": "sum(("}]}]})
    )
    assert tool(promtool(), "check", "rules", str(path)).returncode != 0


# -------------------------------------------------------------------- Grafana


def test_dashboard_structure() -> None:
    dash = dashboard()
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    assert dash["uid"] == "treesurv" and dash["title"] and isinstance(dash["schemaVersion"], int)
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0, p["title"]
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & area, f"panel {p['title']!r} overlaps another"
        cells |= area
        if p["type"] == "row":
            continue
        assert p["type"] in {"timeseries", "heatmap", "table", "stat", "bargauge"}
        assert p["datasource"]["uid"] == datasource["uid"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["datasource"]["uid"] == datasource["uid"] and t["expr"].strip()
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "treesurv.yml").read_text()
    )["providers"][0]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts


# -------------------------------------------------------------------- Compose


def test_compose_file_matches_the_compose_spec() -> None:
    proc = tool(
        str(BIN / "check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        str(DEPLOY / "compose.yaml"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_wiring() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    api = services["api"]
    assert (DEPLOY / api["build"]["context"]).resolve() == ROOT
    assert api["build"]["dockerfile"] == "deploy/Dockerfile"
    # Prometheus scrapes the API service on its container port.
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"][0]
    host, port = scrape["static_configs"][0]["targets"][0].split(":")
    assert host == "api" and f":{port}:{port}" in api["ports"][0]
    assert scrape["job_name"] == "treesurv-api"  # the job the alert rules select
    # Every host directory mounted from deploy/ exists; images are pinned.
    for name, svc in services.items():
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
        if name != "api":
            assert ":" in svc["image"] and not svc["image"].endswith(":latest")
    env = api["environment"]
    assert env["TREESURV_PREDICTION_LOG_DIR"] in {m.split(":")[1] for m in api["volumes"]}
    assert api["read_only"] is True and "/tmp" in api["tmpfs"]


def test_compose_spec_check_rejects_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  api:\n    ports: 8000\n    restart: sometimes\n")
    proc = tool(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad))
    assert proc.returncode != 0


def test_drift_workflow_matches_the_workflow_schema() -> None:
    path = ROOT / ".github" / "workflows" / "drift.yml"
    proc = tool(
        str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = path.read_text()
    assert "treesurv monitor drift" in text and "gh workflow run ct.yml" in text
