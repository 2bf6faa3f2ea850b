"""`treesurv monitor drift --current FILE`: a CSV, Parquet or JSON Lines file of
measurements against a real (small) bundle, bad rows as `treesurv predict` handles
them, the graded verdict in the JSON, the HTML and the table, and the exit codes
(fast: synthetic rows, the command run in process)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.helpers import synthetic_raw
from treesurv.cli.main import app
from treesurv.core import schema
from treesurv.core.files import NA_VALUES, DataFileError
from treesurv.core.profile import numeric_profile, reference_profile
from treesurv.core.validation import validate
from treesurv.inference.batch import BatchError
from treesurv.monitoring.drift import Thresholds
from treesurv.monitoring.drift_check import read_current, run_file_drift

runner = CliRunner()
ROWS = 500


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    """2,300 rows in the study's file format, all drawn alike: the first 1,000 train
    the model, the next 800 are the reference, the last 500 the current file."""
    return synthetic_raw(2300, seed=3)


@pytest.fixture(scope="module")
def typed(raw: pd.DataFrame) -> pd.DataFrame:
    text = io.StringIO(raw.to_csv(index=False))
    frame, report = validate(
        pd.read_csv(text, dtype=str, keep_default_na=False, na_values=NA_VALUES), "synthetic"
    )
    assert report.ok
    return frame.reset_index(drop=True)


@pytest.fixture(scope="module")
def bundle(typed: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified bundle whose profile holds the reference rows' inputs and the
    model's predictions on them (rows it was not fitted on), as `package` makes it."""
    from sklearn.ensemble import RandomForestClassifier

    from treesurv.core.encoding import encode, fit_encoder
    from treesurv.inference.bundle import write_bundle
    from treesurv.inference.predictor import dumps
    from treesurv.training.compiler import compile_model

    train, reference = typed.iloc[:1000], typed.iloc[1000:1800]
    params = fit_encoder(train)
    model = RandomForestClassifier(20, max_depth=6, random_state=0)
    model.fit(encode(params, train), train[schema.TARGET].to_numpy(dtype=int))
    profile = reference_profile(reference)
    predicted = model.predict_proba(encode(params, reference))[:, 1]
    profile["prediction"] = numeric_profile(predicted, 10)
    files = dumps(*compile_model(params, model))
    files["model_card.md"] = b"# Test model\n"
    files["reference_profile.json"] = json.dumps(profile).encode()
    dest = tmp_path_factory.mktemp("drift-file") / "bundle"
    write_bundle(
        dest,
        files,
        name="tree-survival",
        version="1.0.0",
        extra={
            "decision_threshold": 0.5,
            "metrics": {},
            "schema": schema.schema_document(),
            "data": {"md5": None},
            "params": {},
        },
    )
    return dest


@pytest.fixture
def current_raw(raw: pd.DataFrame) -> pd.DataFrame:
    """The current rows as the study's CSV has them: every column, text cells."""
    return raw.iloc[1800:].reset_index(drop=True).copy()


@pytest.fixture
def current(typed: pd.DataFrame) -> pd.DataFrame:
    return typed.iloc[1800:].reset_index(drop=True).copy()


def write_json_lines(path: Path, frame: pd.DataFrame) -> Path:
    rows = frame[list(schema.FEATURE_NAMES)].astype(object)
    with path.open("w") as fh:
        for record in rows.where(rows.notna(), None).to_dict("records"):
            fh.write(json.dumps(record) + "\n")
    return path


def drift(
    tmp_path: Path, bundle: Path, current: Path, *extra: str
) -> tuple[int, dict[str, Any], str]:
    """The command in process: exit code, the JSON report (or {}), all output."""
    out = tmp_path / "drift.json"
    out.unlink(missing_ok=True)
    args = ["monitor", "drift", "--current", str(current), "--reference", str(bundle)]
    args += ["--out", str(out), "--html", str(tmp_path / "drift.html")]
    args += ["--params", str(tmp_path / "no-params.yaml"), *extra]
    result = runner.invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    report = json.loads(out.read_text()) if out.exists() else {}
    return result.exit_code, report, result.output


# ------------------------------------------------------------ the three formats


