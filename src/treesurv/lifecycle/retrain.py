"""Continuous training (`treesurv retrain`): the champion/challenger loop as one command.

pull -> (add new rows) -> validate -> `dvc repro` -> score the challenger (the
pipeline's bundle) and the champion (the production version, restored from the
registry) on the same rows -> gate -> on promotion: version the bundle, `dvc push`,
commit the pointers and the lock, register the version and put it in production.

The rows both models are judged on are the challenger's held-out test split,
restricted to the rows the champion's own split also held out: the split is a
hash of the seedling id, so with the same split parameters that is the whole
test split, and appended rows never move an old row to the other side.

Whatever happens, `reports/retrain.json` and `reports/retrain.md` say what was
decided and why. A failure at any step raises nothing past `retrain()`: it is
reported with the step and the reason, and the production stage and bundle are
only ever changed by the very last step.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from treesurv.core import schema
from treesurv.core.config import Params, RetrainParams
from treesurv.core.errors import LifecycleError, TreesurvError
from treesurv.core.files import file_md5, write_json
from treesurv.core.journal import Journal, checkpoint, locked, write_atomic
from treesurv.core.split import holdout_mask
from treesurv.core.validation import validate_file
from treesurv.inference import bundle as bundle_mod
from treesurv.lifecycle import ingest, registry, vcs
from treesurv.training.evaluation import (
    calibration_points,
    classification_metrics,
    rounded,
    save_figure,
)

Log = Callable[[str], None]
GATE_METRICS = ("roc_auc", "brier")
# Shown in the report, with the direction that is better.
REPORT_METRICS = (
    ("roc_auc", "ROC AUC", 1),
    ("brier", "Brier score", -1),
    ("log_loss", "log loss", -1),
    ("accuracy", "accuracy", 1),
    ("ece", "calibration error (ECE)", -1),
)


class RetrainError(LifecycleError):
    """A step of the loop cannot complete."""


# ---------------------------------------------------------------------- pure


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: tuple[str, ...]


def decide(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    config: RetrainParams,
    same_model: bool = False,
) -> Decision:
    """The gate: at least as good on ROC AUC and not worse on Brier, within the
    tolerances of params.yaml; the production model itself is never re-promoted."""
    if champion is None:
        return Decision(True, ("no model is in production yet: the challenger goes first",))
    if same_model:
        return Decision(
            False,
            ("the challenger is the production model itself (same compiled predictor)",),
        )
    for name in GATE_METRICS:
        for side, m in (("challenger", challenger), ("production model", champion)):
            value = m.get(name)
            if value is None or not math.isfinite(float(value)):
                raise RetrainError(f"the {side}'s {name} is undefined on the evaluation rows")
    auc_floor = champion["roc_auc"] - config.roc_auc_tolerance
    brier_ceiling = champion["brier"] + config.brier_tolerance
    auc_ok = challenger["roc_auc"] >= auc_floor
    brier_ok = challenger["brier"] <= brier_ceiling
    reasons = (
        f"ROC AUC {challenger['roc_auc']:.4f} {'≥' if auc_ok else '<'} "
        f"{champion['roc_auc']:.4f} − {config.roc_auc_tolerance:g} = {auc_floor:.4f}",
        f"Brier {challenger['brier']:.4f} {'≤' if brier_ok else '>'} "
        f"{champion['brier']:.4f} + {config.brier_tolerance:g} = {brier_ceiling:.4f}",
    )
    return Decision(auc_ok and brier_ok, reasons)


def evaluation_rows(test: pd.DataFrame, champion: Mapping[str, Any] | None) -> pd.DataFrame:
    """The challenger's held-out rows that the champion's split held out too."""
    split = ((champion or {}).get("params") or {}).get("data") or {}
    if "test_percent" not in split or "split_salt" not in split:
        return test
    mask = holdout_mask(test[schema.ID], float(split["test_percent"]), split["split_salt"])
    return test[mask].reset_index(drop=True)


def same_predictor(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two bundles hold the same compiled model (whatever their versions or dates)."""
    files_a, files_b = a.get("files") or {}, b.get("files") or {}
    names = ("predictor.json", "predictor.npz")
    return all(
        name in files_a
        and name in files_b
        and files_a[name].get("sha256") == files_b[name].get("sha256")
        for name in names
    )


