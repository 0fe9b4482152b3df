"""Kill -9 at random moments, then resume: a CartPole run killed ``--kills`` times in a row.

Each round starts ``launch/run.py`` (the first with ``--run-dir``, the others with
``--resume``), sends SIGKILL to the training process (not its env workers) at a moment drawn
uniformly from ``--kill-after LOW HIGH`` seconds after the round's first checkpoint (so that
every round gets past its start-up and compile; with checkpoints every
``--checkpoint-interval`` env steps, some kills land inside a save), and checks:

- the resume: the next round says ``resumed from env step R`` (or starts from scratch when
  no checkpoint completed yet) and ``R >= C``, C the last checkpoint the killed round
  logged as written (a save logs after it completed): counters never go back further;
- the checkpoint resumed (as it was right after the kill) holds a replay and a train state
  of the same step: its replay's
  count per group times the envs per group equals its loop's ``replay_slots``, and the
  train state's ``grad_steps`` is at most what the replay's slots could have earned;
- the killed round's env workers (spawned processes) are gone within :data:`WORKER_GRACE`
  seconds, and no traceback was printed after the kill.

After the kills, a last round resumes and must reach ``--total-steps``. It prints one line
per round (kill time, last checkpoint, resumed step, env steps lost: the round's last
logged env step minus the step resumed) and a summary; exit code 1 on any failed check.

    python benchmarks/kill_resume.py --kills 10 --seed 0

``tests/test_kill_resume.py`` runs it with 2 kills.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "launch" / "run.py")]
ENV_STEP = re.compile(r"step (\d+(?:\.\d+)?)(k|M)?/")
CHECKPOINT = re.compile(r"checkpoint at env step (\d+)")
RESUMED = re.compile(r"resumed from env step (\d+)")
WORKER_GRACE = 30.0
"""Seconds a killed run's env workers get to exit (envs/make.py ends an orphaned worker
``_ORPHAN_GRACE_S`` after its parent's death; on a loaded 2-core machine some took 10-20 s)."""


def run_args(args: argparse.Namespace, run_dir: Path) -> list[str]:
    """The training command of the first round: CartPole DQN, tiny, asynchronous envs."""
    return ["--algo", "dqn", "--env", "CartPole-v1", "--env.num-envs", "4",
            "--env.asynchronous", "--network.mlp-hidden", "16", "--network.hidden-dim", "16",
            "--training.learning-starts", "100", "--training.batch-size", "16",
            "--training.replay-ratio", "0.25", "--training.eval-interval", "0",
            "--training.checkpoint-interval", str(args.checkpoint_interval),
            "--logging.log-interval", "20", "--logging.summary-interval", "20",
            "--logging.no-progress-bar",
            "--total-steps", str(args.total_steps), "--seed", str(args.seed),
            "--run-dir", str(run_dir)]


def logged_steps(text: str) -> int:
    """The highest env step of the status lines in ``text`` (0 if none)."""
    scale = {"": 1, "k": 1_000, "M": 1_000_000}
    steps = [float(n) * scale[unit] for n, unit in ENV_STEP.findall(text)]
    return int(max(steps, default=0))


def spawned_workers(pid: int) -> list[psutil.Process]:
    """The env worker processes (multiprocessing spawn) below process ``pid``."""
    try:
        return [p for p in psutil.Process(pid).children(recursive=True)
                if "spawn_main" in " ".join(p.cmdline())]
    except psutil.NoSuchProcess:
        return []


