"""Immutable run configuration: nested frozen dataclasses, validated on construction.

Every field carries a docstring (shown by ``--help``) with its unit and allowed range.
Invalid values raise :class:`ConfigError`, whose message names the field, the value and
what is allowed, before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Literal

TorsoName = Literal["impala", "small_cnn", "mlp", "auto"]
NormName = Literal["none", "layer", "batch"]
LearnerName = Literal["iqn", "c51", "dqn", "tqc"]
ActionSpace = Literal["auto", "discrete", "continuous"]
NetworkDtype = Literal["float32", "bfloat16"]
EnvBackend = Literal["auto", "gymnasium", "envpool"]
EpsilonSchedule = Literal["exponential", "linear"]
EpsilonUnit = Literal["steps", "episodes"]
EpsilonDraw = Literal["env", "vector_step"]
WandbMode = Literal["online", "offline", "disabled"]
TargetUpdate = Literal["hard", "soft", "both"]
LrSchedule = Literal["constant", "linear", "cosine", "exponential"]
OptimizerName = Literal["adam", "adamw", "radam"]
ImportanceSchedule = Literal["linear", "increment"]
ReplaySampling = Literal["auto", "stratified", "iid"]
BadValueAction = Literal["error", "drop_episode"]
TmInterface = Literal["images", "lidar", "lidar_progress"]
TmBackend = Literal["game", "standin"]
DivergenceAction = Literal["warn", "stop", "rollback"]
ExpertKind = Literal["none", "scripted", "checkpoint", "playback"]
ExpertMode = Literal["step", "episode"]
RatioSchedule = Literal["linear", "exponential"]
LoopMode = Literal["auto", "lockstep", "bounded", "realtime"]
ActorBackend = Literal["auto", "thread", "process", "ray"]

HEALTH_CHECKS = ("nonfinite", "q_above_bound", "q_below_floor", "q_range_jump", "loss_spike",
                 "train_return_decline", "eval_return_decline", "alpha_runaway",
                 "grad_norm_swing", "clipping_high", "epsilon_early", "critics_identical",
                 "demo_fraction_stuck")
"""Names of the health monitor's checks (``rl/health.py``); ``health.ignore`` takes these."""

TM_ACTION_TOKENS = ("gas", "brake", "left", "right", "none")
"""Words a TrackMania discrete action is written with, joined by '+': 'gas', 'brake+left'."""
TM_DEFAULT_ACTIONS = ("gas", "gas+left", "gas+right", "none", "left", "right",
                      "brake", "brake+left", "brake+right", "brake+gas", "brake+gas+left",
                      "brake+gas+right")
"""The 12 = {gas, nothing, brake, brake+gas} x {straight, left, right} (seeds 000/001)."""


REMOVED_FIELDS = {
    "trackmania.learner_budget": "was removed: the learner no longer shares the game's 50 ms "
    "steps; it runs beside the actor (actors.mode=realtime, the default on TrackMania), which "
    "never waits for a grad step. Delete the field (from config.json on --resume); a learner "
    "that cannot keep training.replay_ratio shows it as perf/grad_credit_backlog",
}
"""Fields of earlier versions -> what replaced them; a config that sets one is refused."""


class ConfigError(ValueError):
    """A configuration value is out of range, of the wrong type, or inconsistent."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"invalid config value {field}={value!r}: {allowed}")


def _check(ok: bool, field: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(field, value, allowed)


def _is_int(value: object) -> bool:
    """Whether ``value`` is an integer (a bool is not, though Python counts it as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _type_ok(value: object, hint: object) -> bool:
    """Whether ``value`` is of the field type ``hint``: no bool for a number, a finite float,
    one of a Literal's values, a tuple or dict of members of the element types."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, option) for option in args)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return isinstance(value, tuple) and all(_type_ok(v, args[0]) for v in value)
        return isinstance(value, tuple) and len(value) == len(args) \
            and all(map(_type_ok, value, args))
    if origin is dict:
        return isinstance(value, dict) and all(_type_ok(k, args[0]) and _type_ok(v, args[1])
                                               for k, v in value.items())
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return isinstance(value, (int, hint)) and not isinstance(value, bool) \
            and (hint is int or math.isfinite(value))
    return isinstance(value, hint)  # str, None or a section


def _type_text(hint: object) -> str:
    """``hint`` in words, for a ConfigError: 'a finite number or 'auto' or None'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(option) for option in args)
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"a list, each {_type_text(args[0])}"
    if origin is tuple:
        return f"a list of {len(args)}: " + ", ".join(map(_type_text, args))
    if origin is dict:
        return f"a mapping of {_type_text(args[0])} to {_type_text(args[1])}"
    words = {bool: "true or false", int: "an integer", float: "a finite number",
             str: "a string", type(None): "None"}
    return words.get(hint) or f"a {hint.__name__} section"


