"""Tests for envs/: env construction and preprocessing, the replay-slot Collector, evaluation.

The Collector is checked on a tiny deterministic fake env whose observation is
(env tag, episode index, step in episode), so every slot and stack can be written down by hand.
"""

from __future__ import annotations

import functools
import re
import sys

import gymnasium as gym
import jax
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from envs import (
    SLOT_KEYS,
    ActionHistory,
    ActionRepeat,
    BadEnvValue,
    CarRacingGasBrakeSteer,
    Collector,
    EnvIdError,
    EpisodeStats,
    NoProgressTimeout,
    check_env_id,
    env_spec,
    evaluate,
    make_env,
    make_vector_env,
)
from faults import SpoilsOneStep
from replay import DeviceReplay, sum_tree

# ----------------------------------------------------------------------------------
# Fake envs.

# Per env tag: episodes as (length, ends by termination?); repeated cyclically.
SCHEDULES = {
    0: [(2, True), (1, False), (3, True), (5, False)],
    1: [(1, False), (4, True), (2, False), (3, True)],
}


def fake_reward(ep: int, t: int) -> float:
    """Raw reward of the action taken at step t of episode ep (some beyond the clip of 1)."""
    return (t + 1) * 0.75 * (-1) ** t + ep


class FakeEnv(gym.Env):
    """Observation [tag, episode, step]; episode lengths and endings from SCHEDULES[tag]."""

    metadata = {"render_modes": []}

    def __init__(self, tag: int = 0, dtype=np.float32):
        self.tag = tag
        self.schedule = SCHEDULES[tag]
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), dtype)
        self.action_space = gym.spaces.Discrete(3)
        self._ep = -1
        self._t = 0

    def _obs(self):
        return np.array([self.tag, self._ep, self._t], self.observation_space.dtype)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._ep += 1
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        length, by_termination = self.schedule[self._ep % len(self.schedule)]
        reward = fake_reward(self._ep, self._t)
        self._t += 1
        done = self._t >= length
        return self._obs(), reward, done and by_termination, done and not by_termination, {}


