"""Pipeline throughput: env and grad steps per second of the lockstep and bounded loops,
against the raw vector env, on CartPole-v1 (dqn) and CarRacing-v3 (iqn).

Every run is a subprocess given the same wall time (``--seconds``), then stopped with Ctrl-C:

- raw: ``envs.make_vector_env`` with the run's num_envs / asynchronous / env settings, random
  actions, no agent and no learner (this script with ``--raw-worker``); autoreset steps are
  not counted, as launch/run.py does not count them;
- actor: ``launch/run.py`` whose learning never starts, in ``--actors.mode realtime`` so
  that nothing holds the actor: acting (jitted ``act``), hand-over and replay writes, no grad
  step; what the loop can do on this machine without a learner;
- lockstep, bounded: ``launch/run.py --actors.mode lockstep|bounded`` at each replay ratio.

The runs alternate (raw, actor, then lockstep and bounded at each ratio; all of it again,
``--repeats`` times) so that machine noise hits all kinds alike; the tables show the median of
the repeats, and every run's figures follow as raw numbers.

launch/run.py gets a huge --total-steps, a small --training.learning-starts, a log interval
of a fraction of a second, no evaluation, no periodic or best-by-training checkpoint. Its rates
are read back from ``train/grad_steps``, logged every log interval with its env step and wall
time: env and grad steps between the first logged point ``--warmup`` seconds after the first
point with a grad step (jit compilation done; the actor run: after its first point) and the
last point. The raw run skips its first ``--warmup`` seconds of stepping likewise. The wait and
busy shares are the means of the perf/ scalars of the intervals in that window.

The learner keeps up with a ratio when the bounded actor is held less than
KEEPS_UP_ACTOR_WAIT of the time (``perf/actor_wait_share``); otherwise the run is
learner-bound, and bounded holds the ratio at the learner's pace (correct behaviour). The
project's goals: bounded >= 90% of raw env steps/s where the learner keeps up, and bounded >
lockstep in env steps/s.

    python benchmarks/pipeline.py                        # both envs, 60 s per run, 2 repeats
    python benchmarks/pipeline.py --cases cartpole --seconds 30 --repeats 1
    python benchmarks/pipeline.py --carracing-ratios 1/64,1/8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from common import RUN_PY, machine, markdown_table, run_for
from launch import compare  # after common, which puts the repository root on sys.path

KEEPS_UP_ACTOR_WAIT = 0.05
"""Bounded mode: below this share of its time held by the learner, the actor is not slowed
by the learner (the learner keeps up with the ratio)."""
GOAL_OF_RAW = 0.9
"""Bounded env steps/s as a share of raw that the project wants where the learner keeps up."""
NEVER = 10 ** 12
"""A step count no run reaches in its wall time (total steps; the actor run's learning start)."""
SHARES = ("actor_wait", "learner_wait", "learner_busy", "env_wait")


@dataclasses.dataclass(frozen=True)
class Case:
    """One env and preset: the launch/run.py flags of all its runs (the raw run builds its
    vector env from the same config), training.learning_starts, the log interval (env steps;
    a fraction of a second) and the default replay ratios."""

    algo: str
    env: str
    flags: tuple[str, ...]
    learning_starts: int
    log_interval: int
    ratios: tuple[str, ...]


CASES = {
    # CartPole steps in microseconds: worker processes would cost more in IPC than the env
    # itself, so it runs in-process, as in benchmarks/sample_efficiency.py.
    "cartpole": Case("dqn", "CartPole-v1", ("--env.no-asynchronous",), learning_starts=1000,
                     log_interval=2000, ratios=("1/256", "1/64", "1/4")),
    "carracing": Case("iqn", "CarRacing-v3", ("--env.asynchronous",), learning_starts=200,
                      log_interval=100, ratios=("1/256", "1/64", "1/16")),
}


@dataclasses.dataclass
class Result:
    """One run's figures over its measured window."""

    kind: str  # raw / actor / lockstep / bounded
    case: str
    ratio: str | None
    repeat: int
    exit_code: int
    env_sps: float = float("nan")
    grad_sps: float = float("nan")
    window_s: float = float("nan")
    shares: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def achieved_ratio(self) -> float:
        return self.grad_sps / self.env_sps if self.env_sps else float("nan")


def run_flags(case: Case, ratio: str | None) -> list[str]:
    """The launch/run.py flags of a case (the env settings the raw run uses too) with the
    replay ratio ``ratio`` (a number as launch/run.py takes it); None: learning never starts
    (the actor run)."""
    flags = ["--algo", case.algo, "--env", case.env, *case.flags]
    if ratio is None:
        return [*flags, "--training.learning-starts", str(NEVER)]
    return [*flags, "--training.learning-starts", str(case.learning_starts),
            "--training.replay-ratio", ratio]


def decimal(ratio: str) -> str:
    """A fraction such as 1/64 as the decimal launch/run.py takes (0.015625)."""
    return repr(float(Fraction(ratio)))


def loop_cmd(case: Case, ratio: str | None, mode: str, run_dir: Path | str) -> list[str]:
    """launch/run.py for a throughput run (``ratio`` as in :func:`run_flags`): runs until
    Ctrl-C, logs often, evaluates and checkpoints nothing but the final Ctrl-C checkpoint
    (without the replay, so that it is quick)."""
    return [sys.executable, str(RUN_PY), *run_flags(case, ratio), "--actors.mode", mode,
            "--run-dir", str(run_dir), "--total-steps", str(NEVER),
            "--logging.log-interval", str(case.log_interval), "--logging.summary-interval", "0",
            "--logging.no-progress-bar", "--training.eval-interval", "0",
            "--training.checkpoint-interval", str(NEVER), "--training.best-train-window", "0",
            "--training.no-save-replay"]


def loop_rates(run_dir: Path, warmup: float) -> dict:
    """env_sps, grad_sps, window_s and the mean shares of a launch/run.py run over its window
    (see the module docstring). Raises ValueError when the window holds fewer than 2 points."""
    tags = compare.load_run(run_dir).scalars
    grad = tags["train/grad_steps"]
    wall = grad.wall_minutes * 60.0
    learning = np.flatnonzero(grad.values > 0)
    start = wall[learning[0] if len(learning) else 0] + warmup
    window = np.flatnonzero(wall >= start)
    if len(window) < 2:
        raise ValueError(f"{run_dir}: fewer than 2 logged points {warmup:g} s after learning "
                         "started; raise --seconds")
    first, last = window[0], window[-1]
    seconds = wall[last] - wall[first]
    shares = {}
    for name in SHARES:
        series = tags[f"perf/{name}_share"]
        inside = (series.steps > grad.steps[first]) & (series.steps <= grad.steps[last])
        shares[name] = float(series.values[inside].mean())
    return dict(env_sps=(grad.steps[last] - grad.steps[first]) / seconds,
                grad_sps=(grad.values[last] - grad.values[first]) / seconds,
                window_s=seconds, shares=shares)


def raw_cmd(case: Case, warmup: float) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--raw-worker", "--warmup",
            str(warmup), "--", *run_flags(case, None)]


