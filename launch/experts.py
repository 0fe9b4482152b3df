"""The experts of the expert curriculum (``expert.kind``): a scripted ``module:function``
policy, the policy of another run's checkpoint, or the playback of recorded demonstrations.

Every expert has ``act(obs, prev_actions, steps_since_start) -> (actions, available)`` over
the E envs of the vector env: ``obs`` the stacked observations the agent sees (``Collector.
stacked_obs``), ``prev_actions`` int32 [E, h] or None, ``steps_since_start`` int32 [E] (episode
step of each env's current frame); ``actions`` [E, *spec.action_shape] in ``spec.action_dtype``
and ``available`` bool [E] (False where the expert has no action, e.g. a demo that ended; the
agent acts there). Built once by :func:`build_expert`, before training starts.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

import envs
from launch.checkpoint import RunCheckpoints
from rl import config as config_lib
from rl.config import Config, ConfigError
from rl.learners import make_agent

log = logging.getLogger("launch")

__all__ = ["CHECKPOINT_NAMES", "CheckpointExpert", "CheckpointNotFound", "Expert",
           "PlaybackExpert", "RestoredPolicy", "ScriptedExpert", "build_expert",
           "input_differences", "load_policy", "restore_policy"]


def load_policy(name: str, spec: envs.EnvSpec, seed: int, what: str = "--policy"
                ) -> Callable[[Any], np.ndarray]:
    """``random`` or an imported ``module:function``, as ``policy(obs) -> actions``: ``obs`` the
    stacked observations [B, frame_stack, *frame_shape] (with features, the pytree of
    :func:`envs.make.join_obs`), actions [B, *spec.action_shape] (int32 in [0, num_actions), or
    float32 in [-1, 1]). ``random`` draws uniformly, seeded by ``seed``.

    Raises:
      ValueError: the name has no ``:``, the module does not import or has no such function;
        the message names the option ``what``.
    """
    if name == "random":
        rng = np.random.default_rng(seed)

        def random_policy(obs: Any) -> np.ndarray:
            batch = envs.split_obs(spec, obs)[0].shape[0]
            if spec.continuous:
                return rng.uniform(-1.0, 1.0, (batch, *spec.action_shape)).astype(np.float32)
            return rng.integers(0, spec.num_actions, batch).astype(np.int32)

        return random_policy
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} {name!r}: must be 'random' or 'module:function', e.g. "
                         "envs.scripted:cartpole")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{what} {name!r}: cannot import module {module_name!r} ({e})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"{what} {name!r}: module {module_name!r} has no function {attr!r}")
    return fn


def _checked_actions(actions: Any, spec: envs.EnvSpec, num_envs: int, source: str) -> np.ndarray:
    """The expert's actions as [E, *action_shape] in the spec's dtype and range.

    Raises:
      ValueError: another shape, or values outside the action space, naming the source.
    """
    actions = np.asarray(actions)
    expected = (num_envs, *spec.action_shape)
    if actions.shape != expected:
        raise ValueError(f"expert {source!r} returned actions of shape {list(actions.shape)}; "
                         f"the env needs {list(expected)}")
    if spec.continuous:
        ok = np.all(np.abs(actions) <= 1.0)
        allowed = "floats in [-1, 1]"
    else:
        ok = np.all((actions >= 0) & (actions < spec.num_actions) & (actions == np.round(actions)))
        allowed = f"integers in [0, {spec.num_actions})"
    if not ok:
        raise ValueError(f"expert {source!r} returned actions outside the action space "
                         f"({allowed}): {actions.tolist()}")
    return actions.astype(spec.action_dtype)


@dataclasses.dataclass
class ScriptedExpert:
    """A scripted policy ``module:function`` (obs -> actions, batched; ``envs/scripted.py``)."""

    source: str
    policy: Callable[[Any], np.ndarray]
    spec: envs.EnvSpec

    def act(self, obs: Any, prev_actions: np.ndarray | None, steps_since_start: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
        """See the module docstring; always available.

        Raises:
          ValueError: the policy returned actions of the wrong shape or out of range."""
        num_envs = len(steps_since_start)
        actions = _checked_actions(self.policy(obs), self.spec, num_envs, self.source)
        return actions, np.ones(num_envs, bool)


# The fields an expert run must share with this one for its policy to read our observations.
_MATCHING_FIELDS = (("env", "id"), ("env", "action_space"), ("env", "frame_skip"),
                    ("env", "frame_stack"), ("env", "image_size"),
                    ("network", "action_history"))
_MATCHING_TM_FIELDS = (("trackmania", "interface"), ("trackmania", "action_history"),
                       ("trackmania", "discrete_actions"))

CHECKPOINT_NAMES = {"best": "best-by-eval checkpoint of env step {step}",
                    "best_train": "best-by-train checkpoint of env step {step}",
                    "latest": "latest checkpoint, env step {step}"}
"""The checkpoints of a run :func:`restore_policy` takes by name (the directories best/ and
best_train/: the best by evaluation and by training return; the newest of checkpoints/),
with how each is described."""


class CheckpointNotFound(ValueError):
    """A run has no checkpoint of the kind or env step asked for. The message starts with
    "has no" and lists the checkpoints the run has (put the run directory before it)."""


@dataclasses.dataclass(frozen=True)
class RestoredPolicy:
    """A run's agent (``rl.learners.make_agent`` of its config: ``act``, ``q_values``) and
    the train state of one of its checkpoints."""

    agent: Any
    state: Any
    checkpoint: str
    """Which checkpoint, in words, e.g. "best-by-eval checkpoint of env step 400"."""


def input_differences(saved: Config, config: Config) -> list[tuple[str, Any, Any]]:
    """``(section.field, saved value, config value)`` of each field a policy's observations
    and actions depend on where the two configs differ: env id, action space, frame skip /
    stack, image size, action history; with TrackMania its interface and action set. Both
    configs must have their env's auto values resolved (``rl.config.resolve_env_auto``)."""
    fields = _MATCHING_FIELDS + (_MATCHING_TM_FIELDS if envs.is_trackmania(config.env.id)
                                 else ())
    differences = []
    for section, name in fields:
        theirs = getattr(getattr(saved, section), name)
        ours = getattr(getattr(config, section), name)
        if theirs != ours:
            differences.append((f"{section}.{name}", theirs, ours))
    return differences


