"""The value-based learners by name, and :func:`make_agent`."""

from __future__ import annotations

from rl import schedules
from rl import tqc as tqc_lib
from rl.agent import (COUNT_METRIC_NAMES, METRIC_NAMES, SAMPLING_METRIC_NAMES, ValueAgent,
                      make_optimizer, make_replay, target_bound)
from rl.c51 import C51
from rl.config import Config, resolve_env_auto
from rl.dqn import DQN
from rl.iqn import IQN
from rl.tqc import TQC, make_tqc

LEARNERS: dict[str, type[ValueAgent]] = {"iqn": IQN, "c51": C51, "dqn": DQN}
"""agent.learner -> ValueAgent subclass (discrete actions); tqc is built by make_tqc."""


def make_agent(config: Config, num_actions: int, is_image: bool,
               feature_size: int = 0) -> ValueAgent | TQC:
    """Build the learner named by ``config.agent.learner`` for an env's action count (the
    action dimension for tqc), observation kind (images or vectors) and number of float
    features beside the frames (``EnvSpec.feature_size``; 0: plain frames). env.reward_clip
    and env.frame_stack auto are resolved by ``is_image`` (``launch/run.py`` has done so
    already; this serves callers that start from a preset), so ``agent.config`` holds numbers.

    Raises:
      ValueError: a torso that does not fit the observations (see nets.resolve_torso).
      ConfigError: agent.target_clamp auto with no reward clip (``resolve_env_auto``).
    """
    config = resolve_env_auto(config, is_image)
    if config.agent.learner == "tqc":
        return make_tqc(config, num_actions, is_image, feature_size)
    cls = LEARNERS[config.agent.learner]
    lr_schedule = schedules.learning_rate(config.agent)
    return cls(config=config, num_actions=num_actions,
               network=cls.build_network(config, num_actions, is_image, feature_size),
               optimizer=make_optimizer(config, lr_schedule), lr_schedule=lr_schedule,
               replay=make_replay(config), target_bound=target_bound(config, num_actions))


def update_metric_names(config: Config) -> tuple[str, ...]:
    """Names of the float32 scalar metrics an update call of ``config.agent.learner`` returns:
    the learner's METRIC_NAMES plus :data:`rl.agent.SAMPLING_METRIC_NAMES` and
    :data:`rl.agent.COUNT_METRIC_NAMES`."""
    names = tqc_lib.METRIC_NAMES if config.agent.learner == "tqc" else METRIC_NAMES
    return (*names, *SAMPLING_METRIC_NAMES, *COUNT_METRIC_NAMES)
