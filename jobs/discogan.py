"""DiscoGAN shoes <-> handbags (chapter 9): two generators and two discriminators trained data-parallel on Spark.

Book: "TensorFlow Machine Learning Projects" (Packt, 2018), chapter 9. The book trains
DiscoGAN (Kim et al. 2017) on pix2pix's edges2shoes and edges2handbags at 64x64 for
100,000 iterations of 256 per domain on one GTX 1080 and shows pictures only: no number
says whether it worked. This job keeps its architecture without its bugs (named where
fixed below) and judges the result with numbers computed in the same run by a small
Fashion-MNIST classifier (the "judge"): the share of translated shoes it calls bags and
of translated bags it calls shoes, round-trip reconstruction MSE against an identity
mapping, a Frechet distance in the judge's feature space (FID-style: the judge, not
Inception) and the translations' diversity against the real target images'.

Data: pix2pix's layout from ``--data-dir``: ``edges2shoes/{train,val}/*.jpg`` and
``edges2handbags/{train,val}/*.jpg``, 256x512 edges|photo pairs; the job keeps the photo
halves. Without ``--data-dir`` it writes real photographs in that layout first:
Fashion-MNIST's shoes (sandal, sneaker, ankle boot) and bags (Debian's
``dataset-fashion-mnist``), upscaled, with Canny edges on the left.

Run::

    ./spark-submit.sh discogan                                   # offline default, 1 worker
    ./spark-submit.sh discogan --master local[2] -- --num-workers 2
    ./spark-submit.sh discogan -- --data-dir /data/pix2pix --image-size 64 --epochs 100

Writes to ``--output-dir``: metrics.json, samples.png (the final grid) and
samples/step_<n>.png (one per epoch), losses.png, tensorboard/ (losses and the grids),
models/discogan_shoes_to_bags/<version>/ and models/discogan_bags_to_shoes/<version>/
(SavedModels: ``inputs`` image_size x image_size x 3 RGB in [0, 1] -> ``outputs`` the same).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

import tfos_lib
from tfos_lib import job, report, storage
from tfos_lib.datasets import idx, pix2pix
from tfos_lib.export.saved_model import export_saved_model
from tfos_lib.ml import gan

BOOK_REFERENCE = {
    "metrics": None,
    "iterations": 100_000,
    "batch_size": 256,
    "image_size": 64,
    "source": "chapter 9: pictures only; 'took a significant amount of time' on one GTX 1080",
}


@dataclass(frozen=True)
class Config(job.TrainingConfig):
    output_dir: str = job.option("output/discogan", "where results go")
    image_size: int = job.option(32, "side of the square images the networks see (the book's: 64); a multiple of 16",
                                 min=16, max=256)
    epochs: int = job.option(24, "rounds of --steps-per-epoch iterations; a sample grid and a checkpoint after each")
    steps_per_epoch: int = job.option(25, "iterations per epoch", min=1)
    batch_size: int = job.option(64, "global batch per domain, summed over workers (the book's: 256)")
    learning_rate: float = job.option(2e-4, "Adam's learning rate, both optimizers (the book's: 0.0002)",
                                      greater_than=0)
    beta_1: float = job.option(0.5, "Adam's beta_1 (the book: TF's default 0.9; the DiscoGAN paper: 0.5)",
                               min=0, less_than=1)
    generator_steps: int = job.option(2, "generator updates per iteration, each extra one on fresh batches (the "
                                         "book's: 2)", min=1, max=4)
    eval_images: int = job.option(1000, "validation images per domain that the figures are computed on (at most)",
                                  min=10)
    judge_images: int = job.option(20000, "Fashion-MNIST training images the judge classifier learns from", min=100)
    judge_epochs: int = job.option(3, "the judge's passes over them", min=1)
    default_train: int = job.option(3000, "offline default: training photos per domain", min=10)
    default_val: int = job.option(1000, "offline default: validation photos per domain", min=10)

    def __post_init__(self):
        super().__post_init__()
        if self.image_size % 16:
            raise ValueError(f"--image-size must be a multiple of 16 (four stride-2 convolutions, then four 2x "
                             f"upsamplings); got {self.image_size}.")


# ---------------------------------------------------------------------------------------------
# Model (built in executors).


def build_model(cfg: Config):
    """The DiscoGAN with the job's settings (``tfos_lib.ml.gan``)."""
    return gan.build_discogan(cfg.image_size, cfg.learning_rate, cfg.beta_1, cfg.generator_steps)


