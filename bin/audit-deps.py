#!/usr/bin/env python3
"""`make audit`: known vulnerabilities in the pinned dependencies (pip-audit).

pip-audit asks a vulnerability database (PyPI's JSON API, or OSV) about every pin of
requirements/constraints.txt. Where neither can be reached, every package comes back
"skipped" and pip-audit still says "No known vulnerabilities found"; this wrapper
never passes that off as a clean audit: it prints how many packages were really
checked, warns loudly when some or all were not, and fails when AUDIT_STRICT=1
(use it where the network is there, e.g. in the GitHub workflow). Known findings
that do not apply are listed with a reason in requirements/audit-ignore.txt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
        f"audit: {checked} of {len(deps)} pinned packages checked against {service}; "
        f"{len(vulnerable)} vulnerable, {len(report.get('fixes', []))} fixes listed"
    )
    if vulnerable:
        return 1
    if skipped:
        reason = skipped[0]["skip_reason"]
        print(
            f"WARNING: {len(skipped)} packages were NOT audited (e.g. {reason}): the "
            f"vulnerability database ({service}) cannot be reached from here. This is not "
            "a clean audit; run `AUDIT_STRICT=1 make audit` where it can be reached.",
            file=sys.stderr,
        )
        return 2 if strict else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
