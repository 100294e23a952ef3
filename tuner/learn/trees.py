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
    """Boosted trees: predictions are the sum of each tree's leaf value plus ``baseline``.

    >>> import lightgbm
    >>> X = np.random.default_rng(1).random((500, 3)); y = X[:, 0] * 2 + X[:, 1]
    >>> est = lightgbm.LGBMRegressor(n_estimators=20, verbose=-1).fit(X, y)
    >>> t = TreeEnsemble.from_lightgbm(est.booster_.dump_model())
    >>> bool(np.allclose(t.predict(X), est.predict(X)))
    True
    """

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
    def from_lightgbm(cls, dump: dict[str, Any]) -> TreeEnsemble:
        """From LightGBM's ``Booster.dump_model()`` (its public JSON form of the trees).

        A split sends ``x <= threshold`` left; a missing value (NaN) goes to ``default_left``
        when the split's ``missing_type`` is ``"NaN"``, and is taken as 0 when it is
        ``"None"`` (as LightGBM does). LightGBM adds the starting value (the median, for the
        absolute error) into the first tree's leaves, so the baseline here is 0.

        >>> leaf = lambda v: {"leaf_value": v}
        >>> tree = {"split_feature": 0, "threshold": 0.5, "decision_type": "<=",
        ...         "default_left": False, "missing_type": "NaN",
        ...         "left_child": leaf(-1.0), "right_child": leaf(1.0)}
        >>> t = TreeEnsemble.from_lightgbm({"tree_info": [{"tree_structure": tree}]})
        >>> t.predict(np.array([[0.1], [0.9], [np.nan]])).tolist()
        [-1.0, 1.0, 1.0]
        """
        parts: dict[str, list] = {k: [] for k in cls.ARRAYS}
        depth = 0

        def add(node: dict[str, Any], level: int) -> int:
            nonlocal depth
            i = len(parts["value"])
            depth = max(depth, level)
            for k in cls.ARRAYS[:-1]:
                parts[k].append(0)
            if "leaf_value" in node:
                parts["leaf"][i], parts["value"][i] = True, float(node["leaf_value"])
                return i
            if node.get("decision_type") != "<=" or node.get("missing_type") == "Zero":
                raise ValueError(f"a split this reader does not know: {node.get('decision_type')}")
            threshold = float(node["threshold"])
            nan_left = (
                bool(node["default_left"]) if node.get("missing_type") == "NaN" else threshold >= 0
            )
            parts["feature"][i], parts["threshold"][i] = int(node["split_feature"]), threshold
            parts["nan_left"][i], parts["leaf"][i] = nan_left, False
            parts["left"][i] = add(node["left_child"], level + 1)
            parts["right"][i] = add(node["right_child"], level + 1)
            return i

        for info in dump["tree_info"]:
            parts["roots"].append(add(info["tree_structure"], 0))
        types = {
            "feature": np.int32,
            "left": np.int32,
            "right": np.int32,
            "roots": np.int32,
            "leaf": bool,
            "nan_left": bool,
            "threshold": np.float64,
            "value": np.float64,
        }
        arrays = {k: np.array(v, dtype=types[k]) for k, v in parts.items()}  # fmt: skip
        return cls(arrays, 0.0, depth)

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
        if n and not ((self.feature >= 0) & (self.feature < features)).all():  # leaves too: read
            bad = int(np.flatnonzero((self.feature < 0) | (self.feature >= features))[0])
            raise ValueError(f"node {bad} splits on feature {self.feature[bad]} of {features}")
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