class FakeImageEnv(gym.Env):
    """RGB uint8 frames whose pixels all equal the frame count; reward of frame n is n."""

    metadata = {"render_modes": []}

    def __init__(self, terminate_at: int | None = None, channels: int = 3):
        self.observation_space = gym.spaces.Box(0, 255, (8, 10, channels), np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.terminate_at = terminate_at
        self._n = 0

    def _obs(self):
        return np.full(self.observation_space.shape, self._n, np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._n = 0
        return self._obs(), {}

    def step(self, action):
        self._n += 1
        return self._obs(), float(self._n), self._n == self.terminate_at, False, {}


FAKE_VEC_ID = "EnvsTestFakeVec-v0"
FAKE_IMAGE_ID = "EnvsTestFakeImage-v0"
FAKE_GRAY_ID = "EnvsTestFakeGray-v0"
if FAKE_VEC_ID not in gym.registry:
    gym.register(FAKE_VEC_ID, entry_point=FakeEnv, kwargs={"dtype": np.float64})
if FAKE_IMAGE_ID not in gym.registry:
    gym.register(FAKE_IMAGE_ID, entry_point=FakeImageEnv, max_episode_steps=10)
if FAKE_GRAY_ID not in gym.registry:
    gym.register(FAKE_GRAY_ID, entry_point=FakeImageEnv, kwargs={"channels": 1})


def fake_spec():
    return env_spec(FAKE_VEC_ID)


def fake_collector(num_envs: int, frame_stack: int, reward_clip, action_history: int = 0,
                   reward_scale: float = 1.0):
    envs = gym.vector.SyncVectorEnv(
        [functools.partial(FakeEnv, tag=i) for i in range(num_envs)],
        autoreset_mode=AutoresetMode.NEXT_STEP,
    )
    return Collector(envs, fake_spec(), frame_stack=frame_stack, reward_clip=reward_clip,
                     action_history=action_history, reward_scale=reward_scale)


# ----------------------------------------------------------------------------------
# Collector slots on the fake env.

# Hand expectations per env, one row per vector step:
# (obs episode, obs step, valid, terminated, truncated); steps_since_start == obs step.
EXPECTED = {
    0: [
        (0, 0, True, False, False),
        (0, 1, True, True, False),  # episode 0 terminates after 2 steps
        (0, 2, False, False, False),  # autoreset slot holds the final obs
        (1, 0, True, False, True),  # episode 1 truncated after 1 step
        (1, 1, False, False, False),
        (2, 0, True, False, False),
        (2, 1, True, False, False),
        (2, 2, True, True, False),
        (2, 3, False, False, False),
    ],
    1: [
        (0, 0, True, False, True),  # length-1 episode, truncated
        (0, 1, False, False, False),
        (1, 0, True, False, False),
        (1, 1, True, False, False),
        (1, 2, True, False, False),
        (1, 3, True, True, False),
        (1, 4, False, False, False),
        (2, 0, True, False, False),
        (2, 1, True, False, True),
    ],
}
EXPECTED_EPISODES = [  # (vector step, env, episode, length, truncated)
    (1, 1, 0, 1, True),
    (2, 0, 0, 2, False),
    (4, 0, 1, 1, True),
    (6, 1, 1, 4, False),
    (8, 0, 2, 3, False),
    (9, 1, 2, 2, True),
]


@pytest.mark.parametrize("reward_clip, reward_scale", [(None, 1.0), (1.0, 1.0), (1.0, 0.25)])
def test_collector_slots_match_hand_expectations(reward_clip, reward_scale):
    col = fake_collector(num_envs=2, frame_stack=4, reward_clip=reward_clip,
                         reward_scale=reward_scale)
    col.reset(seed=0)
    episodes = []
    for n in range(9):
        actions = np.array([n % 3, (n + 1) % 3])
        slot, eps = col.step(actions)
        episodes += [(n + 1, ep) for ep in eps]
        assert tuple(slot) == SLOT_KEYS
        assert slot["obs"].dtype == np.float32 and slot["obs"].shape == (2, 3)
        assert slot["action"].dtype == np.int32
        np.testing.assert_array_equal(slot["action"], actions)
        assert slot["reward"].dtype == np.float32
        assert slot["steps_since_start"].dtype == np.int32
        for key in ("terminated", "truncated", "valid"):
            assert slot[key].dtype == bool
        for e in range(2):
            ep, t, valid, term, trunc = EXPECTED[e][n]
            np.testing.assert_array_equal(slot["obs"][e], [e, ep, t])
            assert slot["steps_since_start"][e] == t
            assert slot["valid"][e] == valid
            assert slot["terminated"][e] == term
            assert slot["truncated"][e] == trunc
            raw = fake_reward(ep, t) if valid else 0.0
            scaled = raw * reward_scale  # scale first, then clip
            want = scaled if reward_clip is None else np.clip(scaled, -reward_clip, reward_clip)
            assert slot["reward"][e] == pytest.approx(want)
    assert col.total_env_steps == sum(row[2] for rows in EXPECTED.values() for row in rows)

    assert [(n, ep.env_index) for n, ep in episodes] == [(n, e) for n, e, *_ in EXPECTED_EPISODES]
    for (_, ep), (_, e, ep_idx, length, truncated) in zip(episodes, EXPECTED_EPISODES):
        raw_return = sum(fake_reward(ep_idx, t) for t in range(length))  # unclipped
        assert ep == EpisodeStats(e, pytest.approx(raw_return), length, truncated)
    col.close()


def reference_stack(history: list[np.ndarray], steps_since_start: int, k: int) -> np.ndarray:
    """Stack for the last frame of ``history`` rebuilt from stored single frames: frames before
    the episode start are the episode's first frame repeated."""
    t = len(history) - 1
    return np.stack([history[t - min(k - 1 - j, steps_since_start)] for j in range(k)])


def test_stacked_obs_matches_rebuild_from_slots_and_gymnasium_framestack():
    k = 3  # longer than several episodes (lengths 1 and 2)
    col = fake_collector(num_envs=2, frame_stack=k, reward_clip=None)
    col.reset(seed=0)
    history = {0: [], 1: []}
    env0_stacks = []
    for n in range(30):
        stacks = col.stacked_obs
        assert stacks.shape == (2, k, 3) and stacks.dtype == np.float32
        env0_stacks.append(stacks[0])
        slot, _ = col.step(np.zeros(2, np.int64))
        for e in range(2):
            history[e].append(slot["obs"][e])
            np.testing.assert_array_equal(slot["obs"][e], stacks[e][-1])
            want = reference_stack(history[e], int(slot["steps_since_start"][e]), k)
            np.testing.assert_array_equal(stacks[e], want, err_msg=f"step {n} env {e}")
    col.close()

    # The same stream through gymnasium's own FrameStackObservation(padding_type="reset").
    env = gym.wrappers.FrameStackObservation(FakeEnv(tag=0), k, padding_type="reset")
    obs, _ = env.reset(seed=0)
    expected = [obs]
    while len(expected) < len(env0_stacks):
        obs, _, term, trunc, _ = env.step(0)
        expected.append(obs)
        if (term or trunc) and len(expected) < len(env0_stacks):
            expected.append(env.reset()[0])
    np.testing.assert_array_equal(np.stack(env0_stacks), np.stack(expected))


def test_prev_actions_by_hand_on_fake_env():
    # Env 0 of EXPECTED with actions n % 3: an episode's first frame has no actions before it,
    # the final-obs slot sees the episode's last actions, the autoreset step's action is dropped.
    col = fake_collector(num_envs=2, frame_stack=1, reward_clip=None, action_history=2)
    col.reset(seed=0)
    env0 = [[-1, -1], [-1, 0], [0, 1],  # episode 0 (length 2), then its final obs at step 2
            [-1, -1], [-1, 0],  # episode 1 (length 1); the autoreset action 2 is not kept
            [-1, -1], [-1, 2], [2, 0], [0, 1]]  # episode 2: its final obs at step 8
    for n, want in enumerate(env0):
        prev = col.prev_actions
        assert prev.shape == (2, 2) and prev.dtype == np.int32
        np.testing.assert_array_equal(prev[0], want, err_msg=f"step {n}")
        col.step(np.array([n % 3, (n + 1) % 3]))
    col.close()

    empty = ActionHistory(3, 0)
    empty.push(np.array([1, 2, 0]), np.zeros(3, bool))
    assert empty.actions.shape == (3, 0) and empty.actions.dtype == np.int32
    with pytest.raises(ValueError, match="action_history"):
        ActionHistory(2, -1)


def test_prev_actions_match_replay_rebuild_on_cartpole():
    # Slots of a real vector env go into a DeviceReplay with the same h; the actions it rebuilds
    # for each slot must be exactly what the policy saw at that slot.
    h, num_steps, capacity = 3, 40, 64  # no wrap: every slot can be gathered
    envs = make_vector_env("CartPole-v1", 2, asynchronous=False, seed=3, max_episode_steps=12)
    col = Collector(envs, env_spec("CartPole-v1", max_episode_steps=12), frame_stack=1,
                    reward_clip=None, action_history=h)
    replay = DeviceReplay(2, capacity, frame_stack=1, n_step=1, gamma=1.0, prioritized=False,
                          action_history=h)
    state = replay.init(np.zeros(4, np.float32), np.int32(0))
    add = jax.jit(replay.add)
    rng = np.random.default_rng(0)
    seen, flags = [], np.zeros(3, int)  # terminated, truncated, autoreset slots
    col.reset(seed=3)
    for _ in range(num_steps):
        seen.append(col.prev_actions)
        # Env 0 mostly pushes left and falls over; env 1 pushes at random and hits the limit.
        slot, _ = col.step((rng.random(2) < [0.1, 0.5]).astype(np.int64))
        flags += [slot["terminated"].sum(), slot["truncated"].sum(), (~slot["valid"]).sum()]
        state = add(state, **slot)
    col.close()
    assert np.all(flags >= 2), flags  # several episode ends of both kinds

    index = np.arange(num_steps) + capacity * np.arange(2)[:, None]  # [E, T] flat leaf indices
    batch = jax.jit(replay._gather)(state, index.ravel())
    seen = np.stack(seen, axis=1)  # [E, T, h]
    np.testing.assert_array_equal(np.asarray(batch.prev_actions).reshape(seen.shape), seen)
    # The bootstrap slot of a sampleable start t is t + 1 (n = 1): what the policy saw next.
    live = np.asarray(sum_tree.get(state.sum_tree, index.ravel())).reshape(index.shape)[:, :-1] > 0
    next_seen = np.asarray(batch.next_prev_actions).reshape(seen.shape)[:, :-1]
    assert live.sum() > 50
    np.testing.assert_array_equal(next_seen[live], seen[:, 1:][live])


def test_split_step_on_worker_processes_gives_the_slots_of_a_synchronous_step():
    # step_async / step_wait on AsyncVectorEnv workers (what the training loop does, learning
    # in between) against step() in-process, same seeds and actions, across episode ends.
    spec = env_spec("CartPole-v1", max_episode_steps=9)
    cols = [Collector(make_vector_env("CartPole-v1", 2, asynchronous=a, seed=4,
                                      max_episode_steps=9), spec, 2, reward_clip=None)
            for a in (True, False)]
    rng = np.random.default_rng(1)
    try:
        for col in cols:
            col.reset(seed=4)
        for _ in range(25):
            actions = rng.integers(0, 2, 2)
            assert np.array_equal(cols[0].step_valid, cols[1].step_valid)
            cols[0].step_async(actions)
            with pytest.raises(RuntimeError, match="twice"):
                cols[0].step_async(actions)
            split, split_eps = cols[0].step_wait()
            whole, whole_eps = cols[1].step(actions)
            for key in SLOT_KEYS:
                np.testing.assert_array_equal(split[key], whole[key], err_msg=key)
            assert split_eps == whole_eps
            np.testing.assert_array_equal(cols[0].stacked_obs, cols[1].stacked_obs)
        assert cols[0].total_env_steps < 50  # autoreset steps happened in between
        with pytest.raises(RuntimeError, match="without step_async"):
            cols[0].step_wait()
    finally:
        for col in cols:
            col.close()


class BadFakeEnv(SpoilsOneStep, FakeEnv):
    """FakeEnv whose ``bad_at``-th step (counted over episodes) has an infinite reward or a
    NaN observation."""

    bad_reward = float("inf")

    def __init__(self, tag: int = 0, field: str = "reward", bad_at: int = 4):
        super().__init__(tag)
        self.spoil_setup(field, bad_at)


def bad_collector(field: str | None, on_bad_value: str = "drop_episode") -> Collector:
    """Two fake envs (tags 0 and 1); env 0 emits one bad value at its 5th step (the first
    step of its third episode) unless ``field`` is None."""
    fns = [functools.partial(BadFakeEnv, tag=0, field=field, bad_at=5) if field
           else functools.partial(FakeEnv, tag=0), functools.partial(FakeEnv, tag=1)]
    envs = gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.NEXT_STEP)
    return Collector(envs, fake_spec(), frame_stack=2, reward_clip=None,
                     on_bad_value=on_bad_value)


@pytest.mark.parametrize("field", ["reward", "obs"])
def test_a_bad_env_value_drops_that_episode_and_resets_that_env_alone(field):
    runs = {}
    for name, bad in (("clean", None), ("bad", field)):
        col = bad_collector(bad)
        col.reset(seed=0)
        runs[name] = [(col.step(np.zeros(2, np.int64)), list(col.last_dropped),
                       col.stacked_obs.copy(), col.steps_since_start) for _ in range(10)]
        col.close()
    dropped_at = [t for t, (*_, dropped, _, _) in enumerate(runs["bad"]) if dropped]
    # Env 0 (episodes of 2, 1, 3 steps, each followed by its autoreset step): its 5th step
    # is the second of episode 2, at vector step 6.
    assert dropped_at == [6]
    (slot, episodes), dropped, stacked, since = runs["bad"][6]
    assert [(d.env_index, d.field) for d in dropped] == [(0, "reward" if field == "reward"
                                                          else "frame")]
    assert "env index 0" in str(dropped[0]) and "non-finite" in str(dropped[0])
    for t, ((slot, episodes), _, stacked, since) in enumerate(runs["bad"]):
        (clean_slot, clean_episodes), _, clean_stacked, clean_since = runs["clean"][t]
        for key in SLOT_KEYS:  # env 1 never notices
            np.testing.assert_array_equal(slot[key][1], clean_slot[key][1], err_msg=key)
        np.testing.assert_array_equal(stacked[1], clean_stacked[1])
        assert [e for e in episodes if e.env_index == 1] == \
            [e for e in clean_episodes if e.env_index == 1]
        assert np.isfinite(slot["reward"]).all() and np.isfinite(slot["obs"]).all()
        if t < 6:
            for key in SLOT_KEYS:
                np.testing.assert_array_equal(slot[key], clean_slot[key], err_msg=key)
    (slot, episodes), _, stacked, since = runs["bad"][6]
    assert slot["reward"][0] == 0.0 and slot["valid"][0]
    assert not [e for e in episodes if e.env_index == 0]  # the dropped episode is not reported
    # Env 0 was reset alone: its next frame starts episode 3 (FakeEnv counts its resets),
    # a fresh stack and step count 0, and its next slot is a real step of that episode.
    assert since[0] == 0 and stacked[0].tolist() == [[0, 3, 0]] * 2
    (slot, _), _, _, _ = runs["bad"][7]
    assert slot["valid"][0] and slot["steps_since_start"][0] == 0
    assert slot["obs"][0].tolist() == [0, 3, 0]


def test_a_bad_env_value_is_an_error_by_default():
    col = bad_collector("reward", on_bad_value="error")
    col.reset(seed=0)
    with pytest.raises(BadEnvValue, match=r"env index 0: bad reward: 1 non-finite") as info:
        for _ in range(10):
            col.step(np.zeros(2, np.int64))
    assert (info.value.env_index, info.value.field) == (0, "reward")
    assert info.value.env_id == FAKE_VEC_ID
    col.close()
    with pytest.raises(ValueError, match="on_bad_value must be error or drop_episode"):
        bad_collector(None, on_bad_value="skip")


def test_collector_rejects_bad_use():
    col = fake_collector(num_envs=2, frame_stack=2, reward_clip=None)
    with pytest.raises(RuntimeError, match="reset"):
        col.step(np.zeros(2, np.int64))
    col.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        col.step(np.zeros(3, np.int64))
    col.close()
    same_step = gym.vector.SyncVectorEnv([FakeEnv], autoreset_mode=AutoresetMode.SAME_STEP)
    with pytest.raises(ValueError, match="NEXT_STEP"):
        Collector(same_step, fake_spec(), frame_stack=2, reward_clip=None)
    same_step.close()


# ----------------------------------------------------------------------------------
# make_env on the generic paths (fake envs: fast).


def test_vector_obs_env_is_cast_to_float32_and_limit_override_counts_agent_steps():
    spec = env_spec(FAKE_VEC_ID)
    assert spec.frame_shape == (3,) and spec.frame_dtype == np.float32 and not spec.is_image
    assert spec.num_actions == 3 and spec.max_episode_steps is None
    env = make_env("CartPole-v1", max_episode_steps=5, seed=0)
    obs, _ = env.reset()
    assert obs.dtype == np.float32
    flags = [env.step(i % 2)[2:4] for i in range(5)]
    assert flags == [(False, False)] * 4 + [(False, True)]
    assert env_spec("CartPole-v1", max_episode_steps=5).max_episode_steps == 5


class RewardIsAction(gym.Env):
    """Reward = action - 1 (so the agent picks -1, 0 or +1); terminates at step ``end``."""

    metadata = {"render_modes": []}

    def __init__(self, end: int = 1000):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self.end, self._t = end, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self._t += 1
        return np.zeros(1, np.float32), float(action) - 1.0, self._t >= self.end, False, {}


REWARD_IS_ACTION_ID = "EnvsTestRewardIsAction-v0"
if REWARD_IS_ACTION_ID not in gym.registry:
    gym.register(REWARD_IS_ACTION_ID, entry_point=RewardIsAction)


def test_no_progress_timeout_cuts_after_that_many_rewards_without_progress():
    env = NoProgressTimeout(RewardIsAction(), 3)
    env.reset()
    # +1 resets the count; 0 and -1 both count as no progress.
    flags = [env.step(a)[2:4] for a in (2, 0, 1, 2, 0, 1, 0)]
    assert flags == [(False, False)] * 6 + [(False, True)]
    env.reset()  # the count starts again
    steps = [env.step(a) for a in (1, 1, 1)]
    assert [s[3] for s in steps] == [False, False, True] and steps[-1][4]["no_progress"]
    # A termination on the cutting step stays a termination.
    env = NoProgressTimeout(RewardIsAction(end=2), 2)
    env.reset()
    assert [env.step(0)[2:4] for _ in range(2)] == [(False, False), (True, False)]


def test_no_progress_timeout_matches_a_plain_count_over_random_rewards():
    rng = np.random.default_rng(0)
    for _ in range(50):
        steps = int(rng.integers(1, 6))
        env = make_env(REWARD_IS_ACTION_ID, no_progress_timeout=steps)
        env.reset(seed=0)
        actions = rng.integers(0, 3, 40)
        run = 0
        for t, a in enumerate(actions):
            run = 0 if a == 2 else run + 1
            truncated = env.step(int(a))[3]
            assert truncated == (run >= steps), (steps, actions[:t + 1])
            if truncated:
                break


def test_no_progress_timeout_errors_and_vector_env():
    with pytest.raises(ValueError, match="no_progress_timeout must be None or an integer >= 1"):
        make_env(REWARD_IS_ACTION_ID, no_progress_timeout=0)
    with pytest.raises(ValueError, match="failure_countdown"):
        make_env("trackmania", no_progress_timeout=5)
    with pytest.raises(ValueError, match="envpool' has no no_progress_timeout"):
        make_vector_env("ALE/Pong-v5", 2, asynchronous=False, seed=0, backend="envpool",
                        no_progress_timeout=5)
    envs = make_vector_env(REWARD_IS_ACTION_ID, 2, asynchronous=False, seed=0,
                           no_progress_timeout=2)
    envs.reset(seed=0)
    truncated = [envs.step(np.array([1, 2]))[3].tolist() for _ in range(2)]
    assert truncated == [[False, False], [True, False]]
    envs.close()


def test_image_env_action_repeat_and_frame_time_limit():
    # Registered limit of 10 frames inside a repeat of 4: agent steps cover 4, 4, 2 frames.
    spec = env_spec(FAKE_IMAGE_ID, frame_skip=4, image_size=6)
    assert spec.frame_shape == (6, 6) and spec.frame_dtype == np.uint8 and spec.is_image
    assert spec.max_episode_steps == 3
    env = make_env(FAKE_IMAGE_ID, frame_skip=4, image_size=6)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (6, 6) and obs.dtype == np.uint8
    results = [env.step(0) for _ in range(3)]
    assert [r[1] for r in results] == [1 + 2 + 3 + 4, 5 + 6 + 7 + 8, 9 + 10]
    assert [(r[2], r[3]) for r in results] == [(False, False), (False, False), (False, True)]
    for r, frame in zip(results, [4, 8, 10]):  # the last frame, grayscale (weights sum to ~1)
        assert np.abs(r[0].astype(int) - frame).max() <= 1

    # Single-channel frames lose their channel axis.
    gray = make_env(FAKE_GRAY_ID, frame_skip=2, image_size=6)
    assert gray.reset(seed=0)[0].shape == (6, 6)
    np.testing.assert_array_equal(gray.step(0)[0], np.full((6, 6), 2, np.uint8))

    # Termination inside the repeat stops it early.
    rep = ActionRepeat(FakeImageEnv(terminate_at=6), 4)
    rep.reset(seed=0)
    assert rep.step(0)[1:4] == (10.0, False, False)
    assert rep.step(0)[1:4] == (11.0, True, False)


# ----------------------------------------------------------------------------------
# CarRacing.


def _time_limit(env: gym.Env) -> gym.wrappers.TimeLimit:
    while not isinstance(env, gym.wrappers.TimeLimit):
        env = env.env
    return env


def test_car_racing_preprocessing_and_action_repeat():
    spec = env_spec("CarRacing-v3")
    assert spec.frame_shape == (84, 84) and spec.frame_dtype == np.uint8 and spec.is_image
    assert spec.num_actions == 5 and spec.max_episode_steps == 250  # 1000 frames / 4

    env = make_env("CarRacing-v3", frame_skip=4, seed=3)
    raw = gym.make("CarRacing-v3", continuous=False)
    obs, _ = env.reset()
    raw_obs, _ = raw.reset(seed=3)
    assert obs.shape == (84, 84) and obs.dtype == np.uint8
    assert env.action_space == gym.spaces.Discrete(5)
    for action in [3, 3, 2, 0]:
        obs, reward, term, trunc, _ = env.step(action)
        raw_reward = 0.0
        for _ in range(4):
            raw_obs, r, *_ = raw.step(action)
            raw_reward += r
        assert reward == pytest.approx(raw_reward)
        # Same last frame: grayscale (gymnasium weights, truncated to uint8) then INTER_AREA.
        import cv2

        gray = np.sum(raw_obs * np.array([0.2125, 0.7154, 0.0721]), axis=-1).astype(np.uint8)
        np.testing.assert_array_equal(obs, cv2.resize(gray, (84, 84), interpolation=cv2.INTER_AREA))
    raw.close()

    # The registered 1000-frame TimeLimit sits inside the repeat: fast-forward its counter to
    # 995 frames; the next agent step covers 4 frames, the one after ends on frame 1000.
    _time_limit(env)._elapsed_steps = 995
    assert env.step(0)[3] is False
    _, reward_last, _, trunc, _ = env.step(0)
    assert trunc is True
    assert -0.2 < reward_last < 0  # one frame's -0.1 time penalty, not four
    env.close()


def test_car_racing_async_vector_env_collects_and_closes():
    spec = env_spec("CarRacing-v3")
    envs = make_vector_env("CarRacing-v3", 2, asynchronous=True, seed=11)
    assert isinstance(envs, gym.vector.AsyncVectorEnv)
    col = Collector(envs, spec, frame_stack=4, reward_clip=1.0)
    try:
        col.reset(seed=11)
        first = col.stacked_obs[:, -1]
        single = make_env("CarRacing-v3", seed=12)
        np.testing.assert_array_equal(first[1], single.reset()[0])  # sub-env 1 uses seed + 1
        single.close()
        for _ in range(3):
            slot, _ = col.step(np.array([3, 1]))
            assert slot["obs"].shape == (2, 84, 84) and slot["obs"].dtype == np.uint8
            assert slot["valid"].all()
        assert col.stacked_obs.shape == (2, 4, 84, 84)
    finally:
        col.close()
    assert envs.closed


# ----------------------------------------------------------------------------------
# CartPole and evaluation.


def test_cartpole_spec_and_evaluate_matches_direct_rollouts():
    spec = env_spec("CartPole-v1")
    assert spec.frame_shape == (4,) and spec.frame_dtype == np.float32
    assert spec.num_actions == 2 and not spec.is_image and spec.max_episode_steps == 500

    seen = []

    def always_left(stacked):
        seen.append(stacked.shape)
        assert stacked.dtype == np.float32
        return np.zeros(len(stacked), np.int64)

    returns = evaluate(always_left, "CartPole-v1", num_episodes=3, seed=7, frame_stack=2)
    expected = []
    for i in range(3):
        env = gym.make("CartPole-v1")
        env.reset(seed=7 + i)
        total, done = 0.0, False
        while not done:
            _, r, term, trunc, _ = env.step(0)
            total += r
            done = term or trunc
        expected.append(total)
        env.close()
    assert returns == expected
    assert seen and set(seen) == {(3, 2, 4)}

    # With action history the policy also gets the previous actions, -1 before the start.
    history = []

    def left_with_history(stacked, prev_actions):
        history.append(prev_actions)
        return np.zeros(len(stacked), np.int64)

    returns = evaluate(left_with_history, "CartPole-v1", num_episodes=3, seed=7, frame_stack=2,
                       action_history=2)
    assert returns == expected
    assert all(p.shape == (3, 2) and p.dtype == np.int32 for p in history)
    np.testing.assert_array_equal(history[:3], [[[-1, -1]] * 3, [[-1, 0]] * 3, [[0, 0]] * 3])


# ----------------------------------------------------------------------------------
# Continuous actions.


@pytest.mark.parametrize("env_id, dim", [
    ("Pendulum-v1", 1), ("LunarLanderContinuous-v3", 2), ("CarRacing-v3", 3),
])
def test_continuous_specs_act_in_unit_box(env_id, dim):
    spec = env_spec(env_id, action_space="continuous")
    assert spec.continuous and spec.action_shape == (dim,) and spec.num_actions == dim
    assert spec.action_dtype == np.float32
    env = make_env(env_id, action_space="continuous")
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)
    env.close()
    if env_id != "CarRacing-v3":
        assert env_spec(env_id) == spec  # "auto" is the native (continuous) kind


