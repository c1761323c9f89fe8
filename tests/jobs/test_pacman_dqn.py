"""Ms. Pac-Man DQN: environment and preprocessing, replay memory, schedules, the learner's target
network, actors on two executors, data-parallel learners, resuming, bad options."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from jobs import pacman_dqn
from tfos_lib.rl import atari, dqn
from tfos_lib.rl.atari import FRAME_SHAPE, STACK, Episode
from tfos_lib.rl.checkpoint import LearnerCheckpoint, read_manifest
from tfos_lib.rl.learner import Learner
from tfos_lib.rl.replay import ReplayMemory

REPO = str(Path(__file__).resolve().parents[2])  # tests/<group>/test_x.py -> the repository


def _episode(seed: int, length: int, terminated: bool, rewards=None) -> Episode:
    """Frame t of the episode is filled with the value ``seed * 10 + t`` (small seeds and lengths)."""
    frames = np.stack([np.full(FRAME_SHAPE, seed * 10 + t, np.uint8) for t in range(length + 1)])
    rewards = np.ones(length, np.float32) if rewards is None else np.asarray(rewards, np.float32)
    return Episode(seed, frames, np.arange(length, dtype=np.uint8) % 9, rewards, terminated)


# -- environment ------------------------------------------------------------------------------


def test_atari_episode_is_preprocessed_and_reproducible():
    spec = atari.EnvSpec(max_episode_steps=60)
    assert spec.num_actions() == 9
    first = atari.play(spec, 7, atari.random_policy(9), record=True)
    again = atari.play(spec, 7, atari.random_policy(9))
    assert first.frames.shape == (61, *FRAME_SHAPE) == (61, 86, 80) and first.frames.dtype == np.uint8
    assert first.length == 60 and not first.terminated  # cut by the step cap, not game over
    assert first.render[0].shape == (210, 160, 3) and len(first.render) == 30  # every 2nd screen
    np.testing.assert_array_equal(first.frames, again.frames)
    np.testing.assert_array_equal(first.actions, again.actions)
    assert Episode.from_bytes(first.to_bytes()).score == first.score


def test_preprocess_crops_the_score_and_averages_2x2_blocks():
    frame = np.zeros((210, 160), np.uint8)
    frame[0:2, 0:2] = [[10, 20], [30, 40]]
    frame[180:, :] = 255  # score area: dropped
    out = atari.preprocess(frame)
    assert out.shape == (86, 80) and out[0, 0] == 25 and out.max() == 25


def test_unknown_environment_id_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="not a registered environment.*ALE/MsPacman-v5"):
        atari.EnvSpec(env_id="ALE/NoSuchGame-v5").make()


# -- replay memory ----------------------------------------------------------------------------


def test_replay_stacks_frames_within_an_episode_only(tmp_path):
    replay = ReplayMemory(str(tmp_path), 100, FRAME_SHAPE)
    replay.add(_episode(1, 5, terminated=True))
    replay.add(_episode(2, 6, terminated=True))
    stack = replay._stack(np.array([0, 2, 6, 9]))[:, 0, 0, :]  # one pixel per frame, oldest first
    np.testing.assert_array_equal(stack[0], [10, 10, 10, 10])  # episode start: first frame repeated
    np.testing.assert_array_equal(stack[1], [10, 10, 11, 12])
    np.testing.assert_array_equal(stack[2], [20, 20, 20, 20])  # index 6 is episode 2's step 0
    np.testing.assert_array_equal(stack[3], [20, 21, 22, 23])


def test_replay_n_step_returns_stop_at_game_over_and_bootstrap_after_truncation(tmp_path):
    replay = ReplayMemory(str(tmp_path), 100, FRAME_SHAPE)
    replay.add(_episode(1, 4, terminated=True, rewards=[1, 0, 5, -3]))
    replay.add(_episode(2, 2, terminated=False, rewards=[2, 2]))
    rng = np.random.default_rng(0)
    states, actions, returns, next_states, discounts = replay.sample(400, rng, n_step=3, gamma=0.5)
    assert states.shape == next_states.shape == (400, *FRAME_SHAPE, STACK)
    first = states[:, 0, 0, -1]  # newest frame identifies the step
    expected = {  # frame value: (return with rewards clipped to sign, discount, newest frame of next state)
        10: (1 + 0 + 0.25, 0.125, 13),
        11: (0 + 0.5 - 0.25, 0.0, 14),  # game over inside the window: no bootstrap
        12: (1 - 0.5, 0.0, 14),
        13: (-1, 0.0, 14),
        20: (1 + 0.5, 0.25, 22),  # truncated: bootstrap from the final frame
        21: (1, 0.5, 22),
    }
    assert set(first.tolist()) == set(expected)  # final frames (14, 22) are never sampled
    for value, (ret, discount, nxt) in expected.items():
        rows = first == value
        np.testing.assert_allclose(returns[rows], ret)
        np.testing.assert_allclose(discounts[rows], discount)
        assert (next_states[rows, 0, 0, -1] == nxt).all()
    assert (actions[first == 12] == 2).all()


def test_replay_wraps_around_and_resumes_from_its_files(tmp_path):
    replay = ReplayMemory(str(tmp_path), 16, FRAME_SHAPE)
    for seed in range(1, 5):  # 4 episodes of 6 frames into 16 slots: the first ones are overwritten
        replay.add(_episode(seed, 5, terminated=True))
    assert replay.size == 16 and replay.position == 24 % 16 and replay.steps_added == 20
    again = ReplayMemory(str(tmp_path), 16, FRAME_SHAPE, meta=replay.save())
    assert (again.position, again.size, again.steps_added) == (8, 16, 20)
    # Slot 8 holds step 2 of episode 2 whose steps 0-1 were overwritten by episode 4: the stack
    # repeats the oldest frame still there instead of mixing in episode 4's frames.
    np.testing.assert_array_equal(again._stack(np.array([8]))[0, 0, 0], [22, 22, 22, 22])
    np.testing.assert_array_equal(again._stack(np.array([9]))[0, 0, 0], [22, 22, 22, 23])
    with pytest.raises(ValueError, match="same --replay-capacity"):
        ReplayMemory(str(tmp_path), 32, FRAME_SHAPE, meta=replay.save())


def test_a_save_interrupted_before_its_manifest_leaves_the_previous_checkpoint_loadable(tmp_path):
    from tfos_lib.context import WorkerContext

    cfg = pacman_dqn.Config(batch_size=4, learning_rate=1e-2)
    ctx = WorkerContext(rank=0, num_workers=1, output_dir=str(tmp_path), backend="local")
    learner = Learner(ctx, cfg, num_actions=9)
    replay = ReplayMemory(str(tmp_path / "replay"), 64, FRAME_SHAPE)
    rng = np.random.default_rng(0)
    replay.add(_episode(1, 20, terminated=True, rewards=np.arange(20) % 3))
    learner.update(replay.sample(4, rng, n_step=3, gamma=0.99))
    first = LearnerCheckpoint(str(tmp_path / "learner"), 0, 1, token="first")
    version = first.save(2, replay.save(), learner.checkpoint.write, {"rounds_consumed": 2, "updates": 1})
    assert version == "r000002-first-a0"
    saved_weights, saved_meta = learner.online.get_weights(), replay.save()

    # Later: more training and experience, then a save that dies after writing the networks, before the manifest.
    for _ in range(3):
        learner.update(replay.sample(4, rng, n_step=3, gamma=0.99))
    replay.add(_episode(2, 20, terminated=False))

    with pytest.raises(KeyboardInterrupt):
        _interrupted_save(first, learner, replay)
    assert (tmp_path / "learner" / "r000004-first-a0" / "model.index").exists()  # the new networks were written

    # A new launch reads only what the manifest names: round 2's networks, state and replay position.
    again = LearnerCheckpoint(str(tmp_path / "learner"), 0, 1, token="second")
    prefix, state, meta = again.restore()
    assert prefix.endswith("r000002-first-a0/model") and state == {"rounds_consumed": 2, "updates": 1}
    assert meta == saved_meta and meta["steps_added"] == 20
    fresh = Learner(ctx, cfg, num_actions=9)
    fresh.checkpoint.read(prefix).expect_partial()
    for a, b in zip(fresh.online.get_weights(), saved_weights):
        np.testing.assert_array_equal(a, b)
    assert int(fresh.updates.numpy()) == 1
    assert ReplayMemory(str(tmp_path / "replay"), 64, FRAME_SHAPE, meta=meta).position == 21
    # Its next save publishes and removes the older versions, the crashed one included.
    again.save(4, meta, fresh.checkpoint.write, state)
    assert sorted(os.listdir(tmp_path / "learner")) == ["MANIFEST.json", "r000004-second-a0"]


def _interrupted_save(store, learner, replay):
    """A chief's save killed after the networks are written, before the learner state and the manifest."""
    def write_then_die(prefix):
        learner.checkpoint.write(prefix)
        raise KeyboardInterrupt("killed while saving")

    store.save(4, replay.save(), write_then_die, {"rounds_consumed": 4, "updates": 4})


