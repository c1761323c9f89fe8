"""Live progress and watchdogs: workers report to a small server on the driver.

Every worker process connects to the driver's :class:`Monitor` (a TCP server on
a free port; executors can always reach the driver) and sends one JSON line per
event:

* ``{"kind": "started", "rank": r, "host": h}`` once TensorFlow is being set up;
* ``{"kind": "heartbeat", "rank": r, "phase": "fit", "epoch": e, "step": s}`` at most
  once a second while ``model.fit`` runs (from :class:`ProgressCallback`);
* ``{"kind": "epoch", ...metrics}`` from the chief at the end of every epoch, which
  the driver logs as one line;
* ``{"kind": "idle", "rank": r}`` when ``fit`` ends (no stall watch outside ``fit``).

The driver checks the deadlines in :class:`Timeouts`: every worker must report
``started`` within ``rendezvous`` seconds of the stage's start, and a worker in
``fit`` must heartbeat within ``stall`` seconds. When one is missed, the launcher
cancels the Spark job and raises :class:`~tfos_lib.errors.LauncherTimeout` naming the worker and
what it was doing.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
import time
from dataclasses import dataclass

from tfos_lib.errors import LauncherTimeout

log = logging.getLogger("tfos_lib")


@dataclass(frozen=True)
class Timeouts:
    """Bounded waits of the launcher, in seconds.

    Attributes:
        start: for enough executors (task slots) to register before the stage starts.
        rendezvous: from the stage's start until every worker has started (its
            task ran, spilled its data and launched TensorFlow).
        stall: longest time a worker inside ``model.fit`` may go without finishing a
            step (a peer that died or hangs leaves the others waiting in a collective).
        shutdown: for the remaining workers after the chief's result arrived.
    """

    start: float = 60.0
    rendezvous: float = 300.0
    stall: float = 600.0
    shutdown: float = 120.0


class Monitor:
    """Driver side: receives worker events, logs epoch lines, enforces :class:`Timeouts`.

    Use as a context manager; ``address`` is what workers connect to.
    """

    def __init__(self, num_workers: int, timeouts: Timeouts, host: str | None = None):
        self.num_workers = num_workers
        self.timeouts = timeouts
        self._lock = threading.Lock()
        self._state: dict[int, dict] = {}
        self._epochs: list[dict] = []
        self._stage_started: float | None = None
        self._chief_done_at: float | None = None
        self._first_step_logged = False
        monitor = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                for raw in self.rfile:
                    try:
                        event = json.loads(raw)
                    except ValueError:
                        continue
                    monitor._receive(event)

        bind_host = host or ""
        self._server = socketserver.ThreadingTCPServer((bind_host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="tfos-monitor", daemon=True)
        advertised = host or _driver_host()
        self.address = f"{advertised}:{self._server.server_address[1]}"

    def __enter__(self) -> "Monitor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def epochs(self) -> list[dict]:
        """The chief's per-epoch metrics received so far."""
        with self._lock:
            return list(self._epochs)

    def stage_started(self) -> None:
        """Marks the start of a (re)launch: resets per-worker state and starts the rendezvous clock."""
        with self._lock:
            self._state.clear()
            self._stage_started = time.monotonic()
            self._chief_done_at = None
            self._first_step_logged = False

    def _receive(self, event: dict) -> None:
        rank = int(event.get("rank", -1))
        kind = event.get("kind")
        now = time.monotonic()
        with self._lock:
            state = self._state.setdefault(rank, {"phase": "starting", "seen": now})
            state["seen"] = now
            if kind == "started":
                state.update(phase="starting TensorFlow", host=event.get("host"))
                if len(self._state) == self.num_workers and all("host" in v for v in self._state.values()):
                    log.info(
                        "all %d workers started %.1f s after launch", self.num_workers, now - self._stage_started
                    )
            elif kind == "heartbeat":
                if rank == 0 and event.get("step") and not self._first_step_logged:
                    self._first_step_logged = True
                    log.info("first training step done %.1f s after launch", now - self._stage_started)
                state.update(phase="fit", epoch=event.get("epoch"), step=event.get("step"))
            elif kind == "idle":
                state["phase"] = "outside fit"
            elif kind == "done":
                state["phase"] = "done"
                if rank == 0:
                    self._chief_done_at = now
            elif kind == "epoch":
                self._epochs.append(event)
        if kind == "epoch":
            log.info("%s", format_epoch(event))
        elif kind == "message":
            log.info("worker %d: %s", rank, event.get("text", ""))

    def check(self) -> None:
        """Raises :class:`LauncherTimeout` if a deadline has passed. Called by the launcher's wait loop."""
        now = time.monotonic()
        with self._lock:
            if self._stage_started is None:
                return
            missing = [r for r in range(self.num_workers) if r not in self._state]
            if missing and now - self._stage_started > self.timeouts.rendezvous:
                raise LauncherTimeout(
                    f"worker(s) {missing} did not start within {self.timeouts.rendezvous:.0f} s "
                    f"({len(self._state)} of {self.num_workers} started): their Spark tasks did not run or are still "
                    "receiving their data. Check the executors' logs; raise Timeouts.rendezvous "
                    "(--rendezvous-timeout) for very large inputs."
                )
            for rank, state in sorted(self._state.items()):
                if state["phase"] == "fit" and now - state["seen"] > self.timeouts.stall:
                    raise LauncherTimeout(
                        f"worker {rank} on {state.get('host') or '?'} made no progress for {self.timeouts.stall:.0f} s "
                        f"while training (epoch {state.get('epoch')}, step {state.get('step')}): it or a peer is stuck "
                        "in a collective. Raise Timeouts.stall (--stall-timeout) if single steps really take this long."
                    )
            if self._chief_done_at is not None and now - self._chief_done_at > self.timeouts.shutdown:
                waiting = [r for r, s in sorted(self._state.items()) if s["phase"] != "done"]
                raise LauncherTimeout(
                    f"the chief finished {self.timeouts.shutdown:.0f} s ago but worker(s) {waiting} did not "
                    f"(last phases: { {r: self._state[r]['phase'] for r in waiting} }). Raise Timeouts.shutdown."
                )


