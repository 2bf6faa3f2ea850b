"""The fast predictor: a compiled form of the fitted model, with no scikit-learn.

The training pipeline compiles the fitted scikit-learn model (`treesurv.training.compiler`)
into a small JSON spec plus flat NumPy arrays (`predictor.json`, `predictor.npz`,
loaded with `allow_pickle=False`); survival models likewise (`survival.json`,
`survival.npz`: a risk score plus the baseline survival curve). Tree ensembles are
walked by Numba-compiled loops that do exactly the comparisons scikit-learn does
(float32 inputs for its decision trees, float64 for histogram boosting), so
probabilities match the sklearn pipeline to rounding — a test checks every row of
the real data.

One instance costs a few microseconds; large batches run in parallel threads.
"""

from __future__ import annotations

import functools
import io
import json
import math
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeAlias

import numpy as np

from treesurv.core.encoding import Columns, EncoderParams, RowEncoder, encode
from treesurv.core.errors import InputError, ModelError

SPEC_FILE = "predictor.json"
ARRAYS_FILE = "predictor.npz"
FORMAT = "treesurv-compiled/1"
SURVIVAL_FORMAT = "treesurv-survival/1"
PARALLEL_MIN_ROWS = 2048
# Compact node arrays: 32-bit indices (and float32 thresholds for trees that see
# float32 inputs) halve the bytes a walk touches; single rows run cache-cold in a
# busy server, where that matters more than the arithmetic.
INDEX = np.int32
KERNEL_INDEX = np.uint32
INDEX_MIN, INDEX_MAX = -(2**31), 2**31 - 1
# Feature numbers and the single-row walk's child offsets: the narrowest that fits.
UNSIGNED: tuple[type[np.integer[Any]], ...] = (np.uint8, np.uint16, KERNEL_INDEX)
SIGNED: tuple[type[np.integer[Any]], ...] = (np.int8, np.int16, INDEX)
TREE_FIELDS = ("feature", "threshold", "left", "right", "value", "missing_left", "roots")


class PredictorError(ModelError):
    """The compiled model is malformed or does not fit the input."""


# ------------------------------------------------------------------ the walks


class Kernels:
    """Which walk `Trees` uses. The Numba kernels are the fast path; a service that
    has not compiled them yet (they compile in the background once it is ready)
    walks the same trees with NumPy, giving the same sums bit for bit: each row
    adds its trees' leaf values in tree order, like `kernels.sum_trees`."""

    numba = True  # walk with the Numba kernels (else with NumPy)
    compiled = False  # a served model's kernels have been compiled in this process


KERNELS = Kernels()


@functools.cache
def numba_kernels() -> ModuleType:
    """The Numba kernels' module, imported by the first walk that needs it (importing
    Numba takes about 0.4 s, which a starting service does not wait for); cached, as a
    function-level import costs microseconds on the single-row path."""
    from treesurv.inference import kernels

    return kernels


NUMPY_WALK_CELLS = 1 << 20  # rows x trees walked at once: bounds the walk's index arrays