def raw_worker(warmup: float, flags: list[str]) -> None:
    """The raw run: step the vector env of ``flags`` (launch/run.py flags) with random
    actions until Ctrl-C; print env_sps and window_s after the first ``warmup`` seconds as
    one JSON line."""
    import envs  # here: the parent process never needs jax
    from launch import cli

    config = cli.parse(flags).config
    env = config.env
    vector_env = envs.make_vector_env(env.id, env.num_envs, asynchronous=env.asynchronous,
                                      seed=config.seed, **envs.make_kwargs(config))
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    vector_env.reset(seed=config.seed)
    vector_env.action_space.seed(config.seed)
    start = time.perf_counter()
    steps, mark = 0, None
    resetting = np.zeros(env.num_envs, bool)
    while not stop:
        if mark is None and time.perf_counter() - start >= warmup:
            mark = (time.perf_counter(), steps)
        _, _, terminated, truncated, _ = vector_env.step(vector_env.action_space.sample())
        # As launch/run.py counts: an autoreset step (the env ignores the action) is none.
        steps += int(np.sum(~resetting))
        resetting = terminated | truncated
    end = time.perf_counter()
    vector_env.close(terminate=True)
    if mark is None:
        raise SystemExit(f"stopped within the {warmup:g} s warm-up; raise --seconds")
    print(json.dumps(dict(env_sps=(steps - mark[1]) / (end - mark[0]),
                          window_s=end - mark[0])))


