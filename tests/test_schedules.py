"""Exploration, PER beta and learning-rate schedules against closed-form numbers."""

import math

import numpy as np
import pytest

from rl import schedules
from rl.config import AgentConfig, ReplayConfig

BIG = 10**12  # total_steps far beyond every step used, where the BTR switch-off must not act


# --- epsilon ------------------------------------------------------------------------------

def test_epsilon_exponential_closed_form():
    agent = AgentConfig(epsilon_schedule="exponential", epsilon_start=1.0, epsilon_end=0.01,
                        epsilon_decay_steps=2_000_000, epsilon_off_fraction=None)
    # end + (start - end) * exp(-t / T): t = 0 -> 1; t = T/2 -> 0.01 + 0.99 e^-0.5;
    # t = T -> 0.01 + 0.99 e^-1; t = 10 T -> 0.01 + 0.99 e^-10.
    cases = {0: 1.0,
             1_000_000: 0.01 + 0.99 * 0.6065306597126334,
             2_000_000: 0.01 + 0.99 * 0.36787944117144233,
             20_000_000: 0.01 + 0.99 * 4.5399929762484854e-05}
    for t, expected in cases.items():
        np.testing.assert_allclose(schedules.epsilon(agent, t, BIG), expected, rtol=1e-12)
    np.testing.assert_allclose(schedules.epsilon(agent, 2_000_000, BIG), 0.3742006467597279,
                               rtol=1e-12)


def test_epsilon_exponential_uses_start_and_end():
    agent = AgentConfig(epsilon_schedule="exponential", epsilon_start=0.5, epsilon_end=0.1,
                        epsilon_decay_steps=100, epsilon_off_fraction=None)
    # 0.1 + 0.4 * exp(-2) at t = 200.
    np.testing.assert_allclose(schedules.epsilon(agent, 200, BIG), 0.1 + 0.4 * math.exp(-2),
                               rtol=1e-12)
    assert schedules.epsilon(agent, 0, BIG) == pytest.approx(0.5)


def test_epsilon_linear_closed_form():
    agent = AgentConfig(epsilon_schedule="linear", epsilon_start=1.0, epsilon_end=0.01,
                        epsilon_decay_steps=2_500_000, epsilon_off_fraction=None)
    # 1 + (0.01 - 1) * t / 2.5M: 0.2 of the way -> 1 - 0.198 = 0.802; half -> 0.505;
    # at and after 2.5M -> 0.01.
    cases = {0: 1.0, 500_000: 0.802, 1_250_000: 0.505, 2_500_000: 0.01, 2_500_001: 0.01,
             10_000_000: 0.01}
    for t, expected in cases.items():
        np.testing.assert_allclose(schedules.epsilon(agent, t, BIG), expected, rtol=1e-12)


def test_epsilon_linear_can_rise():
    # start < end is allowed and interpolates the same way.
    agent = AgentConfig(epsilon_schedule="linear", epsilon_start=0.0, epsilon_end=0.4,
                        epsilon_decay_steps=10, epsilon_off_fraction=None)
    np.testing.assert_allclose(schedules.epsilon(agent, 5, BIG), 0.2, rtol=1e-12)
    np.testing.assert_allclose(schedules.epsilon(agent, 50, BIG), 0.4, rtol=1e-12)


@pytest.mark.parametrize("after, value", [("zero", 0.0), ("end", 0.01)])
def test_epsilon_cutoff(after, value):
    agent = AgentConfig(epsilon_schedule="linear", epsilon_start=1.0, epsilon_end=0.01,
                        epsilon_decay_steps=2_500_000, epsilon_cutoff=1_000_000,
                        epsilon_after_cutoff=after, epsilon_off_fraction=None)
    # Just before the cutoff the linear decay still runs: 1 - 0.99 * 999_999 / 2.5M.
    np.testing.assert_allclose(schedules.epsilon(agent, 999_999, BIG),
                               1.0 - 0.99 * 999_999 / 2_500_000, rtol=1e-12)
    assert schedules.epsilon(agent, 1_000_000, BIG) == value
    assert schedules.epsilon(agent, 30_000_000, BIG) == value


def test_epsilon_cutoff_zero_at_step_zero():
    agent = AgentConfig(epsilon_cutoff=0, epsilon_after_cutoff="zero", epsilon_off_fraction=None)
    assert schedules.epsilon(agent, 0, BIG) == 0.0


def test_epsilon_btr_switch_off_at_fraction_of_training():
    agent = AgentConfig()  # BTR: exponential 1 -> 0.01 over 2M, off at half of training
    assert agent.epsilon_off_fraction == 0.5
    total = 3_000_000
    # Just before 1.5M the exponential decay still applies.
    np.testing.assert_allclose(schedules.epsilon(agent, 1_499_999, total),
                               0.01 + 0.99 * math.exp(-1_499_999 / 2_000_000), rtol=1e-12)
    assert schedules.epsilon(agent, 1_500_000, total) == 0.0
    assert schedules.epsilon(agent, 2_900_000, total) == 0.0
    # The switch-off overrides an "end" cutoff too.
    cut = AgentConfig(epsilon_cutoff=100, epsilon_after_cutoff="end")
    assert schedules.epsilon(cut, 1_499_999, total) == pytest.approx(0.01)
    assert schedules.epsilon(cut, 1_500_000, total) == 0.0