def set_package_version(text: str, version: str) -> str:
    """params.yaml with `package.version` set, comments and layout kept."""
    lines = text.splitlines(keepends=True)
    in_package = False
    for i, line in enumerate(lines):
        if re.match(r"^package:\s*(#.*)?$", line):
            in_package = True
            continue
        if in_package and line.strip() and not line[0].isspace():
            break
        match = re.match(r"^(\s+version:\s*)(\S+)(.*)$", line, flags=re.S) if in_package else None
        if match:
            lines[i] = f"{match.group(1)}{version}{match.group(3)}"
            return "".join(lines)
    raise RetrainError("params.yaml has no package.version to set")


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.{digits}f}"
    return "–" if value is None else str(value)


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown, ready to post as a commit comment (CML)."""
    decision = report["decision"]
    name = report.get("model", "model")
    champ = report.get("champion") or {}
    chall = report.get("challenger") or {}
    lines: list[str] = []
    if decision == "promoted":
        title = f"promoted {name} {report.get('version')}"
    elif decision == "kept":
        title = f"kept {name} {champ.get('version')} in production"
    else:
        title = f"failed at step `{report.get('failed_step')}`"
    lines += [f"# Retrain: {title}", ""]
    if decision == "failed":
        lines += [
            "**Decision: failed** — the production model and its tags were not changed.",
            "",
            "```",
            str(report.get("error", "")).strip(),
            "```",
            "",
        ]
    else:
        lines += [f"**Decision: {decision}**", ""]
        lines += [f"- {reason}" for reason in report.get("reasons", [])]
        lines.append("")
    cm, pm = chall.get("metrics") or {}, champ.get("metrics") or {}
    evaluation = report.get("evaluation") or {}
    if cm and pm:
        lines += [
            f"Both models scored on the same {evaluation.get('rows', '?')} held-out rows "
            "(neither was trained on them).",
            "",
            f"| metric | production {champ.get('version')} | challenger | change |",
            "|---|---:|---:|---:|",
        ]
        for key, label, sign in REPORT_METRICS:
            new, old = cm.get(key), pm.get(key)
            change = "–"
            if isinstance(new, float) and isinstance(old, float):
                delta = new - old
                mark = "" if delta == 0 else (" ✓" if delta * sign > 0 else " ✗")
                change = f"{delta:+.4f}{mark}"
            arrow = "↑" if sign > 0 else "↓"
            lines.append(f"| {label} {arrow} | {_fmt(old)} | {_fmt(new)} | {change} |")
        lines.append("")
    elif cm:
        lines += [
            f"Scored on {evaluation.get('rows', '?')} held-out rows it was not trained on.",
            "",
            "| metric | challenger |",
            "|---|---:|",
        ]
        for key, label, sign in REPORT_METRICS:
            lines.append(f"| {label} {'↑' if sign > 0 else '↓'} | {_fmt(cm.get(key))} |")
        lines.append("")
    gate = report.get("gate") or {}
    if gate:
        lines.append(
            f"Gate (params.yaml `retrain`): ROC AUC may drop by at most "
            f"{gate.get('roc_auc_tolerance')}, Brier may rise by at most "
            f"{gate.get('brier_tolerance')}."
        )
        lines.append("")
    dv = report.get("data") or {}
    if dv:
        added = dv.get("added") or {}
        extra = f"; {added.get('appended', 0)} row(s) added by this run" if added else ""
        md5 = str(dv.get("md5") or "")[:12]
        lines.append(f"Data: `{dv.get('path')}` md5 `{md5}`, {dv.get('rows')} rows{extra}.")
    if chall.get("model"):
        models = f"challenger {chall['model']}"
        if champ.get("model"):
            models = f"production {champ.get('version')} {champ['model']}, {models}"
        lines.append(f"Models: {models}.")
    for plot in report.get("plots", []):
        lines += ["", f"![{Path(plot).stem}]({plot})"]
    if report.get("tags"):
        lines += ["", "Tags: " + ", ".join(f"`{t}`" for t in report["tags"])]
    lines += ["", f"<sub>{report.get('finished', '')} · {report.get('seconds', '?')} s</sub>", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------- plots


def save_plots(
    directory: Path,
    y: np.ndarray,
    curves: Mapping[str, np.ndarray],
    bins: int,
) -> list[Path]:
    """ROC and calibration of both models on the evaluation rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    directory.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for label, p in curves.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, same rows")
    ax.legend(loc="lower right")
    written = [Path(save_figure(fig, directory / "roc.png"))]

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for label, p in curves.items():
        pts = calibration_points(y, p, bins, label)
        ax.plot(
            [q["predicted"] for q in pts], [q["observed"] for q in pts], marker="o", label=label
        )
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="predicted probability of death", ylabel="observed share that died")
    ax.set(title="Calibration, same rows")
    ax.legend(loc="upper left")
    written.append(Path(save_figure(fig, directory / "calibration.png")))
    return written