def test_car_racing_auto_and_discrete_stay_discrete():
    for action_space in ("auto", "discrete"):
        spec = env_spec("CarRacing-v3", action_space=action_space)
        assert not spec.continuous and spec.num_actions == 5
        assert spec.action_shape == () and spec.action_dtype == np.int32


class ActionSpy(gym.Env):
    """Records every action it is stepped with; CarRacing's continuous action space."""

    metadata = {"render_modes": []}
    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(np.array([-1, 0, 0], np.float32), np.ones(3, np.float32))

    def __init__(self):
        self.actions = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.actions.append(action)
        return np.zeros(1, np.float32), 0.0, False, False, {}


# Agent [gas, brake, steer] -> CarRacing [steer, gas, brake] with tmrl's trigger semantics
# (negative releases the pedal); out-of-range inputs are clipped.
GAS_BRAKE_STEER = [
    ([1, -1, 0], [0, 1, 0]),
    ([-1, 1, -0.5], [-0.5, 0, 1]),
    ([0, 0, 1], [1, 0, 0]),
    ([0.5, -0.5, -1], [-1, 0.5, 0]),
    ([-0.25, 0.75, 0.25], [0.25, 0, 0.75]),
    ([3, -2, 1.5], [1, 1, 0]),
]


def test_car_racing_gas_brake_steer_mapping(monkeypatch):
    spy = ActionSpy()
    env = CarRacingGasBrakeSteer(spy)
    for agent, raw in GAS_BRAKE_STEER:
        env.step(np.array(agent, np.float32))
        assert spy.actions[-1].dtype == np.float32
        np.testing.assert_array_equal(spy.actions[-1], raw)

    # The real chain: the mapped action reaches CarRacing (continuous=True) on every repeat.
    env = make_env("CarRacing-v3", frame_skip=2, seed=0, action_space="continuous")
    car = env.unwrapped
    assert car.continuous
    seen = []
    step = car.step
    monkeypatch.setattr(car, "step", lambda a: seen.append(np.array(a)) or step(a))
    env.reset()
    seen.clear()  # reset steps CarRacing with None
    for agent, _ in GAS_BRAKE_STEER[:2]:
        env.step(np.array(agent, np.float32))
    np.testing.assert_array_equal(seen, [raw for _, raw in GAS_BRAKE_STEER[:2] for _ in range(2)])
    env.close()