def format_epoch(event: dict) -> str:
    """``epoch 3/10: loss=0.1234 accuracy=0.9567 - 1,234 examples/s (12.3 s)``."""
    skip = {"kind", "rank", "epoch", "epochs", "examples_per_second", "seconds"}
    metrics = " ".join(f"{k}={v:.4f}" for k, v in event.items() if k not in skip and isinstance(v, (int, float)))
    speed = event.get("examples_per_second")
    tail = f" - {speed:,.0f} examples/s" if speed else ""
    seconds = event.get("seconds")
    tail += f" ({seconds:.1f} s)" if seconds else ""
    return f"epoch {event.get('epoch')}/{event.get('epochs')}: {metrics}{tail}"


def _driver_host() -> str:
    """An address of this host that executors can reach (Spark's own driver host when known)."""
    try:
        from pyspark import SparkContext

        sc = SparkContext._active_spark_context
        if sc is not None:
            return sc.getConf().get("spark.driver.host", socket.gethostname())
    except ImportError:
        pass
    return socket.gethostname()


class Reporter:
    """Worker side: sends events to the driver's :class:`Monitor` (best effort: never fails the worker)."""

    def __init__(self, address: str | None, rank: int):
        self.rank = rank
        self._sock = None
        if address:
            host, _, port = address.rpartition(":")
            try:
                self._sock = socket.create_connection((host, int(port)), timeout=10)
            except OSError as error:
                log.warning("cannot reach the driver's monitor at %s (%s); progress will not be reported", address, error)

    def send(self, kind: str, **fields) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendall((json.dumps({"kind": kind, "rank": self.rank, **fields}) + "\n").encode())
        except (OSError, TypeError, ValueError):
            pass

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
