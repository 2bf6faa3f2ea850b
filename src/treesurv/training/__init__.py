"""Training: candidates, search, cross-validation, calibration, survival models,
evaluation, compilation to the bundle and the DVC stage functions."""
