"""Sample efficiency: env steps until the mean evaluation return reaches the env's target.

Each seed is a real run of ``launch/run.py`` (evaluation every ``--eval-interval`` env steps,
``--eval-episodes`` episodes, noise off, the preset's eval epsilon) in each loop mode of
``--mode`` (``--actors.mode``: lockstep, bounded, or both, the seeds' runs of the two modes
interleaved); the steps to target are read back from its TensorBoard events. Prints
``seed=S mode=M steps_to_target=N`` (or ``none``) per run, then a summary line per mode and a
markdown table with a column per mode (runs that reached the target, median and range of the
steps to target, wall minutes per run), and exits 1 when fewer than ``--required`` seeds
reach the target in a mode.

    python benchmarks/sample_efficiency.py --algo rainbow --env CartPole-v1
    python benchmarks/sample_efficiency.py --algo dqn --env CartPole-v1 --expert scripted
    python benchmarks/sample_efficiency.py --algo tqc --env Pendulum-v1 --mode bounded

Presets built for pixels and long runs get the changes in SMALL_ENV_OVERRIDES on these envs
(printed with the results); any other flag can follow ``--``. ``--expert scripted`` trains
with the expert curriculum (EXPERT_CURRICULUM: the env's scripted expert of
``envs/scripted.py`` drives 50% of the episodes at first, 10% from 20k env steps on); the
evaluations are always the agent's own.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common import ROOT, RUN_PY, machine, markdown_table

MODES = ("lockstep", "bounded")

# env id -> (target mean evaluation return, env-step budget).
TARGETS = {
    "CartPole-v1": (475.0, 50_000),
    "Pendulum-v1": (-200.0, 15_000),
}

# (preset, env id) -> launch/run.py flags that fit a pixel preset to a small env and budget.
# Rainbow keeps its algorithm (C51 51 atoms, double Q, dueling, noisy nets, n-step 3, PER 0.5
# with the loss as priority) and takes the loop sizes of the iqn / dqn presets; its support
# covers CartPole's returns (gamma 0.99: at most 100).
SMALL_ENV_OVERRIDES = {
    ("rainbow", "CartPole-v1"): [
        "--network.torso", "auto", "--network.hidden-dim", "256", "--env.num-envs", "4",
        "--agent.v-min", "0", "--agent.v-max", "100", "--agent.learning-rate", "1e-3",
        "--agent.target-update-period", "100", "--training.learning-starts", "1000",
        "--training.replay-ratio", "0.5", "--training.batch-size", "64",
        "--replay.capacity", "100000"],
    # TQC's paper critics (5 x 3 x 512) run ~8 grad steps/s on 2 CPU cores; two critics of
    # 2 x 256 with lr 1e-3 (RL Zoo's Pendulum setting) keep the algorithm and fit the budget.
    ("tqc", "Pendulum-v1"): [
        "--tqc.num-critics", "2", "--tqc.critic-hidden", "256", "256",
        "--tqc.actor-learning-rate", "1e-3", "--tqc.critic-learning-rate", "1e-3",
        "--tqc.alpha-learning-rate", "1e-3"],
}


# env id -> the expert curriculum of --expert scripted.
EXPERT_CURRICULUM = {
    env_id: ["--expert.kind", "scripted", "--expert.source", f"envs.scripted:{name}",
             "--expert.mode", "episode", "--expert.ratio-start", "0.5",
             "--expert.ratio-floor", "0.1", "--expert.ratio-decay-steps", "20000"]
    for env_id, name in (("CartPole-v1", "cartpole"), ("Pendulum-v1", "pendulum"))}


def eval_returns(run_dir: Path) -> list[tuple[int, float]]:
    """(env step, eval/return_mean) of every evaluation of a run."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if "eval/return_mean" not in acc.Tags()["scalars"]:
        return []
    return [(e.step, e.value) for e in acc.Scalars("eval/return_mean")]


def steps_to_target(returns: list[tuple[int, float]], target: float) -> int | None:
    """First env step whose evaluation return is >= target, or None."""
    return next((step for step, value in returns if value >= target), None)


