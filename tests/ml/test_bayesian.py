"""The Flipout LeNet and its Monte-Carlo passes in Spark executors (tfos_lib.ml.bayesian + inference sampling)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from tfos_lib.ml import bayesian, inference


def test_mc_summary_entropy_and_mutual_information():
    agree = np.tile(np.array([[0.9, 0.05, 0.05]]), (4, 1, 1))  # 4 passes, 1 image, 3 classes
    disagree = np.array([[[1.0, 0, 0]], [[0, 1.0, 0]], [[0, 0, 1.0]], [[1.0, 0, 0]]])
    a, d = bayesian.mc_summary(agree), bayesian.mc_summary(disagree)
    assert a["mean_probs"].shape == (1, 3) and a["sampled_class"].tolist() == [[0, 0, 0, 0]]
    assert a["mutual_information"][0] == pytest.approx(0.0, abs=1e-6)  # the passes agree: no model uncertainty
    assert d["entropy"][0] > 1.0  # the mean (0.5, 0.25, 0.25) is uncertain
    assert d["mutual_information"][0] == pytest.approx(d["entropy"][0], abs=1e-5)  # and all of it is the model's
    logits = bayesian.mc_summary(np.log(agree), from_logits=True)
    np.testing.assert_allclose(logits["mean_probs"], a["mean_probs"], atol=1e-6)


def test_calibration_coverage_and_auroc():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    ece, bins = bayesian.expected_calibration_error(probs, np.array([0, 0, 1, 1]), bins=5)
    assert sum(b["count"] for b in bins) == 4 and 0.0 <= ece <= 1.0
    rows = bayesian.coverage_curve(np.array([0.1, 0.2, 0.9, 0.3]), np.array([True, True, False, True]), (1.0, 0.75))
    assert [r["accuracy"] for r in rows] == [0.75, 1.0]
    assert bayesian.auroc(np.array([0.1, 0.2]), np.array([0.3, 0.4])) == 1.0
    assert bayesian.auroc(np.array([0.5, 0.5]), np.array([0.5])) == 0.5


@pytest.fixture(scope="module")
def saved_flipout_lenet(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("bnn") / "model")
    model = bayesian.build_lenet(43, True, num_train_examples=100)
    model.save(path, save_format="tf")
    return path


def test_mc_passes_in_executors_have_their_shapes_and_repeat_with_a_seed(spark, saved_flipout_lenet):
    rng = np.random.default_rng(0)
    df = spark.createDataFrame([(i, rng.random(1024).astype(np.float32).tolist()) for i in range(12)],
                               "id int, image array<float>").repartition(2)
    names = ["mean_probs", "entropy", "mutual_information", "sampled_class"]

    def run(seed):
        scored = inference.predict(
            df, saved_flipout_lenet, ["image"], output_col="mc", output_names=names, batch_size=4, samples=7, seed=seed,
            loader=functools.partial(bayesian.load_lenet, num_classes=43, bayesian=True),
            summarize=functools.partial(bayesian.mc_summary, from_logits=True),
        )
        rows = scored.select("id", "mc.*").orderBy("id").collect()
        return {name: np.array([r[name] for r in rows]) for name in names}

    first, again, other = run(1), run(1), run(2)
    assert first["mean_probs"].shape == (12, 43) and first["sampled_class"].shape == (12, 7)
    assert first["entropy"].shape == first["mutual_information"].shape == (12, 1)
    np.testing.assert_allclose(first["mean_probs"].sum(axis=1), 1.0, atol=1e-4)
    for name in names:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["mean_probs"], other["mean_probs"])
    assert (first["mutual_information"] > 0).all()  # the passes differ: the weights are sampled

    raw = inference.predict(df, saved_flipout_lenet, ["image"], output_col="passes", batch_size=4, samples=3)
    assert len(raw.first()["passes"]) == 3 * 43
