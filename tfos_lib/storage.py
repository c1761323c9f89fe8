"""Where outputs go: local paths and filesystem URIs, through ``pyarrow.fs``.

Every path a job writes (``--output-dir`` and what is under it) may be a local
path or a URI of a filesystem Spark users keep data on:

=====================  =========================================================
``/x``, ``file:///x``  the local (or a mounted, shared) filesystem
``s3://``, ``s3a://``  Amazon S3 and S3-compatible stores (pyarrow's S3 client;
                       ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ... as usual)
``gs://``, ``gcs://``  Google Cloud Storage (pyarrow's GCS client)
``hdfs://``            HDFS (pyarrow's libhdfs binding: needs ``HADOOP_HOME`` and
                       ``CLASSPATH`` set as Hadoop's docs describe)
``abfs://``/``abfss``  Azure Data Lake Storage Gen2 (pyarrow's Azure client)
``dbfs:/x``            Databricks: DBFS through its FUSE mount ``/dbfs/x``
=====================  =========================================================

TensorFlow 2.21 has no S3/GCS/HDFS filesystem of its own (they moved to the
``tensorflow-io`` package, which has no build for it), so TensorFlow always writes
to a local directory on the worker and :mod:`tfos_lib.context` copies it to the
URI through this module: checkpoints after every save, everything else when
``train_fn`` returns. Nothing here imports TensorFlow or Spark.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
from typing import Iterator

#: URI scheme -> how it is reached; anything else is refused by :func:`normalize`.
SCHEMES = {
    "file": "local", "s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "hdfs": "hdfs", "viewfs": "hdfs",
    "abfs": "abfs", "abfss": "abfs", "dbfs": "dbfs",
}


def scheme(path: str) -> str | None:
    """``"s3a"`` for ``s3a://b/x``, ``"dbfs"`` for ``dbfs:/x``, None for a local path."""
    head, sep, _ = str(path).partition(":")
    if sep and len(head) > 1 and head.replace("+", "").replace("-", "").replace(".", "").isalnum() and (
        str(path)[len(head) + 1:].startswith("/")
    ):
        return head.lower()
    return None


def is_remote(path: str) -> bool:
    """True for a URI that is not on a local (or mounted) filesystem: written through :func:`filesystem`."""
    return scheme(path) not in (None, "file", "dbfs")


def require_mounted(path: str, why: str) -> str:
    """``path`` normalised, or a ValueError saying that this use (``why``) needs a local or mounted filesystem."""
    if is_remote(path):
        raise ValueError(
            f"--output-dir {path!r}: {why}, which needs a local path or a filesystem mounted on every host "
            "(NFS, /dbfs); object-store URIs are not supported for this job yet."
        )
    return normalize(path)


def normalize(path: str) -> str:
    """The canonical form of an output location: an absolute local path, or a URI without a trailing ``/``.

    ``file:///x`` becomes ``/x`` and ``dbfs:/x`` becomes ``/dbfs/x`` (Databricks' FUSE
    mount, where TensorFlow and Python write directly).

    Raises:
        ValueError: a URI scheme this module cannot write, naming the ones it can.
    """
    path = str(path)
    kind = scheme(path)
    if kind is None:
        return os.path.abspath(path)
    if kind not in SCHEMES:
        raise ValueError(
            f"cannot write to {path!r}: the scheme {kind}:// is not supported. Use a local path or one of "
            f"{', '.join(s + '://' for s in sorted(SCHEMES) if s != 'dbfs')}, dbfs:/ "
            "(or a filesystem mounted on every host, given as a local path)."
        )
    rest = path[len(kind) + 1:]
    if kind == "file":
        return os.path.abspath("/" + rest.lstrip("/"))
    if kind == "dbfs":
        return "/dbfs/" + rest.lstrip("/")
    if not rest.startswith("//") or not rest[2:].split("/", 1)[0]:
        raise ValueError(f"cannot write to {path!r}: a {kind}:// URI needs a bucket or host, as in {kind}://name/dir.")
    return path.rstrip("/")


def join(base: str, *parts: str) -> str:
    """``base`` joined with ``parts``: ``os.path.join`` for local paths, ``/`` for URIs (never ``abspath`` on a URI)."""
    base = normalize(base)
    return posixpath.join(base, *parts) if is_remote(base) else os.path.join(base, *parts)


def filesystem(uri: str):
    """``(pyarrow.fs.FileSystem, path inside it)`` for a remote URI (see :data:`SCHEMES`)."""
    from pyarrow import fs

    kind = SCHEMES[scheme(uri)]
    rest = uri.split("://", 1)[1]
    if kind == "s3":
        # Small objects go up in one PutObject (allow_delayed_open); AWS_ENDPOINT_URL and the
        # AWS_* credentials are read by the AWS SDK pyarrow embeds.
        options = {"allow_delayed_open": True}
        if os.environ.get("AWS_ENDPOINT_URL"):
            options["endpoint_override"] = os.environ["AWS_ENDPOINT_URL"]
        return fs.S3FileSystem(**options), rest
    if kind == "abfs":
        account_container, _, path = rest.partition("/")
        container, _, account = account_container.partition("@")
        filesystem_ = fs.AzureFileSystem(account_name=account.split(".")[0])
        return filesystem_, posixpath.join(container, path)
    return fs.FileSystem.from_uri(uri)