def test_csv_parquet_and_json_lines_give_the_same_report(
    tmp_path: Path, bundle: Path, current_raw: pd.DataFrame, current: pd.DataFrame
) -> None:
    csv = tmp_path / "current.csv"
    current_raw.to_csv(csv, index=False)  # with the study's other columns, "NA" for EMF
    parquet = tmp_path / "current.parquet"
    current.assign(Plot=current["Plot"].astype(int)).to_parquet(parquet)  # typed columns
    jsonl = write_json_lines(tmp_path / "current.jsonl", current)
    reports = {}
    for path in (csv, parquet, jsonl):
        report, document, read = run_file_drift(path, bundle, Thresholds.from_params())
        assert read.result.issue_count == 0 and len(read.frame) == ROWS
        assert report.status == "ok" and report.rows == ROWS and report.source == "file"
        assert {f.verdict for f in report.features.values()} == {"ok"}
        assert report.prediction is not None and report.prediction.rows == ROWS
        assert report.prediction.verdict == "ok"
        assert document["context"]["format"] == path.suffix.lstrip(".")
        assert document["rejected_rows"] == 0 and document["problems"] == []
        reports[path.suffix] = report
    for name in schema.FEATURE_NAMES:
        psis = [r.features[name].psi for r in reports.values()]
        assert psis == pytest.approx([psis[0]] * 3, abs=1e-12), name
    probabilities = [r.prediction.psi for r in reports.values()]  # type: ignore[union-attr]
    assert probabilities == pytest.approx([probabilities[0]] * 3, abs=1e-9)


@pytest.mark.slow  # the command, run several times: seconds
def test_exit_codes_and_the_graded_verdict(
    tmp_path: Path, bundle: Path, current: pd.DataFrame
) -> None:
    path = tmp_path / "current.parquet"
    current.to_parquet(path)
    code, report, output = drift(tmp_path, bundle, path)
    assert code == 0, output
    assert report["status"] == "ok" and report["verdict"] == "ok"
    assert report["warned_features"] == [] and report["drifted_features"] == []

    # NSC 0.4 sd higher: highly significant, under the PSI threshold: warn, exit 0.
    sd = current["NSC"].std()
    current.assign(NSC=current["NSC"] + 0.4 * sd).to_parquet(path)
    code, report, output = drift(tmp_path, bundle, path)
    assert code == 0, output
    assert report["status"] == "ok" and not report["drift_detected"]
    assert report["verdict"] == "warn" and report["warned_features"] == ["NSC"]
    nsc = report["features"]["NSC"]
    assert nsc["verdict"] == "warn" and not nsc["drifted"]
    assert 0.1 <= nsc["psi"] < 0.2 and nsc["p_value"] < 0.001
    assert "ok (warn: NSC)" in output
    table_row = next(line for line in output.splitlines() if "│ NSC" in line)
    assert "warn" in table_row
    page = (tmp_path / "drift.html").read_text()
    assert '<tr class="warn"><td>NSC</td>' in page and "warn: NSC" in page

    # One standard deviation: drift, exit 3.
    current.assign(NSC=current["NSC"] - 1.0 * sd).to_parquet(path)
    code, report, output = drift(tmp_path, bundle, path)
    assert code == 3, output
    assert report["drifted_features"] == ["NSC"] and report["verdict"] == "drift"
    assert report["features"]["NSC"]["verdict"] == "drift"
    assert '<tr class="drift"><td>NSC</td>' in (tmp_path / "drift.html").read_text()


def test_warn_thresholds_come_from_params(
    tmp_path: Path, bundle: Path, current: pd.DataFrame
) -> None:
    path = tmp_path / "current.csv"
    current.assign(NSC=current["NSC"] + 0.4 * current["NSC"].std()).to_csv(path, index=False)
    params = tmp_path / "params.yaml"
    params.write_text("monitor:\n  warn_psi_threshold: 0.19\n  warn_p_value: 0.0001\n")
    code, report, output = drift(tmp_path, bundle, path, "--params", str(params))
    assert code == 0, output
    assert report["verdict"] == "ok" and report["thresholds"]["warn_psi"] == 0.19
    assert report["thresholds"]["warn_p_value"] == 0.0001


def test_the_predictions_move_with_the_inputs(
    tmp_path: Path, bundle: Path, current: pd.DataFrame
) -> None:
    # The model learned that the dead have less NSC, lignin and phenolics: give the
    # current seedlings a lot less and the predicted risk moves too.
    path = tmp_path / "current.parquet"
    current.assign(
        NSC=(current["NSC"] - 6.0).clip(lower=0.5),
        Lignin=(current["Lignin"] - 8.0).clip(lower=0.5),
        Phenolics=-1.0,
    ).to_parquet(path)
    code, report, output = drift(tmp_path, bundle, path)
    assert code == 3, output
    assert report["prediction_drifted"] and report["prediction_verdict"] == "drift"
    assert report["context"]["predictions"] == "scored with the reference's model 1.0.0"


def test_a_profile_reference_has_no_prediction_comparison(
    tmp_path: Path, bundle: Path, current: pd.DataFrame
) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text((bundle / "reference_profile.json").read_text())
    path = write_json_lines(tmp_path / "current.ndjson", current)
    code, report, output = drift(tmp_path, profile, path)
    assert code == 0, output
    assert report["prediction"] is None and report["status"] == "ok"
    assert any("prediction drift not checked" in n for n in report["notes"])


# ------------------------------------------------------------------ bad rows


