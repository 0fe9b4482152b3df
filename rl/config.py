"""Immutable run configuration: nested frozen dataclasses, validated on construction.

Every field carries a docstring (shown by ``--help``) with its unit and allowed range.
Invalid values raise :class:`ConfigError`, whose message names the field, the value and
what is allowed, before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import Literal

TorsoName = Literal["impala", "small_cnn", "mlp", "auto"]
EpsilonSchedule = Literal["exponential", "linear"]


class ConfigError(ValueError):
    """A configuration value is out of range, of the wrong type, or inconsistent."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"invalid config value {field}={value!r}: {allowed}")


def _check(ok: bool, field: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(field, value, allowed)


def _positive_int(field: str, value: object) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool) and value > 0,
           field, value, "must be an integer > 0")


def _unit_interval(field: str, value: float, *, closed_low: bool = True,
                   closed_high: bool = True) -> None:
    low_ok = value >= 0.0 if closed_low else value > 0.0
    high_ok = value <= 1.0 if closed_high else value < 1.0
    lo, hi = ("[" if closed_low else "("), ("]" if closed_high else ")")
    _check(isinstance(value, (int, float)) and low_ok and high_ok,
           field, value, f"must be a number in {lo}0, 1{hi}")


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Which environment to run and how its observations are preprocessed."""

    id: str = "CarRacing-v3"
    """Gymnasium id (e.g. CarRacing-v3, CartPole-v1, ALE/Pong-v5 with the [atari] extra)."""
    num_envs: int = 8
    """Parallel env copies stepped together (one replay stream each); >= 1."""
    asynchronous: bool = True
    """Step the envs in worker subprocesses with shared-memory observations (else in-process)."""
    frame_skip: int = 4
    """Agent steps repeat each action this many frames (images only; CarRacing and ALE); >= 1."""
    frame_stack: int = 4
    """Observation frames stacked as the network input (rebuilt from single frames); >= 1."""
    image_size: int = 84
    """Side of the square grayscale frame, in pixels; >= 16."""
    max_episode_steps: int | None = None
    """Episode cap in agent steps (truncation, bootstrapped); None keeps the env's own limit."""
    reward_clip: float | None = 1.0
    """Rewards stored in replay are clipped to [-reward_clip, reward_clip]; None disables."""

    def __post_init__(self):
        _check(isinstance(self.id, str) and self.id.strip() != "", "env.id", self.id,
               "must be a non-empty gymnasium id such as CarRacing-v3")
        _positive_int("env.num_envs", self.num_envs)
        _positive_int("env.frame_skip", self.frame_skip)
        _positive_int("env.frame_stack", self.frame_stack)
        _check(isinstance(self.image_size, int) and self.image_size >= 16, "env.image_size",
               self.image_size, "must be an integer >= 16")
        if self.max_episode_steps is not None:
            _positive_int("env.max_episode_steps", self.max_episode_steps)
        if self.reward_clip is not None:
            _check(self.reward_clip > 0, "env.reward_clip", self.reward_clip,
                   "must be > 0, or None to disable clipping")


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Flax network: torso, IQN cosine embedding and (dueling, noisy) heads."""

    torso: TorsoName = "impala"
    """Feature extractor: impala (BTR), small_cnn (Nature DQN), mlp, or auto (mlp for vector
    observations, small_cnn for images)."""
    impala_channels: tuple[int, ...] = (16, 32, 32)
    """Impala stage widths before width_scale (BTR: 16/32/32)."""
    width_scale: int = 2
    """Multiplier on impala_channels (BTR: 2); >= 1."""
    spectral_norm: bool = True
    """Spectral normalisation on the residual-block convs of the Impala torso (BTR)."""
    pooled_size: int = 6
    """Impala adaptive max-pool output side (BTR: 6, so 6x6 cells); >= 1."""
    cnn_channels: tuple[int, ...] = (32, 64, 64)
    """small_cnn conv widths (8x8 s4, 4x4 s2, 3x3 s1; Mnih et al. 2015)."""
    mlp_hidden: tuple[int, ...] = (256, 256)
    """mlp torso hidden widths."""
    hidden_dim: int = 512
    """Width of the hidden layer of each head; >= 1."""
    cosine_embedding_dim: int = 64
    """Number of cosines cos(pi * i * tau) in the IQN quantile embedding; >= 1."""
    dueling: bool = True
    """Separate value and advantage heads (Wang et al. 2016)."""
    noisy: bool = True
    """Factorised NoisyDense heads (Fortunato et al. 2018)."""
    noisy_sigma0: float = 0.5
    """Initial noise scale sigma0 of NoisyDense (sigma = sigma0 / sqrt(fan_in)); > 0."""

    def __post_init__(self):
        for name in ("impala_channels", "cnn_channels", "mlp_hidden"):
            value = getattr(self, name)
            _check(len(value) > 0 and all(isinstance(c, int) and c > 0 for c in value),
                   f"network.{name}", value, "must be a non-empty list of integers > 0")
        _positive_int("network.width_scale", self.width_scale)
        _positive_int("network.pooled_size", self.pooled_size)
        _positive_int("network.hidden_dim", self.hidden_dim)
        _positive_int("network.cosine_embedding_dim", self.cosine_embedding_dim)
        _check(self.noisy_sigma0 > 0, "network.noisy_sigma0", self.noisy_sigma0, "must be > 0")


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """IQN learner: targets, Munchausen term, optimiser, target network and exploration."""

    gamma: float = 0.997
    """Discount per agent step, in [0, 1)."""
    n_step: int = 3
    """Steps of real reward before bootstrapping; >= 1."""
    num_tau_samples: int = 8
    """Quantile fractions sampled for the online network in the loss (N); >= 1."""
    num_tau_prime_samples: int = 8
    """Quantile fractions sampled for the target distribution (N'); >= 1."""
    num_quantile_samples: int = 8
    """Quantile fractions averaged to get Q when acting and selecting actions (K); >= 1."""
    kappa: float = 1.0
    """Quantile Huber threshold; > 0."""
    double_q: bool = True
    """Select the bootstrap action with the online net (van Hasselt et al. 2016). Unused when
    munchausen is on: M-IQN bootstraps from the softmax policy of the target net."""
    munchausen: bool = True
    """Munchausen-IQN target (Vieillard et al. 2020), as in BTR."""
    munchausen_tau: float = 0.03
    """Entropy temperature of the Munchausen softmax policy; > 0."""
    munchausen_alpha: float = 0.9
    """Weight of the scaled log-policy bonus, in [0, 1]."""
    munchausen_clip: float = -1.0
    """Lower clip l0 of tau * log pi(a|s) in the bonus (upper clip 0); < 0."""
    learning_rate: float = 1e-4
    """Adam step size (constant); in (0, 1)."""
    adam_eps: float = 1.95e-5
    """Adam epsilon (BTR: 0.005 / batch 256); > 0."""
    max_grad_norm: float = 10.0
    """Global-norm gradient clip; 0 disables clipping; >= 0."""
    target_update_period: int = 500
    """Hard copy of online into target params every this many grad steps; >= 1."""
    epsilon_schedule: EpsilonSchedule = "exponential"
    """exponential: eps = end + (start - end) * exp(-t / decay_steps) (BTR); linear: from
    start to end over decay_steps env steps."""
    epsilon_start: float = 1.0
    """Exploration epsilon at env step 0, in [0, 1]."""
    epsilon_end: float = 0.01
    """Asymptotic / final epsilon, in [0, 1]."""
    epsilon_decay_steps: int = 2_000_000
    """Env steps of the decay (exponential: time constant; linear: length); >= 1."""
    epsilon_off_fraction: float | None = 0.5
    """Epsilon is 0 from this fraction of total_steps on (BTR: 0.5, noisy nets only after);
    None keeps epsilon-greedy to the end."""
    eval_epsilon: float = 0.01
    """Epsilon during evaluation (noise off), in [0, 1]."""

    def __post_init__(self):
        _unit_interval("agent.gamma", self.gamma, closed_high=False)
        _positive_int("agent.n_step", self.n_step)
        for name in ("num_tau_samples", "num_tau_prime_samples", "num_quantile_samples",
                     "target_update_period", "epsilon_decay_steps"):
            _positive_int(f"agent.{name}", getattr(self, name))
        _check(self.kappa > 0, "agent.kappa", self.kappa, "must be > 0")
        _check(self.munchausen_tau > 0, "agent.munchausen_tau", self.munchausen_tau, "must be > 0")
        _unit_interval("agent.munchausen_alpha", self.munchausen_alpha)
        _check(self.munchausen_clip < 0, "agent.munchausen_clip", self.munchausen_clip,
               "must be < 0")
        _check(0 < self.learning_rate < 1, "agent.learning_rate", self.learning_rate,
               "must be in (0, 1)")
        _check(self.adam_eps > 0, "agent.adam_eps", self.adam_eps, "must be > 0")
        _check(self.max_grad_norm >= 0, "agent.max_grad_norm", self.max_grad_norm,
               "must be >= 0 (0 disables clipping)")
        for name in ("epsilon_start", "epsilon_end", "eval_epsilon"):
            _unit_interval(f"agent.{name}", getattr(self, name))
        if self.epsilon_off_fraction is not None:
            _unit_interval("agent.epsilon_off_fraction", self.epsilon_off_fraction,
                           closed_low=False)


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """Device replay: capacity and proportional prioritisation (Schaul et al. 2016)."""

    capacity: int = 131_072
    """Transitions stored over all env streams (each stream holds capacity // num_envs)."""
    prioritized: bool = True
    """Proportional prioritized replay; False samples uniformly."""
    priority_exponent: float = 0.2
    """PER alpha: priorities are (|TD| + eps) ** alpha; in [0, 1]."""
    importance_exponent_start: float = 0.4
    """PER beta at step 0, annealed linearly to 1 over total_steps; in [0, 1]."""
    priority_eps: float = 1e-6
    """Added to |TD| so no stored transition gets zero priority; > 0."""

    def __post_init__(self):
        _positive_int("replay.capacity", self.capacity)
        _unit_interval("replay.priority_exponent", self.priority_exponent)
        _unit_interval("replay.importance_exponent_start", self.importance_exponent_start)
        _check(self.priority_eps > 0, "replay.priority_eps", self.priority_eps, "must be > 0")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Loop sizes: steps, replay ratio, batch, evaluation and checkpoint cadence."""

    total_steps: int = 2_000_000
    """Env steps to train for (agent steps summed over envs; frames = steps * frame_skip)."""
    learning_starts: int = 20_000
    """Env steps collected before the first grad step (replay warm-up); >= 0."""
    replay_ratio: float = 1 / 64
    """Grad steps per env step (BTR: 1/64; fractions allowed); > 0."""
    batch_size: int = 256
    """Transitions per grad step; >= 1."""
    grad_steps_per_call: int = 1
    """Grad steps fused in one jitted device call (lax.scan); >= 1."""
    eval_interval: int = 50_000
    """Env steps between evaluations (noise off, eval_epsilon); 0 disables."""
    eval_episodes: int = 5
    """Episodes per evaluation; >= 1."""
    checkpoint_interval: int = 50_000
    """Env steps between checkpoints; >= 1."""
    keep_checkpoints: int = 3
    """Most recent checkpoints kept (the best by evaluation return is kept apart); >= 1."""
    save_replay: bool = True
    """Save the replay contents in checkpoints (else --resume refills the buffer)."""

    def __post_init__(self):
        _positive_int("training.total_steps", self.total_steps)
        _check(isinstance(self.learning_starts, int) and self.learning_starts >= 0,
               "training.learning_starts", self.learning_starts, "must be an integer >= 0")
        _check(isinstance(self.replay_ratio, (int, float)) and self.replay_ratio > 0
               and math.isfinite(self.replay_ratio),
               "training.replay_ratio", self.replay_ratio, "must be a finite number > 0")
        for name in ("batch_size", "grad_steps_per_call", "eval_episodes",
                     "checkpoint_interval", "keep_checkpoints"):
            _positive_int(f"training.{name}", getattr(self, name))
        _check(isinstance(self.eval_interval, int) and self.eval_interval >= 0,
               "training.eval_interval", self.eval_interval, "must be an integer >= 0")


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    """Where the run is written and how often metrics are logged."""

    run_dir: str | None = None
    """Run directory (config, TensorBoard events, checkpoints, console log); None picks
    runs/<algo>-<env>-s<seed>-<time>."""
    log_interval: int = 1_000
    """Env steps between TensorBoard scalar writes; >= 1."""
    progress_bar: bool = True
    """Show a tqdm progress bar with env steps/s, grad steps/s and recent returns."""

    def __post_init__(self):
        _positive_int("logging.log_interval", self.log_interval)


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run. Built from a preset (``--algo``) plus command-line overrides."""

    algo: str = "iqn_btr"
    """Preset name the run started from (informational; the fields below are what run)."""
    seed: int = 0
    """Seed of the network init, exploration, replay sampling and envs; >= 0."""
    env: EnvConfig = EnvConfig()
    network: NetworkConfig = NetworkConfig()
    agent: AgentConfig = AgentConfig()
    replay: ReplayConfig = ReplayConfig()
    training: TrainingConfig = TrainingConfig()
    logging: LoggingConfig = LoggingConfig()

    def __post_init__(self):
        _check(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed,
               "must be an integer >= 0")
        per_stream = self.replay.capacity // self.env.num_envs
        need = self.agent.n_step + self.env.frame_stack + 1
        _check(per_stream >= need, "replay.capacity", self.replay.capacity,
               f"must give each of the {self.env.num_envs} env streams at least n_step + "
               f"frame_stack + 1 = {need} slots (capacity >= {need * self.env.num_envs})")
        _check(self.training.batch_size <= self.replay.capacity, "training.batch_size",
               self.training.batch_size, f"must be <= replay.capacity ({self.replay.capacity})")


# --- readable text on disk -------------------------------------------------------------

def to_dict(config: Config) -> dict:
    """Plain nested dict of a config (tuples become lists), for JSON."""
    return dataclasses.asdict(config)


def save(config: Config, path: Path) -> None:
    """Write the resolved config as indented JSON text."""
    Path(path).write_text(json.dumps(to_dict(config), indent=2, sort_keys=False) + "\n")


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(prefix or "config", data, "must be a JSON object")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}", data[unknown[0]],
                          f"is not a field of {cls.__name__}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        elif typing.get_origin(hint) is tuple:
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def from_dict(data: dict) -> Config:
    """Rebuild (and validate) a Config from :func:`to_dict` output.

    Raises:
      ConfigError: unknown keys or invalid values, naming the field.
    """
    return _build(Config, data, "")


def load(path: Path) -> Config:
    """Read a config written by :func:`save`.

    Raises:
      FileNotFoundError: the file does not exist.
      ConfigError: the file is not valid JSON or holds invalid values.
    """
    text = Path(path).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(str(path), text[:60], f"is not valid JSON ({e})") from None
    return from_dict(data)
