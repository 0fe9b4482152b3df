"""Compare runs side by side: ``python launch/compare.py RUN_DIR [RUN_DIR ...] [--out DIR]``.

Reads the TensorBoard event files of each run directory written by ``launch/run.py`` and
writes a markdown report (``OUT/compare.md``, also printed) and one PNG per metric
(``OUT/<metric key>.png``: left panel by env step, right panel by relative wall time), laid
out like the user's seed 002 comparison (BTR vs baseline on A01). The event files are always
written, also when a run logs to Weights & Biases (logging.wandb_project); W&B's own files
(RUN_DIR/wandb) are not read, so give the run directory, not its wandb/ folder.

Method (seed 002's "common windows and checkpoints"):

- A run is the merge of all event files in its directory. A resumed run appends a new file
  that starts again from its checkpoint step ``c``; the points of earlier files at steps at or
  past the first step of the later file (or of its purge marker) are superseded and dropped,
  so later-written values win. Points at the same step in one file (several episodes ending
  on one env step) are all kept.
- Relative wall time is minutes since the run's first event (any event of its files,
  including the writer's opening record). Time between a run and its resume counts.
- By step: the value of each metric at common env-step checkpoints (``--at``; by default 4
  evenly spaced steps in the common step window, the last one its end). A checkpoint past a
  run's last step shows ``-`` for that run.
- By relative wall time: the value every ``--every-minutes`` minutes, only up to the common
  wall-time window (the duration of the shortest run), whose end is the last row. Runs differ
  in speed, so only this window is comparable by time.
- The common windows name the run that limits them: the one with the fewest env steps and
  the one with the fewest wall minutes (seed 002: "the shortest run is A01_as20_long_v4_btr").
- A cell summarises the points at or before the checkpoint: the last value (loss, Q, busy
  share, ...); for the evaluation return the best ``eval/return_mean`` so far with the mean
  and (population) std of all evaluations so far, as seed 002's "best 24.58 (mean 26.74, std
  2.18)"; for training episodes the mean return of the last 20 episodes and the best such mean
  so far (over full windows of 20). No point yet, or the run does not log the metric: ``-``.

Used by ``notebooks/run_analysis.ipynb``: ``load_runs``, ``common_window``, ``step_table``,
``time_table``, ``plot_metric``, ``report``.
"""

from __future__ import annotations

import dataclasses
import decimal
import math
import re
import sys
import time
from pathlib import Path
from typing import Annotated, NamedTuple, Sequence

import numpy as np
import tyro
from google.protobuf.message import DecodeError
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.util import tensor_util

EVENT_GLOB = "events.out.tfevents.*"
WANDB_GLOB = "*.wandb"
"""A W&B run's record log (RUN_DIR/wandb/offline-run-*/run-<id>.wandb): not read here."""
EPISODE_WINDOW = 20
"""Training episodes in the running mean of the training return (the progress bar's 20)."""
DEFAULT_STEP_ROWS = 4
DEFAULT_TIME_ROWS = 6
MAX_TIME_ROWS = 1000


class CompareError(ValueError):
    """Bad input to the comparison (a run directory, a flag value); main() prints it and
    exits with code 2."""


class Scalar(NamedTuple):
    """One tag of one run, sorted by step (stable, so same-step points keep write order)."""

    steps: np.ndarray
    """int64 [T], env steps."""
    values: np.ndarray
    """float64 [T]."""
    wall_minutes: np.ndarray
    """float64 [T], minutes since the run's first event."""


@dataclasses.dataclass(frozen=True)
class Run:
    """The merged scalars of one run directory."""

    name: str
    """Display name: the directory basename, with parents added where two runs share it."""
    path: Path
    scalars: dict[str, Scalar]
    first_wall_time: float
    """Unix seconds of the run's first event (the wall-time origin)."""
    last_wall_time: float
    """Unix seconds of the run's last kept scalar point."""
    event_files: tuple[Path, ...]
    """In the order they were merged (by first event time)."""
    superseded: int = 0
    """Points of earlier event files dropped because a resumed file rewrote their steps."""

    @property
    def last_step(self) -> int:
        """The largest env step of any kept scalar point."""
        return max(int(s.steps[-1]) for s in self.scalars.values())

    @property
    def duration_minutes(self) -> float:
        """Wall minutes from the first event to the last kept scalar point."""
        return (self.last_wall_time - self.first_wall_time) / 60.0

    def health_flags_raised(self) -> list[str]:
        """Names of the ``health/<flag>`` tags that were ever above 0."""
        return sorted(tag.removeprefix("health/") for tag, s in self.scalars.items()
                      if tag.startswith("health/") and np.any(s.values > 0))


