"""Schedules: exploration, PER beta, the demo sampling weight and the expert ratio on the host
(from the loop's counters), learning rate as an optax schedule of optimizer updates (inside the
jitted learner)."""

from __future__ import annotations

import math

import optax

from rl.config import AgentConfig, DemoConfig, ExpertConfig, ReplayConfig


def epsilon(agent: AgentConfig, env_step: int, total_steps: int, episodes: int = 0) -> float:
    """Exploration epsilon (BTR schedule by default).

    t is ``env_step`` (epsilon_unit steps) or ``episodes`` (finished episodes).
    exponential: end + (start - end) * exp(-t / decay_steps) (BTR: 1 -> 0.01, 2M steps);
    linear: start -> end over decay_steps, then end. From ``epsilon_cutoff`` on (t units) it is
    0 or end (``epsilon_after_cutoff``); from ``epsilon_off_fraction * total_steps`` env steps
    on it is 0 (BTR switches epsilon-greedy off at half of training).

    Args:
      agent: the agent config; env_step, total_steps: env steps; episodes: finished episodes.
    Returns a float in [0, 1].
    """
    if agent.epsilon_off_fraction is not None and env_step >= agent.epsilon_off_fraction * total_steps:
        return 0.0
    start, end = agent.epsilon_start, agent.epsilon_end
    t = env_step if agent.epsilon_unit == "steps" else episodes
    if agent.epsilon_cutoff is not None and t >= agent.epsilon_cutoff:
        return 0.0 if agent.epsilon_after_cutoff == "zero" else end
    if agent.epsilon_schedule == "exponential":
        return end + (start - end) * math.exp(-t / agent.epsilon_decay_steps)
    return start + (end - start) * min(1.0, t / agent.epsilon_decay_steps)


def importance_exponent(replay: ReplayConfig, env_step: int, total_steps: int,
                        grad_steps: int = 0) -> float:
    """PER beta (Schaul et al. 2016): linear from importance_exponent_start to exactly 1 at
    total_steps env steps, or (increment) start + increment * grad_steps capped at 1 (seed
    000: beta 0.4, +0.001 per grad step)."""
    start = replay.importance_exponent_start
    if replay.importance_exponent_schedule == "increment":
        return min(1.0, start + replay.importance_exponent_increment * grad_steps)
    return start + (1.0 - start) * min(1.0, env_step / total_steps)


def demo_sampling_weight(demos: DemoConfig, collected: int) -> float:
    """Demo sampling weight after ``collected`` env steps of the agent's own (seed 004 C):
    ``1 + (w0 - 1) * (1 - min(1, collected / weight_decay_samples))``, w0 = sampling_weight."""
    w0 = demos.sampling_weight
    return 1.0 + (w0 - 1.0) * (1.0 - min(1.0, collected / demos.weight_decay_samples))


def expert_ratio(expert: ExpertConfig, env_step: int, floor_raise: dict | None = None) -> float:
    """Probability that the expert takes an env step (or drives an episode) at ``env_step``
    (seed 003's curriculum: 0.95 falling to a 0.10 floor).

    linear: ``start + (floor - start) * min(1, t / decay_steps)``; exponential: ``floor +
    (start - floor) * exp(-t / decay_steps)``. Inside a raised-floor window
    (:func:`expert_floor_raise`), at least the raised floor. 0 with ``expert.kind`` none.

    Args:
      expert: the expert config; env_step: env steps so far (t).
      floor_raise: the window ``{"floor", "steps", "start"}`` or None.
    Returns a float in [0, 1].
    """
    if expert.kind == "none":
        return 0.0
    start, floor, t = expert.ratio_start, expert.ratio_floor, env_step
    if expert.ratio_schedule == "exponential":
        ratio = floor + (start - floor) * math.exp(-t / expert.ratio_decay_steps)
    else:
        ratio = start + (floor - start) * min(1.0, t / expert.ratio_decay_steps)
    if floor_raise is not None and \
            floor_raise["start"] <= t < floor_raise["start"] + floor_raise["steps"]:
        ratio = max(ratio, floor_raise["floor"])
    return ratio


def expert_floor_raise(expert: ExpertConfig, previous: dict | None, env_step: int
                       ) -> dict | None:
    """The raised-floor window in force for a run (re)starting at ``env_step``.

    A window ``{"floor", "steps", "start"}`` is kept in the run's checkpoints. A config whose
    ``floor_raise`` / ``floor_raise_steps`` match the saved window continues it (resuming
    again does not restart the clock); new values start a window at ``env_step`` (``--resume
    RUN --expert.floor-raise 0.2``); ``floor_raise`` None ends it.
    """
    if expert.floor_raise is None:
        return None
    wanted = dict(floor=float(expert.floor_raise), steps=int(expert.floor_raise_steps))
    if previous is not None and all(previous.get(k) == v for k, v in wanted.items()):
        return previous
    return dict(wanted, start=int(env_step))


def learning_rate(agent: AgentConfig) -> optax.Schedule:
    """The learning rate as a function of optimizer updates (an optax schedule).

    constant: learning_rate. linear / cosine / exponential: from learning_rate to lr_end over
    lr_decay_steps updates, then lr_end (optax.linear_schedule, cosine_decay_schedule,
    exponential_decay with rate lr_end / learning_rate per lr_decay_steps). With
    lr_warmup_steps > 0 a linear warm-up from 0 comes first (optax.join_schedules).
    """
    lr, end, steps = agent.learning_rate, agent.lr_end, agent.lr_decay_steps
    if agent.lr_schedule == "constant":
        decay = optax.constant_schedule(lr)
    elif agent.lr_schedule == "linear":
        decay = optax.linear_schedule(lr, end, steps)
    elif agent.lr_schedule == "cosine":
        decay = optax.cosine_decay_schedule(lr, steps, alpha=end / lr)
    else:
        decay = optax.exponential_decay(lr, steps, decay_rate=end / lr, end_value=end)
    if agent.lr_warmup_steps == 0:
        return decay
    warmup = optax.linear_schedule(0.0, lr, agent.lr_warmup_steps)
    return optax.join_schedules([warmup, decay], [agent.lr_warmup_steps])
