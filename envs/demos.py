"""Recorded demonstrations: the on-disk episode format, its checks, and the replay slots it
becomes (seed 004's player runs, for every algorithm).

On disk, one numpy ``.npz`` file per episode, ``<dir>/episode_<NNNNNN>.npz``, holding:

============  ==========================  ================================================
key           shape, dtype                meaning
============  ==========================  ================================================
obs           [T + 1, *frame_shape]       the frames o_0 .. o_T exactly as ``make_env``
                                          emits them (one frame, no stack; uint8 images or
                                          float32 vectors); o_T is the final observation
features      float32 [T + 1, F]          optional: the env's float features of o_0 .. o_T
                                          (``EnvSpec.feature_size`` F > 0, TrackMania:
                                          speed, gear, rpm, previous actions); absent
                                          means F = 0
action        [T, *action_shape]          a_t: int32 in [0, num_actions), or float32 in
                                          [-1, 1]^d (CarRacing / TrackMania continuous:
                                          [gas, brake, steer])
reward        float32 [T]                 the env's raw reward after a_t (summed over the
                                          frame skip), before reward_scale / reward_clip
terminated    bool [T]                    the episode ended in a terminal state after a_t
truncated     bool [T]                    the episode was cut after a_t (time limit)
meta          0-d str (JSON object)       ``format`` (1), ``env_id``, ``frame_skip``,
                                          ``image_size``, ``action_space`` (discrete /
                                          continuous), ``source`` (free text: policy, player)
============  ==========================  ================================================

T >= 1, and exactly one of ``terminated`` / ``truncated`` is set, on the last step only.
``features`` is written only when F > 0, so files of envs without features (and files written
before the key existed) are the same format 1.
``launch/record_demos.py`` writes this format from any policy; other sources (a human-driven
run: ``--policy human``) write it with :func:`save_episode`. Host-only numpy (no jax).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.collector import SLOT_KEYS, replay_reward
from envs.make import EnvSpec, join_obs, split_obs

__all__ = [
    "FORMAT_VERSION",
    "DemoEpisode",
    "DemoError",
    "EpisodeSplitter",
    "demo_slots",
    "episode_path",
    "load_demos",
    "load_episode",
    "save_episode",
]

FORMAT_VERSION = 1
"""Version written in every episode's ``meta``; the loader accepts only this one."""

_ARRAYS = ("obs", "action", "reward", "terminated", "truncated")


class DemoError(ValueError):
    """A demo file or directory that cannot be used; the message names the file."""


@dataclasses.dataclass(frozen=True)
class DemoEpisode:
    """One recorded episode (see the module docstring for the fields' shapes).

    ``features`` may be left out (None): it becomes float32 [T + 1, 0], an env without
    features (T + 1 taken from ``obs``)."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    meta: dict[str, Any]
    features: np.ndarray | None = None

    def __post_init__(self):
        if self.features is None:  # frozen: set through object
            rows = self.obs.shape[0] if np.ndim(self.obs) else 0
            object.__setattr__(self, "features", np.zeros((rows, 0), np.float32))

    @property
    def length(self) -> int:
        """T, the number of actions taken."""
        return int(self.action.shape[0])

    @property
    def return_(self) -> float:
        """Sum of the raw rewards."""
        return float(np.sum(self.reward, dtype=np.float64))


def episode_path(directory: str | Path, index: int) -> Path:
    """``<directory>/episode_<index:06d>.npz``."""
    return Path(directory) / f"episode_{index:06d}.npz"


def save_episode(path: str | Path, episode: DemoEpisode) -> None:
    """Write ``episode`` to ``path`` (npz, uncompressed: frames are read back whole).

    Raises:
      DemoError: the episode breaks the format (checked with :func:`_check_layout`).
    """
    _check_layout(episode, str(path))
    meta = dict(episode.meta, format=FORMAT_VERSION)
    arrays = {k: getattr(episode, k) for k in _ARRAYS}
    if episode.features.shape[1]:  # F = 0 stays absent: the file reads as before the key
        arrays["features"] = episode.features
    with open(path, "wb") as f:
        np.savez(f, **arrays, meta=np.asarray(json.dumps(meta)))


def load_episode(path: str | Path) -> DemoEpisode:
    """Read one episode file.

    Raises:
      DemoError: unreadable file, a missing key, an unknown format version, or a layout that
        breaks the format; the message names the file and the field.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            contents = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise DemoError(f"{path}: not a readable demo episode (.npz): {e}") from None
    missing = [k for k in (*_ARRAYS, "meta") if k not in contents]
    if missing:
        raise DemoError(f"{path}: missing {missing}; a demo episode holds "
                        f"{[*_ARRAYS, 'meta']} (see envs/demos.py)")
    meta_text = str(contents["meta"])
    try:
        meta = json.loads(meta_text)
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict):
        raise DemoError(f"{path}: meta must be a JSON object, got {meta_text[:60]!r}")
    if meta.get("format") != FORMAT_VERSION:
        raise DemoError(f"{path}: meta.format is {meta.get('format')!r}; this version reads "
                        f"format {FORMAT_VERSION}")
    episode = DemoEpisode(**{k: contents[k] for k in _ARRAYS}, meta=meta,
                          features=contents.get("features"))
    _check_layout(episode, str(path))
    return episode


