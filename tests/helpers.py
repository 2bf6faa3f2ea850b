"""The tests' shared helpers (fixtures live in the conftest.py files).

- paths and subprocesses: `ROOT`, `BIN`, `SHARED_REMOTE`, `run`, `copy_project`
- in-memory study rows: `good_row`, `frame_of`, `synthetic_raw`, `synthetic_study`
- small real bundles: `build_bundle`, `build_four_model_bundle`, `flip_middle_byte`
- API bodies: `API_KEY`, `instances`, `tensors`, `place`
- real servers on a loopback port: `free_port`, `request`, `running`, `alive`, ...
- git + DVC repositories with a local remote (lifecycle): `Repo`, `init_repo`, ...
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import pandas as pd

from treesurv.core import schema

ROOT = Path(__file__).resolve().parents[1]
SHARED_REMOTE = (ROOT.parent / "shared" / "dvc-remote").resolve()
BIN = Path(sys.executable).parent


# ------------------------------------------------------------------ subprocesses


def run(
    cmd: list[str],
    cwd: Path,
    check: bool = True,
    timeout: float = 900,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **{k: v for k, v in os.environ.items() if k != "LOKY_MAX_CPU_COUNT"},
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "GIT_AUTHOR_NAME": "treesurv tests",
        "GIT_AUTHOR_EMAIL": "tests@example.invalid",
        "GIT_COMMITTER_NAME": "treesurv tests",
        "GIT_COMMITTER_EMAIL": "tests@example.invalid",
        **(env or {}),
    }
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def project_files() -> list[str]:
    """What a clone would hold: tracked files plus new, not-ignored ones (work in
    progress), but not a local dvc.lock that was never committed."""
    tracked = run(["git", "ls-files", "-z"], ROOT).stdout.split("\0")
    others = run(["git", "ls-files", "-z", "--others", "--exclude-standard"], ROOT).stdout
    new = [f for f in others.split("\0") if f != "dvc.lock"]
    return sorted({f for f in tracked + new if f and (ROOT / f).is_file()})


def copy_project(dest: Path) -> Path:
    """A fresh project: this checkout's files, a new git repo, the real remote."""
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["dvc", "remote", "modify", "--local", "shared", "url", str(SHARED_REMOTE)], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "test copy"], dest)
    return dest


def clone_project(source: Path, dest: Path) -> Path:
    """A copy of a project directory (work tree, git history, DVC cache and all):
    seconds, where running its pipeline again takes minutes."""
    shutil.copytree(source, dest, symlinks=True)
    return dest


# ------------------------------------------------------- study rows in memory


def good_row(**overrides: Any) -> dict[str, Any]:
    """A valid row of the study's file (as text, like a CSV cell)."""
    row: dict[str, Any] = {
        "No": "1",
        "Plot": "1",
        "Subplot": "C",
        "Species": "Quercus rubra",
        "Light_ISF": "0.106",
        "Light_Cat": "Med",
        "Core": "2017",
        "Soil": "Prunus serotina",
        "Adult": "J",
        "Sterile": "Non-Sterile",
        "Conspecific": "Heterospecific",
        "Myco": "EMF",
        "SoilMyco": "AMF",
        "PlantDate": "5/31/18",
        "AMF": "24.45",
        "EMF": "28.19",
        "Phenolics": "3.36",
        "Lignin": "24.74",
        "NSC": "15.01",
        "Census": "18",
        "Time": "63",
        "Event": "1",
        "Harvest": "0",
        "Alive": "Dead",
    }
    row.update(overrides)
    return row


