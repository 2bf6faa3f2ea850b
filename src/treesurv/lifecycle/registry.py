"""The model registry: semver versions and the production stage as GTO git tags.

- A version is an annotated git tag `tree-survival@v1.2.0` on the commit that
  holds that version's bundle: a DVC pointer (`models/registry/tree-survival.dvc`)
  to a copy of the bundle in the DVC cache and remote. The pipeline's own outputs
  stay out of the DVC cache; only promoted bundles are stored. Versions are never
  moved or reused.
- Production is a GTO stage (`prod` by default). Every promotion or rollback adds
  one tag `tree-survival#prod#N`, where N counts the artifact's tag events; the
  production version is the one named by the highest N, i.e. the latest decision
  (not the highest version number). A rollback is therefore one more tag and the
  whole history stays in git (`gto history`).
- A version's bundle is restored through the pointer of its commit, from the
  local DVC cache or else the DVC remote, verified against its manifest, written
  beside the production directory and renamed into place: the service watches
  that directory and hot-reloads, and never sees half a bundle.

Pure functions (semver, stage history) are kept apart from the git/GTO/DVC edges.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from treesurv.core.errors import LifecycleError
from treesurv.core.journal import Journal, checkpoint
from treesurv.inference import bundle as bundle_mod
from treesurv.lifecycle import vcs

DEFAULT_STAGE = "prod"
SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")


class RegistryError(LifecycleError):
    """The registry cannot do what was asked; the message says why."""


# ------------------------------------------------------------------------ semver


class Bump(Enum):
    MAJOR = "major"
    MINOR = "minor"
    PATCH = "patch"


def parse_version(text: str) -> tuple[int, int, int]:
    match = SEMVER.match(text.strip())
    if not match:
        raise RegistryError(f"{text!r} is not a version (MAJOR.MINOR.PATCH, e.g. 1.2.0)")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def plain(version: str) -> str:
    """`v1.2.0` or `1.2.0` -> `1.2.0` (bundles and the API use the plain form)."""
    return "{}.{}.{}".format(*parse_version(version))


def bump(version: str, part: Bump) -> str:
    major, minor, patch = parse_version(version)
    if part is Bump.MAJOR:
        return f"{major + 1}.0.0"
    if part is Bump.MINOR:
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def next_version(registered: Iterable[str], first: str, part: Bump) -> str:
    """The version a new model gets: `first` when none is registered, else the
    highest registered version bumped (so a version is never reused, even after
    a rollback to an older one)."""
    known = [parse_version(v) for v in registered]
    if not known:
        return plain(first)
    return bump("{}.{}.{}".format(*max(known)), part)


def change_kind(challenger: dict[str, Any], champion: dict[str, Any] | None) -> Bump:
    """How a challenger differs from the production model (their manifests).

    major: the input schema changed (clients must change their requests);
    minor: the training data changed; patch: anything else (parameters, code).
    """
    if champion is None:
        return Bump.MINOR
    if challenger.get("schema") != champion.get("schema"):
        return Bump.MAJOR
    if (challenger.get("data") or {}).get("md5") != (champion.get("data") or {}).get("md5"):
        return Bump.MINOR
    return Bump.PATCH


# ------------------------------------------------------------------ stage history


ROLLBACK = "rollback"  # how a rollback's tag message begins


@dataclass(frozen=True)
class StageEvent:
    """One `name#stage#N` (assigned) or `name#stage!#N` (unassigned) tag."""

    number: int
    version: str
    assigned: bool
    tag: str
    created: datetime
    message: str = ""

    @property
    def rollback(self) -> bool:
        return self.message.startswith(ROLLBACK)


def current(events: Sequence[StageEvent]) -> str | None:
    """The version in the stage: the one named by its latest event, if assigned."""
    if not events:
        return None
    last = max(events, key=lambda e: e.number)
    return last.version if last.assigned else None


def production_stack(events: Sequence[StageEvent]) -> list[str]:
    """Versions in the order they went to production, with rollbacks undone.

    A promotion pushes its version; a rollback pops back down to the version it
    restored, so consecutive rollbacks walk further back instead of toggling
    between the last two versions.
    """
    stack: list[str] = []
    for event in sorted(events, key=lambda e: e.number):
        if not event.assigned:
            if stack and stack[-1] == event.version:
                stack.pop()
        elif event.rollback and event.version in stack:
            while stack[-1] != event.version:
                stack.pop()
        elif not stack or stack[-1] != event.version:
            stack.append(event.version)
    return stack


def previous(events: Sequence[StageEvent]) -> str | None:
    """The version a rollback goes back to: the one in production before the current."""
    now = current(events)
    earlier = [v for v in production_stack(events) if v != now]
    return earlier[-1] if earlier else None


# -------------------------------------------------------------------- the edges


@dataclass(frozen=True)
class Version:
    version: str  # plain: 1.2.0
    tag: str
    commit: str
    created: datetime
    message: str


@dataclass(frozen=True)
class Restored:
    """A verified bundle staged beside the production directory, not yet in place."""

    version: str
    staging: Path
    manifest: dict[str, Any]


class Registry:
    """GTO tags and DVC-tracked bundles of one git repository."""

    def __init__(
        self,
        root: Path,
        name: str,
        store_path: Path,
        stage: str = DEFAULT_STAGE,
        metrics_path: Path = Path("metrics.json"),
    ) -> None:
        """`store_path`: the DVC-tracked directory that holds a version's bundle
        at its commit."""
        self.root = Path(root).resolve()
        self.name = name
        self.store_path = Path(store_path)
        self.stage = stage
        self.metrics_path = metrics_path

    # ---------------------------------------------------------------- reading

    def versions(self) -> list[Version]:
        """Registered versions, newest first."""
        import gto.api
        from gto.exceptions import ArtifactNotFound

        try:
            found = gto.api.show(str(self.root), self.name, registered_only=True)
        except ArtifactNotFound:
            return []
        except Exception as exc:  # GTO raises its own types and git's
            raise RegistryError(f"cannot read the registry: {exc}") from None
        out = []
        for v in found:
            if not SEMVER.match(str(v["version"])):
                continue
            out.append(
                Version(
                    version=plain(v["version"]),
                    tag=str(v.get("ref") or f"{self.name}@{v['version']}"),
                    commit=str(v["commit_hexsha"]),
                    created=v["created_at"],
                    message=str(v.get("message") or ""),
                )
            )
        return sorted(out, key=lambda v: parse_version(v.version), reverse=True)

    def events(self) -> list[StageEvent]:
        """Assignments and unassignments of the stage, oldest first."""
        import gto.api

        try:
            history = gto.api.history(str(self.root), self.name, ascending=True)
        except Exception as exc:
            raise RegistryError(f"cannot read the registry history: {exc}") from None
        out = []
        for e in history:
            if e["event"] not in ("assignment", "unassignment") or e["stage"] != self.stage:
                continue
            parsed = gto.api.parse_tag(str(e["ref"]))
            out.append(
                StageEvent(
                    number=int(parsed.get("counter", 0)),
                    version=plain(str(e["version"])),
                    assigned=e["event"] == "assignment",
                    tag=str(e["ref"]),
                    created=e["timestamp"],
                    message=str(e.get("message") or ""),
                )
            )
        return sorted(out, key=lambda e: e.number)

    def find(self, version: str) -> Version:
        wanted = plain(version)
        for v in self.versions():
            if v.version == wanted:
                return v
        raise RegistryError(f"version {wanted} of {self.name} is not registered")

    def production(self) -> Version | None:
        now = current(self.events())
        return self.find(now) if now else None

    def metrics_at(self, commit: str) -> dict[str, Any] | None:
        """The metrics a version was evaluated with (metrics.json of its commit, the
        same figures its bundle manifest records)."""
        text = vcs.show_file(self.root, commit, self.metrics_path.as_posix())
        try:
            return json.loads(text) if text else None
        except ValueError:
            return None

    # ---------------------------------------------------------------- writing

    def register(self, version: str, ref: str = "HEAD", message: str | None = None) -> Version:
        import gto.api

        v = plain(version)
        try:
            gto.api.register(str(self.root), self.name, ref, version=f"v{v}", message=message)
        except Exception as exc:
            raise RegistryError(f"cannot register {self.name} {v}: {exc}") from None
        return self.find(v)

    def assign(self, version: str, message: str | None = None) -> None:
        """Put a registered version in the stage (a new tag even if it was there before)."""
        import gto.api

        v = plain(version)
        try:
            gto.api.assign(
                str(self.root),
                self.name,
                self.stage,
                version=f"v{v}",
                message=message,
                force=True,  # a rollback re-assigns a version that was in the stage
            )
        except Exception as exc:
            raise RegistryError(f"cannot assign {self.stage} to {self.name} {v}: {exc}") from None

    # ---------------------------------------------------------------- bundles

    def restore(self, version: str, dest: Path) -> Restored:
        """Stage a version's bundle beside `dest` (from the DVC cache or remote), verified."""
        target = self.find(version)
        return self.restore_rev(target.commit, dest, expect_version=target.version)

    def restore_rev(self, rev: str, dest: Path, expect_version: str | None = None) -> Restored:
        from dvc.api import DVCFileSystem

        staging_root = _staging_dir(dest)
        staging = staging_root / "bundle"
        try:
            try:
                fs = DVCFileSystem(str(self.root), rev=rev)
                fs.get(self.store_path.as_posix(), str(staging), recursive=True)
            except Exception as exc:  # DVC raises many types; the reason is what matters
                raise RegistryError(
                    f"cannot restore the bundle of {expect_version or rev} "
                    f"({self.store_path} at {rev[:12]}) from the DVC cache or remote: "
                    f"{_first_line(exc)}"
                ) from None
            manifest = _verified_manifest(staging, expect_version)
        except BaseException:
            shutil.rmtree(staging_root, ignore_errors=True)
            raise
        return Restored(str(manifest["version"]), staging, manifest)


