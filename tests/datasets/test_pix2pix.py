"""pix2pix's AB layout: the reader keeps the photo half, counts and names bad files; the Fashion-MNIST default."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from tfos_lib.datasets import pix2pix


def _ab_jpeg(rng, height=256, width=512) -> bytes:
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    pixels[:, width // 2 :] = pixels[:, width // 2 :] // 64 * 64  # a blocky photo half: survives JPEG
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def test_photo_half_is_the_right_half_of_the_resized_pair():
    rng = np.random.default_rng(0)
    data = _ab_jpeg(rng)
    image = pix2pix.photo_half(data, 16)
    assert image.shape == (16 * 16 * 3,) and image.dtype == np.float32
    decoded = Image.open(io.BytesIO(data)).convert("RGB")
    expected = np.asarray(decoded.resize((32, 16), Image.BILINEAR), np.float32)[:, 16:] / 255  # the book's order
    np.testing.assert_allclose(image, expected.reshape(-1), atol=1e-6)
    photo = np.asarray(decoded.crop((256, 0, 512, 256)).resize((16, 16), Image.BILINEAR), np.float32) / 255
    assert np.abs(image.reshape(16, 16, 3)[:, 2:] - photo[:, 2:]).max() < 0.02  # all but the seam: the photo


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (b"not a jpeg at all", "not an image file"),
        ("truncated", "corrupt image"),
        ("square", r"256x256 \(WxH\) is not a pix2pix AB pair"),
    ],
)
def test_photo_half_refuses_bad_files_saying_why(data, message):
    rng = np.random.default_rng(1)
    if data == "truncated":
        data = _ab_jpeg(rng)[:3000]
    elif data == "square":
        data = _ab_jpeg(rng, 256, 256)
    with pytest.raises(ValueError, match=message):
        pix2pix.photo_half(data, 16)


def test_reader_keeps_good_files_and_lists_bad_ones(spark, tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "edges2shoes" / "train"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"{i}_AB.jpg").write_bytes(_ab_jpeg(rng))
    (folder / "9_AB.jpg").write_bytes(_ab_jpeg(rng)[:2000])
    (folder / "8_AB.jpg").write_bytes(_ab_jpeg(rng, 64, 64))
    (folder / "7_AB.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not read")
    rows = {os.path.basename(r.path): r for r in pix2pix.read_pix2pix(spark, str(tmp_path), "edges2shoes", "train", 8)
            .collect()}
    assert sorted(rows) == ["0_AB.jpg", "1_AB.jpg", "2_AB.jpg", "7_AB.jpg", "8_AB.jpg", "9_AB.jpg"]
    for name in ("0_AB.jpg", "1_AB.jpg", "2_AB.jpg"):
        assert rows[name].error is None and len(rows[name].image) == 8 * 8 * 3
        np.testing.assert_allclose(rows[name].image, pix2pix.photo_half((folder / name).read_bytes(), 8), atol=1e-6)
    assert rows["7_AB.jpg"].error == "empty file"
    assert "corrupt image" in rows["9_AB.jpg"].error
    assert "64x64 (WxH) is not a pix2pix AB pair" in rows["8_AB.jpg"].error
    assert all(rows[n].image is None for n in ("7_AB.jpg", "8_AB.jpg", "9_AB.jpg"))


def test_reader_on_a_missing_folder_says_what_it_expected(spark, tmp_path):
    (tmp_path / "edges2shoes" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"edges2shoes/train/\*\.jpg .*holds no \.jpg"):
        pix2pix.read_pix2pix(spark, str(tmp_path), "edges2shoes", "train", 8)
    with pytest.raises(FileNotFoundError, match="edges2handbags/val.*does not exist"):
        pix2pix.read_pix2pix(spark, str(tmp_path), "edges2handbags", "val", 8)


def test_fashion_default_writes_real_shoes_and_bags_in_the_ab_layout(tmp_path):
    info = pix2pix.write_fashion_pix2pix(str(tmp_path), train_per_domain=6, val_per_domain=3, seed=0)
    assert info["edges2shoes/train"]["files"] == 6 and info["edges2handbags/val"]["labels"] == {8: 3}
    assert sum(info["edges2shoes/val"]["labels"].values()) == 3
    assert set(info["edges2shoes/train"]["labels"]) == {5, 7, 9}
    files = sorted((tmp_path / "edges2handbags" / "train").iterdir())
    assert len(files) == 6
    pair = np.asarray(Image.open(files[0]))
    assert pair.shape == (256, 512, 3)
    edges, photo = pair[:, :256].mean(axis=2), pair[:, 256:].mean(axis=2)
    assert np.median(edges) > 200 and (edges < 128).any()  # black lines on white
    assert photo[:8, :8].mean() < 30 and photo.max() > 100  # Fashion-MNIST: a light object on black
    mtimes = [f.stat().st_mtime_ns for f in files]
    pix2pix.write_fashion_pix2pix(str(tmp_path), train_per_domain=6, val_per_domain=3, seed=0)
    assert [f.stat().st_mtime_ns for f in files] == mtimes  # kept, not rewritten
