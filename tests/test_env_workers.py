"""Env worker processes exit quietly when the training process dies (``envs.make.env_worker``).

A child process stands in for the training process: it builds an asynchronous vector env,
steps it, prints its workers' pids and is killed. Within seconds no worker may be left, and
nothing printed on the shared stderr may be a traceback (gymnasium's own worker printed two
per worker: the EOF or reset on its pipe, then the broken pipe of its error report).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="reads process states from /proc")

CHILD = r"""
import dataclasses, sys, time
import gymnasium as gym
import numpy as np
import envs

scenario = sys.argv[1]


class HungEnv(gym.Env):
    # A step that outlasts the test: the worker is busy when its parent dies.
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, action):
        time.sleep(120)
        return np.zeros(2, np.float32), 0.0, False, False, {}


if scenario == "hung":
    vector = gym.vector.AsyncVectorEnv([HungEnv, HungEnv], context="spawn",
                                       worker=envs.make.env_worker)
    vector.reset(seed=0)
    processes = vector.processes
    vector.step_async(np.zeros(2, np.int64))
elif scenario == "trackmania":
    from rl.config import TrackmaniaConfig

    tm = dataclasses.replace(TrackmaniaConfig(), backend="standin")
    vector = envs.make_vector_env("trackmania", 1, asynchronous=True, seed=0, image_size=64,
                                  max_episode_steps=100, action_space="continuous", trackmania=tm)
    vector.reset(seed=0)
    for _ in range(3):
        vector.step_async(np.zeros((1, 3), np.float32))
        vector.step_wait()
    processes = vector._envs.processes
else:
    vector = envs.make_vector_env("CartPole-v1", 2, asynchronous=True, seed=0)
    vector.reset(seed=0)
    for _ in range(3):
        vector.step(np.zeros(2, np.int64))
    processes = vector.processes
    if scenario == "cartpole-pending":  # results left unread in the pipes
        vector.step_async(np.zeros(2, np.int64))
        time.sleep(0.5)
print(*(p.pid for p in processes), flush=True)
time.sleep(120)
"""


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan may wait for its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_training_process(tmp_path: Path, scenario: str, sig: signal.Signals,
                           within_s: float = 10.0) -> str:
    """Run the child, kill it with ``sig`` once its workers are up; assert they are gone
    within ``within_s`` and return everything the process group wrote to stderr."""
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "wb") as stderr:
        child = subprocess.Popen([sys.executable, "-c", CHILD, scenario], stdout=subprocess.PIPE,
                                 stderr=stderr, start_new_session=True,
                                 env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = child.stdout.readline()
        pids = [int(pid) for pid in line.split()]
        assert pids, f"the child printed no worker pids:\n{stderr_path.read_text()}"
        child.send_signal(sig)
        child.wait(timeout=10)
        deadline = time.monotonic() + within_s
        while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [pid for pid in pids if _running(pid)]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers {left} still run {within_s:.0f} s after the {sig.name}"
    time.sleep(0.3)  # anything the workers wrote while exiting
    return stderr_path.read_text()


@pytest.mark.parametrize("scenario,sig", [
    ("cartpole", signal.SIGKILL),
    ("cartpole-pending", signal.SIGKILL),
    ("cartpole", signal.SIGTERM),
])
def test_workers_exit_quietly_when_the_training_process_dies(tmp_path, scenario, sig):
    stderr = _kill_training_process(tmp_path, scenario, sig)
    assert "Traceback" not in stderr, stderr


def test_busy_worker_exits_after_the_grace_period(tmp_path):
    # Both workers are inside a 120 s step: only the parent watch can end them.
    stderr = _kill_training_process(tmp_path, "hung", signal.SIGKILL)
    assert "Traceback" not in stderr, stderr


@pytest.mark.skipif(importlib.util.find_spec("tmrl") is None,
                    reason="tmrl (the [trackmania] extra) is not installed")
def test_trackmania_worker_exits_quietly(tmp_path):
    stderr = _kill_training_process(tmp_path, "trackmania", signal.SIGKILL)
    assert "Traceback" not in stderr, stderr
