"""Skew profiles: how the load generator spreads requests over its connections, over time.

A profile gives, at time ``t`` (seconds since the start), one weight per connection (the
share of requests it sends) and a factor on the arrival rate.

- ``uniform``: every connection the same.
- ``heavy-hitters``: Zipf weights (exponent ``zipf_s``); a few connections send most requests.
- ``shifting-hotspot``: Zipf weights handed to other connections every ``shift_s`` seconds.
- ``periodic-bursts``: uniform, except for ``burst_s`` of every ``period_s`` seconds, when the
  rate is ``burst_factor`` times higher and comes from a few heavy connections.
- ``noisy-neighbour``: uniform; the experiment runner adds a CPU hog beside worker 0.
- ``client-mix``: uniform weights, but connection ``i`` belongs to client ``i mod clients``
  (a source address of its own in an experiment), and a few clients (``heavy_share`` of
  them) send requests that cost ``heavy_factor`` times more (:meth:`Profile.costs`). Nothing
  in a connection's first packet or its request rate tells it apart: only what that
  client's connections cost before.

>>> p = Profile("heavy-hitters", connections=4, seed=1)
>>> [round(float(w), 3) for w in p.weights(0.0)]
[0.48, 0.24, 0.16, 0.12]
>>> p.rate_factor(0.0)
1.0
>>> [round(float(c), 2) for c in Profile("client-mix", connections=4, seed=1).costs()]
[0.36, 0.36, 0.36, 2.91]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuner.errors import TunerError

NAMES = ("uniform", "heavy-hitters", "shifting-hotspot", "periodic-bursts", "noisy-neighbour",
         "client-mix")  # fmt: skip


@dataclass(frozen=True)
class Profile:
    """A skew profile over ``connections`` connections; see the module docstring."""

    name: str
    connections: int
    seed: int = 0
    zipf_s: float = 1.0
    shift_s: float = 5.0
    period_s: float = 4.0
    burst_s: float = 1.0
    burst_factor: float = 2.0
    heavy_share: float = 0.125  # client-mix: share of the clients that are heavy
    heavy_factor: float = 8.0  # client-mix: how much more a heavy client's request costs
    clients: int = 0  # client-mix: connection i is client i mod clients (0: one per connection)

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise TunerError(f"unknown profile {self.name!r}", f"choose from {', '.join(NAMES)}")
        if self.connections < 1:
            raise TunerError(f"connections must be at least 1; got {self.connections}")

    def _zipf(self, epoch: int) -> np.ndarray:
        ranks = np.arange(1, self.connections + 1, dtype=float)
        w = 1.0 / ranks**self.zipf_s
        rng = np.random.default_rng([self.seed, epoch])
        return rng.permutation(w / w.sum())

    def _uniform(self) -> np.ndarray:
        return np.full(self.connections, 1.0 / self.connections)

    def epoch(self, t: float) -> int:
        """Which hand-out of the weights is in force at ``t`` (changes only for the shifting
        and bursting profiles)."""
        if self.name == "shifting-hotspot":
            return int(t // self.shift_s)
        if self.name == "periodic-bursts":
            return int(t // self.period_s) * 2 + self._bursting(t)
        return 0

    def _bursting(self, t: float) -> bool:
        return (t % self.period_s) < self.burst_s

    def weights(self, t: float) -> np.ndarray:
        """Share of requests of each connection at time ``t`` (sums to 1)."""
        if self.name == "heavy-hitters":
            return self._zipf(0)
        if self.name == "shifting-hotspot":
            return self._zipf(self.epoch(t))
        if self.name == "periodic-bursts" and self._bursting(t):
            extra = self._zipf(0) * (self.burst_factor - 1.0)
            return (self._uniform() + extra) / self.burst_factor
        return self._uniform()

    def costs(self) -> np.ndarray:
        """Each connection's factor on the service time, mean 1 over the connections (so a
        calibrated rate means the same load); all ones except for client-mix."""
        if self.name != "client-mix":
            return np.ones(self.connections)
        clients = self.clients or self.connections
        heavy = max(1, round(self.heavy_share * clients))
        rng = np.random.default_rng([self.seed, 7])
        of_client = np.ones(clients)
        of_client[rng.permutation(clients)[:heavy]] = self.heavy_factor
        c = of_client[np.arange(self.connections) % clients]
        return c / c.mean()

    def rate_factor(self, t: float) -> float:
        """Arrival rate at ``t`` relative to the configured rate."""
        if self.name == "periodic-bursts" and self._bursting(t):
            return self.burst_factor
        return 1.0
