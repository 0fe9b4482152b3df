"""Orbax checkpoints of a run: the last N (train state, replay, loop counters), and the best
train state by evaluation return and by training return."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

log = logging.getLogger("launch")

NEW_LOOP = dict(env_steps=0, vector_steps=0, episodes=0, replay_slots=0, grad_credit=0.0,
                best_eval_return=None, best_train_return=None, restarts=0, rollbacks=0,
                lr_scale=1.0, expert_floor_raise=None)
"""The loop counters of a new run (checkpointed beside the train state)."""


BEST_DIRS = {"eval": "best", "train": "best_train"}
"""Best-checkpoint kind -> directory: by evaluation return, and by the mean return of recent
training episodes (seed 004 D: a collapsed run restarts from the best policy it had)."""


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
        """Save at env step ``step``; ``replay_state=None`` leaves the replay out."""
        items = dict(state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(loop))
        if replay_state is not None:
            items["replay"] = ocp.args.StandardSave(replay_state)
        self._last.save(step, args=ocp.args.Composite(**items), force=True)

    def save_best(self, step: int, state: Any, loop: dict, value: float,
                  kind: str = "eval") -> None:
        """Offer a checkpoint to the best-by-``kind`` manager (a key of BEST_DIRS); it is kept
        only if ``value`` (the return) is the best so far."""
        self._best[kind].save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                            loop=ocp.args.JsonSave(loop)),
                              metrics={"return": float(value)}, force=True)

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

    def has_replay(self, step: int) -> bool:
        """Whether the checkpoint at ``step`` holds the replay contents."""
        return (self._last.directory / str(step) / "replay").exists()

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


def resume(checkpoints: RunCheckpoints, state: Any, replay_state: Any, learning_starts: int
           ) -> tuple[Any, Any, dict]:
    """(state, replay_state, loop counters) from the newest checkpoint, with the given
    states as templates; the templates and new counters when there is none yet. A
    checkpoint without usable replay contents (left out, or saved in an older layout) keeps
    its train state and the replay starts empty (it is refilled). ``restarts`` goes up by
    one.

    Raises:
      FileNotFoundError / ValueError: a train state that does not match the templates.
    """
    step = checkpoints.latest_step()
    if step is None:
        log.warning("no checkpoint in %s yet: starting from scratch with its config",
                    checkpoints.run_dir)
        return state, replay_state, dict(NEW_LOOP)
    with_replay = checkpoints.has_replay(step)
    try:
        state, restored_replay, loop = checkpoints.restore(
            step, state, replay_state if with_replay else None)
    except ValueError as e:
        if not with_replay:
            raise
        # A replay saved before a field existed (is_expert): keep the train state.
        state, _, loop = checkpoints.restore(step, state, None)
        with_replay = False
        log.warning("the replay in the checkpoint has an older layout (%s); keeping the train "
                    "state and refilling the buffer", str(e).splitlines()[0])
    if with_replay:
        replay_state = restored_replay
        log.info("resumed from env step %d with %d replay slots", step, loop["replay_slots"])
    else:
        loop["replay_slots"] = 0
        log.info("resumed from env step %d; the checkpoint has no usable replay contents, so "
                 "the buffer is refilled (%d env steps of warm-up before learning)", step,
                 learning_starts)
    loop = {**NEW_LOOP, **loop}  # checkpoints from before some counters existed
    loop["restarts"] += 1
    return state, replay_state, loop