def test_the_chief_publishes_only_when_every_rank_saved_its_replay_position(tmp_path):
    chief = LearnerCheckpoint(str(tmp_path), 0, 2, token="run")
    other = LearnerCheckpoint(str(tmp_path), 1, 2, token="run")
    with pytest.raises(TimeoutError, match=r"learner ranks \['1'\] did not save"):
        chief.save(2, {"position": 5}, lambda prefix: None, {"rounds_consumed": 2}, timeout=0.2)
    assert read_manifest(str(tmp_path)) is None
    # Ranks > 0 never publish: the chief does once their positions are there.
    assert other.save(2, {"position": 7}, lambda prefix: None, {"rounds_consumed": 2}) is None
    assert chief.save(2, {"position": 5}, lambda prefix: None, {"rounds_consumed": 2}) == "r000002-run-a0"
    assert other.restore()[2] == {"position": 7}
    with pytest.raises(ValueError, match="same --num-workers"):
        LearnerCheckpoint(str(tmp_path), 0, 3, token="run").restore()


# -- experience channel -----------------------------------------------------------------------


def test_experience_rounds_end_and_abort(tmp_path):
    from tfos_lib.rl.experience import ExperienceAborted, ExperienceChannel

    driver, learner = ExperienceChannel(str(tmp_path)), ExperienceChannel(str(tmp_path))
    episode = _episode(1, 5, terminated=True)
    driver.write_round(0, [[episode.to_bytes()], []], {"env_steps": 5, "rank_steps": [5, 0]})
    assert learner.wait_round(0, lambda: None, timeout=1)["rank_steps"] == [5, 0]
    (got,) = learner.read_episodes(0, rank=0)
    np.testing.assert_array_equal(got.frames, episode.frames)
    assert learner.read_episodes(0, rank=1) == []
    with pytest.raises(TimeoutError, match="no experience round 1"):
        learner.wait_round(1, lambda: None, timeout=0.3)
    driver.finish(1)
    assert learner.wait_round(1, lambda: None, timeout=1) is None  # the driver is done: no round 1
    driver.abort("actor round 2 failed: ValueError: boom")
    with pytest.raises(ExperienceAborted, match="boom"):
        learner.wait_round(1, lambda: None, timeout=1)
    driver.reset_after(0)  # a resumed run from scratch drops the rounds and the markers
    with pytest.raises(TimeoutError, match="no experience round 0"):  # round 0 is gone again
        learner.wait_round(0, lambda: None, timeout=0.3)


