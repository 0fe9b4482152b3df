"""Orbax checkpoints of a run: the last N (train state, replay, loop counters), and the best
train state by evaluation return and by training return."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger("launch")

UNFINISHED = ocp.path.atomicity_types.TMP_DIR_SUFFIX
"""Orbax writes ``<step>`` under ``<step>`` + this suffix and renames it once complete: a
directory still named so is a save that never finished (a killed process, a failed
write). Orbax never lists it as a step, so it is never restored."""
FAILED_WRITE_TIMEOUT = 30.0
"""Seconds a failed save waits for the threads it started (they go on writing into its
unfinished directory) before removing that directory."""
DAMAGED_DIR = "damaged_checkpoints"
"""Run subdirectory where --resume moves the checkpoints that do not restore: kept for a
look, out of the way of the managers (a later save of the same step, the retention count)."""

NEW_LOOP = dict(env_steps=0, vector_steps=0, episodes=0, replay_slots=0, grad_credit=0.0,
                best_eval_return=None, best_train_return=None, restarts=0, rollbacks=0,
                lr_scale=1.0, expert_floor_raise=None)
"""The loop counters of a new run (checkpointed beside the train state)."""


BEST_DIRS = {"eval": "best", "train": "best_train"}
"""Best-checkpoint kind -> directory: by evaluation return, and by the mean return of recent
training episodes (seed 004 D: a collapsed run restarts from the best policy it had)."""


class SaveFailed(Exception):
    """A checkpoint could not be written (disk full, no permission, ...). The unfinished
    directory of the write is removed; the checkpoints saved before are untouched."""


class NoUsableCheckpoint(Exception):
    """--resume found checkpoints in a run directory, but none of them restores."""


class RunCheckpoints:
    """Orbax managers under a run directory.

    ``checkpoints/<step>``: train state, replay state (optional) and loop counters (JSON), the
    ``keep`` most recent kept. ``best/<step>`` and ``best_train/<step>``: train state and loop
    counters of the best evaluation / training return so far, one kept each. Saves are
    synchronous: the training loop donates its buffers to the next jitted call right after
    saving.

    Args:
      run_dir: the run directory.
      keep: how many recent checkpoints to keep (>= 1).
      read_only: open another run's checkpoints to restore from (an expert's): no directory
        is created there.
    """

    def __init__(self, run_dir: Path, keep: int, read_only: bool = False):
        self.run_dir = Path(run_dir)
        sync = dict(create=not read_only, enable_async_checkpointing=False)
        self._last = ocp.CheckpointManager(
            Path(run_dir).absolute() / "checkpoints",
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, **sync))
        self._best = {
            kind: ocp.CheckpointManager(
                Path(run_dir).absolute() / directory,
                options=ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: m["return"],
                                                     best_mode="max", **sync))
            for kind, directory in BEST_DIRS.items()}

    def save(self, step: int, state: Any, replay_state: Any | None, loop: dict) -> None:
        """Save at env step ``step``; ``replay_state=None`` leaves the replay out.

        Raises:
          SaveFailed: the write failed (see :meth:`_write`).
        """
        items = dict(state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(loop))
        if replay_state is not None:
            items["replay"] = ocp.args.StandardSave(replay_state)
        self._write(self._last, step, ocp.args.Composite(**items))

    def save_best(self, step: int, state: Any, loop: dict, value: float,
                  kind: str = "eval") -> None:
        """Offer a checkpoint to the best-by-``kind`` manager (a key of BEST_DIRS); it is kept
        only if ``value`` (the return) is the best so far.

        Raises:
          SaveFailed: the write failed (see :meth:`_write`).
        """
        self._write(self._best[kind], step,
                    ocp.args.Composite(state=ocp.args.StandardSave(state),
                                       loop=ocp.args.JsonSave(loop)),
                    metrics={"return": float(value)})

    @staticmethod
    def _write(manager: ocp.CheckpointManager, step: int, args: ocp.args.Composite,
               **kwargs: Any) -> None:
        """One synchronous save. Orbax writes to ``<step>`` + UNFINISHED and renames it when
        complete, and drops the checkpoints past max_to_keep only after that, so a failed
        write leaves the older ones as they were.

        Raises:
          SaveFailed: the write failed (OSError, or ValueError: tensorstore's errors, e.g.
            RESOURCE_EXHAUSTED for a full disk); its unfinished directory is removed first
            (it holds the space a full disk needs back).
        """
        before = set(threading.enumerate())
        try:
            manager.save(step, args=args, force=True, **kwargs)
        except (OSError, ValueError) as e:
            # The first error ends the save while its other threads still write (and make
            # directories): wait for them, or they bring the removed directory back.
            deadline = time.monotonic() + FAILED_WRITE_TIMEOUT
            for thread in set(threading.enumerate()) - before:
                # Thread.join itself: orbax's threads re-raise their error from join().
                threading.Thread.join(thread, max(0.0, deadline - time.monotonic()))
            for leftover in Path(manager.directory).glob(f"{step}{UNFINISHED}*"):
                shutil.rmtree(leftover, ignore_errors=True)
            raise SaveFailed(f"env step {step} in {manager.directory}: {type(e).__name__}: "
                             f"{_first_line(e)}") from e

    def best_step(self, kind: str = "eval") -> int | None:
        """Env step of the best-by-``kind`` checkpoint, or None when there is none yet."""
        return self._best[kind].best_step()

    def restore_best(self, kind: str, state_template: Any) -> tuple[Any, dict]:
        """Restore (state, loop dict) of the best-by-``kind`` checkpoint.

        Raises:
          FileNotFoundError: there is no best-by-``kind`` checkpoint (see :meth:`best_step`).
        """
        step = self.best_step(kind)
        if step is None:
            raise FileNotFoundError(f"no {BEST_DIRS[kind]}/ checkpoint in "
                                    f"{self._best[kind].directory.parent}")
        restored = self._best[kind].restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(state_template), loop=ocp.args.JsonRestore()))
        return restored["state"], restored["loop"]

    def latest_step(self) -> int | None:
        """Env step of the newest checkpoint, or None."""
        return self._last.latest_step()

    def all_steps(self) -> list[int]:
        """Env steps of the checkpoints, newest first (unfinished saves are not among them)."""
        return sorted(self._last.all_steps(), reverse=True)

    def unfinished(self) -> list[Path]:
        """Directories of checkpoint saves that never finished (see UNFINISHED)."""
        return sorted(Path(self._last.directory).glob(f"*{UNFINISHED}*"))

    def has_replay(self, step: int) -> bool:
        """Whether the checkpoint at ``step`` holds the replay contents."""
        return (self._last.directory / str(step) / "replay").exists()

    def restore_item(self, step: int, item: str, template: Any = None) -> Any:
        """One item of the checkpoint at ``step``: ``loop`` (the counters), or ``state`` /
        ``replay`` with the template's structure.

        Raises:
          whatever orbax raises for a missing, damaged or mismatched item: FileNotFoundError,
          ValueError (a structure that does not match, unreadable metadata), or Exception
          (an array file that cannot be read).
        """
        arg = ocp.args.JsonRestore() if item == "loop" else ocp.args.StandardRestore(template)
        return self._last.restore(step, args=ocp.args.Composite(**{item: arg}))[item]

    def replay_layout_differs(self, step: int, template: Any) -> bool:
        """Whether the replay saved at ``step`` has other fields or shapes than ``template``
        (saved by an older version, or with another replay size), as its metadata says;
        False when the metadata cannot be read (a damaged replay)."""
        try:
            saved = ocp.StandardCheckpointHandler().metadata(
                Path(self._last.directory) / str(step) / "replay").tree
        except Exception:  # unreadable metadata: damage, not another layout
            return False
        return _leaf_shapes(saved) != _leaf_shapes(template)

    def move_aside(self, step: int) -> Path:
        """Move the checkpoint at ``step`` to ``DAMAGED_DIR/<step>`` (nothing is deleted) and
        return where it went."""
        target = self.run_dir / DAMAGED_DIR / str(step)
        if target.exists():  # the same step was damaged before
            target = target.with_name(f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        target.parent.mkdir(exist_ok=True)
        shutil.move(Path(self._last.directory) / str(step), target)
        self._last.reload()
        return target

    def restore(self, step: int, state_template: Any, replay_template: Any | None
                ) -> tuple[Any, Any | None, dict]:
        """Restore (state, replay_state or None, loop dict) with the templates' structure.

        Raises:
          FileNotFoundError / ValueError from orbax when the checkpoint is missing or its
          structure does not match the templates (e.g. a changed network).
        """
        items = dict(state=ocp.args.StandardRestore(state_template), loop=ocp.args.JsonRestore())
        if replay_template is not None:
            items["replay"] = ocp.args.StandardRestore(replay_template)
        restored = self._last.restore(step, args=ocp.args.Composite(**items))
        replay_state = restored["replay"] if replay_template is not None else None
        return restored["state"], replay_state, restored["loop"]

    def close(self) -> None:
        """Wait for pending writes and release the managers."""
        self._last.close()
        for manager in self._best.values():
            manager.close()


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0]


def _leaf_shapes(tree: Any) -> dict[tuple, tuple]:
    """{leaf path as names: shape}, the same for a dict tree (orbax's metadata) and a
    dataclass tree (the replay state)."""
    return {tuple(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k))) for k in path):
            tuple(leaf.shape) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


class _Unrestorable(Exception):
    """The train state or the loop counters of a checkpoint do not restore."""


def _restore_step(checkpoints: RunCheckpoints, step: int, state: Any, replay_state: Any
                  ) -> tuple[Any, dict, Any | None, str | None]:
    """(state, loop, replay state or None, replay damage) of the checkpoint at ``step``.
    The replay is None when it was left out or has an older layout (then the train state
    is kept and the buffer refilled, as before); the damage is the first line of the error
    when a replay of the right layout does not restore, else None.

    Raises:
      _Unrestorable: the state or loop counters do not restore ("<item>: <error>").
    """
    restored = {}
    for item, template in (("loop", None), ("state", state)):
        try:
            restored[item] = checkpoints.restore_item(step, item, template)
        except Exception as e:  # orbax raises several kinds (see restore_item)
            raise _Unrestorable(f"{item}: {type(e).__name__}: {_first_line(e)}") from e
    if not checkpoints.has_replay(step):
        return restored["state"], restored["loop"], None, None
    try:
        replay = checkpoints.restore_item(step, "replay", replay_state)
    except Exception as e:
        if not checkpoints.replay_layout_differs(step, replay_state):
            return restored["state"], restored["loop"], None, \
                f"replay: {type(e).__name__}: {_first_line(e)}"
        # A replay saved before a field existed (is_expert): keep the train state.
        log.warning("the replay in the checkpoint has an older layout (%s); keeping the train "
                    "state and refilling the buffer", _first_line(e))
        replay = None
    return restored["state"], restored["loop"], replay, None


def resume(checkpoints: RunCheckpoints, state: Any, replay_state: Any, learning_starts: int
           ) -> tuple[Any, Any, dict]:
    """(state, replay_state, loop counters) from the newest checkpoint that restores, with
    the given states as templates; the templates and new counters when there is none yet.

    Checkpoints that do not restore (truncated or unreadable files) are skipped with a
    warning and moved to ``DAMAGED_DIR`` (never deleted); one whose train state restores
    but whose replay is damaged is used (buffer refilled) only when no older checkpoint
    restores whole. Unfinished saves (a process killed while saving) are never restored.
    A checkpoint without usable replay contents (left out, or saved in an older layout)
    keeps its train state and the replay starts empty (it is refilled). ``restarts`` goes
    up by one.

    Raises:
      NoUsableCheckpoint: there are checkpoints but none restores (the message names the
        run directory and why each failed; e.g. a train state that does not match the
        templates).
    """
    for leftover in checkpoints.unfinished():
        log.warning("%s is a checkpoint save that never finished (the process stopped during "
                    "it): it is never restored; delete it to free its space", leftover)
    steps = checkpoints.all_steps()
    if not steps:
        log.warning("no checkpoint in %s yet: starting from scratch with its config",
                    checkpoints.run_dir)
        return state, replay_state, dict(NEW_LOOP)
    skipped: dict[int, str] = {}  # env step -> why it does not restore
    fallback = None  # (step, state, loop): the newest train state whose replay is damaged
    for step in steps:
        try:
            restored, loop, restored_replay, damage = _restore_step(checkpoints, step, state,
                                                                    replay_state)
        except _Unrestorable as e:
            skipped[step] = str(e)
            log.warning("skipping the checkpoint of env step %d: its %s", step, e)
            continue
        if damage is None:
            break
        skipped[step] = damage
        log.warning("the checkpoint of env step %d has a train state but its %s; looking for "
                    "an older complete checkpoint", step, damage)
        fallback = fallback or (step, restored, loop)
    else:
        if fallback is None:
            raise NoUsableCheckpoint(
                f"no checkpoint in {checkpoints.run_dir / 'checkpoints'} restores: "
                + "; ".join(f"env step {s}: {why}" for s, why in skipped.items()))
        step, restored, loop = fallback
        restored_replay = None
        log.warning("no older complete checkpoint: keeping the train state of env step %d "
                    "and refilling the replay", step)
    if jax.process_index() == 0:  # one process moves them (they share the run directory)
        for bad in skipped.keys() - {step}:
            log.warning("moved the checkpoint of env step %d that does not restore to %s",
                        bad, checkpoints.move_aside(bad))
    return _resumed(step, restored, restored_replay, replay_state, loop, learning_starts)


def _resumed(step: int, state: Any, restored_replay: Any | None, replay_state: Any,
             loop: dict, learning_starts: int) -> tuple[Any, Any, dict]:
    """(state, replay_state, loop counters) of a restored checkpoint: the template
    ``replay_state`` (emptied buffer) when no replay was restored; says what was resumed."""
    if restored_replay is not None:
        log.info("resumed from env step %d with %d replay slots", step, loop["replay_slots"])
        replay_state = restored_replay
    else:
        loop["replay_slots"] = 0
        log.info("resumed from env step %d; the checkpoint has no usable replay contents, so "
                 "the buffer is refilled (%d env steps of warm-up before learning)", step,
                 learning_starts)
    loop = {**NEW_LOOP, **loop}  # checkpoints from before some counters existed
    loop["restarts"] += 1
    return state, replay_state, loop
