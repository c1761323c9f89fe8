"""Tests for the job command line and metrics envelope (tfos_lib.job) and the task-slot checks (tfos_lib.launcher)."""

import dataclasses
import importlib
import json
import math
import os
import re
import subprocess
import sys
import typing
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

import tfos_lib
from tfos_lib import launcher
from tfos_lib.job import JobConfig, JobRun, TrainingConfig, build_parser, config_dict, option, parse_config
from tfos_lib.launcher import available_slots, check_slots, expected_slots

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class DemoConfig(TrainingConfig):
    """A job config as a job would write it (real annotations here; JobConfig's own are strings)."""

    epochs: int = 3  # overrides the common default, keeps its bound (>= 1)
    model: str = option("logreg", "which model", choices=("logreg", "cnn"))
    learning_rate: float | None = option(None, "optimizer step; None: the model's default", greater_than=0)
    warmup_steps: typing.Optional[int] = None  # noqa: UP045  (covers the typing.Union branch on purpose)
    augment: bool = option(False, "random shifts of the training images")
    dropout_rate: float = option(0.0, "share of units dropped", min=0, less_than=1)


COMMON_FLAGS = ["--data-dir", "--output-dir", "--seed", "--overwrite", "--time-limit", "--mlflow", "--tensorboard"]
LAUNCH_FLAGS = ["--num-workers", "--backend", "--batch-size", "--max-restarts", "--stall-timeout"]
TRAINING_FLAGS = [
    "--epochs", "--checkpoint-every-steps", "--steps-per-execution", "--all-reduce-precision", "--shuffle-buffer",
]
ALL_FLAGS = [
    *COMMON_FLAGS,
    *LAUNCH_FLAGS,
    *TRAINING_FLAGS,
    "--model",
    "--learning-rate",
    "--warmup-steps",
    "--augment",
    "--dropout-rate",
]


def _exit_message(capsys, argv):
    """Parses argv expecting argparse's exit 2; returns stderr."""
    with pytest.raises(SystemExit) as info:
        parse_config(DemoConfig, argv)
    assert info.value.code == 2
    return capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# parse_config


def test_flags_are_the_dashed_field_names():
    assert [f.name for f in dataclasses.fields(DemoConfig)][:12] == [
        "data_dir", "output_dir", "seed", "overwrite", "time_limit", "mlflow", "tensorboard", "num_workers", "backend",
        "batch_size", "max_restarts", "stall_timeout",
    ]
    options = [a.option_strings[0] for a in build_parser(DemoConfig)._actions if a.dest != "help"]
    assert options == ALL_FLAGS


def test_defaults():
    config = parse_config(DemoConfig, [])
    assert type(config) is DemoConfig
    assert config == DemoConfig()
    assert config_dict(config) == {
        "data_dir": None,
        "output_dir": "output",
        "seed": 0,
        "overwrite": False,
        "time_limit": 0.0,
        "mlflow": False,
        "tensorboard": False,
        "num_workers": 1,
        "backend": "barrier",
        "batch_size": 32,
        "max_restarts": 0,
        "stall_timeout": 600.0,
        "epochs": 3,
        "checkpoint_every_steps": 0,
        "steps_per_execution": 1,
        "all_reduce_precision": "float32",
        "shuffle_buffer": 0,
        "model": "logreg",
        "learning_rate": None,
        "warmup_steps": None,
        "augment": False,
        "dropout_rate": 0.0,
    }


def test_values_and_types():
    config = parse_config(
        DemoConfig,
        [
            "--data-dir", "/data/mnist",
            "--output-dir=out/run1",
            "--num-workers", "2",
            "--backend", "local",
            "--epochs", "5",
            "--batch-size", "64",
            "--seed", "7",
            "--model", "cnn",
            "--learning-rate", "1e-3",
            "--warmup-steps", "100",
            "--augment",
        ],
    )
    assert config == DemoConfig(
        data_dir="/data/mnist",
        output_dir="out/run1",
        num_workers=2,
        backend="local",
        epochs=5,
        batch_size=64,
        seed=7,
        model="cnn",
        learning_rate=0.001,
        warmup_steps=100,
        augment=True,
    )
    assert type(config.num_workers) is int and type(config.seed) is int
    assert type(config.learning_rate) is float
    assert type(config.warmup_steps) is int
    assert config.augment is True


