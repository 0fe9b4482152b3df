"""envs.trackmania.reward: tmrl's progress reward (checked against tmrl's own RewardFunction),
seed 004's shaping terms on hand-worked numbers, trajectory resampling and files."""

import dataclasses
import importlib.util
import math
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from envs.trackmania.reward import (REWARD_CONFIG_KEYS, StepReward, TrackReward,
                                    load_trajectory, resample_trajectory, save_trajectory)
from rl.config import TrackmaniaConfig

# Every reward knob set explicitly, so the hand-worked numbers do not follow config defaults.
SEED004 = dict(end_of_track=100.0, constant_penalty=0.0005, check_forward=500,
               check_backward=10, failure_countdown=9, min_steps=70, max_stray=50.0,
               speed_safe_deviation_ratio=0.15, reckless_speed_threshold=45.0,
               reckless_penalty_factor=0.006, speed_bonus=0.0008,
               wall_hug_speed_threshold=10.0, wall_hug_penalty_factor=0.005,
               proximity_reward_shaping=0.5, reward_scale=3.0)
# tmrl's reward alone: every seed-004 term off (speeds never reach the wall-hug threshold).
EXTRAS_OFF = dict(constant_penalty=0.0, reckless_penalty_factor=0.0, speed_bonus=0.0,
                  wall_hug_speed_threshold=1e9, wall_hug_penalty_factor=0.0,
                  proximity_reward_shaping=1.0, reward_scale=None)


def params(**overrides):
    return dataclasses.replace(TrackmaniaConfig(), **{**SEED004, **overrides})


def straight(n=1001):
    """Points 0.1 m apart along +x from the origin."""
    pts = np.zeros((n, 3))
    pts[:, 0] = np.arange(n) * 0.1
    return pts


