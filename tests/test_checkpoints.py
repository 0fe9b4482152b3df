"""Checkpoint integrity (launch/checkpoint.py, the saves of launch/loop.py): --resume skips a
checkpoint that is truncated, unreadable or half-written for the newest one that restores,
and a save that fails on a full disk is logged, keeps the checkpoints saved before and stops
the run after training.max_failed_saves in a row. Every failure is real: files damaged on
disk, a process killed during a save, a size-limited tmpfs."""

import logging
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from launch.checkpoint import DAMAGED_DIR, NEW_LOOP, UNFINISHED, RunCheckpoints, resume
from test_loop import CARTPOLE, run_faulty, scalars
from test_run_e2e import ROOT, loop_counters, run

TINY = [*CARTPOLE, "--replay.capacity", "2048", "--training.checkpoint-interval", "100",
        "--training.best-train-window", "0"]
"""A tiny CartPole run with a checkpoint every 100 env steps (4 envs: at 101, 200, 301, ...)."""


def steps(run_dir: Path) -> list[int]:
    """Env steps of the finished checkpoints, oldest first."""
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


def truncate_largest(directory: Path) -> Path:
    """Cut the largest file in ``directory`` to half its size on disk; returns it."""
    largest = max((p for p in directory.iterdir() if p.is_file()), key=lambda p: p.stat().st_size)
    os.truncate(largest, largest.stat().st_size // 2)
    return largest


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished run with the checkpoints of env steps 200, 301 and 400."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    run(*TINY, "--total-steps", "400", "--training.keep-checkpoints", "3",
        "--run-dir", str(run_dir))
    assert steps(run_dir) == [200, 301, 400]
    return run_dir


@pytest.fixture
def launch_log(caplog):
    """The records of the "launch" logger (which launch/run.py may have cut off from the
    root logger in this process)."""
    logger = logging.getLogger("launch")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


def test_a_truncated_checkpoint_is_skipped_for_the_one_before_and_kept(trained, tmp_path):
    run_dir = shutil.copytree(trained, tmp_path / "run")
    # The state's arrays: its OCDBT database's data file (state/d/; the per-process copy
    # under ocdbt.process_0/ is not read once merged).
    data = truncate_largest(run_dir / "checkpoints" / "400" / "state" / "d")
    truncated = data.stat().st_size
    result = run("--resume", str(run_dir), "--total-steps", "420")
    skipped = re.search(r"skipping the checkpoint of env step 400: its state: .*", result.stderr)
    assert skipped and data.name in skipped.group(0), result.stderr[-3000:]
    assert "resumed from env step 301 with" in result.stderr
    # Moved aside as it was (not deleted), out of the way of the new saves.
    kept = run_dir / DAMAGED_DIR / "400" / "state" / "d" / data.name
    assert kept.stat().st_size == truncated
    assert f"moved the checkpoint of env step 400 that does not restore to " \
           f"{run_dir / DAMAGED_DIR / '400'}" in result.stderr
    counters = loop_counters(run_dir, steps(run_dir)[-1])
    assert counters["env_steps"] >= 420 and counters["restarts"] == 1


def test_unreadable_metadata_falls_back_and_none_restoring_exits_3(trained, tmp_path):
    run_dir = shutil.copytree(trained, tmp_path / "run")
    checkpoints = run_dir / "checkpoints"
    (checkpoints / "400" / "state" / "_METADATA").write_bytes(os.urandom(512))
    (checkpoints / "301" / "loop" / "metadata").unlink()
    good = (checkpoints / "200" / "state" / "_METADATA").read_bytes()
    (checkpoints / "200" / "state" / "_METADATA").write_bytes(b"\xff" * len(good))
    result = run_faulty("--resume", str(run_dir), "--total-steps", "420")
    assert result.returncode == 3, result.stderr[-3000:]
    message = re.search(r"ERROR no checkpoint in .*", result.stderr).group(0)
    assert str(checkpoints) in message
    assert all(f"env step {s}: " in message for s in (200, 301, 400)), message
    assert steps(run_dir) == [200, 301, 400]  # nothing moved or deleted when none restores
    # With the oldest readable again, the resume goes back two checkpoints.
    (checkpoints / "200" / "state" / "_METADATA").write_bytes(good)
    result = run("--resume", str(run_dir), "--total-steps", "420")
    assert "skipping the checkpoint of env step 400: its state: " in result.stderr
    assert "skipping the checkpoint of env step 301: its loop: " in result.stderr
    assert "resumed from env step 200 with" in result.stderr
    assert sorted(int(p.name) for p in (run_dir / DAMAGED_DIR).iterdir()) == [301, 400]


SAVER = """
import sys
import numpy as np
from launch.checkpoint import NEW_LOOP, RunCheckpoints
checkpoints = RunCheckpoints(sys.argv[1], keep=2)
state = {"w": np.random.default_rng(0).random(int(sys.argv[2]), np.float32)}
for step in range(1, 1000):
    checkpoints.save(step, state, {"x": np.full(8, step)}, dict(NEW_LOOP, env_steps=step))
"""
"""Saves a large train state again and again (a process to kill during a save)."""