def test_epsilon_switch_off_fraction_one_never_acts_during_training():
    agent = AgentConfig(epsilon_off_fraction=1.0, epsilon_schedule="linear",
                        epsilon_decay_steps=100)
    assert schedules.epsilon(agent, 999, 1000) == pytest.approx(0.01)
    assert schedules.epsilon(agent, 1000, 1000) == 0.0


def test_epsilon_unit_episodes_ignores_env_step():
    agent = AgentConfig(epsilon_unit="episodes", epsilon_schedule="linear", epsilon_start=1.0,
                        epsilon_end=0.01, epsilon_decay_steps=100, epsilon_off_fraction=None)
    # 25 of 100 episodes: 1 - 0.99 * 0.25 = 0.7525, whatever the env step.
    for env_step in (0, 10, 5_000_000):
        np.testing.assert_allclose(schedules.epsilon(agent, env_step, BIG, episodes=25), 0.7525,
                                   rtol=1e-12)
    # A huge env step with no finished episode keeps the start value.
    assert schedules.epsilon(agent, 5_000_000, BIG, episodes=0) == 1.0
    assert schedules.epsilon(agent, 0, BIG, episodes=100) == pytest.approx(0.01)

    expo = AgentConfig(epsilon_unit="episodes", epsilon_decay_steps=50,
                       epsilon_off_fraction=None)
    np.testing.assert_allclose(schedules.epsilon(expo, 9_999_999, BIG, episodes=50),
                               0.01 + 0.99 * math.exp(-1), rtol=1e-12)


def test_epsilon_cutoff_in_episodes():
    agent = AgentConfig(epsilon_unit="episodes", epsilon_schedule="linear",
                        epsilon_decay_steps=100, epsilon_cutoff=40,
                        epsilon_after_cutoff="zero", epsilon_off_fraction=None)
    # The cutoff counts episodes, not env steps.
    np.testing.assert_allclose(schedules.epsilon(agent, 10**9, BIG, episodes=39),
                               1.0 - 0.99 * 0.39, rtol=1e-12)
    assert schedules.epsilon(agent, 0, BIG, episodes=40) == 0.0


def test_epsilon_episodes_still_switched_off_by_env_steps():
    # The BTR switch-off is defined on env steps, whatever epsilon_unit counts.
    agent = AgentConfig(epsilon_unit="episodes", epsilon_off_fraction=0.5)
    assert schedules.epsilon(agent, 500, 1000, episodes=0) == 0.0
    assert schedules.epsilon(agent, 499, 1000, episodes=0) == 1.0


# --- PER beta -----------------------------------------------------------------------------

def test_importance_exponent_linear():
    replay = ReplayConfig(importance_exponent_start=0.4, importance_exponent_schedule="linear")
    total = 2_000_000
    assert schedules.importance_exponent(replay, 0, total) == pytest.approx(0.4)
    # Midpoint: 0.4 + 0.6 * 0.5 = 0.7; a quarter: 0.55.
    np.testing.assert_allclose(schedules.importance_exponent(replay, 1_000_000, total), 0.7,
                               rtol=1e-12)
    np.testing.assert_allclose(schedules.importance_exponent(replay, 500_000, total), 0.55,
                               rtol=1e-12)
    assert schedules.importance_exponent(replay, total, total) == 1.0  # exactly
    assert schedules.importance_exponent(replay, total + 1, total) == 1.0
    assert schedules.importance_exponent(replay, 10 * total, total) == 1.0
    # grad_steps do not matter for the linear schedule.
    assert schedules.importance_exponent(replay, 1_000_000, total, grad_steps=10**6) == \
        schedules.importance_exponent(replay, 1_000_000, total)


@pytest.mark.parametrize("start", [0.0, 0.3, 0.4, 0.45, 0.7, 1.0])
def test_importance_exponent_linear_reaches_exactly_one(start):
    replay = ReplayConfig(importance_exponent_start=start)
    for total in (1, 3, 7, 2_000_000, 10_000_000):
        assert schedules.importance_exponent(replay, total, total) == 1.0
        assert schedules.importance_exponent(replay, total * 5, total) == 1.0
        assert schedules.importance_exponent(replay, total - 1, total) <= 1.0


def test_importance_exponent_increment():
    replay = ReplayConfig(importance_exponent_start=0.4,
                          importance_exponent_schedule="increment",
                          importance_exponent_increment=0.001)
    assert schedules.importance_exponent(replay, 123, 1000, grad_steps=0) == pytest.approx(0.4)
    # 0.4 + 0.001 * 300 = 0.7, independent of env steps.
    for env_step in (0, 999, 10**9):
        np.testing.assert_allclose(
            schedules.importance_exponent(replay, env_step, 1000, grad_steps=300), 0.7,
            rtol=1e-12)
    # 0.4 + 0.001 * 600 = 1 and beyond: capped at exactly 1.
    assert schedules.importance_exponent(replay, 0, 1000, grad_steps=600) == 1.0
    assert schedules.importance_exponent(replay, 0, 1000, grad_steps=601) == 1.0
    assert schedules.importance_exponent(replay, 0, 1000, grad_steps=10_000) == 1.0
    np.testing.assert_allclose(
        schedules.importance_exponent(replay, 0, 1000, grad_steps=599), 0.999, rtol=1e-12)