def _sum_numpy(X, feature, threshold, left, right, value, missing_left, roots, depth):
    # Every (row, tree) pair walks down one level per step, all trees at once, so a
    # forest of 300 trees costs about its depth in NumPy calls rather than 300 times
    # that. The leaf values are then added in tree order (`np.add.accumulate` is a
    # left fold), exactly as the kernels add them.
    n, n_trees = X.shape[0], roots.shape[0]
    out = np.zeros(n)
    if n_trees == 0:
        return out
    step = max(1, NUMPY_WALK_CELLS // n_trees)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        rows = np.repeat(np.arange(lo, hi), n_trees)
        node = np.tile(roots.astype(np.int64), hi - lo)
        todo = np.flatnonzero(left[node] != node)
        while todo.size:
            at = node[todo]
            v = X[rows[todo], feature[at]]
            go_left = np.where(v != v, missing_left[at], v <= threshold[at])
            at = np.where(go_left, left[at], right[at]).astype(np.int64)
            node[todo] = at
            todo = todo[left[at] != at]
        leaves = value[node].astype(np.float64).reshape(hi - lo, n_trees)
        out[lo:hi] = np.add.accumulate(leaves, axis=1)[:, -1]
    return out


def _expit_one(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


def _expit(z: np.ndarray) -> np.ndarray:
    # Same formula as scipy.special.expit, without importing scipy at serving time.
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


# ------------------------------------------------------------------ compiled nodes


@dataclass(frozen=True)
class Trees:
    """A tree ensemble as flat arrays: as stored, leaves have left == right == -1;
    laid out for the walks (`depth_first`), a leaf is its own child."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    missing_left: np.ndarray
    roots: np.ndarray
    float32: bool
    depth: np.ndarray | None = None  # steps of each tree's walk, once laid out
    offset: np.ndarray | None = None  # right child - node (0: leaf), for one row's walk

    def check(self, n_features: int, name: str) -> None:
        n = len(self.feature)
        sizes = {len(getattr(self, f)) for f in TREE_FIELDS if f != "roots"}
        if sizes != {n} or n == 0 or len(self.roots) == 0:
            raise PredictorError(f"{name}: tree arrays have inconsistent lengths")
        inner = self.left != -1
        for child in (self.left[inner], self.right[inner], self.roots):
            if child.size and (child.min() < 0 or child.max() >= n):
                raise PredictorError(f"{name}: a child index points outside the tree")
        if inner.any() and (
            self.feature[inner].min() < 0 or self.feature[inner].max() >= n_features
        ):
            raise PredictorError(f"{name}: a split uses a feature the encoder does not produce")
        # Children always come after their parent, so every walk ends (no cycles).
        idx = np.flatnonzero(inner)
        if np.any(self.left[inner] <= idx) or np.any(self.right[inner] <= idx):
            raise PredictorError(f"{name}: tree nodes are not in topological order")

    def depth_first(self) -> Trees:
        """The same trees laid out for the walks: nodes in depth-first order, so that
        a left child sits right after its parent (scikit-learn's own trees already
        are), leaves their own children, and each tree's depth. Call after `check`."""
        n = len(self.feature)
        inner = self.left != -1
        parents = np.flatnonzero(inner)
        if np.all(self.left[inner] == parents + 1):
            order = None
        else:
            visited: list[int] = []
            left, right = self.left.tolist(), self.right.tolist()
            for root in self.roots.tolist():
                stack = [root]
                while stack:
                    node = stack.pop()
                    visited.append(node)
                    if left[node] != -1:
                        stack += (right[node], left[node])
                    if len(visited) > n:
                        raise PredictorError("a tree node has two parents")
            order = np.asarray(visited, dtype=np.intp)
        if order is None:
            feature, threshold, value = self.feature, self.threshold, self.value
            left, right, missing_left, roots = self.left, self.right, self.missing_left, self.roots
        else:
            position = np.full(n, -1, dtype=np.intp)
            position[order] = np.arange(len(order))
            old_left, old_right = self.left[order], self.right[order]
            leaf = old_left == -1
            left = np.where(leaf, -1, position[np.maximum(old_left, 0)]).astype(INDEX)
            right = np.where(leaf, -1, position[np.maximum(old_right, 0)]).astype(INDEX)
            feature, threshold = self.feature[order], self.threshold[order]
            value, missing_left = self.value[order], self.missing_left[order]
            roots = position[self.roots].astype(INDEX)
        # The kernels' form: a leaf is its own left and right child (a walk that
        # reached it stays there) with feature 0, and every tree has its depth, the
        # number of steps of a branch-free walk. Unsigned indices, and the narrowest
        # feature type: fewer bytes per node, more of the forest in cache.
        n = len(left)
        leaf = left == -1
        here = np.arange(n, dtype=np.int64)
        offset = np.where(leaf, 0, right.astype(np.int64) - here)  # the single-row walk's
        left = np.where(leaf, here, left)
        right = np.where(leaf, here, right)
        return Trees(
            feature=np.where(leaf, 0, feature).astype(_narrowest(feature, UNSIGNED)),
            threshold=np.ascontiguousarray(threshold),
            left=left.astype(KERNEL_INDEX),
            right=right.astype(KERNEL_INDEX),
            value=np.ascontiguousarray(value),
            missing_left=np.ascontiguousarray(missing_left),
            roots=np.ascontiguousarray(roots, dtype=KERNEL_INDEX),
            float32=self.float32,
            depth=_tree_depths(left, right, roots),
            offset=offset.astype(_narrowest(offset, SIGNED)),
        )

    @property
    def leaves(self) -> np.ndarray:
        """Which nodes are leaves, in the kernels' form (`depth_first`)."""
        return self.left == np.arange(len(self.left))

    @property
    def _arrays(self) -> tuple[np.ndarray, ...]:
        """What the kernels read, in their argument order."""
        if self.depth is None:
            raise PredictorError("trees must be laid out (depth_first) before a walk")
        return (
            self.feature,
            self.threshold,
            self.left,
            self.right,
            self.value,
            self.missing_left,
            self.roots,
            self.depth,
        )

    def sum(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32 if self.float32 else np.float64)
        if not KERNELS.numba:
            return _sum_numpy(X, *self._arrays)
        kernels = numba_kernels()
        out = np.empty(X.shape[0])
        parallel = X.shape[0] >= PARALLEL_MIN_ROWS
        kernel: Any = kernels.sum_trees_parallel if parallel else kernels.sum_trees
        kernel(X, *self._arrays, out)
        return out

    def sum_one(self, x: np.ndarray, x32: np.ndarray) -> float:
        """`sum` for one row; `x32` is the same row as float32 (what sklearn's trees see)."""
        row = x32 if self.float32 else x
        if not KERNELS.numba:
            return float(_sum_numpy(row.reshape(1, -1), *self._arrays)[0])
        one = (self.feature, self.threshold, self.offset, self.value, self.missing_left)
        return float(numba_kernels().sum_one(row, *one, self.roots))

    def compile_kernels(self, width: int) -> None:
        """Compile the Numba kernels for these arrays' types (whichever walk is in use)."""
        kernels = numba_kernels()
        dtype = np.float32 if self.float32 else np.float64
        batch: tuple[tuple[int, Any], ...] = (
            (1, kernels.sum_trees),
            (PARALLEL_MIN_ROWS, kernels.sum_trees_parallel),
        )
        for n, kernel in batch:
            kernel(np.zeros((n, width), dtype), *self._arrays, np.empty(n))
        one = (self.feature, self.threshold, self.offset, self.value, self.missing_left)
        kernels.sum_one(np.zeros(width, dtype), *one, self.roots)


class Node:
    """A compiled model node: gives P(death) and, where defined, a raw score.

    `proba_one`/`raw_one` score a single row with scalar arithmetic: the same
    formulas as the vectorised methods, without their per-call array overhead.
    """

    def proba(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def raw(self, X: np.ndarray) -> np.ndarray:
        raise PredictorError(f"{type(self).__name__} has no decision function")

    def proba_one(self, x: np.ndarray, x32: np.ndarray) -> float:
        return float(self.proba(x.reshape(1, -1))[0])

    def raw_one(self, x: np.ndarray, x32: np.ndarray) -> float:
        return float(self.raw(x.reshape(1, -1))[0])


@dataclass(frozen=True)
class Forest(Node):
    trees: Trees

    def proba(self, X: np.ndarray) -> np.ndarray:
        return self.trees.sum(X) / len(self.trees.roots)

    def proba_one(self, x: np.ndarray, x32: np.ndarray) -> float:
        return self.trees.sum_one(x, x32) / len(self.trees.roots)


@dataclass(frozen=True)
class Boosting(Node):
    trees: Trees
    baseline: float

    def raw(self, X: np.ndarray) -> np.ndarray:
        return self.baseline + self.trees.sum(X)

    def proba(self, X: np.ndarray) -> np.ndarray:
        return _expit(self.raw(X))

    def raw_one(self, x: np.ndarray, x32: np.ndarray) -> float:
        return self.baseline + self.trees.sum_one(x, x32)

    def proba_one(self, x: np.ndarray, x32: np.ndarray) -> float:
        return _expit_one(self.raw_one(x, x32))


@dataclass(frozen=True)
class Linear(Node):
    coef: np.ndarray
    intercept: float
    center: np.ndarray | None
    scale: np.ndarray | None

    def raw(self, X: np.ndarray) -> np.ndarray:
        if self.center is not None and self.scale is not None:
            X = (X - self.center) / self.scale
        return X @ self.coef + self.intercept

    def proba(self, X: np.ndarray) -> np.ndarray:
        return _expit(self.raw(X))


@dataclass(frozen=True)
class Voting(Node):
    members: tuple[Node, ...]
    weights: np.ndarray

    def proba(self, X: np.ndarray) -> np.ndarray:
        stacked = np.stack([m.proba(X) for m in self.members])
        return np.average(stacked, axis=0, weights=self.weights)

    def __post_init__(self) -> None:
        pairs = tuple(zip(self.members, self.weights.tolist(), strict=True))
        object.__setattr__(self, "_pairs", pairs)
        object.__setattr__(self, "_total", float(self.weights.sum()))

    def proba_one(self, x: np.ndarray, x32: np.ndarray) -> float:
        total = 0.0
        for member, weight in self._pairs:  # type: ignore[attr-defined]
            total += weight * member.proba_one(x, x32)
        return total / self._total  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Calibrated(Node):
    base: Node
    response: str  # "raw" (decision function) or "proba"
    method: str
    a: float = 0.0
    b: float = 0.0
    x: np.ndarray | None = None
    y: np.ndarray | None = None

    def proba(self, X: np.ndarray) -> np.ndarray:
        score = self.base.raw(X) if self.response == "raw" else self.base.proba(X)
        if self.method == "sigmoid":
            p = _expit(-(self.a * score + self.b))
        else:
            assert self.x is not None and self.y is not None
            p = np.interp(score, self.x, self.y)
        p[(p > 1.0) & (p <= 1.0 + 1e-5)] = 1.0
        return p

    def proba_one(self, x: np.ndarray, x32: np.ndarray) -> float:
        base = self.base
        score = base.raw_one(x, x32) if self.response == "raw" else base.proba_one(x, x32)
        if self.method == "sigmoid":
            p = _expit_one(-(self.a * score + self.b))
        else:
            assert self.x is not None and self.y is not None
            p = float(np.interp(score, self.x, self.y))
        return 1.0 if 1.0 < p <= 1.0 + 1e-5 else p


def trees_of(node: Node) -> Iterator[Trees]:
    """Every tree ensemble in a model graph."""
    if isinstance(node, (Forest, Boosting)):
        yield node.trees
    elif isinstance(node, Voting):
        for member in node.members:
            yield from trees_of(member)
    elif isinstance(node, Calibrated):
        yield from trees_of(node.base)


# ------------------------------------------------------------------ (de)serialise


def _trees(spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Trees:
    key = spec["trees"]
    try:
        parts = {f: arrays[f"{key}_{f}"] for f in TREE_FIELDS}
    except KeyError as exc:
        raise PredictorError(f"missing array {exc.args[0]}") from None
    float32 = bool(spec["float32"])
    index = {}
    for f in ("feature", "left", "right", "roots"):
        a = np.asarray(parts[f])
        if a.dtype.kind not in "iu" or (a.size and (a.min() < INDEX_MIN or a.max() > INDEX_MAX)):
            raise PredictorError(f"{key}_{f}: node indices must be 32-bit integers")
        index[f] = np.ascontiguousarray(a, dtype=INDEX)
    threshold = np.ascontiguousarray(parts["threshold"], dtype=np.float64)
    return Trees(
        feature=index["feature"],
        threshold=_float32_thresholds(threshold) if float32 else threshold,
        left=index["left"],
        right=index["right"],
        value=np.ascontiguousarray(parts["value"], dtype=np.float64),
        missing_left=np.ascontiguousarray(parts["missing_left"], dtype=np.bool_),
        roots=index["roots"],
        float32=float32,
    )


def _narrowest(values: np.ndarray, kinds: tuple[type[np.integer[Any]], ...]) -> type[Any]:
    """The first of `kinds` that holds every value, else the last one."""
    low, high = int(np.min(values, initial=0)), int(np.max(values, initial=0))
    for kind in kinds[:-1]:
        info = np.iinfo(kind)
        if info.min <= low and high <= info.max:
            return kind
    return kinds[-1]


def _tree_depths(left: np.ndarray, right: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """Each tree's depth (steps from its root to its deepest leaf), for trees whose
    leaves are their own children: all trees walked down together, a level at a time."""
    depth = np.zeros(len(roots), dtype=np.int64)
    frontier, owner = roots.astype(np.int64), np.arange(len(roots))
    seen, level = 0, 0
    while frontier.size:
        seen += frontier.size
        if seen > len(left):  # more visits than nodes: some node has two parents
            raise PredictorError("a tree node has two parents")
        inner = left[frontier] != frontier
        frontier, owner = frontier[inner], owner[inner]
        level += 1
        depth[owner] = level
        frontier = np.concatenate([left[frontier], right[frontier]]).astype(np.int64)
        owner = np.concatenate([owner, owner])
    return depth.astype(np.int32)


def _float32_thresholds(threshold: np.ndarray) -> np.ndarray:
    """float64 thresholds of trees that read float32 inputs, as float32 rounded down.

    For a float32 value v, `v <= t` holds exactly when `v <= t32` with t32 the
    largest float32 not above t; half the bytes keep more of the forest in cache.
    """
    t32 = threshold.astype(np.float32)
    above = t32.astype(np.float64) > threshold
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def build_node(spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray], n_features: int) -> Node:
    kind = spec.get("kind")
    if kind == "forest":
        trees = _trees(spec, arrays)
        trees.check(n_features, spec["trees"])
        return Forest(trees.depth_first())
    if kind == "boosting":
        trees = _trees(spec, arrays)
        trees.check(n_features, spec["trees"])
        return Boosting(trees.depth_first(), float(spec["baseline"]))
    if kind == "linear":
        coef = np.asarray(arrays[spec["coef"]], dtype=float)
        if coef.shape != (n_features,):
            raise PredictorError("linear model: coefficient count does not match the encoder")
        center = arrays[spec["center"]] if spec.get("center") else None
        scale = arrays[spec["scale"]] if spec.get("scale") else None
        return Linear(coef, float(spec["intercept"]), center, scale)
    if kind == "voting":
        members = tuple(build_node(m, arrays, n_features) for m in spec["members"])
        weights = np.asarray(spec["weights"], dtype=float)
        if len(weights) != len(members) or not members:
            raise PredictorError("voting: weights do not match members")
        return Voting(members, weights)
    if kind == "calibrated":
        base = build_node(spec["base"], arrays, n_features)
        method = spec["method"]
        if method == "sigmoid":
            return Calibrated(
                base, spec["response"], method, a=float(spec["a"]), b=float(spec["b"])
            )
        if method == "isotonic":
            return Calibrated(
                base,
                spec["response"],
                method,
                x=np.asarray(arrays[spec["x"]], dtype=float),
                y=np.asarray(arrays[spec["y"]], dtype=float),
            )
        raise PredictorError(f"unknown calibration method {method!r}")
    raise PredictorError(f"unknown model node kind {kind!r}")


@dataclass(frozen=True)
class CompiledModel:
    """Encoder + compiled model: everything needed to score, nothing to unpickle."""

    encoder: EncoderParams
    model: Node
    spec: dict[str, Any]

    @property
    def features(self) -> tuple[str, ...]:
        return self.encoder.features

    def proba_columns(self, columns: Columns) -> np.ndarray:
        return self.model.proba(encode(self.encoder, columns))


def dumps(
    spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray], stem: str = "predictor"
) -> dict[str, bytes]:
    """The two bundle files of a compiled model: `<stem>.json` and `<stem>.npz`."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
    return {
        f"{stem}.json": (json.dumps(spec, indent=2, sort_keys=True) + "\n").encode(),
        f"{stem}.npz": buf.getvalue(),
    }


def _parse(
    spec_bytes: bytes, arrays_bytes: bytes, fmt: str
) -> tuple[dict[str, Any], dict[str, np.ndarray], EncoderParams]:
    """Spec, arrays and encoder of a compiled file pair (no pickle: NumPy refuses
    object arrays here)."""
    try:
        spec = json.loads(spec_bytes)
        with np.load(io.BytesIO(arrays_bytes), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise PredictorError(f"cannot read the compiled model: {exc}") from None
    if not isinstance(spec, dict) or spec.get("format") != fmt:
        raise PredictorError(
            f"unsupported compiled model format {_format(spec)!r} (expected {fmt!r})"
        )
    try:
        encoder = EncoderParams.from_json(spec["encoder"], arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise PredictorError(f"malformed compiled model: {exc!r}") from None
    return spec, arrays, encoder


def loads(spec_bytes: bytes, arrays_bytes: bytes) -> CompiledModel:
    """Parse a compiled classifier."""
    spec, arrays, encoder = _parse(spec_bytes, arrays_bytes, FORMAT)
    try:
        model = build_node(spec["model"], arrays, len(encoder.column_names()))
    except (KeyError, TypeError, ValueError) as exc:
        raise PredictorError(f"malformed compiled model: {exc!r}") from None
    return CompiledModel(encoder, model, spec)


def _format(spec: Any) -> Any:
    return spec.get("format") if isinstance(spec, dict) else None


def encode_rows(row_encoder: RowEncoder, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Dict instances (the API's) -> the model matrix, one preallocated row each."""
    X = np.zeros((len(rows), row_encoder.width))
    for i, row in enumerate(rows):
        row_encoder.encode(row, X[i])
    return X


class FastPredictor:
    """Scores dict instances (the API) or columns (batch files) with one model."""

    def __init__(self, compiled: CompiledModel, compile_now: bool = True) -> None:
        self.compiled = compiled
        self.row_encoder = RowEncoder(compiled.encoder)
        self._width = self.row_encoder.width
        if compile_now:
            self.compile_kernels()
        self.warm_up()

    def compile_kernels(self) -> None:
        """Compile the Numba kernels now rather than on the first request."""
        for trees in trees_of(self.compiled.model):
            trees.compile_kernels(self._width)

    def warm_up(self) -> None:
        """Score a few rows through every path (a model that cannot run fails here)."""
        x = np.zeros((1, self._width))
        self.compiled.model.proba(x)
        self.compiled.model.proba_one(x[0], x[0].astype(np.float32))

    def predict_one(self, row: Mapping[str, Any]) -> float:
        x = self.row_encoder.encode(row)
        return self.compiled.model.proba_one(x, x.astype(np.float32))

    def predict_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self.compiled.model.proba(encode_rows(self.row_encoder, rows))


# ------------------------------------------------------------------ survival


class HorizonError(InputError, ValueError):
    """Days asked for are not usable: not numbers, negative, or beyond the follow-up."""


@dataclass(frozen=True)
class CompiledSurvival:
    """A Cox-type survival model: S(t|x) = S0(t) ** exp(risk(x)).

    `days` are the distinct days of the training rows (deaths and censorings) and
    `baseline_survival` is S0 there (Breslow), a step function: S0 keeps its value
    until the next day. Before the first day nobody has died, so S = 1; beyond the
    last day the data says nothing, so such days are refused.
    """

    encoder: EncoderParams
    risk: Node
    days: np.ndarray
    baseline_survival: np.ndarray
    spec: dict[str, Any]

    @property
    def features(self) -> tuple[str, ...]:
        return self.encoder.features

    @property
    def max_days(self) -> float:
        """The longest follow-up in the training data: predictions stop there."""
        return float(self.days[-1])

    def check_days(self, days: Sequence[float] | np.ndarray | float) -> np.ndarray:
        """Days as a float array, or HorizonError naming the first bad one."""
        try:
            d = np.atleast_1d(np.asarray(days, dtype=float))
        except (TypeError, ValueError):
            raise HorizonError("days must be numbers") from None
        if d.ndim != 1 or d.size == 0:
            raise HorizonError("give at least one day, as a flat list of numbers")
        bad = ~np.isfinite(d)
        if bad.any():
            raise HorizonError(f"day {d[bad][0]!r} is not a finite number")
        if (d < 0).any():
            raise HorizonError(f"day {d[d < 0][0]:g} is negative")
        if (d > self.max_days).any():
            raise HorizonError(
                f"day {d[d > self.max_days][0]:g} is beyond the study's follow-up "
                f"({self.max_days:g} days); survival is only known up to then"
            )
        return d

    def risk_matrix(self, X: np.ndarray) -> np.ndarray:
        """The log hazard ratio of each row (what the concordance index ranks)."""
        return self.risk.raw(X)

    def survival_matrix(self, X: np.ndarray, days: Sequence[float] | np.ndarray) -> np.ndarray:
        """S(day | x), shape (rows, days); non-increasing along the days."""
        d = self.check_days(days)
        idx = np.searchsorted(self.days, d, side="right") - 1
        hazard_ratio = np.exp(self.risk_matrix(X))
        # Same operation as scikit-survival (S0 ** exp(risk)), so values match bit for bit.
        surv = np.power(self.baseline_survival[np.maximum(idx, 0)][None, :], hazard_ratio[:, None])
        surv[:, idx < 0] = 1.0
        return surv

    def survival_columns(self, columns: Columns, days: Sequence[float] | np.ndarray) -> np.ndarray:
        return self.survival_matrix(encode(self.encoder, columns), days)

    def median_matrix(self, X: np.ndarray) -> np.ndarray:
        """First day with S <= 0.5; NaN when more than half survive the whole follow-up."""
        surv = self.survival_matrix(X, self.days)
        below = surv <= 0.5
        first = np.argmax(below, axis=1)
        return np.where(below.any(axis=1), self.days[first], np.nan)


def loads_survival(spec_bytes: bytes, arrays_bytes: bytes) -> CompiledSurvival:
    """Parse a compiled survival model, checking its baseline is a survival curve."""
    spec, arrays, encoder = _parse(spec_bytes, arrays_bytes, SURVIVAL_FORMAT)
    try:
        risk = build_node(spec["risk"], arrays, len(encoder.column_names()))
        days = np.ascontiguousarray(arrays[spec["baseline"]["days"]], dtype=np.float64)
        surv = np.ascontiguousarray(arrays[spec["baseline"]["survival"]], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise PredictorError(f"malformed survival model: {exc!r}") from None
    if days.ndim != 1 or days.shape != surv.shape or days.size == 0:
        raise PredictorError("survival model: baseline days and survival differ in shape")
    if not np.all(np.isfinite(days)) or days[0] < 0 or np.any(np.diff(days) <= 0):
        raise PredictorError("survival model: baseline days must be increasing and non-negative")
    if np.any((surv < 0) | (surv > 1)) or np.any(np.diff(surv) > 0):
        raise PredictorError("survival model: baseline survival must be in [0, 1], non-increasing")
    if not isinstance(risk, (Boosting, Linear)):
        raise PredictorError("survival model: the risk must be a boosted or linear score")
    return CompiledSurvival(encoder, risk, days, surv, spec)


# Column-oriented input, or dict instances (the API's).
Instances: TypeAlias = "Columns | Sequence[Mapping[str, Any]]"


class SurvivalPredictor:
    """Survival curves for dict instances (the API) or columns (files, DataFrames).

    `data` is either column-oriented (a DataFrame or a mapping of column to
    values) or a sequence of dict instances with the schema's field names.
    """

    def __init__(self, compiled: CompiledSurvival, compile_now: bool = True) -> None:
        self.compiled = compiled
        self.row_encoder = RowEncoder(compiled.encoder)
        if compile_now:
            self.compile_kernels()
        self.warm_up()

    def compile_kernels(self) -> None:
        """Compile the Numba kernels now rather than on the first request."""
        for trees in trees_of(self.compiled.risk):
            trees.compile_kernels(self.row_encoder.width)

    @property
    def max_days(self) -> float:
        return self.compiled.max_days

    @property
    def features(self) -> tuple[str, ...]:
        return self.compiled.features

    def warm_up(self) -> None:
        """Score a few rows through every path (a model that cannot run fails here)."""
        self.compiled.risk_matrix(np.zeros((1, self.row_encoder.width)))

    def matrix(self, data: Instances) -> np.ndarray:
        if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
            return encode_rows(self.row_encoder, data)
        return encode(self.compiled.encoder, data)

    def check_days(self, days: Sequence[float] | np.ndarray | float) -> np.ndarray:
        return self.compiled.check_days(days)

    def survival_at(self, data: Instances, days: Sequence[float] | np.ndarray) -> np.ndarray:
        """P(alive on each day), shape (rows, days); raises HorizonError for bad days."""
        return self.compiled.survival_matrix(self.matrix(data), days)

    def death_probability_at(self, data: Instances, day: float) -> np.ndarray:
        """P(dead by `day`) for each row: 1 - S(day)."""
        return 1.0 - self.survival_at(data, [day])[:, 0]

    def median_survival_days(self, data: Instances) -> np.ndarray:
        """Median survival in days per row; NaN where it is beyond the follow-up."""
        return self.compiled.median_matrix(self.matrix(data))

    def risk(self, data: Instances) -> np.ndarray:
        """Log hazard ratio per row (higher dies sooner)."""
        return self.compiled.risk_matrix(self.matrix(data))
