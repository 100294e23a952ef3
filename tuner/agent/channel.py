"""A channel: one kind of entity the agent predicts, and, when that kind is steered, the
policy, the steering and the fall-back state that go with it.

The agent runs its channels in phases each window, so that a channel can use what another
one measured or predicted that window (the workers' policy counts spare room per CPU from the
CPU channel's predictions; the sockets channel gives the workers their ``live_load``)::

    measure(frames)  ->  features()  ->  predict()  ->  act(mode, fall-back)
       every channel       every channel     learner          steered channels: table,
       in order            (may read the     learns and       write / renew / expire
                           others' meas.)    predicts

A new kind of entity is a new :class:`Channel` subclass, not an edit to the loop
(:mod:`tuner.agent.channels` holds the four there are).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tuner.actuate.steering import Steering
from tuner.learn.online import Learner, Prediction
from tuner.policy.shares import SharePolicy, TableDecision
from tuner.probes.base import Frame
from tuner.window import ChannelWindow, EntityState, TableOutcome

# who an entity is (EntityState's pid, tid, cpu, cpu_load), from Channel.describe
Identity = tuple[int | None, int | None, int | None, float | None]
NO_IDENTITY: Identity = (None, None, None, None)

if TYPE_CHECKING:
    from tuner.agent.workers import WorkerMap


@dataclass(frozen=True)
class Measurement:
    """What one channel measured in one window."""

    loads: dict[str, float]  # entity -> load, CPUs
    features: dict[str, dict[str, float]]  # entity -> probe features
    flows: Mapping[int, int] = field(default_factory=dict)  # datagrams per flow hash (UDP)


@dataclass(frozen=True)
class Step:
    """One window as every channel sees it when it acts."""

    mode: str  # shadow | active
    fallback: str  # why the kernel's placement stays in force ("": it does not)
    measured: Mapping[str, Measurement]
    features: Mapping[str, Mapping[str, Mapping[str, float]]]  # what each learner was given
    predicted: Mapping[str, Mapping[str, Prediction]]


class Channel:
    """An entity kind that is measured and predicted (see the module text)."""

    name = ""

    def __init__(self, learner: Learner) -> None:
        self.learner = learner
        self.in_force: dict[str, float] = {}  # the shares in force this window (steered)

    def measure(self, frames: list[Frame], before: Mapping[str, Measurement]) -> Measurement:
        """This window's loads and features, from the probes' frames (and what the channels
        before this one measured)."""
        raise NotImplementedError

    def features(
        self, own: Measurement, measured: Mapping[str, Measurement]
    ) -> dict[str, dict[str, float]]:
        """The features the learner gets (by default the channel's own)."""
        return own.features

    def shares_in_force(self) -> dict[str, float]:
        """Each entity's share of the table in force (a feature); {} when not steered."""
        return {}

    def predict(
        self, own: Measurement, features: dict[str, dict[str, float]]
    ) -> dict[str, Prediction]:
        """Score last window's predictions, learn, predict the next window."""
        if not own.loads:
            return {}
        return self.learner.step(own.loads, features, self.shares_in_force())

    def act(self, step: Step) -> ChannelWindow:
        """Decide and act for this window; an unsteered channel only reports."""
        return ChannelWindow(self.name, self.entity_states(step))

    def entity_states(self, step: Step, decided: list[float] | None = None) -> tuple:
        own = step.measured[self.name]
        features = step.features.get(self.name, {})
        preds = step.predicted.get(self.name, {})
        shares = self.in_force
        who = self.identities(step)
        none: dict[str, float] = {}
        chosen = decided if decided is not None else [None] * len(own.loads)
        return tuple(
            EntityState(e, load, features.get(e, none), preds.get(e), shares.get(e), d,
                        *who.get(e, NO_IDENTITY))
            for (e, load), d in zip(own.loads.items(), chosen, strict=True)
        )  # fmt: skip

    def identities(self, step: Step) -> Mapping[str, Identity]:
        """Who each entity is, for its :class:`~tuner.window.EntityState`: pid, tid, cpu and
        that CPU's load (an entity not named: none of them apply). Made once a window."""
        return {}

    def set_mode(self, mode: str) -> None:
        """The agent switched mode."""

    def retarget(self, workers: WorkerMap) -> None:
        """The workers changed (see :meth:`tuner.agent.loop.Agent.retarget`)."""


class SteeredChannel(Channel):
    """A channel whose entities are the targets of a steering table."""

    def __init__(self, learner: Learner, policy: SharePolicy, steering: Steering) -> None:
        super().__init__(learner)
        self.policy = policy
        self.steering = steering
        self.holding = False  # active mode: the kernel holds this channel's current table
        self.written = 0  # tables written (or renewed after a switch) since start
        self._names: list[str] = []

    def shares_in_force(self) -> dict[str, float]:
        n = len(self._names)
        shares = self.policy.shares_ or ([1.0 / n] * n if n else [])
        return dict(zip(self._names, shares, strict=False))

    def predict(
        self, own: Measurement, features: dict[str, dict[str, float]]
    ) -> dict[str, Prediction]:
        self._names = list(own.loads)
        self.in_force = self.shares_in_force()  # before this window's decision changes it
        return super().predict(own, features)

    def decide(self, step: Step) -> TableDecision | None:
        """The table for the next window, or None when there is nothing to decide on."""
        raise NotImplementedError

    def act(self, step: Step) -> ChannelWindow:
        if step.fallback:
            self.fall_back(step.mode)
            outcome = TableOutcome(False, False, (), None, step.fallback)
            return ChannelWindow(self.name, self.entity_states(step), outcome)
        decision = self.decide(step)
        if decision is None:
            return ChannelWindow(self.name, self.entity_states(step))
        written = self.write(decision, step.mode)
        outcome = TableOutcome(
            written,
            decision.changed,
            tuple(decision.shares),
            tuple(decision.table) if decision.changed else None,
            decision.why,
        )
        states = self.entity_states(step, list(decision.shares))
        return ChannelWindow(self.name, states, outcome, **self.extras(step, decision))

    def extras(self, step: Step, decision: TableDecision) -> dict:
        """More outcome of this window for the :class:`~tuner.window.ChannelWindow`."""
        return {}

    def write(self, decision: TableDecision, mode: str) -> bool:
        """Write the table when it changed (or when active mode does not hold it yet), else
        renew the lease; True when the kernel has it."""
        if decision.changed or (mode == "active" and not self.holding):
            d = self.steering.apply(decision.table)
            if d.written:
                self.holding = True
                self.written += 1
            return d.written
        self.steering.renew()
        return mode == "active"

    def fall_back(self, mode: str) -> None:
        """Leave the kernel's placement in force: end the lease, forget the table."""
        if mode == "active":
            self.steering.expire()
        self.holding = False
        self.policy.reset()

    def set_mode(self, mode: str) -> None:
        self.steering.set_mode(mode)
        self.holding = False
