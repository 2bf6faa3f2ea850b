"""The `treesurv` command (Typer + Rich): `main` mounts one module per command group,
each a thin layer over the package. Heavy imports happen inside the commands, so
`treesurv --help` stays fast."""
