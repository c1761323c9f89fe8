"""pix2pix's paired-image layout (edges2shoes, edges2handbags): a validating Spark reader and the offline default.

The layout (``data_dir`` holds one folder per dataset)::

    edges2shoes/train/1_AB.jpg        256x512 (HxW): edges (A) on the left half, the photo (B) on the right
    edges2shoes/val/1_AB.jpg
    edges2handbags/train/...          the same for handbags

:func:`read_pix2pix` reads one ``<dataset>/<split>`` folder with Spark's ``binaryFile``
source and, in the executors, keeps each file's photo half resized to ``size`` x
``size`` (the book's ``extract_files``: resize to 128x64, crop the right 64x64). A
file that cannot be used keeps its row, with the reason in ``error``: empty, not an
image, corrupt or truncated, not twice as wide as high.

:func:`write_fashion_pix2pix` writes the offline default in that layout from real
photographs: Fashion-MNIST's product photos (Debian's ``dataset-fashion-mnist``) of
shoes (sandal, sneaker, ankle boot) and bags, upscaled to 256x256, with their Canny
edges (black on white, as pix2pix's) on the left.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING

import numpy as np

from tfos_lib.datasets.image_folders import decode_image

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["BAG_CLASSES", "DATASETS", "SHOE_CLASSES", "photo_half", "read_pix2pix", "write_fashion_pix2pix"]

#: Fashion-MNIST's labels of the two domains: 5 sandal, 7 sneaker, 9 ankle boot; 8 bag.
SHOE_CLASSES = (5, 7, 9)
BAG_CLASSES = (8,)
DATASETS = ("edges2shoes", "edges2handbags")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def photo_half(data: bytes | None, size: int) -> np.ndarray:
    """The photo (right) half of one AB file as ``(size * size * 3,)`` float32 RGB in [0, 1]. Runs in executors.

    The book's ``extract_files``: resize the whole pair to ``size`` x ``2 * size``
    (bilinear here; the book did not name its filter), keep the right half.

    Raises:
        ValueError: empty, not an image, corrupt or truncated, or not twice as wide as high.
    """
    from PIL import Image

    pixels = decode_image(data, (size, 2 * size))  # raises ValueError saying why the bytes are unusable
    with Image.open(io.BytesIO(data)) as opened:
        width, height = opened.size
    if width != 2 * height:
        raise ValueError(f"{width}x{height} (WxH) is not a pix2pix AB pair: expected twice as wide as high, e.g. 512x256")
    return (pixels[:, size:].astype(np.float32) / 255.0).reshape(-1)


def read_pix2pix(spark: "SparkSession", data_dir: str, dataset: str, split: str, size: int) -> "DataFrame":
    """``<data_dir>/<dataset>/<split>/*.jpg`` as a DataFrame, decoded lazily in executors. Runs on the driver.

    Columns: ``path`` (string), ``image`` (array<float> of ``size * size * 3``, RGB in
    [0, 1], null when unusable), ``error`` (string: why the file cannot be used, null
    when it can). Zero-byte files (which ``binaryFile`` leaves out) come back as rows
    with the error "empty file". Cache the result when it is used more than once.

    Raises:
        FileNotFoundError: the folder does not exist or holds no ``.jpg`` file.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    folder = f"{data_dir.rstrip('/')}/{dataset}/{split}"
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(folder)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    listed = [s for s in fs.listStatus(path) if s.isFile() and s.getPath().getName().lower().endswith(".jpg")] \
        if fs.exists(path) else []
    if not listed:
        held = sorted(s.getPath().getName() for s in fs.listStatus(path))[:10] if fs.exists(path) else None
        raise FileNotFoundError(
            f"expected pix2pix's layout: {folder}/*.jpg (256x512 edges|photo pairs, from {dataset}.tar.gz); "
            + (f"that folder holds no .jpg file ({held})." if held is not None else "that folder does not exist.")
            + " Unpack the archive into --data-dir, or omit --data-dir for the offline default."
        )
    empty = [fs.makeQualified(s.getPath()).toString() for s in listed if s.getLen() == 0]

    @pandas_udf("struct<image: array<float>, error: string>")
    def decode(contents):
        import pandas as pd

        images, errors = [], []
        for data in contents:
            try:
                images.append(photo_half(data, size))
                errors.append(None)
            except ValueError as error:
                images.append(None)
                errors.append(str(error))
        return pd.DataFrame({"image": images, "error": errors})

    files = spark.read.format("binaryFile").option("pathGlobFilter", "*.[jJ][pP][gG]").load(folder)
    decoded = files.select("path", decode(F.col("content")).alias("d"))
    rows = decoded.select("path", F.col("d.image").alias("image"), F.col("d.error").alias("error"))
    if empty:
        rows = rows.unionByName(spark.createDataFrame([(p, None, "empty file") for p in empty], rows.schema))
    return rows


def _canny_edges(gray: np.ndarray) -> np.ndarray:
    """pix2pix-style edges of a [0, 1] grey image: black lines on white, uint8."""
    from skimage.feature import canny

    return np.where(canny(gray, sigma=2.0), 0, 255).astype(np.uint8)


def write_fashion_pix2pix(
    data_dir: str,
    fashion_dir: str = FASHION_MNIST_DIR,
    train_per_domain: int = 2000,
    val_per_domain: int = 500,
    seed: int = 0,
    side: int = 256,
) -> dict:
    """Writes Fashion-MNIST's shoes and bags as ``edges2shoes`` and ``edges2handbags`` in pix2pix's layout.

    Photos from the IDX training file go to ``train/``, from the test file to ``val/``
    (a random sample of ``train_per_domain`` / ``val_per_domain`` each, seeded); each
    28x28 photo is upscaled (bicubic) to ``side`` x ``side`` grey-as-RGB, its Canny
    edges on the left. File names are ``<index in the IDX file>_AB.jpg``. A folder
    that already holds the expected files is kept as it is.

    Returns what was written: per dataset and split, the number of files and their labels.

    Raises:
        FileNotFoundError: the Fashion-MNIST IDX files are not in ``fashion_dir``.
    """
    from PIL import Image

    from tfos_lib.datasets import idx

    if not os.path.isdir(fashion_dir):
        raise FileNotFoundError(
            f"the offline default needs Fashion-MNIST's IDX files in {fashion_dir}: apt-get install "
            "dataset-fashion-mnist, or give --data-dir with edges2shoes/ and edges2handbags/."
        )
    arrays = idx.load_mnist(fashion_dir)
    rng = np.random.default_rng(seed)
    info = {"source": arrays.source}
    for dataset, classes in (("edges2shoes", SHOE_CLASSES), ("edges2handbags", BAG_CLASSES)):
        for split, x, y, n in (("train", arrays.x_train, arrays.y_train, train_per_domain),
                               ("val", arrays.x_test, arrays.y_test, val_per_domain)):
            candidates = np.flatnonzero(np.isin(y, classes))
            chosen = np.sort(rng.choice(candidates, size=min(n, len(candidates)), replace=False))
            folder = os.path.join(data_dir, dataset, split)
            names = [f"{i}_AB.jpg" for i in chosen]
            info[f"{dataset}/{split}"] = {"files": len(chosen),
                                          "labels": {int(c): int(np.sum(y[chosen] == c)) for c in classes}}
            if os.path.isdir(folder) and sorted(os.listdir(folder)) == sorted(names):
                continue
            os.makedirs(folder, exist_ok=True)
            for i, name in zip(chosen, names):
                photo = Image.fromarray(x[i]).resize((side, side), Image.BICUBIC)
                edges = _canny_edges(np.asarray(photo, dtype=np.float64) / 255.0)
                pair = np.concatenate([edges, np.asarray(photo)], axis=1)
                Image.fromarray(pair).convert("RGB").save(os.path.join(folder, name), quality=90)
    return info