def _check_layout(episode: DemoEpisode, where: str) -> None:
    """Lengths, dtypes and end flags of the format; raises DemoError naming ``where``."""
    t = episode.action.shape[0] if episode.action.ndim else 0
    if t < 1:
        raise DemoError(f"{where}: action must have shape [T, ...] with T >= 1, got "
                        f"{list(episode.action.shape)}")
    if episode.obs.ndim < 1 or episode.obs.shape[0] != t + 1:
        raise DemoError(f"{where}: obs must have T + 1 = {t + 1} frames (o_0 .. o_T), got shape "
                        f"{list(episode.obs.shape)}")
    features = episode.features
    if features.ndim != 2 or features.shape[0] != t + 1 or features.dtype != np.float32:
        raise DemoError(f"{where}: features must be float32 [T + 1, F] = [{t + 1}, F] (o_0 .. "
                        f"o_T), got {features.dtype}{list(features.shape)}")
    for name in ("reward", "terminated", "truncated"):
        value = getattr(episode, name)
        if value.shape != (t,):
            raise DemoError(f"{where}: {name} must have shape [T] = [{t}], got {list(value.shape)}")
    for name in ("terminated", "truncated"):
        if getattr(episode, name).dtype != np.bool_:
            raise DemoError(f"{where}: {name} must be bool, got {getattr(episode, name).dtype}")
    if not np.issubdtype(episode.reward.dtype, np.floating) or not np.isfinite(episode.reward).all():
        raise DemoError(f"{where}: reward must hold finite floats, got {episode.reward.dtype}")
    done = episode.terminated | episode.truncated
    if not done[-1] or done[:-1].any() or (episode.terminated[-1] and episode.truncated[-1]):
        raise DemoError(f"{where}: exactly one of terminated / truncated must be set, on the last "
                        f"step only; set at steps {np.flatnonzero(done).tolist()} of {t}")