@pytest.fixture
def broken_csv(tmp_path: Path, current_raw: pd.DataFrame) -> Path:
    current_raw.loc[10, "Species"] = "Pinus strobus"
    current_raw.loc[250, "Light_ISF"] = "bright"
    path = tmp_path / "broken.csv"
    current_raw.to_csv(path, index=False)
    return path


def test_on_error_fail_names_every_bad_row_and_writes_nothing(
    tmp_path: Path, bundle: Path, broken_csv: Path
) -> None:
    code, report, output = drift(tmp_path, bundle, broken_csv)
    assert code == 1 and report == {}
    assert not (tmp_path / "drift.html").exists()
    for text in ("12", "Species", "Pinus strobus", "must be one of"):
        assert text in output
    for text in ("252", "Light_ISF", "bright", "must be a number"):
        assert text in output
    assert "2 problem(s); no drift check was made" in output
    with pytest.raises(BatchError) as caught:
        read_current(broken_csv)
    assert caught.value.result is not None
    assert [(i.line, i.column, i.value) for i in caught.value.result.issues] == [
        (12, "Species", "Pinus strobus"),
        (252, "Light_ISF", "bright"),
    ]


def test_on_error_skip_checks_the_good_rows_and_lists_the_bad(
    tmp_path: Path, bundle: Path, broken_csv: Path
) -> None:
    code, report, output = drift(tmp_path, bundle, broken_csv, "--on-error", "skip")
    assert code == 0, output
    assert report["rows"] == ROWS - 2 and report["rejected_rows"] == 2
    assert report["context"]["rows read"] == ROWS
    assert [(p["line"], p["column"], p["value"]) for p in report["problems"]] == [
        (12, "Species", "Pinus strobus"),
        (252, "Light_ISF", "bright"),
    ]
    assert report["problems"][1]["rule"] == "must be a number"
    assert any("2 of 500 row(s) left out" in n for n in report["notes"])
    assert "Pinus strobus" in output and "bright" in output  # printed as predict does
    page = (tmp_path / "drift.html").read_text()
    assert "Rows left out" in page and "Pinus strobus" in page


def test_json_lines_report_file_lines(tmp_path: Path, bundle: Path, current: pd.DataFrame) -> None:
    path = write_json_lines(tmp_path / "current.jsonl", current)
    lines = path.read_text().splitlines()
    record = json.loads(lines[3])
    record["AMF"] = "lots"  # a string where a number belongs
    lines[3] = json.dumps(record)
    lines.insert(1, "")  # blank lines are not rows
    lines.insert(6, "[1, 2, 3]")  # nor is anything but an object
    lines.append('{"Species": "Quercus alba", ')  # a line cut short
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BatchError) as caught:
        read_current(path)
    assert caught.value.result is not None
    found = [(i.line, i.column, i.value) for i in caught.value.result.issues]
    assert found == [
        (5, "AMF", "lots"),
        (7, "(line)", "[1, 2, 3]"),
        (503, "(line)", lines[-1].strip()),
    ]
    read = read_current(path, "skip")
    assert len(read.frame) == ROWS - 1 and read.result.rejected == 3
    assert read.result.rows == ROWS + 2
    code, report, output = drift(tmp_path, bundle, path, "--on-error", "skip")
    assert code == 0, output
    assert report["rows"] == ROWS - 1 and report["rejected_rows"] == 3


def test_unusable_files_and_options(tmp_path: Path, bundle: Path, current: pd.DataFrame) -> None:
    partial = tmp_path / "partial.csv"
    current.drop(columns=["NSC", "Lignin"]).to_csv(partial, index=False)
    code, _, output = drift(tmp_path, bundle, partial)
    assert code == 1 and "missing required column(s): Lignin, NSC" in output
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    code, _, output = drift(tmp_path, bundle, junk)
    assert code == 1 and "not a readable Parquet file" in output
    array = tmp_path / "rows.json"
    array.write_text(json.dumps([{"Species": "Quercus alba"}]))
    with pytest.raises(DataFileError, match="a JSON array; JSON Lines has one object per line"):
        read_current(array)
    code, _, output = drift(tmp_path, bundle, tmp_path / "nowhere.csv")
    assert code == 1 and "no such file" in output

    path = tmp_path / "current.csv"
    current.to_csv(path, index=False)
    code, _, output = drift(tmp_path, bundle, path, "--log", str(tmp_path))
    assert code == 2 and "--log and --current are alternatives" in output
    code, _, output = drift(tmp_path, bundle, path, "--since", "7d")
    assert code == 2 and "not with --current" in output


def test_too_few_rows_give_no_verdict(tmp_path: Path, bundle: Path, current: pd.DataFrame) -> None:
    path = tmp_path / "few.csv"
    current.head(150).assign(NSC=lambda f: f["NSC"] + 10).to_csv(path, index=False)
    code, report, output = drift(tmp_path, bundle, path)
    assert code == 0, output
    assert report["status"] == "insufficient_data" and report["verdict"] is None
    assert "only 150 row(s); at least 200" in report["notes"][0]
