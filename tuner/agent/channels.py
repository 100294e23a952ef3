"""The agent's four channels (see :mod:`tuner.agent.channel` for what a channel is).

- :class:`WorkerChannel` (steered): the workers of a reuseport group or the backend hosts
  behind an XDP entry. Shares by predicted spare room (per CPU for pinned workers, from the
  CPU channel's predictions), hot UDP flows pinned apart.
- :class:`CpuChannel`: the CPUs the workers are pinned to; feeds the workers' spare room.
- :class:`XdpChannel` (steered): the CPUs an XDP program spreads new flows over (cpumap).
- :class:`SocketChannel`: the workers' TCP connections; gives each worker ``live_load``.
"""

from __future__ import annotations

from collections.abc import Mapping

from tuner.actuate.steering import Steering
from tuner.agent.channel import Channel, Identity, Measurement, SteeredChannel, Step
from tuner.agent.sockets import SocketTable
from tuner.agent.workers import WorkerMap, cpu_loads
from tuner.learn.clients import ClientCosts, WorkerBytes
from tuner.learn.online import Learner
from tuner.policy.clients import ClientPolicy
from tuner.policy.flows import HotFlowPolicy
from tuner.policy.shares import SharePolicy, TableDecision, cpu_spare, table_for
from tuner.probes.base import Frame
from tuner.window import ChannelWindow, ClientPins, FlowPins, SocketSummary


class SocketChannel(Channel):
    """The workers' TCP connections (:mod:`tuner.agent.sockets`), each predicted on its own;
    each worker's ``live_load`` is the part of its load from connections still open."""

    name = "sockets"

    def __init__(
        self, learner: Learner, workers: WorkerMap, clients: ClientCosts | None = None
    ) -> None:
        super().__init__(learner)
        self.clients = clients  # what each client's connections cost (policy.clients)
        self.retarget(workers)

    def retarget(self, workers: WorkerMap) -> None:
        """Follow another set of workers (processes or threads)."""
        self.workers = workers
        self.table = SocketTable(workers)
        self.live_load: dict[str, float] = {}
        self.closed = 0

    def measure(self, frames: list[Frame], before: Mapping[str, Measurement]) -> Measurement:
        names = self.workers.names()
        worker_loads = before["workers"].loads
        sw = self.table.update(frames, {i: worker_loads.get(e, 0.0) for i, e in enumerate(names)})
        self.live_load = {names[i]: x for i, x in sw.live_load.items()}
        self.closed = len(sw.closed)
        if self.clients is not None:  # on-CPU time: the run-queue wait is the neighbours'
            feats = before["workers"].features
            loads = [
                worker_loads.get(e, 0.0) - feats.get(e, {}).get("runq_frac", 0.0) for e in names
            ]
            self.clients.update([WorkerBytes(loads[i], sw.by_client.get(i, {}))
                                 for i in range(len(names))])  # fmt: skip
        return Measurement(dict(sw.loads), {sk: {} for sk in sw.loads})

    def act(self, step: Step) -> ChannelWindow:
        followed = len(step.predicted.get(self.name, {}))
        scores = self.clients.scores() if self.clients is not None else None
        summary = SocketSummary(followed, self.closed, scores)
        return ChannelWindow(self.name, self.entity_states(step), sockets=summary)


class CpuChannel(Channel):
    """The CPUs the workers are pinned to: every task's on-CPU time plus the workers'
    run-queue wait, per window."""

    name = "cpus"

    def __init__(self, learner: Learner, cpus: list[int]) -> None:
        super().__init__(learner)
        self.cpus = list(cpus)

    def measure(self, frames: list[Frame], before: Mapping[str, Measurement]) -> Measurement:
        return cpu_loads(frames, self.cpus)

    def retarget(self, workers: WorkerMap) -> None:
        self.cpus = workers.cpus()


class XdpChannel(SteeredChannel):
    """The CPUs an XDP program spreads new flows over, by their predicted spare room."""

    name = "xdp"

    def __init__(
        self, learner: Learner, policy: SharePolicy, steering: Steering, cpus: list[int]
    ) -> None:
        super().__init__(learner, policy, steering)
        self.cpus = list(cpus)

    def measure(self, frames: list[Frame], before: Mapping[str, Measurement]) -> Measurement:
        return cpu_loads(frames, self.cpus)

    def decide(self, step: Step) -> TableDecision | None:
        preds = step.predicted.get(self.name)
        if not preds:
            return None
        return self.policy.decide([preds[f"cpu:{c}"].load for c in self.cpus])


def deciding_load(load: float, horizon_load: float | None, hot_guard: float = 0.0) -> float:
    """The load a worker's share is decided by: the next window's predicted ``load``, or the
    mean predicted over the horizon when given; with ``hot_guard`` above 0, a worker whose
    next window is predicted at least that hot is decided by the higher of the two (a
    connection placed now meets the queue it has now, and lives on over the horizon).

    >>> deciding_load(0.9, None), deciding_load(0.9, 0.4), deciding_load(0.9, 0.4, 0.8)
    (0.9, 0.4, 0.9)
    >>> deciding_load(0.7, 0.4, 0.8), deciding_load(0.85, 0.95, 0.8)
    (0.4, 0.95)
    """
    if horizon_load is None:
        return load
    if hot_guard > 0 and load >= hot_guard:
        return max(load, horizon_load)
    return horizon_load


