"""TrackMania 2020 reward: progress along a recorded trajectory (tmrl's semantics) plus seed
004's shaping terms. Host-only numpy: no jax, no tmrl and no ``rl`` import (the reward knobs
come in as any object with the attributes of ``rl.config.TrackmaniaConfig``).

Trajectory
    ``data``: float64 [N, 3] points (metres, game coordinates) 0.1 m apart along a driven
    line (tmrl's ``reward.pkl``, written by ``tmrl/tools/record.py``; see
    :func:`resample_trajectory`). 100 points = 10 m = 1.0 of progress reward.

Progress (tmrl 0.7.1 ``tmrl/custom/tm/utils/compute_reward.py``, reimplemented)
    State: ``cur_idx`` (matched point), ``step_counter``, ``failure_counter``. Each step, with
    the car at ``pos``:

    * ``step_counter += 1``.
    * Forward search from ``cur_idx``: points are examined in increasing order; a point at
      distance ``<=`` the best so far becomes the best and restarts the window, so the search
      ends ``check_forward - 1`` points after the last improvement, or at the last point. If
      the best distance is above ``max_stray`` metres the car is taken not to have moved
      (``best = cur_idx``).
    * Progress reward ``(best - cur_idx) / 100`` (>= 0).
    * If ``best == cur_idx`` ("no progress"): backward search (rewind) from ``cur_idx`` with
      window ``check_backward``, same rule going down; it never examines index 0 unless
      ``cur_idx`` is 0, and ignores ``max_stray``. Then, once ``step_counter > min_steps``,
      ``failure_counter += 1`` and the episode ends when ``failure_counter >
      failure_countdown`` (reason ``"no_progress"``).
    * Otherwise ``failure_counter = 0``.
    * ``cur_idx = best`` (the rewind's result on a no-progress step).

Seed 004's terms (section 10; our exact definitions)
    ``safe = speed_safe_deviation_ratio * max_stray`` metres; deviation ``d = ||pos -
    data[cur_idx]||`` with the NEW ``cur_idx`` (after the searches); ``off_line = d > safe``;
    ``v`` = speed in km/h, used as given (tmrl's speed is >= 0).

    1. Progress made off the line is multiplied by ``proximity_reward_shaping``.
    2. Speed bonus ``+ speed_bonus * v`` on steps with progress on the line.
    3. Off-track speed penalty ``- reckless_penalty_factor * (v / reckless_speed_threshold)
       * (d / safe)`` on every step off the line with ``v > 5``.
    4. Wall hug: on a no-progress step off the line with ``v > wall_hug_speed_threshold``,
       ``k = no_progress_steps += 1`` and ``- wall_hug_penalty_factor * k * (d / safe)``; the
       episode ends when ``k > 3 * failure_countdown`` (reason ``"wall_hug"``). Any other
       step sets ``no_progress_steps = 0``. Independent of ``min_steps``.
    5. ``- constant_penalty`` every step (tmrl ADDS its CONSTANT_PENALTY; ours is >= 0 and
       subtracted).
    6. Finish flag: ``+ end_of_track`` and the episode ends (reason ``"finish"``). All other
       terms are still computed on that step, as in tmrl.
    7. ``reward = tanh(reward_scale * raw)`` when ``reward_scale`` is not None, else ``raw``.

    When several endings fire on one step the reason is the first of ``"finish"``,
    ``"no_progress"``, ``"wall_hug"``. ``StepReward.terms`` holds the six signed
    contributions (penalties negative) whose sum is ``raw_reward``.

With the terms off (proximity 1, speed bonus, penalties and constant 0, no wall-hug
speed ever reached, reward_scale None) and no finish flag, ``raw_reward`` and ``terminated``
equal tmrl's ``RewardFunction.compute_reward`` step by step (``tests/test_tm_reward.py``).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "REWARD_CONFIG_KEYS",
    "StepReward",
    "TrackReward",
    "load_trajectory",
    "resample_trajectory",
    "save_trajectory",
]

REWARD_CONFIG_KEYS: dict[str, str] = {
    key: key.lower()
    for key in ("END_OF_TRACK", "CONSTANT_PENALTY", "CHECK_FORWARD", "CHECK_BACKWARD",
                "FAILURE_COUNTDOWN", "MIN_STEPS", "MAX_STRAY", "SPEED_SAFE_DEVIATION_RATIO",
                "RECKLESS_SPEED_THRESHOLD", "RECKLESS_PENALTY_FACTOR", "SPEED_BONUS",
                "WALL_HUG_SPEED_THRESHOLD", "WALL_HUG_PENALTY_FACTOR",
                "PROXIMITY_REWARD_SHAPING", "REWARD_SCALE")
}
"""Seed 004's REWARD_CONFIG key -> the ``params`` attribute (``TrackmaniaConfig`` field)."""

