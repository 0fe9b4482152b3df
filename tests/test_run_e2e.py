"""End to end: launch/run.py trains, writes events and checkpoints, resumes, and saves on Ctrl-C."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from launch import record_demos, run as run_py
from rl import presets

ROOT = Path(__file__).resolve().parents[1]

TINY_CAR_RACING = [
    "--algo", "iqn_btr", "--env", "CarRacing-v3", "--seed", "3",
    "--env.num-envs", "2", "--env.no-asynchronous", "--env.image-size", "36",
    "--env.max-episode-steps", "20",
    "--network.impala-channels", "4", "8", "--network.width-scale", "1",
    "--network.pooled-size", "2", "--network.hidden-dim", "16",
    "--network.cosine-embedding-dim", "8",
    "--agent.num-tau-samples", "4", "--agent.num-tau-prime-samples", "4",
    "--agent.num-quantile-samples", "4", "--agent.target-update-period", "5",
    "--replay.capacity", "1024",
    "--training.learning-starts", "32", "--training.batch-size", "8",
    "--training.replay-ratio", "0.25", "--training.eval-interval", "64",
    "--training.eval-episodes", "1", "--training.checkpoint-interval", "64",
    "--logging.log-interval", "32", "--logging.no-progress-bar",
]


def run(*args, timeout=300):
    result = subprocess.run([sys.executable, str(ROOT / "launch" / "run.py"), *args],
                            capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def loop_counters(run_dir: Path, step: int) -> dict:
    return json.loads((run_dir / "checkpoints" / str(step) / "loop" / "metadata").read_text())


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_car_racing_trains_writes_events_checkpoints_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    result = run(*TINY_CAR_RACING, "--total-steps", "128", "--run-dir", str(run_dir))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env"]["id"] == "CarRacing-v3" and config["training"]["total_steps"] == 128
    # env auto on pixels, saved as numbers; the target period also in env steps (5 updates
    # at replay ratio 0.25).
    assert (config["env"]["reward_clip"], config["env"]["frame_stack"]) == (1.0, 4)
    assert "target network: hard copy every 5 updates = 20 env steps" in result.stderr
    # The main command on a CPU points once to the preset that learns CarRacing here.
    assert result.stderr.count("--algo iqn_cpu is the preset that learns CarRacing-v3") == 1
    # 1,024 slots of one 36x36 uint8 frame (1.33 MB), plus 17 bytes per slot and the sum tree.
    replay_gb = float(re.search(r"memory: replay ([\d.e+-]+) GB \(replay.capacity 1024\)",
                                result.stderr).group(1))
    assert replay_gb == pytest.approx((1024 * (36 * 36 + 17) + 2048 * 4) / 1e9, rel=0.01)
    steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir())
    assert len(steps) == 2 and 64 <= steps[0] < 66 and 128 <= steps[1] < 130
    assert len(list((run_dir / "best").iterdir())) == 1
    first = loop_counters(run_dir, steps[1])
    # Episodes of 20 agent steps: each adds one autoreset slot that is not an env step.
    assert first["env_steps"] == steps[1] and first["episodes"] >= 6
    assert first["replay_slots"] == 2 * first["vector_steps"]
    autoreset_slots = first["replay_slots"] - first["env_steps"]
    assert first["episodes"] - 2 <= autoreset_slots <= first["episodes"]
    tags = scalars(run_dir)
    for tag in ("train/loss", "train/q_mean", "train/grad_norm", "train/target_age",
                "charts/epsilon", "episode/return", "eval/return_mean",
                "perf/env_steps_per_sec", "perf/learner_busy_share"):
        assert tag in tags, tag
    assert [step for step, _ in tags["eval/return_mean"]] == [64, 128]
    grad_steps_first = tags["train/grad_steps"][-1][1]
    assert grad_steps_first > 0

    result = run("--resume", str(run_dir), "--total-steps", "192")
    assert f"resumed from env step {steps[1]} with {first['replay_slots']} replay slots" \
        in result.stderr
    last = max(int(p.name) for p in (run_dir / "checkpoints").iterdir())
    second = loop_counters(run_dir, last)
    assert 192 <= second["env_steps"] < 194 and second["vector_steps"] > first["vector_steps"]
    assert second["episodes"] > first["episodes"] and second["restarts"] == 1
    # Grad steps continue from where the first run stopped.
    grad_steps_second = scalars(run_dir)["train/grad_steps"][-1][1]
    assert grad_steps_second > grad_steps_first
    assert json.loads((run_dir / "config.json").read_text())["training"]["total_steps"] == 192


def test_the_cpu_hint_is_for_iqn_btr_on_car_racing_on_a_cpu():
    btr = presets.get("iqn_btr")
    assert run_py.cpu_preset_hint(btr, "cpu") == run_py.CPU_PRESET_HINT
    assert run_py.cpu_preset_hint(btr, "gpu") is None
    assert run_py.cpu_preset_hint(presets.get("iqn_cpu"), "cpu") is None
    assert run_py.cpu_preset_hint(presets.replace(btr, env=dict(id="ALE/Pong-v5")), "cpu") is None


def test_expert_curriculum_and_resume_with_a_raised_floor_and_no_saved_replay(tmp_path):
    """DQN on CartPole with the scripted expert: the ratio decays to its floor, expert steps
    reach the batches, the seed 003 status line is printed; a resume without saved replay
    refills the buffer and says so, and --expert.floor-raise lifts the ratio from there."""
    run_dir = tmp_path / "run"
    common = ["--logging.no-progress-bar", "--logging.log-interval", "50",
              "--logging.summary-interval", "200", "--logging.return-windows", "200", "400"]
    result = run("--algo", "dqn", "--env", "CartPole-v1", "--env.no-asynchronous",
                 "--total-steps", "400", "--run-dir", str(run_dir),
                 "--training.learning-starts", "100", "--network.mlp-hidden", "16",
                 "--network.hidden-dim", "16", "--training.no-save-replay",
                 "--expert.kind", "scripted", "--expert.source", "envs.scripted:cartpole",
                 "--expert.ratio-start", "0.9", "--expert.ratio-floor", "0.2",
                 "--expert.ratio-decay-steps", "200", *common)
    assert "step 400/400 | expert 20%" in result.stderr  # the status line
    saved_env = json.loads((run_dir / "config.json").read_text())["env"]
    assert (saved_env["reward_clip"], saved_env["frame_stack"]) == (None, 1)  # vector auto
    first = max(int(p.name) for p in (run_dir / "checkpoints").iterdir())
    assert not (run_dir / "checkpoints" / str(first) / "replay").exists()
    tags = scalars(run_dir)
    for step, ratio in tags["expert/ratio"]:
        assert ratio == pytest.approx(max(0.2, 0.9 - 0.7 * step / 200), abs=0.02), step
    assert all(0 < v < 1 for _, v in tags["train/expert_fraction"])
    assert "episode/mixed_return" in tags and "returns/mixed_mean_200" in tags

    result = run("--resume", str(run_dir), "--total-steps", "600", "--expert.floor-raise",
                 "0.9", "--expert.floor-raise-steps", "100", *common)
    assert "the buffer is refilled" in result.stderr
    assert f"floor raised to 0.9 from env step {first} to {first + 100}" in result.stderr
    assert json.loads((run_dir / "config.json").read_text())["env"] == saved_env
    last = max(int(p.name) for p in (run_dir / "checkpoints").iterdir())
    counters = loop_counters(run_dir, last)
    assert counters["expert_floor_raise"] == dict(floor=0.9, steps=100, start=first)
    # The refilled buffer holds only the slots written since the resume.
    assert counters["env_steps"] >= 600
    assert counters["env_steps"] - first <= counters["replay_slots"] < counters["env_steps"]
    ratios = dict(scalars(run_dir)["expert/ratio"])
    assert all(ratios[s] == pytest.approx(0.9) for s in ratios if first < s < first + 100)
    assert all(ratios[s] == pytest.approx(0.2) for s in ratios if s >= first + 100)


def test_a_replay_saved_before_is_expert_existed_resumes_with_the_train_state(tmp_path):
    run_dir = tmp_path / "run"
    run("--algo", "dqn", "--env", "CartPole-v1", "--env.no-asynchronous", "--total-steps", "200",
        "--run-dir", str(run_dir), "--training.learning-starts", "100",
        "--network.mlp-hidden", "16", "--network.hidden-dim", "16", "--logging.no-progress-bar")
    step = max(int(p.name) for p in (run_dir / "checkpoints").iterdir())
    # Rewrite the checkpoint in the layout of before: the same replay without is_expert.
    manager = ocp.CheckpointManager((run_dir / "checkpoints").absolute(),
                                    options=ocp.CheckpointManagerOptions(
                                        enable_async_checkpointing=False))
    saved = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), replay=ocp.args.StandardRestore(),
        loop=ocp.args.JsonRestore()))
    old_replay = {k: v for k, v in saved["replay"].items() if k != "is_expert"}
    manager.save(step + 1, args=ocp.args.Composite(
        state=ocp.args.StandardSave(saved["state"]), replay=ocp.args.StandardSave(old_replay),
        loop=ocp.args.JsonSave(dict(saved["loop"], env_steps=step + 1))), force=True)
    manager.close()
    result = run("--resume", str(run_dir), "--total-steps", "400", "--logging.no-progress-bar")
    assert "the replay in the checkpoint has an older layout" in result.stderr
    assert "the buffer is refilled" in result.stderr
    counters = loop_counters(run_dir, max(int(p.name) for p in
                                          (run_dir / "checkpoints").iterdir()))
    assert counters["env_steps"] >= 400 and counters["restarts"] == 1
    # The train state came back: grad steps go on from the saved count (about 50 before, 50
    # more after the 100 steps of refill; a fresh state would end near 50).
    saved_steps = int(saved["state"]["grad_steps"])
    done = re.search(r"done: \d+ env steps, (\d+) grad steps", result.stderr)
    assert int(done.group(1)) > 1.5 * saved_steps > 0


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch" / "run.py"), "--algo", "iqn", "--env", "CartPole-v1",
         "--env.no-asynchronous", "--total-steps", "10000000", "--run-dir", str(run_dir),
         "--training.learning-starts", "100", "--logging.log-interval", "100",
         "--logging.no-progress-bar"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not any(run_dir.glob("events.out.tfevents.*")):
        time.sleep(0.5)
    # Wait until learning has started (a train/ scalar is logged), then interrupt.
    while time.time() < deadline and "train/loss" not in scalars(run_dir):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert "resume with: python launch/run.py --resume" in stderr
    steps = [int(p.name) for p in (run_dir / "checkpoints").iterdir()]
    assert len(steps) == 1 and steps[0] > 100
    assert loop_counters(run_dir, steps[0])["env_steps"] == steps[0]


def demo_weights_follow_the_decay(tags: dict, w0: float, decay: int) -> None:
    """charts/demo_sampling_weight is seed 004's formula at every logged step, and the demo
    share of the batches falls with it."""
    for step, weight in tags["charts/demo_sampling_weight"]:
        assert weight == pytest.approx(1 + (w0 - 1) * (1 - min(1, step / decay)), rel=1e-6)
    shares = [v for _, v in tags["train/demo_fraction"]]
    assert shares[0] > 0.3 and shares[-1] < shares[0]


@pytest.mark.slow
def test_controls_show_in_tensorboard_for_rainbow_and_tm20(tmp_path):
    """Rainbow (C51) and the TM20 preset train from launch/run.py on CartPole, and the seeds'
    knobs leave their trace: injected demos are sampled with a decaying weight, episode-based
    epsilon warns and decays per episode, the cosine lr falls, beta grows by its increment,
    soft targets keep a gap to the online net; Rainbow also takes the scripted expert's
    curriculum."""
    common = ["--env", "CartPole-v1", "--env.no-asynchronous", "--network.torso", "mlp",
              "--network.mlp-hidden", "32", "--network.hidden-dim", "32",
              "--training.eval-interval", "0", "--logging.log-interval", "50",
              "--logging.no-progress-bar"]
    expert = ["--expert.kind", "scripted", "--expert.source", "envs.scripted:cartpole"]
    demos = tmp_path / "demos"
    assert record_demos.main(["--algo", "rainbow", "--env", "CartPole-v1", "--episodes", "3",
                              "--policy", "envs.scripted:cartpole", "--out", str(demos),
                              "--env.max-episode-steps", "100"]) == 0
    rainbow = tmp_path / "rainbow"
    result = run("--algo", "rainbow", *common, "--total-steps", "600", "--run-dir", str(rainbow),
                 "--agent.v-min", "0", "--agent.v-max", "100", "--training.learning-starts", "200",
                 "--agent.target-update", "soft", "--agent.target-tau", "0.01",
                 "--demos.path", str(demos), "--demos.sampling-weight", "3",
                 "--demos.weight-decay-samples", "500", *expert, "--expert.ratio-start", "0.3",
                 "--expert.ratio-floor", "0.3")
    assert "injected 300 demo transitions" in result.stderr
    tags = scalars(rainbow)
    assert all(v >= 0 for _, v in tags["train/q_min"])  # the support starts at 0
    assert all(v > 0 for _, v in tags["train/target_param_gap"])
    assert len(tags["train/loss"]) >= 3
    demo_weights_follow_the_decay(tags, 3.0, 500)
    assert all(0.1 < v < 0.5 for _, v in tags["expert/step_share"])
    assert all(0 < v < 1 for _, v in tags["train/expert_fraction"])

    tm20 = tmp_path / "tm20"
    result = run("--algo", "tm20_rainbow", *common, "--total-steps", "400", "--run-dir", str(tm20),
                 "--agent.epsilon-unit", "episodes", "--agent.epsilon-decay-steps", "20",
                 "--agent.lr-schedule", "cosine", "--agent.lr-decay-steps", "300",
                 "--agent.lr-end", "1e-6")
    assert "agent.epsilon_unit=episodes" in result.stderr
    tags = scalars(tm20)
    episodes = dict(tags["charts/episodes"])
    for step, eps in tags["charts/epsilon"]:
        # Linear 1 -> 0.01 over 20 episodes, read at the episode count of the same log step
        # (episodes finishing within the logged vector step may lead by one).
        n = episodes[step]
        assert min(abs(eps - (1 - 0.99 * min(1, (n - d) / 20))) for d in (0, 1)) < 1e-6
    assert tags["charts/epsilon"][-1][1] < 0.5
    lrs = [v for _, v in tags["train/learning_rate"]]
    assert lrs[0] > lrs[-1] and lrs == sorted(lrs, reverse=True)
    grad = dict(tags["train/grad_steps"])
    for step, beta in tags["charts/importance_exponent"]:
        np.testing.assert_allclose(beta, min(1.0, 0.4 + 0.001 * grad[step]), atol=1e-6)


def test_tqc_trains_on_pendulum_and_keeps_the_best_training_policy(tmp_path):
    demos = tmp_path / "demos"
    assert record_demos.main(["--algo", "tqc", "--episodes", "2", "--policy", "random",
                              "--out", str(demos), "--env.max-episode-steps", "100"]) == 0
    run_dir = tmp_path / "tqc"
    result = run("--algo", "tqc", "--env.no-asynchronous", "--total-steps", "700",
                 "--demos.path", str(demos), "--demos.sampling-weight", "2",
                 "--demos.weight-decay-samples", "600",
                 "--run-dir", str(run_dir), "--tqc.num-critics", "2", "--tqc.critic-hidden", "32",
                 "--tqc.actor-hidden", "32", "--training.learning-starts", "200",
                 "--training.batch-size", "32", "--training.eval-interval", "350",
                 "--training.eval-episodes", "1", "--training.best-train-window", "2",
                 "--env.max-episode-steps", "100", "--logging.log-interval", "100",
                 "--expert.kind", "scripted", "--expert.source", "envs.scripted:pendulum",
                 "--expert.mode", "episode", "--expert.ratio-start", "0.25",
                 "--expert.ratio-floor", "0.25",
                 "--logging.no-progress-bar")
    assert "eval at env step 350" in result.stderr
    tags = scalars(run_dir)
    for tag in ("train/critic_loss", "train/actor_loss", "train/alpha", "train/entropy",
                "train/q_taken_mean", "train/backup_std", "train/critic_grad_norm",
                "train/critics_identical_fraction", "eval/return_mean"):
        assert tag in tags, tag
    # Independently initialised critics: at most a rare batch element where two Q agree to
    # 1e-6 by chance (twins give 1.0 on every step).
    identical = [v for _, v in tags["train/critics_identical_fraction"]]
    assert max(identical) < 0.1, identical
    # Continuous actions from the scripted expert, which drives whole episodes (episode mode).
    assert {v for _, v in tags["episode/expert_share"]} == {0.0, 1.0}
    assert all(0 < v < 1 for _, v in tags["train/expert_fraction"])
    demo_weights_follow_the_decay(tags, 2.0, 600)
    # Random warm-up, then the learned temperature moves away from its start of 1.
    assert tags["train/alpha"][-1][1] < 1.0
    best = list((run_dir / "best_train").iterdir())
    assert len(best) == 1
    saved = json.loads((best[0] / "loop" / "metadata").read_text())
    returns = [v for _, v in tags["episode/agent_only_return"]]
    # The kept value is the mean of 2 consecutive agent-only episodes (the window at some log
    # step): the expert's episodes do not count.
    pair_means = [np.mean(returns[i:i + 2]) for i in range(len(returns) - 1)]
    assert min(abs(saved["best_train_return"] - m) for m in pair_means) < 1e-3