def measure(kind: str, name: str, ratio: str | None, repeat: int, args: argparse.Namespace,
            out: Path) -> Result:
    """One run of ``kind`` for case ``name`` (ratio None for raw and actor)."""
    case = CASES[name]
    label = f"{name}-{kind}" + (f"-r{ratio.replace('/', 'over')}" if ratio else "")
    run_dir = out / f"{label}-{repeat}"
    log_path = out / f"{label}-{repeat}.log"
    if kind == "raw":
        cmd = raw_cmd(case, args.warmup)
    else:
        cmd = loop_cmd(case, ratio and decimal(ratio), "realtime" if kind == "actor" else kind,
                       run_dir)
    code = run_for(cmd, args.seconds, log_path)
    result = Result(kind, name, ratio, repeat, code)
    try:
        if kind == "raw":
            figures = json.loads(log_path.read_text().strip().splitlines()[-1])
        else:
            figures = loop_rates(run_dir, args.warmup)
        for key, value in figures.items():
            setattr(result, key, value)
    except Exception as e:  # a failed run is reported in the tables, not fatal
        print(f"  {label} repeat {repeat}: no figures ({type(e).__name__}: {e}); "
              f"log: {log_path}", flush=True)
    print(f"  {label} repeat {repeat}: exit {code}, env/s {result.env_sps:.1f}, "
          f"grad/s {result.grad_sps:.2f}", flush=True)
    return result


def median(results: list[Result], attr: str) -> float:
    values = [getattr(r, attr) for r in results if np.isfinite(getattr(r, attr))]
    return statistics.median(values) if values else float("nan")


def median_share(results: list[Result], name: str) -> float:
    values = [r.shares[name] for r in results if name in r.shares]
    return statistics.median(values) if values else float("nan")


def fmt(x: float, digits: int = 1) -> str:
    return "-" if not np.isfinite(x) else f"{x:.{digits}f}"


def summary(results: list[Result], ratios: dict[str, list[str]]) -> str:
    """The markdown table of medians, one row per case and ratio."""
    rows = []
    for name, case_ratios in ratios.items():
        case = CASES[name]

        def pick(kind, ratio=None):
            return [r for r in results if r.case == name and r.kind == kind and r.ratio == ratio]

        raw, actor = median(pick("raw"), "env_sps"), median(pick("actor"), "env_sps")
        for ratio in case_ratios:
            lock, bound = pick("lockstep", ratio), pick("bounded", ratio)
            lock_sps, bound_sps = median(lock, "env_sps"), median(bound, "env_sps")
            actor_wait = median_share(bound, "actor_wait")
            keeps_up = actor_wait < KEEPS_UP_ACTOR_WAIT
            goals = (f"{'yes' if bound_sps >= GOAL_OF_RAW * raw else 'no'} / "
                     if keeps_up else "n/a / ")
            goals += "yes" if bound_sps > lock_sps else "no"
            rows.append([f"{case.env} {case.algo}", ratio, fmt(raw), fmt(actor), fmt(lock_sps),
                         fmt(bound_sps), fmt(bound_sps / raw, 3), fmt(bound_sps / actor, 3),
                         fmt(bound_sps / lock_sps, 3), fmt(median(lock, "grad_sps"), 2),
                         fmt(median(bound, "grad_sps"), 2),
                         fmt(float(Fraction(ratio)) * raw, 2),
                         fmt(median(bound, "achieved_ratio"), 4), fmt(actor_wait, 3),
                         fmt(median_share(bound, "learner_wait"), 3),
                         "keeps up" if keeps_up else "learner-bound", goals])
    return markdown_table(
        ["env / algo", "ratio", "raw env/s", "actor env/s", "lockstep env/s", "bounded env/s",
         "bounded/raw", "bounded/actor", "bounded/lockstep", "lockstep grad/s",
         "bounded grad/s", "grad/s to keep raw pace", "bounded achieved ratio",
         "bounded actor wait", "bounded learner wait", "learner",
         f"goals: >={GOAL_OF_RAW:.0%} raw / > lockstep"], rows)


