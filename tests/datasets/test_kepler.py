"""The Kepler CSV reader refuses every kind of bad input with the file, the line and the fix; the generator's format."""

from __future__ import annotations

import numpy as np
import pytest

from tfos_lib.datasets import kepler

NUM_FLUX = 5
HEADER = "LABEL," + ",".join(f"FLUX.{i}" for i in range(1, NUM_FLUX + 1))
GOOD = ["2,1.5,-2.25,3,4,5", "1,0,0,0,0,0", "1,1e3,2,3,4,5"]


def write(tmp_path, lines, header=HEADER):
    path = tmp_path / "exoTrain.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    return str(path)


def test_reads_labels_and_flux_in_file_order(spark, tmp_path):
    stars = kepler.read_split(spark, write(tmp_path, GOOD), num_flux=NUM_FLUX).orderBy("star").collect()
    assert [s.label for s in stars] == [1, 0, 0]
    assert stars[0].flux == [1.5, -2.25, 3.0, 4.0, 5.0]
    assert stars[2].flux[0] == 1000.0


def test_missing_file(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="exoTest.csv: no such file"):
        kepler.read_split(spark, str(tmp_path / "exoTest.csv"), num_flux=NUM_FLUX)


@pytest.mark.parametrize(
    "header, found",
    [("LABEL,FLUX.1,FLUX.2,FLUX.3,FLUX.4", "missing \\['FLUX.5'\\]"), (HEADER.replace("LABEL", "label"), "unexpected"),
     (HEADER + ",FLUX.6", "found 7 columns")],
)
def test_wrong_or_missing_columns(spark, tmp_path, header, found):
    with pytest.raises(ValueError, match=f"exoTrain.csv, line 1: the header must be .*{found}"):
        kepler.read_split(spark, write(tmp_path, GOOD, header), num_flux=NUM_FLUX)


@pytest.mark.parametrize(
    "bad_line, problem",
    [("1,1,2,3,4", "wrong field count"), ("1,1,2,3,4,5,6", "wrong field count"), ("1,1,two,3,4,5", "non-numeric"),
     ("1,1,NaN,3,4,5", "non-finite"), ("1,1,2,Infinity,4,5", "non-finite"), ("1,1,,3,4,5", "empty"),
     ("3,1,2,3,4,5", "LABEL 3.0 \\(expected 1 = no planet or 2 = planet host\\)"), ("0,1,2,3,4,5", "LABEL 0.0")],
)
def test_bad_rows_name_the_line(spark, tmp_path, bad_line, problem):
    path = write(tmp_path, [*GOOD, bad_line, GOOD[1]])
    with pytest.raises(ValueError, match=f"exoTrain.csv, line 5: .*{problem}.*Fix or remove that line"):
        kepler.read_split(spark, path, num_flux=NUM_FLUX)


def test_split_without_planet_hosts(spark, tmp_path):
    with pytest.raises(ValueError, match="none of its 2 stars is a planet host"):
        kepler.read_split(spark, write(tmp_path, GOOD[1:]), num_flux=NUM_FLUX)


def test_generator_writes_the_kaggle_format(spark, tmp_path):
    paths = kepler.write_default_data(str(tmp_path), seed=3, sizes={"train": (12, 3), "test": (6, 1)})
    header = open(paths["train"]).readline().strip().split(",")
    assert header == kepler.HEADER
    train = kepler.read_split(spark, paths["train"]).orderBy("star").toPandas()
    assert list(train.label) == [1] * 3 + [0] * 9  # hosts first, like Kaggle's files
    flux = np.stack(train.flux)
    assert flux.shape == (12, kepler.NUM_FLUX) and np.isfinite(flux).all()
    assert 1 < np.median(np.abs(np.diff(flux, axis=1))) < 2000  # Kepler-like flux levels, not unit noise
    assert kepler.read_split(spark, paths["test"]).count() == 6
