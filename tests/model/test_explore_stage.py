"""The `explore` stage on the real data: every section, each figure with its sentence,
valid JSON for `dvc plots`, and the report inside the bundle."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import EXPLORE_SECTIONS
from treesurv.core import schema
from treesurv.inference.bundle import EXPLORE_HTML, EXPLORE_JSON, read_bundle

pytestmark = pytest.mark.slow


def test_report_has_every_section_with_its_figure_and_sentence(pipeline_project: Path) -> None:
    folder = pipeline_project / "reports" / "explore"
    report = json.loads((folder / "explore.json").read_text())
    assert [s["id"] for s in report["sections"]] == EXPLORE_SECTIONS
    page = (folder / "explore.html").read_text()
    for s in report["sections"]:
        assert (folder / s["figure"]).read_bytes().startswith(b"\x89PNG"), s["id"]
        assert f'<img src="{s["figure"]}"' in page
        assert f"<figcaption>{html.escape(s['sentence'])}</figcaption>" in page
    assert report["source"]["rows"] == 2364
    # The numbers behind the sentences are the data's.
    design = report["sections"][0]
    assert design["sentence"].startswith("The study has 2,364 seedlings of 4 species in 18")
    missing = report["sections"][1]["data"]
    assert missing["emf_rule_breaks"] == 0 and missing["empty_cells"]["Event"] == 1
    importance = report["sections"][-1]["data"]
    assert importance["rows"] == report["source"]["test_rows"]
    assert {f["feature"] for f in importance["features"]} == set(schema.FEATURE_NAMES)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [EXPLORE_HTML, EXPLORE_JSON, *(s["figure"] for s in report["sections"])]
    )


def test_dvc_plots_files_are_the_series_dvc_yaml_draws(pipeline_project: Path) -> None:
    folder = pipeline_project / "plots" / "explore"
    dvc = yaml.safe_load((pipeline_project / "dvc.yaml").read_text())
    top = {next(iter(p)): next(iter(p.values())) for p in dvc["plots"]}
    # The curves dvc.yaml names are the schema's categories, in its order.
    expected = {
        "km_species.json": list(schema.SPECIES),
        "km_soil.json": list(schema.SOIL_SOURCES),
        "km_sterile.json": list(schema.STERILE),
        "death_by_light.json": ["all", *schema.SPECIES],
    }
    for name, columns in expected.items():
        assert top[f"${{paths.explore_plots}}/{name}"]["y"] == columns, name
        rows = json.loads((folder / name).read_text())
        assert rows and set(rows[0]) == {"day" if "km" in name else "light", *columns}
    importance = json.loads((folder / "importance.json").read_text())
    assert {r["feature"] for r in importance} == set(schema.FEATURE_NAMES)


def test_the_bundle_carries_the_report(pipeline_project: Path, bundle_dir: Path) -> None:
    bundle = read_bundle(bundle_dir)
    entry = bundle.manifest["explore"]
    folder = pipeline_project / "reports" / "explore"
    for name in (entry["html"], entry["json"], *entry["figures"]):
        assert bundle.explore_file(name) == (folder / name).read_bytes(), name
    assert len(entry["figures"]) == len(EXPLORE_SECTIONS)
