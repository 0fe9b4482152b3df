"""Health monitor: each red flag of the seeds raised on a metric stream that crosses it and not
on one that stays inside; events once per change; rollback in a real run."""

import json
import math
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from launch.health_watch import HealthWatch
from rl import agent as agent_lib
from rl import health, presets
from rl.config import HEALTH_CHECKS, ConfigError, HealthConfig

ROOT = Path(__file__).resolve().parents[1]


def monitor(rewards=None, gamma=0.99, total_steps=10_000_000, epsilon_start=1.0, **fields):
    """A monitor armed from step 0 with 10k-step windows; ``rewards`` (low, high) stored."""
    fields = dict(dict(window_steps=10_000, warmup_steps=0), **fields)
    mon = health.HealthMonitor(HealthConfig(**fields), gamma=gamma, total_steps=total_steps,
                               learning_starts=0, epsilon_start=epsilon_start)
    if rewards is not None:
        mon.record_rewards(*rewards)
    return mon


def feed(mon, stream, start=1_000, every=1_000, epsilon=None):
    """Check each metrics dict of ``stream`` at start, start + every, ...; returns
    [(step, name, raised)] of the events."""
    events = []
    for i, metrics in enumerate(stream):
        step = start + i * every
        events += [(e.step, e.name, e.raised) for e in mon.check(step, metrics, epsilon)]
    return events


def names(events, raised=True):
    return [name for _, name, up in events if up == raised]


def test_severity_table_covers_every_check_in_config_order():
    assert tuple(health.SEVERITY) == HEALTH_CHECKS


def test_nonfinite_metric_or_return_raises_once_and_clears():
    mon = monitor()
    ok = dict(loss=1.0, q_min=0.0, q_max=1.0)
    events = feed(mon, [ok, dict(ok, loss=math.nan), dict(ok, q_max=math.inf), ok])
    assert events == [(2_000, "nonfinite", True), (4_000, "nonfinite", False)]
    mon.record_episode(5_000, -math.inf)
    assert [(e.name, e.raised) for e in mon.check(5_000, ok)] == [("nonfinite", True)]
    assert mon.diverging()


def test_nonfinite_acts_only_after_max_nonfinite_checks_in_a_row():
    """The flag is raised and logged on the first bad check (NaN metrics, or grad steps the
    learner skipped), but on_divergence acts on it only on the max_nonfinite-th bad check in
    a row, once; a finite check in between, or a rollback's restart, starts the count again."""
    mon = monitor(max_nonfinite=3)
    ok, nan, skipped = dict(loss=1.0), dict(loss=math.nan), dict(loss=1.0, nonfinite_steps=2.0)

    def check(step, metrics):
        events = mon.check(step, metrics)
        acted = mon.to_act_on(events)
        return [(e.name, e.raised) for e in events], [(e.name, e.step) for e in acted]

    assert check(1_000, nan) == ([("nonfinite", True)], [])
    assert check(2_000, skipped) == ([], [])
    assert check(3_000, ok) == ([("nonfinite", False)], [])
    assert check(4_000, skipped) == ([("nonfinite", True)], [])
    assert mon.raised["nonfinite"].message.endswith("2 grad steps skipped (their updates were "
                                                    "dropped)")
    assert check(5_000, nan) == ([], [])
    assert check(6_000, nan) == ([], [("nonfinite", 4_000)])  # the third in a row
    assert check(7_000, nan) == ([], [])  # acted on once
    assert mon.diverging()
    assert mon.to_act_on(mon.restart(7_500)) == []
    assert [check(s, nan)[1] for s in (8_000, 9_000, 10_000)] == [[], [], [("nonfinite", 8_000)]]
    # Other divergence flags still act at once; 1 acts on nonfinite at once.
    mon = monitor(rewards=(0.0, 0.01), max_nonfinite=1)
    assert [e.name for e in mon.to_act_on(mon.check(1_000, dict(q_min=0.0, q_max=5.0)))] \
        == ["q_above_bound"]
    assert [e.name for e in mon.to_act_on(mon.check(2_000, nan))] == ["nonfinite"]
    mon = monitor(ignore=("nonfinite",), max_nonfinite=1)
    assert mon.to_act_on(mon.check(1_000, nan)) == []


