"""Live progress and watchdogs: workers report to a small server on the driver.

Every worker process connects to the driver's :class:`Monitor` (a TCP server bound
to the driver's address, ``spark.driver.host``, on a port from
``spark.tfos.monitor.port``: one port or a range ``40000-40100``; default any free
port) and sends one JSON line per event. The first line must carry the run's
secret (``{"kind": "hello", "secret": ..., "rank": r, "attempt": a}``; the secret
travels to the workers inside the Spark task payload): anything else, a line
longer than :data:`MAX_LINE` bytes, more than ``2 * num_workers + 4`` connections,
a rank out of range or an event of an earlier attempt is dropped. Text from
workers is escaped before it is logged (one event, one log line). Events:

* ``{"kind": "started", "rank": r, "host": h}`` once TensorFlow is being set up;
* ``{"kind": "heartbeat", "rank": r, "phase": "fit", "epoch": e, "step": s}`` at most
  once a second while ``model.fit`` runs (from :class:`ProgressCallback`);
* ``{"kind": "epoch", ...metrics}`` from the chief at the end of every epoch, which
  the driver logs as one line;
* ``{"kind": "idle", "rank": r}`` when ``fit`` ends (no stall watch outside ``fit``).

One request has a reply: the rendezvous. Each barrier task sends
``{"kind": "meet", "record": {...}}`` (its TensorFlow server's ``host:port`` and the
rows of its shard) and reads back ``{"kind": "met", "records": [...]}``, every
worker's record by rank, once all ``num_workers`` of the attempt have sent theirs
(:meth:`Reporter.meet`). Spark's own ``BarrierTaskContext.allGather`` does the same
but polls in 1-second sleeps, a second lost on every launch.

The driver checks the deadlines in :class:`Timeouts`: every worker must report
``started`` within ``rendezvous`` seconds of the stage's start, and a worker in
``fit`` must heartbeat within ``stall`` seconds. When one is missed, the launcher
cancels the Spark job and raises :class:`~tfos_lib.errors.LauncherTimeout` naming the worker and
what it was doing.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import socket
import socketserver
import threading
import time
from dataclasses import dataclass

from tfos_lib.errors import LauncherTimeout

log = logging.getLogger("tfos_lib")

#: The Spark setting with the monitor's port, or a range ``first-last`` to take the first free one of.
PORT_SETTING = "spark.tfos.monitor.port"
#: Longest event line (bytes) the monitor reads; a longer one closes that connection.
MAX_LINE = 64 * 1024
KINDS = frozenset({"started", "heartbeat", "idle", "done", "epoch", "message", "phase", "meet"})


#: Driver-side callables ``fn(event)`` called with every chief ``epoch`` event (e.g. tfos_lib.tracking's MLflow run).
EPOCH_LISTENERS: list = []


def escape(text) -> str:
    """``text`` with control characters (newlines too) escaped, so that it cannot break or forge a log line."""
    text = str(text)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def parse_ports(value: str | None) -> list[int]:
    """``"0"``/None -> [0] (any free port); ``"40000"`` -> [40000]; ``"40000-40010"`` -> that range. Pure."""
    if value in (None, "", "0"):
        return [0]
    first, _, last = str(value).partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        low = high = -1
    if not 0 < low <= high < 65536:
        raise ValueError(f"{PORT_SETTING} must be a port or a range like 40000-40100 (1..65535); got {value!r}.")
    return list(range(low, high + 1))


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
        phase: longest time a worker may spend outside ``fit`` without reporting
            anything: creating the strategy and loading data before the first step,
            evaluating and saving after training (``ctx.phase(name)`` reports a new
            phase and restarts this clock).
        deadline: ``time.monotonic()`` value by which the whole job must be done
            (a job's ``--time-limit``); None: no limit.
    """

    start: float = 60.0
    rendezvous: float = 300.0
    stall: float = 600.0
    shutdown: float = 120.0
    phase: float = 1800.0
    deadline: float | None = None


