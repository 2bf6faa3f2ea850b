"""Inference: the compiled predictor, the verified bundle and batch scoring (in
process or on Dask). Never imports training, scikit-learn or SciPy."""

import os

# Set before any module here imports Numba (`kernels`, `kernel_cache`; nothing else
# in treesurv does). Numba colours its error messages with colorama, even those it
# raises and catches while compiling a kernel (some 160 per kernel), and each one
# reassigns sys.stdout and sys.stderr for the whole process. The service compiles in
# a background thread, so that races whatever the main thread has put there.
os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")