def tmrl_reward_function():
    """tmrl 0.7.1's RewardFunction class, loaded from its file without importing the tmrl
    package (whose __init__ creates ~/TmrlData and downloads)."""
    spec = importlib.util.find_spec("tmrl")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tmrl is not installed")
    path = Path(list(spec.submodule_search_locations)[0], "custom", "tm", "utils",
                "compute_reward.py")
    if not path.is_file():
        pytest.skip(f"tmrl has no {path}")
    mod_spec = importlib.util.spec_from_file_location("tmrl_compute_reward", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module.RewardFunction


def twisty_trajectory(rng):
    """~80 m with a hairpin (cuts within the forward window), jittered points and a few
    repeated ones (exact distance ties, which tmrl's '<=' resolves to the later index)."""
    heading = np.cumsum(rng.normal(0, 0.5, 40))
    heading[10:14] += np.pi * np.linspace(0.25, 1, 4)  # a hairpin
    steps = rng.uniform(1, 3, 40)[:, None] * np.stack(
        [np.cos(heading), np.sin(heading), rng.normal(0, 0.05, 40)], axis=1)
    pts = resample_trajectory(np.concatenate([np.zeros((1, 3)), np.cumsum(steps, 0)]))
    pts += rng.normal(0, 0.05, pts.shape)  # jitter: distances non-monotone along the track
    dup = np.sort(rng.choice(len(pts), 5, replace=False))
    return np.insert(pts, dup, pts[dup], axis=0)


def random_walk(rng, data, n_steps):
    """Positions near, along, ahead of, behind and far from the trajectory."""
    s = 0.0
    park = 0
    pos = data[0]
    for _ in range(n_steps):
        if park:  # parked: long no-progress runs reach tmrl's countdown
            park -= 1
            yield pos, 0.0
            continue
        if rng.uniform() < 0.03:
            park = int(rng.integers(5, 20))
        u = rng.uniform()
        if u < 0.45:
            s += rng.uniform(0, 15)  # drive along
        elif u < 0.55:
            s += rng.uniform(20, 120)  # cut / teleport ahead
        elif u < 0.65:
            s -= rng.uniform(1, 40)  # go back
        elif u < 0.75:
            pass  # stand still
        s = float(np.clip(s, 0, len(data) - 1))
        pos = data[int(s)] + rng.normal(0, 0.3, 3)
        if u >= 0.75 and u < 0.85:
            pos = pos + rng.normal(0, 8, 3)  # stray, often beyond max_stray
        elif u >= 0.85 and u < 0.9:
            pos = data[int(s)].copy()  # exactly on a point
        elif u >= 0.9 and u < 0.95 and int(s) + 1 < len(data):
            pos = (data[int(s)] + data[int(s) + 1]) / 2  # midway: near-tie
        yield pos, rng.uniform(0, 300)


@pytest.mark.parametrize("seed,knobs", [
    (0, dict(check_forward=40, check_backward=10, failure_countdown=3, min_steps=5,
             max_stray=2.5)),
    (1, dict(check_forward=2, check_backward=2, failure_countdown=1, min_steps=0,
             max_stray=1.0)),
    (2, dict(check_forward=500, check_backward=10, failure_countdown=10, min_steps=70,
             max_stray=100.0)),
    (3, dict(check_forward=20, check_backward=7, failure_countdown=2, min_steps=3,
             max_stray=1.0)),
])
def test_matches_tmrl_reward_function_step_by_step(tmp_path, seed, knobs):
    RewardFunction = tmrl_reward_function()
    rng = np.random.default_rng(seed)
    data = twisty_trajectory(rng)
    path = tmp_path / "reward.pkl"
    save_trajectory(path, data)  # tmrl's RewardFunction reads our .pkl itself
    oracle = RewardFunction(str(path), nb_obs_forward=knobs["check_forward"],
                            nb_obs_backward=knobs["check_backward"],
                            nb_zero_rew_before_failure=knobs["failure_countdown"],
                            min_nb_steps_before_failure=knobs["min_steps"],
                            max_dist_from_traj=knobs["max_stray"])
    ours = TrackReward(data, params(**EXTRAS_OFF, **knobs))
    seen = dict(progress=0, no_progress=0, rewind=0, terminated=0)
    for t, (pos, speed) in enumerate(random_walk(rng, data, 600)):
        old = oracle.cur_idx
        want_r, want_done = oracle.compute_reward(pos)
        got = ours.step(pos, speed, finished=False)
        assert (got.raw_reward, got.reward, got.terminated) == (want_r, want_r, want_done), t
        assert got.progress_index == oracle.cur_idx == ours.cur_idx, t
        assert ours.failure_counter == oracle.failure_counter, t
        assert got.reason == ("no_progress" if want_done else None)
        seen["progress"] += want_r > 0
        seen["no_progress"] += want_r == 0
        seen["rewind"] += oracle.cur_idx < old
        seen["terminated"] += want_done
        if want_done and rng.uniform() < 0.7:  # else keep stepping a finished episode
            oracle.reset()
            ours.reset()
    assert min(seen.values()) > 0, seen  # the walk exercised every branch


def test_index_and_countdown_match_tmrl_with_seed004_terms_on(tmp_path):
    """The shaping terms change the reward, never the matched point or tmrl's countdown."""
    RewardFunction = tmrl_reward_function()
    rng = np.random.default_rng(7)
    data = twisty_trajectory(rng)
    path = tmp_path / "reward.pkl"
    save_trajectory(path, data)
    knobs = dict(check_forward=40, check_backward=10, failure_countdown=3, min_steps=5,
                 max_stray=6.0)
    oracle = RewardFunction(str(path), knobs["check_forward"], knobs["check_backward"],
                            knobs["failure_countdown"], knobs["min_steps"],
                            knobs["max_stray"])
    ours = TrackReward(data, params(**knobs, reward_scale=None))
    safe = 0.15 * 6.0
    for pos, speed in random_walk(rng, data, 400):
        want_r, want_done = oracle.compute_reward(pos)
        got = ours.step(pos, speed, finished=False)
        assert got.progress_index == oracle.cur_idx
        assert got.deviation == pytest.approx(np.linalg.norm(pos - data[oracle.cur_idx]))
        off = got.deviation > safe
        assert got.terms["progress"] == pytest.approx(want_r * (0.5 if off else 1.0))
        assert got.raw_reward == pytest.approx(sum(got.terms.values()))
        if want_done:
            assert got.reason == "no_progress"
        if got.terminated:
            oracle.reset()
            ours.reset()


def test_forward_window_restarts_on_ties_and_rewind_skips_index_0():
    far = dict(max_stray=100.0, **{k: v for k, v in EXTRAS_OFF.items()})
    # Car at the origin, points at x = 5, 6, 6, 6, 4: with check_forward=4 the search stops
    # 3 points after index 0 (all worse) and never sees x=4; with 5 it does.
    line = np.array([[5, 0, 0], [6, 0, 0], [6, 0, 0], [6, 0, 0], [4, 0, 0]], float)
    assert TrackReward(line, params(**far, check_forward=4)).step(
        [0, 0, 0], 0, False).progress_index == 0
    assert TrackReward(line, params(**far, check_forward=5)).step(
        [0, 0, 0], 0, False).progress_index == 4
    # Equal distances: the later point wins ('<='), and the window restarts at each tie.
    ties = np.array([[5, 0, 0], [5, 0, 0], [5, 0, 0], [5, 0, 0], [3, 0, 0]], float)
    got = TrackReward(ties, params(**far, check_forward=2)).step([0, 0, 0], 0, False)
    assert (got.progress_index, got.raw_reward) == (4, 0.04)
    # Rewind from index 3 back to the start: index 0 is never examined, 1 is the best.
    pts = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], float)
    reward = TrackReward(pts, params(**far, check_forward=10, check_backward=10))
    assert reward.step([3, 0, 0], 0, False).progress_index == 3
    got = reward.step([0, 0, 0], 0, False)
    assert (got.progress_index, got.raw_reward, got.deviation) == (1, 0.0, 1.0)


