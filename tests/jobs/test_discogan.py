"""The DiscoGAN job: the networks' shapes, the train step on 2 workers, a smoke run with bad JPEGs, the figures."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

import tfos_lib
from jobs import discogan
from tfos_lib.datasets import pix2pix
from tfos_lib.ml import gan


def test_networks_keep_the_image_shape_and_the_discriminator_gives_one_logit():
    tf = tfos_lib.import_tensorflow()
    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    generator = gan.build_generator(tf, 32, "g")
    out = generator(images, training=True).numpy()
    assert out.shape == (2, 32, 32, 3) and out.min() >= 0 and out.max() <= 1  # the sigmoid, not the book's ReLU
    logits = gan.build_discriminator(tf, 32, "d")(images, training=True).numpy()
    assert logits.shape == (2, 1)
    # The book's parameter counts at 64x64 (its BN has no gamma, like ours): 3,477,155 and 3,837,409.
    big_g, big_d = gan.build_generator(tf, 64, "g64"), gan.build_discriminator(tf, 64, "d64")
    assert sum(int(np.prod(v.shape)) for v in big_g.trainable_variables) == 3_477_155
    assert sum(int(np.prod(v.shape)) for v in big_d.trainable_variables) == 3_837_409


def test_reconstruction_goes_through_both_generators():
    """The book's bug: its round trip applied the same generator twice. Here g_ab(a) is undone by g_ba."""
    tf = tfos_lib.import_tensorflow()
    discogan_model = discogan.build_model(discogan.Config(image_size=16, batch_size=2))
    calls = []
    for name in ("g_ab", "g_ba"):
        model = getattr(discogan_model, name)
        original = model.call
        model.call = lambda x, training=None, mask=None, _o=original, _n=name: calls.append(_n) or _o(x, training)
    a, b = (tf.random.uniform((2, 16, 16, 3), seed=s) for s in (1, 2))
    losses = discogan_model.losses_of(a, b)
    assert calls == ["g_ab", "g_ba", "g_ba", "g_ab"]  # fake_b, fake_a, recon_a = g_ba(fake_b), recon_b = g_ab(fake_a)
    # Logits and one sigmoid: the discriminator loss is not held in the double sigmoid's [2.01, 4.01].
    assert set(losses) == set(gan.LOSSES) and all(np.isfinite(float(v)) for v in losses.values())


def test_frechet_distance_and_diversity():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4))
    assert gan.frechet_distance(x, x) == pytest.approx(0, abs=1e-6)
    assert gan.frechet_distance(x, x + 3) == pytest.approx(4 * 9, rel=1e-6)  # mean shift only
    assert gan.diversity(np.ones((10, 4))) == pytest.approx(0, abs=1e-6)  # mode collapse
    assert gan.diversity(np.array([[0.0, 0], [3, 4]])) == pytest.approx(5)


def _one_step_on_each_worker(ctx, cfg):
    tf = tfos_lib.import_tensorflow()
    tf.keras.utils.set_random_seed(cfg.seed)
    with ctx.strategy().scope():
        model = discogan.build_model(cfg)
    before = np.concatenate([w.ravel() for w in model.get_weights()])
    history = model.fit(discogan.make_dataset(ctx, cfg), epochs=1, steps_per_epoch=1, verbose=0)
    after = np.concatenate([w.ravel() for w in model.get_weights()])
    np.savez(os.path.join(ctx.worker_dir(), f"weights-{ctx.rank}.npz"), before=before, after=after,
             first=ctx.data("a").column("image")[0])
    return {name: values[0] for name, values in history.history.items()}


