"""Load calibrated to the machine: ``workload.utilization`` instead of a rate.

A rate in requests per second is light load on one machine and overload on another, or on the
same one when something else runs there. With ``workload.utilization = u`` each round starts
with a calibration: the server (under the kernel's placement) is offered far more than it can
serve for :data:`SECONDS` seconds, uniform load, the workload's service times; the answers per
second in the last part of that run are its **capacity** here and now, and the round runs at
``u x capacity``. The offered rate is twice what the workers could serve if every CPU they may
use were theirs (:func:`offered_rate`); when the server answers nearly all of it anyway, the
capacity found is only a floor, and the calibration says so (``saturated`` false).

That capacity is uniform load's, answered while overloaded. Under a skewed profile the
kernel's placement leaves one worker (or CPU) hot, and ``u x capacity`` can be more than it
sustains (and nginx, even under uniform load, answers more while overloaded than it
sustains): every arm then runs overloaded, queues grow for as long as the arm lasts, and no
ratio between arms means anything. So the rate is then **checked** under the spec's own
profile with the kernel's placement for :data:`SECONDS`: while that run does not keep up
(:func:`check`: answers, median latency, and a queue that does not grow), the rate
steps down by :data:`STEP`, at most :data:`CHECKS` times; once one keeps up, the rates
between it and the lowest that did not are halved until they are :data:`PRECISION` apart
(:func:`next_rate`: two checks more). The rate a round runs at is thus at most
``u x capacity``, and the highest that the kernel's placement sustained for this workload, to
within a few per cent; ``workload.of_limit`` (default 1) scales it down, to run rounds with
headroom (:func:`chosen`). (Stepping alone put the rounds of one run at rates 25 % apart, 540 or
680 req/s on nginx, whichever step a check's noise let through, and rounds at the two rates
are different experiments: the kernel's p99 was 55 to 110 ms at the one, 0.8 to 2.6 s at the
other.) Each check's figures are kept (:class:`Check`, ``checks`` in calibration.json), so a
rate that came out low says why.

>>> import numpy as np
>>> from tuner.workload.loadgen import SAMPLE
>>> x = np.zeros(400, dtype=SAMPLE); x["ok"] = 1; x["t_send"] = np.linspace(0, 4, 400)
>>> x["latency"] = 0.5
>>> from tuner.experiment.spec import ExperimentSpec
>>> spec = ExperimentSpec.from_dict({"workload": {"utilization": 0.7}})
>>> c = from_samples(spec, x, offered=200.0)
>>> round(c.capacity), round(c.rate), c.saturated
(100, 70, True)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tuner.experiment.spec import ExperimentSpec
from tuner.workload.protocol import ServiceTime

SECONDS = 5.0  # the calibration run
MEASURED_FROM = 1.0  # seconds of it skipped (connections opening, queues filling)
STEP = 0.8  # a rate the kernel's placement did not sustain is lowered by this factor
CHECKS = 4  # steps down at most: the rate is at least STEP ** (CHECKS - 1) x u x capacity
PRECISION = 0.07  # the kept rate and the lowest one not kept, this close (relative), end it
MEDIAN = 10  # service times a check's median latency may reach ...
MEDIAN_FLOOR_S = 0.005  # ... or this, for short services: a shared machine's scheduling delays
GROWTH = 10  # service times the median latency may grow by, a check's first half to second


@dataclass(frozen=True)
class Check:
    """One check of a rate under the spec's profile (see :func:`check`)."""

    rate: float  # requests/s offered
    answered: float  # share of the requests answered, from MEASURED_FROM on
    p50_ms: float  # median latency (an unanswered request counts as infinitely slow)
    growth_ms: float  # median of the second half minus the first half's
    kept_up: bool


