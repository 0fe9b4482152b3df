"""Helpers shared by the benchmarks that run ``launch/run.py`` in subprocesses: the machine
they ran on, running a command for a wall time and stopping it with Ctrl-C, and markdown
tables. (A run's TensorBoard scalars are read back with ``launch.compare.load_run``.)

Import it first: it puts the repository root ahead of ``benchmarks/`` on ``sys.path`` (a
script run from here has ``benchmarks/`` first, where ``replay.py`` would shadow the
project's ``replay`` package).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
RUN_PY = ROOT / "launch" / "run.py"
sys.path.insert(0, str(ROOT))

EXIT_INTERRUPTED = 130
"""launch/run.py's exit code after Ctrl-C (a checkpoint was saved)."""


def machine() -> str:
    """One line: usable CPU cores (as ``nproc`` counts them), CPU model, jax / jaxlib and
    Python versions, and the load average when called."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines
                  if line.startswith("model name")), platform.processor() or "unknown")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"machine: nproc={len(os.sched_getaffinity(0))} cpu={model!r} "
            f"jax={importlib.metadata.version('jax')} "
            f"jaxlib={importlib.metadata.version('jaxlib')} python={platform.python_version()} "
            f"loadavg(1/5/15 min)={load}")


def run_for(cmd: Sequence[str], seconds: float, log_path: Path, cwd: Path = ROOT,
            grace: float = 60.0) -> int:
    """Run ``cmd`` with its output in ``log_path``; if it still runs after ``seconds``, send
    it Ctrl-C (SIGINT, to the main process only, as launch/run.py expects) and wait up to
    ``grace`` seconds for it to save and exit; then a second Ctrl-C (launch/run.py quits
    without saving) and, ``grace`` seconds later, kill its process group. The process group
    is killed too if this call is interrupted. Returns the exit code (130: stopped by one
    Ctrl-C; negative: killed by that signal)."""
    with open(log_path, "w") as log:
        # Its own session: a Ctrl-C typed at this benchmark does not reach it directly, and
        # its env workers can be killed with it.
        proc = subprocess.Popen(list(map(str, cmd)), cwd=cwd, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            for wait, then in ((seconds, signal.SIGINT), (grace, signal.SIGINT),
                               (grace, None)):
                try:
                    return proc.wait(wait)
                except subprocess.TimeoutExpired:
                    if then is not None:
                        proc.send_signal(then)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return proc.returncode


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; cells are printed with str()."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
