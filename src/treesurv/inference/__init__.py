"""Inference: the compiled predictor, the verified bundle and batch scoring (in
process or on Dask). Never imports training, scikit-learn or SciPy."""
