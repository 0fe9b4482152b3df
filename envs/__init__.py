"""Host-side environments: gymnasium construction with BTR / Atari preprocessing, vector envs,
the replay-slot collector and evaluation rollouts. numpy only: no jax in this package."""

from envs.collector import (SLOT_KEYS, ActionHistory, BadEnvValue, Collector, EpisodeStats,
                            FrameStacker, replay_reward)
from envs.demos import DemoEpisode, DemoError, demo_slots, load_demos
from envs.evaluation import evaluate
from envs.make import (
    ACTION_SPACES,
    BACKENDS,
    ActionRepeat,
    CarRacingGasBrakeSteer,
    EnvIdError,
    EnvSpec,
    check_env_id,
    env_spec,
    exit_with_parent,
    join_obs,
    make_env,
    make_kwargs,
    make_vector_env,
    resolve_backend,
    split_obs,
    zeros_obs,
)
from envs.trackmania import GameConnectionError, is_trackmania

__all__ = [
    "ACTION_SPACES",
    "BACKENDS",
    "SLOT_KEYS",
    "ActionHistory",
    "ActionRepeat",
    "BadEnvValue",
    "CarRacingGasBrakeSteer",
    "Collector",
    "DemoEpisode",
    "DemoError",
    "EnvIdError",
    "EnvSpec",
    "EpisodeStats",
    "FrameStacker",
    "GameConnectionError",
    "check_env_id",
    "demo_slots",
    "env_spec",
    "exit_with_parent",
    "evaluate",
    "is_trackmania",
    "join_obs",
    "load_demos",
    "make_env",
    "make_kwargs",
    "make_vector_env",
    "replay_reward",
    "resolve_backend",
    "split_obs",
    "zeros_obs",
]
