"""Watching the served model: the prediction log, drift checks and their metrics.

`prediction_log.queue` records every prediction off the request path (serving,
stdlib and prometheus-client only) and hands the lines to `prediction_log.writer`
(a writer thread or process), both using `prediction_log.lines` (the line format,
the rotating files); `prediction_log.reader` reads the log back; `drift` compares it with
the training reference (NumPy + SciPy, run as a job, not inside the API);
`gauges` turns the latest drift report into Prometheus gauges for the API.
"""