# -- schedules and the learner ----------------------------------------------------------------


def test_epsilon_and_update_schedules():
    cfg = pacman_dqn.Config(learning_starts=1000, updates_per_step=0.25, epsilon_decay_steps=100,
                            epsilon_start=1.0, epsilon_end=0.1)
    assert cfg.epsilon(0) == 1.0 and cfg.epsilon(50) == pytest.approx(0.55) and cfg.epsilon(10**6) == pytest.approx(0.1)
    assert cfg.updates_due(999) == 0 and cfg.updates_due(1000) == 0 and cfg.updates_due(1400) == 100


def test_target_network_syncs_every_target_update_steps(tmp_path):
    from tfos_lib.context import WorkerContext

    cfg = pacman_dqn.Config(target_update=3, batch_size=4, learning_rate=1e-3)
    ctx = WorkerContext(rank=0, num_workers=1, output_dir=str(tmp_path), backend="local")
    learner = Learner(ctx, cfg, num_actions=9)
    replay = ReplayMemory(str(tmp_path / "replay"), 200, FRAME_SHAPE)
    replay.add(_episode(1, 20, terminated=True, rewards=np.arange(20) % 3))
    rng = np.random.default_rng(0)

    def same() -> bool:
        return all(np.array_equal(a, b) for a, b in zip(learner.online.get_weights(), learner.target.get_weights()))

    assert same()
    synced = []
    for _ in range(7):
        loss, q = learner.update(replay.sample(4, rng, n_step=3, gamma=0.99))
        assert np.isfinite(loss) and np.isfinite(q)
        synced.append(same())
    assert synced == [False, False, True, False, False, True, False]
    assert int(learner.updates.numpy()) == 7


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="--batch-size 32 must be a multiple of --num-workers 3"):
        pacman_dqn.Config(num_workers=3)
    with pytest.raises(ValueError, match="--eval-epsilon must be between 0 and 1"):
        pacman_dqn.Config(eval_epsilon=2.0)
    with pytest.raises(ValueError, match="--n-step must be >= 1"):
        pacman_dqn.Config(n_step=0)
    with pytest.raises(ValueError, match="each share must hold the longest episode.*raise --replay-capacity to 108004"):
        pacman_dqn.Config(num_workers=4, replay_capacity=100_000)