def exists(path: str) -> bool:
    path = normalize(path)
    if not is_remote(path):
        return os.path.exists(path)
    from pyarrow import fs

    filesystem_, inner = filesystem(path)
    return filesystem_.get_file_info(inner).type != fs.FileType.NotFound


def makedirs(path: str) -> None:
    path = normalize(path)
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)
    else:
        filesystem_, inner = filesystem(path)
        filesystem_.create_dir(inner, recursive=True)


def read_bytes(path: str) -> bytes:
    """The content of the file at ``path``. Raises FileNotFoundError when there is none."""
    path = normalize(path)
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read()
    filesystem_, inner = filesystem(path)
    try:
        with filesystem_.open_input_stream(inner) as f:
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as error:
        if not exists(path):
            raise FileNotFoundError(f"no file at {path}") from error
        raise


def write_bytes(path: str, data: bytes, exclusive: bool = False) -> None:
    """Writes ``data`` to ``path`` so that a reader sees the old or the new content, never a part.

    Local: a temporary file beside it and a rename (``exclusive``: fails with
    FileExistsError if ``path`` exists). Remote: one object upload, which object
    stores commit as a whole.
    """
    path = normalize(path)
    if not is_remote(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if exclusive:
            with open(path, "xb") as f:
                f.write(data)
            return
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "xb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return
    if exclusive and exists(path):
        raise FileExistsError(path)
    filesystem_, inner = filesystem(path)
    with filesystem_.open_output_stream(inner) as f:
        f.write(data)


def list_files(path: str) -> list[str]:
    """The files under directory ``path``, as paths relative to it (``/``-separated), sorted; [] if none."""
    path = normalize(path)
    if not is_remote(path):
        found = []
        for root, _, files in os.walk(path):
            found += [os.path.relpath(os.path.join(root, name), path).replace(os.sep, "/") for name in files]
        return sorted(found)
    from pyarrow import fs

    filesystem_, inner = filesystem(path)
    if filesystem_.get_file_info(inner).type != fs.FileType.Directory:
        return []
    infos = filesystem_.get_file_info(fs.FileSelector(inner, recursive=True, allow_not_found=True))
    return sorted(posixpath.relpath(i.path, inner) for i in infos if i.type == fs.FileType.File)


def delete(path: str) -> None:
    """Removes the file or directory tree at ``path`` (nothing there is fine)."""
    path = normalize(path)
    if not is_remote(path):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.unlink(path)
        return
    from pyarrow import fs

    filesystem_, inner = filesystem(path)
    kind = filesystem_.get_file_info(inner).type
    if kind == fs.FileType.Directory:
        filesystem_.delete_dir(inner)
    elif kind == fs.FileType.File:
        filesystem_.delete_file(inner)


def upload(local_dir: str, uri: str, exclude: tuple[str, ...] = (), last: tuple[str, ...] = (),
           prune: bool = False) -> list[str]:
    """Copies the files under ``local_dir`` to ``uri`` (a directory); returns the relative paths copied.

    ``exclude``: top-level names not to copy. ``last``: file names copied after all
    others (a checkpoint's index, so that a reader never finds an index whose data is
    missing). ``prune``: then delete files under ``uri`` that ``local_dir`` no longer has
    (old checkpoints), after the new ones are complete.
    """
    files = [rel for rel in list_files(local_dir) if rel.split("/", 1)[0] not in exclude]
    files.sort(key=lambda rel: posixpath.basename(rel) in last)
    for rel in files:
        with open(os.path.join(local_dir, rel), "rb") as f:
            write_bytes(join(uri, rel), f.read())
    if prune:
        keep = set(files)
        for rel in list_files(uri):
            if rel not in keep and rel.split("/", 1)[0] not in exclude:
                delete(join(uri, rel))
    return files


def download(uri: str, local_dir: str) -> list[str]:
    """Copies the files under ``uri`` into ``local_dir``; returns the relative paths copied ([] if none)."""
    files = list_files(uri)
    for rel in files:
        target = os.path.join(local_dir, *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(read_bytes(join(uri, rel)))
    return files


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local copy of the file or directory ``path``: ``path`` itself when local, else a temporary download."""
    path = normalize(path)
    if not is_remote(path):
        yield path
        return
    tmp = tempfile.mkdtemp(prefix="tfos-download-")
    try:
        if download(path, tmp):
            yield tmp
        else:  # a single file (or nothing: FileNotFoundError)
            target = os.path.join(tmp, posixpath.basename(path))
            with open(target, "wb") as f:
                f.write(read_bytes(path))
            yield target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def move(src: str, dst: str) -> None:
    """Moves the directory ``src`` to ``dst`` (a rename locally; copy then delete on object stores)."""
    src, dst = normalize(src), normalize(dst)
    if not is_remote(src) and not is_remote(dst):
        os.replace(src, dst)
        return
    with local_copy(src) as local:
        upload(local, dst)
    delete(src)


def multi_host(conf: dict[str, str]) -> bool:
    """Whether the Spark master in ``conf`` may run executors on other hosts than the driver's. Pure."""
    master = conf.get("spark.master", "local")
    if master.startswith(("local", "local-cluster")):
        return False
    host = master.split("://", 1)[-1].split(":", 1)[0]
    return not (master.startswith("spark://") and host in ("localhost", "127.0.0.1", _hostname()))


def _hostname() -> str:
    import socket

    return socket.gethostname()


SHARED_SETTING = "spark.tfos.sharedOutputDir"


def check_output_location(path: str, conf: dict[str, str]) -> str:
    """Normalizes ``path`` and refuses, before anything starts, an output location executors cannot share.

    A local path on a cluster whose executors run on other hosts would leave the model
    and checkpoints on one executor's disk; allowed only when ``spark.tfos.sharedOutputDir``
    is true (the path is a filesystem mounted on every host, e.g. NFS).

    Raises:
        ValueError: the scheme is unsupported, or a local path on a multi-host cluster; says how to fix it.
    """
    path = normalize(path)
    if is_remote(path) or not multi_host(conf) or conf.get(SHARED_SETTING, "false").lower() == "true":
        return path
    raise ValueError(
        f"the output directory {path!r} is a local path, but master={conf.get('spark.master')} runs executors on "
        "other hosts: the model and checkpoints would land on one executor's local disk. Use a URI every host "
        "reaches (s3a://bucket/dir, gs://, hdfs://, abfss://, dbfs:/), or, if this path is a filesystem mounted on "
        f"every host (NFS), pass --conf {SHARED_SETTING}=true."
    )


def default_data_dir(output_dir: str, name: str, conf: dict[str, str] | None = None) -> str:
    """Where a job writes the default data it generates when no ``--data-dir`` is given (local, for Spark to read).

    One rule for every job: under the output directory when that is a local (or
    mounted) path, so a rerun reuses it; when the output directory is a URI, in a
    local scratch folder of this host (``$TMPDIR/tfos-default-data/<name>-<hash of
    the URI>``): generated data is an offline demo, not a result, and Spark's readers
    need a path they can list. On a cluster whose executors run on other hosts such
    a folder is unreadable to them, so that case is refused.

    Raises:
        ValueError: a URI output directory with a multi-host master (``conf``): pass ``--data-dir``.
    """
    output_dir = normalize(output_dir)
    if not is_remote(output_dir):
        return os.path.join(output_dir, name)
    if conf is not None and multi_host(conf):
        raise ValueError(
            f"no --data-dir and --output-dir {output_dir!r} is a URI: the generated default data would be written to "
            f"the driver's local disk, which executors on other hosts (master={conf.get('spark.master')}) cannot "
            "read. Pass --data-dir with a path every executor reads (a shared filesystem or a URI Spark reads)."
        )
    import hashlib

    key = hashlib.sha256(output_dir.encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), "tfos-default-data", f"{name}-{key}")


def check_spark_writable(spark, path: str) -> None:
    """Refuses, before anything is written, a URI whose scheme Spark's Hadoop has no filesystem for.

    Spark's writers (Parquet, ML ``metadata/``) go through Hadoop's filesystems;
    pyspark's wheel has no connector for ``s3a://``, ``gs://`` or ``abfss://`` (they
    come as jars: ``hadoop-aws``, the GCS connector, ``hadoop-azure``).

    Raises:
        ValueError: naming the scheme and how to add its connector.
    """
    kind = scheme(path)
    if kind in (None, "file", "dbfs"):  # local, or Databricks' own dbfs:/ (its Spark has it)
        return
    jvm = spark.sparkContext._jvm
    try:
        jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(kind, spark.sparkContext._jsc.hadoopConfiguration())
    except Exception as error:  # py4j wraps Hadoop's UnsupportedFileSystemException / ClassNotFoundException
        jar = {"s3a": "org.apache.hadoop:hadoop-aws (matching pyspark's Hadoop " + _hadoop_version(jvm) + ")",
               "gs": "the GCS connector (com.google.cloud.bigdataoss:gcs-connector)",
               "abfs": "org.apache.hadoop:hadoop-azure", "abfss": "org.apache.hadoop:hadoop-azure"}.get(kind)
        raise ValueError(
            f"Spark cannot write to {path!r}: its Hadoop has no filesystem for {kind}:// here"
            + (f" (add {jar} with --packages or --jars)" if jar else "")
            + ". Use a path or URI Spark can write, e.g. a local or mounted path."
            + f" [{str(error).splitlines()[0][:200]}]"
        ) from None


def _hadoop_version(jvm) -> str:
    try:
        return str(jvm.org.apache.hadoop.util.VersionInfo.getVersion())
    except Exception:
        return "3.x"