def test_health_watch_returns_nonfinite_to_act_on_after_max_nonfinite(tmp_path):
    class Writer:
        add_scalar = add_text = alert = staticmethod(lambda *args: None)

    config = presets.replace(presets.get("dqn"), health=dict(max_nonfinite=2))
    watch = HealthWatch(config, 2, tmp_path, learning_starts=0, writer=Writer())
    assert watch.check(1_000, dict(loss=math.nan), 0.5) == []
    assert json.loads((tmp_path / "health.json").read_text())["raised"] == ["nonfinite"]
    assert [e.name for e in watch.check(2_000, dict(loss=math.nan), 0.5)] == ["nonfinite"]


def test_q_bounds_from_the_stored_rewards_and_the_seed_floor():
    # CartPole: rewards in [0, 1], gamma 0.99, so returns lie in [0, 100]; widened by 50% of
    # that width, the flags are above 150 and below -50 (a negative Q cannot be learned from
    # positive rewards: seed 003's q_min of -255 on CartPole).
    mon = monitor(rewards=(0.0, 1.0))
    assert mon.q_bounds() == (pytest.approx(150), pytest.approx(-50))
    events = feed(mon, [dict(q_min=-20.0, q_max=133.0), dict(q_min=-20.0, q_max=151.0),
                        dict(q_min=-51.0, q_max=50.0)])
    assert events == [(2_000, "q_above_bound", True), (3_000, "q_above_bound", False),
                      (3_000, "q_below_floor", True)]
    # Pendulum's rewards in [-16.3, 0]: Q of -300 is in range, positive Q of 900 is not.
    mon = monitor(rewards=(-16.3, 0.0))
    assert feed(mon, [dict(q_min=-300.0, q_max=-10.0)]) == []
    assert names(feed(mon, [dict(q_min=-300.0, q_max=900.0)], start=2_000)) == ["q_above_bound"]
    # Rewards seen later widen the range; Munchausen's terms widen it per step.
    mon = monitor(rewards=(0.0, 1.0))
    mon.record_rewards(-1.0, 2.0)
    assert mon.return_range() == (pytest.approx(-100), pytest.approx(200))
    munchausen = health.HealthMonitor(HealthConfig(), gamma=0.99, total_steps=10,
                                      learning_starts=0, bonus_range=(-0.9, 0.03 * np.log(4)))
    munchausen.record_rewards(0.0, 1.0)
    assert munchausen.return_range() == (pytest.approx(-90), pytest.approx(100 + 3 * np.log(4)))
    # Seeds 000/001's red flag on TrackMania's positive rewards: "Q below -10".
    mon = monitor(rewards=(0.0, 1.0), gamma=0.997, q_floor=-10.0)
    assert names(feed(mon, [dict(q_min=-9.0, q_max=20.0), dict(q_min=-12.9, q_max=40.0)])) \
        == ["q_below_floor"]
    # Before any reward is stored there is no auto bound.
    assert feed(monitor(), [dict(q_min=-1e6, q_max=1e6)] * 3) == []


SEED_003_Q_RANGES = [(0.15, 324.56), (-12.91, 1024.10), (-6.48, 1308.56), (-12.89, 1779.30),
                     (-1.55, 1999.62), (-3.37, 15.95)]


def test_q_range_jump_on_seed_003_sequence():
    """Seed 003's reported Q ranges (unclipped rewards): growth up to 6x stays inside, the
    collapse from [-1.55, 2000] to [-3.37, 16] is a 100x jump."""
    mon = monitor()
    steady = [dict(q_min=0.15, q_max=324.56)] * 5
    stream = steady + [dict(q_min=lo, q_max=hi) for lo, hi in SEED_003_Q_RANGES]
    events = feed(mon, stream)
    assert events == [(11_000, "q_range_jump", True)]
    assert mon.raised["q_range_jump"].value == pytest.approx(2001.17 / 19.32, rel=1e-3)


def test_q_range_growth_from_zero_is_no_jump():
    # Q learning CartPole's returns: range 0.1 -> 90 within a window; the auto floor (10% of
    # the return range [0, 100]) makes that a 9x growth at most.
    mon = monitor(rewards=(0.0, 1.0))
    stream = [dict(q_min=0.0, q_max=q) for q in np.geomspace(0.1, 90.0, 20)]
    assert feed(mon, stream) == []
    # A genuine 10x jump past the floor is still seen (returns in [0, 10000]: floor 1000).
    mon = monitor(rewards=(0.0, 100.0))
    stream = [dict(q_min=0.0, q_max=1_000.0)] * 6 + [dict(q_min=0.0, q_max=12_000.0)]
    assert "q_range_jump" in names(feed(mon, stream))