# --- learning rate --------------------------------------------------------------------------

def _lr(agent, steps):
    schedule = schedules.learning_rate(agent)
    return np.array([float(schedule(t)) for t in steps])


def test_learning_rate_constant():
    agent = AgentConfig(learning_rate=3e-4, lr_schedule="constant")
    np.testing.assert_allclose(_lr(agent, [0, 1, 10**6, 10**8]), [3e-4] * 4, rtol=1e-6)


def test_learning_rate_linear():
    agent = AgentConfig(learning_rate=1e-3, lr_end=1e-5, lr_schedule="linear",
                        lr_decay_steps=1000)
    # 1e-3 + (1e-5 - 1e-3) * t / 1000: t = 500 -> 5.05e-4; held at 1e-5 afterwards.
    np.testing.assert_allclose(_lr(agent, [0, 250, 500, 1000, 2000]),
                               [1e-3, 7.525e-4, 5.05e-4, 1e-5, 1e-5], rtol=1e-5)


def test_learning_rate_cosine():
    lr, end, T = 1e-3, 1e-5, 1000
    agent = AgentConfig(learning_rate=lr, lr_end=end, lr_schedule="cosine", lr_decay_steps=T)
    steps = [0, 100, 250, 500, 750, 1000, 3000]
    expected = [end + (lr - end) * 0.5 * (1 + math.cos(math.pi * min(t, T) / T)) for t in steps]
    # Hand values: t = 250 -> 1e-5 + 9.9e-4 * 0.5 * (1 + 1/sqrt 2); t = 500 -> 5.05e-4.
    assert expected[3] == pytest.approx(5.05e-4)
    assert expected[2] == pytest.approx(1e-5 + 9.9e-4 * 0.5 * (1 + 2**-0.5))
    np.testing.assert_allclose(_lr(agent, steps), expected, rtol=1e-5)


def test_learning_rate_exponential():
    lr, end, T = 1e-3, 1e-5, 1000
    agent = AgentConfig(learning_rate=lr, lr_end=end, lr_schedule="exponential",
                        lr_decay_steps=T)
    # lr * (end / lr) ** (t / T): t = T/2 -> 1e-3 * 0.1 = 1e-4; t = T/4 -> 1e-3 * 0.01**0.25.
    np.testing.assert_allclose(_lr(agent, [0, 250, 500]),
                               [1e-3, 1e-3 * 0.01**0.25, 1e-4], rtol=1e-5)
    # Reaches lr_end at T and is held there (not decayed further).
    np.testing.assert_allclose(_lr(agent, [1000, 1500, 10_000, 10**6]), [1e-5] * 4, rtol=1e-5)


def test_learning_rate_exponential_linesight_numbers():
    # linesight_a01: 1e-3 -> 5e-5 over 187,500 updates.
    agent = AgentConfig(learning_rate=1e-3, lr_end=5e-5, lr_schedule="exponential",
                        lr_decay_steps=187_500)
    np.testing.assert_allclose(_lr(agent, [93_750, 187_500]),
                               [1e-3 * 0.05**0.5, 5e-5], rtol=1e-5)


def test_learning_rate_warmup_then_linear_decay():
    agent = AgentConfig(learning_rate=1e-3, lr_end=1e-5, lr_schedule="linear",
                        lr_decay_steps=1000, lr_warmup_steps=100)
    # Warm-up: 1e-3 * t / 100; then the linear decay counted from t = 100.
    steps = [0, 25, 50, 100, 600, 1100, 5000]
    expected = [0.0, 2.5e-4, 5e-4, 1e-3, 5.05e-4, 1e-5, 1e-5]
    np.testing.assert_allclose(_lr(agent, steps), expected, rtol=1e-5, atol=1e-12)


def test_learning_rate_warmup_then_cosine_and_constant():
    lr, end, T, W = 2e-4, 2e-6, 400, 40
    cosine = AgentConfig(learning_rate=lr, lr_end=end, lr_schedule="cosine", lr_decay_steps=T,
                         lr_warmup_steps=W)
    steps = [0, 10, 40, 140, 240, 440, 1000]
    expected = [0.0, lr / 4, lr]
    expected += [end + (lr - end) * 0.5 * (1 + math.cos(math.pi * min(t - W, T) / T))
                 for t in steps[3:]]
    np.testing.assert_allclose(_lr(cosine, steps), expected, rtol=1e-5, atol=1e-12)

    constant = AgentConfig(learning_rate=lr, lr_schedule="constant", lr_warmup_steps=W)
    np.testing.assert_allclose(_lr(constant, [0, 20, 40, 10**6]), [0.0, lr / 2, lr, lr],
                               rtol=1e-5, atol=1e-12)
