import gzip

import numpy as np
import pytest

from tfos_lib.datasets import idx
from tfos_lib.datasets.idx import (
    IdxFormatError,
    find_mnist_files,
    load_default_digits,
    load_mnist,
    read_idx,
    write_idx,
)

RNG = np.random.default_rng(0)


def _images(n):
    return RNG.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def _labels(n):
    return (np.arange(n) % 10).astype(np.uint8)


def _mnist_dir(tmp_path, n_train=20, n_test=10, gz=False):
    ext = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", _images(n_train))
    write_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", _labels(n_train))
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{ext}", _images(n_test))
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{ext}", _labels(n_test))
    return tmp_path


# --- round trips -------------------------------------------------------------


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
@pytest.mark.parametrize("array", [_images(5), _labels(7)], ids=["3d", "1d"])
def test_round_trip_uint8(tmp_path, name, array):
    path = write_idx(tmp_path / name, array)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_other_dtypes_native_endian(tmp_path, dtype):
    array = np.arange(-6, 6).reshape(3, 4).astype(dtype)
    out = read_idx(write_idx(tmp_path / "a.idx", array))
    assert out.dtype == np.dtype(dtype)  # native byte order, not big-endian
    np.testing.assert_array_equal(out, array)


def test_header_layout_matches_spec(tmp_path):
    path = write_idx(tmp_path / "l", np.array([1, 2, 3], dtype=np.uint8))
    assert (
        path.read_bytes() == b"\x00\x00\x08\x01" + b"\x00\x00\x00\x03" + b"\x01\x02\x03"
    )


def test_write_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))


def test_gzip_detected_by_magic_not_suffix(tmp_path):
    array = _labels(12)
    plain = write_idx(tmp_path / "plain", array)
    # Compressed content under a name without .gz ...
    disguised = tmp_path / "labels-idx1-ubyte"
    disguised.write_bytes(gzip.compress(plain.read_bytes()))
    np.testing.assert_array_equal(read_idx(disguised), array)
    # ... and uncompressed content under a .gz name.
    misnamed = tmp_path / "labels-idx1-ubyte.gz"
    misnamed.write_bytes(plain.read_bytes())
    np.testing.assert_array_equal(read_idx(misnamed), array)


# --- malformed files ---------------------------------------------------------


def _good_bytes():
    return b"\x00\x00\x08\x03" + np.array([2, 3, 4], ">u4").tobytes() + bytes(24)


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"<htm" + _good_bytes()[4:], "bad magic"),
        (b"\x00\x00\x07\x03" + _good_bytes()[4:], "unknown dtype code 0x07"),
        (b"\x00\x00", "truncated header"),
        (_good_bytes()[:10], "truncated header"),
        (
            _good_bytes()[:-5],
            "truncated: header says 2x3x4 uint8 = 24 data bytes, found 19",
        ),
        (
            _good_bytes() + b"xx",
            "trailing extra bytes: header says 2x3x4 uint8 = 24 data bytes, found 26",
        ),
        (gzip.compress(_good_bytes())[:-10], "corrupt gzip stream"),
        (b"\x1f\x8b" + b"garbage" * 5, "corrupt gzip stream"),
    ],
    ids=[
        "magic",
        "dtype",
        "short",
        "dims",
        "trunc",
        "trailing",
        "gz-trunc",
        "gz-garbage",
    ],
)
def test_bad_files(tmp_path, content, problem):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(IdxFormatError) as exc:
        read_idx(path)
    message = str(exc.value)
    assert str(path) in message
    assert problem in message


def test_idx_format_error_is_value_error():
    assert issubclass(IdxFormatError, ValueError)


def test_missing_file_names_expected_files(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    with pytest.raises(FileNotFoundError) as exc:
        read_idx(path)
    assert str(path) in str(exc.value)
    assert "t10k-labels-idx1-ubyte" in str(exc.value)


# --- directory loading -------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist(tmp_path, gz):
    data = load_mnist(_mnist_dir(tmp_path, gz=gz))
    assert data.x_train.shape == (20, 28, 28) and data.x_train.dtype == np.uint8
    assert data.y_train.shape == (20,) and data.y_train.dtype == np.uint8
    assert data.x_test.shape == (10, 28, 28)
    np.testing.assert_array_equal(data.y_test, _labels(10))
    assert str(tmp_path) in data.source


def test_find_accepts_dot_variant(tmp_path):
    _mnist_dir(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").rename(tmp_path / "train-images.idx3-ubyte")
    assert find_mnist_files(tmp_path)["train_images"].name == "train-images.idx3-ubyte"
    assert load_mnist(tmp_path).x_train.shape == (20, 28, 28)


def test_find_missing_lists_missing_and_contents(tmp_path):
    _mnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    (tmp_path / "README.txt").write_text("hi")
    with pytest.raises(FileNotFoundError) as exc:
        find_mnist_files(tmp_path)
    message = str(exc.value)
    assert "missing MNIST file(s) t10k-labels-idx1-ubyte" in message
    assert "README.txt" in message and "train-images-idx3-ubyte" in message


def test_find_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_mnist_files(tmp_path / "nope")


def test_count_mismatch_names_both_files(tmp_path):
    _mnist_dir(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", _labels(19))
    with pytest.raises(IdxFormatError) as exc:
        load_mnist(tmp_path)
    message = str(exc.value)
    assert "train-images-idx3-ubyte has 20 images" in message
    assert "train-labels-idx1-ubyte has 19 labels" in message


def test_labels_out_of_range(tmp_path):
    _mnist_dir(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(10, 12, dtype=np.uint8))
    with pytest.raises(
        IdxFormatError,
        match=r"t10k-labels-idx1-ubyte: labels must be 0\.\.9, found \[12\]",
    ):
        load_mnist(tmp_path)


def test_images_and_labels_swapped(tmp_path):
    _mnist_dir(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", _labels(20))
    with pytest.raises(
        IdxFormatError, match="train-images-idx3-ubyte: expected 3-D uint8 images"
    ):
        load_mnist(tmp_path)


# --- offline default ---------------------------------------------------------


def test_load_default_digits():
    data = load_default_digits()
    assert data.source == "sklearn-digits-upscaled"
    assert data.x_train.shape[1:] == (28, 28) and data.x_test.shape[1:] == (28, 28)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.uint8
    assert len(data.x_train) + len(data.x_test) == 1797
    assert len(data.x_test) == pytest.approx(0.25 * 1797, abs=1)
    assert len(data.x_train) == len(data.y_train) and len(data.x_test) == len(
        data.y_test
    )
    for y in (data.y_train, data.y_test):
        assert set(np.unique(y).tolist()) == set(range(10))
    assert max(data.x_train.max(), data.x_test.max()) == 255
    # MNIST-style 4-pixel empty border around the 20x20 digit box.
    x = np.concatenate([data.x_train, data.x_test])
    assert not x[:, :4].any() and not x[:, -4:].any()
    assert not x[:, :, :4].any() and not x[:, :, -4:].any()


def test_load_default_digits_deterministic():
    a, b = load_default_digits(seed=3), load_default_digits(seed=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    c = load_default_digits(seed=4)
    assert not np.array_equal(a.y_train, c.y_train)


def test_to_dataframe_keeps_every_pixel_in_row_major_order(spark):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    frame = idx.to_dataframe(spark, images, labels)
    assert [f.dataType.simpleString() for f in frame.schema.fields] == ["array<float>", "int"]
    rows = frame.collect()
    assert [r.label for r in rows] == labels.tolist()
    np.testing.assert_array_equal(np.array([r.pixels for r in rows]), images.reshape(5, -1).astype(np.float32))
