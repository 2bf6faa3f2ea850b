"""The model being served, swapped atomically on reload.

`ModelState.current` is one immutable `Served` object. A request reads it once
and keeps that reference, so a request in flight finishes on the model it
started with even if a reload swaps in another one meanwhile. A reload verifies
and warms up the new bundle completely before the swap; a bundle that fails is
refused, the old model keeps serving, and the failure is logged, shown by
`/readyz` and counted in `/metrics`.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from treesurv.core.config import VARIANTS
from treesurv.inference.bundle import MANIFEST, Bundle, BundleError, load_verified
from treesurv.inference.predictor import KERNELS, FastPredictor, SurvivalPredictor
from treesurv.serving.metrics import Metrics

log = logging.getLogger(__name__)

Fingerprint = tuple[int, int, int, int]


def fingerprint(model_dir: Path) -> Fingerprint | None:
    """Identity of the bundle on disk: a bundle renamed into place changes it."""
    try:
        d = os.stat(model_dir)
        m = os.stat(model_dir / MANIFEST)
    except OSError:
        return None
    return (d.st_ino, m.st_ino, m.st_mtime_ns, m.st_size)


@dataclass(frozen=True)
class Served:
    """A verified bundle and its warmed-up predictors: the full classifier, and
    whichever of the planning classifier and the survival models (full, planning)
    the bundle holds. All come from one verified read and are swapped together."""

    bundle: Bundle
    predictor: FastPredictor
    fingerprint: Fingerprint | None
    loaded_at: float
    classifiers: Mapping[str, FastPredictor] = field(default_factory=dict)
    survival: Mapping[str, SurvivalPredictor] = field(default_factory=dict)

    def classifier(self, variant: str) -> FastPredictor | None:
        return self.predictor if variant == "full" else self.classifiers.get(variant)

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def digest(self) -> str:
        return str(self.bundle.manifest.get("digest"))


def load_submodels(
    bundle: Bundle, compile_now: bool = True
) -> tuple[dict[str, FastPredictor], dict[str, SurvivalPredictor]]:
    """The planning classifier and the survival models the bundle lists, warmed up."""
    classifiers = {
        v: FastPredictor(bundle.classifier(v), compile_now)
        for v in VARIANTS
        if v != "full" and bundle.has(v, "classifier")
    }
    survival = {
        v: SurvivalPredictor(bundle.survival(v), compile_now)
        for v in VARIANTS
        if bundle.has(v, "survival")
    }
    return classifiers, survival


def settle_heap(collect: bool) -> None:
    """Put the objects that live as long as the process (the app, the served model,
    compiled kernels) out of the cyclic garbage collector's reach (`gc.freeze`).

    Every 1,000-row batch makes some 10,000 objects, so collections are frequent
    under load, and a full one walked the whole heap: pauses of about 90 ms, during
    which the event loop answers nothing, probes included. Frozen objects are never
    walked; request garbage still is. `collect` first frees what is already garbage
    (about 0.1 s, so only off the request path: after the kernels compile), so
    that it is not frozen with the rest.
    """
    if collect:
        gc.collect()
    gc.freeze()


def compile_kernels(served: Served) -> float:
    """Compile every sub-model's Numba kernels, then switch the trees' walk to them;
    returns the seconds it took. Until then the NumPy walk answers (same sums)."""
    start = time.perf_counter()
    # Numba is imported here, off the startup path; its pickled disk cache is never
    # loaded by the service (see kernel_cache).
    from treesurv.inference import kernel_cache, kernels  # noqa: F401 - the kernels to disarm

    kernel_cache.disable_disk_cache()
    predictors: list[FastPredictor | SurvivalPredictor] = [
        served.predictor,
        *served.classifiers.values(),
        *served.survival.values(),
    ]
    for predictor in predictors:
        predictor.compile_kernels()
    KERNELS.numba = KERNELS.compiled = True
    return time.perf_counter() - start


@dataclass(frozen=True)
class ReloadOutcome:
    status: Literal["reloaded", "unchanged", "refused"]
    served: Served | None
    previous_version: str | None
    error: str | None = None


class ModelState:
    """Holds the served model; loads, verifies and swaps bundles from `model_dir`."""

    def __init__(self, model_dir: Path, metrics: Metrics) -> None:
        self.model_dir = Path(model_dir)
        self.metrics = metrics
        self.current: Served | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._failed: Fingerprint | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        # The background compilation of the first model's kernels, once started.
        self._compiled_once: threading.Thread | None = None

    @property
    def not_ready_reason(self) -> str | None:
        if self.current is not None:
            return None
        return self.last_error or f"no model loaded yet from {self.model_dir}"

    def reload(self) -> ReloadOutcome:
        """Verify and load the bundle at `model_dir`; swap it in if it differs."""
        with self._lock:
            previous = self.current
            prev_version = previous.version if previous else None
            seen = fingerprint(self.model_dir)
            try:
                bundle, compiled = load_verified(self.model_dir)
                if previous is not None and bundle.manifest.get("digest") == previous.digest:
                    self.current = replace(previous, fingerprint=seen)
                    self.last_error = None
                    self._failed = None
                    return ReloadOutcome("unchanged", self.current, prev_version)
                # The process's first model answers at once, with the NumPy walk, while
                # its Numba kernels compile in the background; later models compile
                # (quickly: the kernels are typed like the first's) before the swap.
                first = not KERNELS.compiled
                if first:
                    KERNELS.numba = False
                predictor = FastPredictor(compiled, compile_now=not first)
                classifiers, survival = load_submodels(bundle, compile_now=not first)
            except BundleError as exc:
                return self._refused(str(exc), seen, previous, prev_version)
            except Exception as exc:  # a bundle that verifies but cannot run
                reason = f"{self.model_dir}: cannot load: {exc!r}"
                return self._refused(reason, seen, previous, prev_version)
            served = Served(bundle, predictor, seen, time.time(), classifiers, survival)
            self.current = served  # the atomic swap: one reference assignment
            settle_heap(collect=False)
            if first:
                self._compiled_once = threading.Thread(
                    target=self._compile, args=(served,), name="treesurv-compile", daemon=True
                )
                self._compiled_once.start()
            self.last_error = None
            self._failed = None
            self.metrics.reloads.inc()
            self.metrics.serving(served.name, served.version)
            log.info(
                "serving %s %s from %s (was %s)",
                served.name,
                served.version,
                self.model_dir,
                prev_version or "nothing",
            )
            return ReloadOutcome("reloaded", served, prev_version)

    def _compile(self, served: Served) -> None:
        try:
            seconds = compile_kernels(served)
        except Exception:  # the NumPy walk keeps answering, correctly
            log.exception("compiling the model's kernels failed; scoring stays on NumPy")
            return
        settle_heap(collect=True)  # what compiling left: its garbage, then its code
        self.metrics.kernels_compiled.set(1)
        log.info("compiled kernels in %.1f s: scoring at full speed", seconds)

    def wait_compiled(self, timeout: float | None = None) -> bool:
        """Wait for the background compilation (tests and benchmarks)."""
        thread = self._compiled_once
        if thread is not None:
            thread.join(timeout)
        return KERNELS.numba

    def _refused(
        self,
        reason: str,
        seen: Fingerprint | None,
        previous: Served | None,
        prev_version: str | None,
    ) -> ReloadOutcome:
        self.last_error = reason
        self._failed = seen
        self.metrics.reload_failures.inc()
        if previous is not None:
            log.error("bundle refused, still serving %s: %s", prev_version, reason)
        else:
            log.error("no model to serve: %s", reason)
        return ReloadOutcome("refused", previous, prev_version, reason)

    # ------------------------------------------------------------------ watcher

    def changed_on_disk(self) -> bool:
        """A bundle is on disk that is neither the served one nor the last refused one."""
        seen = fingerprint(self.model_dir)
        if seen is None:
            return False  # nothing there (or between the two renames of a swap)
        served = self.current.fingerprint if self.current is not None else None
        return seen != served and seen != self._failed

    def start_watching(self, interval: float) -> None:
        if interval <= 0 or self._watcher is not None:
            return
        self._stop.clear()
        self._watcher = threading.Thread(
            target=self._watch, args=(interval,), name="treesurv-bundle-watcher", daemon=True
        )
        self._watcher.start()

    def stop_watching(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
            self._watcher = None

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                if self.changed_on_disk():
                    log.info("bundle at %s changed on disk; reloading", self.model_dir)
                    self.reload()
            except Exception:  # the watcher must outlive any surprise
                log.exception("bundle watcher error")
