"""Entry point of a worker's child process: ``python -m tfos_lib.worker_main SPEC``.

Kept apart from :mod:`tfos_lib.worker` (which ``import tfos_lib`` loads) so that
``-m`` does not execute an already-imported module a second time.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import traceback

from tfos_lib.tfenv import import_tensorflow
from tfos_lib.worker import WorkerSpec, run_in_process


def main(spec_path: str) -> int:
    if not os.path.exists(spec_path):
        # Started early by WorkerProcess: import TensorFlow while the Spark task still
        # receives its data, then wait for the work. If the task dies, so do we
        # (PR_SET_PDEATHSIG), so the wait needs no timeout of its own.
        import_tensorflow()
        while not os.path.exists(spec_path):
            time.sleep(0.05)
    with open(spec_path, "rb") as f:
        spec: WorkerSpec = pickle.load(f)
    try:
        outcome = {"ok": True, "value": run_in_process(spec)}
        code = 0
    except BaseException:
        outcome = {"ok": False, "traceback": traceback.format_exc()}
        code = 1
    try:
        data = pickle.dumps(outcome)
    except Exception:
        data = pickle.dumps(
            {"ok": False, "traceback": "train_fn returned a value that cannot be pickled:\n" + traceback.format_exc()}
        )
        code = 1
    tmp = spec.result_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, spec.result_path)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
