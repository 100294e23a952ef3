"""Heavy clients placed apart: each client the model learned to be heavy
(:class:`tuner.learn.clients.ClientCosts`) gets a worker of its own where there are enough,
so that its next connection does not land, by the hash, beside another heavy one.

The sk_reuseport program reads the placement at a connection's first packet (the
``clients`` map, :meth:`tuner.actuate.reuseport.ReuseportSteering.set_clients`); connections
of other clients follow the table as before.

Greedy: the heaviest client first, each to the worker with the least heavy load placed so
far in this decision on its CPU (workers pinned to one CPU share it; an unpinned worker is a
CPU of its own), then on the worker itself, ties broken by the worker's predicted load; a
client keeps the worker it had unless another one is lighter by more than a quarter of the
client's own load (a placement that moves every window would follow noise).

>>> p = ClientPolicy()
>>> d = p.decide({"10.0.0.1": 0.4, "10.0.0.2": 0.3, "10.0.0.3": 0.2}, [0.5, 0.1, 0.3])
>>> d.placed
{'10.0.0.1': 1, '10.0.0.2': 2, '10.0.0.3': 0}
>>> p.decide({"10.0.0.2": 0.3}, [0.5, 0.1, 0.3]).placed   # keeps its worker
{'10.0.0.2': 2}
>>> q = ClientPolicy()   # workers 0 and 2 share CPU 0, 1 and 3 CPU 1
>>> q.decide({"a": 0.4, "b": 0.3}, [0.1, 0.3, 0.2, 0.4], cpus=[0, 1, 0, 1]).placed
{'a': 0, 'b': 1}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

STICK = 0.25  # a client moves only for a worker lighter by this fraction of its own load


@dataclass(frozen=True)
class ClientPlacement:
    """Where the heavy clients' next connections go."""

    placed: dict[str, int]  # client address -> target index
    why: str


class ClientPolicy:
    """See the module text."""

    def __init__(self) -> None:
        self.placed: dict[str, int] = {}

    def decide(
        self,
        heavy: Mapping[str, float],
        predicted: Sequence[float],
        cpus: Sequence[int | None] | None = None,
    ) -> ClientPlacement:
        """Place ``heavy`` (address -> expected load of a connection) over the targets whose
        next-window loads are ``predicted``; ``cpus``: the CPU each target is pinned to
        (None: not pinned)."""
        n = len(predicted)
        if not heavy or n < 2:
            self.placed = {}
            return ClientPlacement({}, "no heavy clients" if n >= 2 else "one target")
        # each target's CPU; an unpinned target is a CPU of its own
        cpu = [-1 - w if c is None else c for w, c in enumerate(cpus or [None] * n)]
        assigned = [0.0] * n
        on_cpu = dict.fromkeys(cpu, 0.0)
        placed: dict[str, int] = {}
        for addr, load in sorted(heavy.items(), key=lambda kv: (-kv[1], kv[0])):
            prev = self.placed.get(addr)
            best = min(range(n), key=lambda w: (on_cpu[cpu[w]], assigned[w], predicted[w], w))
            stays = prev is not None and prev < n
            if stays and on_cpu[cpu[prev]] <= on_cpu[cpu[best]] + STICK * load:
                best = prev
            placed[addr] = best
            assigned[best] += load
            on_cpu[cpu[best]] += load
        self.placed = placed
        return ClientPlacement(dict(placed), f"{len(placed)} heavy clients over {n} targets")

    def reset(self) -> None:
        """Forget the placement (the agent fell back to the kernel, or the workers changed)."""
        self.placed = {}
