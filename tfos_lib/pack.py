"""Builds the zip that ships ``tfos_lib`` to executors with ``spark-submit --py-files`` (no wrapper needed).

::

    python -m tfos_lib.pack build/tfos_lib.zip          # the tfos_lib this Python imports
    spark-submit --master yarn --py-files build/tfos_lib.zip jobs/mnist.py --num-workers 4

A wheel works too (``pip wheel --no-deps -w build .`` in a checkout, then
``--py-files build/tfos_lib-<version>-py3-none-any.whl``). Either way the
executors still need the third-party packages (TensorFlow, pyarrow, ...) installed
or shipped as a packed environment (``cluster/pack-env.sh``).
"""

from __future__ import annotations

import os
import sys
import zipfile


def build_zip(target: str, package_dir: str | None = None) -> str:
    """Writes every ``.py`` file of the ``tfos_lib`` package at ``package_dir`` (default: the imported one)
    into the zip ``target``, atomically (a temporary name, then a rename). Returns ``target``."""
    package_dir = os.path.abspath(package_dir or os.path.dirname(__file__))
    root = os.path.dirname(package_dir)
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    tmp = f"{target}.{os.getpid()}.tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for folder, dirs, files in os.walk(package_dir):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    zf.write(path, os.path.relpath(path, root))
    os.replace(tmp, target)
    return target


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[1] in ("-h", "--help"):
        print("usage: python -m tfos_lib.pack <target.zip> [<tfos_lib package directory>]", file=sys.stderr)
        sys.exit(2)
    print(build_zip(*sys.argv[1:]))