def test_a_process_killed_during_a_save_resumes_from_the_newest_complete_one(tmp_path,
                                                                              launch_log):
    size = 8_000_000  # 32 MB: a save takes far longer than the delay before the kill
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path), str(size)], cwd=ROOT)
    unfinished = tmp_path / "checkpoints" / f"3{UNFINISHED}"
    deadline = time.time() + 120
    while not unfinished.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.001)
    time.sleep(random.uniform(0.0, 0.02))
    proc.kill()
    proc.wait()
    assert unfinished.exists() and steps(tmp_path) == [1, 2]
    checkpoints = RunCheckpoints(tmp_path, keep=2)
    state, replay, loop = resume(checkpoints, {"w": np.zeros(size, np.float32)},
                                 {"x": np.zeros(8, int)}, learning_starts=0)
    assert loop["env_steps"] == 2 and list(replay["x"]) == [2] * 8
    assert np.array_equal(state["w"], np.random.default_rng(0).random(size, np.float32))
    assert f"{unfinished} is a checkpoint save that never finished" in launch_log.text
    # Saves go on: at the step of the unfinished one (orbax replaces it) and past it.
    for step in (3, 4):
        checkpoints.save(step, state, replay, dict(loop, env_steps=step))
    assert checkpoints.all_steps() == [4, 3] and checkpoints.unfinished() == []
    assert checkpoints.restore_item(4, "loop")["env_steps"] == 4
    checkpoints.close()


def _save_small(checkpoints: RunCheckpoints, step: int) -> None:
    checkpoints.save(step, {"w": np.full(64, step, np.float32)},
                     {"x": np.full(4096, step, np.float32)},
                     dict(NEW_LOOP, env_steps=step, replay_slots=step))


def test_a_damaged_replay_prefers_an_older_complete_checkpoint(tmp_path, launch_log):
    templates = {"w": np.zeros(64, np.float32)}, {"x": np.zeros(4096, np.float32)}
    checkpoints = RunCheckpoints(tmp_path / "two", keep=3)
    for step in (1, 2):
        _save_small(checkpoints, step)
    truncate_largest(tmp_path / "two" / "checkpoints" / "2" / "replay" / "d")
    state, replay, loop = resume(checkpoints, *templates, learning_starts=0)
    assert loop["env_steps"] == 1 and replay["x"][0] == 1 and state["w"][0] == 1
    assert "the checkpoint of env step 2 has a train state but its replay: " in launch_log.text
    assert (tmp_path / "two" / DAMAGED_DIR / "2" / "replay").exists()
    checkpoints.close()
    # Without an older one: the newest train state, and the buffer refilled.
    checkpoints = RunCheckpoints(tmp_path / "one", keep=3)
    _save_small(checkpoints, 1)
    truncate_largest(tmp_path / "one" / "checkpoints" / "1" / "replay" / "d")
    state, replay, loop = resume(checkpoints, *templates, learning_starts=0)
    assert loop["env_steps"] == 1 and state["w"][0] == 1
    assert loop["replay_slots"] == 0 and replay["x"][0] == 0
    assert "no older complete checkpoint: keeping the train state of env step 1" \
        in launch_log.text
    checkpoints.close()


def test_a_full_disk_fails_saves_keeps_the_ones_before_and_stops_after_the_limit(tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "stderr.txt"
    mount = run_dir / "checkpoints"
    mount.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs for the full disk (needs root): "
                    f"{mounted.stderr.strip()}")
    try:
        with open(log, "w") as err:
            proc = subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / "faults.py"), "--", *TINY,
                 "--total-steps", "800", "--training.keep-checkpoints", "2",
                 "--training.max-failed-saves", "2", "--run-dir", str(run_dir)],
                stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        try:
            deadline = time.monotonic() + 300
            while "checkpoint at env step" not in log.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            # The disk fills up after the first checkpoint: every later save fails. Unbuffered:
            # a buffered file would keep the bytes that did not fit and raise again on close.
            with open(mount / "filler", "wb", buffering=0) as filler:
                try:
                    while True:
                        filler.write(b"\0" * 65536)
                except OSError:
                    pass
            assert proc.wait(timeout=300) == 3, log.read_text()[-3000:]
        finally:
            proc.kill()
            proc.wait()
        text = log.read_text()
        failed = re.findall(r"checkpoint at env step (\d+) \(periodic\) not saved \((\d) in a "
                            r"row failed.*No space left on device", text)
        assert [n for _, n in failed] == ["1", "2"], text[-3000:]
        assert int(failed[0][0]) < int(failed[1][0])  # the run went on after the first
        assert f"resume with: python launch/run.py --resume {run_dir}" in text
        kept = steps(run_dir)
        assert kept and max(kept) < int(failed[0][0])
        assert list(mount.glob(f"*{UNFINISHED}*")) == []
        assert scalars(run_dir)["perf/failed_saves"][-1][1] == 2
        # Space made: the run resumes from the checkpoint kept.
        (mount / "filler").unlink()
        result = run("--resume", str(run_dir), "--total-steps", "300")
        assert f"resumed from env step {max(kept)} with" in result.stderr
    finally:
        subprocess.run(["umount", str(mount)], check=True)
