"""The Numba kernels that walk a tree ensemble's flat arrays (`predictor.Trees`).

A module of its own so that importing the predictor does not import Numba (about
0.4 s): the service answers with the NumPy walk from the first second and imports
this module in the background, where its kernels compile; the CLI imports it on
its first batch. `cache=True` lets batch scoring reuse compiled code across runs;
the service turns that disk cache off before compiling (`kernel_cache`).
"""

from __future__ import annotations

from numba import njit, prange

BLOCK_ROWS = 1024  # rows per parallel block: one small tree stays in L1 across a block


@njit(cache=True, nogil=True)
def walk(x, feature, threshold, right, missing_left, node):
    # Nodes are in depth-first order (see Trees.depth_first): the left child of
    # `node` is `node + 1`, the next bytes in memory, the right one is
    # `node + right[node]`; a leaf has feature -1.
    f = feature[node]
    while f >= 0:
        v = x[f]
        if v != v:
            node = node + 1 if missing_left[node] else node + right[node]
        elif v <= threshold[node]:
            node += 1
        else:
            node = node + right[node]
        f = feature[node]
    return node


@njit(cache=True, nogil=True)
def _sum_block(X, feature, threshold, right, value, missing_left, roots, out, lo, hi):
    # Tree by tree over a block of rows, so one small tree stays in L1 while it sees
    # every row of the block (row by row, a forest's nodes do not fit in cache: 2-3x
    # slower). Each row still adds its trees in order, starting from 0.0.
    for i in range(lo, hi):
        out[i] = 0.0
    for t in range(roots.shape[0]):
        root = roots[t]
        for i in range(lo, hi):
            out[i] += value[walk(X[i], feature, threshold, right, missing_left, root)]


@njit(cache=True, nogil=True)
def sum_trees(X, feature, threshold, right, value, missing_left, roots, out):
    n = X.shape[0]
    for lo in range(0, n, BLOCK_ROWS):
        hi = min(n, lo + BLOCK_ROWS)
        _sum_block(X, feature, threshold, right, value, missing_left, roots, out, lo, hi)


@njit(cache=True, nogil=True, parallel=True)
def sum_trees_parallel(X, feature, threshold, right, value, missing_left, roots, out):
    # The blocks of `sum_trees` in parallel threads: the same sums, bit for bit.
    n = X.shape[0]
    for b in prange((n + BLOCK_ROWS - 1) // BLOCK_ROWS):
        lo = b * BLOCK_ROWS
        hi = min(n, lo + BLOCK_ROWS)
        _sum_block(X, feature, threshold, right, value, missing_left, roots, out, lo, hi)


@njit(cache=True, nogil=True)
def sum_one(x, feature, threshold, right, value, missing_left, roots):
    # One row, no output array: the API's single-instance path.
    acc = 0.0
    for t in range(roots.shape[0]):
        acc += value[walk(x, feature, threshold, right, missing_left, roots[t])]
    return acc
