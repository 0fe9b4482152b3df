"""ALE Atari through envpool (C++ threads stepping the emulators), as a drop-in for the
gymnasium vector env that :func:`envs.make.make_vector_env` builds for ``ALE/*`` ids.

Same preprocessing as :func:`envs.make.make_env`'s AtariPreprocessing path: frame skip with a
max over the last two frames, ALE's palette grayscale, ``cv2.INTER_AREA`` resize to a square
``image_size``, one frame per step (the collector stacks), up to ``noop_max`` no-op starts,
sticky actions, no life-loss terminal, raw (unclipped) rewards, NEXT_STEP autoreset. With
no-op starts and sticky actions fixed (``noop_max=1``, ``repeat_action_probability=0``) both
paths give identical frames, rewards and flags (tests/test_envpool.py). Differences:

* Random streams: the no-op counts and sticky-action draws of a seed differ from gymnasium's
  (same distributions; sub-env ``i`` still uses seed ``seed + i``).
* The final frame of an episode that ends by game over (or, in gymnasium, ALE's frame cap):
  AtariPreprocessing stops capturing frames at the end (it repeats the previous step's frame,
  maxed with the second-to-last frame when the end comes on the last frame of the skip);
  envpool shows the last frame it captured. Flags, rewards and the next episode are the same.
* ALE's 108,000-frame cap counts the no-op frames in gymnasium; here it is
  ``ceil(108000 / frame_skip)`` agent steps after the no-ops (up to ``noop_max / frame_skip``
  agent steps later).
* Needs ``noop_max >= 1`` (envpool always takes at least one no-op; 0 crashes it).

Importing envpool takes seconds (it imports jax): this module imports it only when a pool is
built or a game is looked up.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

__all__ = ["EnvpoolAtari", "envpool_game", "envpool_installed"]

ENVPOOL_HINT = "install envpool (pip install envpool; it is in the [atari] extra)"


def envpool_installed() -> bool:
    """Whether the ``envpool`` package can be imported (checked without importing it)."""
    return importlib.util.find_spec("envpool") is not None


def envpool_game(env_id: str) -> str | None:
    """envpool's task id for an ``ALE/<Game>-v5`` id (``"ALE/Pong-v5"`` -> ``"Pong-v5"``), or
    None when the id is not of that form or envpool has no ROM for the game. Imports envpool:
    call it only when :func:`envpool_installed`."""
    if not (env_id.startswith("ALE/") and env_id.endswith("-v5")):
        return None
    task = env_id.removeprefix("ALE/")
    return task if task in _envpool_tasks() else None


@functools.cache
def _envpool_tasks() -> frozenset[str]:
    import envpool

    return frozenset(envpool.list_all_envs())


def _frame_cap(env_id: str) -> int:
    """ALE's per-episode frame cap of a registered v5 id (108,000: 30 minutes at 60 Hz)."""
    return int(gym.spec(env_id).kwargs.get("max_num_frames_per_episode", 108_000))


class EnvpoolAtari(gym.vector.VectorEnv):
    """``num_envs`` ALE games stepped by envpool's thread pool, with the interface of our
    gymnasium Atari vector envs: uint8 observations [E, image_size, image_size], int actions
    [E] in ``[0, n)`` (the game's minimal action set), float32 raw rewards, bool flags, NEXT_STEP
    autoreset (the step after an episode's end ignores its action and returns the reset frame,
    reward 0, no flags). ``step_async`` returns at once while the threads step, so a caller can
    work in between (:class:`envs.collector.Collector` does).

    Seeds: envpool fixes them when the pool is built (sub-env ``i``: ``seed + i``).
    ``reset(seed=s)`` on a pool already reset or stepped, or built with another seed, builds a
    new pool with seed ``s`` (as gymnasium re-seeds); ``reset()`` without a seed continues the
    random streams.

    The info dict is envpool's (``env_id``, ``lives``, ``elapsed_step``, ``reward``, ...); our
    loop reads none of its keys for Atari.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        *,
        seed: int,
        frame_skip: int = 4,
        image_size: int = 84,
        max_episode_steps: int | None = None,
        noop_max: int = 30,
        repeat_action_probability: float = 0.25,
    ):
        """Arguments as :func:`envs.make.make_vector_env` / :func:`envs.make.make_env`;
        ``max_episode_steps`` counts agent steps (None: ALE's frame cap, see the module doc).

        Raises:
          ValueError: an id envpool cannot run, or ``noop_max < 1``.
        """
        task = envpool_game(env_id)
        if task is None:
            raise ValueError(f"envpool has no ALE game for {env_id!r}")
        if noop_max < 1:
            raise ValueError(f"envpool needs noop_max >= 1, got {noop_max!r}")
        cap = math.ceil(_frame_cap(env_id) / frame_skip)
        self._make_kwargs = dict(
            task_id=task,
            env_type="gymnasium",
            num_envs=num_envs,
            batch_size=num_envs,  # synchronous: every step returns all envs, in env order
            stack_num=1,  # the collector and the replay rebuild the stacks
            frame_skip=frame_skip,
            img_height=image_size,
            img_width=image_size,
            gray_scale=True,
            use_inter_area_resize=True,  # cv2.INTER_AREA, as AtariPreprocessing
            noop_max=noop_max,
            use_fire_reset=False,  # AtariPreprocessing presses nothing at reset
            episodic_life=False,
            zero_discount_on_life_loss=False,
            reward_clip=False,  # the replay clips
            repeat_action_probability=float(repeat_action_probability),
            full_action_space=False,
            max_episode_steps=cap if max_episode_steps is None else min(max_episode_steps, cap),
        )
        self.num_envs = num_envs
        self._seed = seed
        self._pool = self._build(seed)
        self._fresh = True  # built with self._seed and not reset or stepped since
        self.single_observation_space = gym.spaces.Box(0, 255, (image_size, image_size),
                                                       np.uint8)
        self.single_action_space = gym.spaces.Discrete(int(self._pool.action_space.n))
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space,
                                                              num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.action_space.seed(seed)

    def _build(self, seed: int) -> Any:
        import envpool

        return envpool.make(seed=seed, **self._make_kwargs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset every sub-env (with ``seed``: sub-env ``i`` seeded ``seed + i``); returns
        (uint8 [E, H, W] frames, info). ``options`` are not supported."""
        if options:
            raise ValueError(f"EnvpoolAtari.reset takes no options, got {options!r}")
        if seed is not None and (seed != self._seed or not self._fresh):
            self._pool.close()
            self._pool, self._seed = self._build(seed), seed
        self._fresh = False
        obs, info = self._pool.reset()
        return obs[:, 0], info

    def step_async(self, actions: np.ndarray) -> None:
        """Send int actions [E] to the pool's threads and return at once."""
        self._fresh = False
        self._pool.send(np.asarray(actions, np.int32))

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Wait for the step sent by :meth:`step_async`: (frames [E, H, W] uint8, float32 raw
        rewards [E], terminated [E], truncated [E], info)."""
        obs, reward, terminated, truncated, info = self._pool.recv()
        # envpool calls a game that ends on the step of the time limit truncated only;
        # gymnasium's TimeLimit keeps it terminated as well.
        terminated = terminated | info["terminated"].astype(bool)
        return obs[:, 0], reward, terminated, truncated, info

    def step(self, actions: np.ndarray):
        """:meth:`step_async` then :meth:`step_wait`."""
        self.step_async(actions)
        return self.step_wait()

    def close_extras(self, **kwargs: Any) -> None:
        """Stop the pool's threads."""
        self._pool.close()
