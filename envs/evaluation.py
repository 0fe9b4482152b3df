"""Evaluation rollouts: a fixed number of complete episodes, raw returns.

Host-only numpy (no jax); the policy is any callable on stacked observations (and, optionally,
the previous actions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from envs.collector import Collector
from envs.make import env_spec, make_vector_env

__all__ = ["evaluate"]


def evaluate(
    act_fn: Callable[..., Any],
    env_id: str,
    *,
    num_episodes: int,
    seed: int,
    frame_stack: int,
    asynchronous: bool = False,
    action_history: int = 0,
    action_space: str = "auto",
    **make_kwargs: Any,
) -> list[float]:
    """Run exactly ``num_episodes`` complete episodes and return their raw (unclipped) returns.

    One sub-env per episode (sub-env ``i`` reset with seed ``seed + i``), all stepped together
    until each has finished once; steps an env takes after its first episode are ignored.
    An env whose episodes never end (no time limit, a policy that never fails) never returns.
    Observations are stacked (and previous actions kept) exactly as in
    :class:`envs.collector.Collector` (same helpers).

    Args:
        act_fn: ``act_fn(stacked_obs) -> actions``, or ``act_fn(stacked_obs, prev_actions)``
            when ``action_history > 0``; ``stacked_obs`` is a numpy array
            [num_episodes, frame_stack, *frame_shape] (uint8 images or float32 vectors),
            ``prev_actions`` int32 [num_episodes, action_history] (oldest first, -1 before the
            episode start), the result anything ``np.asarray`` turns into the actions:
            [num_episodes] integers for a discrete action space, [num_episodes, d] floats in
            [-1, 1] for a continuous one.
        env_id: gymnasium id, preprocessed by :func:`envs.make.make_env`.
        num_episodes: number of episodes (and sub-envs), >= 1.
        seed: base seed.
        frame_stack: frames per policy input.
        asynchronous: run the sub-envs in spawned worker processes (``AsyncVectorEnv``).
        action_history: number of previous actions passed to ``act_fn`` (0: not passed;
            discrete actions only).
        action_space: ``"auto"``, ``"discrete"`` or ``"continuous"`` (see
            :func:`envs.make.make_env`).
        **make_kwargs: passed to :func:`envs.make.make_env` (frame_skip, image_size,
            max_episode_steps).

    Returns:
        ``num_episodes`` floats; element ``i`` is the return of sub-env ``i``'s first episode.

    Raises:
        EnvIdError / ValueError: as :func:`envs.make.make_vector_env` and
            :class:`envs.collector.Collector`.
    """
    spec = env_spec(env_id, action_space=action_space, **make_kwargs)
    envs = make_vector_env(
        env_id, num_episodes, asynchronous=asynchronous, seed=seed, action_space=action_space,
        **make_kwargs,
    )
    collector = Collector(envs, spec, frame_stack, reward_clip=None, action_history=action_history)
    try:
        collector.reset(seed)
        returns: list[float | None] = [None] * num_episodes
        remaining = num_episodes
        while remaining:
            obs = collector.stacked_obs
            actions = np.asarray(
                act_fn(obs, collector.prev_actions) if action_history else act_fn(obs)
            )
            _, episodes = collector.step(actions)
            for ep in episodes:
                if returns[ep.env_index] is None:
                    returns[ep.env_index] = ep.return_
                    remaining -= 1
        return [float(r) for r in returns]
    finally:
        collector.close()