def raw_numbers(results: list[Result]) -> str:
    """Every run's figures, one row each, in the order they ran."""
    rows = [[r.case, r.kind, r.ratio or "-", r.repeat, r.exit_code, fmt(r.env_sps),
             fmt(r.grad_sps, 2), fmt(r.achieved_ratio, 4), fmt(r.window_s),
             *(fmt(r.shares.get(name, float("nan")), 3) for name in SHARES)] for r in results]
    return markdown_table(["case", "kind", "ratio", "repeat", "exit", "env/s", "grad/s",
                           "achieved ratio", "window s", *(f"{n} share" for n in SHARES)],
                          rows)


def parse_ratios(text: str) -> list[str]:
    ratios = [r.strip() for r in text.split(",") if r.strip()]
    for ratio in ratios:
        if Fraction(ratio) <= 0:
            raise argparse.ArgumentTypeError(f"replay ratio {ratio} must be > 0")
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Each case's launch/run.py flags: " + "; ".join(
            f"{name}: --algo {c.algo} --env {c.env} {' '.join(c.flags)}, learning starts "
            f"{c.learning_starts}, log interval {c.log_interval}" for name, c in CASES.items()))
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="wall time of every run, from its start to Ctrl-C")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds after learning started (raw: after the first step) "
                             "that are not measured")
    parser.add_argument("--repeats", type=int, default=2,
                        help="rounds of all the runs, alternated; medians reported")
    for name, case in CASES.items():
        parser.add_argument(f"--{name}-ratios", type=parse_ratios, default=",".join(case.ratios),
                            help=f"replay ratios (grad steps per env step) of {case.env}, "
                                 "comma-separated fractions")
    parser.add_argument("--out", type=Path, default=None,
                        help="keep run directories and logs here (None: in a temporary "
                             "directory, deleted at the end)")
    parser.add_argument("--raw-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("flags", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_worker:
        raw_worker(args.warmup, [f for f in args.flags if f != "--"])
        return 0
    names = [n.strip() for n in args.cases.split(",")]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        parser.error(f"--cases: unknown {unknown}; known: {sorted(CASES)}")
    ratios = {name: getattr(args, f"{name}_ratios") for name in names}

    print(machine(), flush=True)
    print(f"seconds per run {args.seconds:g}, warm-up {args.warmup:g} s, repeats "
          f"{args.repeats}", flush=True)
    for name in names:
        case = CASES[name]
        print(f"{name} lockstep / bounded: launch/run.py "
              f"{' '.join(loop_cmd(case, 'RATIO', 'MODE', 'DIR')[2:])}", flush=True)
        print(f"{name} actor: launch/run.py "
              f"{' '.join(loop_cmd(case, None, 'realtime', 'DIR')[2:])}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for repeat in range(args.repeats):
            for name in names:
                results.append(measure("raw", name, None, repeat, args, out))
                results.append(measure("actor", name, None, repeat, args, out))
                for ratio in ratios[name]:
                    for kind in ("lockstep", "bounded"):
                        results.append(measure(kind, name, ratio, repeat, args, out))
    print(machine().replace("machine:", "machine at the end:"))
    print()
    print(summary(results, ratios))
    print()
    print("Raw numbers (every run):")
    print()
    print(raw_numbers(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