def _check_types(section: object, prefix: str) -> None:
    """Every field holds a value of its declared type (:func:`_type_ok`), so a hand-edited
    config.json with a string for a bool or a number for a list is refused naming the field,
    and the range checks after this never hit a TypeError. Plain ``int`` fields are left to
    their range checks, whose messages say the range too."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        value, hint = getattr(section, f.name), hints[f.name]
        if hint is not int:
            _check(_type_ok(value, hint), f"{prefix}.{f.name}" if prefix else f.name, value,
                   f"must be {_type_text(hint)}")


def _is_host_port(address: object) -> bool:
    """Whether ``address`` is ``HOST:PORT`` with a non-empty host and a port in 1..65535."""
    if not isinstance(address, str) or ":" not in address:
        return False
    host, port = address.rsplit(":", 1)
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


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


AUTO_IMAGE = dict(reward_clip=1.0, frame_stack=4)
"""env.reward_clip and env.frame_stack that auto gives on image observations (Atari habits:
Mnih et al. 2015, BTR)."""
AUTO_VECTOR = dict(reward_clip=None, frame_stack=1)
"""... and on vector observations: raw rewards, one observation."""


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Which environment to run and how its observations are preprocessed."""

    id: str = "CarRacing-v3"
    """Gymnasium id (e.g. CarRacing-v3, CartPole-v1, ALE/Pong-v5 with the [atari] extra,
    Pendulum-v1 or LunarLanderContinuous-v3 with continuous actions)."""
    action_space: ActionSpace = "auto"
    """discrete, continuous (actions in [-1, 1]^d; CarRacing as tmrl's [gas, brake, steer]), or
    auto: the env's own kind, CarRacing discrete. The value learners need discrete, tqc
    continuous."""
    num_envs: int = 8
    """Parallel env copies stepped together (one replay stream each); >= 1."""
    asynchronous: bool = True
    """Step the envs in worker subprocesses with shared-memory observations (else in-process)."""
    frame_skip: int = 4
    """Agent steps repeat each action this many frames (images only; CarRacing and ALE); >= 1."""
    frame_stack: int | Literal["auto"] = "auto"
    """Observation frames stacked as the network input (rebuilt from single frames); >= 1, or
    auto: 4 for image observations (Atari, CarRacing, TrackMania's frames; BTR / DQN) and 1
    for vector observations (CartPole, Pendulum, LunarLander: the state is already whole).
    auto is resolved from the env when the run starts: --print-config and config.json show
    the number, and a resumed run keeps it."""
    image_size: int = 84
    """Side of the square grayscale frame, in pixels; >= 16."""
    max_episode_steps: int | None = None
    """Episode cap in agent steps (truncation, bootstrapped); None keeps the env's own limit."""
    no_progress_timeout: int | None = None
    """Training episodes are truncated (bootstrapped) after this many agent steps in a row
    without a positive reward, so a car stuck on the grass stops filling the replay with one
    hopeless stretch; evaluation episodes are never cut. None: off; >= 1; gymnasium envs only
    (TrackMania has trackmania.failure_countdown)."""
    reward_scale: float = 1.0
    """Rewards stored in replay are multiplied by this, then clipped; episode returns in the
    logs stay raw; > 0."""
    reward_clip: float | Literal["auto"] | None = "auto"
    """Rewards stored in replay are clipped to [-reward_clip, reward_clip] (after scaling);
    > 0; None disables; auto: 1.0 for image observations (Atari's clip) and None for vector
    observations (a LunarLander crash of -100 stays -100); resolved like frame_stack."""

    backend: EnvBackend = "auto"
    """Vector envs: envpool (C++ threads; ALE/* ids, envpool from the [atari] extra),
    gymnasium (AsyncVectorEnv / SyncVectorEnv per env.asynchronous), or auto: envpool where it
    can run the id, else gymnasium. Same frames on a fixed game; the no-op and sticky-action
    draws of a seed differ between the two."""
    on_bad_value: BadValueAction = "error"
    """A NaN or infinite reward, observation or feature from an env (never stored): error
    (save a checkpoint, then exit 3 naming the env id, env index, env step and field) or
    drop_episode (warn, drop that env's episode from the replay, reset that env with a fresh
    seed, count it in perf/bad_values). Observations of the wrong shape or dtype are always
    an error."""
    max_restarts: int = 3
    """Env worker failures (a worker process killed or crashed, an exception in an env's
    step) answered by rebuilding the vector env with a fresh seed, its partial episodes
    dropped, within env.restart_window env steps; one more saves a checkpoint and exits
    with code 3. >= 0 (0: the first failure stops the run). TrackMania's game worker has
    trackmania.reconnect_attempts instead."""
    restart_window: int = 100_000
    """Env steps over which env.max_restarts counts failures (an env that fails now and then
    over days keeps running; one that fails at once after every rebuild stops); >= 1."""

    def __post_init__(self):
        _check_types(self, "env")
        _check(isinstance(self.id, str) and self.id.strip() != "", "env.id", self.id,
               "must be a non-empty gymnasium id such as CarRacing-v3")
        _check(self.action_space in typing.get_args(ActionSpace), "env.action_space",
               self.action_space, f"must be one of {typing.get_args(ActionSpace)}")
        _check(self.backend in typing.get_args(EnvBackend), "env.backend", self.backend,
               f"must be one of {typing.get_args(EnvBackend)}")
        _positive_int("env.num_envs", self.num_envs)
        _positive_int("env.frame_skip", self.frame_skip)
        _check(self.frame_stack == "auto" or isinstance(self.frame_stack, int)
               and not isinstance(self.frame_stack, bool) and self.frame_stack > 0,
               "env.frame_stack", self.frame_stack, "must be an integer >= 1 or auto")
        _check(_is_int(self.image_size) and self.image_size >= 16, "env.image_size",
               self.image_size, "must be an integer >= 16")
        if self.max_episode_steps is not None:
            _positive_int("env.max_episode_steps", self.max_episode_steps)
        if self.no_progress_timeout is not None:
            _positive_int("env.no_progress_timeout", self.no_progress_timeout)
            _check(self.id != "trackmania", "env.no_progress_timeout", self.no_progress_timeout,
                   "must be None on TrackMania, which ends stalled episodes with "
                   "trackmania.failure_countdown")
        _check(isinstance(self.reward_scale, (int, float)) and self.reward_scale > 0
               and math.isfinite(self.reward_scale), "env.reward_scale", self.reward_scale,
               "must be a finite number > 0")
        if self.reward_clip not in (None, "auto"):
            _check(self.reward_clip > 0, "env.reward_clip", self.reward_clip,
                   "must be > 0, auto, or None to disable clipping")
        _check(_is_int(self.max_restarts) and self.max_restarts >= 0, "env.max_restarts",
               self.max_restarts, "must be an integer >= 0")
        _positive_int("env.restart_window", self.restart_window)

    def resolved(self, is_image: bool) -> EnvConfig:
        """This section with each auto field set for the env's observations: image frames
        (``EnvSpec.is_image``) get :data:`AUTO_IMAGE`, vectors :data:`AUTO_VECTOR`; explicit
        values stay."""
        auto = AUTO_IMAGE if is_image else AUTO_VECTOR
        return dataclasses.replace(self, **{name: value for name, value in auto.items()
                                            if getattr(self, name) == "auto"})


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Flax network: torso (with its normalisation), action-history input, IQN cosine
    embedding and (dueling, noisy) heads."""

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
    norm: NormName = "none"
    """Normalisation after each torso conv / dense layer (Impala: after each stage's first
    conv): none, layer (LayerNorm) or batch (BatchNorm, as in the seeds' TM20 network; its
    running statistics live in the train state and update only in training)."""
    action_history: int = 0
    """Number of previous actions fed to the network as extra features (seeds 000/001 used 4);
    0 disables; >= 0."""
    action_history_dim: int = 256
    """Width of the Dense + ReLU embedding of the one-hot previous actions, concatenated to the
    torso features (seeds: action_history_hidden_dim 256); >= 1."""
    hidden_dim: int = 512
    """Width of the hidden layer of each head; >= 1."""
    cosine_embedding_dim: int = 64
    """Number of cosines cos(pi * i * tau) in the IQN quantile embedding (IQN only); >= 1."""
    dueling: bool = True
    """Separate value and advantage heads (Wang et al. 2016)."""
    noisy: bool = True
    """Factorised NoisyDense heads (Fortunato et al. 2018)."""
    noisy_sigma0: float = 0.5
    """Initial noise scale sigma0 of NoisyDense (sigma = sigma0 / sqrt(fan_in)); > 0."""
    feature_dim: int = 64
    """Width of the Dense + ReLU embedding of the env's float features (TrackMania: speed,
    gear, rpm, previous actions), concatenated to the torso output; unused by envs without
    features; >= 1."""
    dtype: NetworkDtype = "float32"
    """Computation dtype of the network's layers: float32, or bfloat16 (mixed precision:
    parameters, optimiser state, normalisation statistics, the network's outputs, losses and
    targets stay float32; convolutions and matmuls take bfloat16 inputs). bfloat16 is the
    main lever on GPUs and TPUs; on CPUs without bfloat16 units it is slower."""

    def __post_init__(self):
        _check_types(self, "network")
        for name in ("impala_channels", "cnn_channels", "mlp_hidden"):
            value = getattr(self, name)
            _check(len(value) > 0 and all(isinstance(c, int) and c > 0 for c in value),
                   f"network.{name}", value, "must be a non-empty list of integers > 0")
        _positive_int("network.width_scale", self.width_scale)
        _positive_int("network.pooled_size", self.pooled_size)
        _positive_int("network.hidden_dim", self.hidden_dim)
        _positive_int("network.cosine_embedding_dim", self.cosine_embedding_dim)
        _positive_int("network.feature_dim", self.feature_dim)
        _check(self.norm in typing.get_args(NormName), "network.norm", self.norm,
               f"must be one of {typing.get_args(NormName)}")
        _check(_is_int(self.action_history) and self.action_history >= 0,
               "network.action_history", self.action_history, "must be an integer >= 0")
        _positive_int("network.action_history_dim", self.action_history_dim)
        _check(self.noisy_sigma0 > 0, "network.noisy_sigma0", self.noisy_sigma0, "must be > 0")
        _check(self.dtype in typing.get_args(NetworkDtype), "network.dtype", self.dtype,
               f"must be one of {typing.get_args(NetworkDtype)}")


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Value-based learner: targets, target network, optimiser, schedules and exploration.

    Every value-based learner (iqn, c51, dqn) honours every field below except those marked
    as belonging to one learner.
    """

    learner: LearnerName = "iqn"
    """iqn (implicit quantiles, Dabney et al. 2018), c51 (categorical, Bellemare et al. 2017),
    dqn (scalar Q, Mnih et al. 2015) for discrete actions; tqc (Kuznetsov et al. 2020, the
    ``tqc`` section) for continuous actions. TQC also reads gamma, n_step, kappa, target_tau
    (Polyak every update), target_clamp (backup clip) and adam_eps from this section."""
    gamma: float = 0.997
    """Discount per agent step, in [0, 1)."""
    n_step: int = 3
    """Steps of real reward before bootstrapping; >= 1."""
    double_q: bool = True
    """Select the bootstrap action with the online net (van Hasselt et al. 2016). Unused when
    munchausen is on: M-IQN bootstraps from the softmax policy of the target net."""
    num_tau_samples: int = 8
    """IQN: quantile fractions sampled for the online network in the loss (N); >= 1."""
    num_tau_prime_samples: int = 8
    """IQN: quantile fractions sampled for the target distribution (N'); >= 1."""
    num_quantile_samples: int = 8
    """IQN: quantile fractions averaged to get Q when acting and selecting actions (K); >= 1."""
    kappa: float = 1.0
    """Huber threshold of the IQN quantile loss and of the dqn Huber loss; > 0."""
    munchausen: bool = True
    """IQN: Munchausen-IQN target (Vieillard et al. 2020), as in BTR."""
    munchausen_tau: float = 0.03
    """Entropy temperature of the Munchausen softmax policy; > 0."""
    munchausen_alpha: float = 0.9
    """Weight of the scaled log-policy bonus, in [0, 1]."""
    munchausen_clip: float = -1.0
    """Lower clip l0 of tau * log pi(a|s) in the bonus (upper clip 0); < 0."""
    num_atoms: int = 51
    """C51: atoms of the fixed return support (Bellemare et al. 2017: 51); >= 2."""
    v_min: float = -10.0
    """C51: lowest atom of the support (Rainbow: -10)."""
    v_max: float = 10.0
    """C51: highest atom of the support (Rainbow: 10); > v_min."""
    td_loss: Literal["huber", "mse"] = "huber"
    """dqn: loss on the TD error, huber (threshold kappa) or mse (0.5 * td^2)."""
    target_clamp: float | Literal["auto"] | None = None
    """Clamp the bootstrapped backup (every target sample) to [-bound, bound]; auto uses
    r_max / (1 - gamma) with r_max = env.reward_clip (a number: env.reward_clip auto is None
    on vector observations), plus munchausen_tau * log(A) per step with Munchausen; None
    disables (seed 003's emergency brake)."""
    target_update: TargetUpdate = "hard"
    """hard: copy online into target every target_update_period optimizer updates (BTR, seed
    000); soft: Polyak blend every target_soft_period updates; both: the blend plus a hard
    refresh every target_update_period (seed 003)."""
    target_update_period: int = 500
    """Optimizer updates (not env steps) between hard copies (hard and both modes); >= 1.
    The loop runs training.replay_ratio grad steps per env step and an update takes
    grad_accumulation grad steps, so after training.learning_starts a copy comes every
    target_update_period * grad_accumulation / replay_ratio env steps (Rainbow: 2000 * 1 /
    0.25 = 8,000 env steps = 32,000 frames at frame_skip 4). From a period P in env steps:
    target_update_period = P * replay_ratio / grad_accumulation. train/target_age counts
    updates too."""
    target_tau: float = 0.005
    """Polyak coefficient: target <- tau * online + (1 - tau) * target (soft and both modes);
    in (0, 1]."""
    target_soft_period: int = 1
    """Optimizer updates (not env steps) between Polyak blends (Linesight: 4); >= 1: a blend
    every target_soft_period * grad_accumulation / replay_ratio env steps, as for
    target_update_period."""
    optimizer: OptimizerName = "adam"
    """adam (Kingma & Ba 2015), adamw (decoupled weight decay, Loshchilov & Hutter 2019) or
    radam (Liu et al. 2020, with decoupled weight decay when weight_decay > 0)."""
    learning_rate: float = 1e-4
    """Step size (the peak when a schedule is used); in (0, 1)."""
    adam_eps: float = 1.95e-5
    """Epsilon of the Adam-family optimiser (BTR: 0.005 / batch 256); > 0."""
    weight_decay: float = 0.0
    """Decoupled weight decay coefficient (adamw, radam; multiplied by the current lr);
    >= 0."""
    lr_schedule: LrSchedule = "constant"
    """constant (BTR, seed 000), or decay from learning_rate to lr_end over lr_decay_steps:
    linear, cosine or exponential; all after lr_warmup_steps of linear warm-up from 0."""
    lr_end: float = 1e-5
    """Learning rate at the end of the decay (held afterwards); in (0, 1)."""
    lr_decay_steps: int = 1_000_000
    """Optimizer updates over which the learning rate decays (after the warm-up); >= 1."""
    lr_warmup_steps: int = 0
    """Optimizer updates of linear warm-up from 0 to learning_rate; >= 0."""
    max_grad_norm: float = 10.0
    """Global-norm gradient clip; 0 disables clipping; >= 0."""
    grad_accumulation: int = 1
    """Micro-batches (grad steps) whose mean gradient makes one optimizer update
    (optax.MultiSteps; seed 003 fix: 4). Target periods and lr schedules count optimizer
    updates, one per grad_accumulation / training.replay_ratio env steps; >= 1."""
    epsilon_schedule: EpsilonSchedule = "exponential"
    """exponential: eps = end + (start - end) * exp(-t / decay_steps) (BTR); linear: from
    start to end over decay_steps, then end."""
    epsilon_unit: EpsilonUnit = "steps"
    """What t counts in the epsilon schedule and cutoff: env steps, or finished episodes
    (kept only to reproduce seed 000's failed setting: episode lengths grow as the agent
    improves, so exploration ends far too early; a warning is logged)."""
    epsilon_draw: EpsilonDraw = "env"
    """Who shares an epsilon-greedy draw: env (each env of the vector draws its own) or
    vector_step (one draw per vector step: every env explores, or none does; SB3's
    DQN.predict). Each env explores with probability epsilon either way; only the
    correlation across envs differs (on CartPole with 4 envs it mattered: README,
    Benchmarks). Evaluation runs one env, where the two are the same."""
    epsilon_start: float = 1.0
    """Exploration epsilon at t = 0, in [0, 1]."""
    epsilon_end: float = 0.01
    """Asymptotic / final epsilon, in [0, 1]."""
    epsilon_decay_steps: int = 2_000_000
    """Length of the decay in epsilon_unit (exponential: time constant; linear: length);
    >= 1."""
    epsilon_cutoff: int | None = None
    """From this t (in epsilon_unit) on, epsilon is epsilon_after_cutoff (seed 000: 25M
    steps); None: no cutoff; >= 0."""
    epsilon_after_cutoff: Literal["zero", "end"] = "zero"
    """Epsilon after epsilon_cutoff: zero (noisy nets / greedy only) or epsilon_end."""
    epsilon_off_fraction: float | None = 0.5
    """Epsilon is 0 from this fraction of total_steps on (BTR: 0.5, noisy nets only after);
    None keeps epsilon-greedy to the end."""
    eval_epsilon: float = 0.01
    """Epsilon during evaluation (noise off), in [0, 1]."""
    random_warmup: bool = False
    """Act uniformly at random until learning starts (the SAC / TQC warm-up)."""

    def __post_init__(self):
        _check_types(self, "agent")
        _check(self.learner in typing.get_args(LearnerName), "agent.learner", self.learner,
               f"must be one of {typing.get_args(LearnerName)}")
        _unit_interval("agent.gamma", self.gamma, closed_high=False)
        for name in ("n_step", "num_tau_samples", "num_tau_prime_samples",
                     "num_quantile_samples", "target_update_period", "target_soft_period",
                     "epsilon_decay_steps", "lr_decay_steps", "grad_accumulation"):
            _positive_int(f"agent.{name}", getattr(self, name))
        _check(self.kappa > 0, "agent.kappa", self.kappa, "must be > 0")
        _check(not (self.munchausen and self.learner != "iqn"), "agent.munchausen",
               self.munchausen, f"is only implemented for learner 'iqn' (learner is "
               f"{self.learner!r}); set --agent.no-munchausen")
        _check(self.munchausen_tau > 0, "agent.munchausen_tau", self.munchausen_tau, "must be > 0")
        _unit_interval("agent.munchausen_alpha", self.munchausen_alpha)
        _check(self.munchausen_clip < 0, "agent.munchausen_clip", self.munchausen_clip,
               "must be < 0")
        _check(_is_int(self.num_atoms) and self.num_atoms >= 2, "agent.num_atoms",
               self.num_atoms, "must be an integer >= 2")
        _check(self.v_max > self.v_min, "agent.v_max", self.v_max,
               f"must be > agent.v_min ({self.v_min})")
        _check(self.td_loss in ("huber", "mse"), "agent.td_loss", self.td_loss,
               "must be huber or mse")
        if self.target_clamp is not None and self.target_clamp != "auto":
            _check(isinstance(self.target_clamp, (int, float)) and self.target_clamp > 0,
                   "agent.target_clamp", self.target_clamp, "must be a number > 0, auto or None")
        _check(self.target_update in typing.get_args(TargetUpdate), "agent.target_update",
               self.target_update, f"must be one of {typing.get_args(TargetUpdate)}")
        _unit_interval("agent.target_tau", self.target_tau, closed_low=False)
        _check(self.optimizer in typing.get_args(OptimizerName), "agent.optimizer",
               self.optimizer, f"must be one of {typing.get_args(OptimizerName)}")
        _check(0 < self.learning_rate < 1, "agent.learning_rate", self.learning_rate,
               "must be in (0, 1)")
        _check(self.adam_eps > 0, "agent.adam_eps", self.adam_eps, "must be > 0")
        _check(self.weight_decay >= 0, "agent.weight_decay", self.weight_decay, "must be >= 0")
        _check(not (self.optimizer == "adam" and self.weight_decay > 0), "agent.weight_decay",
               self.weight_decay, "needs --agent.optimizer adamw or radam (adam has no "
               "decoupled weight decay)")
        _check(self.lr_schedule in typing.get_args(LrSchedule), "agent.lr_schedule",
               self.lr_schedule, f"must be one of {typing.get_args(LrSchedule)}")
        _check(0 < self.lr_end < 1, "agent.lr_end", self.lr_end, "must be in (0, 1)")
        _check(_is_int(self.lr_warmup_steps) and self.lr_warmup_steps >= 0,
               "agent.lr_warmup_steps", self.lr_warmup_steps, "must be an integer >= 0")
        _check(self.max_grad_norm >= 0, "agent.max_grad_norm", self.max_grad_norm,
               "must be >= 0 (0 disables clipping)")
        _check(self.epsilon_unit in typing.get_args(EpsilonUnit), "agent.epsilon_unit",
               self.epsilon_unit, f"must be one of {typing.get_args(EpsilonUnit)}")
        _check(self.epsilon_draw in typing.get_args(EpsilonDraw), "agent.epsilon_draw",
               self.epsilon_draw, f"must be one of {typing.get_args(EpsilonDraw)}")
        for name in ("epsilon_start", "epsilon_end", "eval_epsilon"):
            _unit_interval(f"agent.{name}", getattr(self, name))
        if self.epsilon_cutoff is not None:
            _check(_is_int(self.epsilon_cutoff) and self.epsilon_cutoff >= 0,
                   "agent.epsilon_cutoff", self.epsilon_cutoff, "must be an integer >= 0 or None")
        _check(self.epsilon_after_cutoff in ("zero", "end"), "agent.epsilon_after_cutoff",
               self.epsilon_after_cutoff, "must be zero or end")
        if self.epsilon_off_fraction is not None:
            _unit_interval("agent.epsilon_off_fraction", self.epsilon_off_fraction,
                           closed_low=False)


