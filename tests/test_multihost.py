"""Several learner processes (``learner.num_processes``, ``launch/multihost.py``): config
checks, a clear error when the coordinator cannot be reached, updates across two processes
equal to one device's, and a CartPole run of two processes on this machine (127.0.0.1 only)
that trains, checkpoints and resumes with the same state in both."""

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from launch import compare
from rl import presets
from rl.config import ConfigError, LearnerConfig

ROOT = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "launch" / "run.py")]
TWO = ["--learner.devices", "all", "--learner.num-processes", "2"]


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("fields, name", [
    (dict(num_processes=0), "learner.num_processes"),
    (dict(num_processes=2, process_id=2, coordinator_address="127.0.0.1:1234",
          devices="all"), "learner.process_id"),
    (dict(process_id=-1), "learner.process_id"),
    (dict(num_processes=2, devices="all"), "learner.coordinator_address"),
    (dict(num_processes=2, devices="all", coordinator_address="localhost"),
     "learner.coordinator_address"),
    (dict(num_processes=2, coordinator_address="127.0.0.1:1234"), "learner.devices"),
    (dict(coordinator_timeout=0), "learner.coordinator_timeout"),
])
def test_learner_process_fields_refuse_bad_values(fields, name):
    with pytest.raises(ConfigError, match=name):
        LearnerConfig(**fields)


def test_several_processes_need_lockstep_and_give_one_replay_group_each():
    two = dict(devices="all", num_processes=2, coordinator_address="127.0.0.1:1234")
    with pytest.raises(ConfigError, match="actors.mode.*lockstep"):
        presets.replace(presets.get("dqn"), learner=two, actors=dict(mode="bounded"))
    with pytest.raises(ConfigError, match="learner.num_processes.*trackmania"):
        presets.replace(presets.get("iqn_btr"), learner=two, actors=dict(mode="lockstep"),
                        env=dict(id="trackmania", num_envs=1),
                        training=dict(eval_interval=0))
    config = presets.replace(presets.get("dqn"), learner=two, actors=dict(mode="lockstep"),
                             env=dict(num_envs=4, frame_stack=1))
    assert config.actor_groups == 2
    from rl.agent import make_replay  # noqa: PLC0415
    replay = make_replay(config)
    assert (replay.num_streams, replay.num_groups) == (8, 2)


def test_run_needs_a_run_dir_and_a_reachable_coordinator_before_any_work(tmp_path, capsys):
    from launch import run  # noqa: PLC0415

    flags = ["--algo", "dqn", "--env", "CartPole-v1", "--actors.mode", "lockstep", *TWO]
    port = _closed_port()
    assert run.main([*flags, "--learner.coordinator-address", f"127.0.0.1:{port}"]) == 2
    assert "logging.run_dir" in capsys.readouterr().err
    run_dir = tmp_path / "run"
    start = time.monotonic()
    code = run.main([*flags, "--learner.coordinator-address", f"127.0.0.1:{port}",
                     "--learner.process-id", "1", "--learner.coordinator-timeout", "1",
                     "--run-dir", str(run_dir)])
    assert code == 3
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err
    assert f"learner.coordinator_address=127.0.0.1:{port} (process 1 of 2)" in err
    assert "no coordinator answered within learner.coordinator_timeout=1 s" in err
    assert not run_dir.exists()


def _two_processes(args_of, timeout: int = 400) -> list[subprocess.CompletedProcess]:
    """Run process 1 and process 0 (``args_of(p)`` each) side by side; both results."""
    procs = [subprocess.Popen(args_of(p), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT) for p in (1, 0)]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
                other.wait()
            raise
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results[::-1]  # process 0 first


def test_jit_updates_across_two_processes_equal_one_device_updates():
    # tests/sharded_updates.py in two processes of one CPU device each: IQN with the BTR
    # recipe (noisy, dueling, Munchausen, PER), two updates on the mesh of both processes'
    # devices against one device's (test_sharding.py covers every kind on one process).
    address = f"127.0.0.1:{_closed_port()}"
    results = _two_processes(lambda p: [sys.executable, str(ROOT / "tests" /
                                                           "sharded_updates.py"),
                                        str(p), address, "iqn_btr"], timeout=600)
    for p, result in enumerate(results):
        assert result.returncode == 0, (p, result.stderr[-3000:])
        report = json.loads(result.stdout.strip().splitlines()[-1])  # gloo prints before
        assert sorted(report) == ["iqn_btr (iqn)"]
        for name, case in report.items():
            assert case["gap"] < 1e-5, (p, name, case)
            assert case["all_reduce"] and case["devices"] == 2, (p, name, case)