def _check_fits(episode: DemoEpisode, where: str, spec: EnvSpec, frame_skip: int) -> None:
    """The episode was recorded on ``spec``'s env with the same preprocessing."""
    meta = episode.meta
    if meta.get("env_id") != spec.env_id:
        raise DemoError(f"{where}: recorded on env {meta.get('env_id')!r}, this run trains on "
                        f"{spec.env_id!r}")
    kind = "continuous" if spec.continuous else "discrete"
    if meta.get("action_space") != kind:
        raise DemoError(f"{where}: recorded with {meta.get('action_space')!r} actions, this run "
                        f"uses {kind} ones (env.action_space)")
    if spec.is_image and meta.get("frame_skip") != frame_skip:
        raise DemoError(f"{where}: recorded with frame_skip {meta.get('frame_skip')!r}, this run "
                        f"uses env.frame_skip={frame_skip}")
    frames = episode.obs
    if frames.shape[1:] != spec.frame_shape or frames.dtype != spec.frame_dtype:
        raise DemoError(f"{where}: obs frames are {frames.dtype}{list(frames.shape[1:])}, this "
                        f"run's env emits {np.dtype(spec.frame_dtype)}{list(spec.frame_shape)} "
                        "(check env.image_size)")
    if episode.features.shape[1] != spec.feature_size:
        raise DemoError(f"{where}: features have {episode.features.shape[1]} values per step, "
                        f"this run's env emits {spec.feature_size} (TrackMania: check "
                        "trackmania.interface and trackmania.action_history)")
    action = episode.action
    if action.shape[1:] != spec.action_shape:
        raise DemoError(f"{where}: actions have shape {list(action.shape[1:])} per step, this "
                        f"run's env takes {list(spec.action_shape)}")
    if spec.continuous:
        ok = np.issubdtype(action.dtype, np.floating) and np.isfinite(action).all() and (
            np.abs(action) <= 1.0).all()
        allowed = "floats in [-1, 1]"
    else:
        ok = np.issubdtype(action.dtype, np.integer) and (action >= 0).all() and (
            action < spec.num_actions).all()
        allowed = f"integers in [0, {spec.num_actions})"
    if not ok:
        raise DemoError(f"{where}: action must hold {allowed}, got {action.dtype} in "
                        f"[{action.min()}, {action.max()}]")