@dataclasses.dataclass(frozen=True)
class TQCConfig:
    """TQC (Kuznetsov et al. 2020): a critic ensemble of quantile networks, a tanh-Gaussian
    actor and an entropy temperature. Used when agent.learner is tqc."""

    num_critics: int = 2
    """Critics in the ensemble (N; paper 5), each initialised independently; >= 1."""
    shared_critic_init: bool = False
    """Initialise every critic with the same weights: seed 004's bug (its twins shared a
    seed, so q1 == q2 all run long), kept to reproduce it (benchmarks/stability.py)."""
    num_quantiles: int = 25
    """Quantiles per critic (M; paper 25); >= 1."""
    top_quantiles_to_drop: int = 2
    """Largest target atoms dropped per critic (k; paper 2, seed 004: 8), so N * (M - k) of the
    pooled, sorted atoms remain; in [0, num_quantiles)."""
    critic_hidden: tuple[int, ...] = (512, 512, 512)
    """Hidden widths of each critic MLP over [features, action] (paper: 3 x 512)."""
    actor_hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the actor MLP (paper: 2 x 256)."""
    actor_learning_rate: float = 3e-4
    """Adam step size of the actor; in (0, 1)."""
    critic_learning_rate: float = 3e-4
    """Adam step size of the critics; in (0, 1)."""
    alpha_learning_rate: float = 3e-4
    """Adam step size of log(alpha) when learned (seed 004 first fix: 5e-5); in (0, 1)."""
    learn_alpha: bool = True
    """Learn the entropy temperature toward target_entropy (Haarnoja et al. 2018); False keeps
    alpha fixed (seed 004 fix: fixed 0.01)."""
    alpha: float = 1.0
    """Entropy temperature: fixed value, or the initial one when learned; > 0."""
    target_entropy: float | None = None
    """Entropy the learned alpha steers toward; None: -dim(A)."""
    actor_grad_clip: float = 0.0
    """Global-norm gradient clip of the actor (seed 004: 1.0); 0 disables; >= 0."""
    critic_grad_clip: float = 0.0
    """Global-norm gradient clip of the critics (seed 004: 1.0); 0 disables; >= 0."""
    policy_delay: int = 1
    """Actor and alpha update every this many critic updates; >= 1."""
    log_std_min: float = -20.0
    """Lower clip of the actor's log standard deviation."""
    log_std_max: float = 2.0
    """Upper clip of the actor's log standard deviation; > log_std_min."""

    def __post_init__(self):
        _check_types(self, "tqc")
        for name in ("num_critics", "num_quantiles", "policy_delay"):
            _positive_int(f"tqc.{name}", getattr(self, name))
        _check(_is_int(self.top_quantiles_to_drop)
               and 0 <= self.top_quantiles_to_drop < self.num_quantiles,
               "tqc.top_quantiles_to_drop", self.top_quantiles_to_drop,
               f"must be an integer in [0, tqc.num_quantiles = {self.num_quantiles})")
        for name in ("critic_hidden", "actor_hidden"):
            value = getattr(self, name)
            _check(len(value) > 0 and all(isinstance(c, int) and c > 0 for c in value),
                   f"tqc.{name}", value, "must be a non-empty list of integers > 0")
        for name in ("actor_learning_rate", "critic_learning_rate", "alpha_learning_rate"):
            _check(0 < getattr(self, name) < 1, f"tqc.{name}", getattr(self, name),
                   "must be in (0, 1)")
        _check(self.alpha > 0, "tqc.alpha", self.alpha, "must be > 0")
        for name in ("actor_grad_clip", "critic_grad_clip"):
            _check(getattr(self, name) >= 0, f"tqc.{name}", getattr(self, name),
                   "must be >= 0 (0 disables clipping)")
        _check(self.log_std_max > self.log_std_min, "tqc.log_std_max", self.log_std_max,
               f"must be > tqc.log_std_min ({self.log_std_min})")


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """Device replay: capacity and proportional prioritisation (Schaul et al. 2016)."""

    capacity: int = 131_072
    """Transitions stored over all env streams (each of the env.num_envs x
    actors.num_actors x learner.num_processes streams holds capacity // streams)."""
    prioritized: bool = True
    """Proportional prioritized replay; False samples uniformly."""
    priority_exponent: float = 0.2
    """PER alpha: priorities are (|TD| + eps) ** alpha; in [0, 1]."""
    importance_exponent_start: float = 0.4
    """PER beta at the start of training; in [0, 1]."""
    importance_exponent_schedule: ImportanceSchedule = "linear"
    """How beta reaches 1: linear over total_steps env steps (Schaul et al. 2016, BTR), or
    increment: + importance_exponent_increment per grad step, capped at 1 (seed 000)."""
    importance_exponent_increment: float = 0.001
    """Beta added per grad step with the increment schedule (seed 000: 0.001); > 0."""
    priority_eps: float = 1e-6
    """Added to |TD| so no stored transition gets zero priority; > 0."""
    sampling: ReplaySampling = "auto"
    """How a batch's B draws are made: stratified (one draw in each of B equal segments of
    the sampling mass, Schaul et al. 2016, App. B.2.1), iid (independent draws, as SB3,
    sbx and CleanRL sample uniform replay) or auto: stratified with PER, iid without. On
    TQC Pendulum (5 seeds) stratified uniform batches kept the critic loss 7-18% below
    sbx's from 3,500 env steps on; iid batches 1-9%."""

    @property
    def stratified(self) -> bool:
        """Whether batches are drawn stratified (``sampling``, auto resolved)."""
        return self.sampling == "stratified" or (self.sampling == "auto" and self.prioritized)

    def __post_init__(self):
        _check_types(self, "replay")
        _positive_int("replay.capacity", self.capacity)
        _unit_interval("replay.priority_exponent", self.priority_exponent)
        _unit_interval("replay.importance_exponent_start", self.importance_exponent_start)
        _check(self.importance_exponent_schedule in typing.get_args(ImportanceSchedule),
               "replay.importance_exponent_schedule", self.importance_exponent_schedule,
               f"must be one of {typing.get_args(ImportanceSchedule)}")
        _check(self.importance_exponent_increment > 0, "replay.importance_exponent_increment",
               self.importance_exponent_increment, "must be > 0")
        _check(self.priority_eps > 0, "replay.priority_eps", self.priority_eps, "must be > 0")


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Recorded demonstrations injected into the replay at the start of a run (seed 004's
    PLAYER_RUNS section). The episode files and how to record them: ``envs/demos.py`` and
    ``launch/record_demos.py``."""

    path: str | None = None
    """Directory of demo episodes (``episode_*.npz``) recorded on this run's env with the
    same frame_skip; None: no demos."""
    injection_repeat: int = 1
    """Times the whole demo set is written into the replay (seed 004
    DEMO_INJECTION_REPEAT); >= 1."""
    sampling_weight: float = 1.0
    """Initial demo sampling weight w0: a demo transition is drawn w0 times as often as an
    agent transition of equal priority (seed 004 DEMO_SAMPLING_WEIGHT); > 0."""
    weight_decay_samples: int = 200_000
    """Collected env steps n over which the weight decays linearly to 1:
    ``w = 1 + (w0 - 1) * (1 - min(1, n / weight_decay_samples))`` (seed 004
    DEMO_WEIGHT_DECAY_SAMPLES; a fixed weight kept demos at 93% of every batch); >= 1."""

    def __post_init__(self):
        _check_types(self, "demos")
        _check(self.path is None or isinstance(self.path, str) and self.path != "",
               "demos.path", self.path, "must be a directory path or None")
        _positive_int("demos.injection_repeat", self.injection_repeat)
        _check(self.sampling_weight > 0, "demos.sampling_weight", self.sampling_weight,
               "must be > 0")
        _positive_int("demos.weight_decay_samples", self.weight_decay_samples)


@dataclasses.dataclass(frozen=True)
class ExpertConfig:
    """Expert curriculum (seed 003): during collection an expert policy takes each env step
    with probability ``expert_ratio(step)`` (``rl.schedules.expert_ratio``), the agent the
    others; the transitions are stored with an ``is_expert`` flag and learned from like any
    other (times loss_weight). How to set it up: ``docs/expert.md``."""

    kind: ExpertKind = "none"
    """none; scripted: an imported ``module:function`` policy (obs -> actions, batched; e.g.
    envs.scripted:cartpole); checkpoint: the policy of another run of this project (any
    preset) on the same env; playback: the actions of recorded demonstrations replayed open
    loop from each episode's start (deterministic envs: TrackMania time trials)."""
    source: str | None = None
    """What the kind names: the ``module:function``, the run directory (its best-by-
    evaluation checkpoint, else best-by-training, else the latest), or the demo directory
    (``envs/demos.py`` format)."""
    mode: ExpertMode = "step"
    """step: every env step is drawn (episodes mix expert and agent steps); episode: the
    driver of each whole episode is drawn at its start (agent-only or expert episodes)."""
    ratio_start: float = 0.95
    """Probability of an expert step (or episode) at env step 0 (seed 003: 0.95); in [0, 1]."""
    ratio_floor: float = 0.10
    """The ratio never falls below this (seed 003: 0.10, later 0.05); in [0, ratio_start]."""
    ratio_decay_steps: int = 1_000_000
    """Env steps of the decay: linear from ratio_start to ratio_floor over them;
    exponential: floor + (start - floor) * exp(-t / ratio_decay_steps); >= 1."""
    ratio_schedule: RatioSchedule = "linear"
    """Shape of the decay: linear or exponential."""
    floor_raise: float | None = None
    """A temporarily higher floor (seed 003: "increase expert ratio temporarily 10% -> 20%"),
    for floor_raise_steps env steps from the step the run starts or resumes with it, e.g.
    ``--resume RUN --expert.floor-raise 0.2``; None: no raise; in [0, 1]."""
    floor_raise_steps: int = 1_000_000
    """Env steps the raised floor lasts; >= 1."""
    loss_weight: float = 1.0
    """Loss weight of expert transitions relative to the agent's (times the PER importance
    weight); 1 treats them as ordinary data; >= 0."""

    def __post_init__(self):
        _check_types(self, "expert")
        _check(self.kind in typing.get_args(ExpertKind), "expert.kind", self.kind,
               f"must be one of {typing.get_args(ExpertKind)}")
        if self.kind == "none":
            _check(self.source is None, "expert.source", self.source,
                   "is set but expert.kind is none: set --expert.kind scripted | checkpoint | "
                   "playback, or drop the source")
        else:
            examples = dict(scripted="a module:function such as envs.scripted:cartpole",
                            checkpoint="a run directory of launch/run.py",
                            playback="a directory of recorded demo episodes")
            _check(isinstance(self.source, str) and self.source.strip() != "", "expert.source",
                   self.source, f"is needed with expert.kind={self.kind}: {examples[self.kind]}")
        _check(self.mode in typing.get_args(ExpertMode), "expert.mode", self.mode,
               f"must be one of {typing.get_args(ExpertMode)}")
        _check(self.ratio_schedule in typing.get_args(RatioSchedule), "expert.ratio_schedule",
               self.ratio_schedule, f"must be one of {typing.get_args(RatioSchedule)}")
        _unit_interval("expert.ratio_start", self.ratio_start)
        _check(0.0 <= self.ratio_floor <= self.ratio_start, "expert.ratio_floor",
               self.ratio_floor, f"must be in [0, expert.ratio_start = {self.ratio_start}]")
        _positive_int("expert.ratio_decay_steps", self.ratio_decay_steps)
        if self.floor_raise is not None:
            _unit_interval("expert.floor_raise", self.floor_raise)
        _positive_int("expert.floor_raise_steps", self.floor_raise_steps)
        _check(self.loss_weight >= 0, "expert.loss_weight", self.loss_weight, "must be >= 0")