class WorkerChannel(SteeredChannel):
    """The steered workers (or backend hosts), in target order."""

    name = "workers"

    def __init__(
        self,
        learner: Learner,
        policy: SharePolicy,
        steering: Steering,
        workers: WorkerMap,
        flow_policy: HotFlowPolicy | None = None,
        sockets: SocketChannel | None = None,
        pin_first: bool = False,
        by_horizon: bool = False,
        client_policy: ClientPolicy | None = None,
        hot_guard: float = 0.0,
    ) -> None:
        super().__init__(learner, policy, steering)
        self.workers = workers
        self.flow_policy = flow_policy or HotFlowPolicy(share=0.0)
        self.sockets = sockets
        self.pin_first = pin_first
        self.by_horizon = by_horizon  # decide by the horizon's predicted mean load
        self.hot_guard = hot_guard  # ... unless the next window's is at least this and higher
        # heavy clients placed apart: needs the sockets channel's client costs
        self.client_policy = client_policy
        self._flows: FlowPins | None = None
        self._clients: ClientPins | None = None

    def measure(self, frames: list[Frame], before: Mapping[str, Measurement]) -> Measurement:
        m = self.workers.measure(frames)
        counted = self.steering.counts_flows and self.flow_policy.enabled
        return Measurement(m.loads, m.features, self.steering.flow_hits() if counted else {})

    def features(
        self, own: Measurement, measured: Mapping[str, Measurement]
    ) -> dict[str, dict[str, float]]:
        if self.sockets is None:
            return own.features
        live = self.sockets.live_load
        return {e: {**x, "live_load": live.get(e, own.loads[e])} for e, x in own.features.items()}

    def decide(self, step: Step) -> TableDecision | None:
        preds = step.predicted[self.name]
        names = list(step.measured[self.name].loads)
        predicted = [
            deciding_load(p.load, p.horizon_load if self.by_horizon else None, self.hot_guard)
            for p in (preds[e] for e in names)
        ]
        if self.pin_first:  # everything to target 0: to test the guard
            shares = [1.0] + [0.0] * (len(names) - 1)
            decision = TableDecision(shares, table_for(shares), True, "pin-first policy")
        else:
            spare = None
            cpu_preds = step.predicted.get("cpus")
            if cpu_preds:
                by_cpu = {int(e.split(":")[1]): p.load for e, p in cpu_preds.items()}
                cpus = [e.cpu for e in self.workers.entities]
                spare = cpu_spare(predicted, cpus, by_cpu, self.policy.capacity)
            decision = self.policy.decide(predicted, spare)
        self._flows = None
        hits = step.measured[self.name].flows
        if hits:
            flows = self.flow_policy.decide(dict(hits), decision.table, predicted)
            self.steering.set_overrides(flows.overrides)
            self._flows = FlowPins(len(flows.hot), dict(flows.overrides), flows.why)
        self._clients = self._place_clients(predicted)
        return decision

    def _place_clients(self, predicted: list[float]) -> ClientPins | None:
        costs = self.sockets.clients if self.sockets is not None else None
        if self.client_policy is None or costs is None:
            return None
        cpus = [e.cpu for e in self.workers.entities]
        placement = self.client_policy.decide(costs.heavy(), predicted, cpus)
        written = self.steering.set_clients(placement.placed)
        return ClientPins(placement.placed, written, placement.why)

    def extras(self, step: Step, decision: TableDecision) -> dict:
        out: dict = {}
        if self._flows is not None:
            out["flows"] = self._flows
        if self._clients is not None:
            out["clients"] = self._clients
        return out

    def fall_back(self, mode: str) -> None:
        super().fall_back(mode)
        self.flow_policy.reset()
        if self.client_policy is not None:
            self.client_policy.reset()

    def retarget(self, workers: WorkerMap) -> None:
        old = {e.entity: e.members for e in self.workers.entities}
        replaced = [e.entity for e in workers.entities if old.get(e.entity) != e.members]
        self.learner.forget(replaced + [e for e in old if e not in workers.names()])
        self.workers = workers
        self.policy.reset()
        self.flow_policy.reset()
        if self.client_policy is not None:
            self.client_policy.reset()
            self.steering.set_clients({})  # indices of the old set mean nothing now
        self.holding = False

    def identities(self, step: Step) -> Mapping[str, Identity]:
        cpus = step.measured.get("cpus")
        if cpus is None:
            return self.workers.identities
        loads = cpus.loads
        return {name: (pid, tid, cpu, loads.get(f"cpu:{cpu}"))
                for name, (pid, tid, cpu, _) in self.workers.identities.items()}  # fmt: skip
