"""How N workers find each other: pure functions, no Spark and no TensorFlow.

The barrier backend gathers one ``host:port`` per task through the driver's
monitor (:meth:`tfos_lib.monitor.Reporter.meet`) and turns the list into each worker's
``TF_CONFIG`` with :func:`make_tf_config`.
"""

from __future__ import annotations

import json
import socket


def make_tf_config(worker_addresses: list[str], rank: int) -> dict:
    """Builds the ``TF_CONFIG`` for one worker of a MultiWorkerMirroredStrategy cluster.

    All workers are of type ``worker``; worker 0 is the chief (it writes
    checkpoints and the model), which is how MultiWorkerMirroredStrategy treats a
    cluster without an explicit ``chief`` job.

    Args:
        worker_addresses: ``host:port`` of every worker, indexed by rank.
        rank: this worker's index into ``worker_addresses``.

    Returns:
        ``{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": rank}}``.

    Raises:
        ValueError: on an empty list, a rank out of range, an address that is not
            ``host:port``, or the same address twice.
    """
    if not worker_addresses:
        raise ValueError("worker_addresses is empty: a TensorFlow cluster needs at least one worker.")
    if not 0 <= rank < len(worker_addresses):
        raise ValueError(
            f"rank must be in [0, {len(worker_addresses)}) for {len(worker_addresses)} workers; got rank={rank}."
        )
    for address in worker_addresses:
        host, _, port = address.rpartition(":")
        if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise ValueError(f"worker address must be 'host:port' with a port in 1..65535; got {address!r}.")
    duplicates = sorted({a for a in worker_addresses if worker_addresses.count(a) > 1})
    if duplicates:
        raise ValueError(f"two workers were given the same address {duplicates}; each needs its own port.")
    return {
        "cluster": {"worker": list(worker_addresses)},
        "task": {"type": "worker", "index": rank},
    }


def tf_config_json(worker_addresses: list[str], rank: int) -> str:
    """:func:`make_tf_config` as the JSON string TensorFlow reads from the environment."""
    return json.dumps(make_tf_config(worker_addresses, rank))


def find_free_port(host: str = "") -> int:
    """Returns a TCP port that was free on this host a moment ago.

    TensorFlow binds it a few seconds later; another process could take it in
    between, which makes the gRPC server fail to start and the job fail (not hang).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        return sock.getsockname()[1]
