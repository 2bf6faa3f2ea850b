"""Keep Numba's on-disk cache out of the service.

The predictor's kernels are declared `cache=True`, so batch scoring and the CLI
reuse compiled code across runs. Numba stores that cache as pickles (index and
compiled overloads under `NUMBA_CACHE_DIR` or `__pycache__`) and loads it with
`pickle.load`: anyone able to write there could run code in the service. The
service therefore compiles its kernels in memory at startup (a few seconds, once
per worker; later model reloads reuse them) and never reads or writes that cache.
"""

from __future__ import annotations

import sys

from numba.core.caching import NullCache
from numba.core.registry import CPUDispatcher


def disable_disk_cache(prefix: str = "treesurv") -> int:
    """Give every Numba kernel of the loaded `prefix` modules a cache that neither
    loads nor saves; returns how many kernels were changed."""
    changed = 0
    # Copies in one C call: a thread compiling kernels may import modules meanwhile.
    for name, module in sys.modules.copy().items():
        if module is None or not (name == prefix or name.startswith(prefix + ".")):
            continue
        for value in vars(module).copy().values():
            cache = getattr(value, "_cache", None)
            if isinstance(value, CPUDispatcher) and not isinstance(cache, NullCache):
                # Dispatcher.__init__ sets this very object when cache=False.
                setattr(value, "_cache", NullCache())  # noqa: B010
                changed += 1
    return changed