# -- Spark ------------------------------------------------------------------------------------


def test_evaluation_runs_one_seeded_episode_per_seed_reproducibly(spark):
    cfg = pacman_dqn.Config(eval_episodes=4, max_episode_steps=40, eval_seed=5)
    first = dqn.evaluate(spark, cfg, 9, None, record_seed=6)
    again = dqn.evaluate(spark, cfg, 9, None)
    assert first["episode_seeds"] == [5, 6, 7, 8] and first["lengths"] == [40] * 4
    assert first["scores"] == again["scores"]
    assert len(first["_render"]) == 20 and again["_render"] is None
    scores = first["scores"]
    assert len(scores) == 4 and (first["min"], first["max"]) == (min(scores), max(scores))
    assert first["mean"] == pytest.approx(sum(scores) / 4)


def _submit(master: str, output: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [os.path.join(REPO, "spark-submit.sh"), "pacman_dqn", "--master", master, "--",
         "--output-dir", output, "--steps-per-round", "300", "--learning-starts", "200", "--replay-capacity", "6000",
         "--max-episode-steps", "150", "--eval-episodes", "4", "--target-update", "20", "--updates-per-step", "0.1",
         "--batch-size", "8", "--checkpoint-every-rounds", "2", *options],
        capture_output=True, text=True, timeout=900,
    )


