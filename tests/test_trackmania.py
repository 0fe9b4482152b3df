"""TrackMania through tmrl against the stand-in game: adapters, the real-time worker, the
watchdog, and a whole training run with a reconnection."""

import importlib.util
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import envs
from envs.trackmania import RECORD, adapt_observation, controls_table, tm_spec
from rl import presets
from rl.config import TM_DEFAULT_ACTIONS, ConfigError, TrackmaniaConfig

ROOT = Path(__file__).resolve().parents[1]
needs_tmrl = pytest.mark.skipif(importlib.util.find_spec("tmrl") is None,
                                reason="tmrl (the [trackmania] extra) is not installed")


# --- adapters ----------------------------------------------------------------------------

def test_images_observation_is_the_newest_frame_and_scaled_car_features():
    tm = TrackmaniaConfig(action_history=2)
    frame = np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)
    obs = adapt_observation(tm, (frame, np.array([200.0, 3.0, 6000.0], np.float32),
                                 np.array([1.0, 0.0, -0.5], np.float32),
                                 np.array([0.2, 0.8, 1.0], np.float32)))
    assert obs["frame"].dtype == np.uint8 and obs["frame"].shape == (64, 64)
    np.testing.assert_array_equal(obs["frame"], frame)
    # 200 km/h / 400, gear 3 / 6, 6000 rpm / 12000, then the two previous controls in order.
    np.testing.assert_allclose(obs["features"], [0.5, 0.5, 0.5, 1.0, 0.0, -0.5, 0.2, 0.8, 1.0])
    assert obs["features"].dtype == np.float32
    spec = tm_spec(tm, image_size=64, max_episode_steps=None, action_space="continuous")
    assert (spec.frame_shape, spec.feature_size, spec.action_shape) == ((64, 64), 9, (3,))
    assert spec.is_image and spec.continuous and spec.max_episode_steps == 1000


@pytest.mark.parametrize("interface, size", [("lidar", 1), ("lidar_progress", 2)])
def test_lidar_observation_scales_distances_and_keeps_progress(interface, size):
    tm = TrackmaniaConfig(interface=interface, action_history=1)
    lidar = np.linspace(0, 190, 19).astype(np.float32)
    car = np.array([100.0, 0.25][:size], np.float32)
    obs = adapt_observation(tm, (lidar, car, np.array([0.0, 1.0, 0.0], np.float32)))
    np.testing.assert_allclose(obs["frame"], lidar / 100.0, rtol=1e-6)
    expected = [0.25, 0.25][:size] + [0.0, 1.0, 0.0]  # 100 km/h / 400, progress as is
    np.testing.assert_allclose(obs["features"], expected)
    spec = tm_spec(tm, image_size=64, max_episode_steps=50, action_space="discrete")
    assert (spec.frame_shape, spec.frame_dtype, spec.feature_size) == ((19,), np.float32,
                                                                      size + 3)
    assert spec.num_actions == 12 and spec.action_shape == () and spec.max_episode_steps == 50


def test_default_discrete_actions_are_pedals_times_steering():
    table = controls_table(TM_DEFAULT_ACTIONS)
    assert table.shape == (12, 3) and table.dtype == np.float32
    pedals = {(g, b) for g, b, _ in table.tolist()}
    assert pedals == {(1.0, 0.0), (0.0, 0.0), (0.0, 1.0), (1.0, 1.0)}
    assert sorted(table[:, 2].tolist()) == [-1.0] * 4 + [0.0] * 4 + [1.0] * 4
    assert len({tuple(r) for r in table.tolist()}) == 12
    np.testing.assert_array_equal(controls_table(("brake+gas+left",)), [[1.0, 1.0, -1.0]])


def test_trackmania_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="trackmania.discrete_actions"):
        TrackmaniaConfig(discrete_actions=("gas", "gas+reverse"))
    with pytest.raises(ConfigError, match="env.num_envs"):
        presets.replace(presets.get("tqc_tm20"), env=dict(num_envs=2))
    with pytest.raises(ConfigError, match="training.eval_interval"):
        presets.replace(presets.get("iqn_tm20"), training=dict(eval_interval=1000))


# --- the worker against the stand-in game --------------------------------------------------

def _make(tm: TrackmaniaConfig, action_space="continuous", max_episode_steps=None):
    spec = envs.env_spec("trackmania", image_size=64, max_episode_steps=max_episode_steps,
                         action_space=action_space, trackmania=tm)
    vector_env = envs.make_vector_env("trackmania", 1, asynchronous=True, seed=0, frame_skip=1,
                                      image_size=64, max_episode_steps=max_episode_steps,
                                      action_space=action_space, trackmania=tm)
    return spec, envs.Collector(vector_env, spec, 4, reward_clip=None)


@needs_tmrl
def test_real_time_steps_drive_the_car_with_progress_reward():
    from envs.trackmania.standin import StandinGame

    with StandinGame().start() as game:
        tm = TrackmaniaConfig(backend="standin", standin_address=game.address,
                              watchdog_timeout=5.0)
        spec, collector = _make(tm)
        try:
            collector.reset(seed=0)
            start = time.perf_counter()
            rewards, speeds, late = [], [], 0
            for _ in range(40):
                slot, _ = collector.step(np.array([[1.0, -1.0, 0.0]], np.float32))
                rewards.append(float(slot["reward"][0]))
                speeds.append(float(collector.stacked_obs["features"][0, -1, 0]))
                late += int(collector.last_info["late_steps"][0])
            elapsed = time.perf_counter() - start
        finally:
            collector.close()
    obs = slot["obs"]
    assert obs["frame"].shape == (1, 64, 64) and obs["frame"].dtype == np.uint8
    assert obs["features"].shape == (1, spec.feature_size) == (1, 9)
    # 20 Hz: 40 steps take 2 s of game time.
    assert 1.9 < elapsed < 3.0
    assert late <= 2
    assert speeds[-1] > speeds[5] > 0  # accelerating, as reported by the game's speed
    # Progress pays once moving (seed 004's reward: tanh(3 r), r > 0 on the line).
    assert 0 < rewards[-1] < 1 and rewards[-1] > rewards[5]
    info = collector.last_info
    np.testing.assert_allclose(info["driver_action"][0], [1.0, 0.0, 0.0])  # the gas we sent
    assert 0 < info["progress"][0] < 0.5
    assert 0.04 < info["rtgym_time_step_s"][0] < 0.06


