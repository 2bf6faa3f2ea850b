"""What every command shares: the consoles, logging, errors, the common options and
the printing of data problems."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from typer.core import TyperGroup

from treesurv.core.config import PARAMS_FILE, Params
from treesurv.core.errors import TreesurvError

if TYPE_CHECKING:
    from treesurv.core.validation import ValidationReport
    from treesurv.inference.batch import BatchResult

# Wide output when piped (CI logs, files), so report rows are never cut.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

ParamsOpt = Annotated[Path, typer.Option("--params", help="Parameters file (params.yaml).")]
ModelOpt = Annotated[Path, typer.Option("--model", help="Model bundle directory.")]
__all__ = ["PARAMS_FILE", "ModelOpt", "ParamsOpt", "err", "fail", "out"]


def setup_logging(verbose: bool = False) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(message)s",
            handlers=[RichHandler(console=err, show_path=False)],
        )


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


class ErrorsToExitCodes(TyperGroup):
    """Prints a `TreesurvError` (or a file the system refused: missing, full disk,
    no permission) as one line and exits with its code; any other exception is a
    bug and keeps its traceback."""

    def list_commands(self, ctx: Any) -> list[str]:
        # Typer lists commands before groups; the numbered help panels give the
        # order of the workflow instead (a stable sort keeps each panel's order).
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: getattr(self.commands[n], "rich_help_panel", "") or "")

    def invoke(self, ctx: Any) -> Any:  # Any: Typer types it with its vendored click
        try:
            return super().invoke(ctx)
        except TreesurvError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise fail(f"{where}{exc.strerror or exc}") from None


def load(path: Path) -> Params:
    """The typed parameters of params.yaml (a bad file is an `InputError`)."""
    return Params.load(path)


def print_report(report: ValidationReport, limit: int = 50) -> None:
    if report.issues:
        table = Table(title=f"{report.source}: problems", show_lines=False)
        for col in ("line", "column", "value", "rule"):
            table.add_column(col, overflow="fold")
        for issue in report.issues[:limit]:
            table.add_row(
                "-" if issue.line is None else str(issue.line),
                issue.column,
                issue.value,
                issue.rule,
            )
        err.print(table)
        if len(report.issues) > limit:
            err.print(f"… and {len(report.issues) - limit} more (see the JSON report)")
    for note in report.notes:
        err.print(f"note: {note}")
    style = "green" if report.ok else "red"
    err.print(f"[{style}]{report.summary()}[/]", highlight=False)


def print_issues(result: BatchResult) -> None:
    """The rows a batch could not score, as a validation report."""

    from treesurv.inference.batch import issue_report  # pandas: only when needed

    print_report(issue_report(result, "input"))
    if result.issue_count > len(result.issues):
        err.print(f"({result.issue_count} problems in all; the first {len(result.issues)} shown)")
