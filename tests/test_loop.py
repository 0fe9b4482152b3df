"""The actor/learner loop (launch/loop.py) in its three modes: lockstep reproduces the loop of
before the split, bounded holds the replay ratio, realtime never makes the game wait, a
checkpoint is a consistent cut in each mode, and a failure on either side ends the run."""

import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import psutil
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lockstep_reference
from faults import FAULT_MESSAGE
from test_trackmania import TINY_TQC_TM, needs_tmrl

ROOT = Path(__file__).resolve().parents[1]
FAULTS = Path(__file__).with_name("faults.py")

CARTPOLE = ["--algo", "dqn", "--env", "CartPole-v1", "--env.num-envs", "4",
            "--env.no-asynchronous", "--network.mlp-hidden", "16", "--network.hidden-dim", "16",
            "--training.learning-starts", "100", "--training.batch-size", "16",
            "--training.replay-ratio", "0.25", "--training.eval-interval", "0",
            "--logging.log-interval", "40", "--logging.no-progress-bar"]

def run_faulty(*args, faults=(), timeout=300):
    """tests/faults.py (launch/run.py with injected delays or failures): the finished
    process."""
    return subprocess.run([sys.executable, str(FAULTS), *faults, "--", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def latest_checkpoint(run_dir: Path) -> dict:
    """{'state', 'replay', 'loop'} of the newest checkpoint, restored as saved."""
    manager = ocp.CheckpointManager((run_dir / "checkpoints").absolute(),
                                    options=ocp.CheckpointManagerOptions(
                                        create=False, enable_async_checkpointing=False))
    step = manager.latest_step()
    saved = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), replay=ocp.args.StandardRestore(),
        loop=ocp.args.JsonRestore()))
    manager.close()
    return saved


def achieved_ratio(tags) -> float:
    """Grad steps per env step from the first log interval with grad steps to the last."""
    grad = [(s, v) for s, v in tags["train/grad_steps"] if v > 0]
    (s0, g0), (s1, g1) = grad[0], grad[-1]
    return (g1 - g0) / (s1 - s0)


@pytest.mark.parametrize("case", [  # the pixel case in the slow tier (105 s)
    pytest.param(case, marks=pytest.mark.slow) if case == "car_racing_iqn_btr" else case
    for case in sorted(lockstep_reference.CASES)])
def test_lockstep_reproduces_the_loop_recorded_before_the_split(tmp_path, case):
    """Same seed, same loop counters, replay frames, actions, rewards and flags (bit for bit)
    as the single-threaded loop of before, and the same returns, losses, Q values, epsilon
    and evaluations within lockstep_reference.FLOAT_RTOL (float sums differ across CPUs)."""
    reference = json.loads(lockstep_reference.REFERENCE.read_text())[case]
    got = lockstep_reference.run_case(case, tmp_path / "run", "--actors.mode", "lockstep")
    assert got["loop"] == reference["loop"]
    # Scalars added since the recording: none of its grad steps was skipped.
    assert [v for _, v in got["scalars"].pop("train/nonfinite_steps")] == \
        [0.0] * len(reference["scalars"]["train/loss"])
    assert set(got["scalars"]) == set(reference["scalars"])
    rtol = lockstep_reference.FLOAT_RTOL[case]
    exact = lambda leaves: {k: v for k, v in leaves.items()
                            if k not in lockstep_reference.FLOAT_LEAVES}
    assert exact(got["replay"]) == exact(reference["replay"])
    shapes = lambda leaves: {k: v.split(":")[0] for k, v in leaves.items()}  # dtype[shape]
    assert shapes(got["state"]) == shapes(reference["state"])
    for tag, values in reference["scalars"].items():
        steps, floats = np.array(got["scalars"][tag]).T
        assert steps.tolist() == [s for s, _ in values], tag
        np.testing.assert_allclose(floats, [v for _, v in values], rtol=rtol, atol=1e-7,
                                   err_msg=tag)


