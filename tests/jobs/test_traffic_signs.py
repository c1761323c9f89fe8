"""The traffic-signs job: a smoke run on tiny generated GTSRB, 2 workers, bad input that stops it."""

from __future__ import annotations

import json
import os

import pytest

from jobs import traffic_signs
from tfos_lib import storage
from tfos_lib.datasets import gtsrb
from tfos_lib.export import saved_model

TINY = ["--default-tracks", "3", "--default-frames", "2", "--default-test-tracks", "1", "--steps", "6", "--epochs", "2",
        "--batch-size", "32", "--mc-samples", "4", "--ood-images", "12", "--validation-fraction", "0.34"]


def test_smoke_on_generated_data_with_baseline_written_to_s3(s3, spark, check_metrics_envelope, saved_figures):
    """--output-dir on an S3 server: exports, metrics and plots go there, the executors' MC scoring loads the
    models from there, and the generated data goes to a local scratch folder (never to the bucket)."""
    out = "s3a://runs/traffic_signs"
    metrics = traffic_signs.main([*TINY, "--backend", "local", "--output-dir", out])
    saved = json.loads(storage.read_bytes(f"{out}/metrics.json"))
    check_metrics_envelope(saved, "traffic_signs", training=True)
    data, results = saved["data"], saved["results"]
    assert data["source"] == "generated-gtsrb-pictograms" and data["test_rows"] == 43 * 6
    assert data["train_images"] + data["validation_images"] == 43 * 3 * 2 == data["train_rows"]
    assert data["train_bad"] == {} and data["validation_tracks"] > 0
    assert [row["model"] for row in results["table"]] == ["bayesian", "deterministic", "book (real GTSRB)"]
    for row in results["table"][:2]:
        assert 0.0 <= row["test_accuracy"] <= 1.0 and 0.0 <= row["ece"] <= 1.0 and 0.0 <= row["ood_auroc_entropy"] <= 1.0
    assert results["mc_samples"] == 4 and 0 <= results["pass_accuracy"]["min"] <= results["pass_accuracy"]["max"] <= 1
    assert results["case_studies"]  # at least one of the book's four cases was found
    assert metrics["backend"] == "local"
    files = storage.list_files(out)
    for name in ("traffic_signs", "traffic_signs_baseline"):
        assert f"models/{name}/1/saved_model.pb" in files
        assert saved_model.read_signature(f"{out}/models/{name}")["inputs"]["inputs"]["shape"] == [None, 1024]
    assert not any("default-gtsrb" in f for f in files)
    scratch = storage.default_data_dir(out, "default-gtsrb")
    assert os.path.isdir(os.path.join(scratch, "Final_Training"))
    assert {"training_curves.png", "uncertainty.png", "case_studies.png"} <= set(files)
    curves = {k: v for ax in saved_figures["training_curves.png"] for k, v in ax["lines"].items()}
    for model in ("bayesian", "deterministic"):
        history = results["training"][model]["history"]
        assert {f"{model} {k}" for k in history} <= set(curves)
        assert curves[f"{model} loss"] == pytest.approx(history["loss"]) and len(history["loss"]) == 2
    passes, reliability, coverage, entropy = saved_figures["uncertainty.png"]
    assert sum(passes["bars"]) == 4  # one accuracy per Monte-Carlo pass
    assert {"bayesian", "deterministic"} <= set(reliability["lines"]) and set(coverage["lines"]) == {"bayesian",
                                                                                                  "deterministic"}
    assert entropy["legend"] == ["test signs", "not signs (OOD)"]
    cases = saved_figures["case_studies.png"]  # per case: the image, then the histogram of the 4 sampled classes
    assert len(cases) == 2 * len(results["case_studies"])
    for image, histogram in zip(cases[::2], cases[1::2]):
        assert image["images"][0].shape == (32, 32) and sum(histogram["bars"]) == 4
        assert histogram["title"] in results["case_studies"]


def test_two_workers_train_the_flipout_lenet_together(spark, tmp_path):
    out = tmp_path / "out"
    metrics = traffic_signs.main([*TINY, "--num-workers", "2", "--no-baseline", "--output-dir", str(out)])
    assert metrics["num_workers"] == 2 and metrics["backend"] == "barrier"
    assert [row["model"] for row in metrics["results"]["table"]] == ["bayesian", "book (real GTSRB)"]
    assert metrics["results"]["training"]["bayesian"]["steps"] == 6
    # The Serving-layout export: stable names, the preprocessing stated, one MC pass per call.
    signature = saved_model.read_signature(str(out / "models" / "traffic_signs"))
    assert signature["inputs"] == {"inputs": {"dtype": "float32", "shape": [None, 1024]}}
    assert signature["outputs"]["outputs"]["shape"] == [None, 43] and "[0, 1]" in signature["preprocessing"]


def test_too_many_bad_files_stop_the_job_and_list_them(spark, tmp_path):
    root = tmp_path / "GTSRB"
    gtsrb.write_synthetic_gtsrb(str(root), 2, 1, 1, 1, seed=2)
    for class_id in range(3):
        folder = root / "Final_Training" / "Images" / f"{class_id:05d}"
        (folder / "00000_00000.ppm").write_bytes(b"P6\n40 40\n255\n" + b"\0" * 100)  # truncated
    with pytest.raises(ValueError, match=r"(?s)3 of 86 train rows.*unreadable or truncated image.*--max-bad-fraction"):
        traffic_signs.main(["--data-dir", str(root), "--output-dir", str(tmp_path / "out")])