# --------------------------------------------------------------------------------- loading

def _read_event_file(path: Path) -> tuple[float | None, int | None, list[tuple]]:
    """Read one event file.

    Returns:
      (earliest wall time of any event or None when the file is empty, the step of a purge
      marker (SessionLog START, ``SummaryWriter(purge_step=...)``) or None, scalar points as
      (tag, step, value, wall_time) in write order).

    Raises:
      OSError: the file cannot be read.
    """
    first = None
    purge_step = None
    points = []
    # TensorBoard's reader: it checks each record's CRC and ends the file at a truncated last
    # record (a run still writing, or killed).
    for record in RawEventFileLoader(str(path)).Load():
        try:
            event = Event.FromString(record)
        except DecodeError:  # a damaged record: keep what came before, as for a truncation
            break
        first = event.wall_time if first is None else min(first, event.wall_time)
        what = event.WhichOneof("what")
        if what == "session_log" and event.session_log.status == SessionLog.START:
            purge_step = event.step if purge_step is None else min(purge_step, event.step)
        if what != "summary":
            continue
        for value in event.summary.value:
            kind = value.WhichOneof("value")
            if kind == "simple_value":  # what tensorboardX's add_scalar writes
                number = value.simple_value
            elif kind == "tensor" and value.metadata.plugin_data.plugin_name == "scalars":
                number = tensor_util.make_ndarray(value.tensor).item()  # tf.summary.scalar
            else:  # text (the config), histograms, images
                continue
            points.append((value.tag, int(event.step), float(number), float(event.wall_time)))
    return first, purge_step, points


def _no_event_files(path: Path) -> CompareError:
    """The error for a directory without event files, saying where some are: in
    sub-directories, or, for W&B files (RUN_DIR/wandb/...), in the run directory above."""
    nested = sorted({p.parent for p in path.glob(f"*/**/{EVENT_GLOB}")})
    if nested:
        hint = f"; sub-directories hold some, pass those instead: " \
               f"{', '.join(map(str, nested[:3]))}"
    elif any(path.glob(f"**/{WANDB_GLOB}")):
        # RUN_DIR/wandb or RUN_DIR/wandb/offline-run-*: the run directory is 1 or 2 up.
        above = next((d for d in list(path.resolve().parents)[:2] if any(d.glob(EVENT_GLOB))),
                     None)
        hint = ("; it holds Weights & Biases files, which compare.py does not read: it reads "
                "the TensorBoard event files that launch/run.py writes in the run directory "
                "whether or not logging.wandb_project is set" +
                (f"; pass {above}" if above else ""))
    else:
        hint = "; is it a run directory written by launch/run.py?"
    return CompareError(f"run directory {path} holds no TensorBoard event files "
                        f"({EVENT_GLOB}){hint}")


