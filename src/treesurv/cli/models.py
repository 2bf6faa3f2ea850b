"""`treesurv model`: verify a bundle, print its manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from treesurv.cli.console import out
from treesurv.core.config import DEFAULT_PATHS

app = typer.Typer(help="Inspect and verify model bundles.", no_args_is_help=True)
BundleArg = Annotated[Path, typer.Argument(help="Model bundle directory.")]


@app.command("verify")
def verify(model: BundleArg = DEFAULT_PATHS.bundle) -> None:
    """Check every file of a bundle against its manifest."""
    from treesurv.inference.bundle import load_verified

    bundle, _ = load_verified(model)
    out.print(f"{bundle.name} {bundle.version}: {len(bundle.files)} files verified")


@app.command("info")
def info(model: BundleArg = DEFAULT_PATHS.bundle) -> None:
    """Print a bundle's manifest (after verifying it)."""
    from treesurv.inference.bundle import read_bundle

    bundle = read_bundle(model)
    out.print_json(json.dumps({k: v for k, v in bundle.manifest.items() if k != "params"}))