# ---------------------------------------------------------------------- the loop


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _model_summary(manifest: Mapping[str, Any]) -> str:
    return str((manifest.get("model") or {}).get("candidate", "?"))


def _score(bundle: bundle_mod.Bundle, rows: pd.DataFrame, bins: int) -> tuple[np.ndarray, Any]:

    p = bundle.compiled().proba_columns(rows[list(schema.FEATURE_NAMES)])
    y = rows[schema.TARGET].to_numpy(dtype=int)
    return p, rounded(classification_metrics(y, p, bundle.threshold, bins), 6)


class RetrainRun:
    """One retrain: its state, the report it builds and the steps it runs."""

    def __init__(self, root: Path, params_file: Path, log: Log) -> None:
        self.root = root.resolve()
        self.params_file = params_file if params_file.is_absolute() else self.root / params_file
        self.log = log
        self.step = "setup"
        self.started = time.perf_counter()
        self.report: dict[str, Any] = {"decision": "failed", "started": _now()}
        self.config = RetrainParams()  # until params.yaml is read: where to report

    def setup(self) -> None:
        params = Params.load(self.params_file)
        self.params = params
        self.paths = params.paths
        self.config = params.retrain
        self.name = params.package.name
        self.report.update(
            model=self.name,
            gate={
                "roc_auc_tolerance": self.config.roc_auc_tolerance,
                "brier_tolerance": self.config.brier_tolerance,
                "min_eval_rows": self.config.min_eval_rows,
            },
        )
        self.store = self.config.store / self.name
        self.registry = registry.Registry(
            self.root, self.name, self.store, self.config.stage, self.paths.metrics
        )

    def path(self, rel: Path) -> Path:
        return rel if rel.is_absolute() else self.root / rel

    # ------------------------------------------------------------ the steps

    def run(self, new_data: Path | None) -> None:
        self.step = "setup"
        self.setup()
        self.step = "registry"
        vcs.git_root(self.root)
        production = self.registry.production()
        before = production.version if production else None
        self.report["production"] = {"stage": self.config.stage, "before": before, "after": before}
        raw = self.path(self.paths.raw)
        pointer = raw.with_name(raw.name + ".dvc")

        self.step = "pull"
        self.log("pulling the current data version")
        self._pull(str(pointer.relative_to(self.root)))

        if new_data is not None:
            self.step = "data"
            added = ingest.add_rows(self.root, raw, new_data, log=self.log)
            self.report["data_added"] = added.to_dict()
            self.log(added.summary())

        self.step = "validate"
        _, validation = validate_file(raw)
        self.report["data"] = {
            "path": str(self.paths.raw),
            "md5": file_md5(raw),
            "rows": validation.rows,
            "valid_rows": validation.valid_rows,
            "pointer_commit": vcs.last_commit_of(self.root, str(pointer.relative_to(self.root))),
            "added": self.report.pop("data_added", None),
        }
        if not validation.ok:
            shown = "; ".join(i.describe() for i in validation.issues[:5])
            raise RetrainError(f"{validation.summary()}: {shown}")

        self.step = "repro"
        self.log("running the pipeline (dvc repro)")
        vcs.dvc(["repro"], self.root)

        self.step = "evaluate"
        challenger = self._challenger()
        champion = self._champion(production)
        decision = self._judge(challenger, champion)
        if not decision.promote:
            self.report["decision"] = "kept"
            return

        self.step = "version"
        version = self._next_version(challenger, champion)
        self._publish(version, challenger)

    def _pull(self, pointer: str) -> None:
        """Pull the data version, and check the remote holds it: a remote that cannot
        be reached fails the run here, before a minute of training, not at the push."""
        try:
            vcs.dvc(["pull", pointer], self.root)
            status = vcs.dvc(["status", "--cloud", "--json", pointer], self.root)
        except vcs.CommandError as exc:
            remote = vcs.dvc_remote(self.root)  # named only when it failed: two more dvc calls
            raise RetrainError(f"the DVC remote {remote} is unreachable: {exc}") from None
        if status.strip() not in ("", "{}"):
            remote = vcs.dvc_remote(self.root)
            raise RetrainError(
                f"the DVC remote {remote} does not hold the current data version "
                f"({pointer}: {status.strip()})"
            )

    def _publish(self, version: str, challenger: bundle_mod.Bundle) -> None:
        """Version, store, push, commit, register and promote the challenger.

        The journal names what is about to change; the commit is the commit point
        (everything it names is pushed before it): a crash before it is undone by
        `recover_retrain`, one after it is finished.
        """
        summary = self._summary_line()
        store_pointer = f"{self.store.as_posix()}.dvc"
        backed_up = [
            str(self.params_file.relative_to(self.root)),
            store_pointer,
            str(self.store.parent / ".gitignore"),
        ]
        dest = self.path(self.config.production_dir)
        journal = Journal(self.root, RETRAIN_JOURNAL)
        journal.write(
            {
                "registry": registry.registry_state(self.registry, dest),
                "version": version,
                "base": vcs.head_commit(self.root),
                "commit_message": f"model: {self.name} {version} ({summary})",
                "tag_message": f"{self.name} {version}: {summary}",
                "promote_message": f"promote {version}: {summary}",
                "store_pointer": store_pointer,
                "backups": {
                    rel: (self.root / rel).read_text() if (self.root / rel).exists() else None
                    for rel in backed_up
                },
            }
        )
        checkpoint("retrain:journaled")
        try:
            self._package(version, challenger)
            checkpoint("retrain:packaged")
            self.step = "store"
            self._store()
            checkpoint("retrain:stored")
            self.step = "push"
            self.log("pushing data and models to the DVC remote")
            try:
                vcs.dvc(["push"], self.root)
            except vcs.CommandError as exc:
                remote = vcs.dvc_remote(self.root)
                raise RetrainError(f"cannot push to the DVC remote {remote}: {exc}") from None
            checkpoint("retrain:pushed")
            self.step = "commit"
            commit = self._commit(version)
        except BaseException:
            _undo_publish(self.root, journal.read() or {}, self.log)
            journal.clear()
            raise
        checkpoint("retrain:committed")
        self.step = "register"
        registered = self.registry.register(version, commit, f"{self.name} {version}: {summary}")
        checkpoint("retrain:registered")
        self.report["tags"] = [registered.tag]
        self.step = "promote"
        registry.promote(self.registry, version, dest, f"promote {version}: {summary}")
        journal.clear()
        self.report["tags"] += [e.tag for e in self.registry.events()[-1:]]
        self.report["decision"] = "promoted"
        self.report["production"]["after"] = version
        self.log(f"{self.name} {version} is in production ({dest})")

    def _challenger(self) -> bundle_mod.Bundle:
        try:
            return bundle_mod.read_bundle(self.path(self.paths.bundle))
        except bundle_mod.BundleError as exc:
            raise RetrainError(f"the pipeline's bundle is not usable: {exc}") from None

    def _champion(self, production: registry.Version | None) -> bundle_mod.Bundle | None:
        if production is None:
            return None
        self.log(f"restoring production {production.version} to compare with")
        scratch = Path(tempfile.mkdtemp(prefix="treesurv-champion-"))
        try:
            restored = self.registry.restore(production.version, scratch / "bundle")
            return bundle_mod.read_bundle(restored.staging)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _judge(self, challenger: bundle_mod.Bundle, champion: bundle_mod.Bundle | None) -> Decision:
        rows = evaluation_rows(
            pd.read_parquet(self.path(self.paths.test)), champion.manifest if champion else None
        )
        if len(rows) < self.config.min_eval_rows or rows[schema.TARGET].nunique() < 2:
            raise RetrainError(
                f"only {len(rows)} held-out rows (with both outcomes needed) are shared by "
                f"both models; at least {self.config.min_eval_rows} are needed to judge"
            )
        bins = self.params.evaluate.calibration_bins
        p_new, m_new = _score(challenger, rows, bins)
        self.report["evaluation"] = {"rows": len(rows), "source": str(self.paths.test)}
        self.report["challenger"] = {
            "version": None,
            "metrics": m_new,
            "pipeline_metrics": challenger.manifest.get("metrics"),
            "model": _model_summary(challenger.manifest),
            "data_md5": (challenger.manifest.get("data") or {}).get("md5"),
        }
        curves = {"challenger": p_new}
        m_old = None
        if champion is not None:
            p_old, m_old = _score(champion, rows, bins)
            curves = {f"production {champion.version}": p_old, **curves}
            self.report["champion"] = {
                "version": champion.version,
                "metrics": m_old,
                "model": _model_summary(champion.manifest),
                "data_md5": (champion.manifest.get("data") or {}).get("md5"),
            }
        same = champion is not None and same_predictor(challenger.manifest, champion.manifest)
        decision = decide(m_new, m_old, self.config, same)
        self.report["reasons"] = list(decision.reasons)
        report_path = self.path(self.config.report)
        plot_dir = report_path.with_suffix("")
        y = rows[schema.TARGET].to_numpy(dtype=int)
        written = save_plots(plot_dir, y, curves, bins)
        self.report["plots"] = [p.relative_to(report_path.parent).as_posix() for p in written]
        for reason in decision.reasons:
            self.log(reason)
        return decision

    def _next_version(
        self, challenger: bundle_mod.Bundle, champion: bundle_mod.Bundle | None
    ) -> str:
        known = [v.version for v in self.registry.versions()]
        first = self.params.package.version
        kind = registry.change_kind(challenger.manifest, champion.manifest if champion else None)
        version = registry.next_version(known, first, kind)
        self.report["version"] = version
        self.report["version_bump"] = None if not known else kind.value
        return version

    def _package(self, version: str, challenger: bundle_mod.Bundle) -> None:
        """The challenger's bundle, re-packaged under its registry version."""
        if challenger.version != version:
            self.log(f"packaging the challenger as version {version}")
            text = self.params_file.read_text()
            write_atomic(self.params_file, set_package_version(text, version).encode())
            vcs.dvc(["repro"], self.root)
            packaged = self._challenger()
            if packaged.version != version or not same_predictor(
                packaged.manifest, challenger.manifest
            ):
                raise RetrainError("re-packaging the challenger changed its model")
        self.report["challenger"]["version"] = version

    def _store(self) -> None:
        """Version the bundle with DVC at the registry's store path (the pipeline's
        own outputs stay out of the DVC cache)."""
        dest = self.path(self.store)
        registry.install(registry.stage_copy(self.path(self.paths.bundle), dest), dest)
        vcs.dvc(["add", "--quiet", self.store.as_posix()], self.root)

    def _commit(self, version: str) -> str:
        """Commit what reproduces the model: the lock, the parameters, the data pointer
        and every git-tracked file the lock names (code, metrics, plots, card)."""
        raw = self.paths.raw
        lock = yaml.safe_load((self.root / "dvc.lock").read_text()) or {}
        named = {
            str(entry["path"])
            for stage in (lock.get("stages") or {}).values()
            for key in ("deps", "outs")
            for entry in stage.get(key) or []
        }
        commit = vcs.commit(
            self.root,
            [
                "dvc.lock",
                str(self.params_file.relative_to(self.root)),
                f"{raw}.dvc",
                f"{self.store}.dvc",
                str(self.store.parent / ".gitignore"),
            ],
            f"model: {self.name} {version} ({self._summary_line()})",
            update=sorted(named),
        )
        self.report["commit"] = commit
        return commit

    def _summary_line(self) -> str:
        cm = self.report["challenger"]["metrics"]
        text = f"ROC AUC {cm['roc_auc']:.4f}, Brier {cm['brier']:.4f}"
        champ = self.report.get("champion")
        if champ:
            pm = champ["metrics"]
            text += f" vs production {champ['version']} {pm['roc_auc']:.4f} / {pm['brier']:.4f}"
        return text + f" on {self.report['evaluation']['rows']} held-out rows"

    # ------------------------------------------------------------ the report

    def write_report(self) -> Path:
        self.report["finished"] = _now()
        self.report["seconds"] = round(time.perf_counter() - self.started, 1)
        path = self.path(self.config.report)
        write_json(self.report, path)
        md = path.with_suffix(".md")
        tmp = md.with_name(f".{md.name}.tmp")
        tmp.write_text(render_markdown(self.report))
        tmp.replace(md)
        return md