def frame_of(*rows: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


# The days a census could find a seedling dead (the study's own grid), and its end.
CENSUS_DAYS: tuple[float, ...] = (14.0, 24.5, 28.0, 38.5, 42.0, 45.5, 49.0, 52.5, 56.0, 59.5)
CENSUS_DAYS += (63.0, 66.5, 73.5, 80.5, 87.5, 94.5, 101.5)
LAST_DAY = 115.5
_SOIL_MYCO = {
    "Acer rubrum": "AMF",
    "Acer saccharum": "AMF",
    "Populus grandidentata": "EMF",
    "Prunus serotina": "AMF",
    "Quercus alba": "EMF",
    "Quercus rubra": "EMF",
    "Sterile": "Sterile",
}


def synthetic_raw(n: int = 800, seed: int = 0) -> pd.DataFrame:
    """`n` rows in the study file's format (every column as text, "NA" for an empty
    EMF), drawn like the study: maples and cherries die far more than oaks, less in
    sterile soil, and the dead have fewer reserves; deaths fall on census days up
    to day 101.5, survivors are harvested early or kept to day 115.5. Valid by every
    rule of the schema, and made in milliseconds without the real file."""
    rng = np.random.default_rng(seed)
    species = rng.choice(schema.SPECIES, n)
    soil = rng.choice(schema.SOIL_SOURCES, n)
    amf = np.array([schema.SPECIES_MYCO[s] == "AMF" for s in species])
    sterile = soil == "Sterile"
    plot = rng.integers(1, 19, n)
    plot_light = np.random.default_rng(seed + 1).uniform(0.04, 0.15, 19)
    light = np.round(np.clip(plot_light[plot] + rng.normal(0, 0.01, n), 0.032, 0.161), 3)
    risk = np.where(amf, np.where(sterile, 0.63, 0.9), np.where(sterile, 0.3, 0.23))
    # A site effect: some plots kill more, and sooner, than others.
    site = np.random.default_rng(seed + 2).uniform(0.2, 1.8, 19)[plot]
    event = (rng.uniform(size=n) < np.clip(risk * site, 0, 0.97)).astype(int)
    dead = event == 1
    harvested = ~dead & (rng.uniform(size=n) < 0.55)
    early, late = CENSUS_DAYS[:4], CENSUS_DAYS[4:]
    death_day = np.where(
        site > 1.3,
        rng.choice(early, n),
        rng.choice(late, n, p=_death_day_weights(len(late), 2.0)),
    )
    time_ = np.where(dead, death_day, np.where(harvested, rng.choice([24.5, 28.0], n), LAST_DAY))
    nsc = np.clip(rng.normal(np.where(dead, 12.7, 16.2), 3.8), 4.3, 29.5)
    lignin = np.clip(rng.normal(np.where(dead, 12.7, 19.9), 5.8), 3.8, 32.8)
    phenolics = np.clip(rng.normal(np.where(dead, 1.0, 3.2), 1.6), -1.35, 6.0)
    amf_pct = np.clip(rng.normal(20, 12, n), 0, 100)
    emf_pct = np.clip(rng.normal(26, 15, n), 0, 87.5)
    light_cat = np.where(light < 0.07, "Low", np.where(light < 0.11, "Med", "High"))
    census = {d: str(i + 4) for i, d in enumerate(sorted({*CENSUS_DAYS, 24.5, 28.0, LAST_DAY}))}
    return pd.DataFrame(
        {
            "No": [str(i) for i in rng.permutation(np.arange(1, 10 * n + 1))[:n]],
            "Plot": plot.astype(str),
            "Subplot": rng.choice(list("ABCDE"), n),
            "Species": species,
            "Light_ISF": [f"{v:g}" for v in light],
            "Light_Cat": light_cat,
            "Core": rng.choice(["2016", "2017"], n),
            "Soil": soil,
            "Adult": rng.choice(["J", "H", "I", "970", "921", "689"], n),
            "Sterile": np.where(sterile, "Sterile", "Non-Sterile"),
            "Conspecific": [
                schema.expected_conspecific(a, b) for a, b in zip(species, soil, strict=True)
            ],
            "Myco": [schema.SPECIES_MYCO[s] for s in species],
            "SoilMyco": [_SOIL_MYCO[s] for s in soil],
            "PlantDate": rng.choice(["5/25/18", "5/31/18", "6/4/18", "6/7/18"], n),
            "AMF": [f"{v:.2f}" for v in amf_pct],
            "EMF": np.where(amf, "NA", [f"{v:.2f}" for v in emf_pct]),
            "Phenolics": [f"{v:.2f}" for v in phenolics],
            "Lignin": [f"{v:.2f}" for v in lignin],
            "NSC": [f"{v:.2f}" for v in nsc],
            "Census": [census[t] for t in time_],
            "Time": [f"{t:g}" for t in time_],
            "Event": event.astype(str),
            "Harvest": harvested.astype(int).astype(str),
            "Alive": np.where(~dead & ~harvested, "Alive", "Dead"),
        }
    )


def _death_day_weights(k: int, first: float) -> np.ndarray:
    w = np.linspace(first, 0.3, k)
    return w / w.sum()


def read_study_text(path: Path) -> pd.DataFrame:
    """A study file as the tests read it: every cell text, empty or "NA" missing."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=["", "NA"])


def synthetic_study(n: int = 800, seed: int = 0) -> pd.DataFrame:
    """`synthetic_raw` validated: typed rows as `validate_file` returns them."""
    from treesurv.core.files import NA_VALUES
    from treesurv.core.validation import validate

    # Through CSV text, as `validate_file` reads a file: the same types and missings.
    text = io.StringIO(synthetic_raw(n, seed).to_csv(index=False))
    raw = pd.read_csv(text, dtype=str, keep_default_na=False, na_values=NA_VALUES)
    frame, report = validate(raw, "synthetic")
    assert report.ok, report.summary()
    return frame


def write_study_csv(path: Path, raw: pd.DataFrame) -> Path:
    """Write rows in the study's CSV format ("NA" for missing, CRLF line ends)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.fillna("NA").to_csv(path, index=False, lineterminator="\r\n")
    return path


# ------------------------------------------------------------ small real bundles


def build_bundle(
    dest: Path,
    frame: pd.DataFrame,
    version: str = "1.0.0",
    *,
    trees: int = 20,
    seed: int = 0,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """A complete, verified bundle from a small forest trained on `frame`."""
    from sklearn.ensemble import RandomForestClassifier

    from treesurv.core.encoding import encode, fit_encoder
    from treesurv.inference.predictor import dumps
    from treesurv.training.compiler import compile_model

    params = fit_encoder(frame)
    y = frame[schema.TARGET].to_numpy(dtype=int)
    model = RandomForestClassifier(trees, max_depth=6, random_state=seed).fit(
        encode(params, frame), y
    )
    files = dumps(*compile_model(params, model))
    return _write(dest, files, frame, version, {"decision_threshold": threshold})


def _write(
    dest: Path, files: dict[str, bytes], frame: pd.DataFrame, version: str, extra: dict[str, Any]
) -> dict[str, Any]:
    """Add the card and profile, then write the bundle with the test manifest fields."""
    from treesurv.core.profile import reference_profile
    from treesurv.inference import bundle

    files["model_card.md"] = f"# Test model {version}\n".encode()
    files["reference_profile.json"] = json.dumps(reference_profile(frame)).encode()
    return bundle.write_bundle(
        dest,
        files,
        name="tree-survival",
        version=version,
        extra={
            "decision_threshold": 0.5,
            "metrics": {"test": {"roc_auc": 0.9}},
            "schema": schema.schema_document(),
            "data": {"md5": None},
            "params": {},
            **extra,
        },
    )


def build_four_model_bundle(
    dest: Path, frame: pd.DataFrame, version: str = "1.0.0", *, trees: int = 10
) -> dict[str, Any]:
    """A verified bundle with all four sub-models (full/planning x classifier/survival),
    small and quick: forests for the classifiers, boosted Cox trees for survival."""
    from sklearn.ensemble import RandomForestClassifier
    from sksurv.ensemble import GradientBoostingSurvivalAnalysis

    from treesurv.core.encoding import encode, fit_encoder
    from treesurv.inference import bundle
    from treesurv.inference.predictor import dumps
    from treesurv.training.compiler import compile_model, compile_survival
    from treesurv.training.survival import survival_target

    y = frame[schema.TARGET].to_numpy(dtype=int)
    ys = survival_target(frame)
    files: dict[str, bytes] = {}
    submodels: dict[str, dict[str, Any]] = {}
    for variant, features in (("full", schema.FEATURE_NAMES), ("planning", schema.DESIGN)):
        params = fit_encoder(frame, features)
        clf = RandomForestClassifier(trees, max_depth=5, random_state=0)
        clf.fit(encode(params, frame), y)
        # The survival models take the field plot too, as the pipeline's do (with
        # enough trees that some split on it).
        site = fit_encoder(frame, features, site=True)
        surv = GradientBoostingSurvivalAnalysis(n_estimators=3 * trees, max_depth=2, random_state=0)
        surv.fit(encode(site, frame), ys)
        for kind, compiled in (
            ("classifier", compile_model(params, clf)),
            ("survival", compile_survival(site, surv)),
        ):
            entry = bundle.submodel_entry(variant, kind, features=list(features))
            files.update(dumps(*compiled, stem=entry["spec"].removesuffix(".json")))
            submodels.setdefault(variant, {})[kind] = entry
    return _write(
        dest,
        files,
        frame,
        version,
        {"submodels": submodels, "survival": {"max_days": float(ys["time"].max())}},
    )


def flip_middle_byte(path: Path) -> None:
    """Tamper with a file: one bit of its middle byte flipped."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def classifier_zoo() -> dict[str, Callable[[], Any]]:
    """Every kind of classifier the compiler supports, small: name -> a new model."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
        VotingClassifier,
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "logreg": lambda: Pipeline(
            [("s", StandardScaler()), ("m", LogisticRegression(max_iter=2000))]
        ),
        "logreg_bare": lambda: LogisticRegression(max_iter=5000),
        "forest": lambda: RandomForestClassifier(40, max_depth=8, random_state=0),
        "extra": lambda: ExtraTreesClassifier(30, random_state=0),
        "gboost": lambda: GradientBoostingClassifier(n_estimators=40, random_state=0),
        "hgb": lambda: HistGradientBoostingClassifier(max_iter=40, random_state=0),
        "voting": lambda: VotingClassifier(
            [
                ("f", RandomForestClassifier(20, random_state=0)),
                ("h", HistGradientBoostingClassifier(max_iter=20)),
            ],
            voting="soft",
            weights=[1, 2],
        ),
        "sigmoid_hgb": lambda: CalibratedClassifierCV(
            HistGradientBoostingClassifier(max_iter=30), method="sigmoid", cv=3, ensemble=False
        ),
        "isotonic_forest": lambda: CalibratedClassifierCV(
            RandomForestClassifier(20, random_state=0), method="isotonic", cv=3, ensemble=False
        ),
        "sigmoid_ensemble": lambda: CalibratedClassifierCV(
            GradientBoostingClassifier(n_estimators=20), method="sigmoid", cv=3, ensemble=True
        ),
    }


CLASSIFIERS = (
    "logreg",
    "logreg_bare",
    "forest",
    "extra",
    "gboost",
    "hgb",
    "voting",
    "sigmoid_hgb",
    "isotonic_forest",
    "sigmoid_ensemble",
)


# ------------------------------------------------------------------- API bodies

API_KEY = "s3cret-admin-key"
OIP_MODEL = "/v2/models/tree-survival"
# The study report's sections, in the order the explore stage writes them.
EXPLORE_SECTIONS = [
    "design",
    "missing",
    *(f"trait-{t.lower()}" for t in schema.TRAITS),
    "light",
    "km-species",
    "km-soil",
    "km-sterile",
    "correlations",
    "importance",
]


def run_fresh_python(code: str, timeout: float = 120) -> None:
    """Run `code` in a new interpreter (what a process imports or changes at start is
    seen there, not in this test process); fails with its stderr if it fails."""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """`frame.to_dict("records")`, typed with the str keys the frames here have
    (pandas-stubs type a record's keys as Hashable, whatever the columns)."""
    return cast(list[dict[str, Any]], frame.to_dict("records"))


def instances(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of a typed frame as API instances (EMF missing -> null)."""
    rows = records(frame[list(schema.FEATURE_NAMES)])
    return [{k: (None if schema.is_missing(v) else v) for k, v in r.items()} for r in rows]


def tensors(rows: list[dict[str, Any]], nested: bool = False) -> list[dict[str, Any]]:
    """Instances as Open Inference Protocol input tensors, one per feature."""
    out = []
    for f in schema.FEATURES:
        values = [r.get(f.name) for r in rows]
        out.append(
            {
                "name": f.name,
                "shape": [len(rows), 1] if nested else [len(rows)],
                "datatype": "BYTES" if f.kind == "categorical" else "FP64",
                "data": [[v] for v in values] if nested else values,
            }
        )
    return out


def place(source: Path, model_dir: Path, tamper: bool = False) -> None:
    """Copy a bundle beside the model path and rename it into place (as a deploy does)."""
    from treesurv.inference.bundle import swap_into_place

    staging = model_dir.with_name(f".{model_dir.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    if tamper:
        flip_middle_byte(staging / "predictor.npz")
    swap_into_place(staging, model_dir)


# ------------------------------------------------- real servers on a loopback port
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(url: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
    data = None if body is None else orjson.dumps(body)
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
            kind = r.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        raw, status, kind = exc.read(), exc.code, exc.headers.get("content-type", "")
    return status, orjson.loads(raw) if "json" in kind else raw.decode()


@contextmanager
def running(
    cmd: list[str],
    env: Mapping[str, str],
    port: int,
    cwd: Path,
    ready: str = "/healthz",
    timeout: float = 90,
) -> Iterator[str]:
    """Run `cmd` until `ready` answers 200 on 127.0.0.1:port; SIGTERM it at the end."""
    log = cwd / f"server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env={**os.environ, **env}, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if request(base + ready, timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready in {timeout}s:\n{log.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    # uvicorn re-raises the signal it handled after a clean shutdown: -SIGTERM is normal.
    assert proc.returncode in (0, -signal.SIGTERM), (
        f"server did not stop cleanly ({proc.returncode}):\n{log.read_text()}"
    )


@contextmanager
def serving(bundle: Path, cwd: Path, **settings: str) -> Iterator[str]:
    """`treesurv serve` (one uvicorn worker) on `bundle`, its watcher off, with
    `TREESURV_<NAME>` set from each keyword; yields the base URL once `/readyz` is 200."""
    port = free_port()
    cmd = [str(BIN / "treesurv"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--model", str(bundle)]
    env = {"TREESURV_WATCH_INTERVAL": "0"}
    env |= {f"TREESURV_{name.upper()}": value for name, value in settings.items()}
    with running(cmd, env, port, cwd, "/readyz") as base:
        yield base


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, exited but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def worker_pids(base: str) -> set[str]:
    """Processes that report a loaded model in /metrics (gunicorn multiprocess mode)."""
    _, text = request(f"{base}/metrics")
    return set(re.findall(r'^treesurv_model_info\{[^}]*pid="(\d+)"', text, re.M))


def wait_for_workers(base: str, n: int, timeout: float = 60) -> bool:
    """Readiness answers from the first worker up; the others may still be loading."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(worker_pids(base)) >= n:
            return True
        time.sleep(0.2)
    return False


# ------------------------------------------------------------- prediction logs

ACER = {**schema.EXAMPLE, "Species": "Acer saccharum", "EMF": None}


def log_instances(n: int, **over: Any) -> list[dict[str, Any]]:
    """`n` distinct valid instances (the example with AMF = 0, 1, ...)."""
    return [{**schema.EXAMPLE, "AMF": float(i), **over} for i in range(n)]


def lines_in(directory: Path) -> list[dict[str, Any]]:
    """The log's lines: one per request."""
    out = []
    for path in sorted(directory.glob("predictions-*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines()]
    return out


def rows_in(directory: Path) -> list[dict[str, Any]]:
    """The log's instances, as the reader sees them: one row per scored instance."""
    from treesurv.monitoring.prediction_log.reader import rows_of

    rows = []
    for line in lines_in(directory):
        got = rows_of(line)
        assert got is not None, line
        rows += got
    return rows


def counter(registry: Any, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, name
    return float(value)


def drift_cli(cwd: Path, log: Path, bundle_dir: Path, out: Path) -> tuple[int, dict[str, Any], str]:
    """`treesurv monitor drift` on a log against a bundle: exit code, report, output."""
    proc = run(
        [
            "treesurv",
            "monitor",
            "drift",
            "--log",
            str(log),
            "--reference",
            str(bundle_dir),
            "--out",
            str(out / "drift.json"),
            "--html",
            str(out / "drift.html"),
        ],
        cwd,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    report = json.loads((out / "drift.json").read_text()) if (out / "drift.json").exists() else {}
    return proc.returncode, report, proc.stdout + proc.stderr


# ------------------------------------------------------------------- Dockerfile

DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            if current.strip():
                word, _, rest = current.strip().partition(" ")
                out.append((word.upper(), rest.strip()))
            current = ""
    return out


def runtime_stage() -> list[tuple[str, str]]:
    steps = instructions(DOCKERFILE.read_text())
    starts = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    return steps[starts[-1] :]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in stage:
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list), "use the exec (JSON) form"
    return [str(v) for v in value]


# ------------------------------------ git + DVC repositories with a local remote

STORE = Path("models/registry/tree-survival")
DATA_RAW = Path("data/raw/Tree_Data.csv")
PARAMS = """\
paths:
  raw: data/raw/Tree_Data.csv
  bundle: models/tree-survival
  metrics: metrics.json
package:
  name: tree-survival
  version: 1.0.0
retrain:
  stage: prod
  production_dir: models/production
  store: models/registry
"""


@dataclass
class Repo:
    root: Path
    remote: Path

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(list(cmd), self.root, check=check)

    def treesurv(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("treesurv", *args, check=check)

    @property
    def registry(self) -> Any:
        from treesurv.lifecycle.registry import Registry

        return Registry(self.root, "tree-survival", STORE)

    def promote(self, version: str) -> None:
        """Promote through the Python API (setup steps; the CLI is tested on its own)."""
        from treesurv.lifecycle.registry import promote

        promote(self.registry, version, self.root / "models" / "production")

    def tags(self) -> list[str]:
        return self.run("git", "tag", "--list").stdout.split()

    def head(self) -> str:
        return self.run("git", "rev-parse", "HEAD").stdout.strip()

    def break_remote(self) -> None:
        """Point the remote under a regular file: every push fails, like a dead host."""
        blocker = self.root.parent / "not-a-directory"
        blocker.write_text("")
        self.run("dvc", "remote", "modify", "--local", "tmp", "url", str(blocker / "remote"))

    def mend_remote(self) -> None:
        self.run("dvc", "remote", "modify", "--local", "tmp", "url", str(self.remote))


def init_repo(root: Path, remote: Path) -> Repo:
    root.mkdir(parents=True, exist_ok=True)
    remote.mkdir(parents=True, exist_ok=True)
    repo = Repo(root, remote)
    repo.run("git", "init", "-q", "-b", "main")
    repo.run("dvc", "init", "-q")
    repo.run("dvc", "remote", "add", "--local", "-d", "tmp", str(remote))
    (root / "params.yaml").write_text(PARAMS)
    (root / ".gitignore").write_text("/models/production/\n/models/.production.*\n")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "init")
    return repo


def add_version(
    repo: Repo, study: pd.DataFrame, version: str, *, seed: int, push: bool = True
) -> str:
    """Build a small real bundle, store it with DVC as the registry does, commit it
    and register it; returns the bundle's manifest digest."""
    built = build_bundle(repo.root / STORE, study, version, trees=4, seed=seed)
    metrics = {"test": {"roc_auc": 0.9 + seed / 1000, "brier": 0.1 - seed / 1000}}
    (repo.root / "metrics.json").write_text(json.dumps(metrics))
    repo.run("dvc", "add", "-q", str(STORE))
    if push:
        repo.run("dvc", "push", "-q")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", f"model {version}")
    repo.registry.register(version)
    return str(built["digest"])


def versioned_repo(base: Path, study: pd.DataFrame, versions: tuple[str, ...]) -> dict[str, str]:
    """A repository (`base/repo`) and its remote (`base/remote`) with `versions`
    registered; returns their bundles' digests. Built once per module, then copied
    for each test with `copy_of`."""
    repo = init_repo(base / "repo", base / "remote")
    return {v: add_version(repo, study, v, seed=i) for i, v in enumerate(versions)}


def copy_of(base: Path, dest: Path) -> Repo:
    """A copy of the repository and remote that `versioned_repo` built under `base`."""
    shutil.copytree(base, dest, symlinks=True)
    repo = Repo(dest / "repo", dest / "remote")
    repo.mend_remote()
    return repo


def manifest(path: Path) -> dict[str, object]:
    return dict(json.loads((path / "manifest.json").read_text()))


def study_lines(real_csv: Path) -> list[bytes]:
    """The real file's lines, byte for byte (CRLF endings included)."""
    return real_csv.read_bytes().splitlines(keepends=True)


def make_data_repo(root: Path, remote: Path, real_csv: Path) -> Repo:
    """A repository whose data version is the study's first 300 rows."""
    repo = init_repo(root, remote)
    lines = study_lines(real_csv)
    (repo.root / DATA_RAW).parent.mkdir(parents=True)
    (repo.root / DATA_RAW).write_bytes(b"".join(lines[:301]))
    repo.run("dvc", "add", "-q", str(DATA_RAW))
    repo.run("dvc", "push", "-q")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "data v1")
    return repo