def test_hand_worked_on_line_step():
    reward = TrackReward(straight(), params())
    assert reward.progress == 0.0
    for k in (1, 2, 3):
        got = reward.step([float(k), 0.0, 0.0], 72.0, False)
        # 1 m = 10 points: progress 10 / 100 = 0.1; bonus 0.0008 * 72 = 0.0576;
        # raw = 0.1 + 0.0576 - 0.0005 = 0.1571; reward = tanh(3 * 0.1571) = tanh(0.4713)
        assert got.progress_index == 10 * k
        assert got.progress == reward.progress == pytest.approx(10 * k / 1000)
        assert got.deviation == pytest.approx(0.0, abs=1e-12)
        assert got.terms == pytest.approx(dict(progress=0.1, speed_bonus=0.0576,
                                               off_track_penalty=0.0, wall_hug_penalty=0.0,
                                               constant_penalty=-0.0005, finish_bonus=0.0))
        assert got.raw_reward == pytest.approx(0.1571, abs=1e-12)
        assert got.reward == pytest.approx(0.43924909199489, abs=1e-12)
        assert (got.terminated, got.reason) == (False, None)
    assert isinstance(got, StepReward)


def test_off_track_speed_penalty_and_proximity_shaping():
    # safe radius 0.15 * 50 = 7.5 m. Car 15 m beside point 10 (x = 1 m) at 90 km/h:
    # progress 0.1 * 0.5 = 0.05 (off the line, no speed bonus);
    # off-track penalty 0.006 * (90 / 45) * (15 / 7.5) = 0.006 * 2 * 2 = 0.024;
    # raw = 0.05 - 0.024 - 0.0005 = 0.0255.
    got = TrackReward(straight(), params(reward_scale=None)).step([1.0, 15.0, 0.0], 90.0, False)
    assert (got.progress_index, got.deviation) == (10, 15.0)
    assert got.terms == pytest.approx(dict(progress=0.05, speed_bonus=0.0,
                                           off_track_penalty=-0.024, wall_hug_penalty=0.0,
                                           constant_penalty=-0.0005, finish_bonus=0.0))
    assert got.reward == got.raw_reward == pytest.approx(0.0255, abs=1e-12)
    # proximity 1: the full 0.1; with tanh: tanh(3 * 0.0255) = tanh(0.0765) ~= 0.0763511
    full = TrackReward(straight(), params(reward_scale=None, proximity_reward_shaping=1.0))
    assert full.step([1.0, 15.0, 0.0], 90.0, False).terms["progress"] == pytest.approx(0.1)
    scaled = TrackReward(straight(), params()).step([1.0, 15.0, 0.0], 90.0, False)
    assert scaled.reward == pytest.approx(0.0763511161375, abs=1e-12)
    # At 5 km/h (not above 5) there is no off-track penalty; 7 m off is on the line.
    slow = TrackReward(straight(), params()).step([1.0, 15.0, 0.0], 5.0, False)
    assert slow.terms["off_track_penalty"] == 0.0
    near = TrackReward(straight(), params()).step([1.0, 7.0, 0.0], 90.0, False)
    assert near.terms["off_track_penalty"] == 0.0
    assert near.terms["progress"] == pytest.approx(0.1)
    assert near.terms["speed_bonus"] == pytest.approx(0.0008 * 90)


