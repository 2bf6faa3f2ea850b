"""The model bundle: a directory that is either complete and verified, or refused.

Layout: `manifest.json` plus the files it lists (compiled predictor, the sklearn
pipeline as skops, the model card, the reference profile). The manifest records
the sha256 of every file and a digest of its own content; loading reads every
file into memory once, checks it against the manifest and only then parses it,
so a bundle swapped or edited while being read can never be half-loaded.

A bundle from the pipeline holds four compiled sub-models, listed in the
manifest's `submodels`: for each variant (`full`: all ten features; `planning`:
the design variables only, known before planting) a classifier (P(death during
the study)) and a survival model (P(alive on a given day)). `predictor.json/npz`
is the full classifier, as in bundles made before sub-models existed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from treesurv.core.config import VARIANTS
from treesurv.core.errors import ModelError
from treesurv.core.journal import checkpoint
from treesurv.inference import predictor

MANIFEST = "manifest.json"
FORMAT = "treesurv-bundle/1"
REQUIRED_FILES = (predictor.SPEC_FILE, predictor.ARRAYS_FILE, "model_card.md")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
MAX_FILE_BYTES = 512 * 1024 * 1024
LIBRARIES = ("numpy", "scikit-learn", "scikit-survival", "numba", "skops", "pandas", "treesurv")
# Manifest keys write_bundle sets itself; `extra` may not override them.
MANIFEST_KEYS = ("format", "name", "version", "created", "libraries", "files", "digest")
KINDS = ("classifier", "survival")
# The file stem of each sub-model: <stem>.json (spec) + <stem>.npz (arrays).
SUBMODEL_STEMS = {
    ("full", "classifier"): "predictor",
    ("full", "survival"): "survival",
    ("planning", "classifier"): "planning",
    ("planning", "survival"): "planning_survival",
}


# The study report (the pipeline's `explore` stage), when the bundle has one: its
# page, its numbers and its figures, under their own flat names, listed in the
# manifest's `explore` entry. Bundles without it stay valid.
EXPLORE_PREFIX = "explore"
EXPLORE_HTML = "explore.html"
EXPLORE_JSON = "explore.json"


class BundleError(ModelError):
    """The bundle is missing, incomplete or does not match its manifest."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _digest(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "digest"}
    return sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_state(cwd: Path | None = None) -> dict[str, Any]:
    """The commit the bundle was built from (None outside a git checkout)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


@dataclass(frozen=True)
class Bundle:
    """A verified bundle, its files held in memory."""

    path: Path
    manifest: dict[str, Any]
    files: dict[str, bytes]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def threshold(self) -> float:
        return float(self.manifest["decision_threshold"])

    @property
    def card(self) -> str:
        return self.files["model_card.md"].decode()

    def explore_file(self, name: str) -> bytes | None:
        """A file of the study report (page, JSON or figure); None when the bundle has
        no report (bundles made before it existed) or no such file."""
        entry = self.manifest.get("explore")
        if not isinstance(entry, dict):
            return None
        listed = {entry.get("html"), entry.get("json"), *(entry.get("figures") or ())}
        return self.files.get(name) if name in listed else None

    def json_file(self, name: str) -> Any:
        return json.loads(self.files[name])

    def compiled(self) -> predictor.CompiledModel:
        """The compiled predictor, parsed from the verified bytes."""
        return predictor.loads(self.files[predictor.SPEC_FILE], self.files[predictor.ARRAYS_FILE])

    @property
    def submodels(self) -> dict[str, dict[str, Any]]:
        """variant -> kind -> {"spec", "arrays", ...}; a bundle made before sub-models
        existed has its predictor as the full classifier and nothing else."""
        listed = self.manifest.get("submodels")
        if isinstance(listed, dict):
            return listed
        return {"full": {"classifier": submodel_entry("full", "classifier")}}

    @property
    def variants(self) -> tuple[str, ...]:
        """Variants with a classifier, `full` first."""
        return tuple(v for v in VARIANTS if "classifier" in self.submodels.get(v, {}))

    def has(self, variant: str, kind: str) -> bool:
        return kind in self.submodels.get(variant, {})

    def _files_of(self, variant: str, kind: str) -> tuple[bytes, bytes]:
        if variant not in VARIANTS or kind not in KINDS:
            raise BundleError(
                f"no sub-model {variant!r}/{kind!r}: variants are {', '.join(VARIANTS)}, "
                f"kinds {', '.join(KINDS)}"
            )
        entry = self.submodels.get(variant, {}).get(kind)
        if entry is None:
            raise BundleError(f"{self.path}: this bundle has no {variant} {kind} model")
        return self.files[entry["spec"]], self.files[entry["arrays"]]

    def classifier(self, variant: str = "full") -> predictor.CompiledModel:
        """The compiled classifier of a variant (P(death during the study))."""
        try:
            return predictor.loads(*self._files_of(variant, "classifier"))
        except predictor.PredictorError as exc:
            raise BundleError(f"{self.path}: {variant} classifier is invalid: {exc}") from None

    def survival(self, variant: str = "full") -> predictor.CompiledSurvival:
        """The compiled survival model of a variant (P(alive on a given day))."""
        try:
            return predictor.loads_survival(*self._files_of(variant, "survival"))
        except predictor.PredictorError as exc:
            raise BundleError(f"{self.path}: {variant} survival model is invalid: {exc}") from None

    def load(self, variant: str, kind: str) -> Any:
        return self.classifier(variant) if kind == "classifier" else self.survival(variant)


def explore_entry(files: Mapping[str, bytes]) -> dict[str, Any]:
    """The manifest entry of the study report: its page, its JSON and its figures."""
    return {
        "html": EXPLORE_HTML,
        "json": EXPLORE_JSON,
        "figures": sorted(f for f in files if f.endswith(".png")),
    }


def submodel_entry(variant: str, kind: str, **extra: Any) -> dict[str, Any]:
    """The manifest entry of one sub-model: its two files and what describes it."""
    stem = SUBMODEL_STEMS[(variant, kind)]
    return {"spec": f"{stem}.json", "arrays": f"{stem}.npz", **extra}


def _check_submodels(submodels: Any, files: Any, where: str) -> None:
    """Every sub-model the manifest lists names known variants/kinds and listed files."""
    if not isinstance(submodels, dict):
        raise BundleError(f"{where}: submodels must be a mapping of variant to kinds")
    for variant, kinds in submodels.items():
        if variant not in VARIANTS or not isinstance(kinds, dict):
            raise BundleError(f"{where}: unknown sub-model variant {variant!r}")
        for kind, entry in kinds.items():
            if kind not in KINDS or not isinstance(entry, dict):
                raise BundleError(f"{where}: unknown sub-model kind {variant!r}/{kind!r}")
            for role in ("spec", "arrays"):
                if entry.get(role) not in files:
                    raise BundleError(
                        f"{where}: the {variant} {kind} model's {role} file "
                        f"{entry.get(role)!r} is not among the bundle's files"
                    )


def write_bundle(
    directory: Path,
    files: Mapping[str, bytes],
    *,
    name: str,
    version: str,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """Write a bundle beside `directory`, then rename it into place.

    A reader sees either the old complete bundle or the new complete one.
    """
    if not SEMVER.match(version):
        raise BundleError(f"version {version!r} is not semantic (MAJOR.MINOR.PATCH)")
    missing = [f for f in REQUIRED_FILES if f not in files]
    if missing:
        raise BundleError(f"bundle needs {', '.join(missing)}")
    for fname in files:
        if not SAFE_NAME.match(fname) or fname == MANIFEST:
            raise BundleError(f"bad bundle file name {fname!r}")
    clash = sorted(set(extra) & set(MANIFEST_KEYS))
    if clash:
        raise BundleError(f"extra manifest keys {clash} are set by the bundle itself")
    if "submodels" in extra:
        _check_submodels(extra["submodels"], files, "bundle")
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
        "libraries": library_versions(),
        "files": {
            f: {"sha256": sha256(data), "bytes": len(data)} for f, data in sorted(files.items())
        },
    }
    manifest["digest"] = _digest(manifest)
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for fname, data in files.items():
            (staging / fname).write_bytes(data)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        for entry in staging.iterdir():
            with entry.open("rb") as fh:
                os.fsync(fh.fileno())
        # mkdtemp makes 0700; a bundle is read by the service's own user and others.
        os.chmod(staging, 0o755)  # noqa: S103  # nosec B103
        swap_into_place(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def swap_into_place(staging: Path, directory: Path) -> None:
    """Replace `directory` by `staging` with renames only (no moment without a bundle
    file set on disk other than between two renames)."""
    old = None
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        directory.rename(old)
        checkpoint("bundle:swapping")  # the crash tests stop here: no bundle in place
    try:
        staging.rename(directory)
    except BaseException:
        if old is not None:
            old.rename(directory)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_bundle(directory: Path | str) -> Bundle:
    """Read and verify a bundle; any mismatch raises BundleError naming the problem.

    Every file is read through one handle on the directory, so a bundle renamed
    into place while it is being read is seen whole — old or new, never a mix.
    """
    directory = Path(directory)
    for attempt in range(3):
        try:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            raise BundleError(f"{directory}: no model bundle here (not a directory)") from None
        except OSError as exc:
            raise BundleError(f"{directory}: cannot open the bundle: {exc.strerror}") from None
        try:
            return _read_bundle(directory, dir_fd)
        except BundleError:
            # The old directory was replaced (and emptied) while we read it: read
            # the one now in place. A bundle that is really broken fails again.
            if attempt == 2 or not _replaced(directory, dir_fd):
                raise
        finally:
            os.close(dir_fd)
    raise AssertionError("unreachable")


def _replaced(directory: Path, dir_fd: int) -> bool:
    try:
        return os.stat(directory).st_ino != os.fstat(dir_fd).st_ino
    except OSError:
        return False


def _read_at(dir_fd: int, name: str, limit: int) -> bytes:
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as fh:
        if os.fstat(fh.fileno()).st_size > limit:
            raise BundleError(f"{name} is larger than {limit} bytes")
        return fh.read()


def _read_bundle(directory: Path, dir_fd: int) -> Bundle:
    try:
        raw = _read_at(dir_fd, MANIFEST, MAX_FILE_BYTES)
    except FileNotFoundError:
        raise BundleError(f"{directory}: no {MANIFEST}") from None
    except OSError as exc:
        raise BundleError(f"{directory}: cannot read {MANIFEST}: {exc.strerror}") from None
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BundleError(f"{directory}: {MANIFEST} is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{directory}: unsupported bundle format {_get(manifest, 'format')!r}")
    if manifest.get("digest") != _digest(manifest):
        raise BundleError(f"{directory}: {MANIFEST} was modified (its digest does not match)")
    listed = manifest.get("files")
    if not isinstance(listed, dict) or any(not SAFE_NAME.match(str(f)) for f in listed):
        raise BundleError(f"{directory}: {MANIFEST} has a malformed file list")
    for required in REQUIRED_FILES:
        if required not in listed:
            raise BundleError(f"{directory}: {MANIFEST} does not list {required}")
    if "submodels" in manifest:
        _check_submodels(manifest["submodels"], listed, f"{directory}: {MANIFEST}")
    present = {name for name in os.listdir(dir_fd) if name != MANIFEST}
    unexpected = sorted(present - set(listed))
    if unexpected:
        raise BundleError(
            f"{directory}: unexpected file(s) not in the manifest: {', '.join(unexpected)}"
        )
    files: dict[str, bytes] = {}
    for fname, meta in listed.items():
        try:
            data = _read_at(dir_fd, fname, MAX_FILE_BYTES)
        except FileNotFoundError:
            raise BundleError(f"{directory}: {fname} is missing") from None
        except BundleError as exc:
            raise BundleError(f"{directory}: {exc}") from None
        except OSError as exc:
            raise BundleError(f"{directory}: cannot read {fname}: {exc.strerror}") from None
        found = sha256(data)
        if found != meta.get("sha256"):
            raise BundleError(
                f"{directory}: {fname} does not match its sha256 in the manifest "
                f"(expected {str(meta.get('sha256'))[:12]}…, found {found[:12]}…)"
            )
        files[fname] = data
    return Bundle(directory, manifest, files)


def load_verified(directory: Path | str) -> tuple[Bundle, predictor.CompiledModel]:
    """Read, verify and parse: what the service and batch scoring use.

    Returns the full classifier; every other sub-model the manifest lists is
    parsed too, so a bundle with any invalid model is refused as a whole.
    """
    bundle = read_bundle(directory)
    try:
        compiled = bundle.compiled()
    except predictor.PredictorError as exc:
        raise BundleError(f"{directory}: compiled model is invalid: {exc}") from None
    for variant, kinds in bundle.submodels.items():
        for kind in kinds:
            if (variant, kind) != ("full", "classifier"):
                bundle.load(variant, kind)
    return bundle, compiled


def require_complete(bundle: Bundle) -> None:
    """A pipeline bundle has every sub-model: both variants, both kinds."""
    missing = [f"{v} {k}" for v in VARIANTS for k in KINDS if not bundle.has(v, k)]
    if missing:
        raise BundleError(f"{bundle.path}: bundle lacks the {', '.join(missing)} model(s)")


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None
