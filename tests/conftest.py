"""Shared fixtures (the helpers they use are in tests/helpers.py).

Fast tests (`make test-fast`, everything not marked `slow`) are hermetic: they build
tiny frames in memory (`study`, `small_frame`) and touch neither ../shared, DVC nor
git. A fast test that asks for a fixture of the real project fails at collection,
and one that starts git or dvc fails when it does.

Slow tests get a real copy of the project: `project` is a temporary copy of this
checkout (its own git repository) with the study data pulled from the real DVC
remote, and `pipeline_project` is that copy after one `dvc repro` with the
production parameters: built once per session and shared, read-only, by every
test that needs a trained project. A test that changes the project works on its
own copy (`trained_copy`), made in seconds from the finished one.

With pytest-xdist (`make test` runs two workers), "once per session" still holds:
the first worker to need the project builds it in the session's shared temporary
directory under a file lock, and the other worker waits for it and reuses it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from filelock import FileLock

from tests.helpers import (
    SHARED_REMOTE,
    clone_project,
    copy_project,
    frame_of,
    good_row,
    read_study_text,
    run,
    synthetic_study,
)
from treesurv.core import schema
from treesurv.core.split import model_frame

# The fixtures that need the session's pipeline run.
TRAINED = frozenset({"pipeline_project", "trained_copy", "bundle_dir"})
# Fixtures that need ../shared, DVC or git: only slow tests may use them.
REAL = frozenset(
    {"project", "real_csv", "real_frame", "real_study", "real_model_study"}
    | {"pipeline_project", "trained_copy", "bundle_dir"}
)
NOT_HERMETIC = frozenset({"git", "dvc", "gto"})
log = logging.getLogger(__name__)


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the xdist controller runs no test
    # One OpenMP thread in the test process: on a busy 2-core machine OpenMP's
    # spinning workers make a small HistGradientBoosting fit 50 times slower.
    import sklearn.ensemble  # noqa: F401 - loads the OpenMP runtime, so that it can be limited
    from threadpoolctl import threadpool_limits

    config._treesurv_threads = threadpool_limits(limits=1, user_api="openmp")  # type: ignore[attr-defined]
    # And one core for joblib in an xdist worker (each worker is one of the two cores):
    # cross-validation in a test runs its folds in turn instead of starting process
    # pools that fight the other worker. The commands a test runs keep every core
    # (`tests.helpers.run` drops this).
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["LOKY_MAX_CPU_COUNT"] = "1"


def _trained(item: pytest.Item) -> bool:
    return bool(TRAINED.intersection(getattr(item, "fixturenames", ())))


@pytest.hookimpl(trylast=True)  # after pytest-randomly's shuffle, which it keeps
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The files that need the trained project go last, so that the other tests run
    # while the pipeline builds in the background (pytest_collection_finish).
    late = {item.path for item in items if _trained(item)}
    items.sort(key=lambda item: item.path in late)
    for item in items:
        if item.get_closest_marker("e2e") and not item.get_closest_marker("slow"):
            raise pytest.UsageError(f"{item.nodeid} is marked e2e but not slow")
        needs = REAL.intersection(getattr(item, "fixturenames", ()))
        if needs and item.get_closest_marker("slow") is None:
            raise pytest.UsageError(
                f"{item.nodeid} uses {sorted(needs)} (../shared, DVC or git) "
                "but is not marked slow: fast tests must be hermetic"
            )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start building the trained project in a thread as soon as the tests are known,
    if any of them needs it: the fixtures wait for it (under `_once`'s lock)."""
    if session.config.option.collectonly or not any(_trained(i) for i in session.items):
        return
    factory: pytest.TempPathFactory = session.config._tmp_path_factory  # type: ignore[attr-defined]

    def build() -> None:
        try:
            _build_trained(factory)
        except BaseException:  # the fixture that needs it builds again and reports
            log.exception("building the trained project in the background failed")

    threading.Thread(target=build, name="trained-project", daemon=True).start()