def test_pendulum_actions_are_rescaled_to_max_torque(monkeypatch):
    env = make_env("Pendulum-v1", action_space="continuous")
    pendulum = env.unwrapped
    seen = []
    step = pendulum.step
    monkeypatch.setattr(pendulum, "step", lambda a: seen.append(np.array(a)) or step(a))
    env.reset(seed=0)
    for a in (1.0, -1.0, 0.0, 0.5):
        env.step(np.array([a], np.float32))
    np.testing.assert_allclose(seen, [[2.0], [-2.0], [0.0], [1.0]])
    assert pendulum.max_torque == 2.0
    env.close()


def test_action_space_errors():
    with pytest.raises(EnvIdError, match=r"'CartPole-v1'.*'auto' or 'discrete'"):
        check_env_id("CartPole-v1", action_space="continuous")
    with pytest.raises(EnvIdError, match=r"'CartPole-v1'.*'auto' or 'discrete'"):
        make_env("CartPole-v1", action_space="continuous")
    with pytest.raises(EnvIdError, match=r"'Pendulum-v1'.*action_space='continuous'"):
        check_env_id("Pendulum-v1", action_space="discrete")
    with pytest.raises(EnvIdError, match=r"'Pendulum-v1'.*action_space='continuous'"):
        env_spec("Pendulum-v1", action_space="discrete")
    for bad in ("box", "Continuous", None):
        allowed = "action_space must be one of 'auto', 'discrete', 'continuous', got "
        with pytest.raises(ValueError, match=re.escape(allowed + repr(bad))):
            make_env("Pendulum-v1", action_space=bad)
    with pytest.raises(ValueError, match="action_space must be one of"):
        check_env_id("Pendulum-v1", action_space="box")
    with pytest.raises(ValueError, match="action_space must be one of"):
        make_vector_env("Pendulum-v1", 2, asynchronous=False, seed=0, action_space="box")


