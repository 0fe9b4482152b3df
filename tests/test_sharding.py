"""The learner on several devices (``learner.devices``, ``rl/sharding.py``): config checks,
and, in processes with two CPU devices, updates equal to one device's and a training run."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from rl import presets, sharding
from rl.config import ConfigError, LearnerConfig

ROOT = Path(__file__).resolve().parents[1]
TWO_DEVICES = {**os.environ, "XLA_FLAGS": " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=2"]).strip()}


@pytest.mark.parametrize("devices", [0, -1, 1.5, "2", True, "some"])
def test_devices_field_refuses_what_is_not_a_count_or_all(devices):
    with pytest.raises(ConfigError, match="learner.devices"):
        LearnerConfig(devices=devices)


def test_batch_must_split_evenly_across_the_devices():
    with pytest.raises(ConfigError, match="training.batch_size.*learner.devices"):
        presets.replace(presets.get("dqn"), learner=dict(devices=3),
                        training=dict(batch_size=32))
    config = presets.replace(presets.get("dqn"), learner=dict(devices=4),
                             training=dict(batch_size=32))
    assert config.learner.devices == 4
    with pytest.raises(ConfigError, match="training.batch_size.*2 learner devices"):
        sharding.learner_mesh(LearnerConfig(devices="all"), 33, [jax.devices()[0]] * 2)


def test_mesh_needs_the_devices_it_names():
    with pytest.raises(ConfigError, match="learner.devices.*has 1 cpu device"):
        sharding.learner_mesh(LearnerConfig(devices=2), 32, jax.devices()[:1])
    assert sharding.learner_mesh(LearnerConfig(devices="all"), 32, jax.devices()[:1]) is None
    assert sharding.learner_mesh(LearnerConfig(devices=1), 32) is None


def test_without_a_mesh_batch_sharding_and_placement_change_nothing():
    batch = dict(obs=jnp.ones((4, 3)), reward=jnp.arange(4.0))
    out = jax.jit(sharding.shard_batch)(batch)
    assert jax.tree.map(lambda a, b: bool((a == b).all()), out, batch) == dict(obs=True,
                                                                                reward=True)
    assert sharding.replicate(batch, None) is batch
    assert sharding.first_device(batch, None) is batch


def test_jit_two_device_updates_equal_one_device_updates():
    # Every learner kind: IQN with the BTR recipe (noisy, dueling, Munchausen, PER), C51
    # (Rainbow), DQN and TQC, two updates each from the same state and replay.
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "sharded_updates.py")],
                            capture_output=True, text=True, timeout=600, cwd=ROOT / "tests",
                            env=TWO_DEVICES)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert sorted(report) == ["dqn (dqn)", "iqn_btr (iqn)", "rainbow (c51)", "tqc (tqc)"]
    for name, case in report.items():
        assert case["gap"] < 1e-5, (name, case)
        assert case["all_reduce"], name  # gradients reduced across devices: the batch was split
        assert case["devices"] == 2, name  # the updated state stays on both devices


def test_training_run_on_two_devices_checkpoints_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    first = ["--algo", "dqn", "--env", "CartPole-v1", "--env.num-envs", "2",
             "--env.no-asynchronous", "--network.hidden-dim", "16",
             "--network.mlp-hidden", "16", "--replay.capacity", "1024",
             "--training.learning-starts", "64", "--training.batch-size", "16",
             "--training.replay-ratio", "0.5", "--training.eval-interval", "128",
             "--training.eval-episodes", "1", "--training.checkpoint-interval", "128",
             "--logging.log-interval", "64", "--logging.no-progress-bar",
             "--learner.devices", "2", "--run-dir", str(run_dir)]
    for total, flags in ((256, first), (384, ["--resume", str(run_dir)])):
        result = subprocess.run([sys.executable, str(ROOT / "launch" / "run.py"), *flags,
                                 "--total-steps", str(total)], capture_output=True, text=True,
                                timeout=300, cwd=ROOT, env=TWO_DEVICES)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "learner on 2 devices" in result.stderr
        saved = [int(path.name) for path in (run_dir / "checkpoints").iterdir()]
        assert max(saved) >= total, saved
    assert "resumed from env step 257" in result.stderr
    assert json.loads((run_dir / "config.json").read_text())["learner"]["devices"] == 2


def test_run_refuses_more_devices_than_the_process_has_before_any_work(tmp_path, capsys):
    from launch import run  # noqa: PLC0415

    run_dir = tmp_path / "run"
    code = run.main(["--algo", "dqn", "--env", "CartPole-v1", "--learner.devices",
                     str(jax.device_count() + 1), "--run-dir", str(run_dir)])
    assert code == 2
    assert "learner.devices" in capsys.readouterr().err
    assert not run_dir.exists()


def test_scaling_benchmark_times_one_device_and_the_mesh():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--algo",
                             "tqc", "--batch-size", "8", "--iters", "1", "--warmup", "0",
                             "--capacity", "256"], capture_output=True, text=True, timeout=300,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "devices=2" in result.stdout  # the script asked XLA for 2 host devices
    assert re.search(r"algo=tqc batch=8 ms_1=[\d.]+ ms_2=[\d.]+ samples_per_s_1=\d+ "
                     r"samples_per_s_2=\d+ speedup=[\d.]+ pairs=1", result.stdout), result.stdout
