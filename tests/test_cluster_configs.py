"""Offline checks of the cluster tooling: Spark profiles, the flintrock template, cluster/ec2.sh."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tfos_lib.notebook import read_profile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF = os.path.join(REPO, "conf")
EC2_ENV = {"EC2_KEY_NAME": "test-key", "EC2_IDENTITY_FILE": "/keys/test.pem", "EC2_REGION": "us-west-2",
           "EC2_AMI": "ami-0123456789abcdef0"}


def _properties(name: str) -> dict[str, str]:
    return read_profile(os.path.join(CONF, f"{name}.conf"))


@pytest.mark.parametrize("name", ["local", "local-cluster", "standalone", "yarn", "k8s", "ec2", "gpu", "security"])
def test_every_setting_has_a_comment(name):
    lines = open(os.path.join(CONF, f"{name}.conf")).read().splitlines()
    assert lines[0].startswith("#"), f"{name}.conf should open with a comment saying what it is for"
    # Every run of settings is preceded by a comment block.
    blocks = re.split(r"\n\s*\n", "\n".join(lines))
    for block in blocks:
        block_lines = [b for b in block.splitlines() if b.strip()]
        if any(not b.startswith("#") for b in block_lines):
            assert block_lines[0].startswith("#"), f"{name}.conf: uncommented settings:\n{block}"


@pytest.mark.parametrize("name", ["standalone", "yarn", "k8s", "ec2"])
def test_cluster_profiles_keep_barrier_mode_safe(name):
    props = _properties(name)
    assert props["spark.dynamicAllocation.enabled"] == "false"
    assert props["spark.task.maxFailures"] == "1"
    assert props["spark.executorEnv.TF_USE_LEGACY_KERAS"] == "1"


def test_gpu_and_security_overlays():
    gpu = _properties("gpu")
    assert gpu["spark.task.resource.gpu.amount"] == "1" and gpu["spark.executor.resource.gpu.amount"] == "1"
    security = _properties("security")
    assert security["spark.authenticate"] == "true" and security["spark.network.crypto.enabled"] == "true"
    assert "gRPC traffic between workers" in open(os.path.join(CONF, "security.conf")).read()


FAKE_SPARK_SUBMIT = """#!/usr/bin/env bash
# Stands in for Spark's spark-submit: records what the wrapper passed instead of starting Spark.
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ ${args[i]} == --properties-file ]]; then cp "${args[i + 1]}" "$(dirname "$0")/../properties"; fi
done
printf '%s\\n' "$@" >"$(dirname "$0")/../argv"
"""


def _submit_dry(tmp_path, *args) -> tuple[subprocess.CompletedProcess, str, list[str]]:
    """Runs the wrapper against a fake spark-submit; returns the run, the properties it passed and the argv."""
    home = tmp_path / "spark"
    (home / "bin").mkdir(parents=True, exist_ok=True)
    (home / "bin" / "spark-submit").write_text(FAKE_SPARK_SUBMIT)
    (home / "bin" / "spark-submit").chmod(0o755)
    env = dict(os.environ, SPARK_HOME=str(home), TFOS_BUILD_DIR=str(tmp_path / "build"))
    run = subprocess.run([os.path.join(REPO, "spark-submit.sh"), "mnist", *args], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run, (home / "properties").read_text(), (home / "argv").read_text().splitlines()


def _conf_text(*names: str) -> str:
    return "".join(open(os.path.join(CONF, f"{n}.conf")).read().replace("${TFOS_HOME}", REPO) for n in names)


@pytest.mark.parametrize(
    "master,profile",
    [("local[2]", "local"), ("local-cluster[2,1,2048]", "local-cluster"), ("spark://host:7077", "standalone"),
     ("yarn", "yarn"), ("k8s://https://api:6443", "k8s")],
)
def test_spark_submit_picks_the_profile_from_master(tmp_path, master, profile):
    _, properties, argv = _submit_dry(tmp_path, "--master", master)
    assert properties == _conf_text(profile)
    assert argv[argv.index("--master") + 1] == master
    assert argv[argv.index("--py-files") + 1] == str(tmp_path / "build" / "tfos_lib.zip")
    assert argv[-1].endswith(os.path.join("jobs", "mnist.py"))


def test_spark_submit_stacks_overlays_in_order_and_passes_job_options(tmp_path):
    _, properties, argv = _submit_dry(tmp_path, "--profile", "standalone+gpu+security", "--", "--epochs", "3")
    assert properties == _conf_text("standalone", "gpu", "security")  # later files win in Spark's reader
    assert "${TFOS_HOME}" not in properties and REPO in properties  # the GPU discovery script's path
    assert argv[-3:] == [argv[-3], "--epochs", "3"] and argv[-3].endswith("mnist.py")


def test_spark_submit_rejects_unknown_profiles_and_jobs():
    run = subprocess.run([os.path.join(REPO, "spark-submit.sh"), "mnist", "--profile", "standalone+nope"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "no Spark profile 'nope'" in run.stderr
    run = subprocess.run([os.path.join(REPO, "spark-submit.sh"), "nojob"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "no job named 'nojob'" in run.stderr and "mnist" in run.stderr


def _render(tmp_path):
    env = dict(os.environ, **EC2_ENV, TFOS_BUILD_DIR=str(tmp_path / "build"))
    run = subprocess.run([os.path.join(REPO, "cluster", "ec2.sh"), "--dry-run", "launch"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout, str(tmp_path / "build" / "flintrock.yaml")


def test_flintrock_template_loads_with_flintrocks_own_config_handling(tmp_path):
    flintrock = pytest.importorskip("flintrock.flintrock", reason="flintrock is not installed (pip install flintrock)")
    import yaml

    _, rendered = _render(tmp_path)
    config = flintrock.normalize_keys(yaml.safe_load(open(rendered)))
    defaults = flintrock.config_to_click(config)
    launch = defaults["launch"]
    assert launch["spark_version"].startswith("4.") and launch["java_version"] == 17
    assert launch["ec2_key_name"] == "test-key" and launch["ec2_identity_file"] == "/keys/test.pem"
    assert launch["ec2_region"] == "us-west-2" and launch["num_slaves"] == 2
    known = {p.name for p in flintrock.launch.params}
    assert not set(launch) - known, f"keys flintrock's launch does not know: {set(launch) - known}"
    template = open(os.path.join(REPO, "cluster", "flintrock.yaml")).read()
    assert "test-key" not in template and ".pem" not in template.replace("private key .pem", "")


def test_ec2_script_commands_in_dry_run(tmp_path):
    env = dict(os.environ, **EC2_ENV, TFOS_CLUSTER_NAME="demo")
    script = os.path.join(REPO, "cluster", "ec2.sh")

    def dry(*args):
        run = subprocess.run([script, "--dry-run", *args], env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        return run.stdout

    assert "flintrock --config" in dry("launch") and " launch demo" in dry("launch")
    bootstrap = dry("bootstrap")
    assert "pip wheel --no-deps" in bootstrap and "run-command demo" in bootstrap and "copy-file" in bootstrap
    submit = dry("submit", "mnist", "--", "--epochs", "3")
    assert "run-command --master-only demo" in submit and "spark-submit.sh\\ mnist" in submit
    assert "--epochs\\ 3" in submit and "--profile\\ ec2" in submit
    assert "destroy demo --assume-yes" in dry("destroy")
    missing = subprocess.run([script, "--dry-run", "launch"], env={"PATH": os.environ["PATH"]},
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "EC2_KEY_NAME" in missing.stderr