@needs_tmrl
@pytest.mark.parametrize("fault", ["silent", "hang_on_reset", "crash"])
def test_watchdog_reports_a_hung_or_crashed_game_within_its_timeout(fault):
    from envs.trackmania.standin import StandinGame

    with StandinGame().start() as game:
        tm = TrackmaniaConfig(backend="standin", standin_address=game.address,
                              watchdog_timeout=3.0)
        _, collector = _make(tm, max_episode_steps=3 if fault == "hang_on_reset" else None)
        try:
            collector.reset(seed=0)
            collector.step(np.zeros((1, 3), np.float32))
            if fault == "silent":
                game.go_silent()
            elif fault == "crash":
                game.crash()
            else:
                game.hang_on_reset()
            start = time.perf_counter()
            with pytest.raises(envs.GameConnectionError) as error:
                for _ in range(10):  # the third step ends the episode; the next one resets
                    collector.step(np.zeros((1, 3), np.float32))
            waited = time.perf_counter() - start
        finally:
            collector.close()
    assert waited < 15.0
    message = str(error.value)
    if fault == "silent":
        assert "sent nothing for" in message and waited > 2.0
    elif fault == "crash":
        assert "lost the plugin" in message or "closed" in message
    else:
        assert "did not answer" in message or "sent nothing" in message


@needs_tmrl
def test_missing_plugin_gives_one_clear_error_not_a_hang():
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tm = TrackmaniaConfig(backend="standin", standin_address=f"127.0.0.1:{port}:{port}",
                          watchdog_timeout=3.0)
    _, collector = _make(tm)
    start = time.perf_counter()
    with pytest.raises(envs.GameConnectionError, match="connection refused"):
        collector.reset(seed=0)
    assert time.perf_counter() - start < 15.0
    collector.close()


# --- training end to end -------------------------------------------------------------------

TINY_TQC_TM = [
    "--algo", "tqc_tm20", "--trackmania.backend", "standin",
    "--trackmania.watchdog-timeout", "3", "--env.max-episode-steps", "30",
    "--network.cnn-channels", "4", "4", "--network.feature-dim", "8",
    "--tqc.critic-hidden", "16", "--tqc.actor-hidden", "16", "--tqc.num-quantiles", "5",
    "--tqc.top-quantiles-to-drop", "1", "--replay.capacity", "512",
    "--training.learning-starts", "40", "--training.batch-size", "8",
    "--training.replay-ratio", "0.25", "--training.checkpoint-interval", "1000",
    "--logging.log-interval", "20", "--logging.no-progress-bar",
]


def _agent_driving(port: int, records: int, timeout: float) -> bool:
    """Reads the stand-in's records until ``records`` of them show the gas pressed (field 7):
    the agent is driving."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        buffer = b""
        while time.monotonic() < deadline:
            buffer += s.recv(4096)
            while len(buffer) >= RECORD.size:
                record, buffer = RECORD.unpack(buffer[:RECORD.size]), buffer[RECORD.size:]
                records -= record[6] > 0
                if records <= 0:
                    return True
    return False


@needs_tmrl
def test_training_run_survives_a_silent_game_and_writes_events_and_a_checkpoint(tmp_path):
    from envs.trackmania.standin import StandinGame

    run_dir = tmp_path / "run"
    with StandinGame().start() as game:
        def fault():
            if _agent_driving(game.data_port, 50, timeout=120):
                game.go_silent()  # longer than the 3 s watchdog
                time.sleep(4.0)
                game.resume()

        thread = threading.Thread(target=fault, daemon=True)
        thread.start()
        result = subprocess.run(
            [sys.executable, str(ROOT / "launch" / "run.py"), *TINY_TQC_TM,
             "--trackmania.standin-address", game.address, "--total-steps", "120",
             "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=300, cwd=ROOT)
        thread.join(timeout=1)
    assert result.returncode == 0, result.stderr[-3000:]
    console = (run_dir / "console.log").read_text()
    assert "game connection lost" in console and "dropped the partial episode" in console
    assert (run_dir / "checkpoints" / "120").is_dir()
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"episode/return", "episode/track_progress", "perf/late_step_share",
            "perf/rtgym_step_s", "perf/reconnects", "train/critic_loss"} <= tags
    assert max(e.value for e in acc.Scalars("perf/late_step_share")) <= 0.2


def test_no_game_exits_with_one_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run(
        [sys.executable, str(ROOT / "launch" / "run.py"), *TINY_TQC_TM, "--trackmania.backend",
         "game", "--trackmania.port", str(port), "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 3
    text = result.stderr + (tmp_path / "run" / "console.log").read_text()
    if importlib.util.find_spec("tmrl") is None:
        assert "tmrl is not installed" in text
    else:
        assert "connection refused" in text or "TmrlData" in text