TERM_NAMES = ("progress", "speed_bonus", "off_track_penalty", "wall_hug_penalty",
              "constant_penalty", "finish_bonus")
"""Keys of :attr:`StepReward.terms`, in summation order."""

_RECKLESS_MIN_SPEED = 5.0  # km/h: below this, being off the line is not "reckless"
_INDICES_PER_UNIT = 100.0  # tmrl: 100 points (10 m) of progress = reward 1.0


@dataclasses.dataclass(frozen=True)
class StepReward:
    """The reward of one step and what it was made of."""

    reward: float
    """The reward: ``tanh(reward_scale * raw_reward)``, or ``raw_reward`` when reward_scale
    is None."""
    terminated: bool
    """The episode ends here (finish, no progress, or wall hug)."""
    reason: str | None
    """``"finish"``, ``"no_progress"``, ``"wall_hug"``, or None when not terminated."""
    progress_index: int
    """The trajectory point matched after this step (the new ``cur_idx``), in [0, N)."""
    deviation: float
    """Metres from the car to the matched trajectory point."""
    progress: float
    """Track completion ``progress_index / (N - 1)``, in [0, 1] (tmrl's LIDARPROGRESS
    observation divides by N instead)."""
    raw_reward: float
    """The sum of :attr:`terms`, before tanh."""
    terms: dict[str, float]
    """Signed contributions: progress, speed_bonus, off_track_penalty (<= 0),
    wall_hug_penalty (<= 0), constant_penalty (<= 0), finish_bonus."""


def _as_points(points: Any, what: str) -> np.ndarray:
    """``points`` as float64 [N, 3], N >= 2, finite; ValueError naming ``what`` otherwise."""
    try:
        arr = np.asarray(points)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{what}: not an array of points ({exc})") from None
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{what}: dtype {arr.dtype} is not a real number type")
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{what}: shape {arr.shape} is not [N, 3]")
    if arr.shape[0] < 2:
        raise ValueError(f"{what}: {arr.shape[0]} point(s), at least 2 needed")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: contains NaN or infinite values")
    return arr


def _param(params: Any, name: str) -> Any:
    try:
        return getattr(params, name)
    except AttributeError:
        raise TypeError(f"params has no reward field {name!r} (see "
                        "rl.config.TrackmaniaConfig)") from None