def test_train_step_on_two_workers_leaves_identical_weights(spark, tmp_path):
    rng = np.random.default_rng(0)
    frame = lambda n: spark.createDataFrame(  # noqa: E731
        [(rng.random(16 * 16 * 3).astype(np.float32).tolist(),) for _ in range(n)], "image array<float>")
    cfg = discogan.Config(image_size=16, batch_size=4, num_workers=2, generator_steps=2)
    losses = tfos_lib.run(_one_step_on_each_worker, cfg, num_workers=2, backend="barrier", spark=spark,
                          inputs={"a": frame(8), "b": frame(8)}, output_dir=str(tmp_path))
    assert set(losses) == set(gan.LOSSES) and all(np.isfinite(v) for v in losses.values())
    with np.load(tmp_path / "weights-0.npz") as chief, np.load(tmp_path / "_workers" / "1" / "weights-1.npz") as other:
        np.testing.assert_array_equal(chief["before"], other["before"])
        assert not np.allclose(chief["before"], chief["after"])  # the step changed them...
        np.testing.assert_allclose(chief["after"], other["after"], rtol=0, atol=1e-6)  # ...the same on both
        assert not np.array_equal(chief["first"], other["first"])  # from different shards


def test_smoke_local_backend_counts_bad_jpegs(spark, tmp_path, check_metrics_envelope, saved_figures):
    data, out = tmp_path / "data", tmp_path / "out"
    pix2pix.write_fashion_pix2pix(str(data), train_per_domain=16, val_per_domain=10, seed=0)
    shoes = data / "edges2shoes" / "train"
    (shoes / "bad_truncated_AB.jpg").write_bytes(next(shoes.iterdir()).read_bytes()[:1500])
    Image.new("RGB", (256, 256)).save(shoes / "bad_square_AB.jpg")
    metrics = discogan.main(
        ["--backend", "local", "--data-dir", str(data), "--output-dir", str(out), "--image-size", "16",
         "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "4", "--judge-images", "300",
         "--judge-epochs", "1", "--eval-images", "10"]
    )
    saved = json.loads((out / "metrics.json").read_text())
    check_metrics_envelope(saved, "discogan", training=True)
    files = saved["data"]["files"]
    assert files["edges2shoes/train"]["used"] == 16 and files["edges2shoes/train"]["dropped"] == 2
    reasons = {os.path.basename(d["path"]): d["error"] for d in files["edges2shoes/train"]["dropped_files"]}
    assert "corrupt image" in reasons["bad_truncated_AB.jpg"]
    assert "256x256 (WxH) is not a pix2pix AB pair" in reasons["bad_square_AB.jpg"]
    assert files["edges2handbags/val"] == {"used": 10, "dropped": 0, "dropped_files": []}
    results = metrics["results"]
    assert results["iterations"] == 4 and results["eval_images"] == {"shoes": 10, "bags": 10}
    for name in ("transfer_accuracy_shoes_to_bags", "transfer_accuracy_bags_to_shoes"):
        assert 0 <= results[name] <= 1
    assert results["reconstruction_mse_a_b_a"] >= 0 and np.isfinite(results["identity_mapping_mse_b_a_b"])
    assert set(results["targets_met"]) == {"transfer_accuracy_both_ways_at_least_0.8",
                                           "reconstruction_mse_below_identity_mapping",
                                           "diversity_at_least_half_of_real"}
    assert set(results["history"]) == set(gan.LOSSES) and len(results["history"]["g_loss"]) == 2
    assert not results["judge"]["inverted_inputs"]  # Fashion-MNIST photos: light on black
    losses = {k: v for ax in saved_figures["losses.png"] for k, v in ax["lines"].items()}
    assert set(losses) == set(gan.LOSSES)
    for name, values in losses.items():
        assert values == pytest.approx(results["history"][name]), name
    # The sample grids are pixels the chief writes (no figure): decoded, 6 rows of 8 images at twice their size,
    # one per epoch and the final one, and not blank.
    for png in ("samples.png", "samples/step_000000.png", "samples/step_000002.png", "samples/step_000004.png"):
        grid = np.asarray(Image.open(out / png))
        assert grid.shape == (6 * 16 * 2, 8 * 16 * 2, 3) and grid.std() > 0, png
    for name in ("discogan_shoes_to_bags", "discogan_bags_to_shoes"):
        assert (out / "models" / name / "1" / "saved_model.pb").exists()
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