@pytest.mark.parametrize("slow", ["learner", "actor"])
def test_bounded_mode_holds_the_replay_ratio_and_the_slow_side_is_waited_for(tmp_path, slow):
    run_dir = tmp_path / "run"
    faults = ["--slow-update", "0.05"] if slow == "learner" else ["--slow-step", "0.02"]
    result = run_faulty(*CARTPOLE, "--actors.mode", "bounded", "--total-steps", "800",
                        "--run-dir", str(run_dir), faults=faults)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "actors.mode=bounded" in result.stderr
    tags = scalars(run_dir)
    assert achieved_ratio(tags) == pytest.approx(0.25, rel=0.1)
    after_warmup = [v for s, v in tags["perf/replay_ratio_achieved"] if s > 200]
    assert np.mean(after_warmup) == pytest.approx(0.25, rel=0.1)
    actor_wait = np.mean([v for s, v in tags["perf/actor_wait_share"] if s > 200])
    learner_wait = np.mean([v for s, v in tags["perf/learner_wait_share"] if s > 200])
    if slow == "learner":  # 0.05 s per grad step, 4 env steps per grad step
        assert actor_wait > 0.5 and learner_wait < 0.3
    else:  # 0.02 s per vector step of 4 env steps, 1 grad step of a few ms
        assert learner_wait > 0.5 and actor_wait < 0.3
    # The learner is at most max_lag (2) grad steps behind the actor's params.
    assert all(0 <= v <= 3 for _, v in tags["perf/param_lag"])
    for tag in ("perf/queue_depth", "perf/env_wait_share", "perf/learner_busy_share"):
        assert tag in tags


