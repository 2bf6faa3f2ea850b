"""The notebooks in notebooks/ run, cell by cell, on the trained project.

Each notebook is a jupytext percent script. It is converted in memory and executed
by nbclient on an ipykernel kernel with the session's trained project as its
working directory, the way a person runs it from the repository's root after
`make pipeline`. A cell that raises (an assertion in the notebook included) fails
the test with the cell's error. The executed notebooks are saved under
test-output/notebooks/ with their outputs and plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
OUTPUT = ROOT / "test-output" / "notebooks"

pytestmark = pytest.mark.slow


def execute(source: Path, cwd: Path) -> Any:
    # Imported here: collecting the tests (in every run, test-fast too) skips them.
    import jupytext
    from nbclient import NotebookClient

    notebook = jupytext.read(source)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return notebook


def test_the_notebooks_are_found() -> None:
    assert {p.stem for p in NOTEBOOKS} == {"model_comparison", "study_analysis"}


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_trained_project(source: Path, pipeline_project: Path) -> None:
    import nbformat

    notebook = execute(source, pipeline_project)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, OUTPUT / f"{source.stem}.ipynb")
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code, f"{source.name} has no code cell"
    assert all(c.get("execution_count") for c in code), "a code cell did not run"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{source.name} drew no plot"


def test_a_failing_cell_fails_the_run(tmp_path: Path) -> None:
    # The harness itself: an error in any cell must surface, not pass silently.
    broken = tmp_path / "broken.py"
    broken.write_text("# %%\nx = 1\n\n# %%\nassert x == 2, 'the second cell fails'\n")
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match="the second cell fails"):
        execute(broken, tmp_path)


def test_notebooks_name_no_path_outside_the_repository() -> None:
    for source in NOTEBOOKS:
        text = source.read_text()
        for outside in ("/work/", "/home/", "/tmp/", "../shared", "C:\\"):
            assert outside not in text, f"{source.name} names {outside}"
