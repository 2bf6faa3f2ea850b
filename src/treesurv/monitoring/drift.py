"""Drift: the logged inputs and predictions against the training reference profile.

Per feature, two figures answer two questions. The population stability index
(PSI, over the reference's quantile bins or categories, missing values as their
own bin) says how much the distribution moved; a test says whether the move is
more than sampling noise: a two-sample Kolmogorov-Smirnov test for numeric
features (against the profile's quantile sketch, which stands in for the
reference rows) and a chi-square test of homogeneity for categorical ones. A
feature is flagged only when both agree: PSI at or above its threshold AND the
test's p-value below its level. PSI alone is noisy on small samples; a test
alone flags negligible moves on large ones.

The verdict per column is graded (`verdict`): `drift` by the rule above (the
report's `drift_detected`, exit 3); otherwise `warn` when a smaller move is
highly significant: PSI at or above `warn_psi` and the p-value below `warn_p_value`
(reported, never an exit code of its own); otherwise `ok`. The defaults were
measured on resamples of the study (tests/monitoring/test_drift_calibration.py).

The predicted probabilities are compared the same way with the out-of-fold
predictions stored in the bundle's profile (`prediction`).

Pure functions over a DataFrame and the profile; SciPy is imported when used
(the service image has no SciPy: drift runs as a job, see the docs' monitoring page).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from treesurv.core import schema
from treesurv.core.config import MonitorParams
from treesurv.core.errors import InputError

PREDICTION = "death_probability"
MISSING = "(missing)"
EPSILON = 1e-4  # share floor in the PSI, so an empty bin gives a large finite value
VERDICTS = ("ok", "warn", "drift")  # in order of severity
Verdict = Literal["ok", "warn", "drift"]


class DriftError(InputError):
    """The reference profile or the thresholds are unusable; the message says why."""


@dataclass(frozen=True)
class Thresholds:
    """The `monitor` section of params.yaml, under the names the report uses."""

    psi: float
    p_value: float
    prediction_psi: float
    min_rows: int
    warn_psi: float
    warn_p_value: float

    @classmethod
    def from_params(cls, monitor: MonitorParams | None = None, **changes: Any) -> Thresholds:
        """The thresholds of `monitor`; `changes` override its keys (params names)."""
        m = (monitor or MonitorParams()).model_copy(update=changes)
        return cls(
            m.psi_threshold,
            m.p_value,
            m.prediction_psi_threshold,
            m.min_rows,
            m.warn_psi_threshold,
            m.warn_p_value,
        )

    def verdict(self, psi_value: float, p_value: float, *, prediction: bool = False) -> Verdict:
        """The graded verdict of one column (a feature, or the predictions)."""
        return verdict(
            psi_value,
            p_value,
            psi_threshold=self.prediction_psi if prediction else self.psi,
            p_threshold=self.p_value,
            warn_psi=self.warn_psi,
            warn_p_value=self.warn_p_value,
        )


def verdict(
    psi_value: float,
    p_value: float,
    *,
    psi_threshold: float,
    p_threshold: float,
    warn_psi: float = float("inf"),
    warn_p_value: float = 0.0,
) -> Verdict:
    """`drift` when PSI >= psi_threshold and p < p_threshold; else `warn` when
    PSI >= warn_psi and p < warn_p_value; else `ok`. Without the warn thresholds
    this is the plain two-way rule."""
    if psi_value >= psi_threshold and p_value < p_threshold:
        return "drift"
    if psi_value >= warn_psi and p_value < warn_p_value:
        return "warn"
    return "ok"


@dataclass
class Bin:
    label: str
    reference: float
    current: float


@dataclass
class FeatureDrift:
    name: str
    kind: str  # numeric | categorical
    test: str  # ks | chi2 | ks+chi2 (numeric with missing values)
    rows: int
    psi: float
    statistic: float
    p_value: float
    drifted: bool  # verdict == "drift"
    bins: list[Bin] = field(default_factory=list)
    reference_mean: float | None = None
    current_mean: float | None = None
    verdict: Verdict = "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DriftReport:
    status: str  # ok | drift | insufficient_data
    rows: int
    thresholds: Thresholds
    features: dict[str, FeatureDrift]
    prediction: FeatureDrift | None
    notes: list[str] = field(default_factory=list)
    generated: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    source: str = "log"  # log: the prediction log; file: a file of measurements

    @property
    def drift_detected(self) -> bool:
        return self.status == "drift"

    @property
    def drifted_features(self) -> list[str]:
        return [name for name, f in self.features.items() if f.drifted]

    @property
    def warned_features(self) -> list[str]:
        return [name for name, f in self.features.items() if f.verdict == "warn"]

    @property
    def verdict(self) -> Verdict | None:
        """The worst column verdict; None when there was too little data for one."""
        if self.status == "insufficient_data":
            return None
        columns = [*self.features.values(), *([self.prediction] if self.prediction else [])]
        return max((f.verdict for f in columns), key=VERDICTS.index, default="ok")

    @property
    def unit(self) -> str:
        return "logged prediction(s)" if self.source == "log" else "row(s)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated": self.generated,
            "status": self.status,
            "source": self.source,
            "verdict": self.verdict,
            "drift_detected": self.drift_detected,
            "drifted_features": self.drifted_features,
            "warned_features": self.warned_features,
            "prediction_drifted": bool(self.prediction and self.prediction.drifted),
            "prediction_verdict": self.prediction.verdict if self.prediction else None,
            "rows": self.rows,
            "thresholds": asdict(self.thresholds),
            "features": {name: f.to_dict() for name, f in self.features.items()},
            "prediction": self.prediction.to_dict() if self.prediction else None,
            "notes": self.notes,
        }


# ------------------------------------------------------------------ statistics


def psi(reference: np.ndarray, current: np.ndarray, eps: float = EPSILON) -> float:
    """Population stability index of two share vectors over the same bins."""
    ref = np.maximum(np.asarray(reference, dtype=float), eps)
    cur = np.maximum(np.asarray(current, dtype=float), eps)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks_against_sketch(
    values: np.ndarray, sketch: np.ndarray, reference_rows: int
) -> tuple[float, float]:
    """Two-sample KS statistic between `values` and a reference summarised by its
    quantile sketch (equally weighted points), with the asymptotic p-value for
    samples of len(values) and `reference_rows` (as scipy's ks_2samp does)."""
    from scipy import stats

    cur = np.sort(values)
    ref = np.sort(sketch)
    if len(cur) == 0 or len(ref) == 0:
        return 0.0, 1.0
    grid = np.concatenate([cur, ref])
    d = float(
        np.max(
            np.abs(
                np.searchsorted(cur, grid, side="right") / len(cur)
                - np.searchsorted(ref, grid, side="right") / len(ref)
            )
        )
    )
    n, m = len(cur), max(int(reference_rows), 1)
    en = round(n * m / (n + m))
    return d, float(stats.kstwo.sf(d, max(en, 1)))


def chi2_homogeneity(
    reference_counts: np.ndarray, current_counts: np.ndarray
) -> tuple[float, float]:
    """Chi-square test that two count vectors come from one distribution."""
    from scipy import stats

    table = np.vstack([reference_counts, current_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


# -------------------------------------------------------------- per feature


def numeric_drift(
    name: str,
    ref: dict[str, Any],
    values: pd.Series,
    thresholds: Thresholds,
    *,
    prediction: bool = False,
) -> FeatureDrift:
    """Drift of a numeric column against its reference bins and sketch (`prediction`:
    the column is the model's predictions, graded by their own PSI threshold)."""
    edges = np.asarray(ref["edges"], dtype=float)
    ref_missing = float(ref.get("missing", 0.0))
    raw = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    present = raw[~np.isnan(raw)]
    cur_missing = 1.0 - len(present) / len(raw) if len(raw) else 0.0
    hist = np.histogram(np.clip(present, edges[0], edges[-1]), bins=edges)[0]
    cur_shares = hist / max(len(present), 1) * (1.0 - cur_missing)
    ref_shares = np.asarray(ref["shares"], dtype=float) * (1.0 - ref_missing)
    labels = [f"{edges[i]:.4g}–{edges[i + 1]:.4g}" for i in range(len(edges) - 1)]
    if ref_missing > 0 or cur_missing > 0:
        ref_shares = np.append(ref_shares, ref_missing)
        cur_shares = np.append(cur_shares, cur_missing)
        labels.append(MISSING)
    sketch = np.asarray(ref.get("sketch") or [], dtype=float)
    if not len(sketch):
        raise DriftError(f"reference profile: {name} has no quantile sketch (re-run prepare)")
    count = int(ref.get("count") or 0) or len(sketch)
    stat, p = ks_against_sketch(present, sketch, count)
    test = "ks"
    if ref_missing > 0 or cur_missing > 0:
        # KS sees only the values present; missingness gets its own chi-square test,
        # the two p-values combined by Bonferroni.
        rows_ref = count / max(1.0 - ref_missing, 1e-12)
        _, p_missing = chi2_homogeneity(
            np.array([count, rows_ref - count]),
            np.array([len(present), len(raw) - len(present)]),
        )
        p, test = min(1.0, 2 * min(p, p_missing)), "ks+chi2"
    value = psi(ref_shares, cur_shares)
    graded = thresholds.verdict(value, p, prediction=prediction)
    return FeatureDrift(
        name=name,
        kind="numeric",
        test=test,
        rows=len(raw),
        psi=value,
        statistic=stat,
        p_value=p,
        drifted=graded == "drift",
        verdict=graded,
        bins=[
            Bin(lbl, float(r), float(c))
            for lbl, r, c in zip(labels, ref_shares, cur_shares, strict=True)
        ],
        reference_mean=ref.get("mean"),
        current_mean=float(present.mean()) if len(present) else None,
    )


def categorical_drift(
    name: str,
    ref: dict[str, Any],
    values: pd.Series,
    reference_rows: int,
    thresholds: Thresholds,
) -> FeatureDrift:
    """Drift of a categorical column against its reference shares (chi-square)."""
    categories = list(ref["shares"])
    ref_shares = np.array(
        [float(ref["shares"][c]) for c in categories] + [float(ref.get("missing", 0.0))]
    )
    n = len(values)
    counts = values.astype("object").value_counts(dropna=False)
    known = np.array([float(counts.get(c, 0)) for c in categories])
    # Missing and unknown values share the last bin: both are "not a known category".
    other = float(n - known.sum())
    cur_counts = np.append(known, other)
    cur_shares = cur_counts / n if n else cur_counts
    stat, p = chi2_homogeneity(ref_shares * reference_rows, cur_counts)
    value = psi(ref_shares, cur_shares)
    labels = [*categories, MISSING]
    keep = [i for i in range(len(labels)) if ref_shares[i] > 0 or cur_shares[i] > 0]
    graded = thresholds.verdict(value, p)
    return FeatureDrift(
        name=name,
        kind="categorical",
        test="chi2",
        rows=n,
        psi=value,
        statistic=stat,
        p_value=p,
        drifted=graded == "drift",
        verdict=graded,
        bins=[Bin(labels[i], float(ref_shares[i]), float(cur_shares[i])) for i in keep],
    )


# ------------------------------------------------------------------ the report


def compare(
    profile: dict[str, Any],
    frame: pd.DataFrame,
    thresholds: Thresholds,
    model_version: str | None = None,
    *,
    source: str = "log",
) -> DriftReport:
    """Drift of every schema feature and of the predictions.

    `frame`: logged predictions (the schema features and `death_probability`,
    optionally `model_version`), or the rows of a file (`source="file"`, scored
    by the reference's model or without `death_probability`). Predictions are
    compared only for rows served by `model_version` (the reference's own model)
    when it is given.
    """
    features_ref = profile.get("features")
    if not isinstance(features_ref, dict):
        raise DriftError("reference profile: no `features` section")
    missing = [f for f in schema.FEATURE_NAMES if f not in features_ref]
    if missing:
        raise DriftError(f"reference profile: no entry for {', '.join(missing)}")
    rows = len(frame)
    notes: list[str] = []
    unit = "logged prediction(s)" if source == "log" else "row(s)"
    if rows < thresholds.min_rows:
        notes.append(
            f"only {rows} {unit}; at least {thresholds.min_rows} are needed "
            "for a verdict (monitor.min_rows)"
        )
        return DriftReport("insufficient_data", rows, thresholds, {}, None, notes, source=source)
    reference_rows = int(profile.get("rows") or 0)
    if reference_rows <= 0:
        raise DriftError("reference profile: `rows` is missing or zero")
    out: dict[str, FeatureDrift] = {}
    for f in schema.FEATURES:
        ref = features_ref[f.name]
        col = frame[f.name] if f.name in frame.columns else pd.Series([None] * rows)
        if f.kind == "numeric":
            out[f.name] = numeric_drift(f.name, ref, col, thresholds)
        else:
            out[f.name] = categorical_drift(f.name, ref, col, reference_rows, thresholds)
    prediction = None
    pref = profile.get("prediction")
    if pref is None:
        notes.append("the reference has no prediction profile: prediction drift not checked")
    elif PREDICTION in frame.columns:
        served = frame
        if model_version is not None and "model_version" in frame.columns:
            served = frame[frame["model_version"] == model_version]
            other = rows - len(served)
            if other:
                notes.append(
                    f"{other} prediction(s) by other model versions left out of the prediction "
                    f"comparison (reference model {model_version})"
                )
        if len(served) >= thresholds.min_rows:
            prediction = numeric_drift(
                PREDICTION, pref, served[PREDICTION], thresholds, prediction=True
            )
        else:
            notes.append(
                f"only {len(served)} prediction(s) by model {model_version}: prediction drift "
                "not checked"
            )
    drifted = any(f.drifted for f in out.values()) or bool(prediction and prediction.drifted)
    status = "drift" if drifted else "ok"
    return DriftReport(status, rows, thresholds, out, prediction, notes, source=source)