def test_loss_spike_against_running_median():
    rng = np.random.default_rng(0)
    base = [dict(loss=3.0 + 0.3 * rng.standard_normal()) for _ in range(10)]
    mon = monitor()
    assert feed(mon, base + [dict(loss=6.0)]) == []  # 2x: seed 000 calls 3 -> 6 a trend
    mon = monitor()
    events = feed(mon, base + [dict(loss=16.0), dict(loss=3.1)])
    assert events == [(11_000, "loss_spike", True), (12_000, "loss_spike", False)]
    # The window holds the 9 checks of the last 10k steps before this one.
    median = np.median([m["loss"] for m in base[1:]])
    assert mon.history[0]["value"] == pytest.approx(16.0 / median)


def test_trend_checks_wait_for_warmup():
    mon = health.HealthMonitor(HealthConfig(window_steps=10_000, warmup_steps=20_000),
                               gamma=0.99, total_steps=10**7, learning_starts=5_000)
    stream = [dict(loss=1.0)] * 10 + [dict(loss=100.0)]
    assert feed(mon, stream, start=1_000) == []  # last check at 11k < 25k
    mon = health.HealthMonitor(HealthConfig(window_steps=10_000, warmup_steps=20_000),
                               gamma=0.99, total_steps=10**7, learning_starts=5_000)
    assert names(feed(mon, stream, start=20_000)) == ["loss_spike"]  # at 30k


def test_return_decline_slope_t_matches_scipy_and_flags_only_real_declines():
    rng = np.random.default_rng(1)
    x = np.sort(rng.uniform(0, 1e6, 50))
    y = 100 - 2e-5 * x + rng.normal(0, 5, 50)
    slope, t = health.slope_t(x, y)
    reference = stats.linregress(x, y)
    assert slope == pytest.approx(reference.slope)
    assert t == pytest.approx(reference.slope / reference.stderr)

    def run(trend, seed):
        r = np.random.default_rng(seed)
        mon = monitor(return_decline_episodes=500)
        for i in range(500):
            mon.record_episode(1_000 + 100 * i, 100 + trend * i + r.normal(0, 20))
        return [e.name for e in mon.check(51_000, {})]

    # Seeds 000/001: "episode rewards decrease over 500+ episodes" (here 100 -> 50).
    assert run(-0.1, 0) == ["train_return_decline"]
    assert run(+0.1, 0) == []
    # Flat noisy returns: the t threshold 3 keeps false alarms rare (one-sided p ~ 0.0015).
    alarms = sum(bool(run(0.0, seed)) for seed in range(200))
    assert alarms <= 3


def test_eval_return_decline_over_the_last_evaluations():
    mon = monitor(eval_decline_points=5)
    for i, value in enumerate([100, 92, 81, 70, 62]):
        mon.record_eval(10_000 * (i + 1), value)
    assert [e.name for e in mon.check(50_000, {})] == ["eval_return_decline"]
    mon = monitor(eval_decline_points=5)
    for i, value in enumerate([60, 75, 70, 82, 90]):
        mon.record_eval(10_000 * (i + 1), value)
    assert mon.check(50_000, {}) == []


def test_alpha_runaway_seed_004_but_not_the_usual_decay():
    # TQC from alpha 1: falls toward ~0.05 and settles; no flag.
    mon = monitor()
    assert feed(mon, [dict(alpha=a) for a in np.geomspace(1.0, 0.05, 20)]
                + [dict(alpha=0.08)] * 3) == []
    # Seed 004: 0.015 -> 0.22 over 370 rounds.
    mon = monitor()
    events = feed(mon, [dict(alpha=a) for a in np.geomspace(0.015, 0.22, 30)])
    assert names(events) == ["alpha_runaway"]
    assert mon.raised["alpha_runaway"].value > 10


