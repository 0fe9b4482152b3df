"""Env faults met for real by launch/run.py on CartPole: a NaN from an env never enters the
replay (env.on_bad_value; tests/faults.py --bad-value makes env 0 emit one), and env workers
that are killed or raise are rebuilt up to env.max_restarts."""

import re
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from faults import BAD_ENV_ID
from rl import presets
from rl.config import ConfigError, EnvConfig
from test_loop import CARTPOLE, FAULTS, ROOT, latest_checkpoint, run_faulty, scalars

# Env 0 (seed 5) emits its NaN at its 60th step, about env step 240 of 4 envs.
BAD = ["--env", BAD_ENV_ID, "--seed", "5", "--total-steps", "480",
       "--training.checkpoint-interval", "160"]


def bad_faults(field: str) -> list[str]:
    return ["--bad-value", field, "--bad-after", "60", "--bad-seed", "5"]


def test_a_nan_reward_checkpoints_and_exits_3_naming_env_step_and_field(tmp_path):
    run_dir = tmp_path / "run"
    result = run_faulty(*CARTPOLE, *BAD, "--actors.mode", "bounded", "--run-dir", str(run_dir),
                        faults=bad_faults("reward"))
    assert result.returncode == 3, result.stderr[-3000:]
    found = re.search(rf"'{BAD_ENV_ID}', env index 0 at env step (\d+): bad reward: 1 "
                      r"non-finite value\(s\), the first nan", result.stderr)
    assert found, result.stderr[-3000:]
    assert f"resume with: python launch/run.py --resume {run_dir}" in result.stderr
    saved = latest_checkpoint(run_dir)
    assert 200 <= saved["loop"]["env_steps"] <= int(found.group(1))
    replay = saved["replay"]
    assert np.isfinite(np.asarray(replay["reward"])).all()


def test_a_nan_observation_drops_that_episode_and_the_run_goes_on(tmp_path):
    run_dir = tmp_path / "run"
    result = run_faulty(*CARTPOLE, *BAD, "--env.on-bad-value", "drop_episode",
                        "--actors.mode", "lockstep", "--run-dir", str(run_dir),
                        faults=bad_faults("obs"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(rf"dropped the episode of env 0 \('{BAD_ENV_ID}', env index 0 at env "
                     r"step \d+: bad frame: 1 non-finite", result.stderr), result.stderr[-3000:]
    left = int(re.search(r"(\d+) env steps of 1 episode\(s\) left the replay",
                         result.stderr).group(1))
    assert [v for _, v in scalars(run_dir)["perf/bad_values"]] == [1.0]
    saved = latest_checkpoint(run_dir)
    assert saved["loop"]["env_steps"] >= 480
    replay = saved["replay"]
    count = int(np.asarray(replay["count"])[0])
    obs, valid = np.asarray(replay["obs"]), np.asarray(replay["valid"])[:, :count]
    since = np.asarray(replay["steps_since_start"])[:, :count]
    assert np.isfinite(obs).all() and np.isfinite(np.asarray(replay["reward"])).all()
    # Every unsampleable slot is an episode's final frame (steps_since_start > 0) except
    # the dropped episode of env 0: `left` slots from its first (steps 0 .. left - 1), then
    # the fresh episode of the reset env.
    starts = np.flatnonzero(~valid[0] & (since[0] == 0))
    assert len(starts) == 1 and not (~valid[1:] & (since[1:] == 0)).any()
    p = int(starts[0])
    assert since[0, p:p + left].tolist() == list(range(left))
    assert not valid[0, p:p + left].any()
    assert valid[0, p + left] and since[0, p + left] == 0


def test_env_fault_fields_are_checked_and_bad_values_stay_errors_with_several_processes():
    assert EnvConfig().on_bad_value == "error"
    with pytest.raises(ConfigError, match="env.on_bad_value.*'skip'"):
        EnvConfig(on_bad_value="skip")
    for field, value in (("max_restarts", -1), ("max_restarts", 1.5), ("restart_window", 0)):
        with pytest.raises(ConfigError, match=f"env.{field}"):
            EnvConfig(**{field: value})
    two = dict(devices="all", num_processes=2, coordinator_address="127.0.0.1:1234")
    with pytest.raises(ConfigError, match="env.on_bad_value.*num_processes"):
        presets.replace(presets.get("dqn"), learner=two, actors=dict(mode="lockstep"),
                        env=dict(on_bad_value="drop_episode"))


def _spawned_workers(pid: int) -> list[psutil.Process]:
    """The env worker processes (multiprocessing spawn) of process ``pid``."""
    return [p for p in psutil.Process(pid).children(recursive=True)
            if "spawn_main" in " ".join(p.cmdline())]


def test_an_env_worker_killed_mid_run_is_rebuilt_and_the_run_goes_on(tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "stderr.txt"
    args = [a for a in CARTPOLE if a != "--env.no-asynchronous"]
    args[args.index("--env.num-envs") + 1] = "2"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(FAULTS), "--", *args, "--env.asynchronous", "--total-steps",
             "1200", "--training.checkpoint-interval", "400", "--run-dir", str(run_dir)],
            stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
    try:
        deadline = time.monotonic() + 240
        while "checkpoint at env step" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        workers = _spawned_workers(proc.pid)
        assert len(workers) == 2
        workers[1].send_signal(signal.SIGKILL)
        assert proc.wait(timeout=240) == 0, log.read_text()[-3000:]
    finally:
        proc.kill()
        proc.wait()
    text = log.read_text()
    assert re.search(r"the env workers failed at env step \d+: \w+", text), text[-3000:]
    assert "env workers rebuilt with a fresh seed (restart 1)" in text
    assert re.search(r"dropped the partial episode \(\d+ steps\)", text)
    assert [v for _, v in scalars(run_dir)["perf/env_restarts"]] == [1.0]
    assert latest_checkpoint(run_dir)["loop"]["env_steps"] >= 1200


def test_env_steps_that_raise_are_rebuilt_until_env_max_restarts_then_exit_3(tmp_path):
    run_dir = tmp_path / "run"
    # Every instance raises at its 30th step: failures at about env steps 60, 120, 180.
    result = run_faulty(*CARTPOLE, "--env", BAD_ENV_ID, "--env.num-envs", "2",
                        "--env.max-restarts", "2", "--total-steps", "1000",
                        "--run-dir", str(run_dir),
                        faults=["--bad-value", "raise", "--bad-after", "30"])
    assert result.returncode == 3, result.stderr[-3000:]
    assert result.stderr.count("env workers rebuilt with a fresh seed") == 2
    assert re.search(r"the env workers failed 3 times within 100000 env steps "
                     r"\(env.max_restarts 2\); the last error: RuntimeError: injected fault",
                     result.stderr), result.stderr[-3000:]
    assert f"resume with: python launch/run.py --resume {run_dir}" in result.stderr
    assert [v for _, v in scalars(run_dir)["perf/env_restarts"]] == [1.0, 2.0]
    assert 0 < latest_checkpoint(run_dir)["loop"]["env_steps"] < 300
