"""TrackMania tools: the reward-trajectory recorder against the stand-in game (real sockets on
127.0.0.1, OS-assigned ports), the driver-input -> discrete-action mapping, and the relabelling
of human-driven demo slots. No tmrl import (it reads ~/TmrlData at import)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import envs
from envs.trackmania import controls_table, driver_action
from envs.trackmania.reward import load_trajectory
from envs.trackmania.standin import StandinGame, StandinGamepad, standin_track
from launch import record_demos, record_trajectory
from rl.config import TM_DEFAULT_ACTIONS, TrackmaniaConfig


def drive(game: StandinGame, stop: threading.Event) -> None:
    """Full gas, straight, after 0.3 s standing at the start; until ``stop``."""
    pad = StandinGamepad(game.address)
    time.sleep(0.3)
    pad.right_trigger_float(1.0)
    while not stop.wait(0.1):
        pad.update()
    pad.close()


def test_record_trajectory_follows_the_track_and_never_overwrites(tmp_path, capsys):
    out = tmp_path / "reward.pkl"
    with StandinGame() as game:
        args = ["--out", str(out), "--host", "127.0.0.1", "--port", str(game.data_port),
                "--max-seconds", "2"]
        stop = threading.Event()
        driver = threading.Thread(target=drive, args=(game, stop), daemon=True)
        driver.start()
        try:
            assert record_trajectory.main(args) == 0
        finally:
            stop.set()
            driver.join()
        assert f"to {out}" in capsys.readouterr().out

        points = load_trajectory(out)
        # ~1.7 s of full gas from rest: well over 5 m, under the 60 m first straight.
        assert 50 < len(points) < 600
        np.testing.assert_allclose(np.linalg.norm(np.diff(points, axis=0), axis=1), 0.1,
                                   atol=1e-4)
        track = standin_track()
        np.testing.assert_allclose(points[0], track[0], atol=1e-4)  # from the standing start
        nearest = np.linalg.norm(points[:, None] - track[None], axis=2).min(axis=1)
        assert nearest.max() < 0.05

        assert record_trajectory.main(args) == 2
        err = capsys.readouterr().err
        assert str(out) in err and "--out" in err
    np.testing.assert_array_equal(load_trajectory(out), points)  # untouched


def test_record_trajectory_without_game_exits_2(tmp_path, capsys):
    with StandinGame() as game:
        port = game.data_port
    code = record_trajectory.main(["--out", str(tmp_path / "r.pkl"), "--port", str(port)])
    assert code == 2 and "connection refused" in capsys.readouterr().err
    assert not (tmp_path / "r.pkl").exists()


@pytest.mark.parametrize("inputs, name", [
    ([1.0, 0.0, 0.0], "gas"),
    ([0.8, 0.0, -0.9], "gas+left"),
    ([1.0, 0.0, 0.5], "gas+right"),
    ([0.0, 0.0, 0.0], "none"),
    ([0.4, 0.3, 0.2], "none"),  # half-pressed pedals and a slight steer round to nothing
    ([0.3, 0.0, -1.0], "left"),
    ([0.0, 1.0, 0.0], "brake"),
    ([0.0, 0.9, 1.0], "brake+right"),
    ([1.0, 1.0, 0.0], "brake+gas"),
    ([1.0, 1.0, -1.0], "brake+gas+left"),
])
def test_driver_action_picks_the_nearest_default_action(inputs, name):
    controls = controls_table(TM_DEFAULT_ACTIONS)
    assert driver_action(controls, np.array(inputs, np.float32)) == TM_DEFAULT_ACTIONS.index(name)


def tm_spec_h2(continuous: bool) -> envs.EnvSpec:
    """A TrackMania images spec with h = 2: features [speed, gear, rpm, a_{t-2}, a_{t-1}]."""
    return envs.EnvSpec(env_id="trackmania", frame_shape=(4, 4), frame_dtype=np.dtype(np.uint8),
                        num_actions=3 if continuous else 12, continuous=continuous,
                        action_shape=(3,) if continuous else (),
                        action_dtype=np.dtype(np.float32 if continuous else np.int32),
                        is_image=True, max_episode_steps=None, feature_size=9)


def passive_slot(spec, valid, steps):
    """A collector slot of two envs stepped with dummy (zero) actions; features [7, 8, 9, 5 x6]
    (5 = the env's wrong previous actions)."""
    features = np.tile(np.array([7, 8, 9] + [5] * 6, np.float32), (2, 1))
    return dict(obs=envs.join_obs(spec, np.full((2, 4, 4), 3, np.uint8), features),
                action=np.zeros((2, *spec.action_shape), spec.action_dtype),
                reward=np.zeros(2, np.float32), terminated=np.zeros(2, bool),
                truncated=np.zeros(2, bool), valid=np.array(valid),
                steps_since_start=np.array(steps, np.int32))


def test_human_labels_relabel_actions_and_previous_actions():
    spec = tm_spec_h2(continuous=False)
    labels = record_demos.HumanLabels(spec, TrackmaniaConfig(action_history=2), 2)
    index = TM_DEFAULT_ACTIONS.index
    # Env 0: a 2-step episode (final frame at t=2, reset frame at t=3); env 1 runs on.
    steps = [  # valid, steps_since_start, driver inputs, reported mask
        ([True, True], [0, 0], [[1, 0, 0], [0, 1, -1]], [True, True]),
        ([True, True], [1, 1], [[1, 0, 1], [0, 0, 0]], [True, True]),
        ([False, True], [2, 2], [[9, 9, 9], [1, 1, 0]], [False, True]),
        ([True, True], [0, 3], [[0, 0, 0], [1, 0, 0]], [True, True]),
    ]
    want_actions = [[index("gas"), index("brake+left")], [index("gas+right"), index("none")],
                    [0, index("brake+gas")], [index("none"), index("gas")]]
    want_previous = [  # [a_{t-2}, a_{t-1}] as [gas, brake, steer] controls
        [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]],
        [[0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, -1]],
        [[1, 0, 0, 1, 0, 1], [0, 1, -1, 0, 0, 0]],
        [[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0]],
    ]
    for (valid, since, inputs, mask), actions, previous in zip(steps, want_actions,
                                                               want_previous):
        slot = passive_slot(spec, valid, since)
        info = {"driver_action": np.array(inputs, np.float32), "_driver_action": np.array(mask)}
        got = labels.relabel(slot, info)
        np.testing.assert_array_equal(got["action"], actions)
        assert got["action"].dtype == np.int32
        np.testing.assert_array_equal(got["obs"]["features"][:, 3:], previous)
        np.testing.assert_array_equal(got["obs"]["features"][:, :3], [[7, 8, 9]] * 2)
        np.testing.assert_array_equal(got["obs"]["frame"], slot["obs"]["frame"])
        assert (slot["action"] == 0).all() and (slot["obs"]["features"][:, 3:] == 5).all()


def test_human_labels_continuous_clip_and_missing_inputs():
    spec = tm_spec_h2(continuous=True)
    labels = record_demos.HumanLabels(spec, TrackmaniaConfig(action_history=2), 2)
    info = {"driver_action": np.array([[0.5, 0.0, -1.5], [1.0, 0.25, 0.3]], np.float32),
            "_driver_action": np.array([True, True])}
    labels.relabel(passive_slot(spec, [True, True], [0, 0]), info)
    got = labels.relabel(passive_slot(spec, [True, True], [1, 1]), info)
    np.testing.assert_allclose(got["action"], [[0.5, 0.0, -1.0], [1.0, 0.25, 0.3]])
    np.testing.assert_allclose(got["obs"]["features"][:, 6:], got["action"])
    with pytest.raises(RuntimeError, match="no driver_action"):
        labels.relabel(passive_slot(spec, [True, True], [2, 2]), {})
