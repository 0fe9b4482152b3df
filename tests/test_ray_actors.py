"""Ray actors (launch/ray_actors.py, actors.backend=ray): several actors feed one learner,
each in its own replay group; a killed actor is restarted and its partial episodes never
enter the replay; an unreachable cluster stops the run before any work; two actors drive
two stand-in TrackMania games. Every run here starts a local Ray instance on 127.0.0.1."""

import dataclasses
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import envs
from launch.actor import EpisodeDropped, VectorStep
from launch.ray_actors import from_wire, to_wire
from rl import config as config_lib
from test_loop import latest_checkpoint, scalars
from test_trackmania import TINY_TQC_TM, needs_tmrl

ROOT = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "launch" / "run.py")]
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray (the [distributed] extra) is not installed")

CARTPOLE_RAY = ["--algo", "dqn", "--env", "CartPole-v1", "--env.num-envs", "2",
                "--env.no-asynchronous", "--actors.backend", "ray",
                "--actors.num-actors", "2", "--agent.n-step", "3",
                "--replay.capacity", "16384", "--training.learning-starts", "400",
                "--training.replay-ratio", "0.25", "--training.eval-interval", "1500",
                "--training.eval-episodes", "5", "--training.checkpoint-interval", "1500",
                "--logging.log-interval", "250", "--logging.no-progress-bar"]


def test_config_of_the_ray_backend_names_the_field():
    ray = config_lib.ActorsConfig(backend="ray", num_actors=3,
                                  resources_per_actor={"trackmania": 1})
    assert config_lib.from_dict(config_lib.to_dict(config_lib.Config(actors=ray))).actors == ray
    for bad, field in [(dict(num_actors=2), "actors.num_actors"),
                       (dict(backend="ray", num_actors=0), "actors.num_actors"),
                       (dict(backend="ray", ray_address="nowhere"), "actors.ray_address"),
                       (dict(backend="ray", ray_address="host:99999"), "actors.ray_address"),
                       (dict(backend="ray", resources_per_actor={"gpu": -1}),
                        "actors.resources_per_actor"),
                       (dict(backend="ray", lost_timeout=0), "actors.lost_timeout"),
                       (dict(backend="ray", max_restarts=-1), "actors.max_restarts"),
                       (dict(backend="ray", chunk_size=0), "actors.chunk_size")]:
        with pytest.raises(config_lib.ConfigError, match=re.escape(field)):
            config_lib.ActorsConfig(**bad)
    with pytest.raises(config_lib.ConfigError, match="not lockstep"):
        config_lib.Config(actors=dataclasses.replace(ray, mode="lockstep"))
    # Each actor's streams count toward the replay's minimum.
    with pytest.raises(config_lib.ConfigError, match="each of the 6 env streams"):
        config_lib.Config(actors=ray, env=config_lib.EnvConfig(id="CartPole-v1", num_envs=2),
                          replay=config_lib.ReplayConfig(capacity=12),
                          training=config_lib.TrainingConfig(batch_size=8))


