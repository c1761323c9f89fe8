"""Tests for the job command line (tfos_lib.job) and the task-slot checks (tfos_lib.launcher)."""

import dataclasses
import re
import sys
import typing
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from tfos_lib import launcher
from tfos_lib.job import JobConfig, build_parser, config_dict, parse_config
from tfos_lib.launcher import available_slots, check_slots, expected_slots


@dataclass(frozen=True)
class DemoConfig(JobConfig):
    """A job config as a job would write it (real annotations here; JobConfig's own are strings)."""

    epochs: int = 3  # overrides the common default
    model: str = field(default="logreg", metadata={"help": "which model", "choices": ("logreg", "cnn")})
    learning_rate: float | None = field(default=None, metadata={"help": "optimizer step; None: the model's default"})
    warmup_steps: typing.Optional[int] = None  # noqa: UP045  (covers the typing.Union branch on purpose)
    augment: bool = field(default=False, metadata={"help": "random shifts of the training images"})


ALL_FLAGS = [
    "--data-dir",
    "--output-dir",
    "--num-workers",
    "--backend",
    "--epochs",
    "--batch-size",
    "--seed",
    "--max-restarts",
    "--checkpoint-every-steps",
    "--stall-timeout",
    "--model",
    "--learning-rate",
    "--warmup-steps",
    "--augment",
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
    assert [f.name for f in dataclasses.fields(DemoConfig)][:10] == [
        "data_dir", "output_dir", "num_workers", "backend", "epochs", "batch_size", "seed",
        "max_restarts", "checkpoint_every_steps", "stall_timeout",
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
        "num_workers": 1,
        "backend": "barrier",
        "epochs": 3,
        "batch_size": 32,
        "seed": 0,
        "max_restarts": 0,
        "checkpoint_every_steps": 0,
        "stall_timeout": 600.0,
        "model": "logreg",
        "learning_rate": None,
        "warmup_steps": None,
        "augment": False,
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
            "--seed", "-7",
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
        seed=-7,
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