def restore_policy(run_dir: str | Path, saved: Config, spec: envs.EnvSpec,
                   which: str | None = None) -> RestoredPolicy:
    """The agent of a run of this project and the train state of one of its checkpoints,
    read without writing anything in ``run_dir``.

    Args:
      run_dir: the run directory (its checkpoints).
      saved: the run's config (its config.json); spec: the spec of its env.
      which: a key of :data:`CHECKPOINT_NAMES`, an env step of checkpoints/ (decimal
        digits), or None: best-by-eval, else best-by-train, else latest.

    Raises:
      CheckpointNotFound: no checkpoint at all, or none of that name or env step.
      ValueError: ``which`` is neither a name nor an env step.
      FileNotFoundError / ValueError from orbax: a checkpoint that does not restore (damaged,
        or of another network).
    """
    if which is not None and which not in CHECKPOINT_NAMES and not which.isdigit():
        raise ValueError(f"checkpoint {which!r}: must be {', '.join(CHECKPOINT_NAMES)} or an "
                         "env step of checkpoints/")
    agent = make_agent(saved, spec.num_actions, spec.is_image, spec.feature_size)
    # Shapes only: orbax restores into them (running init would compile the network, ~20 s
    # for TQC's on two cores).
    template = jax.eval_shape(agent.init, jax.random.PRNGKey(0),
                              envs.zeros_obs(spec, (saved.env.frame_stack,)))
    checkpoints = RunCheckpoints(Path(run_dir), saved.training.keep_checkpoints, read_only=True)
    try:
        named = {"best": checkpoints.best_step("eval"),
                 "best_train": checkpoints.best_step("train"),
                 "latest": checkpoints.latest_step()}
        steps = checkpoints.all_steps()
        if which is None:
            which = next((name for name, step in named.items() if step is not None), None)
            if which is None:
                raise CheckpointNotFound("has no checkpoint yet: train it first")
        if which.isdigit():
            step, description = int(which), "checkpoint of env step {step}"
            if step not in steps:
                raise CheckpointNotFound(f"has no checkpoint of env step {step}; "
                                         + _listing(named, steps))
        else:
            step, description = named[which], CHECKPOINT_NAMES[which]
            if step is None:
                raise CheckpointNotFound(f"has no {which} checkpoint; " + _listing(named, steps))
        if which in ("best", "best_train"):
            state, _ = checkpoints.restore_best("eval" if which == "best" else "train", template)
        else:
            state = checkpoints.restore(step, template, None)[0]
    finally:
        checkpoints.close()
    return RestoredPolicy(agent, state, description.format(step=step))


def _listing(named: dict[str, int | None], steps: list[int]) -> str:
    """What a run has, for :class:`CheckpointNotFound`."""
    if not steps and all(step is None for step in named.values()):
        return "it has no checkpoint yet: train it first"
    have = [f"{name} (env step {step})" for name, step in named.items() if step is not None]
    return (f"it has {', '.join(have)}; checkpoints/ holds env steps "
            f"{', '.join(map(str, steps)) or 'none'}")


