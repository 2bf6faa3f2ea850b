"""The dependency audit's fallback (bin/audit-deps.py): pins that are their project's
latest release are checked against PyPI's project data. PyPI is replaced by canned
answers here (the suite must not depend on the network); `make security` runs the
real thing."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_deps", ROOT / "bin" / "audit-deps.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def vuln(vid: str, *aliases: str, withdrawn: str | None = None) -> dict[str, Any]:
    return {"id": vid, "aliases": list(aliases), "fixed_in": ["9.9"], "withdrawn": withdrawn}


def test_pins_are_read_from_the_constraints_file(audit: ModuleType) -> None:
    pins = audit.pins()
    assert pins["fastapi"] and pins["scikit-learn"]
    assert audit.canonical("Flufl.Lock") == audit.canonical("flufl_lock") == "flufl-lock"


def test_only_latest_pins_count_and_ignored_or_withdrawn_advisories_are_dropped(
    audit: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    pins = audit.pins()
    answers = {
        "fastapi": (pins["fastapi"], [vuln("GHSA-1", "CVE-1")]),
        "orjson": (pins["orjson"], [vuln("GHSA-2", withdrawn="2026-01-01")]),
        "uvicorn": (pins["uvicorn"], [vuln("PYSEC-3", "GHSA-IGNORED")]),
        "numpy": ("999.0", [vuln("GHSA-4")]),  # pinned behind the latest: not checked
        "pandas": None,  # PyPI did not answer: not checked
    }
    monkeypatch.setattr(audit, "latest_release", lambda name: answers[name])
    checked, found = audit.check_latest(list(answers), ["GHSA-IGNORED"])
    assert checked == {"fastapi", "orjson", "uvicorn"}
    assert [(name, v["id"]) for name, _, v in found] == [("fastapi", "GHSA-1")]