@pytest.mark.parametrize(
    "argv,expected",
    [([], False), (["--augment"], True), (["--no-augment"], False), (["--augment", "--no-augment"], False),
     (["--no-augment", "--augment"], True)],
)
def test_boolean_flag_and_its_negation(argv, expected):
    assert parse_config(DemoConfig, argv).augment is expected


def test_argv_none_reads_sys_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["job.py", "--epochs", "9", "--model", "cnn"])
    config = parse_config(DemoConfig)
    assert (config.epochs, config.model) == (9, "cnn")


def test_config_is_frozen():
    config = parse_config(DemoConfig, [])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 2


def test_help_shows_defaults_and_choices():
    text = build_parser(DemoConfig, description="demo job").format_help()
    assert "demo job" in text
    assert "default: logreg" in text
    assert "{logreg,cnn}" in text
    assert "--no-augment" in text
    assert "{barrier,tfos,local}" in text


@pytest.mark.parametrize("argv", [["--epoch", "3"], ["--learn", "0.1"], ["--bogus"], ["--epochs", "2", "extra"]])
def test_unknown_option_lists_every_valid_option(capsys, argv):
    err = _exit_message(capsys, argv)
    assert "unknown option(s)" in err
    for token in argv:
        if token.startswith("--"):
            assert token in err
    valid = err.split("Valid options:", 1)[1]
    listed = re.findall(r"--[a-z-]+", valid)
    assert listed == ALL_FLAGS


def test_bad_choice(capsys):
    err = _exit_message(capsys, ["--model", "rnn"])
    assert "--model" in err and "invalid choice" in err and "'rnn'" in err
    assert "logreg" in err and "cnn" in err


def test_bad_backend(capsys):
    err = _exit_message(capsys, ["--backend", "horovod"])
    assert "--backend" in err and "'horovod'" in err and "barrier" in err


@pytest.mark.parametrize("argv,flag", [(["--epochs", "two"], "--epochs"), (["--learning-rate", "fast"], "--learning-rate")])
def test_bad_type(capsys, argv, flag):
    err = _exit_message(capsys, argv)
    assert flag in err and argv[1] in err


@pytest.mark.parametrize("flag", ["--num-workers", "--epochs", "--batch-size"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_non_positive_counts_are_rejected(capsys, flag, value):
    err = _exit_message(capsys, [flag, value])
    assert f"{flag} must be >= 1; got {value}." in err


def test_direct_construction_validates_too():
    with pytest.raises(ValueError, match="--num-workers must be >= 1; got 0"):
        DemoConfig(num_workers=0)
    with pytest.raises(ValueError, match="--backend must be one of"):
        DemoConfig(backend="nope")


# ---------------------------------------------------------------------------------------------
# Value checks declared with option(), checked once for every field


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--stall-timeout", "nan"], "--stall-timeout must be a finite number; got nan."),
        (["--stall-timeout", "inf"], "--stall-timeout must be a finite number; got inf."),
        (["--learning-rate", "-1"], "--learning-rate must be > 0; got -1."),
        (["--learning-rate", "0"], "--learning-rate must be > 0; got 0."),
        (["--output-dir", ""], "--output-dir must not be empty; got ''."),
        (["--stall-timeout", "0.5"], "--stall-timeout must be >= 1; got 0.5."),
        (["--max-restarts", "-1"], "--max-restarts must be >= 0; got -1."),
        (["--dropout-rate", "1"], "--dropout-rate must be >= 0 and < 1; got 1."),
        (["--epochs", "0"], "--epochs must be >= 1; got 0."),  # bound inherited by DemoConfig's redeclaration
    ],
)
def test_bad_values_are_refused_with_the_option_and_its_range(capsys, argv, message):
    assert message in _exit_message(capsys, argv)


