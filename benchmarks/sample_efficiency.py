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

``--against sbx`` runs sbx (PyPI ``sbx-rl``; ``benchmarks/sbx_peer.py``) beside ours, seed by
seed, ours then sbx, with exactly our run's settings (SBX_FITS first narrows ours to what
sbx can express; the mapping refuses anything else), ours in one loop mode (default
lockstep), and prints a column each: the steps-to-target rows, the mean evaluation return
of the seeds at every evaluation step, and wall minutes per run (each run's whole
subprocess, start-up and evaluations included). sbx runs under ``--sbx-python`` (default:
this interpreter), so it may live in its own venv; each writes ``evaluations.json`` in its
run directory. ``--swap`` (TQC) adds a column of sbx's loop with our update
(``benchmarks/sbx_swap.py``): where ours and sbx differ, it tells the loop from the update.

    python benchmarks/sample_efficiency.py --algo tqc --env Pendulum-v1 --against sbx
    python benchmarks/sample_efficiency.py --algo dqn --env LunarLander-v3 --against sbx
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common import ROOT, RUN_PY, machine, markdown_table
import sbx_peer

MODES = ("lockstep", "bounded")

SWAP = "sbx_our_update"
"""Column of ``--swap``: sbx's loop with our update (benchmarks/sbx_swap.py)."""

_SPEC_LOCK = threading.Lock()
"""Held while a run's spec is built: our config parser fails in two threads at once
(CPython 3.11: "SystemError: AST constructor recursion depth mismatch")."""

# env id -> (target mean evaluation return, env-step budget). LunarLander: gymnasium's
# "solved" return and RL Zoo's DQN budget (n_timesteps 1e5).
TARGETS = {
    "CartPole-v1": (475.0, 50_000),
    "Pendulum-v1": (-200.0, 15_000),
    "LunarLander-v3": (200.0, 100_000),
}

# env id -> env steps between evaluations when --eval-interval is not given.
EVAL_INTERVALS = {"CartPole-v1": 2_500, "Pendulum-v1": 2_500, "LunarLander-v3": 10_000}

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


# RL Baselines3 Zoo's tuned DQN for LunarLander (hyperparams/dqn.yml, LunarLander-v3 block,
# rl-baselines3-zoo commit 22e3ff2 of 2026-04-23; the same numbers as its LunarLander-v2
# block since 2021). The sbx run of --against sbx gets exactly these (benchmarks/sbx_peer.py
# maps our flags below back onto them; tests/test_sample_efficiency.py checks it).
RL_ZOO_LUNARLANDER_DQN = dict(
    n_timesteps=100_000, net_arch=[256, 256], learning_rate=6.3e-4, batch_size=128,
    buffer_size=50_000, learning_starts=0, gamma=0.99, target_update_interval=250,
    train_freq=4, gradient_steps=-1, exploration_fraction=0.12, exploration_final_eps=0.1)

# (preset, env id) -> launch/run.py flags of --against sbx (after SMALL_ENV_OVERRIDES): what
# sbx cannot do is switched off in ours, so both run one algorithm with one set of numbers.
SBX_FITS = {
    # TQC's small-env fit already is sbx's TQC (2 critics, no clips, Adam eps 1e-8).
    ("tqc", "Pendulum-v1"): [],
    # sbx's DQN: no double Q, Q network Dense-ReLU x 2 of one width, uniform random actions
    # before learning_starts, one epsilon draw per vector step.
    ("dqn", "CartPole-v1"): ["--agent.no-double-q", "--network.mlp-hidden", "256",
                             "--agent.random-warmup", "--agent.epsilon-draw", "vector_step"],
    # RL_ZOO_LUNARLANDER_DQN in our units: one env; replay ratio 1 in calls of 4 grad steps
    # (train_freq 4, gradient_steps -1 = 4); target copy every 250 updates = 250 env steps;
    # epsilon 1 -> 0.1 linear over 0.12 x 100k = 12k env steps, greedy evaluation; and sbx's
    # DQN as it is: no double Q, 1-step targets, Adam eps 1e-8, no gradient clip.
    ("dqn", "LunarLander-v3"): [
        "--env.num-envs", "1", "--network.mlp-hidden", "256", "--network.hidden-dim", "256",
        "--agent.learning-rate", "6.3e-4", "--training.batch-size", "128",
        "--replay.capacity", "50000", "--training.learning-starts", "0",
        "--agent.gamma", "0.99", "--agent.target-update-period", "250",
        "--training.replay-ratio", "1", "--training.grad-steps-per-call", "4",
        "--agent.epsilon-schedule", "linear", "--agent.epsilon-start", "1.0",
        "--agent.epsilon-end", "0.1", "--agent.epsilon-decay-steps", "12000",
        "--agent.eval-epsilon", "0", "--agent.no-double-q", "--agent.n-step", "1",
        "--agent.adam-eps", "1e-8", "--agent.max-grad-norm", "0"],
}

