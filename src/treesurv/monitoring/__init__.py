"""Watching the served model: the prediction log, drift checks and their metrics.

`predlog` records every prediction off the request path (serving, stdlib and
prometheus-client only) and hands the lines to `logwriter` (a writer thread or
process), both using `logformat` (the line format, the rotating files);
`logfile` reads the log back; `drift` compares it with
the training reference (NumPy + SciPy, run as a job, not inside the API);
`gauges` turns the latest drift report into Prometheus gauges for the API.
"""