@dataclass(frozen=True)
class Calibration:
    """What one calibration found."""

    offered: float  # requests/s offered
    capacity: float  # requests/s answered, from MEASURED_FROM on
    rate: float  # the rate the round runs at: utilization x capacity
    utilization: float
    saturated: bool  # the server answered clearly less than offered: capacity is real
    sustained: bool = True  # the kernel's placement kept up at the rate kept
    checks: tuple[Check, ...] = ()  # the rates tried under the spec's profile, the last kept
    limit: float = 0.0  # the highest rate kept up with (else the last tried): rate / of_limit
    of_limit: float = 1.0  # workload.of_limit

    def to_json(self) -> dict[str, Any]:
        out = {k: _rounded(v) for k, v in asdict(self).items()}
        out["checked"] = [round(c.rate, 2) for c in self.checks]
        out["checks"] = [{k: _rounded(v) for k, v in asdict(c).items()} for c in self.checks]
        return out


def _rounded(v: Any) -> Any:
    return (round(v, 2) if np.isfinite(v) else None) if isinstance(v, float) else v


def offered_rate(spec: ExperimentSpec, http: dict[str, Any] | None) -> float:
    """Twice what the workers could serve if every CPU they may use were theirs."""
    mean_us = ServiceTime.parse(spec.get("workload.service")).mean_us
    if http is not None and http.get("costs_us") and len(http["costs_us"]) == 1:
        mean_us = max(http["costs_us"][0], 100.0)  # a command server's own cost: unknown
    cpus = len(spec.get("server.cpus")) or len(os.sched_getaffinity(0))
    workers = spec.get("server.workers") * max(1, spec.get("cluster.backends"))
    return 2.0 * min(workers, cpus) * 1e6 / mean_us


def from_samples(spec: ExperimentSpec, samples: np.ndarray, offered: float) -> Calibration:
    """The capacity the calibration run's samples show, and the rate to run at."""
    sent = samples["t_send"]
    end = float(sent.max()) if sent.size else MEASURED_FROM + 1.0
    span = max(end - MEASURED_FROM, 1e-3)
    answered = samples[(samples["ok"] == 1) & (sent >= MEASURED_FROM)]
    capacity = answered.size / span
    u = spec.get("workload.utilization")
    return Calibration(offered, capacity, u * capacity, u, capacity < 0.9 * offered)


def check(samples: np.ndarray, rate: float, mean_service_us: float) -> Check:
    """Did the server keep up in a check run at ``rate``? From :data:`MEASURED_FROM` on: at
    least 95 % of the requests answered, a median latency of at most :data:`MEDIAN` service
    times (or :data:`MEDIAN_FLOOR_S`, when that is more: short services), and a queue that
    does not grow: the median latency of the run's second half at most :data:`GROWTH`
    service times above its first half's.

    The median limit is what separates a rate the kernel's placement sustains from one at the
    edge of what it sustains: measured on nginx (4 workers, 2 ms of gzip per request, heavy
    hitters), rounds at about 540 req/s ran every arm at medians of 4 to 8 service times,
    while rounds at 680 began at 13 to 36 and, within the arm's 24 s, overloaded every arm,
    kernel and active alike; at fifty service times, the limit arms are judged by
    (:func:`overloaded`), a 5-s check passed them.

    >>> from tuner.workload.loadgen import SAMPLE
    >>> x = np.zeros(400, dtype=SAMPLE); x["ok"] = 1; x["t_send"] = np.linspace(0, 5, 400)
    >>> x["latency"] = 0.01
    >>> check(x, 80.0, 2000.0).kept_up
    True
    >>> x["latency"] = np.linspace(0.01, 3.0, 400); check(x, 80.0, 2000.0).kept_up
    False
    >>> x["latency"] = 0.03; c = check(x, 80.0, 2000.0)   # 15 service times: at the edge
    >>> c.kept_up, c.p50_ms
    (False, 30.0)
    >>> x["latency"] = np.linspace(0.0, 0.04, 400)   # median under 20 ms, but growing
    >>> check(x, 80.0, 2000.0).kept_up
    False
    """
    run = samples[samples["t_send"] >= MEASURED_FROM]
    if run.size == 0:
        return Check(rate, 0.0, float("inf"), float("nan"), False)
    answered = run["ok"] == 1
    share = float(answered.mean())
    latency = np.where(answered, run["latency"], np.inf)
    median_s = float(np.median(latency))
    t = run["t_send"]
    late = t >= (t.min() + t.max()) / 2
    growth = 0.0
    if late.any() and not late.all():
        growth = float(np.median(latency[late]) - np.median(latency[~late]))
    service_s = mean_service_us / 1e6
    ok = (
        share >= 0.95
        and median_s <= max(MEDIAN * service_s, MEDIAN_FLOOR_S)
        and not growth > GROWTH * service_s  # nan (inf - inf) is a queue that never drained
    )
    return Check(rate, share, median_s * 1e3, growth * 1e3, bool(ok))