class TrackReward:
    """Reward and termination of a TrackMania episode from the car's position, speed and
    finish flag (tmrl 0.7.1 ``compute_reward.py`` + seed 004 section 10; see the module
    docstring for the exact rules).

    Parameters
    ----------
    trajectory : array_like, float [N, 3]
        Trajectory points in metres, 0.1 m apart (as :func:`load_trajectory` returns), N >= 2,
        finite. Copied as float64.
    params : object
        Any object with the reward attributes of ``rl.config.TrackmaniaConfig``
        (``end_of_track`` ... ``reward_scale``; see :data:`REWARD_CONFIG_KEYS`). Read once,
        here.

    Raises
    ------
    ValueError
        The trajectory is not [N, 3], has fewer than 2 points or non-finite values; or a
        parameter is out of range (windows and countdown integers >= 1, min_steps >= 0,
        max_stray, the safe ratio and the reckless threshold > 0, reward_scale None or > 0).
    TypeError
        ``params`` lacks one of the fields.
    """

    def __init__(self, trajectory: Any, params: Any):
        self._data = _as_points(trajectory, "trajectory")
        self._data.flags.writeable = False
        p = {name: _param(params, name) for name in REWARD_CONFIG_KEYS.values()}
        for name in ("check_forward", "check_backward", "failure_countdown", "min_steps"):
            value = p[name]
            low = 0 if name == "min_steps" else 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < low:
                raise ValueError(f"params.{name}={value!r}: must be an integer >= {low}")
        for name, value in p.items():
            if name == "reward_scale" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                    or not math.isfinite(value):
                raise ValueError(f"params.{name}={value!r}: must be a finite number")
        for name in ("max_stray", "speed_safe_deviation_ratio", "reckless_speed_threshold"):
            if p[name] <= 0:
                raise ValueError(f"params.{name}={p[name]!r}: must be > 0")
        if p["reward_scale"] is not None and p["reward_scale"] <= 0:
            raise ValueError(f"params.reward_scale={p['reward_scale']!r}: must be > 0 or None")
        self._check_forward = int(p["check_forward"])
        self._check_backward = int(p["check_backward"])
        self._failure_countdown = int(p["failure_countdown"])
        self._min_steps = int(p["min_steps"])
        self._max_stray = float(p["max_stray"])
        self._safe = float(p["speed_safe_deviation_ratio"]) * self._max_stray
        self._reckless_threshold = float(p["reckless_speed_threshold"])
        self._reckless_factor = float(p["reckless_penalty_factor"])
        self._speed_bonus = float(p["speed_bonus"])
        self._wall_hug_speed = float(p["wall_hug_speed_threshold"])
        self._wall_hug_factor = float(p["wall_hug_penalty_factor"])
        self._proximity = float(p["proximity_reward_shaping"])
        self._constant = float(p["constant_penalty"])
        self._end_of_track = float(p["end_of_track"])
        self._reward_scale = None if p["reward_scale"] is None else float(p["reward_scale"])
        self.reset()

    @property
    def trajectory(self) -> np.ndarray:
        """The trajectory, float64 [N, 3], read-only."""
        return self._data

    @property
    def safe_radius(self) -> float:
        """``speed_safe_deviation_ratio * max_stray``: metres within which the car is on
        the line."""
        return self._safe

    @property
    def cur_idx(self) -> int:
        """The trajectory point matched at the last step (0 after :meth:`reset`)."""
        return self._cur_idx

    @property
    def progress(self) -> float:
        """Track completion ``cur_idx / (N - 1)``, in [0, 1] (0 after :meth:`reset`); the
        same value as the last :attr:`StepReward.progress`."""
        return self._cur_idx / (len(self._data) - 1)

    @property
    def step_counter(self) -> int:
        """Steps since :meth:`reset`."""
        return self._step_counter

    @property
    def failure_counter(self) -> int:
        """tmrl's count of consecutive no-progress steps after ``min_steps``."""
        return self._failure_counter

    @property
    def no_progress_steps(self) -> int:
        """Consecutive wall-hug steps (the ``k`` of the wall-hug penalty)."""
        return self._no_progress_steps

    def reset(self) -> None:
        """Starts a new episode: back to point 0, all counters 0."""
        self._cur_idx = 0
        self._step_counter = 0
        self._failure_counter = 0
        self._no_progress_steps = 0

    def _scan(self, pos: np.ndarray, start: int, window: int, forward: bool) -> tuple[int, float]:
        """tmrl's windowed nearest-point search from ``start``, vectorised by chunks.

        Returns (best index, its distance). After an improvement at b the loop examines up
        to b + window - 1 (forward, capped at N - 1) or down to max(b - window + 1, 1)
        (backward); within a chunk an element improves iff it is <= the running minimum of
        everything before it, so the last such element is the loop's final best."""
        data = self._data
        n = len(data)

        def reach(b: int) -> int:
            return min(b + window - 1, n - 1) if forward else max(b - window + 1, 1)

        best = start
        best_d = float(np.linalg.norm(pos - data[start]))
        nxt, last = (start + 1, reach(start)) if forward else (start - 1, reach(start))
        while (nxt <= last) if forward else (nxt >= last):
            idx = np.arange(nxt, last + 1) if forward else np.arange(nxt, last - 1, -1)
            # per point, as tmrl does: an axis-wise norm may round differently, and ties matter
            d = np.array([np.linalg.norm(pos - data[i]) for i in idx])
            before = np.minimum.accumulate(np.concatenate(([best_d], d[:-1])))
            improved = np.flatnonzero(d <= before)
            nxt = last + 1 if forward else last - 1
            if improved.size:
                j = improved[-1]
                best, best_d = int(idx[j]), float(d[j])
            last = reach(best)  # unchanged when nothing improved: the loop ends
        return best, best_d

    def _advance(self, pos: np.ndarray) -> tuple[int, float, bool, bool]:
        """tmrl's progress for one step: (new trajectory index, progress in track units,
        no progress this step, no progress for longer than the failure countdown)."""
        self._step_counter += 1
        old = self._cur_idx
        best, best_d = self._scan(pos, old, self._check_forward, forward=True)
        if best_d > self._max_stray:
            best = old
        progress = (best - old) / _INDICES_PER_UNIT
        no_progress = best == old
        no_progress_end = False
        if no_progress:
            best, _ = self._scan(pos, old, self._check_backward, forward=False)
            if self._step_counter > self._min_steps:
                self._failure_counter += 1
                no_progress_end = self._failure_counter > self._failure_countdown
        else:
            self._failure_counter = 0
        self._cur_idx = best
        return best, progress, no_progress, no_progress_end

    def _shaping(self, pos: np.ndarray, best: int, progress: float, no_progress: bool,
                 speed: float) -> tuple[float, float, float, float, float, bool]:
        """Seed 004's terms: (deviation from the line in metres, progress scaled off the line,
        speed bonus, off-track penalty, wall-hug penalty, wall hugged too long)."""
        deviation = float(np.linalg.norm(pos - self._data[best]))
        off_line = deviation > self._safe
        ratio = deviation / self._safe
        speed_bonus = 0.0
        if progress > 0:
            if off_line:
                progress *= self._proximity
            else:
                speed_bonus = self._speed_bonus * speed
        off_track = 0.0
        if off_line and speed > _RECKLESS_MIN_SPEED:
            off_track = -self._reckless_factor * (speed / self._reckless_threshold) * ratio
        wall_hug = 0.0
        wall_hug_end = False
        if no_progress and off_line and speed > self._wall_hug_speed:
            self._no_progress_steps += 1
            k = self._no_progress_steps
            wall_hug = -self._wall_hug_factor * k * ratio
            wall_hug_end = k > 3 * self._failure_countdown
        else:
            self._no_progress_steps = 0
        return deviation, progress, speed_bonus, off_track, wall_hug, wall_hug_end

    def step(self, pos: Any, speed_kmh: float, finished: bool) -> StepReward:
        """Advances one step.

        Parameters
        ----------
        pos : array_like, float [3]
            The car's position in metres (tmrl: game data[2:5]).
        speed_kmh : float
            The car's speed in km/h (tmrl: data[0], >= 0).
        finished : bool
            The game's finish flag (tmrl: data[8]).

        Returns
        -------
        StepReward

        Raises
        ------
        ValueError
            ``pos`` is not 3 finite numbers or ``speed_kmh`` is not finite.
        """
        pos = np.asarray(pos, dtype=np.float64)
        if pos.shape != (3,) or not np.isfinite(pos).all():
            raise ValueError(f"pos must be 3 finite numbers, got {pos!r}")
        speed = float(speed_kmh)
        if not math.isfinite(speed):
            raise ValueError(f"speed_kmh must be finite, got {speed_kmh!r}")
        finished = bool(finished)

        best, progress, no_progress, no_progress_end = self._advance(pos)
        deviation, progress, speed_bonus, off_track, wall_hug, wall_hug_end = self._shaping(
            pos, best, progress, no_progress, speed)

        terms = {
            "progress": float(progress),
            "speed_bonus": float(speed_bonus),
            "off_track_penalty": float(off_track),
            "wall_hug_penalty": float(wall_hug),
            "constant_penalty": -self._constant,
            "finish_bonus": self._end_of_track if finished else 0.0,
        }
        raw = 0.0
        for name in TERM_NAMES:
            raw += terms[name]
        reward = raw if self._reward_scale is None else math.tanh(self._reward_scale * raw)
        reason = ("finish" if finished else "no_progress" if no_progress_end
                  else "wall_hug" if wall_hug_end else None)
        return StepReward(
            reward=float(reward),
            terminated=reason is not None,
            reason=reason,
            progress_index=best,
            deviation=deviation,
            progress=self.progress,
            raw_reward=float(raw),
            terms=terms,
        )