@dataclasses.dataclass(frozen=True)
class TrackmaniaConfig:
    """TrackMania 2020 through tmrl (``env.id=trackmania``): game connection, observation and
    action adapters, real-time stepping, the watchdog, and our reward (every key of seed 004's
    REWARD_CONFIG, lower-cased). Setup and failure modes: ``docs/trackmania.md``.

    Reward per step (``envs.trackmania.reward.TrackReward``): progress along the recorded trajectory
    (tmrl's semantics: points 0.1 m apart, 1.0 per 10 m), times ``proximity_reward_shaping``
    when the car is off the line, plus the speed bonus, minus the constant, off-track speed
    and wall-hug penalties, plus ``end_of_track`` at the finish; then ``tanh(reward_scale *
    r)`` when ``reward_scale`` is set. "Off the line": farther than
    ``speed_safe_deviation_ratio * max_stray`` metres from the trajectory point matched."""

    interface: TmInterface = "images"
    """images: the newest grayscale frame (env.image_size, uint8) + features; lidar: 19 lidar
    distances per frame (tmrl's LIDAR) + features; lidar_progress: lidar + track progress."""
    action_history: int = 2
    """Previous actions, as [gas, brake, steer], appended to the features (tmrl's
    act_buf_len); >= 0."""
    discrete_actions: tuple[str, ...] = TM_DEFAULT_ACTIONS
    """Discrete action set for iqn / c51 / dqn, each pedals and steer joined by '+' from
    gas, brake, left, right, none (left = steer -1, right = +1)."""
    time_step: float = 0.05
    """Real-time step in seconds (tmrl: 0.05 = 20 Hz); > 0."""
    start_obs_capture: float = 0.04
    """Seconds into a step at which the observation is captured (tmrl: 0.04); in (0,
    time_step]."""
    time_step_timeout_factor: float = 1.0
    """A step later than time_step * (1 + this) breaks rtgym's clock and counts as late
    (tmrl: 1.0); > 0."""
    late_step_warning: float = 0.01
    """Warn when more than this share of the steps in a log interval was late; in [0, 1]."""
    watchdog_timeout: float = 15.0
    """Seconds a reset or step may take before the game is declared hung; > 0."""
    reconnect_attempts: int = 3
    """Times the worker is restarted after a hang or crash before the run stops with an
    error (the partial episode is always dropped); >= 0."""
    host: str = "127.0.0.1"
    """Address of the OpenPlanet TMRL_GrabData plugin (or of a stand-in game)."""
    port: int = 9000
    """TCP port of the plugin (tmrl's is fixed at 9000); 1..65535."""
    gamepad: bool = True
    """Drive through the virtual gamepad (analog; needs ViGEmBus on Windows) or, False, the
    keyboard (binary steer)."""
    trajectory: str | None = None
    """Reward trajectory file (tmrl's reward.pkl or our .npy, [N, 3] points 0.1 m apart);
    None: ~/TmrlData/reward/reward.pkl."""
    backend: TmBackend = "game"
    """game: the real game through tmrl; standin: the headless stand-in game of
    ``envs.trackmania.standin`` (tests, demos without the game)."""
    standin_address: str | None = None
    """host:data_port:control_port of a stand-in game started elsewhere (tests); None starts
    one inside the env worker. Only with backend=standin."""
    end_of_track: float = 100.0
    """END_OF_TRACK: bonus at the finish line (tmrl 100); >= 0."""
    constant_penalty: float = 0.0005
    """CONSTANT_PENALTY: subtracted every step (seed 004 recommended 0.0005; tmrl adds its
    value instead, default 0); >= 0."""
    check_forward: int = 500
    """CHECK_FORWARD: trajectory points searched ahead for the matching point, so cuts up to
    50 m pay (tmrl 500); >= 1."""
    check_backward: int = 10
    """CHECK_BACKWARD: points searched behind when there is no progress (tmrl 10); >= 1."""
    failure_countdown: int = 9
    """FAILURE_COUNTDOWN: consecutive no-progress steps that end the episode (seed 004
    recommended 9; tmrl 10); >= 1."""
    min_steps: int = 70
    """MIN_STEPS: steps at the start of an episode during which no-progress steps are not
    counted (tmrl 70 = 3.5 s); >= 0."""
    max_stray: float = 50.0
    """MAX_STRAY: metres from the trajectory beyond which progress is not counted (seed 004
    recommended 50; tmrl 100); > 0."""
    speed_safe_deviation_ratio: float = 0.15
    """SPEED_SAFE_DEVIATION_RATIO: the "on the line" radius as a share of max_stray (seed 004
    recommended 0.15, i.e. 7.5 m); in (0, 1]."""
    reckless_speed_threshold: float = 45.0
    """RECKLESS_SPEED_THRESHOLD: speed in km/h that scales the off-track speed penalty
    (seed 004 recommended 45); > 0."""
    reckless_penalty_factor: float = 0.006
    """RECKLESS_PENALTY_FACTOR: off-track speed penalty per step, ``factor * (speed /
    reckless_speed_threshold) * (deviation / safe radius)``, when off the line above 5 km/h
    (seed 004 recommended 0.006); 0 disables; >= 0."""
    speed_bonus: float = 0.0008
    """SPEED_BONUS: reward per km/h on steps that progress on the line (seed 004 Run E
    0.0008); 0 disables; >= 0."""
    wall_hug_speed_threshold: float = 10.0
    """WALL_HUG_SPEED_THRESHOLD: km/h above which a no-progress step off the line counts as
    wall-hugging (seed 004: 10); >= 0."""
    wall_hug_penalty_factor: float = 0.005
    """WALL_HUG_PENALTY_FACTOR: wall-hug penalty ``factor * k * (deviation / safe radius)`` on
    the k-th such step in a row; after failure_countdown * 3 of them the episode ends
    (seed 004: 0.005); 0 disables the penalty, not the termination; >= 0."""
    proximity_reward_shaping: float = 0.5
    """PROXIMITY_REWARD_SHAPING: progress made off the line is multiplied by this (seed 004:
    0.5); 1 disables; in [0, 1]."""
    reward_scale: float | None = 3.0
    """REWARD_SCALE: the reward becomes ``tanh(reward_scale * r)``, in (-1, 1) (seed 004:
    3.0); None keeps the raw sum (tmrl)."""

    def __post_init__(self):
        _check_types(self, "trackmania")
        _check(self.interface in typing.get_args(TmInterface), "trackmania.interface",
               self.interface, f"must be one of {typing.get_args(TmInterface)}")
        _check(self.backend in typing.get_args(TmBackend), "trackmania.backend",
               self.backend, f"must be one of {typing.get_args(TmBackend)}")
        _check(_is_int(self.action_history) and self.action_history >= 0,
               "trackmania.action_history", self.action_history, "must be an integer >= 0")
        _check(isinstance(self.discrete_actions, tuple) and len(self.discrete_actions) >= 2,
               "trackmania.discrete_actions", self.discrete_actions,
               "must list at least 2 actions")
        for action in self.discrete_actions:
            words = action.split("+") if isinstance(action, str) else [None]
            _check(all(w in TM_ACTION_TOKENS for w in words) and len(set(words)) == len(words)
                   and not ("left" in words and "right" in words)
                   and not ("none" in words and len(words) > 1),
                   "trackmania.discrete_actions", action,
                   f"each action joins distinct words of {TM_ACTION_TOKENS} with '+', at most "
                   "one of left / right, 'none' alone")
        for name in ("time_step", "time_step_timeout_factor", "watchdog_timeout", "max_stray",
                     "reckless_speed_threshold"):
            _check(getattr(self, name) > 0, f"trackmania.{name}", getattr(self, name),
                   "must be > 0")
        _check(0 < self.start_obs_capture <= self.time_step, "trackmania.start_obs_capture",
               self.start_obs_capture, f"must be in (0, trackmania.time_step={self.time_step}]")
        _unit_interval("trackmania.late_step_warning", self.late_step_warning)
        _check(_is_int(self.reconnect_attempts) and self.reconnect_attempts >= 0,
               "trackmania.reconnect_attempts", self.reconnect_attempts,
               "must be an integer >= 0")
        _check(_is_int(self.port) and 1 <= self.port <= 65535, "trackmania.port",
               self.port, "must be a TCP port in 1..65535")
        _check(self.trajectory is None or isinstance(self.trajectory, str)
               and self.trajectory != "", "trackmania.trajectory", self.trajectory,
               "must be a file path or None")
        _check(self.standin_address is None or self.backend == "standin"
               and len(str(self.standin_address).split(":")) == 3,
               "trackmania.standin_address", self.standin_address,
               "must be host:data_port:control_port, and only with backend=standin")
        for name in ("end_of_track", "constant_penalty", "reckless_penalty_factor",
                     "speed_bonus", "wall_hug_speed_threshold", "wall_hug_penalty_factor"):
            _check(getattr(self, name) >= 0, f"trackmania.{name}", getattr(self, name),
                   "must be >= 0")
        for name in ("check_forward", "check_backward", "failure_countdown"):
            _positive_int(f"trackmania.{name}", getattr(self, name))
        _check(_is_int(self.min_steps) and self.min_steps >= 0,
               "trackmania.min_steps", self.min_steps, "must be an integer >= 0")
        _unit_interval("trackmania.speed_safe_deviation_ratio",
                       self.speed_safe_deviation_ratio, closed_low=False)
        _unit_interval("trackmania.proximity_reward_shaping", self.proximity_reward_shaping)
        _check(self.reward_scale is None or self.reward_scale > 0, "trackmania.reward_scale",
               self.reward_scale, "must be > 0, or None for the raw reward")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Loop sizes: steps, replay ratio, batch, evaluation and checkpoint cadence."""

    total_steps: int = 2_000_000
    """Env steps to train for (agent steps summed over envs; frames = steps * frame_skip)."""
    learning_starts: int = 20_000
    """Env steps collected before the first grad step (replay warm-up); >= 0."""
    replay_ratio: float = 1 / 64
    """Grad steps (micro-batches) per env step (BTR: 1/64; fractions allowed); > 0."""
    batch_size: int = 256
    """Transitions per grad step; >= 1."""
    grad_steps_per_call: int = 1
    """Grad steps fused in one jitted device call (lax.scan); >= 1."""
    eval_interval: int = 50_000
    """Env steps between evaluations (noise off, eval_epsilon); 0 disables. An evaluation
    runs on the first vector step at or past each multiple of eval_interval (with E envs the
    counter moves by up to E) and is logged (TensorBoard step, health, best/<step>, its env
    seeds) at that multiple, so runs with any num_envs log at the same steps; multiples
    crossed within one vector step make one evaluation, at the last of them."""
    eval_episodes: int = 5
    """Episodes per evaluation; >= 1."""
    checkpoint_interval: int = 50_000
    """Env steps between checkpoints; >= 1."""
    keep_checkpoints: int = 3
    """Most recent checkpoints kept (the best by evaluation and by training return are kept
    apart); >= 1."""
    best_train_window: int = 20
    """Training episodes whose mean return decides the best_train/ checkpoint (seed 004 D:
    restart a collapsed run from its best policy); with an expert curriculum only agent-only
    episodes count; 0 disables; >= 0."""
    save_replay: bool = True
    """Save the replay contents in checkpoints (else --resume refills the buffer). Costs the
    replay's bytes on disk per kept checkpoint (84x84 frames: 7.4 GB at 1M slots), the time
    to write them, and up to the replay's bytes again in host memory while each save writes
    (orbax copies what it saves to host memory first). The run logs these figures at start;
    measured ones are in docs/reliability.md."""
    max_failed_saves: int = 3
    """Checkpoint saves (periodic or best) that may fail in a row (disk full, no
    permission) before the run stops with exit code 3; each failure is logged and counted
    in perf/failed_saves and the run goes on from the checkpoints saved before. 3 rides out
    a passing storage fault while putting at most 3 checkpoint intervals at risk; >= 1."""

    def __post_init__(self):
        _check_types(self, "training")
        _positive_int("training.total_steps", self.total_steps)
        _check(_is_int(self.learning_starts) and self.learning_starts >= 0,
               "training.learning_starts", self.learning_starts, "must be an integer >= 0")
        _check(isinstance(self.replay_ratio, (int, float)) and self.replay_ratio > 0
               and math.isfinite(self.replay_ratio),
               "training.replay_ratio", self.replay_ratio, "must be a finite number > 0")
        for name in ("batch_size", "grad_steps_per_call", "eval_episodes",
                     "checkpoint_interval", "keep_checkpoints", "max_failed_saves"):
            _positive_int(f"training.{name}", getattr(self, name))
        _check(_is_int(self.best_train_window) and self.best_train_window >= 0,
               "training.best_train_window", self.best_train_window, "must be an integer >= 0")
        _check(_is_int(self.eval_interval) and self.eval_interval >= 0,
               "training.eval_interval", self.eval_interval, "must be an integer >= 0")


@dataclasses.dataclass(frozen=True)
class ActorsConfig:
    """How acting and learning share the run (the Sebulba split of Hessel et al. 2021,
    "Podracer architectures for scalable reinforcement learning"): an actor steps the envs
    and hands whole vector steps to the learner through a bounded queue; the learner adds
    them to the replay, runs the grad steps of training.replay_ratio and publishes the acting
    params. ``launch/actor.py``, ``launch/learner.py``, ``launch/loop.py``."""

    mode: LoopMode = "auto"
    """lockstep: one thread, acting and learning take turns (reproducible by seed);
    bounded: the actor runs in its own thread and the replay ratio is held (the learner
    waits for data when ahead, the actor when the learner is more than max_lag grad steps
    behind); realtime: the actor never waits (the game's clock rules), the learner learns as
    fast as it can up to the ratio and the shortfall is logged; auto: realtime on
    TrackMania, bounded elsewhere."""
    queue_size: int = 64
    """Vector steps the queue between actor and learner holds; a full queue makes the actor
    wait (perf/actor_wait_share); >= 1."""
    max_lag: float | None = None
    """Bounded mode: grad steps the learner may owe (by training.replay_ratio, counting the
    queued steps) before the actor waits for it; >= training.grad_steps_per_call; None: two
    update calls (2 x training.grad_steps_per_call)."""
    param_publish_interval: int = 1
    """Update calls between two publications of the acting params to the actor
    (perf/param_lag counts the grad steps the actor's params are behind); >= 1."""
    backend: ActorBackend = "auto"
    """Where the concurrent actor runs: thread (a thread of the training process), process
    (a child process with its own JAX runtime; realtime mode only) or ray (num_actors Ray
    actors, on this machine or on the machines of a Ray cluster; ``launch/ray_actors.py``,
    the ``[distributed]`` extra). In one process the actor's ``act`` waits for the learner's
    grad step now and then (the two share XLA's CPU runtime: up to 170 ms with the tqc_tm20
    net on 2 cores, a late step per grad step); a child process never does. auto: process
    in realtime mode, else thread."""
    num_actors: int = 1
    """backend=ray: actors, each with its own env.num_envs envs (or one TrackMania game),
    seed stream and expert mixer; the replay holds num_actors x env.num_envs streams. 1
    with the other backends."""
    ray_address: str | None = None
    """backend=ray: None starts a local Ray instance on the loopback address; ``auto`` or
    ``HOST:PORT`` joins a running cluster (``ray start --head`` on the learner machine).
    An address that cannot be reached stops the run before any work (exit code 3)."""
    resources_per_actor: dict[str, float] = dataclasses.field(default_factory=dict)
    """backend=ray: the Ray resources each actor needs, e.g. ``{"trackmania": 1}`` so that
    each game PC (``ray start --resources '{"trackmania": 1}'``) hosts exactly one; CPU and
    GPU are Ray's num_cpus / num_gpus (default 0 CPUs: actors are not held back by Ray's
    CPU count; without a GPU in it an actor's JAX runs on the CPU)."""
    chunk_size: int = 8
    """backend=ray: vector steps per object an actor sends through Ray's object store (at
    most: a chunk goes when full or after half a second)."""
    max_restarts: int = 3
    """backend=ray: times Ray restarts each actor that died (its machine off, a crashed
    game beyond its reconnects, an exception); its partial episodes are dropped."""
    lost_timeout: float = 120.0
    """backend=ray: seconds without any live actor after which the run checkpoints and
    exits with code 3 (resume it when the actors' machines are back)."""

    def __post_init__(self):
        _check_types(self, "actors")
        _check(self.mode in typing.get_args(LoopMode), "actors.mode", self.mode,
               f"must be one of {typing.get_args(LoopMode)}")
        _check(self.backend in typing.get_args(ActorBackend), "actors.backend", self.backend,
               f"must be one of {typing.get_args(ActorBackend)}")
        _positive_int("actors.queue_size", self.queue_size)
        _positive_int("actors.param_publish_interval", self.param_publish_interval)
        _check(self.max_lag is None or self.max_lag > 0, "actors.max_lag", self.max_lag,
               "must be > 0 or None")
        _positive_int("actors.num_actors", self.num_actors)
        _check(self.num_actors == 1 or self.backend == "ray", "actors.num_actors",
               self.num_actors, "must be 1 unless actors.backend=ray")
        _positive_int("actors.chunk_size", self.chunk_size)
        _check(isinstance(self.max_restarts, int) and not isinstance(self.max_restarts, bool)
               and self.max_restarts >= 0, "actors.max_restarts", self.max_restarts,
               "must be an integer >= 0")
        _check(self.lost_timeout > 0, "actors.lost_timeout", self.lost_timeout, "must be > 0")
        _check(self.ray_address is None or self.ray_address == "auto"
               or _is_host_port(self.ray_address), "actors.ray_address", self.ray_address,
               "must be None (a local Ray instance), 'auto' or 'HOST:PORT'")
        _check(isinstance(self.resources_per_actor, dict) and all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v) and v >= 0 for k, v in self.resources_per_actor.items()),
            "actors.resources_per_actor", self.resources_per_actor,
            "must map resource names to finite numbers >= 0, e.g. {'trackmania': 1}")

    def resolved_mode(self, env_id: str) -> str:
        """The mode that runs: ``mode``, with auto resolved by the env (realtime for
        ``trackmania``, else bounded)."""
        if self.mode != "auto":
            return self.mode
        return "realtime" if env_id == "trackmania" else "bounded"

    def resolved_backend(self, env_id: str) -> str:
        """The backend that runs: ``backend``, with auto resolved by the mode (process in
        realtime mode, else thread). Config checks that process goes with realtime."""
        if self.backend != "auto":
            return self.backend
        return "process" if self.resolved_mode(env_id) == "realtime" else "thread"


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    """Where the learner's update runs (``rl/sharding.py``)."""

    devices: int | Literal["all"] = 1
    """Devices of this process the update runs on: 1 (today's single-device update), N (the
    first N of ``jax.devices()``) or all. With more than one, a ``jax.sharding.Mesh`` with a
    ``data`` axis: each sampled batch is split across the devices, params, optimiser state
    and replay are replicated, and XLA reduces the gradients (jit with shardings). The batch
    (training.batch_size) must divide evenly; on a CPU,
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` gives N devices."""

    num_processes: int = 1
    """Learner processes, one per host (``launch/multihost.py``): with more than one, every
    process runs this command with its own ``process_id``, ``jax.distributed.initialize``
    joins them at ``coordinator_address``, and the mesh spans every device of every process
    (devices must be all). Each process steps its own env.num_envs envs; every vector step
    is gathered to all processes, so each holds the same replay and runs the same update."""
    process_id: int = 0
    """This process's index, 0 .. num_processes - 1; process 0 writes the run's logs and
    evaluates."""
    coordinator_address: str | None = None
    """HOST:PORT where process 0 serves the coordination service (needed with
    num_processes > 1); every process names the same address."""
    coordinator_timeout: int = 300
    """Seconds each process waits for all of them to join before it gives up (exit 3)."""

    def __post_init__(self):
        _check_types(self, "learner")
        _check(self.devices == "all" or (isinstance(self.devices, int)
                                         and not isinstance(self.devices, bool)
                                         and self.devices >= 1),
               "learner.devices", self.devices, "must be an integer >= 1 or 'all'")
        _positive_int("learner.num_processes", self.num_processes)
        _positive_int("learner.coordinator_timeout", self.coordinator_timeout)
        _check(isinstance(self.process_id, int) and not isinstance(self.process_id, bool)
               and 0 <= self.process_id < self.num_processes, "learner.process_id",
               self.process_id, f"must be an integer in [0, {self.num_processes - 1}] "
               "(learner.num_processes - 1)")
        if self.num_processes > 1:
            _check(self.coordinator_address is not None
                   and _is_host_port(self.coordinator_address), "learner.coordinator_address",
                   self.coordinator_address, "must be HOST:PORT (process 0's address) with "
                   "learner.num_processes > 1")
            _check(self.devices == "all", "learner.devices", self.devices,
                   "must be all with learner.num_processes > 1 (the mesh spans every "
                   "device of every process)")


