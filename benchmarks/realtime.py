"""Real time on TrackMania: late steps and grad steps of the loop of before the actor/learner
split and of the new loop in realtime mode, against the headless stand-in game.

Each loop runs ``launch/run.py --algo tqc_tm20 --trackmania.backend standin`` (the stand-in
game starts inside the env worker) with the full tqc_tm20 networks and batch 256 (no size
overrides; 1.1 to 1.4 s per grad step on 2 CPU cores) and the preset's replay ratio of 6,
learning from ``--learning-starts`` env steps, for ``--steps`` env steps (the game's clock is
20 Hz: 600 steps are 30 s), with no periodic checkpoint:

- before: the single-threaded loop of ``--old-commit`` (the commit before the split), run from
  a git worktree made for it (and removed at the end) with its default
  ``trackmania.learner_budget`` of 0.8: the learner may start grad steps during the first 80%
  of each 50 ms step, a grad step once started runs to its end, and on the steps where the
  car respawns it runs every grad step owed;
- after: the new loop in ``--actors.mode realtime`` (TrackMania's default) with its default
  actor in a child process: the actor keeps the game's clock and never waits; the learner
  learns beside it as fast as it can, up to the ratio;
- after (thread): the same with the actor in a thread of the training process
  (``--actors.backend thread``), where its ``act`` shares XLA's CPU runtime with the grad
  step;
- no learner: the new loop whose learning never starts: the lateness of the stand-in game and
  the actor alone on this machine.

A run still going after ``--wall-cap`` seconds is stopped with Ctrl-C (the old loop takes
seconds per step once it learns, and at an episode's end it runs the whole backlog of grad
steps). Figures come from the TensorBoard scalars logged every ``--log-interval`` env steps; an
unfinished interval is not counted, and the seconds between the last logged point and the
end of the process are shown (a loop stuck in a long learning burst logs nothing):

- late steps: the sum of ``perf/late_steps`` (rtgym's "time-step timed out" warnings in the
  env worker; one step can raise more than one); late share: late steps / env steps;
- grad steps: ``train/grad_steps`` at the last logged point;
- the learning window: from the last logged point before the first grad step (both loops
  count the grad steps of the ratio once whole episodes hold learning_starts steps) to the
  last one (no learner: from the first logged point): its late share, grad steps/s and env
  steps/s.

    python benchmarks/realtime.py
    python benchmarks/realtime.py --steps 300 --wall-cap 180 --repeats 2
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, RUN_PY, machine, markdown_table, run_for
from launch import compare  # after common, which puts the repository root on sys.path

NEVER = 10 ** 9
"""A step count no run reaches (checkpoint interval; the no-learner run's learning start)."""
LOOPS = ("before", "after", "after (thread)", "no learner")


@dataclasses.dataclass
class Figures:
    """One run, read back from its logged points (counts over the run, then over its
    learning window)."""

    loop: str
    repeat: int
    exit_code: int
    env_steps: int = 0
    late_steps: int = 0
    grad_steps: int = 0
    window_steps: int = 0
    window_late: int = 0
    window_grad: int = 0
    window_s: float = float("nan")
    tail_s: float = float("nan")

    def row(self) -> list[str]:
        def ratio(a, b, digits):
            return f"{a / b:.{digits}f}" if b else "-"

        return [self.loop, str(self.repeat), str(self.exit_code), str(self.env_steps),
                str(self.late_steps), ratio(self.late_steps, self.env_steps, 3),
                str(self.grad_steps), ratio(self.window_grad, self.window_s, 3),
                str(self.window_steps), ratio(self.window_late, self.window_steps, 3),
                ratio(self.window_steps, self.window_s, 2), f"{self.window_s:.0f}",
                f"{self.tail_s:.0f}"]


HEADERS = ["loop", "repeat", "exit", "env steps", "late steps", "late share", "grad steps",
           "grad steps/s (window)", "env steps (window)", "late share (window)",
           "env steps/s (window)", "window s", "unlogged s at the end"]


def run_flags(args: argparse.Namespace, loop: str, run_dir: Path) -> list[str]:
    """The launch/run.py flags of a loop's run."""
    learning_starts = NEVER if loop == "no learner" else args.learning_starts
    flags = ["--algo", "tqc_tm20", "--trackmania.backend", "standin",
             "--total-steps", str(args.steps), "--training.learning-starts",
             str(learning_starts), "--training.checkpoint-interval", str(NEVER),
             "--logging.log-interval", str(args.log_interval), "--logging.no-progress-bar",
             "--run-dir", str(run_dir)]
    if loop == "before":
        return flags
    flags += ["--actors.mode", "realtime"]
    return [*flags, "--actors.backend", "thread"] if loop == "after (thread)" else flags


def read_figures(loop: str, repeat: int, code: int, run_dir: Path, ended: float) -> Figures:
    """The figures of a run from its logged points (see the module docstring); ``ended``:
    when its process ended (Unix seconds)."""
    figures = Figures(loop, repeat, code)
    try:
        run = compare.load_run(run_dir)
    except compare.CompareError as e:
        print(f"  {loop}: nothing logged ({e})", flush=True)
        return figures
    late, grad = run.scalars["perf/late_steps"], run.scalars["train/grad_steps"]
    wall = grad.wall_minutes * 60.0
    figures.env_steps = int(grad.steps[-1])
    figures.late_steps = int(late.values.sum())
    figures.grad_steps = int(grad.values[-1])
    figures.tail_s = ended - run.last_wall_time
    learning = np.flatnonzero(grad.values > 0)
    first = max(learning[0] - 1, 0) if len(learning) else 0
    figures.window_steps = int(grad.steps[-1] - grad.steps[first])
    figures.window_late = int(late.values[late.steps > grad.steps[first]].sum())
    figures.window_grad = int(grad.values[-1] - grad.values[first])
    figures.window_s = float(wall[-1] - wall[first])
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int, default=600,
                        help="env steps of each run (20 Hz: 600 = 30 s of game time)")
    parser.add_argument("--learning-starts", type=int, default=100,
                        help="training.learning_starts (env steps)")
    parser.add_argument("--log-interval", type=int, default=10,
                        help="logging.log_interval (env steps): the figures' granularity")
    parser.add_argument("--wall-cap", type=float, default=240.0,
                        help="seconds after which a run still going is stopped with Ctrl-C")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of the runs (before, after, no learner), alternated")
    parser.add_argument("--loops", nargs="+", choices=LOOPS, default=list(LOOPS),
                        help="the loops to run (quote 'after (thread)' and 'no learner')")
    parser.add_argument("--old-commit", default="9bc72fa",
                        help="the commit of the old single-threaded loop")
    parser.add_argument("--worktree", type=Path, default=Path("/tmp/old-loop"),
                        help="where to check out --old-commit (must not exist; removed at "
                             "the end)")
    parser.add_argument("--out", type=Path, default=None,
                        help="keep run directories and logs here (None: in a temporary "
                             "directory, deleted at the end)")
    args = parser.parse_args()
    if args.worktree.exists():
        parser.error(f"--worktree {args.worktree} exists; remove it (git worktree remove "
                     f"--force {args.worktree}) or pick another path")

    print(machine(), flush=True)
    if "before" in args.loops:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach",
                        str(args.worktree), args.old_commit], check=True, capture_output=True)
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = args.out or Path(tmp)
            out.mkdir(parents=True, exist_ok=True)
            for repeat in range(args.repeats):
                for loop in args.loops:
                    cwd = args.worktree if loop == "before" else ROOT
                    slug = "".join(c if c.isalnum() else "_" for c in loop).strip("_")
                    name = f"{slug}-{repeat}"
                    cmd = [sys.executable, str(cwd / RUN_PY.relative_to(ROOT)),
                           *run_flags(args, loop, out / name)]
                    print(f"{loop} (cwd {cwd}): {' '.join(cmd[1:])}", flush=True)
                    code = run_for(cmd, args.wall_cap, out / f"{name}.log", cwd=cwd)
                    figures = read_figures(loop, repeat, code, out / name, time.time())
                    print(markdown_table(HEADERS, [figures.row()]).splitlines()[-1],
                          flush=True)
                    results.append(figures)
    finally:
        if "before" in args.loops:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(args.worktree)], check=False)
    print(machine().replace("machine:", "machine at the end:"))
    print()
    print(markdown_table(HEADERS, [f.row() for f in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