def _in_git(root: Path) -> bool:
    try:
        vcs.git_root(root)
    except vcs.CommandError:
        return False
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _staging_dir(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))


def _verified_manifest(directory: Path, expect_version: str | None) -> dict[str, Any]:
    try:
        bundle, _ = bundle_mod.load_verified(directory)
    except bundle_mod.BundleError as exc:
        raise RegistryError(f"the restored bundle does not verify: {exc}") from None
    if expect_version is not None and bundle.version != plain(expect_version):
        raise RegistryError(
            f"the bundle registered as {plain(expect_version)} says it is {bundle.version}"
        )
    return bundle.manifest


def stage_copy(source: Path, dest: Path) -> Restored:
    """Stage a verified copy of a bundle directory beside `dest`."""
    staging_root = _staging_dir(dest)
    staging = staging_root / "bundle"
    try:
        shutil.copytree(source, staging)
        manifest = _verified_manifest(staging, None)
    except OSError as exc:
        shutil.rmtree(staging_root, ignore_errors=True)
        raise RegistryError(f"cannot copy {source}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging_root, ignore_errors=True)
        raise
    return Restored(str(manifest["version"]), staging, manifest)


def install(restored: Restored, dest: Path) -> bool:
    """Rename a staged bundle into place; False (and nothing touched) when `dest`
    already holds the very same bundle (same manifest digest)."""
    try:
        same = (
            json.loads((dest / bundle_mod.MANIFEST).read_text()).get("digest")
            == restored.manifest["digest"]
        )
    except (OSError, ValueError):
        same = False
    try:
        if same:
            return False
        # mkdtemp makes 0700; the service may run as another user.
        restored.staging.chmod(0o755)
        bundle_mod.swap_into_place(restored.staging, dest)
        return True
    finally:
        shutil.rmtree(restored.staging.parent, ignore_errors=True)


def discard(restored: Restored) -> None:
    shutil.rmtree(restored.staging.parent, ignore_errors=True)


# ---------------------------------------------------------------- operations


PROMOTE_JOURNAL = "promote"


def registry_state(reg: Registry, dest: Path) -> dict[str, Any]:
    """What recovery needs to rebuild the registry and find the production directory."""
    return {
        "name": reg.name,
        "store": reg.store_path.as_posix(),
        "stage": reg.stage,
        "metrics": reg.metrics_path.as_posix(),
        "dest": str(dest.resolve()),
        "events_before": max((e.number for e in reg.events()), default=0),
    }


def from_state(root: Path, state: dict[str, Any]) -> tuple[Registry, Path]:
    reg = Registry(
        root, state["name"], Path(state["store"]), state["stage"], Path(state["metrics"])
    )
    return reg, Path(state["dest"])


def promote(reg: Registry, version: str, dest: Path, message: str | None = None) -> Version:
    """Put a registered version in production and its bundle at `dest`.

    The bundle is restored and verified first: if that fails, neither the stage
    tags nor `dest` change. The stage tag is the commit point: a promotion
    interrupted before it is undone by `recover_promotion`, one interrupted after
    it is finished (the bundle installed).
    """
    target = reg.find(version)
    journal = Journal(reg.root, PROMOTE_JOURNAL)
    journal.write({**registry_state(reg, dest), "version": target.version})
    restored = None
    try:
        restored = reg.restore(target.version, dest)
        checkpoint("promote:restored")
        reg.assign(target.version, message or f"promote {target.version}")
    except BaseException:
        if restored is not None:
            discard(restored)
        journal.clear()
        raise
    checkpoint("promote:assigned")
    install(restored, dest)
    checkpoint("promote:installed")
    journal.clear()
    return target


def _clear_leftovers(dest: Path) -> None:
    """Staging and swapped-out copies an interrupted install left beside `dest`."""
    for leftover in dest.parent.glob(f".{dest.name}.*"):
        shutil.rmtree(leftover, ignore_errors=True)


def settle_production(reg: Registry, dest: Path) -> str | None:
    """Make `dest` hold the bundle of the version in the stage (after a crash)."""
    _clear_leftovers(dest)
    now = current(reg.events())
    if now is None:
        return None
    checkout(reg, dest, version=now)
    return now


def recover_promotion(root: Path, log: Callable[[str], None]) -> None:
    """Finish or undo a promotion that a crash interrupted (see `promote`)."""
    journal = Journal(root, PROMOTE_JOURNAL)
    state = journal.read()
    if state is None:
        return
    reg, dest = from_state(root, state)
    events = reg.events()
    assigned = max((e.number for e in events), default=0) > state["events_before"]
    if assigned and current(events) == state["version"]:
        settle_production(reg, dest)
        log(f"finished the interrupted promotion of {reg.name} {state['version']}")
    else:
        _clear_leftovers(dest)
        log(f"undid the interrupted promotion of {reg.name} {state['version']}")
    journal.clear()


def rollback(reg: Registry, dest: Path) -> tuple[str, Version]:
    """Production goes back to the version it had before the current one."""
    events = reg.events()
    now = current(events)
    if now is None:
        raise RegistryError(f"no version of {reg.name} is in {reg.stage}: nothing to roll back")
    before = previous(events)
    if before is None:
        raise RegistryError(
            f"{reg.name} {now} is the first version that was in {reg.stage}: "
            "there is no earlier one to roll back to"
        )
    return now, promote(reg, before, dest, f"{ROLLBACK} from {now} to {before}")


def resolve_tag(reg: Registry, tag: str) -> str:
    """The version a registry tag names (`name@v1.2.0` or `name#prod#3`)."""
    for event in reg.events():
        if event.tag == tag:
            return event.version
    for v in reg.versions():
        if v.tag == tag:
            return v.version
    raise RegistryError(f"{tag} is not a tag of {reg.name} in this repository")


@dataclass(frozen=True)
class Checkout:
    version: str
    source: str
    changed: bool


def checkout(
    reg: Registry, dest: Path, fallback: Path | None = None, version: str | None = None
) -> Checkout:
    """Materialise a model at `dest`: the given version, else the production one,
    else (no version promoted yet) the pipeline's own bundle at `fallback`."""
    if version is None:
        prod = reg.production() if _in_git(reg.root) else None  # no git, no registry
        version = prod.version if prod else None
    if version is not None:
        restored = reg.restore(version, dest)
        source = f"{reg.name} {restored.version} from the registry"
    elif fallback is not None:
        if not fallback.is_dir():
            raise RegistryError(
                f"no version of {reg.name} is in {reg.stage} and there is no pipeline bundle "
                f"at {fallback} (run `dvc repro` first)"
            )
        restored = stage_copy(fallback, dest)
        source = f"the pipeline bundle {fallback} (no version in {reg.stage} yet)"
    else:
        raise RegistryError(f"no version of {reg.name} is in {reg.stage}")
    return Checkout(restored.version, source, install(restored, dest))
