"""MNIST in its original IDX file format, plus an offline default dataset.

The IDX format (http://yann.lecun.com/exdb/mnist/) is a tiny header followed by
raw big-endian array data:

    bytes 0-1   0x00 0x00                 (magic)
    byte  2     dtype code                (0x08 uint8 ... 0x0E float64)
    byte  3     number of dimensions n
    n x uint32  size of each dimension    (big-endian)
    ...         the data, row-major, big-endian

Real-world copies are frequently truncated downloads, half-extracted archives
or HTML error pages saved under the right name, so ``read_idx`` validates every
field and reports exactly what is wrong and where.

When no MNIST files are available (e.g. a cluster without internet access),
``load_default_digits`` builds an MNIST-shaped dataset from scikit-learn's
bundled handwritten digits, which need no download.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_FILES",
    "LABEL_FILES",
    "IdxFormatError",
    "MnistArrays",
    "find_mnist_files",
    "load_default_digits",
    "load_mnist",
    "read_idx",
    "write_idx",
]

# IDX dtype code -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES: dict[np.dtype, int] = {
    dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()
}

_GZIP_MAGIC = b"\x1f\x8b"

# Standard MNIST file names, keyed by split. Each may also carry a ".gz" suffix
# or use the "train-images.idx3-ubyte" spelling some mirrors produce.
IMAGE_FILES: dict[str, str] = {
    "train": "train-images-idx3-ubyte",
    "test": "t10k-images-idx3-ubyte",
}
LABEL_FILES: dict[str, str] = {
    "train": "train-labels-idx1-ubyte",
    "test": "t10k-labels-idx1-ubyte",
}

_NUM_CLASSES = 10


class IdxFormatError(ValueError):
    """An IDX file is malformed (bad header, wrong size, corrupt gzip, ...)."""


@dataclass(frozen=True, eq=False)  # eq=False: `==` on numpy fields is ambiguous.
class MnistArrays:
    """An MNIST-style dataset held in memory.

    Attributes:
        x_train: uint8 images, shape (N_train, 28, 28), 0 = background.
        y_train: uint8 labels 0..9, shape (N_train,).
        x_test: uint8 images, shape (N_test, 28, 28).
        y_test: uint8 labels 0..9, shape (N_test,).
        source: Where the data came from, for logs and metrics.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


def _expected_names() -> str:
    names = [*IMAGE_FILES.values(), *LABEL_FILES.values()]
    return ", ".join(names) + " (each optionally ending in .gz)"


def _describe(dims: tuple[int, ...], dtype: np.dtype) -> str:
    shape = "x".join(str(d) for d in dims) if dims else "scalar"
    return f"{shape} {dtype.newbyteorder('=').name}"