def one_round(command: list[str], log: Path, kill_after: float | None, timeout: float
              ) -> dict:
    """Run ``command`` (stderr to ``log``); SIGKILL it ``kill_after`` s after its first
    checkpoint unless None. Returns the round's record."""
    with open(log, "w") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
    record = dict(killed=False, returncode=None, workers_left=0)
    deadline = time.monotonic() + timeout
    try:
        if kill_after is not None:
            while not CHECKPOINT.search(log.read_text()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            time.sleep(kill_after)
            if proc.poll() is None:
                workers = spawned_workers(proc.pid)
                before = log.read_text()
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                record.update(killed=True, text_at_kill=before)
                killed_at = time.monotonic()
                while time.monotonic() < killed_at + WORKER_GRACE and any(map(alive, workers)):
                    time.sleep(0.1)
                record["workers_left"] = sum(map(alive, workers))
                record["workers_gone_s"] = time.monotonic() - killed_at
                time.sleep(0.5)  # what a dying worker prints lands in the log
        record["returncode"] = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    record["text"] = log.read_text()
    return record


def alive(process: psutil.Process) -> bool:
    """Whether ``process`` still runs (a zombie waiting for its reaper does not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def replay_consistent(checkpoints: Path, step: int) -> str | None:
    """None if the checkpoint at ``step`` under ``checkpoints`` holds a replay and train
    state of one step, else what is wrong."""
    import numpy as np
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(checkpoints.absolute(),
                                    options=ocp.CheckpointManagerOptions(
                                        create=False, enable_async_checkpointing=False))
    try:
        saved = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(), replay=ocp.args.StandardRestore(),
            loop=ocp.args.JsonRestore()))
    finally:
        manager.close()
    loop, replay = saved["loop"], saved["replay"]
    count = np.asarray(replay["count"]).reshape(-1)
    streams = np.asarray(replay["valid"]).shape[0]
    slots = int(count.sum()) * streams // len(count)
    if slots != loop["replay_slots"]:
        return f"replay holds {slots} slots, the loop counted {loop['replay_slots']}"
    if loop["vector_steps"] != int(count.max()):
        return f"replay count {count.tolist()} != vector steps {loop['vector_steps']}"
    grad_steps = int(np.asarray(saved["state"]["grad_steps"]))
    if grad_steps > loop["env_steps"]:
        return f"train state at grad step {grad_steps} > env steps {loop['env_steps']}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="of the run and the kill times")
    parser.add_argument("--total-steps", type=int, default=None,
                        help="env steps of the run (default: 2,000 per kill + 2,000)")
    parser.add_argument("--checkpoint-interval", type=int, default=200)
    parser.add_argument("--kill-after", type=float, nargs=2, default=(0.0, 4.0),
                        metavar=("LOW", "HIGH"), help="seconds after the round's first checkpoint")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per round")
    parser.add_argument("--out", type=Path, default=None, help="keep the run here")
    args = parser.parse_args(argv)
    args.total_steps = args.total_steps or 2000 * (args.kills + 1)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        base = args.out or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        run_dir = base / "run"
        print(f"kill -9 x {args.kills} on CartPole, {args.total_steps} env steps, checkpoints "
              f"every {args.checkpoint_interval}; run dir {run_dir}", flush=True)
        failures, lost, gone = [], [], []
        command = [*RUN, *run_args(args, run_dir)]
        last_checkpoint = None
        for k in range(args.kills + 1):
            final = k == args.kills
            kill_after = None if final else rng.uniform(*args.kill_after)
            rec = one_round(command, base / f"round_{k}.log", kill_after, args.timeout)
            text = rec["text"]
            resumed = RESUMED.search(text)
            start = int(resumed.group(1)) if resumed else 0
            problems = []
            if k and last_checkpoint is not None and start < last_checkpoint:
                problems.append(f"resumed from {start} < last checkpoint {last_checkpoint}")
            if k and last_checkpoint is not None and not resumed:
                problems.append("did not resume")
            if resumed:  # in the copy taken after the kill: the run deletes old ones
                wrong = replay_consistent(base / f"checkpoints_after_kill_{k - 1}", start)
                if wrong:
                    problems.append(wrong)
            if rec["killed"]:
                shutil.copytree(run_dir / "checkpoints", base / f"checkpoints_after_kill_{k}")
                after = text[len(rec["text_at_kill"]):]
                if "Traceback" in after:
                    problems.append("a traceback after the kill")
                if rec["workers_left"]:
                    problems.append(f"{rec['workers_left']} env workers still running")
                done = [int(s) for s in CHECKPOINT.findall(rec["text_at_kill"])]
                last_checkpoint = max(done, default=last_checkpoint)
                steps = logged_steps(rec["text_at_kill"])
                lost.append(max(0, steps - (last_checkpoint or 0)))
                gone.append(rec["workers_gone_s"])
                line = (f"round {k}: from env step {start}, killed {kill_after:.2f} s after its "
                        f"first checkpoint at about env step {steps}; last checkpoint "
                        f"{last_checkpoint}; lost about {lost[-1]} env steps; env workers gone "
                        f"after {gone[-1]:.1f} s")
            else:
                if rec["returncode"] != 0:
                    problems.append(f"exit code {rec['returncode']}: {text[-2000:]}")
                end = max([start, *map(int, CHECKPOINT.findall(text))])
                if end < args.total_steps:
                    problems.append(f"the run ended at {end} < {args.total_steps}")
                line = (f"round {k}: from env step {start}, ran to the end at {end} (exit "
                        f"{rec['returncode']})")
            print(line + ("" if not problems else "; FAILED: " + "; ".join(problems)),
                  flush=True)
            failures += problems
            if not rec["killed"] and not final:
                break  # it finished before the kill: the run is done
            command = [*RUN, "--resume", str(run_dir)]
        kills = len(lost)
        print(f"kills: {kills}, resumes: {kills}, failed checks: {len(failures)}; env steps "
              f"lost per kill: mean {sum(lost) / max(kills, 1):.0f}, max {max(lost, default=0)};"
              f" env workers gone after at most {max(gone, default=0):.1f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