class Monitor:
    """Driver side: receives worker events, logs epoch lines, enforces :class:`Timeouts`.

    Use as a context manager; ``address`` is what workers connect to.
    """

    def __init__(self, num_workers: int, timeouts: Timeouts, host: str | None = None, ports: str | None = None):
        self.num_workers = num_workers
        self.timeouts = timeouts
        self.secret = secrets.token_hex(16)
        self.max_connections = 2 * num_workers + 4
        self._lock = threading.Lock()
        self._state: dict[int, dict] = {}
        self._epochs: list[dict] = []
        self._stage_started: float | None = None
        self._chief_done_at: float | None = None
        self._first_step_logged = False
        self._attempt = 0
        self._connections = 0
        # The rendezvous: records of this round by rank; a full round is answered and the next one starts
        # empty (a stage Spark retries within one attempt meets again).
        self._meeting: dict[int, dict] = {}
        self._met_round = 0
        self._met_records: list[dict] = []
        self._met = threading.Condition(self._lock)
        self._closed = False
        self.refused: list[str] = []  # why connections or events were dropped (for logs and tests)
        monitor = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                with monitor._lock:
                    if monitor._connections >= monitor.max_connections:
                        monitor._refuse(f"connection from {self.client_address[0]}: over {monitor.max_connections}")
                        return
                    monitor._connections += 1
                try:
                    monitor._serve(self.rfile, self.client_address[0], self.wfile)
                finally:
                    with monitor._lock:
                        monitor._connections -= 1

        settings = _spark_settings()
        bind_host = host or settings.get("spark.driver.bindAddress") or settings.get("spark.driver.host") or ""
        self._server = _bind(bind_host, parse_ports(ports if ports is not None else settings.get(PORT_SETTING)), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="tfos-monitor", daemon=True)
        self.host = host or settings.get("spark.driver.host") or socket.gethostname()
        self.port = self._server.server_address[1]
        #: What workers are given (inside the task payload): ``secret@host:port``.
        self.address = f"{self.secret}@{self.host}:{self.port}"

    def _refuse(self, why: str) -> None:
        self.refused.append(why)
        log.warning("progress monitor: dropped %s", escape(why))

    def _serve(self, rfile, peer: str, wfile) -> None:
        """One worker's connection: the hello with the secret, then events of that rank and attempt (and its meet)."""
        hello = _read_event(rfile)
        if not isinstance(hello, dict) or hello.get("kind") != "hello" or not hmac.compare_digest(
            str(hello.get("secret", "")).encode(), self.secret.encode()
        ):
            self._refuse(f"connection from {peer}: no valid secret")
            return
        rank, attempt = hello.get("rank"), hello.get("attempt")
        if not (isinstance(rank, int) and 0 <= rank < self.num_workers) or attempt != self._attempt:
            self._refuse(f"connection from {peer}: rank {rank!r} / attempt {attempt!r} not of this run's attempt "
                         f"{self._attempt} with ranks 0..{self.num_workers - 1}")
            return
        while True:
            event = _read_event(rfile)
            if event is None:
                return
            if event is _TOO_LONG:
                self._refuse(f"connection from {peer} (rank {rank}): a line over {MAX_LINE} bytes")
                return
            if not isinstance(event, dict) or event.get("kind") not in KINDS or event.get("rank", rank) != rank:
                self._refuse(f"an invalid event from rank {rank}: {str(event)[:200]}")
                continue
            if attempt != self._attempt:
                return  # a relaunch started: this connection belongs to a past attempt
            if event["kind"] == "meet":
                record = event.get("record")
                records = self._meet(rank, attempt, record if isinstance(record, dict) else {})
                if records is None:
                    return  # a relaunch or the end of the run: the task is being cancelled
                wfile.write((json.dumps({"kind": "met", "records": records}) + "\n").encode())
                wfile.flush()
                continue
            self._receive(event | {"rank": rank})

    def __enter__(self) -> "Monitor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with self._met:
            self._closed = True
            self._met.notify_all()
        self._server.shutdown()
        self._server.server_close()

    @property
    def epochs(self) -> list[dict]:
        """The chief's per-epoch metrics received so far."""
        with self._lock:
            return list(self._epochs)

    def stage_started(self, attempt: int = 0) -> None:
        """Marks the start of (re)launch ``attempt``: resets per-worker state and starts the rendezvous clock."""
        with self._lock:
            self._attempt = attempt
            self._state.clear()
            self._stage_started = time.monotonic()
            self._chief_done_at = None
            self._first_step_logged = False
            self._meeting.clear()
            self._met.notify_all()  # tasks of the previous attempt still waiting to meet give up

    def _meet(self, rank: int, attempt: int, record: dict) -> list[dict] | None:
        """Blocks until every rank of ``attempt`` has sent its record; None if the attempt or the run ends first."""
        with self._met:
            self._meeting[rank] = record  # a task Spark restarted replaces its predecessor's record
            joined = self._met_round
            if len(self._meeting) == self.num_workers:
                self._met_records = [self._meeting[r] for r in range(self.num_workers)]
                self._meeting = {}
                self._met_round += 1
                self._met.notify_all()
                if self._stage_started is not None:
                    log.debug("all %d workers met %.2f s after launch", self.num_workers,
                              time.monotonic() - self._stage_started)
            while self._met_round == joined and self._attempt == attempt and not self._closed:
                self._met.wait(5.0)
            return list(self._met_records) if self._met_round != joined else None

    def _receive(self, event: dict) -> None:
        rank = int(event.get("rank", -1))
        kind = event.get("kind")
        now = time.monotonic()
        with self._lock:
            state = self._state.setdefault(rank, {"phase": "starting", "seen": now})
            state["seen"] = now
            if kind == "started":
                state.update(phase="starting TensorFlow", host=escape(event.get("host")))
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
                state["phase"] = "after training (evaluate, save)"
            elif kind == "phase":
                state["phase"] = escape(event.get("name", "?"))[:100]
            elif kind == "done":
                state["phase"] = "done"
                if rank == 0:
                    self._chief_done_at = now
            elif kind == "epoch":
                self._epochs.append(event)
        if kind == "epoch":
            log.info("%s", format_epoch(event))
            for listener in list(EPOCH_LISTENERS):
                try:
                    listener(dict(event))
                except Exception:  # a tracker's failure must not stop training
                    log.exception("epoch listener %r failed", listener)
        elif kind == "message":
            log.info("worker %d: %s", rank, escape(event.get("text", "")))

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
                    "receiving their data, or they cannot reach this monitor at "
                    f"{self.host}:{self.port} (then their tasks fail saying so). Check the executors' logs; raise "
                    "Timeouts.rendezvous for very large inputs."
                )
            for rank, state in sorted(self._state.items()):
                if state["phase"] == "fit" and now - state["seen"] > self.timeouts.stall:
                    raise LauncherTimeout(
                        f"worker {rank} on {state.get('host') or '?'} made no progress for {self.timeouts.stall:.0f} s "
                        f"while training (epoch {state.get('epoch')}, step {state.get('step')}): it or a peer is stuck "
                        "in a collective. Raise Timeouts.stall (--stall-timeout) if single steps really take this long."
                    )
            if self.timeouts.deadline is not None and now > self.timeouts.deadline:
                raise LauncherTimeout(
                    "the job's time limit (--time-limit) ran out while the workers were training (phases: "
                    f"{ {r: s['phase'] for r, s in sorted(self._state.items())} })."
                )
            for rank, state in sorted(self._state.items()):
                if state["phase"] not in ("fit", "done") and now - state["seen"] > self.timeouts.phase:
                    raise LauncherTimeout(
                        f"worker {rank} on {state.get('host') or '?'} reported nothing for {self.timeouts.phase:.0f} s "
                        f"while {state['phase']!r} (outside model.fit: creating the strategy, loading data, evaluating "
                        "or saving): it hangs or waits for a peer. Raise Timeouts.phase if this step really takes "
                        "that long, or report progress with ctx.phase(name)."
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
    metrics = " ".join(f"{escape(k)}={v:.4f}" for k, v in event.items() if k not in skip and isinstance(v, (int, float)))
    speed = event.get("examples_per_second")
    tail = f" - {speed:,.0f} examples/s" if speed else ""
    seconds = event.get("seconds")
    tail += f" ({seconds:.1f} s)" if seconds else ""
    return f"epoch {escape(event.get('epoch'))}/{escape(event.get('epochs'))}: {metrics}{tail}"


def _spark_settings() -> dict[str, str]:
    """The active SparkContext's settings ({} without one)."""
    try:
        from pyspark import SparkContext
    except ImportError:
        return {}
    sc = SparkContext._active_spark_context
    return dict(sc.getConf().getAll()) if sc is not None else {}


def _bind(host: str, ports: list[int], handler):
    """A server on the first free port of ``ports`` (``[0]``: any)."""
    for port in ports:
        try:
            return socketserver.ThreadingTCPServer((host, port), handler)
        except OSError as error:
            last = error
    raise RuntimeError(
        f"the progress monitor cannot listen on {host or '*'} port(s) {ports[0]}-{ports[-1]} ({last}); set "
        f"{PORT_SETTING} to a free port or range (e.g. --conf {PORT_SETTING}=40000-40100)."
    )


_TOO_LONG = object()


def _read_event(rfile):
    """The next JSON line (None at the end, ``_TOO_LONG`` for a line over MAX_LINE, {} for bad JSON)."""
    raw = rfile.readline(MAX_LINE + 1)
    if not raw:
        return None
    if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
        return _TOO_LONG
    try:
        return json.loads(raw)
    except ValueError:
        return {}


class MonitorUnreachable(RuntimeError):
    """A worker cannot connect to the driver's progress monitor."""


class Reporter:
    """Worker side: sends events to the driver's :class:`Monitor`.

    ``address`` is :attr:`Monitor.address` (``secret@host:port``) or None (no
    monitor). Failing to connect raises :class:`MonitorUnreachable` (the driver's
    deadlines need these events); a send that fails later is ignored.
    """

    def __init__(self, address: str | None, rank: int, attempt: int = 0):
        self.rank = rank
        self._sock = None
        if address:
            secret, _, where = address.rpartition("@")
            host, _, port = where.rpartition(":")
            try:
                self._sock = socket.create_connection((host, int(port)), timeout=10)
            except OSError as error:
                raise MonitorUnreachable(
                    f"worker {rank} on {socket.gethostname()} cannot reach the driver's progress monitor at "
                    f"{host}:{port} ({error}). Executors must be able to open TCP connections to the driver on this "
                    f"port: open it in the firewall/security group, or set {PORT_SETTING} to a port or range that is "
                    "open (e.g. --conf spark.tfos.monitor.port=40000-40100), and spark.driver.host to an address "
                    "executors can reach."
                ) from None
            self._send({"kind": "hello", "secret": secret, "rank": rank, "attempt": attempt})

    def meet(self, record: dict) -> list[dict]:
        """Sends this worker's ``record`` (small, JSON); returns every worker's by rank once all have sent theirs.

        Waits as long as the driver does (its :attr:`Timeouts.rendezvous` cancels
        the stage when a worker never comes).

        Raises:
            MonitorUnreachable: without a monitor, or the driver closed the connection
                first (the run was cancelled or relaunched).
        """
        if self._sock is None:
            raise MonitorUnreachable("the rendezvous needs the driver's progress monitor; this worker has none.")
        self._sock.settimeout(None)
        self._sock.sendall((json.dumps({"kind": "meet", "rank": self.rank, "record": record}) + "\n").encode())
        with self._sock.makefile("rb") as replies:
            reply = _read_event(replies)
        if not isinstance(reply, dict) or reply.get("kind") != "met":
            raise MonitorUnreachable(
                f"worker {self.rank}: the driver's progress monitor closed the rendezvous before every worker had "
                "met (the run was cancelled or relaunched)."
            )
        return list(reply["records"])

    def send(self, kind: str, **fields) -> None:
        self._send({"kind": kind, "rank": self.rank, **fields})

    def _send(self, event: dict) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendall((json.dumps(event) + "\n").encode())
        except (OSError, TypeError, ValueError):
            pass

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