# env id -> the expert curriculum of --expert scripted.
EXPERT_CURRICULUM = {
    env_id: ["--expert.kind", "scripted", "--expert.source", f"envs.scripted:{name}",
             "--expert.mode", "episode", "--expert.ratio-start", "0.5",
             "--expert.ratio-floor", "0.1", "--expert.ratio-decay-steps", "20000"]
    for env_id, name in (("CartPole-v1", "cartpole"), ("Pendulum-v1", "pendulum"))}


def eval_returns(run_dir: Path) -> list[tuple[int, float]]:
    """(env step, mean evaluation return) of every evaluation of a run: ours from
    eval/return_mean in its TensorBoard events, sbx's from its evaluations.json."""
    sbx_file = run_dir / sbx_peer.EVALUATIONS_FILE
    if sbx_file.exists():
        return [(step, mean) for step, mean, _ in json.loads(sbx_file.read_text())["evaluations"]]
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if "eval/return_mean" not in acc.Tags()["scalars"]:
        return []
    return [(e.step, e.value) for e in acc.Scalars("eval/return_mean")]


def steps_to_target(returns: list[tuple[int, float]], target: float) -> int | None:
    """First env step whose evaluation return is >= target, or None."""
    return next((step for step, value in returns if value >= target), None)


def dips_after_target(curves: list[list[tuple[int, float]]], target: float) -> str:
    """Evaluations below ``target`` after a seed first reached it, over all seeds, as
    ``"below/after"`` (how well a learned policy is kept; '-' when no seed reached it)."""
    below = after = 0
    for returns in curves:
        reached = steps_to_target(returns, target)
        later = [value for step, value in returns if reached is not None and step > reached]
        below += sum(value < target for value in later)
        after += len(later)
    return f"{below}/{after}" if after else "-"


def run_flags(args: argparse.Namespace, seed: int, budget: int) -> list[str]:
    """launch/run.py flags of one seed of ours, without run dir and loop mode."""
    return ["--algo", args.algo, "--env", args.env, "--seed", str(seed),
            "--total-steps", str(budget), "--env.no-asynchronous", "--logging.no-progress-bar",
            "--training.eval-interval", str(args.eval_interval),
            "--training.eval-episodes", str(args.eval_episodes),
            "--training.checkpoint-interval", str(budget), *fitted_flags(args)]


def peer_spec(args: argparse.Namespace, seed: int, budget: int, mode: str) -> dict:
    """The sbx spec of one seed (mode ``sbx``), with our run's flags added for ``SWAP``;
    safe to call from several threads."""
    flags = run_flags(args, seed, budget)
    with _SPEC_LOCK:
        spec = sbx_spec(flags)
    return {**spec, sbx_peer.SWAP_FLAGS_KEY: flags} if mode == SWAP else spec