def read_idx(path: str | Path) -> np.ndarray:
    """Reads an IDX file, gzip-compressed or not.

    Compression is detected from the gzip magic bytes rather than the suffix,
    because files are often renamed or decompressed in place by browsers.

    Args:
        path: Path to the IDX file.

    Returns:
        The array, with the shape from the header and a native-endian dtype.

    Raises:
        FileNotFoundError: The file does not exist.
        IdxFormatError: The file is not valid IDX (bad magic, unknown dtype,
            truncated header or data, trailing bytes, corrupt gzip stream).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file. An MNIST data directory should contain "
            f"{_expected_names()}."
        )
    raw = path.read_bytes()

    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise IdxFormatError(
                f"{path}: corrupt gzip stream ({e}). The download is probably "
                "incomplete; re-download the file."
            ) from e

    if len(raw) < 4:
        raise IdxFormatError(
            f"{path}: truncated header: expected at least 4 bytes, found {len(raw)}. "
            "Re-download or re-extract the file."
        )
    if raw[:2] != b"\x00\x00":
        raise IdxFormatError(
            f"{path}: bad magic: expected the first two bytes to be 00 00, "
            f"found {raw[:2].hex(' ')}. This is not an IDX file (an HTML error page "
            "or a different archive format?); re-download it."
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X} {dt.name}" for c, dt in _IDX_DTYPES.items())
        raise IdxFormatError(
            f"{path}: unknown dtype code 0x{code:02X}; expected one of {known}. "
            "The file is corrupt or not an IDX file; re-download it."
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise IdxFormatError(
            f"{path}: truncated header: {ndim} dimensions need {header_len} header "
            f"bytes, found {len(raw)}. Re-download or re-extract the file."
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    found = len(raw) - header_len
    if found != expected:
        problem = "truncated" if found < expected else "trailing extra bytes"
        raise IdxFormatError(
            f"{path}: {problem}: header says {_describe(dims, dtype)} = {expected} "
            f"data bytes, found {found}. Re-download or re-extract the file."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(dims)
    # Native byte order (and a writable copy) so callers can use it like any array.
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Writes an array as an IDX file, gzip-compressed if the path ends in ``.gz``.

    Args:
        path: Destination file.
        array: Array with one of the IDX dtypes (uint8, int8, int16, int32,
            float32, float64) and at most 255 dimensions.

    Returns:
        The path written.

    Raises:
        ValueError: The dtype or shape cannot be represented in IDX.
    """
    path = Path(path)
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _IDX_CODES:
        raise ValueError(
            f"{path}: IDX cannot store dtype {array.dtype}; convert first, e.g. "
            "array.astype(np.uint8) for images/labels or np.int32 / np.float32."
        )
    if array.ndim > 255 or any(d >= 2**32 for d in array.shape):
        raise ValueError(f"{path}: shape {array.shape} does not fit an IDX header.")
    header = bytes([0, 0, _IDX_CODES[native], array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    payload = (
        header + np.ascontiguousarray(array, dtype=native.newbyteorder(">")).tobytes()
    )
    if path.name.endswith(".gz"):
        # mtime=0 makes the output byte-for-byte reproducible.
        with gzip.GzipFile(path, "wb", mtime=0) as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def _candidates(name: str) -> list[str]:
    dotted = name.replace("-idx", ".idx")  # "train-images.idx3-ubyte" variant
    return [name, name + ".gz", dotted, dotted + ".gz"]


def find_mnist_files(data_dir: str | Path) -> dict[str, Path]:
    """Locates the four MNIST files in a directory.

    Args:
        data_dir: Directory holding the MNIST IDX files.

    Returns:
        Paths keyed ``train_images``, ``train_labels``, ``test_images``,
        ``test_labels``. If several spellings exist, the uncompressed standard
        name wins.

    Raises:
        FileNotFoundError: The directory or any of the files is missing; the
            message lists what is missing and what the directory contains.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"{data_dir}: MNIST data directory does not exist. "
            f"It should contain {_expected_names()}."
        )
    wanted = {
        f"{split}_{kind}": names[split]
        for split in ("train", "test")
        for kind, names in (("images", IMAGE_FILES), ("labels", LABEL_FILES))
    }
    found: dict[str, Path] = {}
    missing: list[str] = []
    for key, name in wanted.items():
        path = next(
            (data_dir / c for c in _candidates(name) if (data_dir / c).is_file()), None
        )
        if path is None:
            missing.append(name + "[.gz]")
        else:
            found[key] = path
    if missing:
        contents = sorted(p.name for p in data_dir.iterdir())
        shown = ", ".join(contents[:20]) + (
            f", ... ({len(contents)} entries)" if len(contents) > 20 else ""
        )
        raise FileNotFoundError(
            f"{data_dir}: missing MNIST file(s) {', '.join(missing)}; "
            f"directory contains: {shown or '(nothing)'}. "
            "Download the four files from an MNIST mirror into this directory "
            "(compressed .gz or extracted)."
        )
    return found


def _check_images(path: Path, x: np.ndarray) -> None:
    if x.ndim != 3 or x.dtype != np.uint8:
        raise IdxFormatError(
            f"{path}: expected 3-D uint8 images (N, rows, cols), found "
            f"{x.ndim}-D {x.dtype} with shape {x.shape}. Is this an image file?"
        )


def _check_labels(path: Path, y: np.ndarray) -> None:
    if y.ndim != 1 or y.dtype != np.uint8:
        raise IdxFormatError(
            f"{path}: expected 1-D uint8 labels, found {y.ndim}-D {y.dtype} "
            f"with shape {y.shape}. Is this a label file?"
        )
    if y.size and y.max() >= _NUM_CLASSES:
        bad = np.unique(y[y >= _NUM_CLASSES])
        raise IdxFormatError(
            f"{path}: labels must be 0..{_NUM_CLASSES - 1}, found {bad.tolist()[:10]}. "
            "The file is corrupt or not an MNIST label file."
        )


def load_mnist(data_dir: str | Path) -> MnistArrays:
    """Loads and validates MNIST from its four IDX files.

    Args:
        data_dir: Directory with the standard MNIST file names, see
            ``find_mnist_files``.

    Returns:
        The train and test splits.

    Raises:
        FileNotFoundError: A file is missing.
        IdxFormatError: A file is malformed, has the wrong shape or dtype,
            labels outside 0..9, or image and label counts differ.
    """
    paths = find_mnist_files(data_dir)
    arrays = {}
    for split in ("train", "test"):
        img_path, lbl_path = paths[f"{split}_images"], paths[f"{split}_labels"]
        x, y = read_idx(img_path), read_idx(lbl_path)
        _check_images(img_path, x)
        _check_labels(lbl_path, y)
        if len(x) != len(y):
            raise IdxFormatError(
                f"{split} split mismatch: {img_path} has {len(x)} images but "
                f"{lbl_path} has {len(y)} labels. The files come from different "
                "datasets or one is incomplete; re-download both."
            )
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    return MnistArrays(**arrays, source=f"mnist-idx:{Path(data_dir)}")


def to_dataframe(spark, images: np.ndarray, labels: np.ndarray):
    """A Spark DataFrame of ``pixels`` (array<float>, the raw values, row-major) and ``label`` (int).

    Built from one Arrow table with a fixed-size list column, so the conversion
    costs no per-row Python work; scaling is left to the caller's Spark
    preprocessing (or to the model's graph).
    """
    import pyarrow as pa

    flat = images.reshape(len(images), -1).astype(np.float32)
    pixels = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])
    return spark.createDataFrame(pa.table({"pixels": pixels, "label": pa.array(labels.astype(np.int32))}))


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights for 1-D bilinear resampling with half-pixel centres.

    This is the same convention as PIL / OpenCV ``INTER_LINEAR`` for upscaling.
    Applying it along both axes gives separable 2-D bilinear interpolation.
    """
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    w = np.zeros((n_out, n_in))
    w[np.arange(n_out), lo] += 1 - frac
    w[np.arange(n_out), hi] += frac
    return w


def load_default_digits(test_fraction: float = 0.25, seed: int = 0) -> MnistArrays:
    """MNIST-shaped data built from scikit-learn's bundled digits (no download).

    The 1797 8x8 images (values 0..16) are scaled to 0..255, bilinearly
    upscaled to 20x20 and zero-padded by 4 pixels per side to 28x28, mirroring
    how MNIST centres each digit in a 20x20 box. The split is stratified so
    both sides contain every class.

    Args:
        test_fraction: Fraction of images held out for the test split.
        seed: Random state for the split; the same seed gives the same split.

    Returns:
        The dataset with ``source="sklearn-digits-upscaled"``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images * (255.0 / 16.0)
    w = _bilinear_matrix(8, 20)
    images = np.einsum("ij,njk,lk->nil", w, images, w)
    images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    images = np.pad(images, ((0, 0), (4, 4), (4, 4)))
    labels = digits.target.astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return MnistArrays(
        x_train, y_train, x_test, y_test, source="sklearn-digits-upscaled"
    )
