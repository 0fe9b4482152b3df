"""The evaluation part of the loop: the greedy policy (noise off, ``agent.eval_epsilon``) on
fresh envs every ``training.eval_interval`` env steps (``envs.evaluate``)."""

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
      key: PRNG key of the evaluations (folded with the env step of each).
      env_steps: the run's env steps at the start (the next evaluation is the next multiple
        of eval_interval).
    """

    def __init__(self, config: Config, agent: Any, key: jax.Array, env_steps: int):
        self.config, self._key = config, key
        self._act = make_act(agent)
        interval = config.training.eval_interval
        self.next_step = (env_steps // interval + 1) * interval if interval else math.inf

    def due(self, env_steps: int) -> bool:
        """Whether an evaluation is due at ``env_steps``; moves the next one on if so."""
        if env_steps < self.next_step:
            return False
        self.next_step += self.config.training.eval_interval
        return True

    def run(self, state: Any, env_steps: int) -> np.ndarray:
        """Returns [training.eval_episodes] of ``state``'s greedy policy, with the env seeds
        and exploration key of ``env_steps``."""
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
