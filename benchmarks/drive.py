"""A policy that drives: train the ``iqn_cpu`` preset on CarRacing-v3 for a wall-time or
env-step budget and check that its evaluation return reaches the target.

Runs ``launch/run.py --algo iqn_cpu --seed S`` (evaluation every 10k env steps over 10 whole
episodes, noise off; the preset's values) until ``--total-steps`` or, at the latest, until
``--minutes`` of wall time have passed (then Ctrl-C: the run saves a checkpoint and stops),
reads the evaluations back from the run's TensorBoard events and writes into ``--out``:

- ``drive.json``: the command, the machine, the budget, and per evaluation the env step, the
  wall seconds since the command started (start-up, compiles and evaluations included), and
  the evaluation return's mean and standard deviation over its episodes; plus the first
  evaluation at or above ``--target`` (null when none);
- ``drive.png``: the curve, against env steps and against wall minutes;
- ``run/``: the run directory (checkpoints, ``best/``; ``launch/play.py OUT/run --video F``
  shows the agent).

Exit code 0 when an evaluation reached the target within the budget, 1 when none did, 2 when
the run failed (its log is ``OUT/run.log``). Flags after ``--`` go to ``launch/run.py``.

    python benchmarks/drive.py --minutes 150 --seed 0 --out drive-s0
    python benchmarks/drive.py --total-steps 2000 --out /tmp/drive -- --training.eval-interval 1000
    python benchmarks/drive.py --combine drive-s0 drive-s1 drive-s2 --png seeds.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from common import EXIT_INTERRUPTED, RUN_PY, machine, markdown_table, run_for
from launch.compare import CompareError, load_run

TARGET = 700.0
"""Mean evaluation return that counts as driving: most of the lap within the 1000 frames
(each of the about 300 tiles gives 1000 / N, each frame costs 0.1; about 900 is "solved")."""


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """(this script's flags, the flags after ``--`` for launch/run.py)."""
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", default="iqn_cpu", help="preset (default iqn_cpu)")
    parser.add_argument("--minutes", type=float, default=150.0,
                        help="wall-time budget of the run, start-up included (default 150)")
    parser.add_argument("--total-steps", type=int, default=None,
                        help="env-step budget (default: the preset's training.total_steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=TARGET,
                        help=f"mean evaluation return to reach (default {TARGET:g})")
    parser.add_argument("--out", type=Path,
                        help="directory for drive.json, drive.png, run.log and run/")
    parser.add_argument("--combine", type=Path, nargs="+", metavar="OUT",
                        help="no run: plot the drive.json of these --out directories in one "
                             "figure (--png) and print their evaluations as a table")
    parser.add_argument("--png", type=Path, help="the figure of --combine")
    args = parser.parse_args(argv[:split])
    if args.combine is None and args.out is None:
        parser.error("--out is required (or --combine OUT ... --png FILE)")
    if args.combine is not None and args.png is None:
        parser.error("--combine needs --png FILE")
    if args.minutes <= 0:
        parser.error(f"--minutes must be > 0, got {args.minutes}")
    if args.total_steps is not None and args.total_steps < 1:
        parser.error(f"--total-steps must be >= 1, got {args.total_steps}")
    return args, argv[split + 1:]


def evaluations(run_dir: Path, started: float) -> list[dict[str, float]]:
    """Per evaluation of the run: env_step, wall_s (seconds from ``started``, Unix time),
    eval_mean and eval_std, by env step; [] when the run wrote none.

    Raises:
      CompareError: the run directory holds no readable event file.
    """
    run = load_run(run_dir)
    if "eval/return_mean" not in run.scalars:
        return []
    mean, std = run.scalars["eval/return_mean"], run.scalars["eval/return_std"]
    stds = {int(s): float(v) for s, v in zip(std.steps, std.values)}
    origin = run.first_wall_time - started
    return [dict(env_step=int(s), wall_s=round(origin + 60.0 * float(w), 1),
                 eval_mean=float(v), eval_std=stds[int(s)])
            for s, v, w in zip(mean.steps, mean.values, mean.wall_minutes)]


def plot(curves: list[tuple[str, list[dict[str, float]]]], target: float, title: str,
         path: Path) -> None:
    """Each (label, evaluations) curve as its means with a +- std band, the target as a
    dashed line, against env steps (left) and wall minutes (right), written to ``path``
    (PNG)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 3.8), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    for ax, key, label, scale in ((axes[0], "env_step", "env steps (thousands)", 1e-3),
                                  (axes[1], "wall_s", "wall time (minutes)", 1 / 60)):
        for i, (name, points) in enumerate(curves):
            x = [p[key] * scale for p in points]
            mean = [p["eval_mean"] for p in points]
            ax.fill_between(x, [p["eval_mean"] - p["eval_std"] for p in points],
                            [p["eval_mean"] + p["eval_std"] for p in points],
                            color=f"C{i}", alpha=0.2, linewidth=0)
            ax.plot(x, mean, color=f"C{i}", marker="o", markersize=3,
                    label=f"{name}: mean +- std of the evaluation return")
        ax.axhline(target, linestyle="--", color="grey", label=f"target {target:g}")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("evaluation return")
    axes[0].legend(loc="lower right", fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.savefig(path, dpi=100)


def combine(outs: list[Path], png: Path) -> int:
    """One figure of the ``drive.json`` curves of several ``--out`` directories (seeds),
    written to ``png``; prints a markdown table of their evaluations. Returns 0, or 2 when
    a directory holds no drive.json."""
    results = []
    for out in outs:
        if not (out / "drive.json").is_file():
            print(f"{out} holds no drive.json (written by a finished drive.py run)",
                  file=sys.stderr)
            return 2
        results.append(json.loads((out / "drive.json").read_text()))
    algos = sorted({r["algo"] for r in results})
    plot([(f"seed {r['seed']}", r["evaluations"]) for r in results], results[0]["target"],
         f"{', '.join(algos)}: {len(results)} seeds", png)
    steps = sorted({p["env_step"] for r in results for p in r["evaluations"]})
    cells = [{p["env_step"]: f"{p['eval_mean']:.0f} +- {p['eval_std']:.0f} "
                             f"({p['wall_s'] / 60:.0f} min)" for p in r["evaluations"]}
             for r in results]
    print(markdown_table(["env steps", *(f"seed {r['seed']}" for r in results)],
                         [[f"{s // 1000}k", *(c.get(s, "") for c in cells)] for s in steps]))
    print(f"figure: {png}")
    return 0


def _stopped_by(code: int, wall_s: float, minutes: float) -> str:
    """What ended the run: "total steps" (exit 0), "wall time" (Ctrl-C at the budget) or
    "interrupted" (a Ctrl-C before it)."""
    if code == 0:
        return "total steps"
    return "wall time" if wall_s >= minutes * 60.0 else "interrupted"


def main(argv: list[str] | None = None) -> int:
    args, run_flags = parse_args(argv)
    if args.combine is not None:
        return combine(args.combine, args.png)
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = args.out / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [sys.executable, str(RUN_PY), "--algo", args.algo, "--seed", str(args.seed),
           "--run-dir", str(run_dir)]
    if args.total_steps is not None:
        cmd += ["--training.total-steps", str(args.total_steps)]
    cmd += run_flags
    host = machine()
    print(host, flush=True)
    print("command:", " ".join(cmd[1:]), flush=True)
    print(f"progress: {args.out / 'run.log'}; TensorBoard: tensorboard --logdir {args.out}",
          flush=True)
    started = time.time()
    code = run_for(cmd, args.minutes * 60.0, args.out / "run.log")
    wall_s = time.time() - started
    if code not in (0, EXIT_INTERRUPTED):
        print(f"launch/run.py failed with exit code {code}; see {args.out / 'run.log'}",
              file=sys.stderr)
        return 2
    try:
        points = evaluations(run_dir, started)
    except CompareError as e:
        print(f"no evaluations to read: {e}", file=sys.stderr)
        return 2
    reached = next((p for p in points if p["eval_mean"] >= args.target), None)
    result = dict(algo=args.algo, seed=args.seed, command=cmd[1:], machine=host,
                  minutes_budget=args.minutes, total_steps=args.total_steps,
                  stopped_by=_stopped_by(code, wall_s, args.minutes),
                  wall_s=round(wall_s, 1), target=args.target, reached=reached,
                  evaluations=points)
    (args.out / "drive.json").write_text(json.dumps(result, indent=1) + "\n")
    best = max((p["eval_mean"] for p in points), default=float("nan"))
    env_id = json.loads((run_dir / "config.json").read_text())["env"]["id"]
    plot([(f"seed {args.seed}", points)], args.target, f"{args.algo} on {env_id}, seed "
         f"{args.seed}: best "
         f"{best:.0f}, {wall_s / 60:.0f} min", args.out / "drive.png")
    for p in points:
        print(f"env step {p['env_step']:>7}  wall {p['wall_s'] / 60:6.1f} min  "
              f"eval {p['eval_mean']:8.1f} +- {p['eval_std']:6.1f}")
    if reached is None:
        print(f"target {args.target:g} not reached (best {best:.1f}) within "
              f"{wall_s / 60:.1f} min; {args.out / 'drive.json'}")
        return 1
    print(f"target {args.target:g} reached at env step {reached['env_step']} after "
          f"{reached['wall_s'] / 60:.1f} min; {args.out / 'drive.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
