"""`treesurv`: mounts the command groups, in the order of the workflow."""

from __future__ import annotations

from typing import Annotated

import typer

from treesurv import __version__
from treesurv.cli import data, lifecycle, models, monitor, pipeline, scoring
from treesurv.cli.console import ErrorsToExitCodes, out, setup_logging

app = typer.Typer(
    cls=ErrorsToExitCodes,
    help="treesurv: the tree-seedling mortality model, from data to service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More logging.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    setup_logging(verbose)
    if version:
        out.print(__version__)
        raise typer.Exit()


# Help panels in the order of the workflow.
app.add_typer(data.app, name="data", rich_help_panel="1. Data")
for name, command in pipeline.COMMANDS:
    app.command(name, rich_help_panel="2. Pipeline (the dvc.yaml stages)")(command)
app.add_typer(models.app, name="model", rich_help_panel="3. Models")
app.add_typer(lifecycle.registry_app, name="registry", rich_help_panel="3. Models")
app.command("predict", rich_help_panel="4. Score and serve")(scoring.predict)
app.command("serve", rich_help_panel="4. Score and serve")(scoring.serve)
app.command("retrain", rich_help_panel="5. Continuous training")(lifecycle.retrain)
app.add_typer(monitor.app, name="monitor", rich_help_panel="6. Monitoring")