def test_finish_bonus_and_reason():
    reward = TrackReward(straight(), params(reward_scale=None))
    got = reward.step([1.0, 0.0, 0.0], 72.0, True)
    # 100 + 0.1 + 0.0576 - 0.0005 = 100.1571
    assert got.terms["finish_bonus"] == 100.0
    assert got.raw_reward == pytest.approx(100.1571, abs=1e-9)
    assert (got.terminated, got.reason) == (True, "finish")
    squashed = TrackReward(straight(), params()).step([1.0, 0.0, 0.0], 72.0, True)
    assert squashed.reward == pytest.approx(1.0) and squashed.raw_reward > 100


def test_failure_countdown():
    # min_steps 5, countdown 3: no-progress steps 6, 7, 8 count 1, 2, 3; step 9 counts 4 > 3.
    reward = TrackReward(straight(), params(min_steps=5, failure_countdown=3))
    for t in range(1, 9):
        got = reward.step([0.0, 0.0, 0.0], 0.0, False)
        assert not got.terminated, t
        assert reward.failure_counter == max(0, t - 5)
    got = reward.step([0.0, 0.0, 0.0], 0.0, False)
    assert (got.terminated, got.reason) == (True, "no_progress")
    # Progress resets the counter; reset() starts the min_steps grace again.
    reward.reset()
    for _ in range(8):
        assert not reward.step([0.0, 0.0, 0.0], 0.0, False).terminated
    assert not reward.step([1.0, 0.0, 0.0], 30.0, False).terminated
    assert reward.failure_counter == 0
    for _ in range(3):
        assert not reward.step([1.0, 0.0, 0.0], 0.0, False).terminated
    assert reward.step([1.0, 0.0, 0.0], 0.0, False).reason == "no_progress"
    # A finish on the countdown's last step reports the finish.
    assert reward.step([1.0, 0.0, 0.0], 0.0, True).reason == "finish"


def test_wall_hug_penalty_and_termination():
    # min_steps above the test's length: otherwise tmrl's countdown (no progress after
    # min_steps) would end the episode at step min_steps + 10, before the wall-hug rule.
    reward = TrackReward(straight(), params(min_steps=1000, reward_scale=None))
    # Parked 10 m beside point 0 (safe radius 7.5 m) at 30 km/h: k-th step costs
    # 0.005 * k * (10 / 7.5); off-track 0.006 * (30 / 45) * (10 / 7.5) = 0.0053333...
    for k in range(1, 28):  # 3 * failure_countdown = 27 steps allowed
        got = reward.step([0.0, 10.0, 0.0], 30.0, False)
        assert got.terms["wall_hug_penalty"] == pytest.approx(-0.005 * k * 10 / 7.5), k
        assert got.terms["off_track_penalty"] == pytest.approx(-0.0053333333333, abs=1e-12)
        assert not got.terminated, k
    got = reward.step([0.0, 10.0, 0.0], 30.0, False)
    assert (got.terminated, got.reason) == (True, "wall_hug")
    assert got.terms["wall_hug_penalty"] == pytest.approx(-0.005 * 28 * 10 / 7.5)
    # Below the speed threshold (8 <= 10 km/h): no wall-hug penalty and no ending.
    reward.reset()
    for _ in range(60):
        got = reward.step([0.0, 10.0, 0.0], 8.0, False)
        assert got.terms["wall_hug_penalty"] == 0.0 and not got.terminated
    assert reward.no_progress_steps == 0
    # One slow step restarts the count at k = 1.
    reward.step([0.0, 10.0, 0.0], 30.0, False)
    reward.step([0.0, 10.0, 0.0], 8.0, False)
    got = reward.step([0.0, 10.0, 0.0], 30.0, False)
    assert got.terms["wall_hug_penalty"] == pytest.approx(-0.005 * 1 * 10 / 7.5)
    # On the line (d = 0) at speed: no wall hug either; tmrl's countdown still runs.
    on = TrackReward(straight(), params(min_steps=0, failure_countdown=9))
    results = [on.step([0.0, 0.0, 0.0], 30.0, False) for _ in range(10)]
    assert all(r.terms["wall_hug_penalty"] == 0.0 for r in results)
    assert results[-1].reason == "no_progress"


