"""GTSRB (German Traffic Sign Recognition Benchmark) in its distributed layout: a validating Spark reader and a generator.

The layout (``--data-dir`` is the ``GTSRB`` folder, or the folder holding it)::

    Final_Training/Images/000NN/GT-000NN.csv     one folder per class NN (0-42)
    Final_Training/Images/000NN/000TT_000SS.ppm  frame SS of track TT (one physical sign)
    Final_Test/Images/NNNNN.ppm
    GT-final_test.csv                            (or Final_Test/Images/GT-final_test.csv)

The CSVs are ``;``-separated: ``Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId``
(the ROI corners are inclusive pixel coordinates). :func:`read_gtsrb` reads the CSV
rows and the image files with Spark (any Hadoop path), decodes each image in the
executors with Pillow, crops it to its ROI and applies the book's preprocessing
(:func:`preprocess`). A row that cannot be used gets its reason in ``error``:
unreadable or truncated image, ROI outside the image, class id outside 0-42, a CSV
row naming a missing file, an image no CSV row names, a malformed CSV row.

:func:`write_synthetic_gtsrb` writes the offline default in the same layout: the 43
signs drawn as pictograms (:mod:`tfos_lib.datasets.gtsrb_signs`) in tracks of frames
that grow as a car approaches, with perspective, blur, lighting, partial occlusion
and backgrounds cropped from photographs that ship in installed packages.
"""

from __future__ import annotations

import io
import json
import math
import os
from typing import TYPE_CHECKING

import numpy as np

from tfos_lib.datasets.gtsrb_signs import CLASS_NAMES, draw_sign

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "background_photos",
    "decode_images",
    "out_of_distribution_images",
    "preprocess",
    "read_gtsrb",
    "split_by_track",
    "write_synthetic_gtsrb",
]

NUM_CLASSES = len(CLASS_NAMES)
TRAIN_IMAGES = "Final_Training/Images"
TEST_IMAGES = "Final_Test/Images"
TEST_GT = "GT-final_test.csv"
CSV_COLUMNS = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")
#: skimage's rgb2gray weights (the book's repository converts to grey with it).
GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Preprocessing (runs in executors).


def preprocess(data: bytes, roi: tuple[int, int, int, int] | None, size: int = 32) -> np.ndarray:
    """The book's preprocessing of one image file: ``(size * size,)`` float32 grey values in [0, 1].

    Steps: decode (Pillow), crop to the inclusive ROI ``(x1, y1, x2, y2)`` (None: the
    whole image), equalise the histogram of the HSV value channel (the book's
    ``rgb2hsv`` / ``equalize_hist`` / ``hsv2rgb``), centre square crop, resize to
    ``size`` x ``size`` (bilinear with anti-aliasing: Pillow filters over the whole
    source support when shrinking, like skimage's ``anti_aliasing=True``), grey with
    skimage's ``rgb2gray`` weights.

    Raises:
        ValueError: undecodable or truncated data, or a ROI outside the image (the message says which).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ValueError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = opened.convert("RGB")  # forces the full decode: truncation fails here
    except UnidentifiedImageError:
        raise ValueError("not an image file (no known image format)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"unreadable or truncated image: {error}") from None
    width, height = image.size
    if roi is not None:
        x1, y1, x2, y2 = roi
        if not (0 <= x1 <= x2 < width and 0 <= y1 <= y2 < height):
            raise ValueError(f"ROI ({x1},{y1})-({x2},{y2}) is outside the {width}x{height} image")
        image = image.crop((x1, y1, x2 + 1, y2 + 1))
    hue, saturation, value = image.convert("HSV").split()
    image = Image.merge("HSV", (hue, saturation, ImageOps.equalize(value))).convert("RGB")
    side = min(image.size)
    left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
    return (np.asarray(image, dtype=np.float32) / 255.0 @ GRAY_WEIGHTS).reshape(-1)


def decode_images(size: int = 32):
    """A pandas UDF ``(content, x1, y1, x2, y2) -> struct<image: array<float>, error: string>``. Runs in executors.

    ROI columns that are all null mean the whole image. Rows whose ``content`` is
    null pass through with a null image (the caller has their reason already).
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("struct<image: array<float>, error: string>")
    def decode(content, x1, y1, x2, y2):
        import pandas as pd

        images, errors = [], []
        for data, *roi in zip(content, x1, y1, x2, y2):
            if data is None:
                images.append(None)
                errors.append(None)
                continue
            try:
                box = None if any(v is None or pd.isna(v) for v in roi) else tuple(int(v) for v in roi)
                images.append(preprocess(data, box, size))
                errors.append(None)
            except ValueError as error:
                images.append(None)
                errors.append(str(error))
        return pd.DataFrame({"image": images, "error": errors})

    return decode