def resample_trajectory(positions: Any, spacing: float = 0.1) -> np.ndarray:
    """Points every ``spacing`` metres along the polyline through ``positions``.

    tmrl 0.7.1 ``tools/record.py`` (``record_reward_dist`` and ``line``), in float64: the
    first point is ``positions[0]``; each next point lies ``spacing`` metres further along
    the path, the distance left over at the end of a segment carrying into the next one (so
    consecutive points are ``spacing`` apart ALONG THE PATH, less in straight line across a
    corner); the leftover piece shorter than ``spacing`` at the end is dropped. Repeated
    positions (a stopped car) are skipped.

    Parameters
    ----------
    positions : array_like, float [K, 3]
        Recorded positions in metres, K >= 2, finite.
    spacing : float
        Metres between points along the path, > 0 (tmrl: 0.1).

    Returns
    -------
    np.ndarray, float64 [M, 3], M >= 2

    Raises
    ------
    ValueError
        Fewer than 2 positions, wrong shape, non-finite values, ``spacing`` not > 0, or a
        path shorter than ``spacing`` (a zero-length path included).
    """
    pts = _as_points(positions, "positions")
    spacing = float(spacing)
    if not (math.isfinite(spacing) and spacing > 0):
        raise ValueError(f"spacing must be a finite number > 0, got {spacing!r}")
    out = [pts[0]]
    here = pts[0]
    move_by = spacing
    j = 1
    while j < len(pts):
        vec = pts[j] - here
        norm = np.linalg.norm(vec)
        if norm < move_by:  # passed pts[j] without placing a point
            move_by -= norm
            here = pts[j]
            j += 1
        else:
            here = here + vec / norm * move_by
            out.append(here)
            move_by = spacing
    if len(out) < 2:
        length = float(np.linalg.norm(np.diff(pts, axis=0), axis=1).sum())
        raise ValueError(f"positions: path length {length:g} m is shorter than spacing "
                         f"{spacing:g} m")
    return np.array(out, dtype=np.float64)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays only: any other global is refused, so a crafted file cannot
    run code."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # protocol 2 stores the array bytes through it
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]  # numpy 1 pickles, no warning
        return super().find_class(module, name)


