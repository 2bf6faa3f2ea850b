from treesurv.cli.main import app

app(prog_name="treesurv")