def load_run(path: str | Path, name: str | None = None) -> Run:
    """Read and merge all event files of one run directory.

    Files are merged in the order of their first event; a later file supersedes the points of
    earlier ones at steps >= its first step (see the module docstring).

    Args:
      path: a run directory holding ``events.out.tfevents.*`` files directly (a W&B run
        directory, RUN_DIR/wandb/..., is not read: its run directory is).
      name: display name; default the directory's basename.

    Raises:
      CompareError: the directory does not exist, holds no event files (W&B files alone
        included), an event file cannot be read, or no file holds a scalar.
    """
    path = Path(path)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise CompareError(f"run directory {path} {what}")
    files = sorted(p for p in path.glob(EVENT_GLOB) if p.is_file())
    if not files:
        raise _no_event_files(path)
    read = []
    for file in files:
        try:
            read.append((file, *_read_event_file(file)))
        except OSError as e:
            raise CompareError(f"run directory {path}: cannot read event file {file.name}: "
                               f"{e}") from e
    read.sort(key=lambda r: (math.inf if r[1] is None else r[1], r[0].name))
    merged: dict[str, list[tuple[int, float, float]]] = {}
    superseded = 0
    for _, _, purge_step, points in read:
        starts = [step for _, step, _, _ in points]
        if purge_step is not None:
            starts.append(purge_step)
        if starts:  # a resumed file rewrites every step from its start on
            restart = min(starts)
            for tag, kept in merged.items():
                before = len(kept)
                merged[tag] = [p for p in kept if p[0] < restart]
                superseded += before - len(merged[tag])
        for tag, step, value, wall in points:
            merged.setdefault(tag, []).append((step, value, wall))
    merged = {tag: kept for tag, kept in merged.items() if kept}
    if not merged:
        raise CompareError(f"run directory {path}: its event files hold no scalars yet")
    first_wall = min(r[1] for r in read if r[1] is not None)
    last_wall = max(wall for kept in merged.values() for _, _, wall in kept)
    scalars = {}
    for tag, kept in sorted(merged.items()):
        array = np.asarray(kept, dtype=np.float64)
        order = np.argsort(array[:, 0], kind="stable")
        array = array[order]
        scalars[tag] = Scalar(steps=array[:, 0].astype(np.int64), values=array[:, 1],
                              wall_minutes=(array[:, 2] - first_wall) / 60.0)
    return Run(name=name or path.resolve().name, path=path, scalars=scalars,
               first_wall_time=first_wall, last_wall_time=last_wall,
               event_files=tuple(r[0] for r in read), superseded=superseded)


def unique_names(paths: Sequence[str | Path]) -> list[str]:
    """Basenames of the paths, with as many parent directories as it takes to tell distinct
    directories apart (``x/run``, ``y/run``); a directory given again gets `` (2)``."""
    parts = [Path(p).resolve().parts for p in paths]
    distinct = set(parts)
    depth = 1
    while len({p[-depth:] for p in distinct}) < len(distinct):
        depth += 1
    seen: dict[tuple[str, ...], int] = {}
    names = []
    for p in parts:
        seen[p] = seen.get(p, 0) + 1
        name = str(Path(*p[-depth:]))
        names.append(name if seen[p] == 1 else f"{name} ({seen[p]})")
    return names


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """``load_run`` for each path, named by ``unique_names``. Raises CompareError as
    load_run does, for the first bad directory."""
    return [load_run(p, name) for p, name in zip(paths, unique_names(paths))]


# --------------------------------------------------------------------------------- metrics

@dataclasses.dataclass(frozen=True)
class Metric:
    """What a table row summarises and a figure plots."""

    key: str
    """Short name: for ``--metrics`` and the PNG's file name."""
    title: str
    tags: tuple[str, ...]
    """Alternatives: each run uses the first one it logs (train/loss or train/critic_loss)."""
    kind: str = "last"
    """'last' (last value at or before the checkpoint), 'eval' (best / mean / std so far) or
    'episode' (mean of the last 20 episodes and the best such mean so far)."""
    percent: bool = False
    """Show a fraction 0..1 as a percentage."""
    about: str = ""


DEFAULT_METRICS = (
    Metric("eval_return", "Evaluation return", ("eval/return_mean",), "eval",
           about="best mean evaluation return so far, and the mean and std of all evaluation "
                 "means up to the checkpoint"),
    Metric("episode_return", "Training episode return", ("episode/return",), "episode",
           about=f"mean return of the last {EPISODE_WINDOW} training episodes before the "
                 f"checkpoint, and the best such mean so far"),
    Metric("loss", "Loss", ("train/loss", "train/critic_loss"),
           about="last value at the checkpoint (value learners: train/loss; TQC: "
                 "train/critic_loss)"),
    Metric("q", "Average Q", ("train/q_mean", "train/q_taken_mean"),
           about="last value at the checkpoint (value learners: train/q_mean; TQC: "
                 "train/q_taken_mean)"),
    Metric("busy_share", "Learner busy share", ("perf/learner_busy_share",), percent=True,
           about="share of wall time the learner ran grad steps, last value at the "
                 "checkpoint"),
    Metric("transitions_per_sec", "Transitions learned per second",
           ("perf/transitions_learned_per_sec",),
           about="grad steps/s x batch size, last value at the checkpoint"),
)
_DEFAULTS_BY_KEY = {m.key: m for m in DEFAULT_METRICS}