class CheckpointExpert:
    """The greedy policy (no noise, no epsilon) of another run of this project: its
    best-by-evaluation checkpoint, else its best-by-training one, else its latest.

    Args:
      run_dir: the expert run's directory (its config.json and checkpoints).
      config: this run's config; spec: this run's env spec.

    Raises:
      ConfigError (field ``expert.source``): no config.json or checkpoint there, or the run
        differs from this one in a field its observations or actions depend on (env id, action
        space, frame skip / stack, image size, action history; TrackMania's interface and
        action set).
    """

    def __init__(self, run_dir: str | Path, config: Config, spec: envs.EnvSpec):
        run_dir = Path(run_dir)
        saved_path = run_dir / "config.json"
        if not saved_path.is_file():
            raise ConfigError("expert.source", str(run_dir),
                              "has no config.json: name a run directory of launch/run.py")
        # Both with their env's auto values, as run.py saved the expert's.
        saved = config_lib.resolve_env_auto(config_lib.load(saved_path), spec.is_image)
        config = config_lib.resolve_env_auto(config, spec.is_image)
        differences = input_differences(saved, config)
        if differences:
            field, theirs, ours = differences[0]
            raise ConfigError("expert.source", str(run_dir),
                              f"was trained with {field}={theirs!r}, this run has {ours!r}: the "
                              "expert must see the observations and take the actions of this run")
        try:
            restored = restore_policy(run_dir, saved, spec)
        except CheckpointNotFound as e:
            raise ConfigError("expert.source", str(run_dir), str(e)) from None
        agent, self.state, self.checkpoint = restored.agent, restored.state, restored.checkpoint
        self.source = str(run_dir)
        self._act = jax.jit(lambda state, obs, prev, key: agent.act(
            state, obs, key, 0.0, noisy=False, prev_actions=prev))
        self._key = jax.random.PRNGKey(0)
        self._calls = 0
        # Compiled now: a first call inside a real-time step (TrackMania) would be late.
        num_envs, history = config.env.num_envs, config.network.action_history
        self.act(envs.zeros_obs(spec, (num_envs, config.env.frame_stack)),
                 np.full((num_envs, history), -1, np.int32) if history else None,
                 np.zeros(num_envs, np.int32))

    def act(self, obs: Any, prev_actions: np.ndarray | None, steps_since_start: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
        """See the module docstring; always available."""
        self._calls += 1
        key = jax.random.fold_in(self._key, self._calls)
        actions = np.asarray(self._act(self.state, obs, prev_actions, key))
        return actions, np.ones(len(steps_since_start), bool)


class PlaybackExpert:
    """Open-loop playback of recorded demonstrations: at episode step s an env is given action
    s of the demo episode assigned to it (none after the demo's end). Env i plays demo i first
    and moves on by E demos (cycling) each time it starts a new episode, seen as its episode
    step going back between calls. Meant for deterministic envs (a TrackMania time trial
    starts the same way every time) and ``expert.mode episode``: agent steps in between take
    the env off the recorded path.

    Args:
      directory: demo episodes (``envs/demos.py``) recorded on this env, same frame skip.
      spec: this run's env spec; frame_skip: env.frame_skip; num_envs: E.

    Raises:
      DemoError: unusable demo files (``envs.load_demos``).
    """

    def __init__(self, directory: str | Path, spec: envs.EnvSpec, frame_skip: int,
                 num_envs: int):
        self.source = str(directory)
        self._actions = [e.action for e in envs.load_demos(directory, spec,
                                                            frame_skip=frame_skip)]
        self._spec = spec
        self._episode = np.arange(num_envs)
        self._last = np.full(num_envs, -1)

    def act(self, obs: Any, prev_actions: np.ndarray | None, steps_since_start: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
        """See the module docstring; unavailable past the end of the demo."""
        steps = np.asarray(steps_since_start)
        self._episode = np.where(steps <= self._last, self._episode + len(steps), self._episode)
        self._last = steps.copy()
        actions = np.zeros((len(steps), *self._spec.action_shape), self._spec.action_dtype)
        available = np.zeros(len(steps), bool)
        for i, (episode, step) in enumerate(zip(self._episode, steps)):
            demo = self._actions[episode % len(self._actions)]
            if step < len(demo):
                actions[i], available[i] = demo[step], True
        return actions, available


Expert = ScriptedExpert | CheckpointExpert | PlaybackExpert
"""Any expert of the curriculum (see the module docstring for the shared ``act``)."""


def build_expert(config: Config, spec: envs.EnvSpec) -> Expert | None:
    """The expert of ``config.expert`` (None for kind none), checked against the env.

    Raises:
      ConfigError (``expert.source``): a policy that does not import, a bad checkpoint run
        (see :class:`CheckpointExpert`), or a scripted policy whose actions do not fit the env
        (tried once on a zero observation).
      DemoError: unusable demo files for playback.
    """
    expert = config.expert
    if expert.kind == "none":
        return None
    if expert.kind == "checkpoint":
        built = CheckpointExpert(expert.source, config, spec)
        log.info("expert: %s of %s", built.checkpoint, expert.source)
        return built
    if expert.kind == "playback":
        return PlaybackExpert(expert.source, spec, config.env.frame_skip, config.env.num_envs)
    try:
        built = ScriptedExpert(expert.source, load_policy(expert.source, spec, config.seed,
                                                          what="expert.source"), spec)
    except ValueError as e:
        raise ConfigError("expert.source", expert.source, str(e)) from None
    num_envs = config.env.num_envs
    try:
        built.act(envs.zeros_obs(spec, (num_envs, config.env.frame_stack)), None,
                  np.zeros(num_envs, np.int32))
    except Exception as e:  # the user's policy: any failure on this env's observations
        raise ConfigError("expert.source", expert.source,
                          f"fails on a zero observation of {config.env.id} "
                          f"({type(e).__name__}: {e}): is it a policy for this env?") from None
    return built
