"""Training-health monitor: the red flags the seeds watched by hand, checked online.

Fed once per log interval with the learner's metrics (means over the interval, ``_min`` /
``_max`` as extremes) and with every finished training episode and evaluation. Each check
compares against a threshold of :class:`rl.config.HealthConfig`; a flag is reported once when
raised and once when cleared (:class:`HealthEvent`), and :meth:`HealthMonitor.summary` is the
``health.json`` of a run. Sources of each check, by seed:

- 000/001 (Rainbow on TrackMania, soft target every step, decaying lr, episode epsilon):
  ``q_below_floor`` ("Q-values go negative below -10"), ``loss_spike`` ("loss spikes above
  10"), ``train_return_decline`` ("episode rewards decrease over 500+ episodes"),
  ``epsilon_early`` ("epsilon reaches < 0.5 before episode 10,000").
- 003 (DQN on Tempest, lr 3e-3, tau 0.012, n-step 8): ``q_above_bound`` and ``q_range_jump``
  (range [0, 324] -> [-13, 2000] -> [-3, 16]), ``eval_return_decline`` / the training one
  (negative "DQN5M slope"), ``grad_norm_swing``, ``clipping_high`` (ClipΔ).
- 004 (TQC on TrackMania): ``alpha_runaway`` (0.015 -> 0.22), ``critics_identical``
  (q1 == q2), ``demo_fraction_stuck`` (0.93 throughout).
- All: ``nonfinite`` (NaN / inf in any metric or return, or grad steps the learner skipped
  as non-finite); acted on only after ``max_nonfinite`` checks in a row (:meth:`to_act_on`).

The monitor is plain Python on the host (no jax): the loop hands it floats.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Mapping

import numpy as np

from rl import presets
from rl.config import HEALTH_CHECKS, Config, HealthConfig

DIVERGENCE, WARNING = "divergence", "warning"

SEVERITY = {"nonfinite": DIVERGENCE, "q_above_bound": DIVERGENCE, "q_below_floor": DIVERGENCE,
            "q_range_jump": DIVERGENCE, "loss_spike": DIVERGENCE,
            "train_return_decline": DIVERGENCE, "eval_return_decline": DIVERGENCE,
            "alpha_runaway": DIVERGENCE, "grad_norm_swing": WARNING, "clipping_high": WARNING,
            "epsilon_early": WARNING, "critics_identical": WARNING,
            "demo_fraction_stuck": WARNING}
"""Check name -> divergence (acted on by health.on_divergence) or warning (logged only)."""

MIN_WINDOW_POINTS = 5
"""Log intervals a trend check needs in its window before it can raise."""


@dataclasses.dataclass(frozen=True)
class HealthEvent:
    """A flag raised or cleared at env step ``step``: the measured ``value`` against the
    ``threshold``, and a one-line ``message`` for the console."""

    name: str
    raised: bool
    step: int
    severity: str
    value: float
    threshold: float
    message: str

    def to_dict(self) -> dict:
        """The event as a JSON-ready dict (a health.json ``events`` entry)."""
        return dataclasses.asdict(self)


def _first(metrics: Mapping[str, float], *names: str) -> float | None:
    for name in names:
        if name in metrics:
            return float(metrics[name])
    return None


def _window_mean(previous: list[dict[str, float]], metrics: Mapping[str, float],
                 name: str) -> float | None:
    """Mean of ``name`` over the window's records and this interval's; None when this
    interval lacks it or the window holds fewer than MIN_WINDOW_POINTS of it (the window
    fills only after the warm-up)."""
    values = [m[name] for m in previous if name in m]
    if name not in metrics or len(values) < MIN_WINDOW_POINTS:
        return None
    return float(np.mean(values + [float(metrics[name])]))


def slope_t(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of y on x and its t statistic (slope / standard error).

    Args: x, y: float [n], n >= 3. Returns (slope, t); t is +-inf for a perfect fit and 0 for a
    flat one (no variation in x or y).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(x)
    dx = x - x.mean()
    sxx = float(dx @ dx)
    if n < 3 or sxx == 0.0:
        return 0.0, 0.0
    slope = float(dx @ (y - y.mean())) / sxx
    residual = y - y.mean() - slope * dx
    se = math.sqrt(float(residual @ residual) / (n - 2) / sxx)
    if se == 0.0:
        return slope, 0.0 if slope == 0.0 else math.copysign(math.inf, slope)
    return slope, slope / se


class HealthMonitor:
    """Online red-flag checks over a run (see the module docstring).

    The ``auto`` Q bounds come from the rewards the replay holds (:meth:`record_rewards`):
    no return of rewards in [r_min, r_max] leaves [min(0, r_min), max(0, r_max)] / (1 - gamma),
    so a Q outside that range (widened by q_bound_slack times its width) was not learned from
    the data (seed 000: Q of -40,000 on positive rewards).

    Args:
      config: the health section.
      gamma: the discount.
      bonus_range: (lowest, highest) a target adds per step beside the reward (Munchausen:
        its bonus down to alpha * clip_min, its soft value up to tau * log(num_actions));
        (0, 0) otherwise.
      total_steps: training.total_steps (for epsilon_early).
      learning_starts: env steps before the first grad step; trend checks arm
        ``warmup_steps`` later.
      epsilon_start: the schedule's first epsilon; epsilon_early only applies when it starts
        above epsilon_floor (noisy-net presets start at 0).
      events: earlier events of the run (a resumed health.json), kept in the summary.
    """

    def __init__(self, config: HealthConfig, *, gamma: float, total_steps: int,
                 learning_starts: int, bonus_range: tuple[float, float] = (0.0, 0.0),
                 epsilon_start: float = 1.0, events: list[dict] | None = None):
        self.config = config
        self.gamma, self.bonus_range = gamma, bonus_range
        self.reward_range: tuple[float, float] | None = None
        self.total_steps = total_steps
        self.epsilon_start = epsilon_start
        self.history = list(events or [])
        self.raised: dict[str, HealthEvent] = {}
        self._armed_from = learning_starts + config.warmup_steps
        self._records: collections.deque[tuple[int, dict[str, float]]] = collections.deque()
        self._returns: collections.deque[tuple[int, float]] = collections.deque(
            maxlen=config.return_decline_episodes)
        self._evals: collections.deque[tuple[int, float]] = collections.deque(
            maxlen=config.eval_decline_points)
        self._alpha_min = math.inf
        self._nonfinite_return: float | None = None
        self._nonfinite_run = 0  # checks in a row with the nonfinite flag

    # --- inputs ------------------------------------------------------------------------
    def record_rewards(self, low: float, high: float) -> None:
        """Rewards in [low, high] entered the replay (as stored: scaled and clipped)."""
        if self.reward_range is None:
            self.reward_range = (low, high)
        else:
            self.reward_range = (min(self.reward_range[0], low), max(self.reward_range[1], high))

    def return_range(self) -> tuple[float, float] | None:
        """[lower, upper] of the discounted returns of the rewards seen so far, or None."""
        if self.reward_range is None:
            return None
        horizon = 1.0 / (1.0 - self.gamma)
        low, high = self.reward_range
        return ((min(0.0, low) + self.bonus_range[0]) * horizon,
                (max(0.0, high) + self.bonus_range[1]) * horizon)

    def q_bounds(self) -> tuple[float | None, float | None]:
        """(upper, lower) Q bounds in force: numbers from the config, or for ``auto`` the
        return range widened by q_bound_slack times its width (None before any reward)."""
        cfg, returns = self.config, self.return_range()
        slack = None if returns is None else cfg.q_bound_slack * (returns[1] - returns[0])
        upper = cfg.q_bound if cfg.q_bound != "auto" else \
            None if returns is None else returns[1] + slack
        lower = cfg.q_floor if cfg.q_floor != "auto" else \
            None if returns is None else returns[0] - slack
        return upper, lower

    def q_range_floor(self) -> float:
        """Q ranges below this count as this in q_range_jump: 10% of the return range for
        ``auto`` (1 before any nonzero reward), else the configured number."""
        if self.config.q_range_floor != "auto":
            return self.config.q_range_floor
        returns = self.return_range()
        width = 0.0 if returns is None else returns[1] - returns[0]
        return 0.1 * width if width > 0 else 1.0

    def record_episode(self, step: int, episode_return: float) -> None:
        """A finished training episode at env step ``step``."""
        if not math.isfinite(episode_return):
            self._nonfinite_return = episode_return
        else:
            self._returns.append((step, float(episode_return)))

    def record_eval(self, step: int, mean_return: float) -> None:
        """An evaluation's mean return at env step ``step``."""
        if not math.isfinite(mean_return):
            self._nonfinite_return = mean_return
        else:
            self._evals.append((step, float(mean_return)))

    def record_rollback(self, step: int, restored_step: int, kind: str, lr_scale: float,
                        causes: str) -> None:
        """A rollback at env step ``step`` to the best-by-``kind`` checkpoint of
        ``restored_step``, with the learning rates now ``lr_scale`` times the config's, for
        the flags ``causes``; kept in the summary's events (name "rollback")."""
        self.history.append(dict(name="rollback", step=step, restored_step=restored_step,
                                 kind=kind, lr_scale=lr_scale, causes=causes))

    def restart(self, step: int) -> list[HealthEvent]:
        """Forget the windows (after a rollback the old values describe another network) and
        re-arm the trend checks ``warmup_steps`` from ``step``. Returns the clear events of
        the flags that were raised."""
        cleared = [self._event(flag.name, False, step, flag.value, flag.threshold,
                               "cleared by the rollback") for flag in self.raised.values()]
        self.raised.clear()
        self._records.clear()
        self._returns.clear()
        self._evals.clear()
        self._alpha_min = math.inf
        self._nonfinite_run = 0
        self._armed_from = step + self.config.warmup_steps
        return cleared

    # --- the checks --------------------------------------------------------------------
    def check(self, step: int, metrics: Mapping[str, float],
              epsilon: float | None = None) -> list[HealthEvent]:
        """Run every check at env step ``step`` on this log interval's learner ``metrics``
        (empty before learning starts) and the exploration ``epsilon`` (None for learners
        without one). Returns the flags raised or cleared by this call, in check order."""
        cfg = self.config
        while self._records and self._records[0][0] <= step - cfg.window_steps:
            self._records.popleft()
        armed = step >= self._armed_from
        previous = [m for _, m in self._records]
        results: dict[str, tuple[bool, float, float, str] | None] = {}
        finite = self._check_nonfinite(metrics, results)
        if finite:
            self._check_q(metrics, previous, armed, results)
            self._check_loss(metrics, previous, armed, results)
        self._check_returns(armed, results)
        if finite:
            self._check_alpha(metrics, results)
            self._check_grad_norm(metrics, previous, armed, results)
            self._check_share(previous, metrics, "clipped_fraction", "clipping_high",
                              cfg.clipped_share, results, lambda share: (
                                  f"{100 * share:.0f}% of grad steps were clipped over the "
                                  f"last {cfg.window_steps} env steps (seed 003's ClipΔ); the "
                                  "updates are large: lower the learning rate or raise "
                                  "agent.max_grad_norm"))
        self._check_epsilon(step, epsilon, results)
        if finite:
            identical = _first(metrics, "critics_identical_fraction")
            if identical is not None:
                results["critics_identical"] = (
                    identical > cfg.critics_identical_share, identical,
                    cfg.critics_identical_share,
                    f"{100 * identical:.0f}% of the batch has two critics within 1e-6 (seed "
                    "004: twin critics sharing a seed learn nothing from each other)")
            self._check_share(previous, metrics, "demo_fraction", "demo_fraction_stuck",
                              cfg.demo_fraction_max, results, lambda share: (
                                  f"demonstrations were {100 * share:.0f}% of sampled batches "
                                  f"over the last {cfg.window_steps} env steps (seed 004: stuck "
                                  "at 93%); lower demos.sampling_weight or "
                                  "demos.weight_decay_samples"))
        if finite and metrics and armed:  # the windows hold post-warm-up values only
            self._records.append((step, {k: float(v) for k, v in metrics.items()}))
        return self._transitions(step, results)

    def _check_nonfinite(self, metrics: Mapping[str, float], results: dict) -> bool:
        """The nonfinite flag (metrics, a training return, or grad steps the learner skipped
        as non-finite); returns whether all are finite and none was skipped."""
        bad = {k: v for k, v in metrics.items() if not math.isfinite(float(v))}
        if self._nonfinite_return is not None:
            bad["return"] = self._nonfinite_return
        skipped = float(metrics.get("nonfinite_steps", 0.0))
        flagged = bool(bad) or skipped > 0
        if flagged:
            found = [f"{k}={v}" for k, v in sorted(bad.items())]
            if skipped > 0:
                found.append(f"{skipped:.0f} grad steps skipped (their updates were dropped)")
            results["nonfinite"] = (True, math.nan, 0.0, "non-finite values: " + ", ".join(found))
        else:
            results["nonfinite"] = (False, 0.0, 0.0, "")
        self._nonfinite_return = None
        self._nonfinite_run = self._nonfinite_run + 1 if flagged else 0
        return not flagged

    def _check_q(self, metrics: Mapping[str, float], previous: list[dict], armed: bool,
                 results: dict) -> None:
        """Q above its bound, below its floor, and its range jumping within the window."""
        cfg = self.config
        q_min, q_max = _first(metrics, "q_min"), _first(metrics, "q_max")
        upper, lower = self.q_bounds()
        returns = self.return_range()
        seen = "" if returns is None else \
            f"; returns of the replayed rewards lie in [{returns[0]:.4g}, {returns[1]:.4g}]"
        if q_max is not None and upper is not None:
            results["q_above_bound"] = (
                q_max > upper, q_max, upper,
                f"Q max {q_max:.4g} above the bound {upper:.4g}{seen}: Q is diverging (seed "
                "003); lower the learning rate, slow the target updates")
        if q_min is not None and lower is not None:
            results["q_below_floor"] = (
                q_min < lower, q_min, lower,
                f"Q min {q_min:.4g} below the floor {lower:.4g}{seen}: Q is collapsing (seeds "
                "000/001: soft targets every step with a decaying learning rate)")
        if q_min is None or q_max is None or not armed or len(previous) < MIN_WINDOW_POINTS:
            return
        floor = self.q_range_floor()
        now = max(q_max - q_min, floor)
        ranges = [max(m["q_max"] - m["q_min"], floor) for m in previous
                  if "q_max" in m and "q_min" in m]
        if ranges:
            ratio = max(now / min(ranges), max(ranges) / now)
            results["q_range_jump"] = (
                ratio > cfg.q_range_factor, ratio, cfg.q_range_factor,
                f"Q range [{q_min:.4g}, {q_max:.4g}] changed {ratio:.1f}x within "
                f"{cfg.window_steps} env steps (seed 003's divergence)")

    def _check_loss(self, metrics: Mapping[str, float], previous: list[dict], armed: bool,
                    results: dict) -> None:
        """The loss against its median over the window."""
        cfg = self.config
        loss = _first(metrics, "loss", "critic_loss")
        losses = [v for v in (_first(m, "loss", "critic_loss") for m in previous) if v is not None]
        if loss is not None and armed and len(losses) >= MIN_WINDOW_POINTS:
            median = float(np.median(losses))
            ratio = loss / median if median > 0 else math.inf
            results["loss_spike"] = (
                ratio > cfg.loss_spike_factor, ratio, cfg.loss_spike_factor,
                f"loss {loss:.4g} is {ratio:.1f}x its median {median:.4g} over the last "
                f"{cfg.window_steps} env steps")

    def _check_returns(self, armed: bool, results: dict) -> None:
        """Declining training and evaluation returns, once their windows are full."""
        cfg = self.config
        if armed and len(self._returns) == cfg.return_decline_episodes:
            results["train_return_decline"] = self._decline(
                self._returns, "training return", f"{cfg.return_decline_episodes} episodes")
        if armed and len(self._evals) == cfg.eval_decline_points:
            results["eval_return_decline"] = self._decline(
                self._evals, "evaluation return", f"{cfg.eval_decline_points} evaluations")

    def _check_alpha(self, metrics: Mapping[str, float], results: dict) -> None:
        """The entropy coefficient against its minimum so far."""
        cfg = self.config
        alpha = _first(metrics, "alpha")
        if alpha is None or alpha <= 0:
            return
        self._alpha_min = min(self._alpha_min, alpha)
        ratio = alpha / self._alpha_min
        results["alpha_runaway"] = (
            ratio > cfg.alpha_rise_factor, ratio, cfg.alpha_rise_factor,
            f"entropy coefficient alpha {alpha:.4g} is {ratio:.1f}x its minimum "
            f"{self._alpha_min:.4g} (seed 004: learned alpha ran away; lower "
            "tqc.target_entropy or fix alpha with --tqc.no-learn-alpha)")

    def _check_grad_norm(self, metrics: Mapping[str, float], previous: list[dict],
                         armed: bool, results: dict) -> None:
        """The grad norm's median swing between neighbouring log intervals."""
        cfg = self.config
        norm_key = "grad_norm" if "grad_norm" in metrics else "critic_grad_norm"
        norms = [m[norm_key] for m in previous if norm_key in m]
        if norm_key not in metrics or not armed or len(norms) < MIN_WINDOW_POINTS:
            return
        # A swing is an up-and-down between log intervals, not the steady growth of the
        # grad norm with the Q scale: the median factor between neighbours.
        norms = np.maximum(np.array(norms + [float(metrics[norm_key])]), 1e-12)
        factors = np.exp(np.abs(np.diff(np.log(norms))))
        swing = float(np.median(factors))
        results["grad_norm_swing"] = (
            swing > cfg.grad_norm_swing_factor, swing, cfg.grad_norm_swing_factor,
            f"{norm_key} swings by {swing:.2f}x between log intervals (median over the "
            f"last {cfg.window_steps} env steps; range {norms.min():.3g} to "
            f"{norms.max():.3g}; seed 003's 4.8 <-> 8.8): lower the learning rate")

    @staticmethod
    def _check_share(previous: list[dict], metrics: Mapping[str, float], key: str, flag: str,
                     limit: float, results: dict, message) -> None:
        """A fraction metric's mean over the window against ``limit``; ``message(share)``."""
        share = _window_mean(previous, metrics, key)
        if share is not None:
            results[flag] = (share > limit, share, limit, message(share))

    def _check_epsilon(self, step: int, epsilon: float | None, results: dict) -> None:
        """Epsilon below its floor early in training (episode-based decay)."""
        cfg = self.config
        if epsilon is None or self.epsilon_start <= cfg.epsilon_floor:
            return
        early = cfg.epsilon_floor_fraction * self.total_steps
        results["epsilon_early"] = (
            epsilon < cfg.epsilon_floor and step < early, epsilon, cfg.epsilon_floor,
            f"epsilon {epsilon:.3f} is below {cfg.epsilon_floor} after {step} of "
            f"{self.total_steps} env steps (seeds 000/001: episode-based decay ended "
            "exploration after 1.5% of training; prefer agent.epsilon_unit=steps)")

    def _decline(self, points, what: str, span: str) -> tuple[bool, float, float, str]:
        steps, values = np.array(points, np.float64).T
        slope, t = slope_t(steps, values)
        threshold = -self.config.return_decline_t
        return (t < threshold, t, threshold,
                f"{what} is falling over the last {span}: slope {slope * 1e6:.4g} per 1M env "
                f"steps (t = {t:.1f})")

    def _event(self, name, raised, step, value, threshold, message) -> HealthEvent:
        event = HealthEvent(name, raised, int(step), SEVERITY[name], float(value),
                            float(threshold), message)
        self.history.append(event.to_dict())
        return event

    def _transitions(self, step, results) -> list[HealthEvent]:
        events = []
        for name in HEALTH_CHECKS:
            result = results.get(name)
            if result is None or name in self.config.ignore:
                continue
            bad, value, threshold, message = result
            if bad and name not in self.raised:
                self.raised[name] = self._event(name, True, step, value, threshold, message)
                events.append(self.raised[name])
            elif not bad and name in self.raised:
                del self.raised[name]
                events.append(self._event(name, False, step, value, threshold, "back in band"))
        return events

    def diverging(self) -> bool:
        """Whether a divergence flag is raised now (nonfinite from its first check on)."""
        return any(flag.severity == DIVERGENCE for flag in self.raised.values())

    def to_act_on(self, events: list[HealthEvent]) -> list[HealthEvent]:
        """The divergence flags health.on_divergence acts on after the check (or restart)
        that returned ``events``: the divergence flags raised among them, but nonfinite only
        on the check that makes health.max_nonfinite in a row with it up (then its event of
        when it was raised), as a skipped grad step left the network unharmed."""
        act = [e for e in events if e.raised and e.severity == DIVERGENCE
               and e.name != "nonfinite"]
        flag = self.raised.get("nonfinite")
        if flag is not None and self._nonfinite_run == self.config.max_nonfinite:
            act.insert(0, flag)
        return act

    # --- output ------------------------------------------------------------------------
    def summary(self) -> dict:
        """The run's health.json: thresholds, flags raised now, and every event so far."""
        upper, lower = self.q_bounds()
        return dict(config=dataclasses.asdict(self.config), reward_range=self.reward_range,
                    q_upper=upper, q_lower=lower,
                    raised=sorted(self.raised), events=list(self.history))


def scale_learning_rates(config: Config, factor: float) -> Config:
    """The config with every learning rate times ``factor`` (agent.learning_rate and lr_end;
    TQC's actor, critic and alpha rates): what a rollback with health.rollback_lr_factor
    applies. The optimizer states keep their structure, so a train state fits either."""
    agent, tqc = config.agent, config.tqc
    return presets.replace(
        config, agent=dict(learning_rate=agent.learning_rate * factor,
                           lr_end=agent.lr_end * factor),
        tqc=dict(actor_learning_rate=tqc.actor_learning_rate * factor,
                 critic_learning_rate=tqc.critic_learning_rate * factor,
                 alpha_learning_rate=tqc.alpha_learning_rate * factor))
