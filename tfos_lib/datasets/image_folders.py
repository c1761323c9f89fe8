"""Images in class folders as a Spark DataFrame, image decoding, and the offline default images.

A dataset is a directory with one folder per class (``buses/``, ``cars/``); each
file's label is its folder. :func:`read_image_folders` reads every file with
Spark's ``binaryFile`` source (works on local, HDFS and S3 paths), and marks each
row that cannot be used (not an image, corrupt, truncated, outside a class
folder) with the reason, so a job can count and skip them instead of crashing.

:func:`write_synthetic_image_folders` writes the offline default: JPEG drawings of
buses and cars, two classes a small model tells apart.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "ImageFolders",
    "decode_image",
    "read_image_folders",
    "thumbnails",
    "write_synthetic_image_folders",
]


def decode_image(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """Decodes an image file's bytes to RGB ``uint8`` pixels of ``size`` (height, width).

    Runs wherever it is called (executors, in the featurizer). Honors the EXIF
    orientation (phone photos), converts grey, palette and RGBA images to RGB, and
    resizes bilinearly without keeping the aspect ratio (as Keras'
    ``load_img(target_size=...)`` and sparkdl did).

    Raises:
        ValueError: the bytes are not a decodable image (the message says why).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if data is None or len(data) == 0:
        raise ValueError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = ImageOps.exif_transpose(image)
            image = image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except UnidentifiedImageError:
        raise ValueError("not an image file (no known image format)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        # Truncated or corrupt data: PIL raises OSError ("image file is truncated") or SyntaxError.
        raise ValueError(f"corrupt image: {error}") from None


def image_error(data: bytes | None) -> str | None:
    """Why these bytes cannot be used as an image, or None if they decode. Runs on executors."""
    try:
        decode_image(data, (8, 8))
    except ValueError as error:
        return str(error)
    return None


@dataclass(frozen=True)
class ImageFolders:
    """What :func:`read_image_folders` found.

    Attributes:
        df: one row per file: ``path`` (string URI), ``class`` (folder name),
            ``label`` (int: the class's index in ``classes``, -1 outside a class
            folder), ``content`` (binary), ``error`` (string: why the file is
            unusable, null if it decodes).
        classes: class names in label order (sorted folder names).
        root: the dataset directory as a qualified URI.
        empty_files: zero-byte files (URIs); Spark's ``binaryFile`` source does
            not return them, so they are not in ``df``.
    """

    df: "DataFrame"
    classes: tuple[str, ...]
    root: str
    empty_files: tuple[str, ...] = ()


def read_image_folders(spark: "SparkSession", data_dir: str, check: bool = True) -> ImageFolders:
    """Reads every file under ``data_dir`` as one row, labelled by its class folder. Runs on the driver.

    Spark skips files whose names start with ``.`` or ``_``, and empty files
    (those are listed in :attr:`ImageFolders.empty_files`). Files directly in
    ``data_dir`` (not in a class folder) get label -1 and an error. Decoding
    checks (``check=True``) run lazily in the executors; cache the result if you
    use it more than once.

    Args:
        spark: the session.
        data_dir: the dataset directory (any Hadoop filesystem path).
        check: decode every file once to fill ``error``; False leaves it null.

    Returns:
        :class:`ImageFolders`.

    Raises:
        FileNotFoundError: ``data_dir`` does not exist or is not a directory.
        ValueError: it holds no class folder.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    root, folders = _list_classes(spark, data_dir)
    if not folders:
        raise ValueError(
            f"{data_dir} has no class folders: expected one sub-directory per class (e.g. buses/ and cars/) "
            "holding that class's images."
        )
    classes = tuple(sorted(folders))
    df = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(root)
    # The class is the first folder below the root; Spark's paths are qualified like the root.
    prefix = root.rstrip("/") + "/"
    relative = F.substring(F.col("path"), len(prefix) + 1, 1 << 30)
    class_name = F.when(relative.contains("/"), F.substring_index(relative, "/", 1))
    label = F.coalesce(F.array_position(F.array(*[F.lit(c) for c in classes]), class_name).cast("int") - 1, F.lit(-1))
    df = df.select("path", class_name.alias("class"), label.alias("label"), "content")

    @pandas_udf("string")
    def errors(contents):
        import pandas as pd

        return pd.Series([image_error(data) for data in contents], dtype=object)

    checked = errors(F.col("content")) if check else F.lit(None).cast("string")
    error = F.when(F.col("label") < 0, F.lit("not in a class folder")).otherwise(checked)
    return ImageFolders(df.withColumn("error", error), classes, root, tuple(_empty_files(spark, root)))


def _list_classes(spark: "SparkSession", data_dir: str) -> tuple[str, list[str]]:
    """The qualified root URI and its sub-directory names, through Hadoop's FileSystem (any scheme)."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(data_dir)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(path) or not fs.getFileStatus(path).isDirectory():
        raise FileNotFoundError(
            f"image directory {data_dir} does not exist or is not a directory; expected one folder per class "
            "(e.g. buses/ and cars/)."
        )
    root = fs.makeQualified(path).toString()
    folders = [
        status.getPath().getName()
        for status in fs.listStatus(path)
        if status.isDirectory() and not status.getPath().getName().startswith((".", "_"))
    ]
    return root, folders


def _empty_files(spark: "SparkSession", root: str) -> list[str]:
    """Zero-byte files under ``root``, which the ``binaryFile`` source leaves out without a word.

    Lists the tree on the driver (metadata only), skipping what Spark skips:
    names starting with ``.`` or ``_``.
    """
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(root)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    empty, pending = [], [path]
    while pending:
        for status in fs.listStatus(pending.pop()):
            if status.getPath().getName().startswith((".", "_")):
                continue
            if status.isDirectory():
                pending.append(status.getPath())
            elif status.getLen() == 0:
                empty.append(status.getPath().toString())
    return sorted(empty)


def thumbnails(contents: Sequence[bytes], size: int = 96) -> np.ndarray:
    """Square RGB thumbnails ``(n, size, size, 3)`` of image bytes; undecodable ones are grey. Runs on the driver."""
    images = np.full((len(contents), size, size, 3), 128, dtype=np.uint8)
    for i, data in enumerate(contents):
        try:
            images[i] = decode_image(data, (size, size))
        except ValueError:
            pass
    return images


# ---------------------------------------------------------------------------------------------
# The offline default: synthetic buses and cars.


def write_synthetic_image_folders(
    directory: str,
    per_class: int = 20,
    size: tuple[int, int] = (120, 160),
    seed: int = 0,
    classes: Sequence[str] = ("buses", "cars"),
) -> dict[str, int]:
    """Writes JPEG drawings of buses and cars into ``directory/<class>/``.

    A bus is a long, tall box with a row of windows filling most of the picture;
    a car is a short, low body with a cabin on top. Colours, positions, sizes and
    backgrounds vary at random, so the classes differ in shape, not in one colour.

    Args:
        directory: created if missing; existing files of the same names are replaced.
        per_class: images per class.
        size: (height, width) of every image.
        seed: the random drawings.
        classes: two folder names: the first gets buses, the second cars.

    Returns:
        Files written per class.

    Raises:
        ValueError: not exactly two classes, or per_class < 1.
    """
    from PIL import Image, ImageDraw

    if len(classes) != 2 or per_class < 1:
        raise ValueError(
            f"need two class names and per_class >= 1; got classes={list(classes)}, per_class={per_class}."
        )
    rng = np.random.default_rng(seed)
    height, width = size
    written = {}
    for kind, name in enumerate(classes):
        folder = os.path.join(directory, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            sky = tuple(int(v) for v in rng.integers(150, 256, 3))
            ground = tuple(int(v) for v in rng.integers(40, 120, 3))
            image = Image.new("RGB", (width, height), sky)
            draw = ImageDraw.Draw(image)
            horizon = int(height * rng.uniform(0.65, 0.8))
            draw.rectangle([0, horizon, width, height], fill=ground)
            body = tuple(int(v) for v in rng.integers(0, 256, 3))
            if kind == 0:
                _draw_bus(draw, rng, width, height, horizon, body)
            else:
                _draw_car(draw, rng, width, height, horizon, body)
            image.save(os.path.join(folder, f"{name}-{i:03d}.jpg"), quality=90)
        written[name] = per_class
    return written


def _draw_bus(draw, rng, width, height, horizon, body):
    left = int(width * rng.uniform(0.02, 0.1))
    right = int(width * rng.uniform(0.9, 0.98))
    top = int(height * rng.uniform(0.1, 0.2))
    bottom = horizon + int(height * 0.05)
    draw.rectangle([left, top, right, bottom], fill=body, outline=(0, 0, 0), width=2)
    windows = int(rng.integers(5, 8))
    pane = (right - left) / windows
    for k in range(windows):
        x0 = left + k * pane + pane * 0.15
        draw.rectangle([x0, top + 6, x0 + pane * 0.7, top + (bottom - top) * 0.45], fill=(200, 230, 255))
    radius = (bottom - top) * 0.14
    for x in (left + (right - left) * 0.18, right - (right - left) * 0.18):
        draw.ellipse([x - radius, bottom - radius, x + radius, bottom + radius], fill=(20, 20, 20))


def _draw_car(draw, rng, width, height, horizon, body):
    length = width * rng.uniform(0.35, 0.5)
    left = rng.uniform(0.05, 0.95 - length / width) * width
    right = left + length
    bottom = horizon + height * 0.04
    top = bottom - height * rng.uniform(0.12, 0.18)
    draw.rectangle([left, top, right, bottom], fill=body, outline=(0, 0, 0), width=2)
    cabin_top = top - height * rng.uniform(0.1, 0.14)
    draw.polygon(
        [
            (left + length * 0.2, top),
            (left + length * 0.32, cabin_top),
            (left + length * 0.7, cabin_top),
            (left + length * 0.82, top),
        ],
        fill=(200, 230, 255),
        outline=body,
    )
    radius = height * 0.06
    for x in (left + length * 0.22, right - length * 0.22):
        draw.ellipse([x - radius, bottom - radius, x + radius, bottom + radius], fill=(20, 20, 20))