@pytest.fixture(autouse=True)
def _hermetic(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a fast test, starting git, dvc or gto is an error."""
    if request.node.get_closest_marker("slow") is not None:
        return
    real_init = subprocess.Popen.__init__

    def guarded(self: Any, args: Any, *a: Any, **kw: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            # The trained project's background build, not the test.
            real_init(self, args, *a, **kw)
            return
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        first = os.fsdecode(argv[0]).split()[0] if argv else ""
        if Path(first).name in NOT_HERMETIC:
            raise AssertionError(
                f"a fast test ran {first!r}: mark it slow or build what it needs in memory"
            )
        real_init(self, args, *a, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)


# ------------------------------------------------------------ in memory (fast)


@pytest.fixture(scope="session")
def study() -> pd.DataFrame:
    """1000 typed rows drawn like the study's (synthetic: no file, no remote); 1000 is
    the largest batch the service takes by default."""
    return synthetic_study(1000, seed=2)


@pytest.fixture(scope="session")
def model_study(study: pd.DataFrame) -> pd.DataFrame:
    """`study` as the models see it (the field plot and the day as numbers)."""
    return model_frame(study)


@pytest.fixture
def small_frame() -> pd.DataFrame:
    """Eight valid rows covering every species and both outcomes."""
    rows = []
    species_soil = [
        ("Acer saccharum", "Prunus serotina"),
        ("Prunus serotina", "Sterile"),
        ("Quercus alba", "Quercus alba"),
        ("Quercus rubra", "Acer rubrum"),
    ]
    for i in range(8):
        sp, soil = species_soil[i % 4]
        amf_species = schema.SPECIES_MYCO[sp] == "AMF"
        rows.append(
            good_row(
                No=str(i + 1),
                Species=sp,
                Soil=soil,
                Sterile="Sterile" if soil == "Sterile" else "Non-Sterile",
                Conspecific=schema.expected_conspecific(sp, soil),
                EMF=None if amf_species else str(20 + i),
                Event=str(i % 2),
            )
        )
    return frame_of(*rows)


@pytest.fixture
def chdir_tmp(tmp_path: Path) -> Iterator[Path]:
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)


# ------------------------------------------------------- the real project (slow)


def _once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]
) -> Path:
    """Run `build(shared)` once per test session, in whichever xdist worker asks first
    (the others wait on the lock and find it done); `shared` is the run's temporary
    directory, which every worker sees."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    done = shared / f"{name}.done"
    with FileLock(shared / f"{name}.lock"):
        if not done.exists():
            build(shared)
            done.touch()
    return shared


def _build_project(factory: pytest.TempPathFactory) -> Path:
    """The project copy with the study data pulled (once per session)."""
    if not SHARED_REMOTE.is_dir():
        pytest.fail(f"the shared DVC remote is missing: {SHARED_REMOTE}")

    def build(shared: Path) -> None:
        dest = shared / "project"
        shutil.rmtree(dest, ignore_errors=True)  # what a failed attempt left
        dest.mkdir()
        copy_project(dest)
        # A plain `dvc pull`, as on a fresh clone: it fails if a committed dvc.lock
        # names outputs that the remote does not hold.
        run(["dvc", "pull"], dest)

    return _once(factory, "project", build) / "project"


def _build_trained(factory: pytest.TempPathFactory) -> Path:
    """The project after `dvc repro` (once per session)."""
    project = _build_project(factory)
    _once(factory, "pipeline", lambda _: run(["dvc", "repro"], project))
    return project


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_project(tmp_path_factory)


@pytest.fixture(scope="session")
def real_csv(project: Path) -> Path:
    return project / "data" / "raw" / "Tree_Data.csv"


@pytest.fixture(scope="session")
def real_frame(real_csv: Path) -> pd.DataFrame:
    return read_study_text(real_csv)


@pytest.fixture(scope="session")
def real_study(real_csv: Path) -> pd.DataFrame:
    """The real study file, validated (typed rows)."""
    from treesurv.core.validation import validate_file

    frame, _ = validate_file(real_csv)
    return frame


@pytest.fixture(scope="session")
def real_model_study(real_study: pd.DataFrame) -> pd.DataFrame:
    return model_frame(real_study)


@pytest.fixture(scope="session")
def pipeline_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project after `dvc repro` on the real data: the session's one pipeline run.
    Shared by every test that needs it: read it, never change it (use `trained_copy`)."""
    return _build_trained(tmp_path_factory)


@pytest.fixture
def trained_copy(pipeline_project: Path, tmp_path: Path) -> Path:
    """A private copy of the trained project, for a test that changes it."""
    return clone_project(pipeline_project, tmp_path / "project")


@pytest.fixture(scope="session")
def bundle_dir(pipeline_project: Path) -> Path:
    return pipeline_project / "models" / "tree-survival"