def make_dataset(ctx: tfos_lib.WorkerContext, cfg: Config):
    """Per step, ``generator_steps`` independent (shoes, bags) batch pairs: the two domains are never paired."""
    tf = tfos_lib.import_tensorflow()
    shape = (-1, cfg.image_size, cfg.image_size, 3)

    def per_worker(_):
        sets = [ctx.data(name).dataset("image", global_batch_size=cfg.batch_size, seed=cfg.seed + 101 * ctx.rank + i)
                .map(lambda x: tf.reshape(x, shape)) for i, name in enumerate(("a", "b") * cfg.generator_steps)]
        return tf.data.Dataset.zip(tuple(sets))

    return ctx.strategy().distribute_datasets_from_function(per_worker)


# ---------------------------------------------------------------------------------------------
# The judge and the figures (chief, after training).


def build_judge(tf):
    """Fashion-MNIST's 10 classes from a 28x28 grey image; its 128-unit layer is the feature space."""
    layers = tf.keras.layers
    x = inputs = layers.Input((28, 28, 1))
    for filters in (32, 64):
        x = layers.MaxPooling2D(2)(layers.Conv2D(filters, 3, padding="same", activation="relu")(x))
    features = layers.Dense(128, activation="relu", name="features")(layers.Flatten()(x))
    outputs = layers.Dense(10, activation="softmax")(layers.Dropout(0.3)(features))
    model = tf.keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, tf.keras.Model(inputs, [features, outputs])


def to_judge(tf, images: np.ndarray, invert: bool) -> np.ndarray:
    """RGB images in [0, 1] -> the judge's 28x28 grey (inverted for photos on white, Fashion-MNIST's are on black)."""
    grey = tf.image.resize(tf.reduce_mean(images, axis=-1, keepdims=True), (28, 28), antialias=True).numpy()
    return 1.0 - grey if invert else grey


