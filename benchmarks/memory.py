"""Peak memory of a training process against the bytes of its replay and train state.

For each ``--capacities`` value and each of ``training.save_replay`` on and off, runs
``launch/run.py`` on 84x84 pixels (CarRacing-v3, ``--algo iqn``: one uint8 frame per replay
slot) for ``--total-steps`` env steps with a checkpoint in the middle and at the end, samples
the training process's peak resident memory (the kernel's high-water mark VmHWM) every
50 ms, and prints per run:

- ``replay_gb`` and ``state_mb``: the bytes the run logs at start (``memory:`` line);
- ``peak_gb``: the high-water mark over the whole run, checkpoints included;
- ``ratio = peak / (replay + state)`` (goal: <= 1.3 at 1M slots);
- ``checkpoints``: the checkpoints the run wrote.

The peak with the replay saved minus the peak without is what a checkpoint's save of the
replay costs on top (a host copy, if the save makes one). The env workers are other
processes and are not counted. At 1M slots the replay is 7.1 GB, and each checkpoint writes
that much to ``--work-dir``.

    python benchmarks/memory.py --capacities 131072,1048576
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEMORY = re.compile(r"memory: replay ([\d.e+]+) GB .*train state ([\d.e+]+) MB")
CHECKPOINT_LINE = "checkpoint at env step"


def proc_status_kb(pid: int, field: str) -> int | None:
    """``field`` (e.g. VmHWM) of /proc/<pid>/status in kB; None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class Sampler(threading.Thread):
    """Samples VmHWM (the kernel's peak of VmRSS) of ``pid`` every ``interval`` s until the
    process ends."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.hwm_kb = 0

    def run(self) -> None:
        while True:
            hwm = proc_status_kb(self.pid, "VmHWM")
            if hwm is None:
                return
            self.hwm_kb = max(self.hwm_kb, hwm)
            time.sleep(self.interval)


def run_args(args: argparse.Namespace, capacity: int, save_replay: bool, run_dir: Path
             ) -> list[str]:
    """The training command: CarRacing 84x84, a checkpoint halfway and at the end."""
    return [sys.executable, str(ROOT / "launch" / "run.py"), "--algo", "iqn",
            "--env", "CarRacing-v3", "--env.num-envs", "2", "--env.image-size", "84",
            "--replay.capacity", str(capacity),
            "--training.total-steps", str(args.total_steps),
            "--training.learning-starts", str(args.total_steps // 4),
            "--training.checkpoint-interval", str(args.total_steps // 2),
            "--training.eval-interval", "0", "--training.batch-size", "32",
            "--training.save-replay" if save_replay else "--training.no-save-replay",
            "--logging.no-progress-bar", "--seed", "0", "--run-dir", str(run_dir)]


def one_run(args: argparse.Namespace, capacity: int, save_replay: bool) -> dict:
    """One training run under the sampler; returns its figures (see the module docstring)."""
    work = Path(tempfile.mkdtemp(dir=args.work_dir))
    log_path = work / "stderr.log"
    try:
        with open(log_path, "w") as err:
            proc = subprocess.Popen(run_args(args, capacity, save_replay, work / "run"),
                                    stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
            sampler = Sampler(proc.pid)
            sampler.start()
            proc.wait()
            sampler.join()
        text = log_path.read_text()
        if proc.returncode != 0:
            raise RuntimeError(f"training exited with {proc.returncode}:\n{text[-3000:]}")
        match = MEMORY.search(text)
        if match is None:
            raise RuntimeError(f"no 'memory:' line in the run's log:\n{text[-3000:]}")
        replay_gb, state_mb = float(match.group(1)), float(match.group(2))
        peak_gb = sampler.hwm_kb * 1024 / 1e9
        return dict(capacity=capacity, save_replay=save_replay, replay_gb=replay_gb,
                    state_mb=state_mb, peak_gb=peak_gb,
                    ratio=peak_gb / (replay_gb + state_mb / 1e3),
                    checkpoints=text.count(CHECKPOINT_LINE))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacities", default="131072",
                        help="comma-separated replay.capacity values (slots)")
    parser.add_argument("--save-replay", choices=["both", "on", "off"], default="both")
    parser.add_argument("--total-steps", type=int, default=800)
    parser.add_argument("--work-dir", default=None,
                        help="where the runs write their checkpoints (default: the temp dir)")
    args = parser.parse_args()
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.save_replay]
    for capacity in (int(c) for c in args.capacities.split(",")):
        for save_replay in modes:
            r = one_run(args, capacity, save_replay)
            print(f"capacity={r['capacity']} save_replay={r['save_replay']} "
                  f"replay_gb={r['replay_gb']:.3f} state_mb={r['state_mb']:.1f} "
                  f"peak_gb={r['peak_gb']:.3f} ratio={r['ratio']:.3f} "
                  f"checkpoints={r['checkpoints']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
