from treesurv.cli import app

app(prog_name="treesurv")
