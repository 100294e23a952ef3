"""Gradient boosted regression trees as flat numpy arrays: tuner's own representation of a
trained model, evaluated without scikit-learn and checked before it is trusted.

Every tree is a run of nodes in the arrays; ``roots`` gives each tree's first node. A node
either is a leaf (``leaf``, with ``value``) or sends a row to ``left`` when its ``feature``
is ``<= threshold`` (NaN: ``nan_left``), else to ``right``. Children come after their parent
inside their own tree, so a tree has no cycle and is walked in at most ``depth`` steps.

A model file comes from outside the process, so :meth:`TreeEnsemble.validate` checks all of
that (indices in range, children after parents, the depth true and bounded, values finite)
before the agent walks the trees: a child index out of range gave an IndexError in the live
agent, and a depth of 10^9 hung it at full CPU.

>>> import numpy as np
>>> t = TreeEnsemble.stump(feature=0, threshold=0.5, below=-1.0, above=1.0, baseline=0.25)
>>> t.predict(np.array([[0.1], [0.9]])).tolist()
[-0.75, 1.25]
>>> bad = t.arrays(); bad["left"] = np.array([7, -1, -1], dtype=np.int32)
>>> TreeEnsemble(bad, 0.25, 1).validate(features=1)
Traceback (most recent call last):
...
ValueError: node 0 has a child 7 outside its tree (nodes 0 to 2)
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_DEPTH = 64  # deeper trees are refused: boosted trees here have at most 15 leaves


class TreeEnsemble:
    """Boosted trees: predictions are the sum of each tree's leaf value plus ``baseline``."""

    ARRAYS = ("feature", "threshold", "left", "right", "leaf", "value", "nan_left", "roots")

    def __init__(self, arrays: dict[str, np.ndarray], baseline: float, depth: int) -> None:
        self.feature = np.asarray(arrays["feature"])
        self.threshold = np.asarray(arrays["threshold"])
        self.left = np.asarray(arrays["left"])
        self.right = np.asarray(arrays["right"])
        self.leaf = np.asarray(arrays["leaf"])
        self.value = np.asarray(arrays["value"])
        self.nan_left = np.asarray(arrays["nan_left"])
        self.roots = np.asarray(arrays["roots"])
        self.baseline = float(baseline)
        self.depth = int(depth)

    @classmethod
    def stump(
        cls, feature: int, threshold: float, below: float, above: float, baseline: float
    ) -> TreeEnsemble:
        """One tree of one split (for examples and tests)."""
        arrays = {
            "feature": np.array([feature, 0, 0], dtype=np.int32),
            "threshold": np.array([threshold, 0.0, 0.0]),
            "left": np.array([1, -1, -1], dtype=np.int32),
            "right": np.array([2, -1, -1], dtype=np.int32),
            "leaf": np.array([False, True, True]),
            "value": np.array([0.0, below, above]),
            "nan_left": np.array([True, False, False]),
            "roots": np.array([0], dtype=np.int32),
        }
        return cls(arrays, baseline, 1)

    @classmethod
    def from_sklearn(cls, est: Any) -> TreeEnsemble:
        """From a fitted ``HistGradientBoostingRegressor`` (reads its fitted predictors,
        which scikit-learn does not expose publicly: the version range is pinned in
        pyproject.toml, and the result is checked with :meth:`validate` and against
        ``est.predict`` by the training code)."""
        parts: dict[str, list] = {k: [] for k in cls.ARRAYS}
        offset, depth = 0, 0
        for (tree,) in est._predictors:
            nd = tree.nodes
            parts["feature"].append(nd["feature_idx"].astype(np.int32))
            parts["threshold"].append(nd["num_threshold"].astype(np.float64))
            parts["left"].append(nd["left"].astype(np.int32) + offset)
            parts["right"].append(nd["right"].astype(np.int32) + offset)
            parts["leaf"].append(nd["is_leaf"].astype(bool))
            parts["value"].append(nd["value"].astype(np.float64))
            parts["nan_left"].append(nd["missing_go_to_left"].astype(bool))
            parts["roots"].append(np.array([offset], dtype=np.int32))
            depth = max(depth, int(nd["depth"].max()))
            offset += len(nd)
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        return cls(arrays, float(np.ravel(est._baseline_prediction)[0]), depth)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Sum of the trees' leaf values plus the baseline, for each row of ``X``."""
        X = np.asarray(X, dtype=np.float64)
        rows = np.arange(len(X))[:, None]
        idx = np.broadcast_to(self.roots, (len(X), len(self.roots))).copy()
        for _ in range(self.depth):
            x = X[rows, self.feature[idx]]
            go_left = np.where(np.isnan(x), self.nan_left[idx], x <= self.threshold[idx])
            nxt = np.where(go_left, self.left[idx], self.right[idx])
            idx = np.where(self.leaf[idx], idx, nxt)
        return self.value[idx].sum(axis=1) + self.baseline

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.ARRAYS}

    def validate(self, features: int) -> None:
        """Raise ValueError (saying what is wrong) unless these are well-formed trees over
        ``features`` columns whose depth is :attr:`depth`, at most :data:`MAX_DEPTH`."""
        n = len(self.feature)
        for k in self.ARRAYS:
            a = getattr(self, k)
            if a.ndim != 1 or (k != "roots" and len(a) != n):
                raise ValueError(f"array {k} has shape {a.shape}; the trees have {n} nodes")
        for k in ("feature", "left", "right", "roots"):
            if getattr(self, k).dtype.kind not in "iu":
                raise ValueError(f"array {k} holds {getattr(self, k).dtype}, not integers")
        if not 0 <= self.depth <= MAX_DEPTH:
            raise ValueError(f"tree depth {self.depth} is outside [0, {MAX_DEPTH}]")
        if not np.isfinite(self.baseline) or not np.isfinite(self.value).all():
            raise ValueError("a leaf value or the baseline is not a finite number")
        if np.isnan(self.threshold).any():
            raise ValueError("a split threshold is NaN")
        roots = self.roots.astype(np.int64)
        if len(roots) == 0 or roots[0] != 0 or (np.diff(roots) <= 0).any() or roots[-1] >= n:
            raise ValueError("the tree roots are not increasing node indices from 0")
        ends = np.append(roots[1:], n)
        depth = np.zeros(n, dtype=np.int64)
        for start, end in zip(roots.tolist(), ends.tolist(), strict=True):
            for i in range(start, end):
                if self.leaf[i]:
                    continue
                if not 0 <= self.feature[i] < features:
                    raise ValueError(f"node {i} splits on feature {self.feature[i]} of {features}")
                for child in (int(self.left[i]), int(self.right[i])):
                    if not i < child < end:
                        raise ValueError(
                            f"node {i} has a child {child} outside its tree "
                            f"(nodes {start} to {end - 1})"
                        )
                    depth[child] = depth[i] + 1
        deepest = int(depth.max(initial=0))
        if deepest > self.depth:
            raise ValueError(f"the trees are {deepest} deep, more than the depth {self.depth}")