def test_collector_stores_continuous_actions():
    kwargs = dict(max_episode_steps=3, action_space="continuous")
    spec = env_spec("Pendulum-v1", **kwargs)
    with pytest.raises(ValueError, match="action_history must be 0 for continuous"):
        Collector(make_vector_env("Pendulum-v1", 2, asynchronous=False, seed=0, **kwargs), spec,
                  frame_stack=2, reward_clip=None, action_history=2)
    col = Collector(make_vector_env("Pendulum-v1", 2, asynchronous=False, seed=0, **kwargs),
                    spec, frame_stack=2, reward_clip=None)
    col.reset(seed=0)
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(8):  # two episodes of 3 steps and their autoreset steps
        assert col.prev_actions.shape == (2, 0)
        actions = rng.uniform(-1, 1, (2, 1))  # float64: cast to float32 like the spec says
        slot, episodes = col.step(actions)
        ends += len(episodes)
        assert slot["action"].dtype == np.float32 and slot["action"].shape == (2, 1)
        np.testing.assert_array_equal(slot["action"], actions.astype(np.float32))
        actions[:] = 7.0  # the slot holds a copy
        assert np.all(slot["action"] <= 1)
    assert ends == 4 and col.total_env_steps == 12
    for bad in (np.zeros(2, np.float32), np.zeros((2, 2), np.float32), np.zeros((3, 1))):
        with pytest.raises(ValueError, match=r"actions must have shape \(2, 1\)"):
            col.step(bad)
    col.close()


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "LunarLanderContinuous-v3", "CarRacing-v3"])
def test_continuous_async_vector_env_collects(env_id):
    # Spawned workers rebuild the wrappers (RescaleAction, CarRacingGasBrakeSteer) themselves.
    spec = env_spec(env_id, action_space="continuous")
    envs = make_vector_env(env_id, 2, asynchronous=True, seed=5, action_space="continuous")
    col = Collector(envs, spec, frame_stack=2, reward_clip=None)
    try:
        assert envs.single_action_space == gym.spaces.Box(-1.0, 1.0, spec.action_shape,
                                                          np.float32)
        col.reset(seed=5)
        rng = np.random.default_rng(0)
        for _ in range(3):
            actions = rng.uniform(-1, 1, (2, *spec.action_shape)).astype(np.float32)
            slot, _ = col.step(actions)
            np.testing.assert_array_equal(slot["action"], actions)
            assert slot["obs"].shape == (2, *spec.frame_shape) and slot["valid"].all()
    finally:
        col.close()
    assert envs.closed