def next_rate(first: float, checks: Sequence[Check]) -> float | None:
    """The rate to check next, given the checks so far (``first``: ``u x capacity``), or None
    when the calibration is done (see :func:`chosen`). Down by :data:`STEP` until a rate keeps
    up, then halfway between the highest rate kept and the lowest one not kept above it,
    until they are :data:`PRECISION` apart.

    >>> c = lambda rate, ok: Check(rate, 1.0, 1.0, 0.0, ok)
    >>> next_rate(1000.0, []), next_rate(1000.0, [c(1000.0, True)])   # u x capacity kept up
    (1000.0, None)
    >>> next_rate(1000.0, [c(1000.0, False)])
    800.0
    >>> next_rate(1000.0, [c(1000.0, False), c(800.0, True)])
    900.0
    >>> next_rate(1000.0, [c(1000.0, False), c(800.0, True), c(900.0, False)])
    850.0
    >>> print(next_rate(1000.0, [c(1000.0, False), c(800.0, True), c(900.0, False),
    ...                          c(850.0, True)]))   # 850 kept, 900 not: 6 % apart
    None
    >>> print(next_rate(1000.0, [c(1000.0 * 0.8**i, False) for i in range(CHECKS)]))
    None
    """
    if not checks:
        return first
    kept = [c.rate for c in checks if c.kept_up]
    if not kept:
        return None if len(checks) >= CHECKS else checks[-1].rate * STEP
    lo = max(kept)
    above = [c.rate for c in checks if not c.kept_up and c.rate > lo]
    if not above or min(above) <= lo * (1.0 + PRECISION):
        return None
    return (lo + min(above)) / 2.0


def chosen(checks: Sequence[Check]) -> tuple[float, bool]:
    """The limit found by ``checks`` (see :func:`next_rate`), and whether the kernel's
    placement sustained it: the highest rate kept up with, else the last one tried. A round
    runs at ``workload.of_limit`` times it.

    >>> chosen([Check(1000.0, 1.0, 90.0, 0.0, False), Check(800.0, 1.0, 9.0, 0.0, True),
    ...         Check(900.0, 1.0, 12.0, 0.0, True)])
    (900.0, True)
    >>> chosen([Check(1000.0, 0.5, 900.0, 40.0, False)])
    (1000.0, False)
    """
    kept = [c.rate for c in checks if c.kept_up]
    return (max(kept), True) if kept else (checks[-1].rate, False)


def overloaded(arm: dict[str, Any], mean_service_us: float) -> bool:
    """Did an arm run overloaded: clearly fewer answers than requests sent (the load generator
    is open-loop, so requests keep coming when answers do not), or a median latency fifty
    service times long (queues that never drained)? The answers are compared with the
    requests sent, not with the nominal rate: Poisson arrivals over a short arm miss the
    nominal rate by a few per cent on their own.

    >>> overloaded({"requests": 700, "errors": 3, "p50_ms": 9.0}, 2000.0)
    False
    >>> overloaded({"requests": 700, "errors": 200, "p50_ms": 900.0}, 2000.0)
    True
    """
    slow = (arm.get("p50_ms") or 0.0) > 50 * mean_service_us / 1e3
    sent = arm.get("requests") or 0
    return bool((arm.get("errors") or 0) > 0.05 * sent or slow)
