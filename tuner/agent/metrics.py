"""Prometheus metrics of a running agent on ``127.0.0.1:<metrics.port>`` (off by default).

Served in the text exposition format at ``/metrics``, rendered when scraped from a
:class:`~tuner.agent.loop.Snapshot` of the agent: windows, decisions, each entity's predicted
load and hotspot probability (every channel's), model and baseline error, records lost, mode,
and a histogram of the control-loop latency.

>>> from tuner.agent.loop import Snapshot
>>> from tuner.learn.scores import Skill
>>> k = SkillSummary(3, 1, Skill(0.1, None, None), Skill(0.2, None, None))
>>> print(render(Snapshot(3, 1, 0, "shadow", 0.1, 0.2, (0.5, 2.0), None, k)).splitlines()[0])
# TYPE tuner_windows_total counter
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from tuner.errors import TunerError
from tuner.learn.scores import SkillSummary

if TYPE_CHECKING:
    from tuner.agent.loop import Snapshot

BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 250)
MAX_CLIENTS = 8  # scrapes served at once; more are closed unanswered
CLIENT_TIMEOUT_S = 2.0  # a client must send its request within this


class _Server(ThreadingHTTPServer):
    """A ThreadingHTTPServer that serves at most :data:`MAX_CLIENTS` at once and drops a
    broken or slow client quietly (200 half-open connections once filled the agent's stderr
    with thousands of BrokenPipe tracebacks)."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away or sent garbage: nothing to report


def skill_lines(k: SkillSummary) -> list[str]:
    """The learner's record since the start: error and hotspot precision and recall, of the
    model and of the last-value baseline, for the next window and over the horizon (a
    precision or recall that is not defined yet, with no hotspot called or seen, is left
    out).

    >>> from tuner.learn.scores import Skill
    >>> k = SkillSummary(9, 10, Skill(0.1, 0.9, None), Skill(0.2, 0.5, 0.5))
    >>> [x for x in skill_lines(k) if "precision" in x and "TYPE" not in x]
    ['tuner_hotspot_precision{model="model",horizon="1"} 0.9', \
'tuner_hotspot_precision{model="baseline",horizon="1"} 0.5']
    """
    rows = [("model", "1", k.model), ("baseline", "1", k.baseline)]
    if k.horizon_model is not None and k.horizon_baseline is not None:
        h = str(k.horizon)
        rows += [("model", h, k.horizon_model), ("baseline", h, k.horizon_baseline)]
    out = []
    for name, value in (
        ("tuner_prequential_mae", lambda sk: sk.mae),
        ("tuner_hotspot_precision", lambda sk: sk.precision),
        ("tuner_hotspot_recall", lambda sk: sk.recall),
    ):
        out.append(f"# TYPE {name} gauge")
        for model, horizon, sk in rows:
            if (v := value(sk)) is not None:
                out.append(f'{name}{{model="{model}",horizon="{horizon}"}} {v}')
    return out


def render(snap: Snapshot) -> str:
    """The metrics of one snapshot in Prometheus' text format."""
    lat = snap.latency_ms
    lines = [
        "# TYPE tuner_windows_total counter",
        f"tuner_windows_total {snap.windows}",
        "# TYPE tuner_decisions_written_total counter",
        f"tuner_decisions_written_total {snap.decisions_written}",
        "# TYPE tuner_records_lost_total counter",
        f"tuner_records_lost_total {snap.records_lost}",
        "# TYPE tuner_entities_refused_total counter",  # no slot free: not observed
        *(f'tuner_entities_refused_total{{probe="{p}"}} {n}' for p, n in snap.refused),
        "# TYPE tuner_placed_total counter",  # new connections the table placed, per target
        *(
            f'tuner_placed_total{{channel="{ch}",target="{i}"}} {n}'
            for ch, p in snap.placements
            for i, n in enumerate(p.by_target)
        ),
        "# TYPE tuner_left_to_kernel_total counter",  # ... and those the kernel placed, why
        *(
            f'tuner_left_to_kernel_total{{channel="{ch}",why="{why}"}} {n}'
            for ch, p in snap.placements
            for why, n in p.kernel.items()
        ),
        "# TYPE tuner_active gauge",
        f"tuner_active {int(snap.mode == 'active')}",
        "# TYPE tuner_fallback gauge",  # the last window left the kernel's placement in force
        f"tuner_fallback {int(bool(snap.last is not None and snap.last.fallback))}",
        "# TYPE tuner_guard_trips_total counter",
        f"tuner_guard_trips_total {snap.guard_trips}",
        "# TYPE tuner_model_mae gauge",
        f'tuner_model_mae{{model="model"}} {snap.model_mae}',
        f'tuner_model_mae{{model="baseline"}} {snap.baseline_mae}',
        *skill_lines(snap.skill),
    ]
    preds = [
        (c.name, e, p)
        for c in (snap.last.channels if snap.last is not None else ())
        if c.sockets is None  # connections come and go: their series would not
        for e, p in c.predictions().items()
    ]
    lines.append("# TYPE tuner_predicted_load gauge")
    for ch, e, p in preds:
        lines.append(f'tuner_predicted_load{{channel="{ch}",entity="{e}"}} {p.load}')
    lines.append("# TYPE tuner_hotspot_probability gauge")
    for ch, e, p in preds:
        lines.append(f'tuner_hotspot_probability{{channel="{ch}",entity="{e}"}} {p.p_hot}')
    lines.append("# TYPE tuner_loop_latency_ms histogram")
    for b in BUCKETS_MS:
        lines.append(f'tuner_loop_latency_ms_bucket{{le="{b}"}} {sum(x <= b for x in lat)}')
    lines.append(f'tuner_loop_latency_ms_bucket{{le="+Inf"}} {len(lat)}')
    lines.append(f"tuner_loop_latency_ms_sum {sum(lat)}")
    lines.append(f"tuner_loop_latency_ms_count {len(lat)}")
    return "\n".join(lines) + "\n"


class MetricsServer:
    """Serves :func:`render` of ``snapshot()`` on 127.0.0.1:``port`` in a background thread."""

    def __init__(self, port: int, snapshot: Callable[[], Snapshot]) -> None:
        self.port = port
        self.snapshot = snapshot
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> MetricsServer:
        snapshot = self.snapshot

        class Handler(BaseHTTPRequestHandler):
            timeout = CLIENT_TIMEOUT_S

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = render(snapshot()).encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body if self.path == "/metrics" else b"")

            def log_message(self, *args: object) -> None:
                pass

        try:
            self._server = _Server(("127.0.0.1", self.port), Handler)
        except OSError as e:
            raise TunerError(
                f"cannot serve metrics on 127.0.0.1:{self.port}: {e.strerror}",
                "pick a free port for metrics.port",
            ) from None
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