def test_params_duck_typed_and_validated():
    assert set(REWARD_CONFIG_KEYS.values()) <= {f.name for f in
                                                dataclasses.fields(TrackmaniaConfig)}
    assert REWARD_CONFIG_KEYS["SPEED_SAFE_DEVIATION_RATIO"] == "speed_safe_deviation_ratio"
    assert len(REWARD_CONFIG_KEYS) == 15
    plain = SimpleNamespace(**SEED004)
    a = TrackReward(straight(), plain).step([1.0, 0.0, 0.0], 72.0, False)
    b = TrackReward(straight(), params()).step([1.0, 0.0, 0.0], 72.0, False)
    assert a == b
    missing = SimpleNamespace(**{k: v for k, v in SEED004.items() if k != "max_stray"})
    with pytest.raises(TypeError, match="max_stray"):
        TrackReward(straight(), missing)
    with pytest.raises(ValueError, match="check_forward"):
        TrackReward(straight(), SimpleNamespace(**{**SEED004, "check_forward": 0}))
    with pytest.raises(ValueError, match="reward_scale"):
        TrackReward(straight(), SimpleNamespace(**{**SEED004, "reward_scale": -1.0}))
    with pytest.raises(ValueError, match="shape"):
        TrackReward(np.zeros((5, 2)), plain)
    with pytest.raises(ValueError, match="at least 2"):
        TrackReward(np.zeros((1, 3)), plain)
    with pytest.raises(ValueError, match="NaN"):
        TrackReward(np.full((3, 3), np.nan), plain)
    reward = TrackReward(straight(), plain)
    with pytest.raises(ValueError, match="pos"):
        reward.step([0.0, 0.0], 1.0, False)
    with pytest.raises(ValueError, match="speed"):
        reward.step([0.0, 0.0, 0.0], float("nan"), False)


def test_resample_l_shape_by_hand():
    # 0.25 m along x, then 0.33 m along y. Points every 0.1 m of path: x = 0, 0.1, 0.2;
    # 0.05 m left at the corner, so the next is 0.05 m up the y leg, then 0.15, 0.25;
    # the last 0.08 m is dropped.
    path = np.array([[0, 0, 0], [0.25, 0, 0], [0.25, 0.33, 0]])
    got = resample_trajectory(path, spacing=0.1)
    want = np.array([[0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [0.25, 0.05, 0],
                     [0.25, 0.15, 0], [0.25, 0.25, 0]])
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, atol=1e-12)
    # Along the path every gap is 0.1 m; across the corner the chord is shorter.
    along = np.abs(got[1:, 0] - got[:-1, 0]) + np.abs(got[1:, 1] - got[:-1, 1])
    np.testing.assert_allclose(along, 0.1, atol=1e-12)
    assert np.linalg.norm(got[3] - got[2]) == pytest.approx(math.sqrt(0.05 ** 2 * 2))


