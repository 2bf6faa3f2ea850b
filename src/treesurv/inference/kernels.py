"""The Numba kernels that walk a tree ensemble's flat arrays (`predictor.Trees`).

A module of its own so that importing the predictor does not import Numba (about
0.4 s): the service answers with the NumPy walk from the first second and imports
this module in the background, where its kernels compile; the CLI imports it on
its first batch. `cache=True` lets batch scoring reuse compiled code across runs;
the service turns that disk cache off before compiling (`kernel_cache`).

The batch walks have no data-dependent branch. A walk down a tree takes the tree's
depth in steps (a leaf is its own left and right child, so a walk that reached one
stays there), each step choosing the child with arithmetic instead of an `if`, and
the walks of six rows are interleaved. Which way a row goes is as good as random to
the CPU's branch predictor, so a batch walk with branches spends most of its time
undoing mispredictions; six independent branch-free walks keep the CPU busy
instead: about 4-5x the rows per second of a branching walk on the study's forest,
the same sums bit for bit. What bounds it is the latency of each walk's chain of
dependent loads (node, then its feature's value, then the child), not their number:
a complete-tree layout with children found by arithmetic (three loads a step instead
of six) measured about 1.4x slower, and choosing the child with a mask instead of a
multiply about 7% slower.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

BLOCK_ROWS = 1024  # rows per parallel block: one small tree stays in L1 across a block


@njit(cache=True, nogil=True)
def walk(x, base, feature, threshold, left, right, missing_left, node, depth):
    # One branch-free walk from `node`, `depth` steps, reading the row that starts at
    # `x[base]`. Unsigned indices: no negative-index wrap-around code on the path.
    for _ in range(depth):
        v = x[base + np.uint64(feature[node])]
        go_left = np.uint32((v <= threshold[node]) | ((v != v) & missing_left[node]))
        node = right[node] + go_left * (left[node] - right[node])
    return node


@njit(cache=True, nogil=True)
def _sum_block(X, feature, threshold, left, right, value, missing_left, roots, depth, out, lo, hi):
    # Tree by tree over a block of rows, so one small tree stays in L1 while it sees
    # every row of the block (row by row, a forest's nodes do not fit in cache: 2-3x
    # slower). Each row still adds its trees in order, starting from 0.0.
    width = X.shape[1]
    x = X.ravel()
    for i in range(lo, hi):
        out[i] = 0.0
    for t in range(roots.shape[0]):
        root, d = roots[t], depth[t]
        i = lo
        while i + 6 <= hi:
            # Six rows' walks written out side by side: independent chains of loads
            # the CPU overlaps (a loop over an array of walks would go through memory).
            # On the study's forest 5 to 8 walks measure within 3% of each other, and
            # 4 about 15% slower.
            n0 = n1 = n2 = n3 = n4 = n5 = root
            b0 = np.uint64(i * width)
            b1 = b0 + np.uint64(width)
            b2 = b1 + np.uint64(width)
            b3 = b2 + np.uint64(width)
            b4 = b3 + np.uint64(width)
            b5 = b4 + np.uint64(width)
            for _ in range(d):
                v0 = x[b0 + np.uint64(feature[n0])]
                v1 = x[b1 + np.uint64(feature[n1])]
                v2 = x[b2 + np.uint64(feature[n2])]
                v3 = x[b3 + np.uint64(feature[n3])]
                v4 = x[b4 + np.uint64(feature[n4])]
                v5 = x[b5 + np.uint64(feature[n5])]
                g0 = np.uint32((v0 <= threshold[n0]) | ((v0 != v0) & missing_left[n0]))
                g1 = np.uint32((v1 <= threshold[n1]) | ((v1 != v1) & missing_left[n1]))
                g2 = np.uint32((v2 <= threshold[n2]) | ((v2 != v2) & missing_left[n2]))
                g3 = np.uint32((v3 <= threshold[n3]) | ((v3 != v3) & missing_left[n3]))
                g4 = np.uint32((v4 <= threshold[n4]) | ((v4 != v4) & missing_left[n4]))
                g5 = np.uint32((v5 <= threshold[n5]) | ((v5 != v5) & missing_left[n5]))
                n0 = right[n0] + g0 * (left[n0] - right[n0])
                n1 = right[n1] + g1 * (left[n1] - right[n1])
                n2 = right[n2] + g2 * (left[n2] - right[n2])
                n3 = right[n3] + g3 * (left[n3] - right[n3])
                n4 = right[n4] + g4 * (left[n4] - right[n4])
                n5 = right[n5] + g5 * (left[n5] - right[n5])
            out[i] += value[n0]
            out[i + 1] += value[n1]
            out[i + 2] += value[n2]
            out[i + 3] += value[n3]
            out[i + 4] += value[n4]
            out[i + 5] += value[n5]
            i += 6
        while i < hi:
            node = walk(
                x, np.uint64(i * width), feature, threshold, left, right, missing_left, root, d
            )
            out[i] += value[node]
            i += 1


@njit(cache=True, nogil=True)
def sum_trees(X, feature, threshold, left, right, value, missing_left, roots, depth, out):
    n = X.shape[0]
    for lo in range(0, n, BLOCK_ROWS):
        hi = min(n, lo + BLOCK_ROWS)
        _sum_block(
            X, feature, threshold, left, right, value, missing_left, roots, depth, out, lo, hi
        )


@njit(cache=True, nogil=True, parallel=True)
def sum_trees_parallel(X, feature, threshold, left, right, value, missing_left, roots, depth, out):
    # The blocks of `sum_trees` in parallel threads: the same sums, bit for bit.
    n = X.shape[0]
    for b in prange((n + BLOCK_ROWS - 1) // BLOCK_ROWS):
        lo = b * BLOCK_ROWS
        hi = min(n, lo + BLOCK_ROWS)
        _sum_block(
            X, feature, threshold, left, right, value, missing_left, roots, depth, out, lo, hi
        )


@njit(cache=True, nogil=True)
def sum_one(x, feature, threshold, offset, value, missing_left, roots):
    # One row, no output array: the API's single-instance path. This one walk does
    # branch: one row's walk reads memory that a busy server has mostly evicted
    # between requests, so it is bound by cache misses rather than mispredictions,
    # and it reads fewer bytes per node: no child arrays, the right child `offset`
    # nodes on (0 on a leaf), the left one next to its parent.
    acc = 0.0
    for t in range(roots.shape[0]):
        node = roots[t]
        step = offset[node]
        while step != 0:
            v = x[feature[node]]
            if v != v:
                node = node + 1 if missing_left[node] else node + step
            elif v <= threshold[node]:
                node += 1
            else:
                node += step
            step = offset[node]
        acc += value[node]
    return acc