def load_demos(directory: str | Path, spec: EnvSpec, *, frame_skip: int) -> list[DemoEpisode]:
    """All ``episode_*.npz`` files of ``directory``, in name order, checked against the env.

    Args:
      directory: the demo directory (``demos.path``).
      spec: the training env's :class:`EnvSpec`.
      frame_skip: the run's ``env.frame_skip`` (checked for image envs only; vector envs ignore
        it).

    Returns:
      The episodes (at least one).

    Raises:
      DemoError: the directory is missing or holds no episode file, or a file is unreadable,
        breaks the format, or was recorded on another env, action kind, frame skip, frame
        shape, feature width or action shape; the message names the file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DemoError(f"demos.path {str(directory)!r} is not a directory")
    files = sorted(directory.glob("episode_*.npz"))
    if not files:
        raise DemoError(f"demos.path {str(directory)!r} holds no episode_*.npz files; record "
                        "some with launch/record_demos.py")
    episodes = []
    for path in files:
        episode = load_episode(path)
        _check_fits(episode, str(path), spec, frame_skip)
        episodes.append(episode)
    return episodes


def demo_slots(
    episodes: Sequence[DemoEpisode],
    spec: EnvSpec,
    num_streams: int,
    *,
    repeat: int = 1,
    reward_scale: float = 1.0,
    reward_clip: float | None = None,
) -> dict[str, np.ndarray]:
    """The replay slots that inject ``episodes`` (``repeat`` times over) into E streams.

    Each episode becomes T + 1 consecutive slots of one stream, laid out as the collector's
    (:class:`envs.collector.Collector`): slot t < T holds (o_t, a_t, r_t, flags_t),
    ``valid=True``, ``steps_since_start=t``; slot T holds the final frame o_T with
    ``valid=False`` (read only as a bootstrap or stack frame). Episodes go to the stream with
    the fewest slots so far, in order; shorter streams are padded at the end with zero
    ``valid=False`` slots, so every stream's next (collected) slot starts a fresh episode.
    Rewards are transformed as the collector's (:func:`envs.collector.replay_reward`).

    Args:
      episodes: checked episodes (:func:`load_demos`).
      spec: the env's spec (dtypes of the stored frames and actions).
      num_streams: E, the replay's env streams.
      repeat: times the whole list is laid out (seed 004 DEMO_INJECTION_REPEAT), >= 1.
      reward_scale, reward_clip: the run's env.reward_scale / env.reward_clip.

    Returns:
      dict with keys :data:`envs.collector.SLOT_KEYS` plus ``is_demo`` (True on demo slots,
      False on padding), each an array with leading axes [L, E] (L = the longest stream), in
      the dtypes the collector emits; ``obs`` is the observation pytree
      (:func:`envs.make.join_obs`: frames [L, E, *frame_shape], and with F > 0 the dict with
      features float32 [L, E, F]). Ready for ``DeviceReplay.add_sequence``.

    Raises:
      ValueError: no episodes, num_streams < 1 or repeat < 1.
    """
    if not episodes:
        raise ValueError("demo_slots needs at least one episode")
    if num_streams < 1 or repeat < 1:
        raise ValueError(f"num_streams and repeat must be >= 1, got {num_streams}, {repeat}")
    streams: list[list[int]] = [[] for _ in range(num_streams)]
    lengths = [0] * num_streams
    for _ in range(repeat):
        for i, episode in enumerate(episodes):
            e = int(np.argmin(lengths))
            streams[e].append(i)
            lengths[e] += episode.length + 1
    total = max(lengths)
    frames = np.zeros((total, num_streams, *spec.frame_shape), spec.frame_dtype)
    features = np.zeros((total, num_streams, spec.feature_size), np.float32)
    out = {
        "obs": join_obs(spec, frames, features),
        "action": np.zeros((total, num_streams, *spec.action_shape), spec.action_dtype),
        "reward": np.zeros((total, num_streams), np.float32),
        "terminated": np.zeros((total, num_streams), bool),
        "truncated": np.zeros((total, num_streams), bool),
        "valid": np.zeros((total, num_streams), bool),
        "steps_since_start": np.zeros((total, num_streams), np.int32),
        "is_demo": np.zeros((total, num_streams), bool),
    }
    for e, order in enumerate(streams):
        t0 = 0
        for i in order:
            ep = episodes[i]
            t, end = ep.length, t0 + ep.length
            frames[t0:end + 1, e] = ep.obs
            features[t0:end + 1, e] = ep.features
            out["action"][t0:end, e] = ep.action
            out["reward"][t0:end, e] = replay_reward(ep.reward, reward_scale, reward_clip)
            out["terminated"][t0:end, e] = ep.terminated
            out["truncated"][t0:end, e] = ep.truncated
            out["valid"][t0:end, e] = True
            out["steps_since_start"][t0:end + 1, e] = np.arange(t + 1)
            out["is_demo"][t0:end + 1, e] = True
            t0 = end + 1
    return out


class EpisodeSplitter:
    """Turns a collector's slots (:meth:`envs.collector.Collector.step`, built with
    ``reward_scale=1`` and ``reward_clip=None``) back into whole :class:`DemoEpisode` s.

    Args:
      num_envs: E, the vector env's size.
      meta: the ``meta`` every episode gets (env_id, frame_skip, image_size, action_space,
        source).
      spec: the env's spec; slot observations are its pytrees (:func:`envs.make.split_obs`).
    """

    def __init__(self, num_envs: int, meta: dict[str, Any], spec: EnvSpec):
        self.meta = dict(meta)
        self.spec = spec
        self._open: list[list[dict[str, np.ndarray]]] = [[] for _ in range(num_envs)]

    def push(self, slot: dict[str, np.ndarray]) -> list[tuple[int, DemoEpisode]]:
        """Add one vector step's slot; returns ``(env_index, episode)`` for every episode
        whose final frame arrived in this slot (the collector's ``valid=False`` slot)."""
        done = []
        frames, features = split_obs(self.spec, slot["obs"])
        for e, steps in enumerate(self._open):
            if slot["valid"][e]:
                steps.append({k: slot[k][e] for k in SLOT_KEYS if k != "obs"}
                             | {"frame": frames[e], "features": features[e]})
                continue
            if not steps:  # the final frame of an episode that started before recording
                continue
            episode = DemoEpisode(
                obs=np.stack([s["frame"] for s in steps] + [frames[e]]),
                action=np.stack([s["action"] for s in steps]),
                reward=np.asarray([s["reward"] for s in steps], np.float32),
                terminated=np.asarray([s["terminated"] for s in steps], bool),
                truncated=np.asarray([s["truncated"] for s in steps], bool),
                meta=dict(self.meta),
                features=np.stack([s["features"] for s in steps] + [features[e]]),
            )
            steps.clear()
            done.append((e, episode))
        return done