def test_grad_norm_swings_but_not_steady_growth_and_clipping_share():
    # Seed 003's reports alternating 4.8 <-> 8.8: a typical 1.8x swing between intervals.
    mon = monitor()
    events = feed(mon, [dict(grad_norm=g) for g in [4.764, 8.787] * 4])
    assert names(events) == ["grad_norm_swing"]
    assert mon.raised["grad_norm_swing"].value == pytest.approx(8.787 / 4.764)
    # A healthy grad norm growing 30x with the Q scale (1.2x per interval) is no swing, and
    # one outlier interval does not move the median.
    mon = monitor(window_steps=30_000)
    assert feed(mon, [dict(grad_norm=g) for g in np.geomspace(1.0, 30.0, 20)]) == []
    mon = monitor()
    assert feed(mon, [dict(grad_norm=g) for g in [5, 5.2, 5.1, 15, 5.3, 5.2, 5.4]]) == []
    # TQC reports the critic's grad norm.
    mon = monitor()
    assert names(feed(mon, [dict(critic_grad_norm=g) for g in [1, 3] * 4])) \
        == ["grad_norm_swing"]
    mon = monitor()
    assert feed(mon, [dict(clipped_fraction=0.2)] * 8) == []
    mon = monitor()
    assert names(feed(mon, [dict(clipped_fraction=0.6)] * 8)) == ["clipping_high"]


def test_epsilon_early_only_for_a_decaying_schedule():
    # 10M steps: epsilon below 0.5 before 200k steps (2%) is flagged, after is not.
    mon = monitor()
    assert names(feed(mon, [{}], start=60_000, epsilon=0.3)) == ["epsilon_early"]
    assert feed(mon, [{}], start=150_000, epsilon=0.3) == []  # still up: no new event
    assert feed(mon, [{}], start=250_000, epsilon=0.3) == [(250_000, "epsilon_early", False)]
    assert feed(monitor(), [{}], start=60_000, epsilon=0.6) == []
    # Noisy-net presets start epsilon at 0; learners without epsilon pass None.
    assert feed(monitor(epsilon_start=0.0), [{}], start=60_000, epsilon=0.0) == []
    assert feed(monitor(), [{}], start=60_000, epsilon=None) == []


def test_identical_critics_and_stuck_demo_share():
    mon = monitor()
    assert names(feed(mon, [dict(critics_identical_fraction=1.0)])) == ["critics_identical"]
    assert feed(monitor(), [dict(critics_identical_fraction=1 / 80)] * 3) == []
    mon = monitor()
    events = feed(mon, [dict(demo_fraction=0.93)] * 8 + [dict(demo_fraction=0.5)] * 10)
    assert names(events) == ["demo_fraction_stuck"]
    assert names(events, raised=False) == ["demo_fraction_stuck"]


def test_ignored_checks_never_raise_and_restart_clears():
    mon = monitor(ignore=("nonfinite",))
    assert feed(mon, [dict(loss=math.nan)]) == []
    mon = monitor(rewards=(0.0, 0.01))
    feed(mon, [dict(q_min=0.0, q_max=5.0)])
    cleared = mon.restart(2_000)
    assert [(e.name, e.raised) for e in cleared] == [("q_above_bound", False)]
    assert not mon.raised and not mon.diverging()
    summary = json.loads(json.dumps(mon.summary()))
    assert [e["name"] for e in summary["events"]] == ["q_above_bound", "q_above_bound"]
    assert summary["raised"] == []


@pytest.mark.parametrize("field,value", [("on_divergence", "panic"), ("ignore", ("loss",)),
                                         ("window_steps", 0), ("loss_spike_factor", 1.0),
                                         ("q_range_floor", -1.0), ("clipped_share", 0.0),
                                         ("return_decline_episodes", 2), ("max_rollbacks", 0)])
def test_health_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"health.{field}="):
        HealthConfig(**{field: value})


@pytest.mark.parametrize("value", [0, -1, 1.5, "x", True])
def test_health_config_rejects_bad_max_nonfinite(value):
    with pytest.raises(ConfigError, match="must be an integer > 0") as info:
        HealthConfig(max_nonfinite=value)
    assert info.value.field == "health.max_nonfinite" and info.value.value is value
    assert f"health.max_nonfinite={value!r}" in str(info.value)


def test_scale_learning_rates_scales_every_rate():
    config = health.scale_learning_rates(presets.get("tqc"), 0.5)
    assert config.tqc.actor_learning_rate == pytest.approx(1.5e-4)
    assert config.tqc.critic_learning_rate == pytest.approx(1.5e-4)
    assert config.tqc.alpha_learning_rate == pytest.approx(1.5e-4)
    assert config.agent.learning_rate == pytest.approx(0.5 * presets.get("tqc").agent.learning_rate)