_NPY_MAGIC = b"\x93NUMPY"


def load_trajectory(path: str | os.PathLike) -> np.ndarray:
    """Reads a trajectory: tmrl's ``reward.pkl`` (a pickled numpy array) or our ``.npy``.

    The format is told by the content (the ``.npy`` magic bytes), not the suffix. Pickles
    may hold only a numpy array (other objects are refused without running them).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    np.ndarray, float64 [N, 3], N >= 2, finite (metres)

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Unreadable content, not a numpy array, shape not [N, 3], fewer than 2 points or
        non-finite values; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory file {str(path)!r} does not exist")
    raw = path.read_bytes()
    try:
        if raw.startswith(_NPY_MAGIC):
            arr = np.load(io.BytesIO(raw), allow_pickle=False)
        else:
            arr = _ArrayUnpickler(io.BytesIO(raw)).load()
    except Exception as exc:
        raise ValueError(f"trajectory file {str(path)!r}: not a .npy or pickled numpy "
                         f"array ({type(exc).__name__}: {exc})") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"trajectory file {str(path)!r}: holds a {type(arr).__name__}, not "
                         "a numpy array")
    return _as_points(arr, f"trajectory file {str(path)!r}")


def save_trajectory(path: str | os.PathLike, points: Any) -> None:
    """Writes a trajectory as ``.npy``, or as tmrl's ``reward.pkl`` format (a pickled
    float64 array) when the suffix is ``.pkl``. Creates missing parent folders.

    Parameters
    ----------
    path : str or os.PathLike
        Ends in ``.npy`` or ``.pkl``.
    points : array_like, float [N, 3]
        N >= 2, finite (metres).

    Raises
    ------
    FileExistsError
        ``path`` exists (never overwritten).
    ValueError
        Another suffix, or ``points`` not [N, 3] / fewer than 2 / non-finite.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".pkl"):
        raise ValueError(f"trajectory file {str(path)!r}: suffix must be .npy or .pkl")
    arr = _as_points(points, "points")
    if path.exists():
        raise FileExistsError(f"trajectory file {str(path)!r} exists; not overwriting it")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        f = open(path, "xb")  # exclusive: also loses no race with another writer
    except FileExistsError:
        raise FileExistsError(f"trajectory file {str(path)!r} exists; not overwriting "
                              "it") from None
    with f:
        if suffix == ".pkl":
            pickle.dump(arr, f, protocol=4)
        else:
            np.save(f, arr, allow_pickle=False)
