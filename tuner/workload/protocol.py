"""The reference workload's wire protocol and service-time distributions.

A request is 16 bytes: a request id and the service time the server must spend on it (in
microseconds). The response is 16 bytes: the same id, the worker that served it, and the
service time. TCP and UDP carry the same messages.

>>> REQUEST.unpack(REQUEST.pack(7, 500))
(7, 500)
>>> ServiceTime.parse("exp:500").mean_us
500.0
>>> ServiceTime.parse("const:250").draw(__import__("random").Random(1))
250
"""

from __future__ import annotations

import math
import random
import struct
from dataclasses import dataclass

from tuner.errors import TunerError

REQUEST = struct.Struct("<QI4x")  # request id, service time in us
RESPONSE = struct.Struct("<QII")  # request id, worker index, service time in us
MAX_SERVICE_US = 1_000_000
KINDS = ("const", "exp", "lognormal")


@dataclass(frozen=True)
class ServiceTime:
    """Per-request service time: ``const:US``, ``exp:US`` (exponential with that mean) or
    ``lognormal:US`` (mean US, sigma 1). Draws are capped at 1 s."""

    kind: str
    mean_us: float

    @classmethod
    def parse(cls, text: str) -> ServiceTime:
        kind, _, value = text.partition(":")
        try:
            mean = float(value)
        except ValueError:
            mean = -1.0
        if kind not in KINDS or not 1 <= mean <= MAX_SERVICE_US:
            raise TunerError(
                f"service time {text!r} is not KIND:MICROSECONDS",
                f"use one of {', '.join(k + ':500' for k in KINDS)}",
            )
        return cls(kind, mean)

    def draw(self, rng: random.Random) -> int:
        """One service time in microseconds."""
        if self.kind == "const":
            us = self.mean_us
        elif self.kind == "exp":
            us = rng.expovariate(1.0 / self.mean_us)
        else:  # lognormal with sigma 1 and the given mean
            us = rng.lognormvariate(math.log(self.mean_us) - 0.5, 1.0)
        return max(1, min(int(us), MAX_SERVICE_US))