@needs_tmrl
def test_realtime_mode_keeps_the_game_on_time_with_a_learner_slower_than_its_steps(tmp_path):
    """A grad step of 0.5 s against the 50 ms game step: the actor never waits for it, the
    learner still learns, and the shortfall against the replay ratio is logged."""
    run_dir = tmp_path / "run"
    result = run_faulty(*TINY_TQC_TM, "--total-steps", "300", "--run-dir", str(run_dir),
                        faults=["--slow-update", "0.5"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "actors.mode=realtime (auto)" in result.stderr
    tags = scalars(run_dir)
    late = sum(v for _, v in tags["perf/late_steps"])
    assert late / 300 < 0.01
    grad_steps = tags["train/grad_steps"][-1][1]
    assert grad_steps > 0
    # 260 env steps after the warm-up owe 65 grad steps; 15 s of 0.5 s steps run about 30.
    assert grad_steps < 0.7 * 0.25 * 260
    assert tags["perf/grad_credit_backlog"][-1][1] > 10
    # Waiting for a 0.5 s grad step would be most of each 50 ms step; what counts here is the
    # hand-over into the queue, which reached 1.1% on a loaded 2-core machine.
    assert max(v for _, v in tags["perf/actor_wait_share"]) < 0.05


def _consistent_cut(saved: dict, num_envs: int, whole_episodes: bool) -> None:
    """The counters, the replay and the train state of one checkpoint agree."""
    loop, replay = saved["loop"], saved["replay"]
    assert int(np.sum(replay["count"])) * num_envs == loop["replay_slots"]
    stored_steps = int(np.sum(replay["valid"]))
    if whole_episodes:  # the running episode is counted but waits to enter the replay
        assert loop["replay_slots"] <= loop["vector_steps"] * num_envs
        assert stored_steps <= loop["env_steps"]
    else:
        assert loop["replay_slots"] == loop["vector_steps"] * num_envs
        assert stored_steps == loop["env_steps"]


@pytest.mark.parametrize("mode", ["lockstep", "bounded", pytest.param("realtime",
                                                                     marks=pytest.mark.slow)])
def test_a_checkpoint_in_each_mode_is_a_consistent_cut_and_resumes(tmp_path, mode):
    if mode == "realtime" and importlib.util.find_spec("tmrl") is None:
        pytest.skip("tmrl is not installed (the [trackmania] extra)")
    run_dir = tmp_path / "run"
    # Realtime with the actor in a thread: the same cut, without a child process to start
    # twice (the process backend has its own tests).
    args = ([*TINY_TQC_TM, "--actors.backend", "thread"] if mode == "realtime"
            else [*CARTPOLE, "--actors.mode", mode, "--replay.capacity", "4096"])
    num_envs = 1 if mode == "realtime" else 4
    first = run_faulty(*args, "--total-steps", "160", "--run-dir", str(run_dir))
    assert first.returncode == 0, first.stderr[-3000:]
    saved = latest_checkpoint(run_dir)
    _consistent_cut(saved, num_envs, whole_episodes=mode == "realtime")
    assert int(saved["state"]["grad_steps"]) == int(
        re.search(r"done: \d+ env steps, (\d+) grad steps", first.stderr).group(1))
    second = run_faulty("--resume", str(run_dir), "--total-steps", "320")
    assert second.returncode == 0, second.stderr[-3000:]
    assert (f"resumed from env step {saved['loop']['env_steps']} with "
            f"{saved['loop']['replay_slots']} replay slots") in second.stderr
    resumed = latest_checkpoint(run_dir)
    _consistent_cut(resumed, num_envs, whole_episodes=mode == "realtime")
    assert resumed["loop"]["env_steps"] >= 320 and resumed["loop"]["restarts"] == 1
    assert int(resumed["state"]["grad_steps"]) > int(saved["state"]["grad_steps"])


def _run_until_the_fault(args: list[str], side: str, fail_after: int
                         ) -> tuple[int, str, float, set[psutil.Process]]:
    """tests/faults.py failing on ``side``: (exit code, stderr, seconds from the fault to
    the end, every descendant process seen while the run was up)."""
    proc = subprocess.Popen([sys.executable, str(FAULTS), "--fail", side, "--fail-after",
                             str(fail_after), "--", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    children: set[psutil.Process] = set()
    while proc.poll() is None:
        try:
            children.update(psutil.Process(proc.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    _, stderr = proc.communicate(timeout=120)
    ended = time.time()
    fault = re.search(r"fault at ([\d.]+)", stderr)
    assert fault, stderr[-3000:]
    return proc.returncode, stderr, ended - float(fault.group(1)), children


def _all_gone(processes: set[psutil.Process]) -> bool:
    time.sleep(1.0)
    return not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("side", ["actor", "learner"])
def test_an_exception_on_either_side_ends_the_run_with_its_traceback(tmp_path, side):
    """Bounded mode with env worker processes: the failure stops the other side, closes the
    workers and exits with code 1 and the traceback, well within 10 s."""
    args = [*CARTPOLE, "--env.asynchronous", "--total-steps", "100000", "--actors.mode",
            "bounded", "--run-dir", str(tmp_path / "run")]
    code, stderr, seconds, workers = _run_until_the_fault(args, side, fail_after=60)
    assert code == 1, stderr[-3000:]
    assert "Traceback" in stderr and FAULT_MESSAGE in stderr
    assert seconds < 10.0
    assert len(workers) >= 4
    assert _all_gone(workers)


@needs_tmrl
def test_an_exception_in_the_actor_process_ends_the_run_with_its_traceback(tmp_path):
    """Real time on the stand-in game, the actor in its child process (actors.backend auto):
    the child's exception reaches the training process with the child's traceback, the run
    exits with code 1 within 10 s, and the actor process and its game worker are gone."""
    args = [*TINY_TQC_TM, "--total-steps", "100000", "--run-dir", str(tmp_path / "run")]
    code, stderr, seconds, children = _run_until_the_fault(args, "actor", fail_after=60)
    assert code == 1, stderr[-3000:]
    assert "actors.backend=process, auto" in stderr
    assert "ActorProcessError" in stderr and FAULT_MESSAGE in stderr
    assert 'actor.py", line' in stderr  # the child's frames (the parent has none there)
    assert seconds < 10.0
    assert len(children) >= 2  # the actor process and its env worker at least
    assert _all_gone(children)


EVAL_LINE = re.compile(r"eval at env step (\d+)(?: \(policy of env step (\d+)\))?: return")


@pytest.mark.parametrize("mode", ["lockstep", "bounded", "realtime"])
def test_evaluations_are_logged_at_multiples_of_the_interval(tmp_path, mode):
    """4 envs and CartPole's autoreset slots move the env-step counter by 1 to 4, past
    multiples of 90 more often than onto them: each evaluation is logged (TensorBoard,
    best/) at the multiple it was due for, and the policy is that of the step reached."""
    run_dir = tmp_path / "run"
    result = run_faulty(*CARTPOLE, "--actors.mode", mode, "--actors.backend", "thread",
                        "--total-steps", "300", "--training.eval-interval", "90",
                        "--training.eval-episodes", "1", "--env.max-episode-steps", "30",
                        "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    means = dict(scalars(run_dir)["eval/return_mean"])
    assert list(means) == [90, 180, 270]
    logged = EVAL_LINE.findall(result.stderr)
    assert [int(step) for step, _ in logged] == [90, 180, 270]
    reached = {int(step): int(r) for step, r in logged if r}
    assert all(step < r < step + 4 for step, r in reached.items())
    if mode == "lockstep":  # reproducible by seed: a multiple passed, not landed on
        assert reached
    # best/ is named by the best evaluation's step (the first of equal ones); its counters
    # say where the evaluated policy was.
    (best,) = [int(p.name) for p in (run_dir / "best").iterdir()]
    assert best == max(means, key=means.get)
    counters = json.loads((run_dir / "best" / str(best) / "loop" / "metadata").read_text())
    assert counters["env_steps"] == reached.get(best, best)