@dataclasses.dataclass(frozen=True)
class HealthConfig:
    """Training-health monitor (``rl/health.py``): the red flags of the seeds, checked every
    log interval on the learner's metrics and the episode returns. Defaults come from the
    seeds; the trend checks look back ``window_steps`` env steps and arm ``warmup_steps``
    after learning starts."""

    on_divergence: DivergenceAction = "warn"
    """What a divergence flag (non-finite values, Q out of bounds, Q range jump, loss spike,
    return decline, alpha runaway) does: warn (log it), stop (checkpoint and exit with code
    4), or rollback (restore the best checkpoint, scale the learning rates by
    rollback_lr_factor, and continue). Warning flags (grad-norm swings, clipping, early
    epsilon, identical critics, demo share) are only logged."""
    ignore: tuple[str, ...] = ()
    """Checks to skip, by name (see HEALTH_CHECKS), e.g. --health.ignore grad_norm_swing."""
    window_steps: int = 50_000
    """Env steps of history the trend checks (Q range, loss, grad norm, clipping, demo share)
    compare against; only values logged after the warm-up enter it; >= 1."""
    warmup_steps: int = 50_000
    """Env steps after learning starts (or after a rollback) before the trend checks arm:
    Q values and losses legitimately grow by orders of magnitude at first; >= 0."""
    q_bound: float | Literal["auto"] | None = "auto"
    """Upper bound on Q: auto is the most a discounted return of the rewards stored so far
    can be, max(0, r_max) / (1 - gamma) (plus Munchausen's per-step entropy term), widened by
    q_bound_slack times the width of the return range; a number; None disables."""
    q_floor: float | Literal["auto"] | None = "auto"
    """Lower bound on Q: auto is min(0, r_min) / (1 - gamma) widened the same way (so Q well
    below 0 on positive rewards is flagged: seed 000's Q of -40,000); a number (seeds 000/001
    on TrackMania: -10); None disables."""
    q_bound_slack: float = 0.5
    """Widening of the auto bounds, as a fraction of the return range: Q estimates near a
    bound overshoot it a little (DQN on CartPole peaks near 1.3x r_max / (1 - gamma)),
    divergence by far (seeds: 6-100x); >= 0."""
    q_range_floor: float | Literal["auto"] = "auto"
    """Ranges below this count as this in q_range_jump, so the growth from a near-zero range
    while Q first learns the returns is no jump: auto is 10% of the return range (1 before any
    nonzero reward), or a number > 0."""
    q_range_factor: float = 10.0
    """Flag when the Q range (max - min over a log interval) grows or shrinks by more than
    this factor within the window (seed 003: 324 -> 2000 -> 16); > 1."""
    loss_spike_factor: float = 5.0
    """Flag when the loss (mean over a log interval) exceeds this times its median over the
    window (seeds 000/001: 3 -> 15); > 1."""
    return_decline_episodes: int = 500
    """Training episodes the return trend is fitted over (seeds 000/001: "episode rewards
    decrease over 500+ episodes"); >= 3."""
    eval_decline_points: int = 5
    """Evaluations the evaluation-return trend is fitted over; >= 3."""
    return_decline_t: float = 3.0
    """Flag a return decline when the least-squares slope of return against env step is
    below minus this many standard errors (the seeds' negative "DQN5M slope", made
    significant); > 0."""
    alpha_rise_factor: float = 10.0
    """Flag when the entropy coefficient (TQC) exceeds this times its minimum since
    learning started (seed 004: 0.015 -> 0.22); > 1."""
    grad_norm_swing_factor: float = 1.5
    """Flag when the grad norm (mean over a log interval) typically changes by more than
    this factor from one log interval to the next (the median over the window; seed 003:
    4.8 <-> 8.8 between reports, "swinging 2x or more"); steady growth is no swing; > 1."""
    clipped_share: float = 0.5
    """Flag when more than this share of grad steps were clipped over the window (seed
    003: clipping 43% of the time with ClipΔ down to 0.57); in (0, 1]."""
    epsilon_floor: float = 0.5
    """With epsilon_floor_fraction: flag epsilon below this too early (seeds 000/001:
    "epsilon reaches < 0.5 before episode 10,000"); in [0, 1]."""
    epsilon_floor_fraction: float = 0.02
    """... i.e. before this fraction of training.total_steps (episode-based decay hit 0.01
    after 1.5% of the seeds' 10M steps; their working step-based decay was above 0.5 past
    3%); in [0, 1]."""
    critics_identical_share: float = 0.5
    """Flag when more than this share of a batch has two critics within 1e-6 of each other
    (seed 004: q1 == q2, twins sharing a seed); in (0, 1]."""
    demo_fraction_max: float = 0.9
    """Flag when the mean share of demonstrations in sampled batches stays above this over
    a whole window after warm-up (seed 004: stuck at 0.93); in (0, 1]."""
    rollback_lr_factor: float = 0.5
    """On rollback, every learning rate (agent.learning_rate, agent.lr_end and TQC's) is
    multiplied by this (seed 003's fix: 3x lower); 1 keeps them; in (0, 1]."""
    max_rollbacks: int = 3
    """Rollbacks allowed in a run; the next divergence stops it; >= 1."""
    max_nonfinite: int = 3
    """Log intervals in a row with the nonfinite flag up before on_divergence acts on it; the
    flag itself is raised and logged at once. The learner skips a grad step whose loss,
    gradient or new state is not finite (``train/nonfinite_steps``), so one bad interval (a
    stray NaN transition) leaves the network intact; 3 in a row is a cause that persists
    (broken data or a diverged network). 1 acts at once; >= 1."""

    def __post_init__(self):
        _check_types(self, "health")
        _check(self.on_divergence in typing.get_args(DivergenceAction), "health.on_divergence",
               self.on_divergence, f"must be one of {typing.get_args(DivergenceAction)}")
        unknown = [name for name in self.ignore if name not in HEALTH_CHECKS]
        _check(not unknown, "health.ignore", unknown, f"must name checks of {HEALTH_CHECKS}")
        _positive_int("health.window_steps", self.window_steps)
        _check(_is_int(self.warmup_steps) and self.warmup_steps >= 0,
               "health.warmup_steps", self.warmup_steps, "must be an integer >= 0")
        _check(_is_int(self.return_decline_episodes) and self.return_decline_episodes >= 3,
               "health.return_decline_episodes", self.return_decline_episodes,
               "must be an integer >= 3")
        _check(_is_int(self.eval_decline_points) and self.eval_decline_points >= 3,
               "health.eval_decline_points", self.eval_decline_points, "must be an integer >= 3")
        if self.q_bound not in (None, "auto") and self.q_floor not in (None, "auto"):
            _check(self.q_floor < self.q_bound, "health.q_floor", self.q_floor,
                   f"must be < health.q_bound ({self.q_bound})")
        _check(self.q_bound_slack >= 0, "health.q_bound_slack", self.q_bound_slack,
               "must be >= 0")
        for name in ("q_range_factor", "loss_spike_factor", "alpha_rise_factor",
                     "grad_norm_swing_factor"):
            _check(getattr(self, name) > 1, f"health.{name}", getattr(self, name), "must be > 1")
        _check(self.q_range_floor == "auto" or self.q_range_floor > 0, "health.q_range_floor",
               self.q_range_floor, "must be auto or a number > 0")
        _check(self.return_decline_t > 0, "health.return_decline_t", self.return_decline_t,
               "must be > 0")
        for name in ("clipped_share", "critics_identical_share", "demo_fraction_max",
                     "rollback_lr_factor"):
            _unit_interval(f"health.{name}", getattr(self, name), closed_low=False)
        for name in ("epsilon_floor", "epsilon_floor_fraction"):
            _unit_interval(f"health.{name}", getattr(self, name))
        _positive_int("health.max_rollbacks", self.max_rollbacks)
        _positive_int("health.max_nonfinite", self.max_nonfinite)


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
    summary_interval: int = 10_000
    """Env steps between one-line training summaries in the console (expert ratio, agent-only
    returns and their slopes, Q range, loss, grad norm, clip ratio, target age; seed 003's
    status line); 0 disables; >= 0."""
    return_windows: tuple[int, int] = (1_000_000, 5_000_000)
    """Env steps of the short and long windows of the episode-return means and slopes
    (seed 003's DQN1M and DQN5M); each >= 1, short < long."""
    reward_slope_episodes: int = 20
    """Most recent episodes the reward slope (return per episode) is fitted over (seed 003's
    RwdSlope); >= 3."""
    video_interval: int = 0
    """Env steps between recorded evaluation episodes (one greedy episode each, to
    RUN_DIR/videos/<step>.mp4 and TensorBoard; needs the ``[video]`` extra); 0 disables; >= 0."""
    wandb_project: str | None = None
    """Weights & Biases project the run's scalars, config and health events also go to
    (the ``[wandb]`` extra); None: TensorBoard only."""
    wandb_entity: str | None = None
    """W&B entity (user or team) of the project; None: the account's default."""
    wandb_mode: WandbMode = "online"
    """W&B mode: online (synced as the run goes), offline (files under RUN_DIR/wandb, sent
    later with ``wandb sync``) or disabled (no W&B at all: no files, wandb need not be
    installed). It wins over the WANDB_MODE variable."""

    def __post_init__(self):
        _check_types(self, "logging")
        _positive_int("logging.log_interval", self.log_interval)
        _check(_is_int(self.summary_interval) and self.summary_interval >= 0,
               "logging.summary_interval", self.summary_interval, "must be an integer >= 0")
        windows = self.return_windows
        _check(len(windows) == 2 and all(isinstance(w, int) and w > 0 for w in windows)
               and windows[0] < windows[1], "logging.return_windows", windows,
               "must be two integers > 0, short < long (env steps)")
        _check(_is_int(self.reward_slope_episodes) and self.reward_slope_episodes >= 3,
               "logging.reward_slope_episodes", self.reward_slope_episodes,
               "must be an integer >= 3")
        _check(_is_int(self.video_interval) and self.video_interval >= 0,
               "logging.video_interval", self.video_interval, "must be an integer >= 0")
        project = self.wandb_project  # wandb.init's own rules, checked before any work
        _check(project is None or (project.strip() != "" and len(project) <= 128
                                   and not set(project) & set("/\\#?%:")),
               "logging.wandb_project", project, "must be None or a W&B project name: 1 to "
               "128 characters, none of / \\ # ? % :")
        _check(self.wandb_entity is None or self.wandb_entity.strip() != "",
               "logging.wandb_entity", self.wandb_entity, "must be None or a W&B user or team")


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
    tqc: TQCConfig = TQCConfig()
    replay: ReplayConfig = ReplayConfig()
    demos: DemoConfig = DemoConfig()
    expert: ExpertConfig = ExpertConfig()
    trackmania: TrackmaniaConfig = TrackmaniaConfig()
    training: TrainingConfig = TrainingConfig()
    actors: ActorsConfig = ActorsConfig()
    learner: LearnerConfig = LearnerConfig()
    health: HealthConfig = HealthConfig()
    logging: LoggingConfig = LoggingConfig()

    def __post_init__(self):
        _check_types(self, "")  # the sections too: the checks below read them
        _check(_is_int(self.seed) and self.seed >= 0, "seed", self.seed,
               "must be an integer >= 0")
        streams = self.env.num_envs * self.actor_groups
        per_stream = self.replay.capacity // streams
        # An unresolved auto stack is checked as 1, the least it gives; resolve_env_auto
        # validates again with the number.
        stack = 1 if self.env.frame_stack == "auto" else self.env.frame_stack
        history = max(stack - 1, self.network.action_history)
        need = self.agent.n_step + history + 2
        _check(per_stream >= need, "replay.capacity", self.replay.capacity,
               f"must give each of the {streams} env streams (env.num_envs x "
               f"actors.num_actors x learner.num_processes) at least agent.n_step + "
               f"max(env.frame_stack - 1, network.action_history) + 2 = {need} slots "
               f"(capacity >= {need * streams})")
        continuous = self.agent.learner == "tqc"
        _check(self.env.action_space != ("discrete" if continuous else "continuous"),
               "env.action_space", self.env.action_space,
               f"does not fit agent.learner={self.agent.learner!r}: tqc needs continuous "
               "actions, iqn / c51 / dqn discrete ones")
        if continuous:
            _check(self.network.norm != "batch" and not (
                self.network.torso == "impala" and self.network.spectral_norm),
                "network.norm" if self.network.norm == "batch" else "network.spectral_norm",
                self.network.norm if self.network.norm == "batch" else True,
                "tqc supports torsos without batch statistics: no BatchNorm, no spectral norm")
            _check(self.network.action_history == 0, "network.action_history",
                   self.network.action_history, "is for discrete actions; use 0 with tqc")
        _check(not (self.agent.target_clamp == "auto" and self.env.reward_clip is None),
               "agent.target_clamp", "auto", "needs env.reward_clip (r_max) to compute the "
               "bound r_max / (1 - gamma); set a number or clip the rewards")
        if self.env.id == "trackmania":
            _check(self.env.num_envs == 1, "env.num_envs", self.env.num_envs,
                   "must be 1 with env.id=trackmania (one game per machine)")
            _check(self.training.eval_interval == 0, "training.eval_interval",
                   self.training.eval_interval, "must be 0 with env.id=trackmania: evaluation "
                   "would need a second game; watch episode/return instead")
            _check(self.logging.video_interval == 0, "logging.video_interval",
                   self.logging.video_interval, "must be 0 with env.id=trackmania: a video "
                   "episode would need a second game; record one after training with "
                   "launch/play.py RUN_DIR --video FILE.mp4")
        _check(self.actors.backend != "process"
               or self.actors.resolved_mode(self.env.id) == "realtime", "actors.backend",
               self.actors.backend, f"process runs only in realtime mode (actors.mode="
               f"{self.actors.resolved_mode(self.env.id)} here); use thread or auto")
        _check(self.actors.backend != "ray"
               or self.actors.resolved_mode(self.env.id) != "lockstep", "actors.backend",
               self.actors.backend, "ray runs in the concurrent modes (actors.mode bounded, "
               "realtime or auto), not lockstep")
        _check(self.actors.max_lag is None
               or self.actors.max_lag >= self.training.grad_steps_per_call, "actors.max_lag",
               self.actors.max_lag, "must be >= training.grad_steps_per_call "
               f"({self.training.grad_steps_per_call}): the learner owes grad steps in whole "
               "calls, so a smaller lag would hold the actor forever")
        _check(self.learner.devices == "all"
               or self.training.batch_size % self.learner.devices == 0, "training.batch_size",
               self.training.batch_size, f"must be a multiple of learner.devices "
               f"({self.learner.devices}): each device takes an equal share of the batch")
        if self.learner.num_processes > 1:
            _check(self.actors.resolved_mode(self.env.id) == "lockstep", "actors.mode",
                   self.actors.mode, "must be lockstep with learner.num_processes > 1 "
                   "(every process takes the same vector steps in the same order)")
            _check(self.env.id != "trackmania", "learner.num_processes",
                   self.learner.num_processes, "must be 1 with env.id=trackmania (the game's "
                   "clock cannot wait for other processes); add game PCs as Ray actors")
            _check(self.env.on_bad_value == "error", "env.on_bad_value", self.env.on_bad_value,
                   "must be error with learner.num_processes > 1 (a dropped episode would "
                   "leave one process's replay only)")
        _check(self.training.batch_size <= self.replay.capacity, "training.batch_size",
               self.training.batch_size, f"must be <= replay.capacity ({self.replay.capacity})")

    @property
    def actor_groups(self) -> int:
        """Replay groups, one per source of vector steps: actors.num_actors x
        learner.num_processes (one of the two is 1)."""
        return self.actors.num_actors * self.learner.num_processes

    @property
    def env_steps_per_update(self) -> float:
        """Env steps per optimizer update once learning has started: the loop runs
        training.replay_ratio grad steps per env step and an update takes
        agent.grad_accumulation of them, so grad_accumulation / replay_ratio."""
        return self.agent.grad_accumulation / self.training.replay_ratio