def test_evaluate_continuous_pendulum():
    shapes = []

    def full_torque(stacked):
        shapes.append(stacked.shape)
        return np.ones((len(stacked), 1), np.float32)

    returns = evaluate(full_torque, "Pendulum-v1", num_episodes=2, seed=1, frame_stack=2,
                       action_space="continuous", max_episode_steps=20)
    assert len(returns) == 2 and all(np.isfinite(r) and r < 0 for r in returns)
    assert len(shapes) == 20 and set(shapes) == {(2, 2, 3)}


# ----------------------------------------------------------------------------------
# Env id checks and Atari.


def test_check_env_id_errors():
    with pytest.raises(EnvIdError, match="'CartPole-v1'") as info:
        check_env_id("CartPol-v1")
    assert "CartPol-v1" in str(info.value)
    with pytest.raises(EnvIdError, match="unknown environment id 'NoSuchThing-v0'"):
        check_env_id("NoSuchThing-v0")
    with pytest.raises(EnvIdError, match="unknown"):
        make_vector_env("CartPol-v1", 2, asynchronous=False, seed=0)
    assert issubclass(EnvIdError, ValueError)
    check_env_id("CartPole-v1")
    check_env_id("CarRacing-v3")  # continuous by default, run with continuous=False
    check_env_id("Pendulum-v1")  # "auto": its native continuous actions


