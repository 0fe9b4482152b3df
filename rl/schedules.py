"""Schedules driven by the env-step counter (host-side floats, logged every interval)."""

from __future__ import annotations

import math

from rl.config import AgentConfig, ReplayConfig


def epsilon(agent: AgentConfig, env_step: int, total_steps: int) -> float:
    """Exploration epsilon at an env step (BTR schedule by default).

    exponential: end + (start - end) * exp(-t / decay_steps) (BTR: 1 -> 0.01, 2M steps);
    linear: start -> end over decay_steps, then end. Zero from ``epsilon_off_fraction *
    total_steps`` on (BTR switches epsilon-greedy off at half of training).
    """
    if agent.epsilon_off_fraction is not None and env_step >= agent.epsilon_off_fraction * total_steps:
        return 0.0
    start, end, t = agent.epsilon_start, agent.epsilon_end, env_step
    if agent.epsilon_schedule == "exponential":
        return end + (start - end) * math.exp(-t / agent.epsilon_decay_steps)
    return start + (end - start) * min(1.0, t / agent.epsilon_decay_steps)


def importance_exponent(replay: ReplayConfig, env_step: int, total_steps: int) -> float:
    """PER beta, annealed linearly from importance_exponent_start to 1 over training
    (Schaul et al. 2016)."""
    frac = min(1.0, env_step / total_steps)
    return replay.importance_exponent_start + (1.0 - replay.importance_exponent_start) * frac