def test_resample_matches_arc_length_interpolation():
    rng = np.random.default_rng(3)
    steps = rng.normal(0, 1, (30, 3)) * rng.uniform(0.02, 2.0, (30, 1))
    pts = np.cumsum(np.concatenate([rng.normal(0, 5, (1, 3)), steps]), axis=0)
    pts = np.insert(pts, [4, 9], pts[[4, 9]], axis=0)  # a stopped car: repeated positions
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    for spacing in (0.1, 0.37):
        m = int(cum[-1] // spacing) + 1
        assert abs(cum[-1] / spacing - round(cum[-1] / spacing)) > 1e-6  # no boundary case
        s = np.arange(m) * spacing
        want = np.stack([np.interp(s, cum, pts[:, c]) for c in range(3)], axis=1)
        got = resample_trajectory(pts, spacing)
        assert got.shape == (m, 3)
        np.testing.assert_allclose(got, want, atol=1e-9)


def test_resample_errors():
    with pytest.raises(ValueError, match="at least 2"):
        resample_trajectory([[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="shorter than spacing"):
        resample_trajectory([[1.0, 2.0, 3.0]] * 5)
    with pytest.raises(ValueError, match="shorter than spacing"):
        resample_trajectory([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0]])
    with pytest.raises(ValueError, match="spacing"):
        resample_trajectory([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], spacing=0.0)


_CALLED = []


def _side_effect():
    _CALLED.append(1)


class _Malicious:
    def __reduce__(self):
        return (_side_effect, ())


def test_save_load_round_trip(tmp_path):
    pts = straight(50) + np.array([0.0, 1.5, -2.25])
    for name in ("traj.npy", "sub/reward.pkl"):
        path = tmp_path / name
        save_trajectory(path, pts)
        got = load_trajectory(path)
        assert got.dtype == np.float64 and got.shape == (50, 3)
        np.testing.assert_array_equal(got, pts)
    np.testing.assert_array_equal(np.load(tmp_path / "traj.npy"), pts)
    with open(tmp_path / "sub/reward.pkl", "rb") as f:  # how tmrl reads reward.pkl
        np.testing.assert_array_equal(pickle.load(f), pts)
    # tmrl's record.py may pickle float32 (its positions come from float32 game data)
    f32 = tmp_path / "tmrl32.pkl"
    with open(f32, "wb") as f:
        pickle.dump(pts.astype(np.float32), f)
    got = load_trajectory(str(f32))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, pts.astype(np.float32))
    for protocol in (2, 5):
        p = tmp_path / f"proto{protocol}.pkl"
        p.write_bytes(pickle.dumps(pts, protocol=protocol))
        np.testing.assert_array_equal(load_trajectory(p), pts)


def test_load_save_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        load_trajectory(tmp_path / "nope.pkl")
    bad = tmp_path / "flat.npy"
    np.save(bad, np.zeros((10, 2)))
    with pytest.raises(ValueError, match=r"flat\.npy.*shape"):
        load_trajectory(bad)
    one = tmp_path / "one.npy"
    np.save(one, np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"one\.npy.*at least 2"):
        load_trajectory(one)
    nan = tmp_path / "nan.pkl"
    nan.write_bytes(pickle.dumps(np.full((4, 3), np.nan)))
    with pytest.raises(ValueError, match=r"nan\.pkl.*NaN"):
        load_trajectory(nan)
    as_list = tmp_path / "list.pkl"
    as_list.write_bytes(pickle.dumps([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"list\.pkl.*list"):
        load_trajectory(as_list)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Malicious()))
    with pytest.raises(ValueError, match=r"evil\.pkl.*refusing"):
        load_trajectory(evil)
    assert _CALLED == []  # the pickled call never ran
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="garbage"):
        load_trajectory(garbage)

    path = tmp_path / "keep.npy"
    save_trajectory(path, straight(3))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="keep.npy"):
        save_trajectory(path, straight(4))
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match="suffix"):
        save_trajectory(tmp_path / "traj.txt", straight(3))
    with pytest.raises(ValueError, match="shape"):
        save_trajectory(tmp_path / "bad.npy", np.zeros((3, 4)))
    assert not os.path.exists(tmp_path / "bad.npy")
