#!/usr/bin/env python3
"""`make audit`: known vulnerabilities in the pinned dependencies (pip-audit).

pip-audit asks a vulnerability database (PyPI's JSON API, or OSV) about every pin of
requirements/constraints.txt. Where neither can be reached, every package comes back
"skipped" and pip-audit still says "No known vulnerabilities found"; this wrapper
never passes that off as a clean audit: it prints how many packages were really
checked, warns loudly when some or all were not, and fails when AUDIT_STRICT=1
(use it where the network is there, e.g. in the GitHub workflow). Known findings
that do not apply are listed with a reason in requirements/audit-ignore.txt.

Fallback for what pip-audit skipped: PyPI's project JSON (`/pypi/NAME/json`, served
by mirrors that do not serve the per-version JSON pip-audit asks for) lists the known
vulnerabilities of the project's latest release, so every pin that *is* the latest
release is still really checked. Pins behind the latest stay "not audited".
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
IGNORE = ROOT / "requirements" / "audit-ignore.txt"


def ignored() -> list[str]:
    """Vulnerability ids from the ignore file (`ID  # why it does not apply`)."""
    if not IGNORE.exists():
        return []
    ids = []
    for line in IGNORE.read_text().splitlines():
        vid, _, reason = line.partition("#")
        if vid.strip():
            if not reason.strip():
                sys.exit(f"audit: {IGNORE.name}: {vid.strip()} has no reason (`ID  # why`)")
            ids.append(vid.strip())
    return ids


def latest_release(name: str) -> tuple[str, list[dict[str, Any]]] | None:
    """The latest version of a project and its known vulnerabilities, from PyPI's
    project JSON; None when it cannot be read."""
    url = f"https://pypi.org/pypi/{name}/json"
    try:
        with urllib.request.urlopen(url, timeout=20) as answer:  # nosec B310 (fixed https URL)
            doc = json.load(answer)
        return str(doc["info"]["version"]), list(doc.get("vulnerabilities") or [])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pins() -> dict[str, str]:
    """Normalised project name -> pinned version, from the constraints file."""
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            out[canonical(name)] = version.strip()
    return out


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check_latest(
    names: list[str], ignore: list[str]
) -> tuple[set[str], list[tuple[str, str, dict[str, Any]]]]:
    """(the pins checked this way, their findings)."""
    pinned = pins()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(latest_release, names))
    checked = set()
    found = []
    for name, answer in zip(names, answers, strict=True):
        version = pinned.get(canonical(name))
        if answer is None or answer[0] != version:
            continue
        checked.add(name)
        for vuln in answer[1]:
            ids = {vuln.get("id"), *(vuln.get("aliases") or [])}
            if vuln.get("withdrawn") or ids & set(ignore):
                continue
            found.append((name, version, vuln))
    return checked, found


def main() -> int:
    strict = os.environ.get("AUDIT_STRICT") == "1"
    service = os.environ.get("AUDIT_SERVICE", "pypi")
    cmd = [str(Path(sys.executable).parent / "pip-audit"), "-r", str(CONSTRAINTS)]
    cmd += ["--no-deps", "--disable-pip", "--progress-spinner", "off", "-f", "json"]
    cmd += ["-s", service, "--timeout", "20"]
    for vid in ignored():
        cmd += ["--ignore-vuln", vid]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        print(proc.stderr[-2000:], file=sys.stderr)
        print(f"audit: pip-audit failed ({proc.returncode}) against {service}", file=sys.stderr)
        return 2 if strict else 0
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if "skip_reason" in d]
    vulnerable = [d for d in deps if d.get("vulns")]
    checked = len(deps) - len(skipped)
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions", [])) or "no fix yet"
            print(f"VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})")
    print(
        f"audit: {checked} of {len(deps)} pinned packages checked by pip-audit against "
        f"{service}; {len(vulnerable)} vulnerable"
    )
    if skipped:
        reason = skipped[0]["skip_reason"]
        checked_names, found = check_latest([d["name"] for d in skipped], ignored())
        seen: set[tuple[str, str]] = set()
        for name, version, vuln in found:
            # One advisory is often listed under several ids (GHSA, PYSEC, CVE).
            key = (name, min([vuln["id"], *(vuln.get("aliases") or [])]))
            if key in seen:
                continue
            seen.add(key)
            fixes = ", ".join(vuln.get("fixed_in") or []) or "no fix yet"
            aliases = ", ".join(vuln.get("aliases") or [])
            print(f"VULNERABLE {name} {version}: {vuln['id']} ({aliases}; fixed in {fixes})")
        vulnerable += [{"name": name} for name, _ in seen]
        print(
            f"audit: {len(checked_names)} of the {len(skipped)} skipped pins are their project's "
            f"latest release and were checked against PyPI's project data; "
            f"{len(seen)} finding(s)"
        )
        left = [d["name"] for d in skipped if d["name"] not in checked_names]
    else:
        left = []
    if vulnerable:
        return 1
    if left:
        print(
            f"WARNING: {len(left)} packages were NOT audited ({', '.join(left)}): "
            f"pip-audit's database ({service}) cannot be reached from here ({reason}) and "
            "they are not their project's latest release. This is not a complete audit; "
            "run `AUDIT_STRICT=1 make audit` where the database can be reached.",
            file=sys.stderr,
        )
        return 2 if strict else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
