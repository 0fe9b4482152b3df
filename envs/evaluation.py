"""Evaluation rollouts: a fixed number of complete episodes, raw returns and lengths, and
optionally a picture of every step (videos).

Host-only numpy (no jax); the policy is any callable on stacked observations (and, optionally,
the previous actions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from envs.collector import Collector, EpisodeStats
from envs.make import TRACKMANIA_ID, env_spec, make_vector_env, split_obs

__all__ = ["evaluate", "evaluate_episodes"]


def evaluate(act_fn: Callable[..., Any], env_id: str, **kwargs: Any) -> list[float]:
    """The raw returns of :func:`evaluate_episodes` (same arguments): ``num_episodes``
    floats, element ``i`` the return of sub-env ``i``'s first episode."""
    return [episode.return_ for episode in evaluate_episodes(act_fn, env_id, **kwargs)]


def evaluate_episodes(
    act_fn: Callable[..., Any],
    env_id: str,
    *,
    num_episodes: int,
    seed: int,
    frame_stack: int,
    asynchronous: bool = False,
    action_history: int = 0,
    action_space: str = "auto",
    on_frame: Callable[[int, np.ndarray], None] | None = None,
    **make_kwargs: Any,
) -> list[EpisodeStats]:
    """Run exactly ``num_episodes`` complete episodes and return their statistics.

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
        on_frame: if given, called as ``on_frame(i, picture)`` once after the reset and once
            after every step of episode ``i`` (its length + 1 calls, in order; episodes
            interleave), ``picture`` uint8 [H, W, 3] RGB: the env's ``rgb_array`` render
            (gymnasium envs, built with that render_mode), or uint8 [H, W] gray: the
            observation frame (TrackMania's images interface).
        **make_kwargs: passed to :func:`envs.make.make_env` (frame_skip, image_size,
            max_episode_steps).

    Returns:
        ``num_episodes`` :class:`envs.collector.EpisodeStats`; element ``i`` is sub-env ``i``'s
        first episode (raw return, length in agent steps).

    Raises:
        EnvIdError / ValueError: as :func:`envs.make.make_vector_env` and
            :class:`envs.collector.Collector`; ``on_frame`` for TrackMania without image
            observations (the lidar interfaces).
    """
    spec = env_spec(env_id, action_space=action_space, **make_kwargs)
    render = on_frame is not None and env_id != TRACKMANIA_ID
    if on_frame is not None and not render and not spec.is_image:
        raise ValueError(f"pictures of {env_id!r} need image observations: its frames are "
                         f"{spec.frame_dtype}{list(spec.frame_shape)} (trackmania.interface "
                         "images has them)")
    envs = make_vector_env(
        env_id, num_episodes, asynchronous=asynchronous, seed=seed, action_space=action_space,
        **(dict(render_mode="rgb_array") if render else {}), **make_kwargs,
    )
    collector = Collector(envs, spec, frame_stack, reward_clip=None, action_history=action_history)
    try:
        return _first_episodes(collector, act_fn, num_episodes, seed, action_history > 0,
                               _picture_source(envs, spec, collector, on_frame, render))
    finally:
        collector.close()


def _picture_source(envs: Any, spec: Any, collector: Collector,
                    on_frame: Callable[[int, np.ndarray], None] | None, render: bool
                    ) -> Callable[[list[int]], None]:
    """``show(episodes)``: hands ``on_frame`` the current picture of each listed sub-env (the
    vector env's render, or the newest observation frame); nothing without ``on_frame``."""
    def show(episodes: list[int]) -> None:
        if on_frame is None or not episodes:
            return
        pictures = envs.render() if render else split_obs(spec, collector.stacked_obs)[0][:, -1]
        for i in episodes:
            on_frame(i, np.asarray(pictures[i]))

    return show


def _first_episodes(collector: Collector, act_fn: Callable[..., Any], num_episodes: int,
                    seed: int, with_prev_actions: bool, show: Callable[[list[int]], None]
                    ) -> list[EpisodeStats]:
    """Step the collector's envs until each sub-env finished once; each sub-env's first
    episode, in sub-env order (see :func:`evaluate_episodes`)."""
    collector.reset(seed)
    finished: list[EpisodeStats | None] = [None] * num_episodes
    show(list(range(num_episodes)))
    while running := [i for i, ep in enumerate(finished) if ep is None]:
        obs = collector.stacked_obs
        actions = np.asarray(
            act_fn(obs, collector.prev_actions) if with_prev_actions else act_fn(obs))
        _, episodes = collector.step(actions)
        for ep in episodes:
            if finished[ep.env_index] is None:
                finished[ep.env_index] = ep
        show(running)
    return finished