def tag_metric(tag: str) -> Metric:
    """A raw tag as a metric: its last value at each checkpoint."""
    key = "tag_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", tag).strip("_")
    return Metric(key, tag, (tag,), about="last value at the checkpoint")


def resolve_metrics(names: Sequence[str] | None) -> list[Metric]:
    """The metrics named by ``--metrics``: 'default' (all of DEFAULT_METRICS), a default's key
    (eval_return, episode_return, loss, q, busy_share, transitions_per_sec) or any other
    string as a raw TensorBoard tag. None or empty: the defaults. Duplicates are dropped."""
    chosen: list[Metric] = []
    for name in names or ["default"]:
        for metric in (DEFAULT_METRICS if name == "default" else
                       [_DEFAULTS_BY_KEY.get(name) or tag_metric(name)]):
            if metric.key not in {m.key for m in chosen}:
                chosen.append(metric)
    return chosen


def metric_tag(run: Run, metric: Metric) -> str | None:
    """The first of the metric's tags that the run logs, or None."""
    return next((tag for tag in metric.tags if tag in run.scalars), None)


def summarize(metric: Metric, values: np.ndarray) -> dict[str, float] | None:
    """Summarise the metric's values up to a checkpoint (in step order).

    Returns:
      None for no values; else for 'last' {'value'}; for 'eval' {'best' (max), 'mean', 'std'
      (population), 'count'}; for 'episode' {'mean' (of the last 20), 'episodes', 'best' (the
      largest mean of 20 consecutive episodes so far; absent before 20 episodes)}.
    """
    if len(values) == 0:
        return None
    if metric.kind == "eval":
        return dict(best=float(np.max(values)), mean=float(np.mean(values)),
                    std=float(np.std(values)), count=len(values))
    if metric.kind == "episode":
        means = _running_mean(values)
        out = dict(mean=float(means[-1]), episodes=len(values))
        if len(values) >= EPISODE_WINDOW:
            out["best"] = float(np.max(means[EPISODE_WINDOW - 1:]))
        return out
    return dict(value=float(values[-1]))


def _running_mean(values: np.ndarray) -> np.ndarray:
    """Mean of the last EPISODE_WINDOW values at each position (fewer at the start)."""
    sums = np.cumsum(values)
    counts = np.minimum(np.arange(1, len(values) + 1), EPISODE_WINDOW)
    return (sums - np.concatenate([np.zeros(EPISODE_WINDOW), sums])[:len(values)]) / counts


def format_value(value: float) -> str:
    """2 decimals from 1 up, 4 below (seed 002's 24.58 / -0.9310), none from 10,000 up."""
    if not math.isfinite(value):
        return str(value)
    size = abs(value)
    if size >= 10_000:
        return f"{value:,.0f}"
    if size >= 1 or size == 0:
        return f"{value:.2f}"
    if size >= 0.001:
        return f"{value:.4f}"
    return f"{value:.3g}"


def format_cell(metric: Metric, cell: dict[str, float] | None) -> str:
    """A table cell: '-' for None; 'best B (mean M, std S)'; 'mean M (best B)' or 'mean M (n
    episodes)' before 20 episodes; '60.8%' for percentages; else the formatted value."""
    if cell is None:
        return "-"
    if metric.kind == "eval":
        return (f"best {format_value(cell['best'])} (mean {format_value(cell['mean'])}, "
                f"std {format_value(cell['std'])})")
    if metric.kind == "episode":
        more = (f"best {format_value(cell['best'])}" if "best" in cell else
                f"{cell['episodes']} episodes")
        return f"mean {format_value(cell['mean'])} ({more})"
    if metric.percent:
        return f"{100 * cell['value']:.1f}%"
    return format_value(cell["value"])


# ------------------------------------------------------------------- windows, checkpoints

class Window(NamedTuple):
    """What all runs cover: by env step and by relative wall time, and which run ends each."""

    step: int
    step_run: str
    minutes: float
    minutes_run: str


def common_window(runs: Sequence[Run]) -> Window:
    """(last common env step, the run with the fewest steps, common wall minutes, the run with
    the fewest wall minutes); on a tie the first run given. Raises CompareError for no runs."""
    if not runs:
        raise CompareError("no runs to compare")
    by_step = min(runs, key=lambda r: r.last_step)
    by_time = min(runs, key=lambda r: r.duration_minutes)
    return Window(by_step.last_step, by_step.name, by_time.duration_minutes, by_time.name)