def test_metrics_fold_matches_numpy_reductions():
    rng = np.random.default_rng(2)
    calls = [dict(loss=rng.normal(), q_min=rng.normal(), q_max=rng.normal(),
                  learning_rate=rng.uniform()) for _ in range(7)]
    fold = agent_lib.metrics_fold(calls[0])
    for metrics in calls:
        fold = agent_lib.fold_metrics(fold, {k: jnp.float32(v) for k, v in metrics.items()})
    means = agent_lib.fold_means(fold)
    assert means["loss"] == pytest.approx(np.mean([c["loss"] for c in calls]), rel=1e-5)
    assert means["q_min"] == pytest.approx(min(c["q_min"] for c in calls), rel=1e-6)
    assert means["q_max"] == pytest.approx(max(c["q_max"] for c in calls), rel=1e-6)
    assert means["learning_rate"] == pytest.approx(calls[-1]["learning_rate"], rel=1e-6)
    assert agent_lib.fold_means(agent_lib.metrics_fold(calls[0])) == {}
    nan = agent_lib.fold_metrics(fold, dict(calls[0], loss=jnp.float32(np.nan)))
    assert math.isnan(agent_lib.fold_means(nan)["loss"])


def test_metrics_fold_sums_the_nonfinite_step_counts():
    """Skipped grad steps add up over the calls of a log interval; a mean is still a mean."""
    fold = agent_lib.metrics_fold(["loss", "nonfinite_steps"])
    for loss, skipped in [(1.0, 0.0), (3.0, 2.0), (2.0, 1.0)]:
        fold = agent_lib.fold_metrics(fold, dict(loss=jnp.float32(loss),
                                                 nonfinite_steps=jnp.float32(skipped)))
    assert agent_lib.fold_means(fold) == dict(loss=pytest.approx(2.0), nonfinite_steps=3.0)


def test_rollback_restores_the_best_policy_with_lower_learning_rates(tmp_path):
    """A Q bound of 0.5 on CartPole (returns near 10) is crossed as soon as Q learns: each
    crossing rolls back to the best-by-training-return checkpoint (from before learning, Q
    near 0) with the learning rate halved, and the third crossing stops the run (exit 4)."""
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(ROOT / "launch" / "run.py"), "--algo", "dqn", "--env", "CartPole-v1",
         "--env.no-asynchronous", "--env.num-envs", "2", "--total-steps", "3000",
         "--run-dir", str(run_dir), "--network.mlp-hidden", "16", "--network.hidden-dim", "16",
         "--training.learning-starts", "200", "--training.eval-interval", "0",
         "--training.best-train-window", "2", "--logging.log-interval", "50",
         "--logging.no-progress-bar", "--health.q-bound", "0.5", "--health.q-floor", "None",
         "--on-divergence", "rollback", "--health.max-rollbacks", "2"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 4, result.stderr[-3000:]
    assert result.stderr.count("restored the best-by-train checkpoint") == 2
    assert "cannot roll back: health.max_rollbacks=2 used up" in result.stderr
    assert "resume with: python launch/run.py --resume" in result.stderr
    summary = json.loads((run_dir / "health.json").read_text())
    rollbacks = [e for e in summary["events"] if e["name"] == "rollback"]
    assert [r["lr_scale"] for r in rollbacks] == [0.5, 0.25]
    assert summary["raised"] == ["q_above_bound"]
    # The kept counters and the learning rate in the logs carry the rollbacks.
    step = max(int(p.name) for p in (run_dir / "checkpoints").iterdir())
    loop = json.loads((run_dir / "checkpoints" / str(step) / "loop" / "metadata").read_text())
    assert loop["rollbacks"] == 2 and loop["lr_scale"] == 0.25
    # CartPole's reward 1 and the autoreset slots' 0: kept for the Q bounds of a resume.
    assert loop["reward_range"] == [0.0, 1.0]
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    lrs = sorted({round(e.value, 8) for e in acc.Scalars("train/learning_rate")})
    base = presets.get("dqn").agent.learning_rate
    assert lrs == pytest.approx([0.25 * base, 0.5 * base, base])
    flag = [(e.step, e.value) for e in acc.Scalars("health/q_above_bound")]
    assert [v for _, v in flag] == [1.0, 0.0, 1.0, 0.0, 1.0]
    # After each rollback the restored network's Q is back under the bound (cleared), so the
    # restored state is the pre-learning best, not the diverged one.
    q_max = dict((e.step, e.value) for e in acc.Scalars("train/q_max"))
    raised_at = [s for s, v in flag if v == 1.0]
    assert all(q_max[s] > 0.5 for s in raised_at)
