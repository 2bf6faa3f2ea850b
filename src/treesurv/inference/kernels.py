"""The Numba kernels that walk a tree ensemble's flat arrays (`predictor.Trees`).

A module of its own so that importing the predictor does not import Numba (about
0.4 s): the service answers with the NumPy walk from the first second and imports
this module in the background, where its kernels compile; the CLI imports it on
its first batch. `cache=True` lets batch scoring reuse compiled code across runs;
the service turns that disk cache off before compiling (`kernel_cache`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

BLOCK_ROWS = 1024  # rows per parallel block: one small tree stays in L1 across a block
ROW_LANES = 32  # rows walked down one tree side by side
TREE_LANES = 8  # trees walked side by side for one row

# The walk is branch-free and several walks go down side by side. A tree walk's
# branches cannot be predicted (each goes left or right as the data says), and one
# walk's next node waits on its last; independent walks stepped together keep the
# CPU busy instead. Each step reads, for node `n` (nodes in depth-first order, see
# `Trees.depth_first`):
#   feature[n], threshold[n]   the split (feature 0 on a leaf: any valid column)
#   step[n]                    1, or 0 on a leaf, which so stays where it is
#   delta[n]                   right child - left child (0 on a leaf)
#   missing_right[n]           1 if a missing value (NaN) goes right
# and goes to n + step[n] + delta[n] * (x > threshold or x is NaN and missing_right),
# the child the branchy walk picks (x <= threshold, or NaN and missing left: left).
# Each tree is walked `depth[t]` steps, its deepest leaf's depth. A row adds its trees'
# leaf values one by one in tree order, starting from 0.0: the same sums, bit for bit,
# as one walk at a time and as the NumPy walk (`predictor._sum_numpy`).


@njit(cache=True, nogil=True)
def _sum_block(X, feature, threshold, step, delta, value, missing_right, roots, depth, out, lo, hi):
    # Tree by tree over a block of rows, so one small tree stays in L1 while it sees
    # every row of the block (row by row, a forest's nodes do not fit in cache).
    for i in range(lo, hi):
        out[i] = 0.0
    nodes = np.empty(ROW_LANES, np.int64)
    for t in range(roots.shape[0]):
        root = roots[t]
        for first in range(lo, hi, ROW_LANES):
            lanes = min(ROW_LANES, hi - first)
            for k in range(lanes):
                nodes[k] = root
            for _ in range(depth[t]):
                for k in range(lanes):
                    n = nodes[k]
                    v = X[first + k, feature[n]]
                    right = np.int64(v > threshold[n]) | (np.int64(v != v) & missing_right[n])
                    nodes[k] = n + step[n] + right * delta[n]
            for k in range(lanes):
                out[first + k] += value[nodes[k]]


@njit(cache=True, nogil=True)
def sum_trees(X, feature, threshold, step, delta, value, missing_right, roots, depth, out):
    n = X.shape[0]
    for lo in range(0, n, BLOCK_ROWS):
        hi = min(n, lo + BLOCK_ROWS)
        _sum_block(
            X, feature, threshold, step, delta, value, missing_right, roots, depth, out, lo, hi
        )


@njit(cache=True, nogil=True, parallel=True)
def sum_trees_parallel(X, feature, threshold, step, delta, value, missing_right, roots, depth, out):
    # The blocks of `sum_trees` in parallel threads: the same sums, bit for bit.
    n = X.shape[0]
    for b in prange((n + BLOCK_ROWS - 1) // BLOCK_ROWS):
        lo = b * BLOCK_ROWS
        hi = min(n, lo + BLOCK_ROWS)
        _sum_block(
            X, feature, threshold, step, delta, value, missing_right, roots, depth, out, lo, hi
        )


@njit(cache=True, nogil=True)
def sum_one(x, feature, threshold, step, delta, value, missing_right, roots, depth):
    # One row, no output array (the API's single-instance path): TREE_LANES trees at a
    # time, their leaves then added in tree order.
    acc = 0.0
    nodes = np.empty(TREE_LANES, np.int64)
    n_trees = roots.shape[0]
    for first in range(0, n_trees, TREE_LANES):
        lanes = min(TREE_LANES, n_trees - first)
        steps = 0
        for k in range(lanes):
            nodes[k] = roots[first + k]
            steps = max(steps, depth[first + k])
        for _ in range(steps):
            for k in range(lanes):
                n = nodes[k]
                v = x[feature[n]]
                right = np.int64(v > threshold[n]) | (np.int64(v != v) & missing_right[n])
                nodes[k] = n + step[n] + right * delta[n]
        for k in range(lanes):
            acc += value[nodes[k]]
    return acc
