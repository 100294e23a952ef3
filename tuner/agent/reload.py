"""A new model picked up without a restart: ``model.path`` is looked at every
``model.reload_s`` seconds; a new version found there (``model.json``'s ``version``, see
:func:`tuner.learn.modelfile.content_version`) is loaded, checked and put on trial beside the
model in use (:mod:`tuner.learn.challenge`) for ``model.trial_windows`` windows: it predicts
and learns but decides nothing. It replaces the model in use only if it did no worse; either
way the decision log says so (``"event": "model"``). A model that cannot be read or does not
fit this agent is refused once, with the reason, and the agent goes on with the old one.

Point ``model.path`` at a symbolic link and flip it to publish a model atomically
(``ln -sfn models/v2 models/current.tmp && mv -T models/current.tmp models/current``).

>>> import tempfile, os
>>> from tuner.offline.train import synthetic_trace, train
>>> d = tempfile.mkdtemp()
>>> _ = train([synthetic_trace(os.path.join(d, "t"), windows=300)], os.path.join(d, "m"),
...           max_iter=5)
>>> w = ModelReload(os.path.join(d, "m"), window_ms=100, every_s=1.0, trial_windows=10)
>>> w.current.startswith("sha256:"), w.poll(None, now=0.0)  # the version in use: nothing new
(True, None)
"""

from __future__ import annotations

import os
from typing import Any

from tuner.errors import TunerError
from tuner.learn.challenge import Challenge
from tuner.learn.online import Learner


class ModelReload:
    """Watches ``path`` (a model directory, or a link to one) for a new version."""

    def __init__(
        self, path: str, window_ms: int, every_s: float, trial_windows: int, current: str = ""
    ) -> None:
        from tuner.learn.modelfile import load_model

        self.path = path
        self.window_ms = window_ms
        self.every_s = every_s
        self.trial_windows = trial_windows
        # the version the agent started with (read from ``path`` when not given)
        self.current = current or load_model(path).meta["version"]
        self.trying = ""
        self._seen = self._stamp()
        self._refused = ""  # the stamp of a model refused: not tried again until it changes
        self._next = 0.0

    def _stamp(self) -> str:
        """What changes when a new model is published: the directory the path leads to and
        its model.json's modification time ("" while it cannot be read)."""
        try:
            real = os.path.realpath(self.path)
            return f"{real}:{os.stat(os.path.join(real, 'model.json')).st_mtime_ns}"
        except OSError:
            return ""

    def poll(self, learner: Learner | None, now: float) -> dict[str, Any] | None:
        """Once a window: settle a trial that is over, or look for a new version when it is
        time. Returns an event for the decision log, or None."""
        if learner is not None and self.trying:
            verdict = learner.settle()
            if verdict is None:
                return None
            self.trying = ""
            if verdict["adopted"]:
                self.current = verdict["version"]
            return {"event": "model", "action": "adopted" if verdict["adopted"] else "kept",
                    "in_use": self.current, **verdict}  # fmt: skip
        if now < self._next:
            return None
        self._next = now + self.every_s
        stamp = self._stamp()
        if not stamp or stamp == self._seen or stamp == self._refused:
            return None
        return self._try(learner, stamp)

    def _try(self, learner: Learner | None, stamp: str) -> dict[str, Any] | None:
        from tuner.learn.boost import OfflineModel
        from tuner.learn.modelfile import load_model

        try:
            saved = load_model(self.path)
            saved.check(self.window_ms)
        except TunerError as e:
            self._refused = stamp
            return {"event": "model", "action": "refused", "why": str(e), "in_use": self.current}
        self._seen = stamp
        version = saved.meta["version"]
        if version == self.current or learner is None:
            return None
        learner.challenge(Challenge(OfflineModel.from_saved(saved), version, self.trial_windows))
        self.trying = version
        return {"event": "model", "action": "trial", "version": version, "in_use": self.current,
                "windows": self.trial_windows}  # fmt: skip