def resolve_env_auto(config: Config, is_image: bool) -> Config:
    """``config`` with env.reward_clip and env.frame_stack auto set for the env's
    observations (:meth:`EnvConfig.resolved`), validated again. ``launch/run.py`` calls it
    once, where the env spec is known, before printing or saving the config; on a config
    without auto it returns an equal config.

    Raises:
      ConfigError: agent.target_clamp auto with a reward_clip that auto leaves off (vector
        observations), or a replay too small for the resolved frame stack.
    """
    env = config.env.resolved(is_image)
    _check(not (config.agent.target_clamp == "auto" and config.env.reward_clip == "auto"
                and env.reward_clip is None), "agent.target_clamp", "auto",
           "needs env.reward_clip (r_max), which auto leaves off (None) on vector "
           "observations; set --env.reward-clip or a number for agent.target_clamp")
    return config if env == config.env else dataclasses.replace(config, env=env)


# --- readable text on disk -------------------------------------------------------------

def to_dict(config: Config) -> dict:
    """Plain nested dict of a config (tuples become lists), for JSON."""
    return dataclasses.asdict(config)


def save(config: Config, path: Path) -> None:
    """Write the resolved config as indented JSON text."""
    Path(path).write_text(json.dumps(to_dict(config), indent=2, sort_keys=False) + "\n")


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip(".") or "config", data, "must be a JSON object")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for name in data:
        if f"{prefix}{name}" in REMOVED_FIELDS:
            raise ConfigError(f"{prefix}{name}", data[name], REMOVED_FIELDS[f"{prefix}{name}"])
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}", data[unknown[0]],
                          f"is not a field of {cls.__name__}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
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