# ------------------------------------------------------------ crash recovery

RETRAIN_JOURNAL = "retrain"


def _undo_publish(root: Path, state: dict[str, Any], log: Log) -> None:
    """Put back the files a publication changed before its commit."""
    backups: dict[str, str | None] = state.get("backups") or {}
    for rel, text in backups.items():
        if text is None:
            (root / rel).unlink(missing_ok=True)
        else:
            write_atomic(root / rel, text.encode())
    present = [rel for rel in backups if vcs.show_file(root, "HEAD", rel) is not None]
    if present:
        vcs.git(["reset", "-q", "--", *present], root)  # nothing of it stays staged
    store_pointer = state.get("store_pointer")
    if store_pointer and backups.get(store_pointer) is not None:
        try:  # the stored bundle back to the restored pointer (from the local cache)
            vcs.dvc(["checkout", "-q", "--force", store_pointer], root)
        except vcs.CommandError as exc:
            log(f"note: {store_pointer}: the working copy was not restored: {exc}")


def _is_publish_commit(root: Path, state: dict[str, Any]) -> bool:
    head = vcs.head_commit(root)
    if head == state["base"]:
        return False
    try:
        parent = vcs.git(["rev-parse", "--verify", "-q", "HEAD^"], root).strip()
    except vcs.CommandError:  # a root commit
        return False
    message = vcs.git(["log", "-1", "--format=%B", "HEAD"], root).strip()
    return parent == state["base"] and message == state["commit_message"].strip()