def _plain(value) -> bool:
    """Only arrays, numbers, strings, None and containers of them."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (np.ndarray, np.generic, int, float, str, bool))


def test_records_cross_the_wire_as_plain_data_and_come_back_tagged_with_the_actor():
    slot = {"obs": np.arange(4, dtype=np.float32).reshape(2, 2), "action": np.array([1, 0]),
            "reward": np.array([1.0, 0.5], np.float32), "valid": np.array([True, False])}
    step = VectorStep(slot=slot, episodes=[envs.EpisodeStats(1, 12.5, 13, True)], taken=1,
                      epsilon=0.25, params_version=7, late_steps=2,
                      timings={"rtgym_wait": 0.01}, progress=np.array([0.3, 0.4]))
    wire = to_wire(step)
    assert _plain(wire)
    back = from_wire(wire, actor=3)
    assert back.actor == 3 and back.episodes == step.episodes and back.taken == 1
    assert back.epsilon == 0.25 and back.params_version == 7 and back.late_steps == 2
    assert back.timings == step.timings and np.array_equal(back.progress, step.progress)
    assert all(np.array_equal(back.slot[k], v) for k, v in slot.items())
    dropped = from_wire(to_wire(EpisodeDropped(restarts=2, reconnects=1)), actor=1)
    assert dropped == EpisodeDropped(restarts=2, reconnects=1, actor=1)


@needs_ray
def test_an_unreachable_cluster_stops_the_run_with_exit_code_3_before_any_work(tmp_path):
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run_dir = tmp_path / "run"
    start = time.monotonic()
    result = subprocess.run([*RUN, *CARTPOLE_RAY, "--actors.ray-address", f"127.0.0.1:{port}",
                             "--run-dir", str(run_dir)], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 3, result.stderr[-3000:]
    assert time.monotonic() - start < 30
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port} (actors.ray_address)" in \
        result.stderr
    assert not run_dir.exists()


def _window_breaks(saved: dict, n_step: int, num_streams: int) -> tuple[int, int]:
    """(sampleable transitions whose n-step window runs from one episode into another
    without an episode end, positions of episodes cut short by a restart that are still
    sampleable) of a checkpoint's replay; both are 0 when partial episodes were dropped."""
    replay = saved["replay"]
    since = np.asarray(replay["steps_since_start"])
    done = np.asarray(replay["terminated"]) | np.asarray(replay["truncated"])
    valid = np.asarray(replay["valid"])
    tree = np.asarray(replay["sum_tree"])
    capacity = since.shape[1]
    leaves = tree[len(tree) // 2:][:num_streams * capacity].reshape(num_streams, capacity)
    counts = np.asarray(replay["count"])
    spanning = cut_short = 0
    for stream in range(num_streams):
        written = int(counts[stream // (num_streams // len(counts))])
        assert written < capacity  # the ring never wrapped: positions are steps
        for p in np.flatnonzero(leaves[stream] > 0):
            for k in range(1, n_step + 1):
                if done[stream, p + k - 1]:
                    break
                if since[stream, p + k] != since[stream, p] + k:
                    spanning += 1
                    break
        # A restart shows as a reset (since == 0) right after a valid slot that ended
        # nothing; the episode before it must be unsampleable.
        for q in range(1, written):
            if since[stream, q] == 0 and valid[stream, q - 1] and not done[stream, q - 1]:
                start = q - 1 - since[stream, q - 1]
                cut_short += int((leaves[stream, start:q] > 0).sum())
    return spanning, cut_short


def _run_and_kill_actor(args: list[str], run_dir: Path, actor: int) -> tuple[int, str]:
    """Run launch/run.py with ``args`` and SIGKILL Ray actor ``actor``'s process once the
    run has a checkpoint directory; (exit code, stderr)."""
    proc = subprocess.Popen([*RUN, *args, "--run-dir", str(run_dir)], stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    pid = None
    deadline = time.monotonic() + 240
    while pid is None and time.monotonic() < deadline and proc.poll() is None:
        found = [re.search(rf"Ray actor {actor}: pid (\d+)", line) for line in list(lines)]
        pid = next((int(m.group(1)) for m in found if m), None)
        time.sleep(0.5)
    assert pid is not None, "".join(lines)[-3000:]
    while not (run_dir / "checkpoints").exists() and proc.poll() is None:
        time.sleep(0.5)  # past the warm-up: learning, with episodes under way
    os.kill(pid, signal.SIGKILL)
    code = proc.wait(timeout=420)
    reader.join(10)
    proc.stderr.close()
    return code, "".join(lines)


@needs_ray
def test_with_no_live_actor_for_lost_timeout_the_run_checkpoints_and_exits_3(tmp_path):
    """One actor, no restarts: once it is killed nothing answers, and after
    actors.lost_timeout the run saves a checkpoint and exits with code 3 and the resume
    command."""
    run_dir = tmp_path / "run"
    args = [*CARTPOLE_RAY, "--actors.num-actors", "1", "--actors.max-restarts", "0",
            "--actors.lost-timeout", "3", "--total-steps", "100000"]
    code, log = _run_and_kill_actor(args, run_dir, 0)
    assert code == 3, log[-3000:]
    assert "no Ray actor answered for" in log and "(actors.lost_timeout)" in log
    assert f"resume with: python launch/run.py --resume {run_dir}" in log
    saved = latest_checkpoint(run_dir)
    assert 0 < saved["loop"]["env_steps"] < 100000


@needs_ray
def test_two_ray_actors_learn_survive_a_killed_actor_and_resume(tmp_path):
    """2 actors x 2 CartPole envs; actor 1's process is killed with SIGKILL mid-run: Ray
    restarts it, the learner goes on, no sampleable transition of the replay spans the
    break or belongs to the killed actor's cut-short episodes; the run checkpoints, learns
    and resumes."""
    run_dir = tmp_path / "run"
    code, log = _run_and_kill_actor([*CARTPOLE_RAY, "--total-steps", "6000"], run_dir, 1)
    assert code == 0, log[-3000:]
    assert "Ray actor 1 lost" in log
    dropped = re.search(r"dropped the partial episodes of Ray actor 1 \((\d+) steps\)", log)
    assert dropped and int(dropped.group(1)) > 0, log[-3000:]  # its 2 envs were mid-episode
    assert "Ray actor 1 is back (2 of 2 alive)" in log, log[-3000:]
    saved = latest_checkpoint(run_dir)
    assert saved["loop"]["env_steps"] >= 6000
    assert _window_breaks(saved, n_step=3, num_streams=4) == (0, 0)
    tags = scalars(run_dir)
    assert tags["perf/actor_losses"][-1][1] == 1 and tags["perf/actors_alive"][-1][1] == 2
    for i in (0, 1):  # both actors' episodes and rates are logged
        assert tags[f"actor_{i}/episode_return"] and tags[f"actor_{i}/env_steps_per_sec"]
    best = max(value for _, value in tags["eval/return_mean"])
    assert best >= 100, tags["eval/return_mean"]  # random play: about 22

    resumed = subprocess.run([*RUN, "--resume", str(run_dir), "--total-steps", "7000"],
                             capture_output=True, text=True, timeout=420, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from env step {saved['loop']['env_steps']}" in resumed.stderr
    assert latest_checkpoint(run_dir)["loop"]["env_steps"] >= 7000


@pytest.mark.slow
@needs_ray
@needs_tmrl
def test_two_ray_actors_drive_two_stand_in_games(tmp_path):
    """Each actor's env worker starts its own stand-in game (its own loopback ports) and
    drives it in real time; the learner takes both actors' steps."""
    run_dir = tmp_path / "run"
    # Two actors start a worker and a game each at once: the first reset may take longer
    # on a loaded 2-core machine than TINY_TQC_TM's watchdog allows.
    result = subprocess.run([*RUN, *TINY_TQC_TM, "--trackmania.watchdog-timeout", "10",
                             "--actors.backend", "ray",
                             "--actors.num-actors", "2", "--total-steps", "240",
                             "--run-dir", str(run_dir)], capture_output=True, text=True,
                            timeout=420, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "actors.mode=realtime" in result.stderr
    tags = scalars(run_dir)
    for i in (0, 1):
        assert tags[f"actor_{i}/episode_return"], sorted(tags)
        assert max(v for _, v in tags[f"actor_{i}/env_steps_per_sec"]) > 5
    assert tags["perf/actors_alive"][-1][1] == 2
    assert int(latest_checkpoint(run_dir)["state"]["grad_steps"]) > 0


@needs_ray
def test_scaling_benchmark_counts_thread_and_ray_actor_sides():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--actors",
                             "1", "--env", "CartPole-v1", "--num-envs", "2", "--seconds", "2",
                             "--warmup-seconds", "1"], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    rates = dict(re.findall(r"median env=CartPole-v1 backend=(\w+) actors=1 "
                            r"env_steps_per_s=(\d+)", result.stdout))
    assert set(rates) == {"thread", "ray"} and all(int(v) > 0 for v in rates.values()), \
        result.stdout
    assert re.search(r"overhead_us_per_env_step ray_1_vs_thread=-?[\d.]+", result.stdout)
