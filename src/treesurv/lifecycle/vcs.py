"""Git and DVC as subprocesses: the edges the lifecycle commands stand on.

DVC runs as `python -m dvc` from this interpreter, with this interpreter's
scripts first on PATH, so the pipeline's stages (`treesurv ...`) and DVC are the
project's own whatever the caller's PATH. A failed command raises `CommandError`
with the tool's own error lines, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from treesurv.core.errors import LifecycleError

DVC_TIMEOUT = 3600.0  # a full `dvc repro` on the real data takes about a minute
GIT_TIMEOUT = 120.0


class CommandError(LifecycleError):
    """A git or DVC command failed; the message carries its error lines."""


def tool_env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def error_lines(text: str, limit: int = 6) -> str:
    """The lines that say what went wrong (DVC prefixes them with ERROR)."""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    flagged = [ln for ln in lines if ln.lstrip().startswith(("ERROR", "error:", "fatal:"))]
    chosen = flagged or lines[-limit:]
    return "\n".join(chosen[-limit:]) or "(no output)"


def _run(cmd: Sequence[str], cwd: Path, timeout: float, label: str) -> str:
    try:
        proc = subprocess.run(
            list(cmd),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=tool_env(),
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise CommandError(f"`{label}` did not finish within {timeout:.0f} s") from None
    except OSError as exc:
        raise CommandError(f"`{label}` could not start: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        raise CommandError(
            f"`{label}` failed (exit {proc.returncode}):\n{error_lines(proc.stderr + proc.stdout)}"
        )
    return proc.stdout


def dvc(args: Sequence[str], cwd: Path, timeout: float = DVC_TIMEOUT) -> str:
    return _run([sys.executable, "-m", "dvc", *args], cwd, timeout, "dvc " + " ".join(args))


def git(args: Sequence[str], cwd: Path, timeout: float = GIT_TIMEOUT) -> str:
    return _run(["git", *args], cwd, timeout, "git " + " ".join(args))


def git_root(cwd: Path) -> Path:
    try:
        return Path(git(["rev-parse", "--show-toplevel"], cwd).strip())
    except CommandError:
        raise CommandError(f"{cwd}: not inside a git repository") from None


def show_file(cwd: Path, rev: str, path: str) -> str | None:
    """A file's text at a revision, or None when it does not exist there."""
    try:
        return git(["show", f"{rev}:{path}"], cwd)
    except CommandError:
        return None


def head_commit(cwd: Path) -> str:
    return git(["rev-parse", "HEAD"], cwd).strip()


def last_commit_of(cwd: Path, path: str) -> str | None:
    out = git(["log", "-1", "--format=%H", "--", path], cwd).strip()
    return out or None


def commit(cwd: Path, paths: Sequence[str], message: str, *, update: Sequence[str] = ()) -> str:
    """Stage `paths`, and the changes to whichever of `update` git tracks, and commit.

    Returns the new commit, or the current one when there was nothing to commit.
    """
    tracked = git(["ls-files", "-z", "--", *update], cwd).split("\0") if update else []
    tracked = [p for p in tracked if p]
    if tracked:
        git(["add", "--update", "--", *tracked], cwd)
    present = [p for p in paths if (cwd / p).exists()]
    if present:
        git(["add", "--", *present], cwd)
    staged = git(["diff", "--cached", "--name-only"], cwd).strip()
    if staged:
        git(["commit", "--quiet", "--no-verify", "-m", message], cwd)
    return head_commit(cwd)


def dvc_remote(cwd: Path) -> str:
    """The default DVC remote as `'name' (url)`, for messages."""
    try:
        name = dvc(["remote", "default"], cwd).strip()
        if not name:
            return "(none is configured)"
        url = dvc(["config", f"remote.{name}.url"], cwd).strip()
    except CommandError:
        return "(the default remote)"
    return f"{name!r} ({url})"
