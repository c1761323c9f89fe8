"""Tests for tfos_lib.rendezvous: TF_CONFIG construction and free ports (no Spark, no TensorFlow)."""

import json
import socket

import pytest

from tfos_lib.rendezvous import find_free_port, make_tf_config, tf_config_json

THREE = ["10.0.0.1:2222", "10.0.0.2:2223", "worker-3.example.org:40000"]


def test_single_worker_is_its_own_chief():
    config = make_tf_config(["localhost:12345"], 0)
    assert config == {
        "cluster": {"worker": ["localhost:12345"]},
        "task": {"type": "worker", "index": 0},
    }
    # MultiWorkerMirroredStrategy treats worker 0 as chief when there is no "chief" job.
    assert "chief" not in config["cluster"]


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_three_workers_each_rank_gets_its_index(rank):
    config = make_tf_config(THREE, rank)
    assert config["cluster"] == {"worker": THREE}
    assert list(config["cluster"]) == ["worker"]  # no separate chief/ps jobs
    assert config["task"] == {"type": "worker", "index": rank}
    assert config["cluster"]["worker"][config["task"]["index"]] == THREE[rank]


def test_chief_is_index_zero_and_cluster_is_identical_on_every_rank():
    configs = [make_tf_config(THREE, rank) for rank in range(3)]
    assert configs[0]["task"]["index"] == 0
    assert all(c["cluster"] == configs[0]["cluster"] for c in configs)
    assert [c["task"]["index"] for c in configs] == [0, 1, 2]


def test_cluster_list_is_a_copy():
    addresses = list(THREE)
    config = make_tf_config(addresses, 1)
    addresses.append("10.0.0.9:1")
    assert config["cluster"]["worker"] == THREE


@pytest.mark.parametrize("rank", [0, 2])
def test_tf_config_json_round_trips(rank):
    text = tf_config_json(THREE, rank)
    assert isinstance(text, str)
    assert json.loads(text) == make_tf_config(THREE, rank)


def test_ipv6_style_host_is_accepted():
    # rpartition(':') keeps everything before the last colon as the host.
    config = make_tf_config(["[::1]:2222", "[::1]:2223"], 1)
    assert config["task"]["index"] == 1


def test_empty_address_list():
    with pytest.raises(ValueError, match="empty"):
        make_tf_config([], 0)


@pytest.mark.parametrize("rank", [3, 4, 100])
def test_rank_out_of_range(rank):
    with pytest.raises(ValueError, match=rf"rank={rank}\b") as info:
        make_tf_config(THREE, rank)
    assert "3 workers" in str(info.value)


def test_negative_rank():
    with pytest.raises(ValueError, match=r"rank=-1\b"):
        make_tf_config(THREE, -1)


@pytest.mark.parametrize(
    "bad",
    ["host", "host:0", "host:99999", "host:65536", ":123", "host:", "host:abc", "host:-1", ""],
)
def test_malformed_address_is_named(bad):
    addresses = ["good-host:1111", bad]
    with pytest.raises(ValueError, match="host:port") as info:
        make_tf_config(addresses, 0)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("port", [1, 65535])
def test_port_bounds_are_inclusive(port):
    assert make_tf_config([f"h:{port}"], 0)["cluster"]["worker"] == [f"h:{port}"]


def test_duplicate_address_is_named():
    with pytest.raises(ValueError, match="same address") as info:
        make_tf_config(["a:1", "b:2", "a:1"], 1)
    assert "'a:1'" in str(info.value)
    assert "'b:2'" not in str(info.value)


def test_tf_config_json_raises_the_same_errors():
    with pytest.raises(ValueError, match="'host:0'"):
        tf_config_json(["host:0"], 0)


def test_find_free_port_is_bindable():
    port = find_free_port()
    assert isinstance(port, int)
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", port))
        sock.listen(1)
        assert sock.getsockname()[1] == port


def test_find_free_port_on_loopback():
    port = find_free_port("127.0.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
    # and the port is usable in a TF_CONFIG
    assert make_tf_config([f"127.0.0.1:{port}"], 0)["cluster"]["worker"] == [f"127.0.0.1:{port}"]


@pytest.mark.parametrize("bad", ["host:\u00b2", "host:\u0661\u0662\u0663"])
def test_non_ascii_digit_port_is_rejected_by_name(bad):
    with pytest.raises(ValueError, match="host:port") as info:
        make_tf_config([bad], 0)
    assert repr(bad) in str(info.value)
