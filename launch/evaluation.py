"""The evaluation part of the loop: the greedy policy (noise off, ``agent.eval_epsilon``) on
fresh envs every ``training.eval_interval`` env steps (``envs.evaluate``), each at a multiple
of the interval (see :meth:`Evaluation.due`)."""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

import envs
from launch.actor import make_act
from rl.config import Config


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
        interval = config.training.eval_interval
        self.next_step = (env_steps // interval + 1) * interval if interval else math.inf

    def due(self, env_steps: int) -> int | None:
        """The evaluation step due at ``env_steps``: the last multiple of eval_interval at or
        below it, once per multiple (the counter moves by up to num_envs per vector step, so
        it may pass the multiple); None when no multiple was reached since the last one.
        Moves the next one on."""
        if env_steps < self.next_step:
            return None
        interval = self.config.training.eval_interval
        step = env_steps // interval * interval
        self.next_step = step + interval
        return step

    def run(self, state: Any, env_steps: int) -> np.ndarray:
        """Returns [training.eval_episodes] of ``state``'s greedy policy, with the env seeds
        and exploration key of ``env_steps`` (the evaluation step of :meth:`due`)."""
        config = self.config
        counter = iter(range(10**9))
        key = jax.random.fold_in(self._key, env_steps)

        def policy(obs, prev=None):
            return np.asarray(self._act(state, obs, prev, key, next(counter),
                                        config.agent.eval_epsilon, noisy=False))

        return np.asarray(envs.evaluate(
            policy, config.env.id, num_episodes=config.training.eval_episodes,
            seed=config.seed + 100_003 + env_steps, frame_stack=config.env.frame_stack,
            action_history=config.network.action_history, **envs.make_kwargs(config)))
