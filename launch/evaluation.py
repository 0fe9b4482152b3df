"""The evaluation part of the loop: the greedy policy (noise off, ``agent.eval_epsilon``) on
fresh envs every ``training.eval_interval`` env steps (``envs.evaluate``), each at a multiple
of the interval (see :meth:`Evaluation.due`); and a video of one such episode every
``logging.video_interval`` env steps (:meth:`Evaluation.record_video`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

import envs
from launch import video
from launch.actor import make_act
from launch.wandb_log import RunWriter
from rl.config import Config

log = logging.getLogger("launch")

VIDEO_TAG = "eval/video"
"""Tag of the training videos: an animated GIF in TensorBoard's Images tab, the MP4 in W&B."""


def greedy_episodes(act: Callable[..., Any], state: Any, config: Config, key: jax.Array, *,
                    num_episodes: int, seed: int,
                    on_frame: Callable[[int, np.ndarray], None] | None = None
                    ) -> list[envs.EpisodeStats]:
    """``num_episodes`` episodes of ``state``'s greedy policy (noise off, exploration
    ``agent.eval_epsilon``) on fresh envs of ``config``'s env, episode ``i`` seeded
    ``seed + i`` (:func:`envs.evaluate_episodes`, whose ``on_frame`` gets the pictures).

    Args:
      act: the jitted act of :func:`launch.actor.make_act` for the agent of ``state``.
      key: PRNG key of the exploration (folded with a call counter).

    Returns:
      Each episode's raw return and length (in agent steps), in episode order.

    Raises:
      EnvIdError / ValueError: as :func:`envs.evaluate_episodes`; GameConnectionError
        (TrackMania) when the game is lost.
    """
    counter = iter(range(10**9))

    def policy(obs, prev=None):
        return np.asarray(act(state, obs, prev, key, next(counter), config.agent.eval_epsilon,
                              noisy=False))

    return envs.evaluate_episodes(
        policy, config.env.id, num_episodes=num_episodes, seed=seed,
        frame_stack=config.env.frame_stack, action_history=config.network.action_history,
        on_frame=on_frame, **envs.make_kwargs(config))


class Multiples:
    """The multiples of ``interval`` the run's env-step counter reaches, each once: the
    counter moves by up to num_envs per vector step, so it may pass one. ``interval`` 0:
    never. ``env_steps``: the counter at the start (the first is the next multiple above)."""

    def __init__(self, interval: int, env_steps: int):
        self.interval = interval
        self.next_step = (env_steps // interval + 1) * interval if interval else math.inf

    def due(self, env_steps: int) -> int | None:
        """The last multiple at or below ``env_steps`` if it was not due before, else None.
        Moves the next one on."""
        if env_steps < self.next_step:
            return None
        step = env_steps // self.interval * self.interval
        self.next_step = step + self.interval
        return step


class Evaluation:
    """When and how the run evaluates.

    Args:
      config: the run's config; agent: its learner object (``act``).
      key: PRNG key of the evaluations (folded with the evaluation step of each).
      env_steps: the run's env steps at the start (the next evaluation is the next multiple
        of eval_interval above it).
    """

    def __init__(self, config: Config, agent: Any, key: jax.Array, env_steps: int):
        self.config, self._key = config, key
        self._act = make_act(agent)
        self._evaluations = Multiples(config.training.eval_interval, env_steps)
        self._videos = Multiples(config.logging.video_interval, env_steps)

    def due(self, env_steps: int) -> int | None:
        """The evaluation step due at ``env_steps``: the last multiple of eval_interval at or
        below it, once per multiple; None when no multiple was reached since the last one
        (see :class:`Multiples`)."""
        return self._evaluations.due(env_steps)

    def video_due(self, env_steps: int) -> int | None:
        """The video step due at ``env_steps``, as :meth:`due` for logging.video_interval."""
        return self._videos.due(env_steps)

    def run(self, state: Any, env_steps: int) -> np.ndarray:
        """Returns [training.eval_episodes] of ``state``'s greedy policy, with the env seeds
        and exploration key of ``env_steps`` (the evaluation step of :meth:`due`)."""
        episodes = greedy_episodes(self._act, state, self.config,
                                   jax.random.fold_in(self._key, env_steps),
                                   num_episodes=self.config.training.eval_episodes,
                                   seed=self._seed(env_steps))
        return np.array([episode.return_ for episode in episodes])

    def _seed(self, env_steps: int) -> int:
        return self.config.seed + 100_003 + env_steps

    def record_video(self, state: Any, env_steps: int, run_dir: Path, writer: RunWriter
                     ) -> envs.EpisodeStats:
        """Record one greedy episode of ``state`` (seeded as the first episode of an
        evaluation at ``env_steps``) to ``run_dir/videos/<env_steps>.mp4`` and, as
        an animated GIF of at most :data:`launch.video.GIF_MAX_SIDE` pixels a side, to the
        run's ``writer`` under :data:`VIDEO_TAG` at step ``env_steps``; the MP4 also goes
        to W&B when the run logs there. Returns the episode's statistics.

        Raises:
          ModuleNotFoundError: the ``[video]`` extra is not installed (``launch/run.py``
            checks it before training starts).
        """
        config = self.config
        spec = envs.env_spec(config.env.id, **envs.make_kwargs(config))
        fps = envs.frame_rate(spec, frame_skip=config.env.frame_skip,
                              trackmania=config.trackmania)
        path = Path(run_dir) / "videos" / f"{env_steps}.mp4"
        small: list[np.ndarray] = []
        with video.Mp4Writer(path, fps) as mp4:
            def on_frame(_, picture: np.ndarray) -> None:
                mp4.append(picture)
                small.append(video.thumbnail(picture))

            episode, = greedy_episodes(self._act, state, config,
                                       jax.random.fold_in(self._key, env_steps), num_episodes=1,
                                       seed=self._seed(env_steps), on_frame=on_frame)
        video.add_gif(writer, VIDEO_TAG, small, fps, env_steps)
        writer.add_video_file(VIDEO_TAG, path, env_steps)
        log.info("video of env step %d: return %.2f in %d steps, %s", env_steps,
                 episode.return_, episode.length, path)
        return episode
