"""Reproductions of the seeds' divergences on small envs, and the health flags they raise.

Each case trains a small env with a failing setting from the user's notes; its expected health
flag (``rl/health.py``) must be raised. The default presets on the same envs, with the same
networks and step budgets, must raise no flag at all. Prints one table row per run:

- onset: the first logged step where Q (``train/q_min`` / ``train/q_max``), the loss or
  alpha leaves its band: the range the default run of the same env kept after learning
  started, widened by half its width on each side;
- flag: the step of the expected flag (or, for a default, of any flag).

Exits 1 when a failing case misses its flag or a default raises one.

    python benchmarks/stability.py                   # every case, seed 0
    python benchmarks/stability.py --cases seed003 --seeds 0,1
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launch import compare  # noqa: E402

VALUE_NETS = ["--network.mlp-hidden", "64", "64", "--network.hidden-dim", "64"]
TQC_NETS = ["--tqc.num-critics", "2", "--tqc.critic-hidden", "64", "64",
            "--tqc.actor-hidden", "64", "64", "--tqc.num-quantiles", "25"]
# Short runs: the trend windows shrink with them (same settings for failing and default runs).
COMMON = ["--env.num-envs", "1", "--env.no-asynchronous", "--training.eval-interval", "0",
          "--training.checkpoint-interval", "10000000", "--logging.log-interval", "250",
          "--logging.no-progress-bar", "--health.window-steps", "5000",
          "--health.warmup-steps", "4000", "--health.return-decline-episodes", "100",
          "--on-divergence", "warn"]


@dataclasses.dataclass(frozen=True)
class Case:
    """One run: a preset on an env with flags; ``expect`` are the flags of which it must raise
    one (empty: a default that must raise none); ``reference`` names the default whose band
    defines onset."""

    name: str
    seed_note: str
    preset: str
    env: str
    steps: int
    flags: tuple[str, ...]
    expect: tuple[str, ...]
    reference: str


DIVERGENCE = ("nonfinite", "q_above_bound", "q_below_floor", "q_range_jump", "loss_spike")
CASES = (
    Case("dqn_default", "-", "dqn", "CartPole-v1", 20_000, tuple(VALUE_NETS), (), "dqn_default"),
    Case("iqn_default", "-", "iqn", "CartPole-v1", 20_000, tuple(VALUE_NETS), (), "iqn_default"),
    Case("tqc_default", "-", "tqc", "Pendulum-v1", 12_000, tuple(TQC_NETS), (), "tqc_default"),
    # The seeds' tau 0.002 over millions of steps, compressed into 20k: tau 0.05.
    Case("soft_decaying_lr", "000/001: soft target every step, lr decaying 1e-3 -> 5e-5, "
         "epsilon per episode", "dqn", "CartPole-v1", 20_000,
         (*VALUE_NETS, "--agent.target-update", "soft", "--agent.target-tau", "0.05",
          "--agent.target-soft-period", "1", "--agent.lr-schedule", "linear",
          "--agent.lr-end", "5e-5", "--agent.lr-decay-steps", "15000",
          "--agent.epsilon-unit", "episodes", "--agent.epsilon-start", "0.9",
          "--agent.epsilon-decay-steps", "100"), DIVERGENCE, "dqn_default"),
    Case("seed003", "003: lr 3e-3, soft tau 0.012 every step, n-step 8, gamma 0.995, 8 grad "
         "steps per env step, batch 1024", "dqn", "CartPole-v1", 6_000,
         (*VALUE_NETS, "--agent.learning-rate", "3e-3", "--agent.target-update", "soft",
          "--agent.target-tau", "0.012", "--agent.target-soft-period", "1",
          "--agent.n-step", "8", "--agent.gamma", "0.995", "--training.replay-ratio", "8",
          "--training.batch-size", "1024"), DIVERGENCE, "dqn_default"),
    Case("learned_alpha", "004: learned alpha from 0.01, target entropy too high (+1 for a "
         "1-d action)", "tqc", "Pendulum-v1", 12_000,
         (*TQC_NETS, "--tqc.alpha", "0.01", "--tqc.target-entropy", "1.0"),
         ("alpha_runaway",), "tqc_default"),
    Case("twin_critics", "004: twin critics sharing a seed", "tqc", "Pendulum-v1", 3_000,
         (*TQC_NETS, "--tqc.shared-critic-init"), ("critics_identical",), "tqc_default"),
)
BANDED = ("train/q_min", "train/q_max", "train/loss", "train/critic_loss", "train/alpha")


def run_case(case: Case, seed: int, out: Path) -> tuple[Path, float]:
    """Train one case; returns its run directory and wall seconds."""
    run_dir = out / f"{case.name}-s{seed}"
    cmd = [sys.executable, str(ROOT / "launch" / "run.py"), "--algo", case.preset, "--env",
           case.env, "--seed", str(seed), "--total-steps", str(case.steps), "--run-dir",
           str(run_dir), *COMMON, *case.flags]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{case.name} seed {seed} failed:\n{result.stderr[-3000:]}")
    return run_dir, time.perf_counter() - start


def raised_events(run_dir: Path) -> list[dict]:
    """The raise events of a run's health.json."""
    events = json.loads((run_dir / "health.json").read_text())["events"]
    return [e for e in events if e.get("raised")]