_SUFFIXES = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def parse_steps(text: str, flag: str = "--at") -> list[int]:
    """'10M,500k,20000' -> [20000, 500000, 10000000] (sorted, unique).

    Items are positive whole step counts, with an optional k / M / G suffix (any case) and
    decimals where the product is whole (1.5M).

    Raises:
      CompareError: naming the flag, the value and the bad item.
    """
    steps = set()
    for item in text.split(","):
        number, suffix = re.fullmatch(r"\s*(.*?)\s*([kKmMgG]?)\s*", item).groups()
        try:
            value = decimal.Decimal(number) * _SUFFIXES[suffix.lower()]
        except decimal.InvalidOperation:
            value = None
        if value is None or not value.is_finite() or value <= 0 or value != value.to_integral():
            raise CompareError(f"{flag} {text!r}: {item.strip()!r} is not a step count; give "
                               f"positive whole env steps separated by commas, with an "
                               f"optional k / M / G suffix, e.g. {flag} 10M,500k,20000")
        steps.add(int(value))
    return sorted(steps)


def _floor_2_digits(x: float) -> int:
    """Round down to 2 significant digits (308,641 -> 300,000; 95 -> 95)."""
    if x < 1:
        return 0
    unit = 10 ** max(int(math.floor(math.log10(x))) - 1, 0)
    return int(x // unit * unit)


def default_steps(window_step: int, rows: int = DEFAULT_STEP_ROWS) -> list[int]:
    """``rows`` evenly spaced checkpoints in (0, window_step], rounded down to 2 significant
    digits except the last, which is the window's end: 600 -> [150, 300, 450, 600]."""
    steps = {_floor_2_digits(window_step * k / rows) for k in range(1, rows)}
    return sorted(s for s in steps | {int(window_step)} if s > 0) or [int(window_step)]


def default_interval(window_minutes: float, rows: int = DEFAULT_TIME_ROWS) -> float:
    """The interval of the form {1, 2, 3, 5} x 10^k minutes that cuts the window into the
    number of rows closest to ``rows`` (the larger interval on a tie): 50 -> 10."""
    if window_minutes <= 0:
        return 1.0
    candidates = [a * 10.0 ** k for k in range(-3, 7) for a in (1, 2, 3, 5)]
    return min(candidates, key=lambda c: (abs(math.floor(window_minutes / c + 1e-9) - rows),
                                          -c))


def check_interval(every: float) -> float:
    """Returns ``every``. Raises CompareError naming --every-minutes unless it is a positive,
    finite number."""
    if not (isinstance(every, (int, float)) and math.isfinite(every) and every > 0):
        raise CompareError(f"--every-minutes {every}: give a positive number of minutes")
    return every


def time_checkpoints(window_minutes: float, every: float | None = None) -> list[float]:
    """Minutes every ``every`` (default: ``default_interval``) up to the common window, and
    the window's end as the last row.

    Raises:
      CompareError: ``every`` is not a positive number, or gives over 1000 rows.
    """
    every = default_interval(window_minutes) if every is None else check_interval(every)
    count = math.floor(window_minutes / every + 1e-9)
    if count > MAX_TIME_ROWS:
        raise CompareError(f"--every-minutes {every}: gives {count:,} rows over the "
                           f"{window_minutes:.1f}-minute common window; use at least "
                           f"{window_minutes / MAX_TIME_ROWS:.3g}")
    minutes = [round(k * every, 9) for k in range(1, count + 1)]
    if not minutes or window_minutes - minutes[-1] > 1e-9:
        minutes.append(window_minutes)
    return minutes


def format_step(step: int) -> str:
    """10000000 -> '10M', 2500000 -> '2.5M', 500000 -> '500k', 1234567 -> '1,234,567'."""
    if step >= 1_000_000 and step % 10_000 == 0:
        return f"{step / 1e6:g}M"
    if 1_000 <= step < 1_000_000 and step % 100 == 0:
        return f"{step / 1e3:g}k"
    return f"{step:,}"


def format_minutes(minutes: float) -> str:
    """Whole minutes without decimals, else 3 significant digits below 10 and one decimal."""
    if abs(minutes - round(minutes)) < 1e-6:
        return f"{round(minutes)}"
    return f"{minutes:.3g}" if minutes < 10 else f"{minutes:.1f}"


# ---------------------------------------------------------------------------------- tables

@dataclasses.dataclass(frozen=True)
class Table:
    """A metric at checkpoints: rows are checkpoints, columns runs."""

    metric: Metric
    axis: str
    """'env step' or 'wall minutes'."""
    checkpoints: list[float]
    labels: list[str]
    """Row labels; the window's end and rows past it are marked."""
    runs: list[str]
    cells: list[list[dict[str, float] | None]]
    """[checkpoint][run]: ``summarize``'s dict, or None shown as '-'."""

    def text(self) -> list[list[str]]:
        """The formatted cells, [checkpoint][run]."""
        return [[format_cell(self.metric, cell) for cell in row] for row in self.cells]

    def markdown(self) -> str:
        """A markdown table: a header row of run names, one row per checkpoint."""
        lines = [f"| {self.axis} | " + " | ".join(f"`{r}`" for r in self.runs) + " |",
                 "|---" * (len(self.runs) + 1) + "|"]
        for label, row in zip(self.labels, self.text()):
            lines.append(f"| {label} | " + " | ".join(row) + " |")
        return "\n".join(lines)


def _cell(run: Run, metric: Metric, axis: str, at: float) -> dict[str, float] | None:
    tag = metric_tag(run, metric)
    beyond = at > run.last_step if axis == "step" else at > run.duration_minutes + 1e-9
    if tag is None or beyond:
        return None
    scalar = run.scalars[tag]
    upto = scalar.steps <= at if axis == "step" else scalar.wall_minutes <= at + 1e-9
    return summarize(metric, scalar.values[upto])


def step_table(runs: Sequence[Run], metric: Metric, steps: Sequence[int]) -> Table:
    """The metric at env-step checkpoints, summarising each run's points at steps <= the
    checkpoint; '-' (None) past the run's last step or before its first point."""
    window = common_window(runs)
    labels = [format_step(s) + (" (end of common window)" if s == window.step else
                                " (past common window)" if s > window.step else "")
              for s in steps]
    cells = [[_cell(run, metric, "step", s) for run in runs] for s in steps]
    return Table(metric, "env step", list(steps), labels, [r.name for r in runs], cells)


def time_table(runs: Sequence[Run], metric: Metric, minutes: Sequence[float]) -> Table:
    """The metric at relative wall-time checkpoints (minutes since each run's first event),
    summarising the points written by then; '-' (None) past the run's duration or before its
    first point. ``time_checkpoints`` gives checkpoints within the common window."""
    window = common_window(runs)
    labels = [format_minutes(m) + (" (end of common window)" if abs(m - window.minutes) < 1e-9
                                   else " (past common window)" if m > window.minutes else "")
              for m in minutes]
    cells = [[_cell(run, metric, "minutes", m) for run in runs] for m in minutes]
    return Table(metric, "wall minutes", list(minutes), labels, [r.name for r in runs], cells)


# ---------------------------------------------------------------------------------- figures

def _plot_series(run: Run, metric: Metric) -> Scalar | None:
    """What the figure draws: evaluation means, the running mean of 20 training episodes, or
    the raw values (in percent where the metric is a share)."""
    tag = metric_tag(run, metric)
    if tag is None:
        return None
    scalar = run.scalars[tag]
    values = scalar.values
    if metric.kind == "episode":
        values = _running_mean(values)
    elif metric.percent:
        values = 100 * values
    return Scalar(scalar.steps, values, scalar.wall_minutes)


def plot_metric(runs: Sequence[Run], metric: Metric, path: str | Path | None = None) -> Figure:
    """One figure, runs as lines: left by env step, right by relative wall minutes; the part
    past the common window is shaded and its end marked with a dashed line.

    Args:
      path: where to save it (PNG by the suffix); None: only return the figure.

    Raises:
      CompareError: no run logs the metric.
    """
    series = [(i, run, _plot_series(run, metric)) for i, run in enumerate(runs)]
    series = [(i, run, s) for i, run, s in series if s is not None]
    if not series:
        raise CompareError(f"no run logs {' or '.join(metric.tags)}")
    window = common_window(runs)
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    by_step, by_time = figure.subplots(1, 2)
    marker = "o" if metric.kind == "eval" else None
    for i, run, s in series:
        label = run.name + ("" if len(metric.tags) == 1 else f" ({metric_tag(run, metric)})")
        by_step.plot(s.steps, s.values, color=f"C{i}", marker=marker, markersize=3, label=label)
        by_time.plot(s.wall_minutes, s.values, color=f"C{i}", marker=marker, markersize=3,
                     label=label)
    for axes, end, what in ((by_step, window.step, f"common steps (end of {window.step_run})"),
                            (by_time, window.minutes,
                             f"common window (end of {window.minutes_run})")):
        axes.axvline(end, color="0.3", linestyle="--", linewidth=1, label=what)
        right = axes.get_xlim()[1]
        if right > end:
            axes.axvspan(end, right, color="0.85", alpha=0.5, linewidth=0)
            axes.set_xlim(right=right)
        axes.grid(alpha=0.3)
        axes.set_ylabel(metric.title + (" (%)" if metric.percent else ""))
    by_step.set_xlabel("env steps")
    by_time.set_xlabel("wall minutes since the run's first event")
    by_step.legend(fontsize="small")
    by_time.legend(fontsize="small")
    names = " / ".join(metric.tags)
    shown = {"eval": "evaluation means", "episode": f"mean of the last {EPISODE_WINDOW} "
             "episodes"}.get(metric.kind, "")
    figure.suptitle(f"{metric.title} ({names}{', ' + shown if shown else ''})")
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure


# ---------------------------------------------------------------------------------- report

def _tags_line(runs: Sequence[Run], metric: Metric) -> str:
    by_tag: dict[str, list[str]] = {}
    for run in runs:
        by_tag.setdefault(metric_tag(run, metric) or "", []).append(f"`{run.name}`")
    parts = [f"`{tag}` ({', '.join(names)})" if len(by_tag) > 1 else f"`{tag}`"
             for tag, names in by_tag.items() if tag]
    line = f"Metric: {'; '.join(parts)}: {metric.about}."
    if "" in by_tag:
        line += f" Not logged by {', '.join(by_tag[''])} (shown as -)."
    return line


def report(runs: Sequence[Run], metrics: Sequence[Metric] | None = None,
           steps: Sequence[int] | None = None, every_minutes: float | None = None,
           images: dict[str, str] | None = None) -> str:
    """The markdown comparison, in seed 002's layout: common windows and the runs limiting
    them, each run's duration and last step, the method, then per metric a table by step and
    one by relative wall time (and its figure).

    Args:
      metrics: default DEFAULT_METRICS; one no run logs gets a note instead of tables.
      steps: step checkpoints; default ``default_steps`` of the common step window.
      every_minutes: time interval; default ``default_interval`` of the common time window.
      images: metric key -> image path to link under its tables.

    Raises:
      CompareError: no runs, or a bad ``every_minutes``.
    """
    metrics = list(DEFAULT_METRICS if metrics is None else metrics)
    window = common_window(runs)
    steps = list(default_steps(window.step) if steps is None else steps)
    interval = default_interval(window.minutes) if every_minutes is None else every_minutes
    minutes = time_checkpoints(window.minutes, interval)
    images = images or {}
    names = ", ".join(f"`{r.name}`" for r in runs)
    short_step = format_step(window.step)
    short_step = "" if short_step == f"{window.step:,}" else f" ({short_step})"
    out = [f"# Run comparison: {names}", "",
           "## Common windows", "",
           f"- **By step:** the runs are compared up to env step {window.step:,}"
           f"{short_step}, where `{window.step_run}` (the run with the fewest env steps) ends.",
           f"- **By relative wall time:** up to {format_minutes(window.minutes)} wall minutes, "
           f"where `{window.minutes_run}` (the shortest run in wall time) ends. Conclusions by "
           f"time hold only within this window.", "",
           "## Run analysis", "",
           "Durations (wall minutes from the first merged TensorBoard event) and last env "
           "steps:", "",
           "| run | wall minutes | last env step | event files | health flags raised | "
           "directory |",
           "|---|---|---|---|---|---|"]
    for run in runs:
        files = f"{len(run.event_files)}"
        if len(run.event_files) > 1:
            files += f" (resumed; {run.superseded} superseded points dropped)"
        flags = ", ".join(run.health_flags_raised()) or "none"
        out.append(f"| `{run.name}` | {format_minutes(run.duration_minutes)} | "
                   f"{run.last_step:,} | {files} | {flags} | {run.path} |")
    out += ["", "## Method: common windows and checkpoints", "",
            f"- By step: at env steps {', '.join(format_step(s) for s in steps)}; a cell "
            f"summarises the points at or before the step; past a run's last step: `-`.",
            f"- By relative wall time (minutes since the run's first event, gaps between a run "
            f"and its resume included): every {format_minutes(interval)} min up to the end of "
            f"the common window ({format_minutes(window.minutes)} min), the last row.",
            "- `-`: the run has not reached the checkpoint, has no point of the metric yet, or "
            "does not log it.",
            "- Figures: one per metric, left by env step, right by wall minutes; shaded: past "
            "the common window.", ""]
    skipped = []
    for metric in metrics:
        if not any(metric_tag(run, metric) for run in runs):
            skipped.append(f"- {metric.title} ({' / '.join(f'`{t}`' for t in metric.tags)}): "
                           "no run logs it.")
            continue
        out += [f"## {metric.title}", "", _tags_line(runs, metric), "",
                "### by step", "", step_table(runs, metric, steps).markdown(), "",
                "### by relative wall time", "", time_table(runs, metric, minutes).markdown(),
                ""]
        if metric.key in images:
            out += [f"![{metric.title} by step and by relative wall time]"
                    f"({images[metric.key]})", ""]
    if skipped:
        out += ["## Not shown", ""] + skipped + [""]
    return "\n".join(out)


# ------------------------------------------------------------------------------ command line

@dataclasses.dataclass(frozen=True)
class Args:
    """Compare training runs side by side (seed 002's layout): a markdown report by env step
    and by relative wall time within the common windows of the runs, and one PNG per metric
    (left by env step, right by wall minutes). Writes OUT/compare.md and OUT/<metric>.png and
    prints the report."""

    run_dirs: Annotated[tuple[Path, ...], tyro.conf.Positional,
                        tyro.conf.arg(metavar="RUN_DIR [RUN_DIR ...]", help_behavior_hint="")]
    """Run directories written by launch/run.py (TensorBoard event files directly inside,
    written with or without W&B; W&B's files in RUN_DIR/wandb are not read)."""
    at: str | None = None
    """Env-step checkpoints, comma-separated with k / M / G suffixes, e.g. 10M,20M or 500k;
    default 4 evenly spaced steps in the common step window."""
    every_minutes: float | None = None
    """Wall-time checkpoint interval in minutes; default about 6 rows in the common window."""
    metrics: tuple[str, ...] = ()
    """What to show: 'default' (eval_return episode_return loss q busy_share
    transitions_per_sec), any of those keys, or raw TensorBoard tags (their last value), e.g.
    --metrics default train/grad_norm; default: the defaults."""
    out: Path | None = None
    """Output directory; default runs/compare-<YYYYmmdd-HHMMSS>."""
    plots: bool = True
    """Write the PNG figures."""


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, compare the runs, write the report and figures. Returns the
    exit code: 0 done, 2 bad input (one message on stderr)."""
    argv = sys.argv[1:] if argv is None else argv
    args = tyro.cli(Args, args=argv, prog="launch/compare.py")
    try:
        if not args.run_dirs:
            raise CompareError("give at least one RUN_DIR (a directory written by "
                               "launch/run.py)")
        steps = parse_steps(args.at) if args.at is not None else None
        if args.every_minutes is not None:
            check_interval(args.every_minutes)  # before reading any run
        metrics = resolve_metrics(args.metrics)
        runs = load_runs(args.run_dirs)
        out = args.out or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
        images = {}
        if args.plots:
            images = {m.key: f"{m.key}.png" for m in metrics
                      if any(metric_tag(r, m) for r in runs)}
        text = report(runs, metrics, steps, args.every_minutes, images)
    except CompareError as e:
        print(f"launch/compare.py: error: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for metric in metrics:
        if metric.key in images:
            plot_metric(runs, metric, out / images[metric.key])
    (out / "compare.md").write_text(text + "\n")
    print(text)
    print(f"\nwritten: {out / 'compare.md'} and {len(images)} figures in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