@pytest.mark.slow
def test_two_learner_processes_train_checkpoint_and_resume_with_the_same_state(tmp_path):
    run_dir = tmp_path / "run"
    flags = ["--algo", "dqn", "--env", "CartPole-v1", "--env.num-envs", "2",
             "--env.no-asynchronous", "--network.hidden-dim", "16", "--network.mlp-hidden",
             "16", "--replay.capacity", "2048", "--training.learning-starts", "64",
             "--training.batch-size", "16", "--training.replay-ratio", "0.5",
             "--training.eval-interval", "256", "--training.eval-episodes", "2",
             "--training.checkpoint-interval", "256", "--logging.log-interval", "64",
             "--logging.no-progress-bar", "--actors.mode", "lockstep", *TWO]
    for total, first in ((512, ["--run-dir", str(run_dir)]), (768, ["--resume", str(run_dir)])):
        address = f"127.0.0.1:{_closed_port()}"
        results = _two_processes(lambda p: [*RUN, *(flags if first[0] == "--run-dir" else []),
                                            *first, "--total-steps", str(total),
                                            "--learner.coordinator-address", address,
                                            "--learner.process-id", str(p)])
        for p, result in enumerate(results):
            assert result.returncode == 0, (p, result.stderr[-3000:])
            assert f"learner process {p} of 2" in result.stderr
            assert "learner on 2 devices" in result.stderr
        saved = sorted(int(path.name) for path in (run_dir / "checkpoints").iterdir())
        assert saved[-1] >= total, saved
        # Both processes end with the same counters (the same vector steps taken in).
        done = [line.split("INFO ")[-1] for result in results
                for line in result.stderr.splitlines() if "INFO done:" in line]
        assert len(done) == 2 and done[0] == done[1], done
    resumed = [re.findall(r"resumed from env step (\d+)", result.stderr) for result in results]
    assert resumed[0] == resumed[1] and len(resumed[0]) == 1 and int(resumed[0][0]) >= 512
    config = json.loads((run_dir / "config.json").read_text())
    assert config["learner"]["num_processes"] == 2 and config["learner"]["process_id"] == 0
    assert not (run_dir / "process_1" / "config.json").exists()
    main, other = compare.load_run(run_dir), compare.load_run(run_dir / "process_1")
    # The same losses at the same steps: the same params, replay and batches in both.
    loss = main.scalars["train/loss"]
    assert len(loss.steps) >= 8
    np.testing.assert_array_equal(other.scalars["train/loss"].steps, loss.steps)
    np.testing.assert_array_equal(other.scalars["train/loss"].values, loss.values)
    # Process 0 evaluates and logs every process's episodes, per process as well.
    assert len(main.scalars["eval/return_mean"].steps) == 3  # 256, 512, 768
    assert "eval/return_mean" not in other.scalars
    for p in (0, 1):
        assert len(main.scalars[f"actor_{p}/episode_return"].steps) >= 5
    np.testing.assert_array_equal(main.scalars["episode/return"].values,
                                  other.scalars["episode/return"].values)


def test_ctrl_c_in_one_process_stops_both_at_the_same_step_with_one_checkpoint(tmp_path):
    run_dir, address = tmp_path / "run", f"127.0.0.1:{_closed_port()}"
    procs = [subprocess.Popen(
        [*RUN, "--algo", "dqn", "--env", "CartPole-v1", "--env.num-envs", "2",
         "--env.no-asynchronous", "--network.hidden-dim", "16", "--network.mlp-hidden", "16",
         "--replay.capacity", "4096", "--training.learning-starts", "4000",
         "--training.batch-size", "16", "--total-steps", "1000000",
         "--logging.no-progress-bar", "--actors.mode", "lockstep", *TWO,
         "--learner.coordinator-address", address, "--learner.process-id", str(p),
         "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=ROOT) for p in (1, 0)][::-1]
    try:
        deadline = time.monotonic() + 120
        log = run_dir / "console.log"
        while not (log.exists() and "target network" in log.read_text()):
            assert time.monotonic() < deadline and procs[0].poll() is None
            time.sleep(0.5)
        time.sleep(3)  # some steps in, no update yet: the state as first replicated
        procs[0].send_signal(signal.SIGINT)  # process 0 only
        results = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert [proc.returncode for proc in procs] == [130, 130], results[0][1][-3000:]
    steps = [re.findall(r"interrupted at env step (\d+)", err) for _, err in results]
    assert steps[0] == steps[1] and len(steps[0]) == 1, steps
    saved = [int(path.name) for path in (run_dir / "checkpoints").iterdir()]
    assert saved == [int(steps[0][0])]


def test_gathered_vector_step_is_bit_for_bit_the_one_sent():
    # One process: the packing into one byte array and back (every dtype of a slot, a
    # features dict, 0-d numbers, padded episodes) gives back exactly the record sent.
    from envs import EpisodeStats  # noqa: PLC0415
    from launch.actor import VectorStep  # noqa: PLC0415
    from launch.multihost import gather_steps  # noqa: PLC0415

    rng = np.random.default_rng(0)
    slot = dict(obs=dict(frames=rng.integers(0, 255, (3, 2, 5, 5), dtype=np.uint8),
                         features=rng.normal(size=(3, 4)).astype(np.float32)),
                action=rng.integers(0, 5, 3).astype(np.int32),
                reward=rng.normal(size=3).astype(np.float32),
                terminated=np.array([True, False, False]), valid=np.array([True, True, False]),
                steps_since_start=np.array([7, 0, 3], np.int32))
    episode = EpisodeStats(env_index=2, return_=-123.456789012345, length=77, truncated=True)
    sent = VectorStep(slot=slot, episodes=[episode], taken=2, epsilon=0.0123456789,
                      params_version=41)
    (got,), stop = gather_steps(sent, stop=True, num_envs=3)
    assert stop is True
    assert (got.taken, got.epsilon, got.params_version, got.actor) == (2, 0.0123456789, 41, 0)
    assert got.episodes == [episode]
    flat_sent, flat_got = (sorted(_leaves(s)) for s in (slot, got.slot))
    assert [k for k, _ in flat_got] == [k for k, _ in flat_sent]
    for (key, a), (_, b) in zip(flat_sent, flat_got):
        assert a.dtype == b.dtype and a.shape == b.shape, key
        np.testing.assert_array_equal(a, b, err_msg=key)


def _leaves(tree, prefix=""):
    """(path, array) of a nested dict of arrays."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value