@pytest.mark.parametrize("batch_size,workers,nearest", [(32, 3, "30 or 33"), (2, 3, "3"), (100, 8, "96 or 104")])
def test_batch_size_must_split_evenly_over_the_workers(capsys, batch_size, workers, nearest):
    err = _exit_message(capsys, ["--batch-size", str(batch_size), "--num-workers", str(workers)])
    assert f"--batch-size {batch_size} must be a multiple of --num-workers {workers}" in err
    assert f"use --batch-size {nearest}" in err
    assert parse_config(DemoConfig, ["--batch-size", "33", "--num-workers", "3"]).batch_size == 33


def test_between_bounds_name_both_ends():
    @dataclass(frozen=True)
    class Fractions(JobConfig):
        share: float = option(0.5, "a share", greater_than=0, less_than=1)
        probability: float = option(0.5, "a probability", min=0, max=1)

    with pytest.raises(ValueError, match=r"--share must be between 0 and 1 \(exclusive\); got 1\."):
        Fractions(share=1.0)
    with pytest.raises(ValueError, match=r"--probability must be between 0 and 1 \(inclusive\); got 1\.5\."):
        Fractions(probability=1.5)
    with pytest.raises(ValueError, match="--probability must be a finite number; got nan"):
        Fractions(probability=math.nan)
    assert Fractions(share=0.25, probability=1.0).probability == 1.0


def test_a_redeclaration_with_its_own_bounds_replaces_the_inherited_ones():
    @dataclass(frozen=True)
    class AtLeastTwo(DemoConfig):
        epochs: int = option(2, "passes", min=2)

    with pytest.raises(ValueError, match="--epochs must be >= 2; got 1"):
        AtLeastTwo(epochs=1)