def test_atari_id_without_ale_py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py", None)  # makes `import ale_py` fail
    with pytest.raises(EnvIdError, match=r"pip install -e '\.\[atari\]'"):
        check_env_id("ALE/Pong-v5")


def test_atari_pong_btr_preprocessing():
    pytest.importorskip("ale_py")
    env = make_env("ALE/Pong-v5", seed=0)
    obs, _ = env.reset()
    assert obs.shape == (84, 84) and obs.dtype == np.uint8
    assert env.action_space == gym.spaces.Discrete(6)
    pre = env
    while not isinstance(pre, gym.wrappers.AtariPreprocessing):
        pre = pre.env
    assert (pre.noop_max, pre.frame_skip, pre.terminal_on_life_loss) == (30, 4, False)
    assert env.unwrapped._frameskip == 1
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    obs, *_ = env.step(1)
    assert obs.shape == (84, 84) and obs.dtype == np.uint8
    env.close()
    spec = env_spec("ALE/Pong-v5")
    assert (spec.frame_shape, spec.num_actions, spec.is_image) == ((84, 84), 6, True)
    # Legacy ids would skip the BTR recipe: point to the v5 id instead.
    with pytest.raises(EnvIdError, match="'ALE/Pong-v5'"):
        check_env_id("PongNoFrameskip-v4")
    with pytest.raises(EnvIdError, match="did you mean 'ALE/Pong-v5'"):
        check_env_id("Pong-v5")