# ---------------------------------------------------------------------------------------------
# The reader (driver side; decoding runs in executors).


def find_root(spark: "SparkSession", data_dir: str) -> str:
    """The ``GTSRB`` folder: ``data_dir`` itself or ``data_dir/GTSRB``, as a qualified URI.

    Raises:
        FileNotFoundError: neither holds ``Final_Training/Images``; says what the directory holds.
    """
    fs, path = _fs(spark, data_dir)
    for candidate in (path, spark.sparkContext._jvm.org.apache.hadoop.fs.Path(path, "GTSRB")):
        if fs.exists(spark.sparkContext._jvm.org.apache.hadoop.fs.Path(candidate, TRAIN_IMAGES)):
            return fs.makeQualified(candidate).toString()
    held = sorted(s.getPath().getName() for s in fs.listStatus(path))[:10] if fs.exists(path) else None
    raise FileNotFoundError(
        f"expected the GTSRB layout under {data_dir}: {TRAIN_IMAGES}/000NN/GT-000NN.csv with the .ppm files, "
        f"{TEST_IMAGES}/ and {TEST_GT}; "
        + (f"it holds {held}." if held is not None else "that directory does not exist.")
        + " Unzip GTSRB_Final_Training_Images.zip, GTSRB_Final_Test_Images.zip and GTSRB_Final_Test_GT.zip there,"
        " or omit --data-dir for the generated default."
    )


def _fs(spark, path_string):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(path_string)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def read_gtsrb(spark: "SparkSession", data_dir: str, split: str, size: int = 32) -> "DataFrame":
    """One split (``"train"`` or ``"test"``) as a DataFrame, lazily decoded in executors. Runs on the driver.

    Columns: ``key`` (``000NN/file.ppm`` for training, ``file.ppm`` for test),
    ``label`` (int ClassId), ``track`` (int ``NN * 1000 + TT`` for training rows,
    -1 for test rows), ``image`` (array<float> of ``size * size``), ``error``
    (string: why the row cannot be used, null when it can). Cache it when used more than once.

    Raises:
        FileNotFoundError: the layout or the test ground truth is missing.
    """
    from pyspark.sql import functions as F

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}.")
    root = find_root(spark, data_dir)
    if split == "train":
        images_dir, csv_paths, depth = f"{root}/{TRAIN_IMAGES}", [f"{root}/{TRAIN_IMAGES}/*/GT-*.csv"], 2
    else:
        images_dir, depth = f"{root}/{TEST_IMAGES}", 1
        fs, _ = _fs(spark, root)
        found = [p for p in (f"{root}/{TEST_GT}", f"{images_dir}/{TEST_GT}") if fs.exists(_fs(spark, p)[1])]
        if not found:
            raise FileNotFoundError(
                f"no test ground truth: expected {root}/{TEST_GT} (from GTSRB_Final_Test_GT.zip, the "
                f"'extended annotations including class ids') or the same file in {TEST_IMAGES}/."
            )
        csv_paths = found[:1]
    rows = spark.read.option("sep", ";").option("header", True).csv(csv_paths).withColumn("_file", F.input_file_name())
    missing_columns = [c for c in CSV_COLUMNS if c not in rows.columns]
    if missing_columns:
        raise ValueError(f"GTSRB CSVs under {root} lack column(s) {missing_columns}; expected {';'.join(CSV_COLUMNS)}.")
    folder = F.element_at(F.split("_file", "/"), -2)
    key = F.concat_ws("/", folder, F.col("Filename")) if split == "train" else F.col("Filename")
    ints = {c: F.col(f"`{c}`").cast("int") for c in CSV_COLUMNS[1:]}
    rows = rows.select(key.alias("key"), *[v.alias(k.replace(".", "_")) for k, v in ints.items()])
    files = (
        spark.read.format("binaryFile").option("recursiveFileLookup", "true").option("pathGlobFilter", "*.ppm")
        .load(images_dir)
        .select(F.array_join(F.slice(F.split("path", "/"), -depth, depth), "/").alias("key"), "content")
    )
    # The CSV rows are small: broadcast them, so the image bytes are never shuffled or sorted.
    named = files.join(F.broadcast(rows), "key", "left")
    missing = rows.join(files.select("key"), "key", "left_anti").withColumn("content", F.lit(None).cast("binary"))
    joined = named.unionByName(missing)
    malformed = F.greatest(*[F.col(k.replace(".", "_")).isNull() for k in CSV_COLUMNS[1:]])
    label = F.col("ClassId")
    decoded = decode_images(size)(F.col("content"), F.col("Roi_X1"), F.col("Roi_Y1"), F.col("Roi_X2"), F.col("Roi_Y2"))
    error = (
        F.when(F.col("content").isNull(), F.lit("CSV row names a missing file"))
        .when(F.col("ClassId").isNull() & F.col("Width").isNull(), F.lit("no ground-truth CSV row names this file"))
        .when(malformed, F.lit("malformed CSV row (non-integer field)"))
        .when((label < 0) | (label >= NUM_CLASSES), F.concat(F.lit("class id "), label.cast("string"),
                                                             F.lit(f" outside 0-{NUM_CLASSES - 1}")))
        .otherwise(decoded["error"])
    )
    if split == "train":
        # 000TT_000SS.ppm: frames of one track are one sign seen again; the split keeps them together.
        track_number = F.regexp_extract(F.element_at(F.split("key", "/"), -1), r"^(\d+)_\d+\.ppm$", 1)
        track = F.when(track_number != "", folder_number(F.col("key")) * 1000 + track_number.cast("int")).otherwise(-1)
    else:
        track = F.lit(-1)
    return joined.select(
        "key", label.alias("label"), track.cast("int").alias("track"), decoded["image"].alias("image"),
        error.alias("error"),
    )