@pytest.mark.parametrize(
    "job,argv,message",
    [
        ("stock_gp", ["--task-timeout", "0"], "--task-timeout must be > 0; got 0."),
        ("stock_gp", ["--windows-per-task", "0"], "--windows-per-task must be >= 1; got 0."),
        ("mnist", ["--seed", "-1"], "--seed must be between 0 and 4294967295 (inclusive); got -1."),
        ("sentiment", ["--synthetic-rows", "1"], "--synthetic-rows must be >= 2; got 1."),
        ("stock_gp", ["--num-workers", "2"], "unknown option(s) --num-workers"),
        ("mnist", ["--learning-rate", "-1"], "--learning-rate must be > 0; got -1."),
        ("tflite", ["--calibration-rows", "0"], "--calibration-rows must be >= 1; got 0."),
        ("recommend", ["--learning-rate", "-1"], "--learning-rate must be > 0; got -1."),
        ("recommend", ["--ranking-learning-rate", "nan"], "--ranking-learning-rate must be a finite number"),
        ("recommend", ["--als-ranks", "0,8"], "--als-ranks takes comma-separated numbers >= 0 (ranks >= 1)"),
        ("recommend", ["--history-length", "0"], "--history-length must be >= 1; got 0."),
        ("recommend", ["--ivf-nprobe", "0"], "--ivf-nprobe must be >= 1; got 0."),
        ("sentiment", ["--stall-timeout", "nan"], "--stall-timeout must be a finite number; got nan."),
        ("sentiment", ["--output-dir", ""], "--output-dir must not be empty"),
        ("mnist", ["--batch-size", "100", "--num-workers", "3"], "use --batch-size 99 or 102"),
        ("transfer_learning", ["--classifier", "keras", "--batch-size", "15", "--num-workers", "2"],
         "--batch-size 15 must be a multiple of --num-workers 2"),
        ("pacman_dqn", ["--num-workers", "3"], "use --batch-size 30 or 33"),
        ("pacman_dqn", ["--epochs", "3"], "unknown option(s) --epochs"),
        ("pacman_dqn", ["--data-dir", "/data"], "unknown option(s) --data-dir"),
        ("pacman_dqn", ["--learning-rate", "-1"], "--learning-rate must be > 0; got -1."),
        ("pacman_dqn", ["--gamma", "1.5"], "--gamma must be between 0 and 1 (inclusive); got 1.5."),
        ("text_lstm", ["--tokens", "bytes"], "argument --tokens: invalid choice: 'bytes'"),
        ("text_lstm", ["--held-out-fraction", "1"], "--held-out-fraction must be between 0 and 1 (exclusive); got 1."),
        ("exoplanets", ["--engine", "xgboost"], "invalid choice: 'xgboost'"),
        ("exoplanets", ["--validation-fraction", "1"], "--validation-fraction must be between 0 and 1 (exclusive)"),
        ("exoplanets", ["--batch-size", "8"], "unknown option(s) --batch-size"),
        ("fraud", ["--min-recall", "1"], "--min-recall must be >= 0 and < 1; got 1."),
        ("fraud", ["--test-fraction", "0"], "--test-fraction must be between 0 and 1 (exclusive); got 0."),
        ("fraud", ["--split", "month"], "invalid choice: 'month'"),
        ("traffic_signs", ["--steps", "5", "--epochs", "10"], "--steps 5 must be >= --epochs 10"),
        ("traffic_signs", ["--validation-fraction", "1"], "--validation-fraction must be between 0 and 1 (exclusive)"),
        ("capsnet", ["--routing-iterations", "0"], "--routing-iterations must be >= 1; got 0."),
        ("capsnet", ["--reconstruction-loss", "l1"], "invalid choice: 'l1'"),
        ("discogan", ["--image-size", "40"], "--image-size must be a multiple of 16"),
        ("discogan", ["--beta-1", "1"], "--beta-1 must be >= 0 and < 1; got 1."),
        ("discogan", ["--generator-steps", "0"], "--generator-steps must be between 1 and 4 (inclusive); got 0."),
        ("speech_commands", ["--model", "tiny_conv"], "invalid choice: 'tiny_conv'"),
        ("speech_commands", ["--wanted-words", "yes,_silence_"], "--wanted-words must be distinct folder names"),
        ("speech_commands", ["--validation-percentage", "60", "--testing-percentage", "40"],
         "--validation-percentage plus --testing-percentage must stay below 100"),
        ("speech_commands", ["--background-volume", "2"], "--background-volume must be between 0 and 1 (inclusive)"),
        ("speech_commands", ["--learning-rate-drop", "0"], "--learning-rate-drop must be > 0 and <= 1; got 0."),
    ],
)
def test_jobs_refuse_bad_values_before_starting_spark(capsys, monkeypatch, job, argv, message):
    def accepted(app_name):  # a job that took the bad value would start Spark (and train) here
        raise AssertionError(f"{job} accepted {argv}")

    monkeypatch.setattr(tfos_lib.job, "spark_session", accepted)
    module = importlib.import_module(f"jobs.{job}")
    with pytest.raises(SystemExit) as caught:
        module.main(argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


# What each job's code reads: stock_gp fits in plain Spark tasks, transfer_learning's KerasEstimator
# has workers, backend, epochs and batch size only, pacman_dqn's learners train by agent steps.
JOB_LAUNCHER_FLAGS = {
    "mnist": LAUNCH_FLAGS + TRAINING_FLAGS,
    "tflite": LAUNCH_FLAGS + TRAINING_FLAGS,
    "sentiment": LAUNCH_FLAGS + TRAINING_FLAGS,
    "recommend": LAUNCH_FLAGS + TRAINING_FLAGS,
    "pacman_dqn": LAUNCH_FLAGS,
    "transfer_learning": ["--num-workers", "--backend", "--batch-size", "--epochs"],
    "stock_gp": [],
    "text_lstm": LAUNCH_FLAGS + TRAINING_FLAGS,
    # YDF and MLlib grow trees on whole splits: no batches, steps to watch, or checkpoints to resume.
    "exoplanets": ["--num-workers", "--backend"],
    "fraud": LAUNCH_FLAGS + TRAINING_FLAGS,
    "traffic_signs": LAUNCH_FLAGS + TRAINING_FLAGS,
    "capsnet": LAUNCH_FLAGS + TRAINING_FLAGS,
    "discogan": LAUNCH_FLAGS + TRAINING_FLAGS,
    "speech_commands": LAUNCH_FLAGS + TRAINING_FLAGS,
}


@pytest.mark.parametrize("job", sorted(JOB_LAUNCHER_FLAGS))
def test_help_lists_only_the_options_a_job_uses(job):
    module = importlib.import_module(f"jobs.{job}")
    flags = {a.option_strings[0] for a in build_parser(module.Config)._actions if a.dest != "help"}
    # pacman_dqn reads no dataset: the game's ROM ships in the ale-py wheel.
    assert set(COMMON_FLAGS) - flags == ({"--data-dir"} if job == "pacman_dqn" else set())
    launcher_flags = set(LAUNCH_FLAGS + TRAINING_FLAGS)
    assert flags & launcher_flags == set(JOB_LAUNCHER_FLAGS[job])


# ---------------------------------------------------------------------------------------------
# The metrics envelope


def test_job_run_writes_the_envelope_of_a_training_job(tmp_path, check_metrics_envelope):
    cfg = DemoConfig(output_dir=str(tmp_path), num_workers=2, batch_size=64)
    run = JobRun("demo", cfg)
    metrics = run.write_metrics(data={"source": "generated", "rows": 10}, results={"test_accuracy": 0.5},
                                book_reference={"test_accuracy": 0.9}, resolved={"learning_rate": 0.01})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics
    check_metrics_envelope(saved, "demo", training=True)
    assert saved["tfos_lib_version"] == tfos_lib.__version__
    assert (saved["num_workers"], saved["backend"]) == (2, "barrier")
    assert saved["config"]["batch_size"] == 64 and saved["config"]["learning_rate"] == 0.01
    assert saved["results"] == {"test_accuracy": 0.5} and saved["data"]["rows"] == 10


def test_job_run_of_a_job_without_workers_has_no_worker_keys(tmp_path, check_metrics_envelope):
    run = JobRun("plain", JobConfig(output_dir=str(tmp_path)))
    metrics = run.write_metrics(data={"source": "x"}, results={}, book_reference=None)
    check_metrics_envelope(metrics, "plain", training=False)
    assert "num_workers" not in metrics and "backend" not in metrics


# ---------------------------------------------------------------------------------------------
# expected_slots (pure)


@pytest.mark.parametrize(
    "conf,slots",
    [
        ({"spark.master": "local"}, 1),
        ({"spark.master": "local[4]"}, 4),
        ({"spark.master": "local[4,2]"}, 4),
        ({"spark.master": "local[4]", "spark.task.cpus": "2"}, 2),
        ({"spark.master": "local[5]", "spark.task.cpus": "2"}, 2),
        ({"spark.master": "local[2]", "spark.task.cpus": "4"}, 0),
        ({"spark.master": "local-cluster[2,1,1024]"}, 2),
        ({"spark.master": "local-cluster[ 3 , 4 , 2048 ]"}, 12),
        ({"spark.master": "local-cluster[2,4,1024]", "spark.task.cpus": "2"}, 4),
        ({"spark.master": "local-cluster[2,3,1024]", "spark.task.cpus": "2"}, 2),
        ({"spark.master": "local-cluster[2,1,1024]", "spark.task.cpus": "2"}, 0),
        ({"spark.master": "yarn", "spark.executor.instances": "3", "spark.executor.cores": "4"}, 12),
        ({"spark.master": "spark://host:7077", "spark.executor.instances": "2", "spark.executor.cores": "1"}, 2),
        (
            {"spark.master": "k8s://https://k:443", "spark.executor.instances": "3", "spark.executor.cores": "5",
             "spark.task.cpus": "2"},
            6,
        ),
        (
            {"spark.master": "yarn", "spark.executor.instances": "3", "spark.executor.cores": "4",
             "spark.dynamicAllocation.enabled": "false"},
            12,
        ),
    ],
)
def test_expected_slots(conf, slots):
    assert expected_slots(conf) == slots


@pytest.mark.parametrize("cores", [1, 6, 64])
@pytest.mark.parametrize("master", ["local[*]", "local[*,3]"])
def test_expected_slots_local_star_uses_this_machines_cores(monkeypatch, master, cores):
    monkeypatch.setattr(launcher.os, "cpu_count", lambda: cores)
    assert expected_slots({"spark.master": master}) == cores
    assert expected_slots({"spark.master": master, "spark.task.cpus": "2"}) == cores // 2


@pytest.mark.parametrize(
    "conf",
    [
        {"spark.master": "yarn", "spark.executor.instances": "3", "spark.executor.cores": "4",
         "spark.dynamicAllocation.enabled": "true"},
        {"spark.master": "yarn", "spark.executor.instances": "3", "spark.executor.cores": "4",
         "spark.dynamicAllocation.enabled": "TRUE"},
        {"spark.master": "yarn"},
        {"spark.master": "yarn", "spark.executor.instances": "3"},
        {"spark.master": "spark://host:7077", "spark.executor.cores": "4"},
        {"spark.master": "k8s://https://k:443"},
        {"spark.master": "mesos://host:5050"},
        {"spark.master": "localhost"},
        {"spark.master": ""},
        {},
    ],
    ids=["dyn", "dyn-upper", "yarn", "no-cores", "no-instances", "k8s", "mesos", "localhost", "empty", "missing"],
)
def test_expected_slots_unknown_is_none(conf):
    assert expected_slots(conf) is None


# ---------------------------------------------------------------------------------------------
# check_slots


def test_check_slots_refuses_more_workers_than_local2_has(spark):
    sc = spark.sparkContext
    assert available_slots(sc) == 2
    with pytest.raises(RuntimeError) as info:
        check_slots(sc, 3, start_timeout=30)
    message = str(info.value)
    assert "slots" in message
    assert "num_workers=3" in message and "need 3" in message
    assert "only 2" in message
    assert "local[2]" in message


@pytest.mark.parametrize("num_workers", [1, 2])
def test_check_slots_accepts_what_local2_has(spark, num_workers):
    assert check_slots(spark.sparkContext, num_workers, start_timeout=30) is None


def _fake_sc(conf: dict, slots_over_time: list[int]):
    """A SparkContext stand-in: a conf, and registered slots that change with every poll."""
    polls = iter(slots_over_time)
    jsc = SimpleNamespace(
        maxNumConcurrentTasks=lambda profile: next(polls),
        resourceProfileManager=lambda: SimpleNamespace(defaultResourceProfile=lambda: "default"),
    )
    return SimpleNamespace(
        getConf=lambda: SimpleNamespace(getAll=lambda: list(conf.items())),
        _jsc=SimpleNamespace(sc=lambda: jsc),
    )


def test_check_slots_without_a_promise_fails_after_the_timeout():
    sc = _fake_sc({"spark.master": "yarn"}, [1, 1, 1])
    with pytest.raises(RuntimeError, match=r"after waiting 0 s.* only 1\b") as info:
        check_slots(sc, 4, start_timeout=0)
    assert "num_workers=4" in str(info.value) and "slots" in str(info.value)


def test_check_slots_waits_for_executors_to_register():
    sc = _fake_sc({"spark.master": "yarn"}, [0, 4])
    assert check_slots(sc, 4, start_timeout=30) is None


def test_check_slots_promise_too_small_fails_before_polling():
    sc = _fake_sc(
        {"spark.master": "yarn", "spark.executor.instances": "2", "spark.executor.cores": "2"}, []
    )  # polling would raise StopIteration
    with pytest.raises(RuntimeError, match="the Spark configuration provides only 4"):
        check_slots(sc, 5, start_timeout=30)


@pytest.mark.parametrize("job", ["mnist", "sentiment", "stock_gp", "transfer_learning", "recommend"])
def test_a_job_run_as_a_program_on_missing_data_prints_one_error_line_and_exits_1(job, tmp_path):
    """The README's promise for bad input, as a user sees it: one ``error:`` paragraph, no traceback, exit code 1."""
    empty = tmp_path / "empty"
    empty.mkdir()
    run = subprocess.run(
        [sys.executable, os.path.join("jobs", f"{job}.py"), "--data-dir", str(empty), "--output-dir", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", "")),
    )
    assert run.returncode == 1, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(empty) in errors[0], run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
