"""Demonstrations: the episode format and its checks, the recording tool, the slots they
become, and demo-weighted sampling in the replay (seed 004's player runs and weight decay)."""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.demos import DemoEpisode, DemoError, EpisodeSplitter, demo_slots, episode_path
from envs.demos import load_demos, load_episode, save_episode
from launch import record_demos
from replay import DeviceReplay, sum_tree
from rl import presets, schedules
from rl.config import ConfigError, DemoConfig

SPEC = envs.EnvSpec(env_id="Toy-v0", frame_shape=(2,), frame_dtype=np.dtype(np.float32),
                    num_actions=3, continuous=False, action_shape=(),
                    action_dtype=np.dtype(np.int32), is_image=False, max_episode_steps=None)
META = dict(env_id="Toy-v0", frame_skip=4, image_size=84, action_space="discrete", source="test")
# TrackMania-like: uint8 [6, 6] frames, 5 float features, continuous [gas, brake, steer].
SPEC_F = envs.EnvSpec(env_id="trackmania", frame_shape=(6, 6), frame_dtype=np.dtype(np.uint8),
                      num_actions=3, continuous=True, action_shape=(3,),
                      action_dtype=np.dtype(np.float32), is_image=True, max_episode_steps=None,
                      feature_size=5)
META_F = dict(env_id="trackmania", frame_skip=4, image_size=6, action_space="continuous",
              source="test")


def toy_episode(ident: int, length: int, truncated: bool = False) -> DemoEpisode:
    """Frame t of episode ``ident`` is [ident, t]; action t % 3; reward ident + t / 10."""
    t = np.arange(length + 1, dtype=np.float32)
    done = np.zeros(length, bool)
    done[-1] = True
    return DemoEpisode(obs=np.stack([np.full_like(t, ident), t], axis=1),
                       action=(np.arange(length) % 3).astype(np.int32),
                       reward=(ident + np.arange(length) / 10).astype(np.float32),
                       terminated=done & (not truncated), truncated=done & truncated,
                       meta=dict(META))


def toy_feature_episode(ident: int, length: int) -> DemoEpisode:
    """An episode of SPEC_F: frame t is all ``10 * ident + t``, features t are
    [ident, t, 0, 0, 0], action t is [t / length, 0, -0.5]."""
    t = np.arange(length + 1)
    done = np.zeros(length, bool)
    done[-1] = True
    features = np.zeros((length + 1, 5), np.float32)
    features[:, 0], features[:, 1] = ident, t
    action = np.zeros((length, 3), np.float32)
    action[:, 0], action[:, 2] = t[:-1] / length, -0.5
    frames = np.broadcast_to((10 * ident + t)[:, None, None], (length + 1, 6, 6)).astype(np.uint8)
    return DemoEpisode(obs=frames, action=action, reward=np.ones(length, np.float32),
                       terminated=done, truncated=np.zeros(length, bool), meta=dict(META_F),
                       features=features)


# ------------------------------------------------------------------------ format, checks