def recover_retrain(root: Path, log: Log) -> None:
    """Finish or undo the publication of a retrain that a crash interrupted.

    Committed (the commit holds only what was pushed before it): register the
    version if needed, put it in the stage unless a later decision was made,
    install its bundle. Not committed: put the changed files back.
    """
    journal = Journal(root, RETRAIN_JOURNAL)
    state = journal.read()
    if state is None:
        return
    reg, dest = registry.from_state(root, state["registry"])
    version = state["version"]
    registered = any(v.version == version for v in reg.versions())
    if not registered and _is_publish_commit(root, state):
        reg.register(version, vcs.head_commit(root), state["tag_message"])
        registered = True
    if registered:
        decided = max((e.number for e in reg.events()), default=0)
        if decided <= state["registry"]["events_before"]:
            reg.assign(version, state["promote_message"])
        registry.settle_production(reg, dest)
        log(f"finished the interrupted promotion of {reg.name} {version}")
    else:
        _undo_publish(root, state, log)
        log(f"undid the interrupted publication of {reg.name} {version}")
    journal.clear()


def recover(root: Path, log: Log = lambda _m: None) -> None:
    """Finish or undo whatever lifecycle operation a crash interrupted (call it
    holding the lock, before any other lifecycle step)."""
    root = root.resolve()
    ingest.recover(root, log)
    registry.recover_promotion(root, log)
    recover_retrain(root, log)


@contextmanager
def guarded(root: Path, log: Log = lambda _m: None) -> Iterator[None]:
    """The lifecycle lock, and recovery from an earlier crash, around a command."""
    with locked(root):
        recover(root, log)
        yield


@dataclass(frozen=True)
class RetrainResult:
    report: dict[str, Any]
    markdown: Path

    @property
    def ok(self) -> bool:
        return self.report["decision"] in ("promoted", "kept")


def retrain(
    root: Path,
    params_file: Path = Path("params.yaml"),
    new_data: Path | None = None,
    log: Log = lambda _m: None,
) -> RetrainResult:
    """Run the loop; the report says `promoted`, `kept` or `failed` (with the step
    and the reason). A failed step is reported, never raised."""
    run = RetrainRun(root, params_file, log)
    run.step = "recover"
    try:
        with guarded(root, log):
            run.run(new_data)
    except (TreesurvError, OSError) as exc:
        run.report["decision"] = "failed"
        run.report["failed_step"] = run.step
        run.report["error"] = str(exc)
        if isinstance(exc, ingest.IngestError) and exc.report is not None:
            run.report["data_report"] = exc.report.to_dict()
    return RetrainResult(run.report, run.write_report())