def test_two_actors_two_learners_on_local_cluster_then_resume(tmp_path, check_metrics_envelope):
    """2 learners (data-parallel) and 2 actors, each in its own executor; then a rerun continues."""
    out = str(tmp_path / "out")
    run = _submit("local-cluster[4,1,1024]", out, "--num-workers", "2", "--num-actors", "2", "--env-steps", "900")
    assert run.returncode == 0, run.stderr[-6000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    check_metrics_envelope(metrics, "pacman_dqn", training=True)
    training = metrics["results"]["training"]
    assert training["learners"] == 2 and training["actors"] == 2 and training["env_steps"] >= 900
    assert training["updates"] == int((training["env_steps"] - 200) * 0.1)
    manifests = [json.loads(p.read_text()) for p in sorted((tmp_path / "out" / "experience").glob("round-*.json"))]
    for m in manifests:  # each round's two actor tasks ran at the same time, in two different executors
        assert len({e["executor"] for e in m["episodes"]}) == 2, m["episodes"]
        assert {e["actor"] for e in m["episodes"]} == {0, 1}
    assert all(min(m["rank_steps"]) > 0 for m in manifests)  # both learners got experience every round
    # Data-parallel learners end with identical networks: compare the two ranks' final checkpoints.
    import tensorflow as tf

    learner_dir = tmp_path / "out" / "checkpoints" / "learner"
    manifest = read_manifest(str(learner_dir))
    assert set(manifest["replay"]) == {"0", "1"} and manifest["round"] == training["rounds"]
    chief = tf.train.load_checkpoint(str(learner_dir / manifest["checkpoint"]))
    other = tf.train.load_checkpoint(str(tmp_path / "out" / "_workers" / "1" / "discarded-checkpoint" / "model"))
    names = [n for n in chief.get_variable_to_shape_map() if n.startswith("online/") and "OPTIMIZER" not in n]
    assert len(names) >= 10
    for name in names:
        np.testing.assert_array_equal(chief.get_tensor(name), other.get_tensor(name))
    for name in ("random", "agent"):
        assert metrics["results"]["evaluation"][name]["episodes"] == 4
    for artefact in ("training_curves.png", "episode.gif", "episodes.csv", "models/pacman_dqn/1/saved_model.pb"):
        assert (tmp_path / "out" / artefact).stat().st_size > 0, artefact
    # The Serving-layout export holds the final online network: its signature gives the checkpoint's Q-values.
    from tfos_lib.ml import inference
    from tfos_lib.rl.network import build_q_network

    kind, serve = inference.load_model(str(tmp_path / "out" / "models" / "pacman_dqn"))
    frames = np.random.default_rng(0).integers(0, 256, (2, *FRAME_SHAPE, STACK), dtype=np.uint8)
    rebuilt = build_q_network(tf, 9)
    tf.train.Checkpoint(online=rebuilt).read(str(learner_dir / manifest["checkpoint"])).expect_partial()
    assert kind == "signature"
    np.testing.assert_allclose(serve(inputs=tf.constant(frames))["outputs"].numpy(), rebuilt(frames).numpy(), rtol=1e-5)

    rerun = _submit("local-cluster[4,1,1024]", out, "--num-workers", "2", "--num-actors", "2", "--env-steps", "1200")
    assert rerun.returncode == 0, rerun.stderr[-6000:]
    log = rerun.stdout + rerun.stderr  # spark-submit relays the Python driver's stderr on its stdout
    assert "resuming after round 3 (900 env steps)" in log and "learner resumed from" in log
    resumed = json.loads((tmp_path / "out" / "metrics.json").read_text())["results"]["training"]
    assert resumed["env_steps"] >= 1200 and resumed["updates"] == int((resumed["env_steps"] - 200) * 0.1)
    assert resumed["rounds"] > training["rounds"]


def test_an_actor_failure_stops_the_learners(spark, tmp_path, monkeypatch):
    """The first actor round fails: the driver aborts the experience channel, the learners (a real barrier launch
    waiting for that round) stop on it, and the job raises the actor's error, in bounded time."""
    import threading
    import time

    from tfos_lib.rl import actors

    def crash(*args, **kwargs):
        raise RuntimeError("actor 0 crashed: the emulator went away")

    monkeypatch.setattr(actors, "collect_round", crash)
    cfg = pacman_dqn.Config(output_dir=str(tmp_path), env_steps=600, round_timeout=300)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="actor 0 crashed"):
        dqn.train(spark, cfg, num_actions=9)
    assert time.monotonic() - started < 180  # the learners did not wait out --round-timeout
    abort = json.loads((tmp_path / "experience" / "abort.json").read_text())
    assert "RuntimeError: actor 0 crashed" in abort["reason"]
    assert not [t for t in threading.enumerate() if t.name == "tfos-dqn-learners" and t.is_alive()]


def test_learner_failure_ends_the_job_with_its_traceback(tmp_path):
    """Resuming with a different replay size fails inside the learner; the driver stops at once."""
    out = str(tmp_path / "out")
    assert _submit("local[2]", out, "--env-steps", "300", "--eval-episodes", "1").returncode == 0
    failed = _submit("local[2]", out, "--env-steps", "600", "--replay-capacity", "7000")
    assert failed.returncode == 1
    log = failed.stdout + failed.stderr
    assert "same --replay-capacity" in log and "Traceback" in log
