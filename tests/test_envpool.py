"""envpool's Atari vector env (envs/envpool_env.py) against the gymnasium path of
envs.make_vector_env: the same slots through the Collector on a fixed game, and the backend
choice. Skipped without ale-py (ROMs) or envpool."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from envs import SLOT_KEYS, Collector, EnvIdError, env_spec, make_vector_env, resolve_backend
from envs import envpool_env

ale_py = pytest.importorskip("ale_py", reason="the [atari] extra (ale-py and its ROMs) is needed")
needs_envpool = pytest.mark.skipif(importlib.util.find_spec("envpool") is None,
                                   reason="envpool is not installed (pip install envpool)")

# No-op starts and sticky actions fixed: the game is deterministic, so both backends must show
# the same frames (envpool cannot do 0 no-ops; 1 is one NOOP frame on both sides).
FIXED_GAME = dict(noop_max=1, repeat_action_probability=0.0)


def collect(backend: str, env_id: str, actions: np.ndarray, **make_kwargs) -> dict:
    """The slots of len(actions) Collector steps (keys SLOT_KEYS, stacked on a time axis)."""
    num_envs = actions.shape[1]
    spec = env_spec(env_id, backend=backend, **make_kwargs)
    vector_env = make_vector_env(env_id, num_envs, asynchronous=False, seed=5, backend=backend,
                                 **make_kwargs)
    collector = Collector(vector_env, spec, frame_stack=4, reward_clip=None)
    try:
        collector.reset(seed=5)
        slots = [collector.step(a)[0] for a in actions]
    finally:
        collector.close()
    return {k: np.stack([s[k] for s in slots]) for k in SLOT_KEYS}


@needs_envpool
@pytest.mark.parametrize("env_id, frame_skip, n_actions", [
    ("ALE/Pong-v5", 4, 6), ("ALE/BeamRider-v5", 4, 9), ("ALE/Pong-v5", 1, 6)])
def test_envpool_shows_the_same_frames_as_gymnasium(env_id, frame_skip, n_actions):
    # 200 steps of 2 envs, episodes cut at 70 steps: two autoresets each, truncation flags,
    # and env 1 acting differently from env 0 (the envs come back in env order).
    actions = np.random.default_rng(0).integers(0, n_actions, (200, 2))
    kwargs = dict(frame_skip=frame_skip, max_episode_steps=70, **FIXED_GAME)
    gym_slots = collect("gymnasium", env_id, actions, **kwargs)
    pool_slots = collect("envpool", env_id, actions, **kwargs)
    for key in SLOT_KEYS:
        np.testing.assert_array_equal(pool_slots[key], gym_slots[key], err_msg=key)
    assert gym_slots["obs"].dtype == np.uint8 and gym_slots["obs"].shape == (200, 2, 84, 84)
    assert gym_slots["truncated"].sum() == 4 and not gym_slots["valid"].all()
    assert (gym_slots["obs"][:, 0] != gym_slots["obs"][:, 1]).any()  # the envs differ
    if env_id == "ALE/Pong-v5" and frame_skip == 4:
        assert gym_slots["reward"].any()  # a point scored: rewards are compared, not zeros


@needs_envpool
def test_a_game_over_matches_but_its_final_frame():
    # This Pong game is lost at step 1007 (inside a frame skip); the next slot holds the
    # final frame: AtariPreprocessing stops capturing at the game over and repeats the
    # previous frame, envpool shows the last frame it captured. Flags, rewards and the next
    # episode (from slot 1009 on) are the same.
    actions = np.random.default_rng(1).integers(0, 6, (1020, 1))
    gym_slots = collect("gymnasium", "ALE/Pong-v5", actions, **FIXED_GAME)
    pool_slots = collect("envpool", "ALE/Pong-v5", actions, **FIXED_GAME)
    np.testing.assert_array_equal(np.flatnonzero(gym_slots["terminated"]), [1007])
    for key in SLOT_KEYS:
        if key != "obs":
            np.testing.assert_array_equal(pool_slots[key], gym_slots[key], err_msg=key)
    same = np.ones(len(actions), bool)
    same[1008] = False
    np.testing.assert_array_equal(pool_slots["obs"][same], gym_slots["obs"][same])
    np.testing.assert_array_equal(gym_slots["obs"][1008], gym_slots["obs"][1007])
    assert (pool_slots["obs"][1008] != pool_slots["obs"][1007]).any()


@needs_envpool
def test_envpool_reset_seed_replays_and_other_seeds_differ():
    # With random no-op starts and sticky actions, reset(seed) replays its episode as
    # gymnasium does (the pool is rebuilt with that seed); another seed draws other no-ops.
    envs = make_vector_env("ALE/Pong-v5", 2, asynchronous=False, seed=1, backend="envpool")
    try:
        actions = np.random.default_rng(0).integers(0, 6, (40, 2))

        def run(seed):
            first, _ = envs.reset(seed=seed)
            return np.stack([first] + [envs.step(a)[0] for a in actions])

        a, b, c = run(1), run(1), run(2)
    finally:
        envs.close()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert envs.action_space.shape == (2,) and envs.observation_space.shape == (2, 84, 84)


def test_backend_choice(monkeypatch):
    assert resolve_backend("CartPole-v1") == "gymnasium"
    assert resolve_backend("ALE/Pong-v5", "gymnasium") == "gymnasium"
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("ALE/Pong-v5", "cpp")
    with pytest.raises(EnvIdError, match="ALE/\\* Atari ids only"):
        make_vector_env("CartPole-v1", 1, asynchronous=False, seed=0, backend="envpool")
    # Without envpool, auto falls back and an explicit envpool says how to install it.
    monkeypatch.setattr(envpool_env, "envpool_installed", lambda: False)
    assert resolve_backend("ALE/Pong-v5") == "gymnasium"
    with pytest.raises(EnvIdError, match="pip install envpool"):
        env_spec("ALE/Pong-v5", backend="envpool")


@needs_envpool
def test_backend_choice_with_envpool():
    assert resolve_backend("ALE/Pong-v5") == "envpool"
    assert resolve_backend("ALE/Pong-v5", noop_max=0) == "gymnasium"  # envpool: >= 1 no-op
    with pytest.raises(EnvIdError, match="noop_max must be >= 1"):
        resolve_backend("ALE/Pong-v5", "envpool", noop_max=0)
    with pytest.raises(EnvIdError, match="no ALE v5 game"):
        resolve_backend("ALE/Tempest-v5", "envpool")
