"""A saved model directory: ``model.json`` (metadata, feature schema, metrics), ``trees.npz``
(the trees as numeric arrays, read with ``allow_pickle=False``) and ``online.json`` (the online
correction's state). Nothing in it runs code on load.

Both ways are checked: :func:`save_model` refuses a model whose parameters or scores are not
finite numbers (a trace with NaN loads once trained such a model), and :func:`load_model`
refuses a directory whose files are malformed, naming the file at fault.

>>> import tempfile, os
>>> from tuner.learn.trees import TreeEnsemble
>>> d = os.path.join(tempfile.mkdtemp(), "m")
>>> t = TreeEnsemble.stump(feature=0, threshold=0.5, below=0.0, above=0.1, baseline=0.0)
>>> v = save_model(d, t, {"counts": {}, "means": {}, "vars": {}, "weights": {},
...                       "intercept": 0.0}, {"window_ms": 100, "metrics": {}})
>>> m = load_model(d)
>>> m.meta["window_ms"], m.meta["version"] == v
(100, True)
>>> save_model(d + "2", t, {"intercept": float("nan")}, {"window_ms": 100})
Traceback (most recent call last):
...
tuner.errors.TunerError: refusing to save a model whose online.json holds intercept = nan; \
fix: the traces hold NaN or infinite loads: check them with `tuner replay`
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuner.errors import TunerError
from tuner.learn.features import FEATURES
from tuner.learn.trees import TreeEnsemble

FORMAT = "tuner-model"
FORMAT_VERSION = 1
ONLINE_KEYS = ("counts", "means", "vars", "weights", "intercept")


@dataclass
class SavedModel:
    """A model directory as :func:`load_model` reads it."""

    path: str
    meta: dict[str, Any]
    trees: TreeEnsemble
    online: dict[str, Any]

    def check(self, window_ms: int) -> None:
        """Refuse to run this model where its features would mean something else."""
        want = self.meta.get("features") or []
        missing = [f for f in want if f not in FEATURES]
        if missing:
            raise TunerError(
                f"model {self.path} was trained on features this tuner does not compute "
                f"({', '.join(missing)})",
                "train it again from a trace recorded with this version: tuner train",
            )
        if self.meta.get("window_ms") != window_ms:
            raise TunerError(
                f"model {self.path} was trained on {self.meta.get('window_ms')} ms windows; "
                f"this agent uses {window_ms} ms",
                f"set agent.window_ms = {self.meta.get('window_ms')}, or train on such a trace",
            )


def _not_finite(x: Any, where: str = "") -> str | None:
    """The path of the first value in ``x`` (numbers, lists, dicts) that is not a finite
    number, or None.

    >>> _not_finite({"a": [1.0, float("inf")]}), _not_finite({"a": 1, "b": "x"})
    ('a[1]', None)
    """
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return None
    if isinstance(x, int | float):
        return None if math.isfinite(x) else where or "value"
    if isinstance(x, dict):
        for k, v in x.items():
            bad = _not_finite(v, f"{where}.{k}" if where else str(k))
            if bad:
                return bad
    if isinstance(x, list | tuple):
        for i, v in enumerate(x):
            bad = _not_finite(v, f"{where}[{i}]")
            if bad:
                return bad
    return None


def content_version(trees: TreeEnsemble, online: dict[str, Any], features: list[str]) -> str:
    """A model's version: a hash of what it predicts with (trees, online state, feature
    order), not of when or where it was trained. Two trainings that give the same model give
    the same version.

    >>> from tuner.learn.trees import TreeEnsemble
    >>> t = TreeEnsemble.stump(feature=0, threshold=0.5, below=0.0, above=0.1, baseline=0.0)
    >>> v = content_version(t, {"intercept": 0.0}, ["load"])
    >>> v.startswith("sha256:"), v == content_version(t, {"intercept": 0.0}, ["load"])
    (True, True)
    >>> v == content_version(t, {"intercept": 0.1}, ["load"])
    False
    """
    h = hashlib.sha256()
    for name, a in sorted(trees.arrays().items()):
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(json.dumps([trees.baseline, trees.depth, online, features], sort_keys=True).encode())
    return "sha256:" + h.hexdigest()[:16]


def save_model(path: str, trees: TreeEnsemble, online: dict[str, Any], meta: dict[str, Any]) -> str:
    """Write ``model.json``, ``trees.npz`` and ``online.json`` into the directory ``path``,
    after checking that every parameter and score is a finite number. Returns the model's
    :func:`content_version`, also saved as ``version`` in ``model.json``."""
    full = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "features": list(FEATURES),
        "tree_depth": trees.depth,
        "tree_baseline": trees.baseline,
        **meta,
        "version": content_version(trees, online, list(FEATURES)),
    }
    fix = "the traces hold NaN or infinite loads: check them with `tuner replay`"
    for name, part in (("online.json", online), ("model.json", full)):
        bad = _not_finite(part)
        if bad:
            value = eval_path(part, bad)
            raise TunerError(f"refusing to save a model whose {name} holds {bad} = {value}", fix)
    try:
        trees.validate(len(FEATURES))
    except ValueError as e:
        raise TunerError(
            f"refusing to save a model whose trees.npz is malformed: {e}", fix
        ) from None
    os.makedirs(path, exist_ok=True)
    np.savez_compressed(os.path.join(path, "trees.npz"), **trees.arrays())
    with open(os.path.join(path, "online.json"), "w") as f:
        json.dump(online, f)
    with open(os.path.join(path, "model.json"), "w") as f:
        json.dump(full, f, indent=2)
    return full["version"]


def eval_path(x: Any, path: str) -> Any:
    """The value at ``path`` (as :func:`_not_finite` names it) inside ``x``.

    >>> eval_path({"a": [1.0, 2.5]}, "a[1]")
    2.5
    """
    for part in path.replace("[", ".[").split("."):
        if part.startswith("["):
            x = x[int(part[1:-1])]
        elif part:
            x = x[part]
    return x


def _check_meta(meta: Any) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError("not a tuner model")
    features = meta.get("features")
    if (
        not isinstance(features, list)
        or not features
        or not all(isinstance(f, str) for f in features)
    ):
        raise ValueError("its feature list is not a list of names")
    for key in ("tree_depth", "window_ms"):
        if not isinstance(meta.get(key), int) or isinstance(meta.get(key), bool):
            raise ValueError(f"{key} is not an integer")
    bad = _not_finite(meta)
    if bad or not isinstance(meta.get("tree_baseline"), int | float):
        raise ValueError(f"{bad or 'tree_baseline'} is not a finite number")


def _check_online(online: Any, features: list[str]) -> None:
    if not isinstance(online, dict) or set(ONLINE_KEYS) - set(online):
        raise ValueError(f"it must be an object with {', '.join(ONLINE_KEYS)}")
    for key in ONLINE_KEYS[:4]:
        part = online[key]
        if not isinstance(part, dict) or not all(
            k in features and isinstance(v, int | float) and not isinstance(v, bool)
            for k, v in part.items()
        ):
            raise ValueError(f"{key} must map feature names to numbers")
    if not isinstance(online["intercept"], int | float):
        raise ValueError("intercept must be a number")
    bad = _not_finite(online)
    if bad:
        raise ValueError(f"{bad} is not a finite number")


def load_model(path: str) -> SavedModel:
    """Read and check a model directory written by :func:`save_model`; a one-line error
    that names the file otherwise."""
    if not os.path.isdir(path):
        raise TunerError(f"model {path} not found", "give a directory written by `tuner train`")
    fix = "give a directory written by `tuner train`, or train it again"
    current = "model.json"
    try:
        with open(os.path.join(path, current)) as f:
            meta = json.load(f)
        _check_meta(meta)
        if meta.get("format_version") != FORMAT_VERSION:
            raise TunerError(
                f"model {path} has format version {meta.get('format_version')}; "
                f"this tuner reads {FORMAT_VERSION}",
                "train it again with this version",
            )
        current = "trees.npz"
        with np.load(os.path.join(path, current), allow_pickle=False) as z:
            missing = [k for k in TreeEnsemble.ARRAYS if k not in z.files]
            if missing:
                raise ValueError(f"it lacks the array(s) {', '.join(missing)}")
            arrays = {k: z[k] for k in TreeEnsemble.ARRAYS}
        trees = TreeEnsemble(arrays, meta["tree_baseline"], meta["tree_depth"])
        trees.validate(len(meta["features"]))
        current = "online.json"
        with open(os.path.join(path, current)) as f:
            online = json.load(f)
        _check_online(online, meta["features"])
    except TunerError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError, RecursionError) as e:
        why = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
        raise TunerError(f"{os.path.join(path, current)} is not usable: {why}", fix) from None
    if "version" not in meta:  # saved before models had versions
        meta["version"] = content_version(trees, online, meta["features"])
    return SavedModel(path, meta, trees, online)