def test_save_load_round_trip_and_directory_order(tmp_path):
    episodes = [toy_episode(1, 4), toy_episode(2, 3, truncated=True)]
    for i, ep in enumerate(episodes):
        save_episode(episode_path(tmp_path, i), ep)
    loaded = load_demos(tmp_path, SPEC, frame_skip=4)
    assert [ep.length for ep in loaded] == [4, 3]
    for got, want in zip(loaded, episodes):
        for name in ("obs", "action", "reward", "terminated", "truncated"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
        assert got.meta == dict(META, format=1)
        assert got.features.shape == (got.length + 1, 0) and got.features.dtype == np.float32
    assert loaded[1].return_ == pytest.approx(2 * 3 + 0.3)
    with np.load(episode_path(tmp_path, 0)) as data:  # F = 0: no key, the file as before
        assert "features" not in data.files


def test_round_trip_with_features(tmp_path):
    episode = toy_feature_episode(2, 4)
    save_episode(episode_path(tmp_path, 0), episode)
    (got,) = load_demos(tmp_path, SPEC_F, frame_skip=4)
    for name in ("obs", "features", "action", "reward", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(got, name), getattr(episode, name))
    assert got.features.dtype == np.float32 and got.obs.dtype == np.uint8


def test_features_of_another_width_are_refused(tmp_path):
    path = episode_path(tmp_path, 0)
    save_episode(path, toy_feature_episode(1, 3))
    with pytest.raises(DemoError, match="features have 5 values per step, this run's env "
                                        "emits 4") as err:
        load_demos(tmp_path, dataclasses.replace(SPEC_F, feature_size=4), frame_skip=4)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("change, words", [
    (dict(obs=np.zeros((4, 2), np.float32)), "obs must have T + 1 = 5 frames"),
    (dict(terminated=np.array([True, False, False, False])), "exactly one of terminated"),
    (dict(terminated=np.zeros(4, bool)), "exactly one of terminated"),
    (dict(reward=np.array([0, np.nan, 0, 0], np.float32)), "reward must hold finite floats"),
    (dict(truncated=np.zeros(4, np.int8)), "truncated must be bool"),
    (dict(features=np.zeros((4, 5), np.float32)), "features must be float32 [T + 1, F] = [5, F]"),
    (dict(features=np.zeros((5, 5), np.float64)), "features must be float32 [T + 1, F]"),
    (dict(features=np.zeros(5, np.float32)), "features must be float32 [T + 1, F]"),
])
def test_layout_errors_name_the_file_and_field(tmp_path, change, words):
    path = tmp_path / "episode_000000.npz"
    with pytest.raises(DemoError, match=re.escape(words)) as err:
        save_episode(path, dataclasses.replace(toy_episode(1, 4), **change))
    assert str(path) in str(err.value)
    assert not path.exists()


@pytest.mark.parametrize("meta, spec_change, words", [
    (dict(env_id="Other-v1"), {}, "recorded on env 'Other-v1', this run trains on 'Toy-v0'"),
    (dict(action_space="continuous"), {}, "recorded with 'continuous' actions"),
    ({}, dict(frame_shape=(3,)), r"obs frames are float32\[2\], this run's env emits float32\[3\]"),
    ({}, dict(num_actions=2), r"action must hold integers in \[0, 2\)"),
    (dict(frame_skip=2), dict(is_image=True, frame_shape=(2,)), "frame_skip 2, this run uses"),
])
def test_demos_from_another_env_are_refused(tmp_path, meta, spec_change, words):
    path = episode_path(tmp_path, 0)
    save_episode(path, dataclasses.replace(toy_episode(1, 4), meta=dict(META, **meta)))
    with pytest.raises(DemoError, match=words) as err:
        load_demos(tmp_path, dataclasses.replace(SPEC, **spec_change), frame_skip=4)
    assert str(path) in str(err.value)


def test_unreadable_missing_and_empty(tmp_path):
    with pytest.raises(DemoError, match="is not a directory"):
        load_demos(tmp_path / "nope", SPEC, frame_skip=4)
    with pytest.raises(DemoError, match="holds no episode_"):
        load_demos(tmp_path, SPEC, frame_skip=4)
    bad = tmp_path / "episode_000000.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(DemoError, match="episode_000000.npz: not a readable demo episode"):
        load_episode(bad)
    np.savez(bad, obs=np.zeros((2, 2)))
    with pytest.raises(DemoError, match=r"episode_000000.npz: missing \['action'"):
        load_episode(bad)


# --------------------------------------------------------------------------- slot layout

def test_demo_slots_worked_example():
    # Greedy placement: ep0 (3 slots) -> stream 0, ep1 (4 slots) -> stream 1, ep2 (2 slots)
    # -> stream 0 (3 < 4); streams padded to the longest (5 slots).
    episodes = [toy_episode(0, 2), toy_episode(1, 3), toy_episode(2, 1, truncated=True)]
    slots = demo_slots(episodes, SPEC, 2, reward_scale=10.0, reward_clip=15.0)
    assert set(slots) == set(envs.SLOT_KEYS) | {"is_demo"}
    np.testing.assert_array_equal(slots["valid"].T, [[1, 1, 0, 1, 0], [1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(slots["steps_since_start"].T, [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]])
    np.testing.assert_array_equal(slots["is_demo"].T, [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(slots["obs"][:, 0, 0], [0, 0, 0, 2, 2])  # episode ids
    np.testing.assert_array_equal(slots["obs"][:, 1, 1], [0, 1, 2, 3, 0])  # frame index
    np.testing.assert_array_equal(slots["terminated"].T, [[0, 1, 0, 0, 0], [0, 0, 1, 0, 0]])
    np.testing.assert_array_equal(slots["truncated"].T, [[0, 0, 0, 1, 0], [0, 0, 0, 0, 0]])
    # Rewards scaled by 10 then clipped to 15: stream 1 holds 10, 11, 12 -> 10, 11, 12.
    np.testing.assert_allclose(slots["reward"][:, 1], [10, 11, 12, 0, 0])
    np.testing.assert_allclose(slots["reward"][:, 0], [0, 1, 0, 15, 0])
    assert slots["action"].dtype == np.int32 and slots["obs"].dtype == np.float32
    doubled = demo_slots(episodes, SPEC, 2, repeat=2)
    assert int(doubled["valid"].sum()) == 2 * int(slots["valid"].sum())


def test_demo_slots_with_features_emit_observation_pytrees():
    # ep0 (4 slots) -> stream 0, ep1 (3 slots) -> stream 1; L = 4.
    episodes = [toy_feature_episode(1, 3), toy_feature_episode(2, 2)]
    slots = demo_slots(episodes, SPEC_F, 2)
    obs = slots["obs"]
    assert set(obs) == {"frame", "features"}
    assert obs["frame"].shape == (4, 2, 6, 6) and obs["frame"].dtype == np.uint8
    assert obs["features"].shape == (4, 2, 5) and obs["features"].dtype == np.float32
    assert slots["action"].shape == (4, 2, 3) and slots["action"].dtype == np.float32
    np.testing.assert_array_equal(obs["frame"][:, :, 0, 0].T, [[10, 11, 12, 13], [20, 21, 22, 0]])
    np.testing.assert_array_equal(obs["features"][:, :, 1].T, [[0, 1, 2, 3], [0, 1, 2, 0]])
    np.testing.assert_array_equal(obs["features"][:, :, 0].T, [[1, 1, 1, 1], [2, 2, 2, 0]])
    # The splitter turns these pytree slots back into the episodes.
    splitter = EpisodeSplitter(2, META_F, SPEC_F)
    rebuilt = [out for t in range(4)
               for out in splitter.push({k: jax.tree.map(lambda v: v[t], slots[k])
                                         for k in envs.SLOT_KEYS})]
    assert [e for e, _ in rebuilt] == [1, 0]
    for (_, got), want in zip(rebuilt, episodes[::-1]):
        for name in ("obs", "features", "action", "reward", "terminated", "truncated"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))


def test_episode_splitter_rebuilds_episodes_from_collector_slots():
    splitter = EpisodeSplitter(2, META, SPEC)
    ep_a, ep_b = toy_episode(5, 2), toy_episode(6, 3)

    def slot(t):
        def field(ep, name, default):
            return getattr(ep, name)[t] if t < ep.length else default
        pick = lambda name, d: np.array([field(ep_a, name, d), field(ep_b, name, d)])
        return dict(obs=np.stack([ep_a.obs[min(t, 2)], ep_b.obs[min(t, 3)]]),
                    action=pick("action", 0), reward=pick("reward", 0.0),
                    terminated=pick("terminated", False), truncated=pick("truncated", False),
                    valid=np.array([t < 2, t < 3]), steps_since_start=np.array([t, t]))

    finished = [out for t in range(4) for out in splitter.push(slot(t))]
    assert [e for e, _ in finished] == [0, 1]
    for (_, got), want in zip(finished, (ep_a, ep_b)):
        for name in ("obs", "action", "reward", "terminated", "truncated"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))


# ----------------------------------------------------------------------------- recording

def test_record_demos_cartpole_scripted_never_overwrites(tmp_path, capsys):
    args = ["--algo", "dqn", "--env", "CartPole-v1", "--policy", "envs.scripted:cartpole",
            "--env.max-episode-steps", "60", "--out", str(tmp_path)]
    assert record_demos.main([*args, "--episodes", "2"]) == 0
    assert record_demos.main([*args, "--episodes", "1", "--seed", "5"]) == 0
    assert "--demos.path" in capsys.readouterr().out
    spec = envs.env_spec("CartPole-v1", max_episode_steps=60)
    episodes = load_demos(tmp_path, spec, frame_skip=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "episode_000000.npz", "episode_000001.npz", "episode_000002.npz"]
    # The scripted controller balances until the 60-step limit truncates.
    for ep in episodes:
        assert ep.length == 60 and ep.truncated[-1] and ep.return_ == 60.0
        assert ep.meta["source"] == "policy envs.scripted:cartpole"
    # Frames follow each other: o_{t+1} is the observation after a_t (cart x moves smoothly).
    assert np.abs(np.diff(episodes[0].obs[:, 0])).max() < 0.1


@pytest.mark.parametrize("args, words", [
    (["--policy", "envs.scripted:nope"], "has no function 'nope'"),
    (["--policy", "no_such_module:f"], "cannot import module 'no_such_module'"),
    (["--policy", "cartpole"], "must be 'random' or 'module:function'"),
    (["--episodes", "0"], "--episodes and --num-envs must be >= 1"),
    (["--policy", "human"], "needs --env trackmania, got env.id='CartPole-v1'"),
])
def test_record_demos_bad_input(tmp_path, capsys, args, words):
    code = record_demos.main(["--algo", "dqn", "--env", "CartPole-v1", "--out", str(tmp_path),
                              *args])
    assert code == 2 and words in capsys.readouterr().err


# ------------------------------------------------------------------ sampling with weights

def test_demo_weight_schedule_worked_numbers():
    demos = DemoConfig(sampling_weight=2.5, weight_decay_samples=200_000)
    values = [schedules.demo_sampling_weight(demos, n) for n in (0, 50_000, 100_000, 200_000,
                                                                   10**7)]
    np.testing.assert_allclose(values, [2.5, 2.125, 1.75, 1.0, 1.0])
    below = DemoConfig(sampling_weight=0.5, weight_decay_samples=10)
    assert schedules.demo_sampling_weight(below, 5) == pytest.approx(0.75)
    for field, value in (("sampling_weight", 0.0), ("injection_repeat", 0),
                         ("weight_decay_samples", 0), ("path", "")):
        with pytest.raises(ConfigError, match=f"demos.{field}"):
            DemoConfig(**{field: value})
    assert presets.get("tqc_tm20").demos == DemoConfig(injection_repeat=2, sampling_weight=2.5,
                                                       weight_decay_samples=200_000)


def test_sum_tree_build_matches_set():
    leaves = np.random.default_rng(0).uniform(0, 2, 13).astype(np.float32)
    built = sum_tree.build(leaves)
    np.testing.assert_allclose(built, sum_tree.set(sum_tree.init(13), jnp.arange(13), leaves),
                               rtol=1e-6)


def filled_replay(prioritized: bool):
    """Two streams of 64 slots: 3 demo episodes injected, then 40 agent steps per stream."""
    replay = DeviceReplay(num_streams=2, capacity_per_stream=64, frame_stack=2, n_step=3,
                          gamma=0.9, prioritized=prioritized)
    state = replay.init(np.zeros(2, np.float32), np.int32(0))
    episodes = [toy_episode(i, length) for i, length in ((1, 7), (2, 5), (3, 9))]
    slots = demo_slots(episodes, SPEC, 2)
    state = replay.set_demo_weight(state, 4.0)
    state = jax.jit(replay.add_sequence)(state, slots)
    for t in range(40):
        done = (t + 1) % 10 == 0
        state = replay.add(state, obs=np.full((2, 2), 100.0 + t, np.float32),
                           action=np.zeros(2, np.int32), reward=np.ones(2, np.float32),
                           terminated=np.array([done, done]), truncated=np.zeros(2, bool),
                           valid=np.full(2, t % 10 != 0 or t == 0),
                           steps_since_start=np.full(2, t % 10, np.int32))
    leaves = np.asarray(state.sum_tree[sum_tree.num_leaves_capacity(state.sum_tree):])[:128]
    demo = np.asarray(state.is_demo).reshape(-1)
    return replay, state, episodes, int(((leaves > 0) & demo).sum()), int(((leaves > 0) & ~demo).sum())


def demo_share(replay, state, draws=40, batch=1024):
    sample = jax.jit(replay.sample, static_argnames="batch_size")
    shares = [float(sample(state, jax.random.PRNGKey(i), batch_size=batch,
                           importance_exponent=1.0).is_demo.mean()) for i in range(draws)]
    return float(np.mean(shares))


@pytest.mark.parametrize("prioritized", [False, True])
def test_demo_share_of_batches_follows_the_weight_and_decays_to_uniform(prioritized):
    replay, state, _, num_demo, num_agent = filled_replay(prioritized)
    # Demo starts: 7 - 3 + 1 + 5 - 3 + 1 + 9 - 3 + 1 (each needs 3 steps ahead in its episode
    # or an end within the window): every demo step can start a transition.
    assert num_demo == 7 + 5 + 9
    if prioritized:  # equal priorities everywhere: only the demo weight biases sampling
        idx = jnp.arange(128, dtype=jnp.int32)
        state = replay.set_priorities(state, idx, jnp.full(128, 0.5))
    draws, batch = 40, 1024
    for weight in (4.0, 2.5, 1.0, 0.5):
        state = replay.set_demo_weight(state, weight)
        expected = weight * num_demo / (weight * num_demo + num_agent)
        # Stratified sampling has at most the binomial variance: 4 sigma of it.
        tolerance = 4 * np.sqrt(expected * (1 - expected) / (draws * batch))
        assert abs(demo_share(replay, state, draws, batch) - expected) < tolerance, weight
    # The tree stays a consistent sum of its leaves after the rescaling.
    np.testing.assert_allclose(sum_tree.total(state.sum_tree),
                               state.sum_tree[sum_tree.num_leaves_capacity(state.sum_tree):].sum(),
                               rtol=1e-5)


def test_demo_bias_is_not_importance_corrected_and_new_priorities_keep_it():
    replay, state, _, num_demo, num_agent = filled_replay(prioritized=True)
    idx = jnp.arange(128, dtype=jnp.int32)
    state = replay.set_priorities(state, idx, jnp.full(128, 0.5))
    batch = replay.sample(state, jax.random.PRNGKey(0), 512, importance_exponent=1.0)
    assert 0 < float(batch.is_demo.mean()) < 1
    np.testing.assert_allclose(batch.weights, 1.0, rtol=1e-5)  # equal priorities
    # Writing priorities again keeps the x4 factor on demo leaves (weight set at injection).
    leaves = np.asarray(state.sum_tree[sum_tree.num_leaves_capacity(state.sum_tree):])[:128]
    demo = np.asarray(state.is_demo).reshape(-1)
    alpha_leaf = (0.5 + replay.priority_eps) ** replay.priority_exponent
    np.testing.assert_allclose(leaves[(leaves > 0) & demo], 4 * alpha_leaf, rtol=1e-5)
    np.testing.assert_allclose(leaves[(leaves > 0) & ~demo], alpha_leaf, rtol=1e-5)


def test_sampled_demo_transitions_hold_the_recorded_steps():
    replay, state, episodes, _, _ = filled_replay(prioritized=False)
    batch = replay.sample(state, jax.random.PRNGKey(3), 2048, importance_exponent=1.0)
    is_demo = np.asarray(batch.is_demo)
    obs, next_obs = np.asarray(batch.obs), np.asarray(batch.next_obs)
    by_id = {int(ep.obs[0, 0]): ep for ep in episodes}
    for i in np.flatnonzero(is_demo):
        ep, t = by_id[int(obs[i, -1, 0])], int(obs[i, -1, 1])
        m = int(batch.n_steps[i])
        assert t < ep.length and int(batch.action[i]) == ep.action[t]
        # Stack of 2 frames: the previous frame, or the first one repeated at t = 0.
        assert obs[i, 0, 1] == max(t - 1, 0)
        assert next_obs[i, -1, 1] == t + m and next_obs[i, -1, 0] == obs[i, -1, 0]
        want = sum(0.9 ** j * ep.reward[t + j] for j in range(m))
        np.testing.assert_allclose(batch.reward[i], want, rtol=1e-5)
        ended = t + m == ep.length
        assert float(batch.discount[i]) == pytest.approx(0.0 if ended else 0.9 ** m)
    # Agent transitions never read demo frames.
    assert (obs[~is_demo, :, 0] >= 100).all()
