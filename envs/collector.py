"""Vector-env steps -> replay slots, plus the frame stacks and action history the policy sees.

Host-only numpy (no jax). The replay buffer stores one slot per env per vector step, with ONE
frame and action each; it rebuilds stacks and previous actions when sampling with the same rules
as :class:`FrameStacker` and :class:`ActionHistory`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from envs.make import EnvSpec, join_obs, split_obs

__all__ = ["ActionHistory", "BadEnvValue", "Collector", "EpisodeStats", "FrameStacker",
           "SLOT_KEYS", "replay_reward"]

SLOT_KEYS = ("obs", "action", "reward", "terminated", "truncated", "valid", "steps_since_start")
"""The keys of a slot dict returned by :meth:`Collector.step`, in a fixed order."""


@dataclasses.dataclass(frozen=True)
class EpisodeStats:
    """One finished episode of one sub-env."""

    env_index: int
    """Index of the sub-env in the vector env."""
    return_: float
    """Sum of the raw (unclipped) rewards."""
    length: int
    """Number of agent steps (actions taken) in the episode."""
    truncated: bool
    """True if the episode ended by truncation (time limit), False if it terminated."""


class BadEnvValue(ValueError):
    """An env emitted a value that must not enter the replay: a NaN or infinite reward,
    frame or feature, or observations of the wrong shape or dtype.

    Attributes:
      env_id: the env's id. env_index: the sub-env, or None when the whole vector
      observation is wrong. field: ``reward``, ``frame``, ``features`` or ``observation``.
      detail: what was wrong. env_step: the run's env step, where the caller knows it
      (:class:`launch.actor.Actor` sets it), else None.
    """

    def __init__(self, env_id: str, env_index: int | None, field: str, detail: str):
        super().__init__(env_id, env_index, field, detail)
        self.env_id, self.env_index, self.field, self.detail = env_id, env_index, field, detail
        self.env_step: int | None = None

    def __str__(self) -> str:
        where = "all envs" if self.env_index is None else f"env index {self.env_index}"
        step = "" if self.env_step is None else f" at env step {self.env_step}"
        return f"{self.env_id!r}, {where}{step}: bad {self.field}: {self.detail}"


def replay_reward(raw: np.ndarray, reward_scale: float, reward_clip: float | None) -> np.ndarray:
    """The reward as stored in replay: float32 ``raw * reward_scale``, then clipped to
    ``[-reward_clip, reward_clip]`` unless ``reward_clip`` is None (same shape as ``raw``)."""
    reward = (np.asarray(raw, np.float64) * reward_scale).astype(np.float32)
    if reward_clip is not None:
        reward = np.clip(reward, -reward_clip, reward_clip)
    return reward


class FrameStacker:
    """The last ``k`` frames of each of ``E`` streams, oldest first: [E, k, *frame_shape].

    Frames before an episode's start are that episode's first frame repeated (gymnasium
    ``FrameStackObservation(padding_type="reset")``), so a stack at episode step ``s`` is
    ``frames[t - min(k - 1 - j, s)]`` for ``j = 0..k-1``: exactly what a replay that stores one
    frame per step and its ``steps_since_start`` rebuilds.
    """

    def __init__(self, num_envs: int, k: int, frame_shape: tuple[int, ...], dtype: np.dtype):
        if k < 1:
            raise ValueError(f"frame_stack must be >= 1, got {k}")
        self.k = k
        self._buf = np.zeros((num_envs, k, *frame_shape), dtype=dtype)

    def reset(self, frames: np.ndarray) -> None:
        """Start a new episode in every stream with first frames ``frames`` [E, *frame_shape]."""
        self._buf[:] = frames[:, None]

    def push(self, frames: np.ndarray, new_episode: np.ndarray) -> None:
        """Append ``frames`` [E, *frame_shape]; streams where ``new_episode`` [E] bool is True
        start over (their stack becomes the frame repeated ``k`` times)."""
        self._buf[:, :-1] = self._buf[:, 1:]  # numpy handles the overlapping copy
        self._buf[:, -1] = frames
        if new_episode.any():
            self._buf[new_episode] = frames[new_episode][:, None]

    @property
    def stacks(self) -> np.ndarray:
        """A copy of the current stacks, [E, k, *frame_shape], oldest frame first."""
        return self._buf.copy()


class ActionHistory:
    """The last ``h`` actions of each of ``E`` streams, oldest first: int32 [E, h].

    Positions before an episode's start hold -1, so for the frame at vector step ``t`` and
    episode step ``s`` entry ``i`` is ``actions[t - (h - i)]`` if ``h - i <= s`` else -1: exactly
    what the replay's ``Batch.prev_actions`` rebuilds from stored actions and
    ``steps_since_start``.
    """

    def __init__(self, num_envs: int, h: int):
        if h < 0:
            raise ValueError(f"action_history must be >= 0, got {h}")
        self.h = h
        self._buf = np.full((num_envs, h), -1, np.int32)

    def reset(self) -> None:
        """Start a new episode in every stream (no actions taken yet)."""
        self._buf[:] = -1

    def push(self, actions: np.ndarray, new_episode: np.ndarray) -> None:
        """Append ``actions`` [E]; streams where ``new_episode`` [E] bool is True start over
        (all -1: the env autoreset and ignored that action)."""
        # Concatenate-then-drop also covers h == 0, where there is no last column to write.
        self._buf[:] = np.concatenate([self._buf, actions[:, None]], axis=1)[:, 1:]
        self._buf[new_episode] = -1

    @property
    def actions(self) -> np.ndarray:
        """A copy of the current histories, int32 [E, h], oldest action first."""
        return self._buf.copy()


class Collector:
    """Steps a NEXT_STEP-autoreset vector env and turns each step into replay slots.

    A slot (one per env per vector step; every field an array with leading axis E = num_envs):

    * ``obs`` [E, *frame_shape] (spec dtype): the frame o_t the action was chosen at; with
      ``spec.feature_size`` F > 0 the dict ``{"frame": [E, *frame_shape], "features": float32
      [E, F]}`` (:func:`envs.make.join_obs`).
    * ``action`` a_t: int32 [E] for a discrete spec, float32 [E, d] (in [-1, 1]) for a
      continuous one (``spec.action_shape == (d,)``).
    * ``reward`` [E] float32: reward after a_t, times ``reward_scale``, then clipped to
      ``[-reward_clip, reward_clip]`` if ``reward_clip`` is not None.
    * ``terminated``, ``truncated`` [E] bool: the step's flags.
    * ``valid`` [E] bool: False on the autoreset step that follows an episode end (the env
      ignored a_t and returned its reset frame, reward 0, no flags); that slot's ``obs`` is the
      FINAL frame of the ended episode. True otherwise.
    * ``steps_since_start`` [E] int32: steps since the episode began at o_t (0 at a reset frame;
      an episode of length L has its final-frame slot at L).

    The policy input is :attr:`stacked_obs` and, with ``action_history`` h > 0 (discrete
    actions only), :attr:`prev_actions`; both match what the replay rebuilds for the slot of the
    next step. :meth:`step` is :meth:`step_async` then :meth:`step_wait`; between the two the
    caller may work (the learner trains) while asynchronous workers step.

    Episode statistics use raw rewards. Not thread-safe; one owner steps it.

    A NaN or infinite reward, frame or feature of sub-env i (:meth:`bad_values`) never
    reaches a slot: with ``on_bad_value="error"`` :meth:`step_wait` raises
    :class:`BadEnvValue`; with ``"drop_episode"`` the slot's values of env i are zeroed,
    env i is reset alone (``reset_mask``, a fresh seed) so its next slot opens a new
    episode, its episode is left out of the returned statistics, and :attr:`last_dropped`
    names it: the caller drops that stream's episode from the replay.
    """

    def __init__(
        self,
        envs: gym.vector.VectorEnv,
        spec: EnvSpec,
        frame_stack: int,
        reward_clip: float | None,
        action_history: int = 0,
        reward_scale: float = 1.0,
        on_bad_value: str = "error",
    ):
        """Raises ValueError if the vector env does not autoreset in NEXT_STEP mode, for a
        non-positive frame_stack / reward_clip / reward_scale, a negative action_history, an
        action_history > 0 with a continuous spec, or an ``on_bad_value`` other than error /
        drop_episode."""
        mode = envs.metadata.get("autoreset_mode")
        if mode != AutoresetMode.NEXT_STEP:
            raise ValueError(f"Collector needs a NEXT_STEP autoreset vector env, got {mode!r}")
        if spec.continuous and action_history:
            # The history feeds one-hot previous actions to discrete heads; a float action has
            # no such encoding.
            raise ValueError(
                f"action_history must be 0 for continuous actions ({spec.env_id!r}, action "
                f"shape {spec.action_shape}): it is for discrete actions, got {action_history!r}"
            )
        if reward_clip is not None and not reward_clip > 0:
            raise ValueError(f"reward_clip must be None or > 0, got {reward_clip!r}")
        if not reward_scale > 0:
            raise ValueError(f"reward_scale must be > 0, got {reward_scale!r}")
        if on_bad_value not in ("error", "drop_episode"):
            raise ValueError(f"on_bad_value must be error or drop_episode, got {on_bad_value!r}")
        self.on_bad_value = on_bad_value
        self.last_dropped: list[BadEnvValue] = []
        """The envs whose episode the last step dropped (``drop_episode``), one each."""
        self._seed = 0
        self._reseeds = 0  # sub-env resets after a bad value: each gets a fresh seed
        self.envs = envs
        self.spec = spec
        self.num_envs = envs.num_envs
        self.frame_stack = frame_stack
        self.reward_clip = reward_clip
        self.reward_scale = reward_scale
        self.total_env_steps = 0
        """Number of valid slots produced (agent steps actually taken) since construction."""
        self._stacker = FrameStacker(self.num_envs, frame_stack, spec.frame_shape, spec.frame_dtype)
        self._feature_stacker = FrameStacker(self.num_envs, frame_stack, (spec.feature_size,),
                                             np.float32)
        self._history = ActionHistory(self.num_envs, action_history)
        self._obs: Any = None
        self._pending: dict[str, np.ndarray] | None = None  # slot of a step_async in flight
        self.last_info: dict[str, Any] = {}
        """The vector env's info dict of the last step (per-env arrays, gymnasium layout)."""
        e = self.num_envs
        self._steps = np.zeros(e, np.int32)
        self._ended = np.zeros(e, bool)  # the last step ended the episode: next step autoresets
        self._return = np.zeros(e, np.float64)
        self._length = np.zeros(e, np.int64)

    def reset(self, seed: int) -> None:
        """Reset every sub-env (sub-env i with seed ``seed + i``) and start new episodes."""
        obs, _ = self.envs.reset(seed=seed)
        frames, features = self._check_obs(obs)
        bad = self.bad_values(np.zeros(self.num_envs), frames, features)
        if bad:  # no episode to drop yet
            raise bad[0]
        self._seed, self._reseeds = seed, 0
        self.last_dropped = []
        self._obs = join_obs(self.spec, frames, features)
        self._stacker.reset(frames)
        self._feature_stacker.reset(features)
        self._history.reset()
        self._pending = None
        self._steps[:] = 0
        self._ended[:] = False
        self._return[:] = 0.0
        self._length[:] = 0

    @property
    def stacked_obs(self) -> Any:
        """Policy input for the current frames: [E, frame_stack, *frame_shape], spec dtype,
        oldest frame first, padded with each episode's first frame (see :class:`FrameStacker`);
        with F > 0 features, ``{"frame": that, "features": float32 [E, frame_stack, F]}``
        stacked the same way."""
        self._require_reset()
        return join_obs(self.spec, self._stacker.stacks, self._feature_stacker.stacks)

    @property
    def step_valid(self) -> np.ndarray:
        """bool [E]: whether the next step (or the one in flight) is a real step of each env,
        False where it is the autoreset step after an episode end."""
        return ~self._ended

    @property
    def steps_since_start(self) -> np.ndarray:
        """int32 [E]: episode step of each env's current frame (0 at a reset frame), a copy."""
        return self._steps.copy()

    @property
    def prev_actions(self) -> np.ndarray:
        """Actions taken before the current frames: int32 [E, action_history], oldest first, -1
        before each episode's start (all -1 right after a reset or autoreset; see
        :class:`ActionHistory`). Always [E, 0] for continuous actions."""
        self._require_reset()
        return self._history.actions

    def step(self, actions: np.ndarray) -> tuple[dict[str, np.ndarray], list[EpisodeStats]]:
        """Take one vector step with ``actions`` [E, *spec.action_shape]: integers in
        [0, num_actions) for a discrete spec ([E]), floats in [-1, 1] for a continuous one
        ([E, d]). They are cast to ``spec.action_dtype`` (int32 / float32).

        Returns the slot dict for this step (keys :data:`SLOT_KEYS`; o_t is the frame before the
        step) and the episodes that ended in this step.
        """
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: np.ndarray) -> None:
        """Send ``actions`` (as in :meth:`step`) to the envs without waiting for the result.

        Raises:
          ValueError: wrong action shape. RuntimeError: a step is already in flight, or no
          reset yet.
        """
        self._require_reset()
        if self._pending is not None:
            raise RuntimeError("step_async called twice without step_wait")
        # A copy: the slot must not alias the caller's array.
        actions = np.array(actions, dtype=self.spec.action_dtype)
        expected = (self.num_envs, *self.spec.action_shape)
        if actions.shape != expected:
            raise ValueError(f"actions must have shape {expected}, got {actions.shape}")
        # Vector envs without step_async (SyncVectorEnv) step in step_wait.
        if hasattr(self.envs, "step_async"):
            self.envs.step_async(actions)
        self._pending = {
            "obs": self._obs,
            "action": actions,
            "steps_since_start": self._steps.copy(),
            "valid": ~self._ended,
        }

    def step_wait(self) -> tuple[dict[str, np.ndarray], list[EpisodeStats]]:
        """Finish the step started by :meth:`step_async`; returns what :meth:`step` returns.
        If it raises, the step stays in flight: the envs are unusable and the caller must
        replace this collector.

        Raises:
          RuntimeError: no step in flight. ValueError: observations that do not fit the spec.
          Whatever the vector env raises (e.g. ``envs.GameConnectionError``)."""
        if self._pending is None:
            raise RuntimeError("step_wait called without step_async")
        if hasattr(self.envs, "step_async"):
            result = self.envs.step_wait()
        else:
            result = self.envs.step(self._pending["action"])
        obs, reward, terminated, truncated, info = result
        slot, self._pending = self._pending, None
        self.last_info = info
        actions, valid = slot["action"], slot["valid"]
        frames, features = self._check_obs(obs)
        raw = np.asarray(reward, dtype=np.float64)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        self.last_dropped = self.bad_values(raw, frames, features)
        if self.last_dropped and self.on_bad_value == "error":
            raise self.last_dropped[0]
        dropped = np.zeros(self.num_envs, bool)
        dropped[[bad.env_index for bad in self.last_dropped]] = True
        if dropped.any():  # zeroed: no NaN is written even to a slot never sampled
            raw, frames, features = (np.where(dropped.reshape(-1, *[1] * (a.ndim - 1)), 0, a)
                                     .astype(a.dtype) for a in (raw, frames, features))
        slot["reward"] = replay_reward(raw, self.reward_scale, self.reward_clip)
        slot["terminated"] = terminated
        slot["truncated"] = truncated

        # Episode bookkeeping over the steps that really acted.
        self._return[valid] += raw[valid]
        self._length[valid] += 1
        ended = (terminated | truncated) & valid & ~dropped
        episodes = [
            EpisodeStats(
                env_index=int(i),
                return_=float(self._return[i]),
                length=int(self._length[i]),
                truncated=bool(truncated[i]),
            )
            for i in np.flatnonzero(ended)
        ]
        self._return[ended | dropped] = 0.0
        self._length[ended | dropped] = 0
        self.total_env_steps += int(valid.sum())
        if dropped.any():
            frames, features = self._reset_envs(dropped, frames, features)

        # Autoreset envs now show a reset frame (count 0, fresh stack); others continue.
        reset_now = ~valid | dropped
        self._steps = np.where(reset_now, 0, self._steps + 1).astype(np.int32)
        self._stacker.push(frames, reset_now)
        self._feature_stacker.push(features, reset_now)
        if self._history.h:  # never for continuous actions: ActionHistory holds [E] ints
            self._history.push(actions, reset_now)
        self._ended = ended
        self._obs = join_obs(self.spec, frames, features)
        return {k: slot[k] for k in SLOT_KEYS}, episodes

    def close(self) -> None:
        """Close the vector env (and its worker processes)."""
        self.envs.close()

    def bad_values(self, raw: np.ndarray, frames: np.ndarray, features: np.ndarray
                   ) -> list[BadEnvValue]:
        """One :class:`BadEnvValue` per sub-env with a non-finite reward (``raw`` [E]), frame
        or feature (float frames only: integer frames cannot be), the first field found."""
        fields = [("reward", raw.reshape(self.num_envs, -1)),
                  ("features", features.reshape(self.num_envs, -1))]
        if np.issubdtype(frames.dtype, np.floating):
            fields.insert(1, ("frame", frames.reshape(self.num_envs, -1)))
        found: dict[int, BadEnvValue] = {}
        for field, values in fields:
            for i in np.flatnonzero(~np.isfinite(values).all(axis=1)):
                bad = values[i][~np.isfinite(values[i])]
                found.setdefault(int(i), BadEnvValue(
                    self.spec.env_id, int(i), field,
                    f"{bad.size} non-finite value(s), the first {float(bad[0])}"))
        return [found[i] for i in sorted(found)]

    def _reset_envs(self, mask: np.ndarray, frames: np.ndarray, features: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Reset the sub-envs of ``mask`` alone, each with a fresh seed; returns ``frames``
        and ``features`` with their rows replaced by the reset observations.

        Raises:
          BadEnvValue: a reset observation is bad too (there is no episode to drop)."""
        self._reseeds += 1
        seed = int(np.random.SeedSequence([self._seed, self._reseeds]).generate_state(1)[0])
        obs, _ = self.envs.reset(seed=seed, options={"reset_mask": mask})
        new_frames, new_features = self._check_obs(obs)
        bad = [b for b in self.bad_values(np.zeros(self.num_envs), new_frames, new_features)
               if mask[b.env_index]]
        if bad:
            raise bad[0]
        frames, features = frames.copy(), features.copy()
        frames[mask], features[mask] = new_frames[mask], new_features[mask]
        return frames, features

    def _require_reset(self) -> None:
        if self._obs is None:
            raise RuntimeError("call Collector.reset(seed) before stepping or reading stacked_obs")

    def _check_obs(self, obs: Any) -> tuple[np.ndarray, np.ndarray]:
        """(frames, features) of a vector observation, checked against the spec."""
        # Own copy: slots are handed out and a vector env built with copy=False reuses its buffer.
        frames, features = split_obs(self.spec, obs)
        frames, features = np.array(frames), np.array(features)
        expected = (self.num_envs, *self.spec.frame_shape)
        if frames.shape != expected or frames.dtype != self.spec.frame_dtype \
                or features.shape != (self.num_envs, self.spec.feature_size):
            raise BadEnvValue(
                self.spec.env_id, None, "observation",
                f"vector env observations are {frames.dtype}{list(frames.shape)} with features "
                f"{list(features.shape)}, the spec says {np.dtype(self.spec.frame_dtype)}"
                f"{list(expected)} with features {[self.num_envs, self.spec.feature_size]}: was "
                "the spec built with the same make kwargs as the vector env?"
            )
        return frames, features
