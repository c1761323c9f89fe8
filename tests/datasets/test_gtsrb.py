"""GTSRB: the pictograms, the generated layout, the book's preprocessing, the validating reader, the track split."""

from __future__ import annotations

import csv
import io
import os

import numpy as np
import pytest

from tfos_lib.datasets import gtsrb
from tfos_lib.datasets.gtsrb_signs import draw_sign


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("gtsrb") / "GTSRB"
    info = gtsrb.write_synthetic_gtsrb(str(root), tracks_per_class=2, frames_per_track=2, test_tracks_per_class=1,
                                       test_frames_per_track=1, seed=3)
    return root, info


def _ppm(width=40, height=30, colour=(200, 30, 30)):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PPM")
    return buffer.getvalue()


def test_the_43_pictograms_differ():
    drawings = [np.asarray(draw_sign(k, 48)) for k in range(43)]
    assert all(d.shape == (48, 48, 4) for d in drawings)
    flat = np.stack([d.reshape(-1) for d in drawings]).astype(int)
    distances = np.abs(flat[:, None] - flat[None]).sum(axis=-1)
    assert (distances + np.eye(43, dtype=int) * 10**9).min() > 0
    with pytest.raises(ValueError, match="0..42"):
        draw_sign(43)


def test_generator_writes_the_real_layout_with_track_names(generated):
    root, info = generated
    assert info["train_images"] == 43 * 2 * 2 and info["test_images"] == 43
    assert info["backgrounds"]  # photographs, or the procedural fallback named as such
    folder = root / "Final_Training" / "Images" / "00014"
    assert sorted(os.listdir(folder)) == ["00000_00000.ppm", "00000_00001.ppm", "00001_00000.ppm", "00001_00001.ppm",
                                          "GT-00014.csv"]
    with open(folder / "GT-00014.csv") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    assert list(rows[0]) == list(gtsrb.CSV_COLUMNS) and {r["ClassId"] for r in rows} == {"14"}
    for row in rows:  # the ROI is inside the image, with a border like GTSRB's
        assert 0 < int(row["Roi.X1"]) <= int(row["Roi.X2"]) < int(row["Width"])
    assert (root / "GT-final_test.csv").exists() and (root / "Final_Test" / "Images" / "00000.ppm").exists()
    # Same parameters again: nothing is rewritten.
    assert gtsrb.write_synthetic_gtsrb(str(root), 2, 2, 1, 1, seed=3) == info


def test_preprocess_crops_equalises_and_resizes():
    image = gtsrb.preprocess(_ppm(), (5, 5, 24, 24), size=32)
    assert image.shape == (1024,) and image.dtype == np.float32 and 0.0 <= image.min() <= image.max() <= 1.0
    with pytest.raises(ValueError, match=r"ROI \(5,5\)-\(40,24\) is outside the 40x30 image"):
        gtsrb.preprocess(_ppm(), (5, 5, 40, 24))
    with pytest.raises(ValueError, match="truncated"):
        gtsrb.preprocess(_ppm()[:-500], None)
    with pytest.raises(ValueError, match="not an image"):
        gtsrb.preprocess(b"not a picture at all", None)


def test_reader_lists_every_kind_of_bad_row(spark, tmp_path):
    root = tmp_path / "GTSRB"
    gtsrb.write_synthetic_gtsrb(str(root), 2, 2, 1, 1, seed=5)
    folder = root / "Final_Training" / "Images" / "00001"
    (folder / "00000_00001.ppm").write_bytes((folder / "00000_00001.ppm").read_bytes()[:-200])  # truncated
    (folder / "stray.ppm").write_bytes(_ppm())  # no CSV row names it
    with open(folder / "GT-00001.csv") as f:
        lines = f.read().splitlines()
    fields = lines[3].split(";")
    lines[3] = ";".join(fields[:5] + ["999", fields[6], fields[7]])  # ROI outside the image
    fields = lines[4].split(";")
    lines[4] = ";".join(fields[:7] + ["77"])  # class id outside 0-42
    lines.append("00009_00000.ppm;40;40;5;5;30;30;1")  # names a missing file
    (folder / "GT-00001.csv").write_text("\n".join(lines) + "\n")

    df = gtsrb.read_gtsrb(spark, str(tmp_path), "train")  # the folder holding GTSRB/ works too
    rows = {r.key: r for r in df.collect()}
    errors = {key: r.error for key, r in rows.items() if r.error}
    assert len(rows) == 43 * 4 + 2
    assert errors["00001/00000_00001.ppm"].startswith("unreadable or truncated image")
    assert errors["00001/stray.ppm"] == "no ground-truth CSV row names this file"
    assert errors["00001/00001_00000.ppm"].startswith("ROI") and "outside" in errors["00001/00001_00000.ppm"]
    assert errors["00001/00001_00001.ppm"] == "class id 77 outside 0-42"
    assert errors["00001/00009_00000.ppm"] == "CSV row names a missing file"
    assert len(errors) == 5
    good = rows["00002/00001_00000.ppm"]
    assert good.label == 2 and good.track == 2001 and len(good.image) == 1024
    test = gtsrb.read_gtsrb(spark, str(root), "test").collect()
    assert len(test) == 43 and all(r.error is None and r.track == -1 for r in test)
    assert sorted(r.label for r in test) == list(range(43))


def test_missing_layout_says_what_to_unzip(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="Final_Training/Images.*GTSRB_Final_Training_Images.zip"):
        gtsrb.read_gtsrb(spark, str(tmp_path), "train")


def test_split_by_track_never_splits_a_track(spark):
    rows = [(f"{t // 100:05d}/{t % 100:05d}_{f:05d}.ppm", t, [0.0]) for t in range(300) for f in range(3)]
    df = spark.createDataFrame(rows, "key string, track int, image array<float>")
    kept, held = gtsrb.split_by_track(df, 0.2, seed=1)
    kept_tracks = {r.track for r in kept.collect()}
    held_rows = held.collect()
    held_tracks = {r.track for r in held_rows}
    assert not kept_tracks & held_tracks and len(kept_tracks | held_tracks) == 300
    assert len(held_rows) == 3 * len(held_tracks) and 30 <= len(held_tracks) <= 90
    again = {r.track for r in gtsrb.split_by_track(df.repartition(5), 0.2, seed=1)[1].collect()}
    assert again == held_tracks


def test_out_of_distribution_images_decode():
    files = gtsrb.out_of_distribution_images(6, seed=1)
    images = [gtsrb.preprocess(data, None) for data in files]
    assert len(images) == 6 and all(i.shape == (1024,) for i in images)