def bands(run: compare.Run, learning_starts: int) -> dict[str, tuple[float, float]]:
    """Per banded tag, the range a healthy run kept after learning started, widened by half
    its width on each side."""
    out = {}
    for tag in BANDED:
        if tag in run.scalars:
            series = run.scalars[tag]
            values = series.values[series.steps >= learning_starts]
            if len(values):
                low, high = float(values.min()), float(values.max())
                margin = 0.5 * (high - low)
                out[tag] = (low - margin, high + margin)
    return out


def onset(run: compare.Run, band: dict[str, tuple[float, float]]) -> tuple[int, str] | None:
    """First (step, tag) where a banded tag leaves its band."""
    first = None
    for tag, (low, high) in band.items():
        if tag in run.scalars:
            series = run.scalars[tag]
            out = np.flatnonzero((series.values < low) | (series.values > high))
            if len(out) and (first is None or series.steps[out[0]] < first[0]):
                first = (int(series.steps[out[0]]), tag.removeprefix("train/"))
    return first


def learning_starts(run_dir: Path) -> int:
    """training.learning_starts of a run (env steps), from its config.json."""
    return json.loads((run_dir / "config.json").read_text())["training"]["learning_starts"]


def main() -> int:
    """Run the cases, print the table; returns 0 when every case behaved, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(c.name for c in CASES),
                        help="comma-separated case names")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once")
    parser.add_argument("--out", type=Path, default=None,
                        help="keep the run directories here (default: a temporary directory)")
    args = parser.parse_args()
    names = args.cases.split(",")
    known = {c.name: c for c in CASES}
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"--cases: unknown {unknown}; known: {sorted(known)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    # A case's onset band comes from its reference default: run those too.
    wanted = {known[n].reference for n in names} | set(names)
    cases = [c for c in CASES if c.name in wanted]

    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
            futures = {(c.name, s): pool.submit(run_case, c, s, out) for c in cases for s in seeds}
            done = {key: f.result() for key, f in futures.items()}
        print("| case | seed note | preset / env | seed | steps | flags raised (step) | "
              "onset (step, metric) | first expected flag | verdict | wall s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for case in cases:
            for seed in seeds:
                run_dir, wall = done[(case.name, seed)]
                events = raised_events(run_dir)
                reference = compare.load_run(done[(case.reference, seed)][0])
                run = compare.load_run(run_dir)
                first = onset(run, bands(reference, learning_starts(run_dir))) \
                    if case.expect else None
                flags = ", ".join(f"{e['name']} ({e['step']})" for e in events) or "none"
                if not case.expect:
                    verdict = "ok" if not events else "FALSE ALARM"
                    at = "-"
                else:
                    hit = [e for e in events if e["name"] in case.expect]
                    verdict = "ok" if hit else "MISSED"
                    at = f"{hit[0]['name']} {hit[0]['step']}" if hit else "never"
                ok &= verdict == "ok"
                when = "-" if first is None else f"{first[0]} ({first[1]})"
                print(f"| {case.name} | {case.seed_note} | {case.preset} / {case.env} | {seed} | "
                      f"{case.steps} | {flags} | {when} | {at} | {verdict} | {wall:.0f} |",
                      flush=True)
    print(f"summary: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