def run_seed(args: argparse.Namespace, seed: int, mode: str, budget: int,
             out: Path) -> tuple[Path, float]:
    """Train one seed in one loop mode; returns its run directory and wall seconds."""
    run_dir = out / f"{args.algo}-{args.env.replace('/', '_')}-{mode}-s{seed}"
    cmd = [sys.executable, str(RUN_PY), "--algo", args.algo, "--env", args.env,
           "--seed", str(seed), "--total-steps", str(budget), "--run-dir", str(run_dir),
           "--actors.mode", mode, "--env.no-asynchronous", "--logging.no-progress-bar",
           "--training.eval-interval", str(args.eval_interval),
           "--training.eval-episodes", str(args.eval_episodes),
           "--training.checkpoint-interval", str(budget),
           *fitted_flags(args)]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"seed {seed} ({mode}) failed:\n{result.stderr[-3000:]}")
    return run_dir, time.perf_counter() - start


def fitted_flags(args: argparse.Namespace) -> list[str]:
    """The launch/run.py flags added to every seed: small-env fit, expert curriculum, extras."""
    expert = EXPERT_CURRICULUM[args.env] if args.expert == "scripted" else []
    return [*SMALL_ENV_OVERRIDES.get((args.algo, args.env), []), *expert, *args.overrides]


def mode_column(steps: list[int | None], walls: list[float], budget: int) -> list[str]:
    """The summary table's cells of one mode: reached, median and range of the steps to
    target (a seed that never reached it counts as past the budget), steps per seed, median
    wall minutes per run."""
    reached = sorted(s for s in steps if s is not None)
    ranked = sorted(s if s is not None else float("inf") for s in steps)
    mid = statistics.median(ranked)
    spread = f"{reached[0]}-{reached[-1]}" if reached else "-"
    if len(reached) < len(steps):
        spread += f" (+{len(steps) - len(reached)} none)"
    return [f"{len(reached)}/{len(steps)}", f"> {budget}" if mid == float("inf") else f"{mid:g}",
            spread, " ".join("none" if s is None else str(s) for s in steps),
            f"{statistics.median(walls) / 60:.1f}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="iqn", help="preset (rl/presets.py)")
    parser.add_argument("--env", default="CartPole-v1", choices=sorted(TARGETS))
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1, in each mode")
    parser.add_argument("--required", type=int, default=4,
                        help="seeds that must reach the target for exit code 0")
    parser.add_argument("--eval-interval", type=int, default=2_500,
                        help="env steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=10,
                        help="episodes per evaluation")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once")
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both",
                        help="the loop's --actors.mode; both: every seed in each mode")
    parser.add_argument("--expert", choices=["none", "scripted"], default="none",
                        help="train with the scripted expert's curriculum (EXPERT_CURRICULUM)")
    parser.add_argument("--out", type=Path, default=None,
                        help="keep the run directories here (default: a temporary directory)")
    parser.add_argument("overrides", nargs=argparse.REMAINDER,
                        help="extra launch/run.py flags after --, e.g. -- --agent.n-step 1")
    args = parser.parse_args()
    args.overrides = [a for a in args.overrides if a != "--"]
    target, budget = TARGETS[args.env]
    modes = MODES if args.mode == "both" else (args.mode,)
    print(machine(), flush=True)
    fitted = fitted_flags(args)
    if fitted:
        print(f"overrides: {' '.join(fitted)}", flush=True)

    steps = {mode: [] for mode in modes}
    walls = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
            # Seed by seed, each mode in turn: the modes share the machine's load alike.
            futures = {(seed, mode): pool.submit(run_seed, args, seed, mode, budget, out)
                       for seed in range(args.seeds) for mode in modes}
            for (seed, mode), future in futures.items():
                run_dir, wall = future.result()
                returns = eval_returns(run_dir)
                reached = steps_to_target(returns, target)
                steps[mode].append(reached)
                walls[mode].append(wall)
                curve = " ".join(f"{step}:{value:.1f}" for step, value in returns)
                print(f"seed={seed} mode={mode} "
                      f"steps_to_target={reached if reached is not None else 'none'} "
                      f"wall_s={wall:.0f} eval_returns={curve}", flush=True)
    ok = True
    for mode in modes:
        reached = sum(s is not None for s in steps[mode])
        ok &= reached >= args.required
        print(f"summary algo={args.algo} env={args.env} mode={mode} expert={args.expert} "
              f"target={target:g} budget={budget} reached={reached}/{args.seeds} "
              f"required={args.required} {'PASS' if reached >= args.required else 'FAIL'}")
    columns = [mode_column(steps[mode], walls[mode], budget) for mode in modes]
    rows = ["seeds that reached the target", "median env steps to target",
            "range (seeds that reached it)", "env steps to target by seed",
            "median wall minutes per run"]
    print()
    print(markdown_table([f"{args.algo} on {args.env} (target {target:g}, budget {budget})",
                          *modes], [[row, *cells] for row, *cells in zip(rows, *columns)]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