def run_seed(args: argparse.Namespace, seed: int, mode: str, budget: int,
             out: Path) -> tuple[Path, float]:
    """Train one seed in one loop mode (or, mode ``sbx``, sbx's run of the same settings);
    returns its run directory and wall seconds (the whole subprocess). A run that finished
    in ``out`` before (its ``<run>.done.json`` is there: ``--out`` of an interrupted
    benchmark) is not run again."""
    run_dir = out / f"{args.algo}-{args.env.replace('/', '_')}-{mode}-s{seed}"
    done = out / f"{run_dir.name}.done.json"
    if done.exists():
        return run_dir, json.loads(done.read_text())["wall_s"]
    if run_dir.exists():  # an interrupted run of ours: start it again
        shutil.rmtree(run_dir)
    if mode in ("sbx", SWAP):
        run_dir.mkdir(parents=True, exist_ok=True)
        spec_path = run_dir / sbx_peer.SPEC_FILE
        spec_path.write_text(json.dumps(peer_spec(args, seed, budget, mode), indent=1))
        if mode == SWAP:  # our update in sbx's loop (benchmarks/sbx_swap.py), our interpreter
            cmd = [sys.executable, str(Path(__file__).with_name("sbx_swap.py")), str(spec_path)]
        else:
            cmd = [args.sbx_python, str(Path(sbx_peer.__file__).resolve()), str(spec_path)]
    else:
        cmd = [sys.executable, str(RUN_PY), *run_flags(args, seed, budget),
               "--run-dir", str(run_dir), "--actors.mode", mode]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    (out / f"{run_dir.name}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"seed {seed} ({mode}) failed:\n{result.stderr[-3000:]}")
    done.write_text(json.dumps(dict(wall_s=wall, eval_returns=eval_returns(run_dir))) + "\n")
    return run_dir, wall


def our_config(flags: list[str]):
    """The config launch/run.py resolves from ``flags`` (env auto fields set for the env)."""
    import envs
    from launch import cli
    from rl import config as config_lib

    config = cli.parse(flags).config
    spec = envs.env_spec(config.env.id, **envs.make_kwargs(config))
    return config_lib.resolve_env_auto(config, spec.is_image)


def sbx_spec(flags: list[str]) -> dict:
    """sbx's run of our run with launch/run.py ``flags`` (``sbx_peer.sbx_spec``)."""
    return sbx_peer.sbx_spec(our_config(flags))


def fitted_flags(args: argparse.Namespace) -> list[str]:
    """The launch/run.py flags added to every seed: small-env fit, sbx fit (--against sbx),
    expert curriculum, extras."""
    expert = EXPERT_CURRICULUM[args.env] if args.expert == "scripted" else []
    against = SBX_FITS.get((args.algo, args.env), []) if args.against == "sbx" else []
    return [*SMALL_ENV_OVERRIDES.get((args.algo, args.env), []), *against, *expert,
            *args.overrides]


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


def curve_cells(curves: list[list[tuple[int, float]]], at: list[int]) -> list[str]:
    """Mean over seeds of the evaluation return at each step of ``at`` (seeds without an
    evaluation there are left out; '-' when none has one)."""
    cells = []
    for step in at:
        values = [value for curve in curves for s, value in curve if s == step]
        cells.append(f"{statistics.fmean(values):.1f}" if values else "-")
    return cells


def parse_args() -> argparse.Namespace:
    """The command line, checked, with defaults filled in: ``budget`` and ``eval_interval``
    from the env, ``required``, and ``columns`` (our loop modes, then sbx and the swap)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="iqn", help="preset (rl/presets.py)")
    parser.add_argument("--env", default="CartPole-v1", choices=sorted(TARGETS))
    parser.add_argument("--seeds", type=int, default=5,
                        help="N seeds, first-seed .. first-seed + N - 1, in each mode")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed")
    parser.add_argument("--required", type=int, default=None,
                        help="seeds that must reach the target for exit code 0 (in each of "
                        "our modes; default 4, 0 with --against)")
    parser.add_argument("--eval-interval", type=int, default=None,
                        help="env steps between evaluations (default: EVAL_INTERVALS)")
    parser.add_argument("--budget", type=int, default=None,
                        help="env steps per run (default: the env's budget in TARGETS)")
    parser.add_argument("--eval-episodes", type=int, default=10,
                        help="episodes per evaluation")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once")
    parser.add_argument("--mode", choices=[*MODES, "both"], default=None,
                        help="the loop's --actors.mode; both: every seed in each mode "
                        "(default both; lockstep with --against)")
    parser.add_argument("--expert", choices=["none", "scripted"], default="none",
                        help="train with the scripted expert's curriculum (EXPERT_CURRICULUM)")
    parser.add_argument("--against", choices=["sbx"], default=None,
                        help="also run sbx with the same settings, seed by seed after ours")
    parser.add_argument("--swap", action="store_true",
                        help="with --against sbx, also a column of sbx's loop with our update "
                        "(benchmarks/sbx_swap.py; TQC): is a difference the loop's or the "
                        "update's?")
    parser.add_argument("--sbx-python", default=sys.executable,
                        help="interpreter with sbx-rl installed, for --against sbx")
    parser.add_argument("--out", type=Path, default=None,
                        help="keep the run directories here (default: a temporary "
                        "directory); runs finished there before are not run again")
    parser.add_argument("overrides", nargs=argparse.REMAINDER,
                        help="extra launch/run.py flags after --, e.g. -- --agent.n-step 1")
    args = parser.parse_args()
    args.overrides = [a for a in args.overrides if a != "--"]
    if args.eval_interval is None:
        args.eval_interval = EVAL_INTERVALS[args.env]
    if args.expert == "scripted" and args.env not in EXPERT_CURRICULUM:
        parser.error(f"--expert scripted: no scripted expert for {args.env}")
    if args.required is None:
        args.required = 0 if args.against else 4
    args.budget = args.budget or TARGETS[args.env][1]
    mode = args.mode or ("lockstep" if args.against else "both")
    if args.against and mode == "both":
        parser.error("--against compares one of our loop modes: --mode lockstep or bounded")
    if args.swap and (args.against != "sbx" or args.algo != "tqc"):
        parser.error("--swap needs --against sbx and a TQC preset (--algo tqc)")
    ours = MODES if mode == "both" else (mode,)
    args.columns = [*ours, *([args.against] if args.against else []),
                    *([SWAP] if args.swap else [])]
    return args


def run_all(args: argparse.Namespace, target: float) -> dict[str, dict[str, list]]:
    """Every seed of every column (``args.parallel`` runs at once, seed by seed, each column
    in turn, so that they share the machine's load alike), printing a line per run; returns
    column -> ``steps`` (to target, or None), ``walls`` (s) and ``curves`` (evaluations)."""
    results = {column: dict(steps=[], walls=[], curves=[]) for column in args.columns}
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
            futures = {(seed, column): pool.submit(run_seed, args, seed, column, args.budget,
                                                   out)
                       for seed in range(args.first_seed, args.first_seed + args.seeds)
                       for column in args.columns}
            for (seed, column), future in futures.items():
                run_dir, wall = future.result()
                returns = eval_returns(run_dir)
                reached = steps_to_target(returns, target)
                for name, value in (("steps", reached), ("walls", wall), ("curves", returns)):
                    results[column][name].append(value)
                curve = " ".join(f"{step}:{value:.1f}" for step, value in returns)
                print(f"seed={seed} mode={column} "
                      f"steps_to_target={reached if reached is not None else 'none'} "
                      f"wall_s={wall:.0f} eval_returns={curve}", flush=True)
    return results


def summary_table(args: argparse.Namespace, results: dict, target: float) -> str:
    """The markdown table of :func:`run_all`'s results, a column each."""
    columns, budget = args.columns, args.budget
    cells = [mode_column(results[c]["steps"], results[c]["walls"], budget) for c in columns]
    rows = ["seeds that reached the target", "median env steps to target",
            "range (seeds that reached it)", "env steps to target by seed",
            "median wall minutes per run"]
    table = [[row, *row_cells] for row, *row_cells in zip(rows, *cells)]
    at = list(range(args.eval_interval, budget + 1, args.eval_interval))
    table[4:4] = [[f"mean eval return at {step}", *row_cells] for step, *row_cells in
                  zip(at, *(curve_cells(results[c]["curves"], at) for c in columns))]
    table.insert(-1, ["evaluations below target after reaching it",
                      *(dips_after_target(results[c]["curves"], target) for c in columns)])
    return markdown_table([f"{args.algo} on {args.env} (target {target:g}, budget {budget})",
                           *columns], table)


def main() -> int:
    args = parse_args()
    target = TARGETS[args.env][0]
    print(machine(), flush=True)
    fitted = fitted_flags(args)
    if fitted:
        print(f"overrides: {' '.join(fitted)}", flush=True)
    if args.against:  # refuse an unmappable setting before any run
        print(f"sbx: {json.dumps(sbx_spec(run_flags(args, 0, args.budget)))}", flush=True)
    results = run_all(args, target)
    ok = True
    for column in args.columns:
        reached = sum(s is not None for s in results[column]["steps"])
        passed = reached >= args.required
        ok &= passed or column in (args.against, SWAP)
        print(f"summary algo={args.algo} env={args.env} mode={column} expert={args.expert} "
              f"target={target:g} budget={args.budget} reached={reached}/{args.seeds} "
              f"required={args.required} {'PASS' if passed else 'FAIL'}")
    print()
    print(summary_table(args, results, target))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