def split_by_track(df: "DataFrame", fraction: float, seed: int = 0) -> tuple["DataFrame", "DataFrame"]:
    """``(kept, held_out)``: about ``fraction`` of the tracks, each with all its frames, go to ``held_out``.

    A track goes by a hash of its id and ``seed``, so the split is the same on any
    number of partitions; rows without a track (-1) go one by one, by ``key``.
    """
    from pyspark.sql import functions as F

    track = F.when(F.col("track") >= 0, F.col("track").cast("string")).otherwise(F.col("key"))
    held = F.pmod(F.xxhash64(track, F.lit(seed)), F.lit(10000)) < int(round(fraction * 10000))
    return df.where(~held), df.where(held)


def folder_number(key):
    """The class folder number of a training key ``000NN/file`` (Spark column)."""
    from pyspark.sql import functions as F

    return F.coalesce(F.element_at(F.split(key, "/"), 1).cast("int"), F.lit(0))


# ---------------------------------------------------------------------------------------------
# The offline default.


def background_photos() -> tuple[list, list[str]]:
    """RGB photographs that ship in installed packages (scikit-learn's sample images, matplotlib's sample data).

    Returns ``(images, names)``; both empty when none is installed (the generator then
    uses procedural textures).
    """
    from PIL import Image

    candidates = []
    try:
        import sklearn.datasets

        folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
        candidates += [os.path.join(folder, n) for n in ("china.jpg", "flower.jpg")]
    except ImportError:  # pragma: no cover
        pass
    try:
        import matplotlib

        candidates.append(os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg"))
    except ImportError:  # pragma: no cover
        pass
    images, names = [], []
    for path in candidates:
        if os.path.isfile(path):
            with Image.open(path) as photo:
                images.append(photo.convert("RGB"))
            names.append(os.path.basename(path))
    return images, names


def _crop(rng, photos, width, height):
    """A random crop of a random photo (or a procedural texture), resized to ``width`` x ``height``."""
    from PIL import Image

    if not photos:
        noise = rng.normal(0, 1, (8, 8, 3)).cumsum(axis=0).cumsum(axis=1)
        noise = (noise - noise.min()) / (np.ptp(noise) + 1e-6) * 200 + 25
        return Image.fromarray(noise.astype(np.uint8)).resize((width, height), Image.BICUBIC)
    photo = photos[int(rng.integers(len(photos)))]
    side = int(rng.uniform(0.08, 0.5) * min(photo.size))
    x, y = int(rng.integers(0, photo.size[0] - side + 1)), int(rng.integers(0, photo.size[1] - side + 1))
    return photo.crop((x, y, x + side, y + side)).resize((width, height), Image.BILINEAR)


def _perspective_coefficients(source, target):
    """Pillow's 8 PERSPECTIVE coefficients mapping output points ``target`` to input points ``source``."""
    matrix, vector = [], []
    for (x, y), (u, v) in zip(target, source):
        matrix.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        matrix.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        vector += [u, v]
    return np.linalg.solve(np.asarray(matrix, float), np.asarray(vector, float)).tolist()


def _track_style(rng):
    """What stays fixed along one track: the sign's pose, the light, an occluder, the blur."""
    return {
        "skew": rng.uniform(-0.12, 0.12, 8),
        "rotation": rng.uniform(-8, 8),
        "brightness": rng.uniform(0.45, 1.35),
        "contrast": rng.uniform(0.6, 1.2),
        "cast": rng.uniform(0.85, 1.15, 3),
        "blur": rng.uniform(0.0, 0.9),
        "occlusion": rng.uniform() < 0.25,
        "occluder": (rng.uniform(0, 1), rng.uniform(0.12, 0.3), int(rng.integers(4))),
        "noise": rng.uniform(0, 6),
    }


def _render(rng, sign, style, photos, side):
    """One frame: the sign warped to ``side`` px on a background with a ~10% border. Returns ``(image, roi)``."""
    from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

    work = sign.size[0]
    corners = [(0, 0), (work, 0), (work, work), (0, work)]
    moved = [(x + style["skew"][2 * k] * work * 0.5, y + style["skew"][2 * k + 1] * work * 0.5)
             for k, (x, y) in enumerate(corners)]
    warped = sign.transform(sign.size, Image.PERSPECTIVE, _perspective_coefficients(moved, corners), Image.BICUBIC)
    warped = warped.rotate(style["rotation"] + rng.uniform(-2, 2), Image.BICUBIC)
    if style["occlusion"]:  # a branch, a pole or another car in front of part of the sign
        where, share, edge = style["occluder"]
        mask = warped.getchannel("A")
        cut = ImageDraw.Draw(mask)
        span = int(work * share)
        box = [(0, 0, span, work), (work - span, 0, work, work), (0, 0, work, span), (0, work - span, work, work)][edge]
        cut.rectangle(box, fill=0)
        warped.putalpha(mask)
    sign_small = warped.resize((side, side), Image.LANCZOS)
    margin = max(5, int(round(side * 0.1)))
    offset = [margin + int(rng.integers(-margin // 3, margin // 3 + 1)) for _ in range(2)]
    width, height = side + 2 * margin, side + 2 * margin
    image = _crop(rng, photos, width, height)
    image.paste(sign_small, tuple(offset), sign_small)
    image = ImageEnhance.Brightness(image).enhance(style["brightness"] * rng.uniform(0.9, 1.1))
    image = ImageEnhance.Contrast(image).enhance(style["contrast"])
    if style["blur"] > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(style["blur"] * max(1.0, side / 40)))
    pixels = np.asarray(image, dtype=np.float32) * style["cast"] + rng.normal(0, style["noise"], (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    roi = (offset[0], offset[1], min(width - 1, offset[0] + side - 1), min(height - 1, offset[1] + side - 1))
    return image, roi


def _track_sides(rng, frames):
    """Sign sizes in px along a track: a car approaching, 15 px far away up to at most 250 px."""
    start = math.exp(rng.uniform(math.log(15), math.log(90)))
    end = min(250.0, start * rng.uniform(1.3, 3.0))
    return [int(round(start + (end - start) * k / max(1, frames - 1))) for k in range(frames)]


def write_synthetic_gtsrb(
    directory: str,
    tracks_per_class: int = 12,
    frames_per_track: int = 10,
    test_tracks_per_class: int = 4,
    test_frames_per_track: int = 6,
    seed: int = 0,
) -> dict:
    """Writes the 43 signs as GTSRB: training tracks per class folder, a flat test folder, the CSVs.

    ``directory`` becomes a ``GTSRB`` root (see the module docstring). A finished
    write leaves ``_generated.json`` with its parameters; called again with the same
    parameters it returns at once.

    Returns:
        ``{"train_images", "test_images", "backgrounds", ...parameters}``.
    """

    params = {"tracks_per_class": tracks_per_class, "frames_per_track": frames_per_track,
              "test_tracks_per_class": test_tracks_per_class, "test_frames_per_track": test_frames_per_track,
              "seed": seed, "version": 1}
    marker = os.path.join(directory, "_generated.json")
    if os.path.isfile(marker):
        with open(marker) as f:
            done = json.load(f)
        if {k: done.get(k) for k in params} == params:
            return done
    if min(tracks_per_class, frames_per_track, test_tracks_per_class, test_frames_per_track) < 1:
        raise ValueError(f"every count must be >= 1; got {params}.")
    rng = np.random.default_rng(seed)
    photos, photo_names = background_photos()
    header = ";".join(CSV_COLUMNS)
    test_dir = os.path.join(directory, TEST_IMAGES)
    os.makedirs(test_dir, exist_ok=True)
    test_rows, train_images = [], 0
    for class_id in range(NUM_CLASSES):
        sign = draw_sign(class_id, 160)
        folder = os.path.join(directory, TRAIN_IMAGES, f"{class_id:05d}")
        os.makedirs(folder, exist_ok=True)
        rows = []
        for track in range(tracks_per_class + test_tracks_per_class):
            is_test = track >= tracks_per_class
            frames = test_frames_per_track if is_test else frames_per_track
            style = _track_style(rng)
            for frame, side in enumerate(_track_sides(rng, frames)):
                image, roi = _render(rng, sign, style, photos, side)
                fields = [image.size[0], image.size[1], *roi, class_id]
                if is_test:
                    name = f"{len(test_rows):05d}.ppm"
                    image.save(os.path.join(test_dir, name), format="PPM")
                    test_rows.append(";".join(map(str, [name, *fields])))
                else:
                    name = f"{track:05d}_{frame:05d}.ppm"
                    image.save(os.path.join(folder, name), format="PPM")
                    rows.append(";".join(map(str, [name, *fields])))
        with open(os.path.join(folder, f"GT-{class_id:05d}.csv"), "w") as f:
            f.write("\n".join([header, *rows]) + "\n")
        train_images += len(rows)
    with open(os.path.join(directory, TEST_GT), "w") as f:
        f.write("\n".join([header, *test_rows]) + "\n")
    done = {**params, "train_images": train_images, "test_images": len(test_rows),
            "backgrounds": photo_names or ["procedural textures (no photographs installed)"]}
    with open(marker, "w") as f:
        json.dump(done, f)
    return done


def out_of_distribution_images(count: int, seed: int = 0) -> list[bytes]:
    """``count`` PPM files that show no sign: half photo crops, half noise (uniform, blotchy or stripes).

    Sizes vary like the signs' (20-150 px). Decode them with :func:`preprocess` and ``roi=None``.
    """
    from PIL import Image

    rng = np.random.default_rng(seed + 7919)
    photos, _ = background_photos()
    files = []
    for i in range(count):
        side = int(rng.integers(20, 150))
        if i % 2 == 0:
            image = _crop(rng, photos, side, side)
        else:
            kind = i // 2 % 3
            if kind == 0:
                pixels = rng.integers(0, 256, (side, side, 3))
            elif kind == 1:
                blotch = rng.normal(0, 1, (6, 6, 3))
                pixels = np.asarray(Image.fromarray(((blotch - blotch.min()) / (np.ptp(blotch) + 1e-6) * 255)
                                                    .astype(np.uint8)).resize((side, side), Image.BICUBIC))
            else:
                period = rng.uniform(3, 12)
                stripes = (np.sin(np.arange(side) / period * 2 * np.pi)[None, :, None] > 0) * rng.integers(0, 256, 3)
                pixels = np.broadcast_to(stripes, (side, side, 3))
            image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
        buffer = io.BytesIO()
        image.save(buffer, format="PPM")
        files.append(buffer.getvalue())
    return files