def sample_grid(g_ab, g_ba, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows: A, G_AB(A), G_BA(G_AB(A)), B, G_BA(B), G_AB(G_BA(B)); uint8 RGB."""
    fake_b = g_ab(a, training=False).numpy()
    fake_a = g_ba(b, training=False).numpy()
    rows = [a, fake_b, g_ba(fake_b, training=False).numpy(), b, fake_a, g_ab(fake_a, training=False).numpy()]
    grid = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    return (np.clip(grid, 0, 1) * 255).round().astype(np.uint8)  # clipped, unlike the book's wrapping uint8 cast


def save_png(path: str, pixels: np.ndarray) -> None:
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).resize((pixels.shape[1] * 2, pixels.shape[0] * 2), Image.NEAREST).save(path)


def evaluate(tf, g_ab, g_ba, judge_model, a: np.ndarray, b: np.ndarray, invert: bool) -> dict:
    """The issue's figures on validation images, each beside the baseline it must beat."""

    def run(model, x):
        return np.concatenate([model(x[i : i + 200], training=False).numpy() for i in range(0, len(x), 200)])

    def judge(images):
        x = to_judge(tf, images, invert)
        outs = [judge_model(x[i : i + 500], training=False) for i in range(0, len(x), 500)]
        return np.concatenate([o[0].numpy() for o in outs]), np.concatenate([o[1].numpy() for o in outs])

    fake_b, fake_a = run(g_ab, a), run(g_ba, b)
    recon_a, recon_b = run(g_ba, fake_b), run(g_ab, fake_a)
    (fa_real, pa_real), (fb_real, pb_real) = judge(a), judge(b)
    (fb_fake, pb_fake), (fa_fake, pa_fake) = judge(fake_b), judge(fake_a)
    shoe, bag = list(pix2pix.SHOE_CLASSES), list(pix2pix.BAG_CLASSES)
    is_shoe = lambda p: np.isin(p.argmax(axis=1), shoe)  # noqa: E731
    is_bag = lambda p: np.isin(p.argmax(axis=1), bag)  # noqa: E731
    mse = lambda x, y: float(np.mean((x - y) ** 2))  # noqa: E731
    half = len(fb_real) // 2
    return {
        "transfer_accuracy_shoes_to_bags": float(is_bag(pb_fake).mean()),
        "transfer_accuracy_bags_to_shoes": float(is_shoe(pa_fake).mean()),
        # Baselines: untranslated images (an identity translator) and what the judge says of real ones.
        "real_shoes_called_bags": float(is_bag(pa_real).mean()),
        "real_bags_called_shoes": float(is_shoe(pb_real).mean()),
        "real_bags_called_bags": float(is_bag(pb_real).mean()),
        "real_shoes_called_shoes": float(is_shoe(pa_real).mean()),
        "reconstruction_mse_a_b_a": mse(recon_a, a),
        "reconstruction_mse_b_a_b": mse(recon_b, b),
        # If the second generator were the identity, the round trip would return the translation itself.
        "identity_mapping_mse_a_b_a": mse(fake_b, a),
        "identity_mapping_mse_b_a_b": mse(fake_a, b),
        # A reconstruction that ignores its input: the mean image of the domain.
        "mean_image_mse_a": mse(a.mean(axis=0, keepdims=True), a),
        "mean_image_mse_b": mse(b.mean(axis=0, keepdims=True), b),
        "frechet_distance_judge_features": {
            "translated_bags_vs_real_bags": gan.frechet_distance(fb_fake, fb_real),
            "translated_shoes_vs_real_shoes": gan.frechet_distance(fa_fake, fa_real),
            "untranslated_shoes_vs_real_bags": gan.frechet_distance(fa_real, fb_real),
            "real_bags_half_vs_half": gan.frechet_distance(fb_real[:half], fb_real[half:]),
            "real_shoes_half_vs_half": gan.frechet_distance(fa_real[: len(fa_real) // 2], fa_real[len(fa_real) // 2 :]),
        },
        "diversity_judge_features": {
            "translated_bags": gan.diversity(fb_fake), "real_bags": gan.diversity(fb_real),
            "translated_shoes": gan.diversity(fa_fake), "real_shoes": gan.diversity(fa_real),
        },
    }


# ---------------------------------------------------------------------------------------------
# Training (runs on every worker).


def train_fn(ctx: tfos_lib.WorkerContext, cfg: Config, judge_data: tuple) -> dict:
    """All workers train the GAN together; the chief then draws the grids, trains the judge and scores."""
    tf = ctx.tf()
    tf.keras.utils.set_random_seed(cfg.seed)  # same initial weights on every worker
    with ctx.strategy().scope():  # tfos: variables mirrored across workers
        model = build_model(cfg)
    dataset = make_dataset(ctx, cfg)
    callbacks = ctx.callbacks(cfg.batch_size, cfg.checkpoint_every_steps)  # tfos: resume, progress, TensorBoard
    if ctx.is_chief:
        shape = (-1, cfg.image_size, cfg.image_size, 3)
        a_val, b_val = (ctx.data(name).column("image").reshape(shape) for name in ("a_val", "b_val"))
        # Plain copies (the chief alone runs them; anything under the strategy would wait for the others).
        g_ab, g_ba = (gan.build_generator(tf, cfg.image_size, name) for name in ("g_ab", "g_ba"))
        writer = tf.summary.create_file_writer(os.path.join(ctx.output_dir, "tensorboard", "samples"))

        def draw(step: int) -> np.ndarray:
            g_ab.set_weights(model.g_ab.get_weights())
            g_ba.set_weights(model.g_ba.get_weights())
            grid = sample_grid(g_ab, g_ba, a_val[:8], b_val[:8])
            save_png(os.path.join(ctx.output_dir, "samples", f"step_{step:06d}.png"), grid)
            with writer.as_default():
                tf.summary.image("A, G_AB(A), G_BA(G_AB(A)), B, G_BA(B), G_AB(G_BA(B))", grid[None], step=step)
            return grid

        callbacks.append(tf.keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: draw((epoch + 1) * cfg.steps_per_epoch)))
        draw(0)
    history, train_seconds = ctx.fit(model, dataset, epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch,
                                     callbacks=callbacks)
    if not ctx.is_chief:
        return {}

    ctx.phase("evaluate")
    save_png(os.path.join(ctx.output_dir, "samples.png"), draw(cfg.epochs * cfg.steps_per_epoch))
    x_judge, y_judge, x_test, y_test = judge_data
    judge, judge_features = build_judge(tf)
    judge.fit(x_judge[..., None] / 255.0, y_judge, batch_size=128, epochs=cfg.judge_epochs, verbose=0)
    _, judge_accuracy = judge.evaluate(x_test[..., None] / 255.0, y_test, batch_size=1000, verbose=0)
    # Photos on white (pix2pix's) are inverted for the judge: Fashion-MNIST's objects are light on black.
    border = np.concatenate([a_val[:, 0], a_val[:, -1], a_val[:, :, 0], a_val[:, :, -1]])
    invert = bool(border.mean() > 0.5)
    figures = evaluate(tf, g_ab, g_ba, judge_features, a_val, b_val, invert)
    preprocessing = f"{cfg.image_size}x{cfg.image_size} RGB photo scaled to [0, 1] (value / 255)"
    exported = {name: export_saved_model(generator, f"{ctx.output_dir}/models", name, preprocessing=preprocessing)
                for name, generator in (("discogan_shoes_to_bags", g_ab), ("discogan_bags_to_shoes", g_ba))}
    pairs = cfg.epochs * cfg.steps_per_epoch * cfg.batch_size
    return {
        **figures,
        "history": history,
        "judge": {"fashion_mnist_test_accuracy": float(judge_accuracy), "train_images": len(x_judge),
                  "inverted_inputs": invert},
        "saved_models": exported,
        "iterations": cfg.epochs * cfg.steps_per_epoch,
        "eval_images": {"shoes": len(a_val), "bags": len(b_val)},
        "resumed_from_epoch": ctx.resumed_from_epoch,
        "train_seconds": train_seconds,
        "image_pairs_per_second": pairs / train_seconds,
    }


# ---------------------------------------------------------------------------------------------
# Driver.


def load_data(spark, cfg: Config) -> tuple[dict, dict]:
    """The four image sets as tfos_lib inputs (photo halves decoded in executors), and what was read and dropped."""
    from pyspark.sql import functions as F

    data_dir, generated = cfg.data_dir, None
    if not data_dir:
        data_dir = storage.default_data_dir(cfg.output_dir, "default-pix2pix",
                                            dict(spark.sparkContext.getConf().getAll()))
        generated = pix2pix.write_fashion_pix2pix(data_dir, train_per_domain=cfg.default_train,
                                                  val_per_domain=cfg.default_val, seed=cfg.seed)
    inputs, files = {}, {}
    for name, dataset, split in (("a", "edges2shoes", "train"), ("b", "edges2handbags", "train"),
                                 ("a_val", "edges2shoes", "val"), ("b_val", "edges2handbags", "val")):
        df = pix2pix.read_pix2pix(spark, data_dir, dataset, split, cfg.image_size).cache()
        bad = df.where(F.col("error").isNotNull()).select("path", "error").orderBy("path").collect()
        good = df.where(F.col("error").isNull())
        used = good.count()
        files[f"{dataset}/{split}"] = {"used": used, "dropped": len(bad),
                                       "dropped_files": [{"path": r.path, "error": r.error} for r in bad[:50]]}
        if used == 0:
            raise ValueError(f"no usable image in {data_dir}/{dataset}/{split}: all {len(bad)} files were dropped, "
                             f"e.g. {bad[0].path}: {bad[0].error}. Expected 256x512 JPEG edges|photo pairs.")
        if split == "val":  # the first --eval-images by name, for the chief alone
            inputs[name] = tfos_lib.Input(good.orderBy("path").limit(cfg.eval_images).select("image"), shard=False)
        else:
            inputs[name] = good.select("image")
    source = f"pix2pix:{cfg.data_dir}" if cfg.data_dir else "fashion-mnist-photos-in-pix2pix-layout"
    return inputs, {"source": source, "data_dir": data_dir, "files": files, "generated": generated}


def load_judge_data(cfg: Config) -> tuple:
    """Fashion-MNIST's training images (a seeded sample of --judge-images) and all its test images."""
    arrays = idx.load_mnist(pix2pix.FASHION_MNIST_DIR)
    keep = np.random.default_rng(cfg.seed).permutation(len(arrays.x_train))[: cfg.judge_images]
    return arrays.x_train[keep], arrays.y_train[keep], arrays.x_test, arrays.y_test


def main(argv=None) -> dict:
    cfg = job.parse_config(Config, argv, description=__doc__.split("\n\n")[0])
    log = job.setup_logging()
    run = job.JobRun("discogan", cfg)
    spark = job.spark_session("discogan")
    inputs, data = load_data(spark, cfg)
    log.info("DiscoGAN on %s: %s; %d worker(s)", data["source"], data["files"], cfg.num_workers)
    result = job.launch(train_fn, cfg, inputs, spark, extra_args=(load_judge_data(cfg),))
    report.plot_curves(f"{cfg.output_dir}/losses.png", result["history"],
                       title=f"DiscoGAN losses (epoch = {cfg.steps_per_epoch} iterations)")
    r, div = result, result["diversity_judge_features"]
    checks = {
        "transfer_accuracy_both_ways_at_least_0.8": min(r["transfer_accuracy_shoes_to_bags"],
                                                        r["transfer_accuracy_bags_to_shoes"]) >= 0.8,
        "reconstruction_mse_below_identity_mapping": r["reconstruction_mse_a_b_a"] < r["identity_mapping_mse_a_b_a"]
        and r["reconstruction_mse_b_a_b"] < r["identity_mapping_mse_b_a_b"],
        "diversity_at_least_half_of_real": min(div["translated_bags"] / div["real_bags"],
                                               div["translated_shoes"] / div["real_shoes"]) >= 0.5,
    }
    metrics = run.write_metrics(data=data, results={**result, "targets_met": checks}, book_reference=BOOK_REFERENCE)
    log.info("shoes->bags %.3f, bags->shoes %.3f; reconstruction MSE %.4f / %.4f; targets %s; wrote %s/metrics.json",
             r["transfer_accuracy_shoes_to_bags"], r["transfer_accuracy_bags_to_shoes"], r["reconstruction_mse_a_b_a"],
             r["reconstruction_mse_b_a_b"], checks, cfg.output_dir)
    return metrics


if __name__ == "__main__":
    job.run_main(main)
