"""Gymnasium environment construction with the preprocessing this project trains on.

Three observation families are supported:

* Atari (``ALE/<Game>-v5``): the Beyond-The-Rainbow recipe (Clark et al. 2025), which follows
  Machado et al. 2018: sticky actions 0.25, up to 30 no-op starts, frame skip 4 with max-pooling
  of the last two frames, 84x84 grayscale, no life-loss terminal.
* CarRacing (and other RGB/gray uint8 image envs): action repeat with summed rewards, grayscale,
  84x84 with ``cv2.INTER_AREA``.
* Vector-observation envs (classic control, Box2D landers, ...): float32 vectors, no frame skip.

Actions are discrete (a ``Discrete(n)`` space from 0: int32 in ``[0, n)``) or continuous (a 1-D
``Box``, rescaled so the agent always acts in ``[-1, 1]^d``, float32), chosen by the
``action_space`` argument: ``"auto"`` (the env's native kind; CarRacing discrete, 5 actions),
``"discrete"`` or ``"continuous"``. Continuous CarRacing takes TrackMania's (tmrl) layout
``[gas, brake, steer]`` (:class:`CarRacingGasBrakeSteer`), so one policy head can drive both.

Every env emits ONE preprocessed frame per step; frame stacking is done by
:class:`envs.collector.Collector` so the replay buffer stores each frame once.
Host-only numpy: do not import jax here (worker processes must stay light).

Vector envs (:func:`make_vector_env`) of ``ALE/*`` ids run on envpool's C++ threads when envpool
is installed (:class:`envs.envpool_env.EnvpoolAtari`, same frames), else on gymnasium's vector
envs; the ``backend`` argument picks one (:data:`BACKENDS`). envpool (which imports jax) is
imported only in the process that builds such a vector env, never in env workers.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import multiprocessing
import os
import signal
import threading
import time
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import load_env_creator, parse_env_id
from gymnasium.vector import AutoresetMode
from gymnasium.vector.async_vector_env import _async_worker  # AsyncVectorEnv's default worker

__all__ = [
    "ACTION_SPACES",
    "BACKENDS",
    "ActionRepeat",
    "CarRacingGasBrakeSteer",
    "EnvIdError",
    "EnvSpec",
    "NoProgressTimeout",
    "check_env_id",
    "env_spec",
    "env_worker",
    "frame_rate",
    "join_obs",
    "make_env",
    "make_vector_env",
    "resolve_backend",
    "split_obs",
    "zeros_obs",
]

# pygame (CarRacing's renderer) prints a banner on import, once per spawned worker.
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

_ATARI_EXTRA_HINT = "install the [atari] extra: pip install -e '.[atari]'"
# Box2D's SWIG bindings warn while being imported; under `-W error` (our pytest config) the
# warning is raised inside the extension's init and the interpreter segfaults.
_SWIG_IMPORT_WARNING = r"builtin type (SwigPyPacked|SwigPyObject|swigvarlink) has no __module__"
# Seconds an env worker whose training process died has to finish on its own (its env's
# close) before it exits regardless.
_ORPHAN_GRACE_S = 5.0

TRACKMANIA_ID = "trackmania"
"""The env id of TrackMania 2020 through tmrl (``envs.trackmania``), which takes the
``trackmania`` config section as the ``trackmania`` keyword of the functions below."""

DEFAULT_FRAME_RATE = 20.0
"""Agent steps per second of an env whose class gives no ``render_fps`` (TrackMania's 20 Hz)."""

ACTION_SPACES = ("auto", "discrete", "continuous")
"""Allowed values of the ``action_space`` argument of :func:`make_env` and friends."""

BACKENDS = ("auto", "gymnasium", "envpool")
"""Allowed values of the ``backend`` argument of :func:`make_vector_env` / :func:`env_spec`:
gymnasium's vector envs, envpool (``ALE/*`` ids only), or auto: envpool where it can run the id
(installed, has the game, ``noop_max >= 1``), else gymnasium."""


class EnvIdError(ValueError):
    """An environment id this project cannot run: unknown, missing its optional dependency, or
    with spaces the algorithms do not support. The message names the id and the fix."""


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """What the learner and the replay buffer need to know about a preprocessed env."""

    env_id: str
    """The gymnasium id, e.g. ``"ALE/Pong-v5"``, ``"CarRacing-v3"``, ``"CartPole-v1"``."""
    frame_shape: tuple[int, ...]
    """Shape of ONE preprocessed observation frame (no stack axis): ``(84, 84)`` or ``(4,)``."""
    frame_dtype: np.dtype
    """``np.uint8`` for images (0..255, not scaled), ``np.float32`` for vectors."""
    num_actions: int
    """Discrete: size of the action space, actions are int32 in ``[0, num_actions)``.
    Continuous: the action dimension ``d`` (``action_shape == (d,)``)."""
    continuous: bool
    """True for a continuous (Box) action space, False for a discrete one."""
    action_shape: tuple[int, ...]
    """Shape of ONE action: ``()`` for discrete, ``(d,)`` for continuous (each entry in
    ``[-1, 1]``)."""
    action_dtype: np.dtype
    """``np.int32`` for discrete actions, ``np.float32`` for continuous ones."""
    is_image: bool
    """True for image frames ([H, W] uint8), False for float vectors."""
    max_episode_steps: int | None
    """Episode limit in agent steps (after frame skip) enforced by a TimeLimit, or None if there
    is none (Atari then still ends at ALE's own 108,000-frame cap)."""
    feature_size: int = 0
    """F, float32 features per step beside the frame (TrackMania: speed, gear, rpm and the
    previous actions); 0 for gymnasium envs. With F > 0 an observation is the dict
    ``{"frame": frame, "features": float32 [F]}`` (see :func:`join_obs`), else the frame."""


def join_obs(spec: EnvSpec, frames: np.ndarray, features: np.ndarray) -> Any:
    """The observation pytree of ``spec``: ``frames`` alone when ``spec.feature_size == 0``,
    else ``{"frame": frames, "features": features}``. Leading axes are free (one step [F],
    a batch [E, F], stacks [E, k, F])."""
    return {"frame": frames, "features": features} if spec.feature_size else frames


def split_obs(spec: EnvSpec, obs: Any) -> tuple[np.ndarray, np.ndarray]:
    """(frames, float32 features) of an observation pytree; features have a last axis of
    size 0 when ``spec.feature_size == 0``.

    Raises:
      ValueError: the observation is not of the spec's kind (a dict exactly when F > 0).
    """
    if spec.feature_size:
        if not isinstance(obs, dict) or set(obs) != {"frame", "features"}:
            raise ValueError(f"{spec.env_id!r} observations must be dicts with keys 'frame' "
                             f"and 'features', got {type(obs).__name__}")
        return np.asarray(obs["frame"]), np.asarray(obs["features"], np.float32)
    if isinstance(obs, dict):
        raise ValueError(f"{spec.env_id!r} observations are frames, got a dict")
    frames = np.asarray(obs)
    return frames, np.zeros((*frames.shape[:frames.ndim - len(spec.frame_shape)], 0), np.float32)


def make_kwargs(config: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`env_spec` / :func:`make_vector_env` for a run config
    (``rl.config.Config``; read: its ``env`` section's frame_skip, image_size,
    max_episode_steps, action_space, backend, and the ``trackmania`` section)."""
    env = config.env
    return dict(frame_skip=env.frame_skip, image_size=env.image_size,
                max_episode_steps=env.max_episode_steps, action_space=env.action_space,
                backend=env.backend, trackmania=config.trackmania)


def zeros_obs(spec: EnvSpec, leading: tuple[int, ...] = ()) -> Any:
    """An all-zero observation pytree with leading axes ``leading`` (e.g. ``(k,)`` for one
    stack), in the spec's shapes and dtypes."""
    return join_obs(spec, np.zeros((*leading, *spec.frame_shape), spec.frame_dtype),
                    np.zeros((*leading, spec.feature_size), np.float32))


def _is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/")


def _is_car_racing(env_id: str) -> bool:
    return parse_env_id(env_id)[1] == "CarRacing"


def _is_legacy_atari(env_id: str) -> bool:
    """A registered ale-py id outside the ALE/ namespace (v0/v4, NoFrameskip, Deterministic)."""
    return not _is_atari(env_id) and str(gym.registry[env_id].entry_point).startswith("ale_py")


def _register_atari(env_id: str) -> None:
    """Import ale_py so its ids exist in the gymnasium registry; EnvIdError if it is missing."""
    try:
        import ale_py
    except ImportError as e:
        raise EnvIdError(
            f"environment {env_id!r} needs ale-py, which is not installed; {_ATARI_EXTRA_HINT}"
        ) from e
    gym.register_envs(ale_py)


def _check_registered(env_id: str) -> None:
    """EnvIdError unless env_id is a registered gymnasium id (registering ALE ids first)."""
    if not isinstance(env_id, str) or not env_id:
        raise EnvIdError(f"environment id must be a non-empty string, got {env_id!r}")
    if _is_atari(env_id):
        _register_atari(env_id)
    elif env_id not in gym.registry:
        # ale-py registers legacy Atari ids, and "Pong-v5" should suggest "ALE/Pong-v5".
        try:
            import ale_py

            gym.register_envs(ale_py)
        except ImportError:
            pass
    if env_id not in gym.registry and parse_env_id(env_id)[1] == "Tempest":
        raise EnvIdError(
            f"unknown environment id {env_id!r}: the Arcade Learning Environment has no Tempest "
            "(seed 003 played the arcade game in an emulator of its own). The tempest_seed003 "
            "presets run on 'ALE/BeamRider-v5', the closest ALE game (a lane shooter); a "
            "Tempest env registered with gymnasium under another id works with --env."
        )
    if env_id not in gym.registry:
        candidates = [i for i in gym.registry if not _is_legacy_atari(i)]
        matches = difflib.get_close_matches(env_id, candidates, n=3, cutoff=0.6)
        suggestion = f"did you mean {', '.join(repr(m) for m in matches)}? " if matches else ""
        raise EnvIdError(
            f"unknown environment id {env_id!r}; {suggestion}"
            "Allowed: ids registered with gymnasium (list them with gymnasium.pprint_registry()) "
            "with discrete or 1-D continuous actions, e.g. 'CartPole-v1', 'Pendulum-v1', "
            f"'CarRacing-v3', or Atari ids like 'ALE/Pong-v5' ({_ATARI_EXTRA_HINT})."
        )
    if _is_legacy_atari(env_id):
        # Legacy ids would silently miss the BTR preprocessing (v4: no sticky actions).
        game = parse_env_id(env_id)[1]
        for suffix in ("NoFrameskip", "Deterministic"):
            game = game.removesuffix(suffix)
        raise EnvIdError(
            f"environment {env_id!r} is a legacy Atari id; use 'ALE/{game}-v5', which gets "
            "the BTR preprocessing (sticky actions 0.25, frame skip 4, 84x84 gray)."
        )


def _check_action_space(action_space: str) -> None:
    if action_space not in ACTION_SPACES:
        raise ValueError(
            f"action_space must be one of {', '.join(repr(a) for a in ACTION_SPACES)}, "
            f"got {action_space!r}"
        )


def _check_spaces(env_id: str, env: gym.Env, action_space: str) -> None:
    """EnvIdError unless the raw env's action space is of the kind ``action_space`` asks for
    (Discrete from 0, or a 1-D Box with finite bounds) and observations are a Box."""
    act = env.action_space
    if isinstance(act, gym.spaces.Box):
        if action_space == "discrete":
            raise EnvIdError(
                f"environment {env_id!r} has a continuous action space {act}; "
                "action_space='discrete' needs a Discrete(n) space starting at 0: use "
                "action_space='continuous' (or 'auto') for this id."
            )
        # RescaleAction to [-1, 1]^d needs finite bounds; the policy heads emit flat vectors.
        if len(act.shape) != 1 or not (np.isfinite(act.low).all() and np.isfinite(act.high).all()):
            raise EnvIdError(
                f"environment {env_id!r} has action space {act}; continuous actions must be a "
                "1-D Box with finite bounds."
            )
    elif isinstance(act, gym.spaces.Discrete) and int(act.start) == 0:
        if action_space == "continuous":
            raise EnvIdError(
                f"environment {env_id!r} has a discrete action space {act} and no continuous "
                "version; action_space='continuous' needs a Box action space. Allowed for this "
                "id: action_space='auto' or 'discrete'."
            )
    else:
        raise EnvIdError(
            f"environment {env_id!r} has action space {act}; supported are a single gymnasium "
            "Discrete(n) space starting at 0 and a 1-D Box with finite bounds."
        )
    obs = env.observation_space
    if not isinstance(obs, gym.spaces.Box):
        raise EnvIdError(
            f"environment {env_id!r} has observation space {obs}; only Box observations "
            "(uint8 images or float vectors) are supported."
        )


def _gym_make(env_id: str, **kwargs: Any) -> gym.Env:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SWIG_IMPORT_WARNING, category=DeprecationWarning)
        return gym.make(env_id, **kwargs)


def _raw_kwargs(
    env_id: str, action_space: str, repeat_action_probability: float = 0.25
) -> dict[str, Any]:
    """Constructor kwargs that turn the registered env into the one we run."""
    if _is_atari(env_id):
        # Frame skipping is done by AtariPreprocessing (with max-pooling), not by ALE.
        return {"frameskip": 1, "repeat_action_probability": float(repeat_action_probability)}
    if _is_car_racing(env_id):
        # Natively continuous, but "auto" keeps the 5 discrete actions the value learners use.
        return {"continuous": action_space == "continuous"}
    return {}


def check_env_id(env_id: str, *, action_space: str = "auto") -> None:
    """Check that ``env_id`` can be run here with ``action_space``, before any work starts.

    Builds the raw env once (cheap: no reset) to read its spaces, then closes it.

    Args:
        env_id: a gymnasium id.
        action_space: ``"auto"`` (the env's native kind; CarRacing discrete), ``"discrete"`` or
            ``"continuous"`` (see :func:`make_env`).

    Raises:
        ValueError: ``action_space`` not one of :data:`ACTION_SPACES`.
        EnvIdError: unknown id (with close matches from the gymnasium registry), an ``ALE/...`` id
            without ale-py installed, an action space of the wrong kind for ``action_space`` (a
            Box env asked for "discrete", a discrete-only env asked for "continuous"), an action
            space that is neither ``Discrete(n)`` from 0 nor a 1-D Box with finite bounds, or
            non-Box observations.
    """
    _check_action_space(action_space)
    if env_id == TRACKMANIA_ID:  # checked when the worker connects to the game
        return
    _check_registered(env_id)
    env = _gym_make(env_id, disable_env_checker=True, **_raw_kwargs(env_id, action_space))
    try:
        _check_spaces(env_id, env, action_space)
    finally:
        env.close()


class CarRacingGasBrakeSteer(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """Continuous CarRacing driven with TrackMania's (tmrl) action layout.

    The agent's action is float32 ``[gas, brake, steer]`` in ``[-1, 1]^3`` (tmrl's TrackMania
    order), so the same policy head can later drive TrackMania. CarRacing (``continuous=True``)
    takes ``[steer, gas, brake]`` with steer in ``[-1, 1]`` and gas, brake in ``[0, 1]``; the
    agent's ``[g, b, s]`` reaches it as ``[s, max(g, 0), max(b, 0)]``: as tmrl drives the game's
    gamepad triggers, a positive value presses the pedal that far and a negative one releases
    it, so a zero-mean exploring policy is on neither pedal half the time (a linear map would
    hold the brake at 0.5 on average and stall the car). Steer passes through. Actions are
    first clipped to ``[-1, 1]``, as Pendulum and LunarLander clip theirs (CarRacing itself
    leaves steer and brake unclipped).
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ActionWrapper.__init__(self, env)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)

    def action(self, action: np.ndarray) -> np.ndarray:
        """``[gas, brake, steer]`` in [-1, 1] -> CarRacing's ``[steer, gas, brake]``, float32."""
        gas, brake, steer = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        return np.array([steer, max(gas, 0.0), max(brake, 0.0)], np.float32)


def _rescale_to_unit(env: gym.Env) -> gym.Env:
    """RescaleAction so the agent acts in ``[-1, 1]^d``, with a float32 action space."""
    shape = env.action_space.shape
    env = gym.wrappers.RescaleAction(
        env, np.full(shape, -1.0, np.float32), np.full(shape, 1.0, np.float32)
    )
    # RescaleAction keeps the env's Box dtype; the agent's actions are float32 whatever it is
    # (the inverse map still computes in that dtype).
    env.action_space = gym.spaces.Box(-1.0, 1.0, shape, np.float32)
    return env


class ActionRepeat(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Repeat each action ``repeat`` times, summing rewards, stopping early at episode end.

    The returned observation, flags and info are those of the last inner step taken. A TimeLimit
    inside this wrapper (counting raw frames) therefore still truncates on the exact frame.
    """

    def __init__(self, env: gym.Env, repeat: int):
        if repeat < 1:
            raise ValueError(f"ActionRepeat needs repeat >= 1, got {repeat}")
        gym.utils.RecordConstructorArgs.__init__(self, repeat=repeat)
        gym.Wrapper.__init__(self, env)
        self.repeat = repeat
        self._skip_render = False
        self._render_pixels = None
        car = env.unwrapped
        if type(car).__module__ == "gymnasium.envs.box2d.car_racing" and repeat > 1:
            # CarRacing renders its pixels on every frame (~99% of its step time); the frames
            # a repeat throws away need no pixels. Relies on gymnasium 1.4's CarRacing._render.
            original = car._render
            self._render_pixels = lambda: original("state_pixels")
            car._render = lambda mode: (car.state.copy() if self._skip_render and mode == "state_pixels"
                                        else original(mode))

    def step(self, action):
        """Step the inner env up to ``repeat`` times: (last obs, summed reward, flags, info)."""
        total = 0.0
        for i in range(self.repeat):
            self._skip_render = i < self.repeat - 1
            try:
                obs, reward, terminated, truncated, info = self.env.step(action)
            finally:
                self._skip_render = False
            total += float(reward)
            if terminated or truncated:
                break
        if self._render_pixels is not None and i < self.repeat - 1:
            # Ended early on a frame whose pixels were skipped: render it now.
            obs = self.env.unwrapped.state = self._render_pixels()
        return obs, total, terminated, truncated, info


class NoProgressTimeout(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Truncate an episode after ``steps`` agent steps in a row without a positive reward.

    For training envs: a car on the grass or a stuck agent stops filling the replay with one
    hopeless stretch (TrackMania's ``failure_countdown`` does the same in the game). The episode
    is truncated, not terminated, so its last value is bootstrapped. ``info["no_progress"]`` is
    True on the step that cut it.
    """

    def __init__(self, env: gym.Env, steps: int):
        if int(steps) != steps or steps < 1:
            raise ValueError(f"NoProgressTimeout needs steps >= 1, got {steps!r}")
        gym.utils.RecordConstructorArgs.__init__(self, steps=steps)
        gym.Wrapper.__init__(self, env)
        self.steps = int(steps)
        self._since_progress = 0

    def reset(self, **kwargs):
        self._since_progress = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        """The inner step, with ``truncated`` set once ``steps`` rewards in a row were <= 0."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._since_progress = 0 if reward > 0 else self._since_progress + 1
        if self._since_progress >= self.steps and not (terminated or truncated):
            truncated = True
            info = {**info, "no_progress": True}
        return obs, reward, terminated, truncated, info


class _SeedFirstReset(gym.Wrapper):
    """Use ``seed`` for the first reset that is not given one; also seeds the action space."""

    def __init__(self, env: gym.Env, seed: int):
        super().__init__(env)
        self._pending_seed: int | None = seed
        env.action_space.seed(seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None:
            seed = self._pending_seed
        self._pending_seed = None
        return self.env.reset(seed=seed, options=options)


def _cast_to_float32(env: gym.Env) -> gym.Env:
    # Bounds cast here: gymnasium's DtypeObservation warns when narrowing float64 bounds.
    space = env.observation_space
    with np.errstate(over="ignore"):  # finite float64 bounds beyond float32 become +-inf
        low = np.asarray(space.low).astype(np.float32)
        high = np.asarray(space.high).astype(np.float32)
    new_space = gym.spaces.Box(low=low, high=high, shape=space.shape, dtype=np.float32)
    return gym.wrappers.TransformObservation(
        env, lambda obs: np.asarray(obs, dtype=np.float32), new_space
    )


def _is_image_space(space: gym.spaces.Box) -> bool:
    shape = space.shape
    return space.dtype == np.uint8 and (
        len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3))
    )


def _check_make_args(
    frame_skip: int, image_size: int, max_episode_steps: int | None, action_space: str,
    noop_max: int = 30, repeat_action_probability: float = 0.25,
    no_progress_timeout: int | None = None,
) -> None:
    _check_action_space(action_space)
    if no_progress_timeout is not None and (
        int(no_progress_timeout) != no_progress_timeout or no_progress_timeout < 1
    ):
        raise ValueError(f"no_progress_timeout must be None or an integer >= 1, got "
                         f"{no_progress_timeout!r}")
    if int(noop_max) != noop_max or noop_max < 0:
        raise ValueError(f"noop_max must be an integer >= 0, got {noop_max!r}")
    if not 0.0 <= repeat_action_probability <= 1.0:
        raise ValueError(f"repeat_action_probability must be in [0, 1], got "
                         f"{repeat_action_probability!r}")
    if int(frame_skip) != frame_skip or frame_skip < 1:
        raise ValueError(f"frame_skip must be an integer >= 1, got {frame_skip!r}")
    if int(image_size) != image_size or image_size < 1:
        raise ValueError(f"image_size must be an integer >= 1, got {image_size!r}")
    if max_episode_steps is not None and (
        int(max_episode_steps) != max_episode_steps or max_episode_steps < 1
    ):
        raise ValueError(
            f"max_episode_steps must be None or an integer >= 1, got {max_episode_steps!r}"
        )


def make_env(
    env_id: str,
    *,
    frame_skip: int = 4,
    image_size: int = 84,
    max_episode_steps: int | None = None,
    seed: int | None = None,
    action_space: str = "auto",
    trackmania: Any = None,
    noop_max: int = 30,
    repeat_action_probability: float = 0.25,
    render_mode: str | None = None,
    no_progress_timeout: int | None = None,
) -> gym.Env:
    """Build one preprocessed env emitting ONE frame per step (no frame stacking).

    Observations:

    * ``ALE/*-v5``: ``gym.make(id, frameskip=1, repeat_action_probability=0.25)`` then
      ``AtariPreprocessing(noop_max=30, frame_skip=frame_skip, screen_size=image_size,
      grayscale_obs=True, terminal_on_life_loss=False)`` (BTR / Machado et al. 2018):
      uint8 [image_size, image_size]. ``noop_max`` and ``repeat_action_probability`` replace
      the 30 and the 0.25 (0 and 0: a deterministic game, for tests).
    * CarRacing and other uint8 image envs: :class:`ActionRepeat` (``frame_skip``, rewards
      summed), grayscale, resize to image_size x image_size with ``cv2.INTER_AREA``: uint8
      [image_size, image_size]. The registered TimeLimit (CarRacing: 1000 frames) sits inside the
      repeat and still truncates on its exact frame (250 agent steps at frame_skip 4).
    * Vector-observation envs: float32 vectors of the registered shape; ``frame_skip`` and
      ``image_size`` are ignored.

    Actions (``action_space``):

    * ``"discrete"``: the env's ``Discrete(n)`` space, int actions in ``[0, n)``; CarRacing is
      built with ``continuous=False`` (5 actions: noop, left, right, gas, brake).
    * ``"continuous"``: the env's 1-D Box, rescaled by ``RescaleAction`` so the agent acts in
      ``[-1, 1]^d`` (float32 action space). CarRacing is built with ``continuous=True`` and
      wrapped in :class:`CarRacingGasBrakeSteer`: the agent's ``[gas, brake, steer]`` in
      ``[-1, 1]^3`` reaches it as ``[steer, max(gas, 0), max(brake, 0)]`` (tmrl's triggers).
    * ``"auto"``: the env's native kind, except CarRacing, which stays discrete (5 actions).

    Args:
        env_id: a registered gymnasium id (see :func:`check_env_id`).
        frame_skip: env frames per agent step for image envs.
        image_size: side of the square output image.
        max_episode_steps: if given, replaces the registered limit by a TimeLimit counting agent
            steps (outermost wrapper, so Atari no-op starts and action repeats do not count).
        seed: if given, for the first ``reset()`` called without a seed and the action space.
        action_space: ``"auto"``, ``"discrete"`` or ``"continuous"``, as above.
        trackmania: the ``trackmania`` config section, for ``env_id="trackmania"``
            (:class:`envs.trackmania.TrackmaniaEnv`; frame_skip and seed do not apply).
        noop_max: Atari only: no-op frames at reset drawn from ``[1, noop_max]`` (0: none).
        repeat_action_probability: Atari only: ALE's sticky-action probability.
        render_mode: gymnasium's ``render_mode`` of the raw env, e.g. ``"rgb_array"``: then
            ``render()`` returns the env's full-size uint8 [H, W, 3] RGB picture of its
            current state (after the last agent step, frame skip included); observations
            are unchanged. None: no rendering.
        no_progress_timeout: if given, :class:`NoProgressTimeout` truncates an episode after
            that many agent steps in a row without a positive reward (training envs only;
            gymnasium envs only: TrackMania has ``trackmania.failure_countdown``).

    Raises:
        EnvIdError: see :func:`check_env_id`; "trackmania" without its config section, or
            with a render_mode (the game has no render; its observation frames are the
            pictures).
        ValueError: frame_skip, image_size, max_episode_steps, noop_max (< 0),
            repeat_action_probability (outside [0, 1]) or no_progress_timeout (< 1) out of
            range, action_space not one of :data:`ACTION_SPACES`, or a no_progress_timeout
            for TrackMania.
    """
    _check_make_args(frame_skip, image_size, max_episode_steps, action_space, noop_max,
                     repeat_action_probability, no_progress_timeout)
    if env_id == TRACKMANIA_ID:
        return _tm_env(trackmania, image_size, max_episode_steps, action_space, render_mode,
                       no_progress_timeout)
    env = _wrapped_gym_env(env_id, frame_skip, image_size, max_episode_steps is not None,
                           action_space, noop_max, repeat_action_probability, render_mode)
    return _outer_wrappers(env, max_episode_steps, no_progress_timeout, seed)


def _tm_env(trackmania: Any, image_size: int, max_episode_steps: int | None, action_space: str,
            render_mode: str | None, no_progress_timeout: int | None) -> gym.Env:
    """:func:`make_env` for ``"trackmania"``; raises ValueError / EnvIdError as it says."""
    if no_progress_timeout is not None:
        raise ValueError("no_progress_timeout is for gymnasium envs; TrackMania ends "
                         "stalled episodes with trackmania.failure_countdown")
    from envs.trackmania import TrackmaniaEnv

    _check_no_render(render_mode)
    return TrackmaniaEnv(_tm_section(trackmania), image_size=image_size,
                         max_episode_steps=max_episode_steps, action_space=action_space)


def _outer_wrappers(env: gym.Env, max_episode_steps: int | None,
                    no_progress_timeout: int | None, seed: int | None) -> gym.Env:
    """:func:`make_env`'s wrappers counting agent steps (its TimeLimit, then
    :class:`NoProgressTimeout`) and the first-reset seed, outermost last."""
    if max_episode_steps is not None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps)
    if no_progress_timeout is not None:
        env = NoProgressTimeout(env, no_progress_timeout)
    if seed is not None:
        env = _SeedFirstReset(env, seed)
    return env


def _wrapped_gym_env(env_id: str, frame_skip: int, image_size: int, own_limit: bool,
                     action_space: str, noop_max: int, repeat_action_probability: float,
                     render_mode: str | None) -> gym.Env:
    """:func:`make_env`'s gymnasium env with its action map and observation preprocessing,
    without the registered TimeLimit when ``own_limit`` (make_env adds its own).

    Raises:
      EnvIdError: see :func:`check_env_id`.
    """
    _check_registered(env_id)
    if render_mode == "rgb_array":
        # pygame (classic control, Box2D) looks for a desktop at its first render and, on a
        # headless machine, prints "error: XDG_RUNTIME_DIR is invalid"; pictures need none.
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    # -1 removes the registered TimeLimit; ours (in agent steps) is added last.
    inner_limit = -1 if own_limit else None
    # Only when asked: env classes without the argument refuse even render_mode=None.
    env = _gym_make(env_id, max_episode_steps=inner_limit,
                    **({} if render_mode is None else {"render_mode": render_mode}),
                    **_raw_kwargs(env_id, action_space, repeat_action_probability))
    try:
        _check_spaces(env_id, env, action_space)
        # Action maps innermost: an ActionRepeat outside them repeats the agent's action.
        if _is_car_racing(env_id) and action_space == "continuous":
            env = CarRacingGasBrakeSteer(env)
        elif isinstance(env.action_space, gym.spaces.Box):
            env = _rescale_to_unit(env)
        env = _preprocess_observations(env, env_id, frame_skip, image_size, noop_max)
    except BaseException:
        env.close()
        raise
    return env


def _preprocess_observations(env: gym.Env, env_id: str, frame_skip: int, image_size: int,
                             noop_max: int) -> gym.Env:
    """The observation wrappers of :func:`make_env` (Atari preprocessing; action repeat,
    grayscale and resize for other image envs; float32 vectors), around the action maps."""
    if _is_atari(env_id):
        return gym.wrappers.AtariPreprocessing(
            env,
            noop_max=noop_max,
            frame_skip=frame_skip,
            screen_size=image_size,
            terminal_on_life_loss=False,
            grayscale_obs=True,
        )
    if _is_image_space(env.observation_space):
        if frame_skip > 1:
            env = ActionRepeat(env, frame_skip)
        shape = env.observation_space.shape
        if len(shape) == 3 and shape[-1] == 3:
            env = gym.wrappers.GrayscaleObservation(env, keep_dim=False)
        elif len(shape) == 3:
            env = gym.wrappers.ReshapeObservation(env, shape[:2])
        if env.observation_space.shape != (image_size, image_size):
            env = gym.wrappers.ResizeObservation(env, (image_size, image_size))
        return env
    if env.observation_space.dtype != np.float32:
        return _cast_to_float32(env)
    return env


def _agent_step_limit(
    env_id: str, is_image: bool, frame_skip: int, max_episode_steps: int | None
) -> int | None:
    if max_episode_steps is not None:
        return int(max_episode_steps)
    registered = gym.spec(env_id).max_episode_steps
    if registered is None:
        return None
    # A frame-counting TimeLimit inside the action repeat ends on agent step ceil(frames / skip).
    return math.ceil(registered / frame_skip) if is_image and not _is_atari(env_id) else registered


def env_spec(
    env_id: str,
    *,
    frame_skip: int = 4,
    image_size: int = 84,
    max_episode_steps: int | None = None,
    seed: int | None = None,
    action_space: str = "auto",
    trackmania: Any = None,
    noop_max: int = 30,
    repeat_action_probability: float = 0.25,
    backend: str = "auto",
) -> EnvSpec:
    """The :class:`EnvSpec` of ``make_env(env_id, **same kwargs)``: builds one env, reads its
    spaces, closes it (TrackMania: from its config, without the game). Raises like
    :func:`make_env`, and like :func:`resolve_backend` for a ``backend`` that cannot run the
    id (so a run stops before its workers start); the spec is the same for either backend."""
    if env_id == TRACKMANIA_ID:
        from envs.trackmania import tm_spec

        _check_make_args(frame_skip, image_size, max_episode_steps, action_space)
        resolve_backend(env_id, backend)  # imports nothing for a non-ALE id
        return tm_spec(_tm_section(trackmania), image_size=image_size,
                       max_episode_steps=max_episode_steps, action_space=action_space)
    env = make_env(
        env_id,
        frame_skip=frame_skip,
        image_size=image_size,
        max_episode_steps=max_episode_steps,
        seed=seed,
        action_space=action_space,
        noop_max=noop_max,
        repeat_action_probability=repeat_action_probability,
    )
    try:
        if backend != "auto":  # auto always runs; deciding it would import envpool
            resolve_backend(env_id, backend, noop_max=noop_max)
        return _spec_from_spaces(
            env_id, env.observation_space, env.action_space, frame_skip, max_episode_steps
        )
    finally:
        env.close()


def frame_rate(spec: EnvSpec, *, frame_skip: int, trackmania: Any = None) -> float:
    """Agent steps per second at the env's own speed: the frame rate (Hz) of a video with one
    picture per agent step. The env class's ``metadata["render_fps"]`` divided by the frame
    skip :func:`make_env` applies (Atari and other image envs); TrackMania:
    1 / ``trackmania.time_step``; :data:`DEFAULT_FRAME_RATE` for an env class without it.

    Raises:
        EnvIdError: see :func:`check_env_id`; "trackmania" without its config section.
    """
    if spec.env_id == TRACKMANIA_ID:
        return 1.0 / _tm_section(trackmania).time_step
    _check_registered(spec.env_id)
    with warnings.catch_warnings():  # importing Box2D's module: see _SWIG_IMPORT_WARNING
        warnings.filterwarnings("ignore", message=_SWIG_IMPORT_WARNING, category=DeprecationWarning)
        entry = gym.spec(spec.env_id).entry_point  # "module:Class" or the class itself
        creator = load_env_creator(entry) if isinstance(entry, str) else entry
    fps = getattr(creator, "metadata", {}).get("render_fps")
    if not fps:
        return DEFAULT_FRAME_RATE
    return float(fps) / (frame_skip if spec.is_image else 1)


def _spec_from_spaces(
    env_id: str,
    observation_space: gym.spaces.Box,
    action_space: gym.spaces.Discrete | gym.spaces.Box,
    frame_skip: int,
    max_episode_steps: int | None,
) -> EnvSpec:
    """EnvSpec from the (single-env) spaces of a :func:`make_env` env."""
    is_image = observation_space.dtype == np.uint8  # non-image observations were cast to float32
    continuous = isinstance(action_space, gym.spaces.Box)
    action_shape = tuple(int(d) for d in action_space.shape)
    return EnvSpec(
        env_id=env_id,
        frame_shape=tuple(int(d) for d in observation_space.shape),
        frame_dtype=np.dtype(observation_space.dtype),
        num_actions=action_shape[0] if continuous else int(action_space.n),
        continuous=continuous,
        action_shape=action_shape,
        action_dtype=np.dtype(np.float32 if continuous else np.int32),
        is_image=bool(is_image),
        max_episode_steps=_agent_step_limit(env_id, is_image, frame_skip, max_episode_steps),
    )


def _check_no_render(render_mode: str | None) -> None:
    """EnvIdError for a render_mode of the TrackMania env, which has none."""
    if render_mode is not None:
        raise EnvIdError(f"env id 'trackmania' has no render_mode ({render_mode!r} given): "
                         "its observation frames are the game's pictures")


def _tm_section(trackmania: Any) -> Any:
    if trackmania is None:
        raise EnvIdError("env id 'trackmania' needs the trackmania config section: pass "
                         "trackmania=config.trackmania")
    return trackmania


def env_worker(*args: Any) -> None:
    """The process of one env of our asynchronous vector envs (``AsyncVectorEnv(worker=...)``,
    gymnasium's worker arguments): gymnasium's own worker, which ignores Ctrl-C and exits
    quietly when the training process is gone.

    Ctrl-C reaches the whole process group; the training process handles it (checkpoint, then
    close the workers), so a worker must not die mid-step. A training process that dies
    (SIGKILL, SIGTERM) closes its ends of the pipes: gymnasium's worker then fails to read the
    next command or to send a result (EOFError, BrokenPipeError, ConnectionResetError) and
    would print two tracebacks; here those errors end the worker silently once the parent is
    gone. A worker still inside a long env call is ended ``_ORPHAN_GRACE_S`` after its
    parent's death.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = exit_with_parent()
    try:
        _async_worker(*args)
    except (EOFError, OSError):
        # A dying parent closes the pipe just before its sentinel: wait a little for it.
        parent.join(timeout=1.0)
        if parent.is_alive():
            raise


def exit_with_parent() -> multiprocessing.process.BaseProcess:
    """In a child process of ``multiprocessing``: end this process (``os._exit(0)``, no
    traceback) ``_ORPHAN_GRACE_S`` after its parent dies. Returns the parent process."""
    parent = multiprocessing.parent_process()
    threading.Thread(target=_exit_after, args=(parent,), daemon=True,
                     name="exit-with-parent").start()
    return parent


def _exit_after(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()
    time.sleep(_ORPHAN_GRACE_S)
    os._exit(0)


def resolve_backend(env_id: str, backend: str = "auto", *, noop_max: int = 30) -> str:
    """The vector-env backend :func:`make_vector_env` uses for ``env_id``: ``"envpool"`` or
    ``"gymnasium"`` (see :data:`BACKENDS`). Imports envpool (seconds) for an ``ALE/*`` id when
    it is installed.

    Raises:
        ValueError: ``backend`` not one of :data:`BACKENDS`.
        EnvIdError: ``backend="envpool"`` for an id envpool cannot run (not ``ALE/<Game>-v5``,
            envpool not installed, no ROM for the game, or ``noop_max`` 0).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(repr(b) for b in BACKENDS)}, got "
                         f"{backend!r}")
    if backend == "gymnasium":
        return backend
    from envs import envpool_env

    if not _is_atari(env_id):
        why = "envpool runs ALE/* Atari ids only"
    elif not envpool_env.envpool_installed():
        why = f"envpool is not installed; {envpool_env.ENVPOOL_HINT}"
    elif envpool_env.envpool_game(env_id) is None:
        why = "envpool has no ALE v5 game of that name"
    elif noop_max < 1:
        why = "envpool always takes at least one no-op at reset (noop_max must be >= 1)"
    else:
        return "envpool"
    if backend == "envpool":
        raise EnvIdError(f"backend 'envpool' cannot run {env_id!r}: {why}; use backend "
                         "'gymnasium' or 'auto'.")
    return "gymnasium"


def make_vector_env(
    env_id: str,
    num_envs: int,
    *,
    asynchronous: bool,
    seed: int,
    trackmania: Any = None,
    backend: str = "auto",
    **make_kwargs: Any,
) -> gym.vector.VectorEnv:
    """``num_envs`` copies of :func:`make_env` in one vector env, autoreset mode NEXT_STEP.

    ``backend`` (:func:`resolve_backend`): envpool runs an ``ALE/*`` id as one
    :class:`envs.envpool_env.EnvpoolAtari` (C++ threads in this process, whatever
    ``asynchronous`` says; same frames, rewards and flags as the gymnasium env on a fixed game,
    other random streams for no-ops and sticky actions). Otherwise gymnasium:

    Asynchronous: ``AsyncVectorEnv`` with shared-memory observations and ``spawn`` worker
    processes (the learner process runs JAX threads, so forking it is unsafe) running
    :func:`env_worker` (they ignore Ctrl-C and exit quietly when this process dies). Otherwise
    a ``SyncVectorEnv`` in this process. Sub-env ``i`` uses seed ``seed + i`` (its first reset and
    action space; ``VectorEnv.reset(seed=seed)`` gives the same per-env seeds).

    ``make_kwargs`` are passed to :func:`make_env` (frame_skip, image_size, max_episode_steps,
    action_space, noop_max, repeat_action_probability, no_progress_timeout (gymnasium's envs
    only: backend auto then runs them), render_mode: ``render()`` then returns each sub-env's
    picture; envpool renders none, so backend auto runs gymnasium's envs with a render_mode).
    Observations are batched on a leading axis of size ``num_envs``, and so are actions: int
    [num_envs] for discrete, float32 [num_envs, d] in [-1, 1] for continuous.

    ``env_id="trackmania"`` (with its ``trackmania`` config section) gives the game in its
    guarded worker (:func:`envs.trackmania.make_tm_vector_env`): one env, always in a worker.

    Raises:
        EnvIdError: see :func:`check_env_id` (raised in this process, before workers start:
            both vector envs build the first env here); trackmania with num_envs != 1; see
            :func:`resolve_backend`; backend envpool with a render_mode.
        ValueError: num_envs < 1, bad make_kwargs (action_space included) or backend.
    """
    if int(num_envs) != num_envs or num_envs < 1:
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    if make_kwargs.get("render_mode") is not None:
        if env_id == TRACKMANIA_ID:
            _check_no_render(make_kwargs["render_mode"])
        if backend == "envpool":
            raise EnvIdError(f"backend 'envpool' renders no pictures of {env_id!r}: use backend "
                             "'gymnasium' or 'auto' with a render_mode")
        backend = "gymnasium"
    if make_kwargs.get("no_progress_timeout") is None:
        make_kwargs.pop("no_progress_timeout", None)  # TrackMania's and envpool's envs lack it
    elif backend == "envpool":
        raise ValueError("backend 'envpool' has no no_progress_timeout: use backend "
                         "'gymnasium' or 'auto'")
    else:
        backend = "gymnasium"
    if resolve_backend(env_id, backend, noop_max=make_kwargs.get("noop_max", 30)) == "envpool":
        return _envpool_vector_env(env_id, num_envs, seed, make_kwargs)
    if env_id == TRACKMANIA_ID:
        return _tm_vector_env(num_envs, trackmania, make_kwargs)
    if "seed" in make_kwargs:
        raise ValueError("pass seed as make_vector_env's own argument, not in make_kwargs")
    # Module-level function + partial: picklable for spawned workers.
    env_fns = [
        functools.partial(make_env, env_id, seed=seed + i, **make_kwargs) for i in range(num_envs)
    ]
    if asynchronous:
        envs = gym.vector.AsyncVectorEnv(
            env_fns,
            shared_memory=True,
            context="spawn",
            autoreset_mode=AutoresetMode.NEXT_STEP,
            worker=env_worker,
        )
    else:
        envs = gym.vector.SyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.NEXT_STEP)
    if envs.metadata.get("autoreset_mode") != AutoresetMode.NEXT_STEP:
        envs.close()
        raise RuntimeError("expected a NEXT_STEP autoreset vector env")
    return envs


def _envpool_vector_env(env_id: str, num_envs: int, seed: int, make_kwargs: dict
                        ) -> gym.vector.VectorEnv:
    """``make_vector_env``'s envpool backend, its spaces checked against gymnasium's env.

    Raises:
      RuntimeError: envpool's spaces differ from the gymnasium env's.
    """
    from envs.envpool_env import EnvpoolAtari

    # The gymnasium env checks the id and the arguments, and gives the spaces to match.
    probe = make_env(env_id, **make_kwargs)
    try:
        envs = EnvpoolAtari(env_id, num_envs, seed=seed,
                            **{k: v for k, v in make_kwargs.items() if k != "action_space"})
        if (envs.single_observation_space, envs.single_action_space) != \
                (probe.observation_space, probe.action_space):
            envs.close()
            raise RuntimeError(
                f"envpool's {env_id!r} has spaces {envs.single_observation_space}, "
                f"{envs.single_action_space}; gymnasium's {probe.observation_space}, "
                f"{probe.action_space}")
    finally:
        probe.close()
    return envs


def _tm_vector_env(num_envs: int, trackmania: Any, make_kwargs: dict) -> gym.vector.VectorEnv:
    """``make_vector_env`` for TrackMania: the game in its guarded worker.

    Raises:
      EnvIdError: num_envs != 1; ValueError: bad make_kwargs.
    """
    from envs.trackmania import make_tm_vector_env

    if num_envs != 1:
        raise EnvIdError(f"trackmania runs one game per machine (fixed plugin port, window "
                         f"and gamepad): env.num_envs must be 1, got {num_envs}")
    make_kwargs = {k: v for k, v in make_kwargs.items() if k != "frame_skip"}
    _check_make_args(1, make_kwargs.get("image_size", 64), make_kwargs.get("max_episode_steps"),
                     make_kwargs.get("action_space", "auto"))
    return make_tm_vector_env(_tm_section(trackmania), **make_kwargs)
