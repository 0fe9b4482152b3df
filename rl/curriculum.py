"""Expert curriculum on the host (seed 003): who takes each env step, and the episode-return
statistics that showed when the agent, on its own, stopped improving.

Host-only numpy. :class:`ExpertMixer` draws the expert's steps at the ratio of
:func:`rl.schedules.expert_ratio`; :class:`ReturnStats` splits finished episodes into agent-only
ones (no expert step) and mixed ones, and keeps their means and slopes over two windows of env
steps (seed 003's "DQN1M", "DQN5M" and "DQN5M slope") and the reward slope over the last
episodes ("RwdSlope"); :func:`summary_line` is the one-line console status of a run.
"""

from __future__ import annotations

import collections
import math

import numpy as np

from rl.health import slope_t

__all__ = ["ExpertMixer", "ReturnStats", "format_steps", "summary_line"]

SLOPE_UNIT = 1_000_000
"""Return slopes against env steps are given per this many env steps (per million)."""


def format_steps(steps: float) -> str:
    """A step count the way the seeds write it: 1M, 2.5M, 25k, 500."""
    for unit, suffix in ((1_000_000, "M"), (1_000, "k")):
        if abs(steps) >= unit:
            return f"{steps / unit:.3g}{suffix}"
    return f"{steps:.3g}"


class ExpertMixer:
    """Draws which envs the expert drives at each vector step.

    step mode: each valid env step is the expert's with probability ``ratio``, independently.
    episode mode: the driver of a whole episode is drawn at its first step (episode step 0)
    and kept to its end.

    Args:
      num_envs: E; mode: ``"step"`` or ``"episode"`` (``expert.mode``); seed: of the draws.

    Raises:
      ValueError: another mode.
    """

    def __init__(self, num_envs: int, mode: str, seed: int):
        if mode not in ("step", "episode"):
            raise ValueError(f"mode must be 'step' or 'episode', got {mode!r}")
        self.mode = mode
        self._rng = np.random.default_rng(seed)
        self._driver = np.zeros(num_envs, bool)

    def choose(self, ratio: float, steps_since_start: np.ndarray, step_valid: np.ndarray
               ) -> np.ndarray:
        """bool [E]: the envs whose next step the expert takes.

        Args:
          ratio: probability of an expert step (episode) in [0, 1].
          steps_since_start: int [E], episode step of each env's current frame (0 at a reset).
          step_valid: bool [E], False where the next step is an autoreset (never the expert's).
        """
        draws = self._rng.random(len(step_valid)) < ratio
        if self.mode == "step":
            return draws & step_valid
        starting = step_valid & (np.asarray(steps_since_start) == 0)
        self._driver = np.where(starting, draws, self._driver)
        return self._driver & step_valid


class ReturnStats:
    """Episode returns split by driver, with windowed means and slopes.

    An episode is agent-only when none of its steps was the expert's, mixed otherwise. For each
    kind and each window W of ``windows`` (env steps), over the episodes that ended in the last
    W env steps: the mean return and the least-squares slope of return against the env step at
    which each episode ended, in return per million env steps (needs 3 episodes). The reward
    slope is the least-squares slope of the last ``slope_episodes`` returns (all episodes)
    against their index, in return per episode.

    Args:
      num_envs: E; windows: (short, long) env steps; slope_episodes: >= 3.
    """

    KINDS = ("agent_only", "mixed")

    def __init__(self, num_envs: int, windows: tuple[int, int] = (1_000_000, 5_000_000),
                 slope_episodes: int = 20):
        self.windows = tuple(windows)
        self._episode_steps = np.zeros(num_envs, np.int64)
        self._episode_expert = np.zeros(num_envs, np.int64)
        self._interval = np.zeros(2, np.int64)  # [valid steps, expert steps] since last read
        self._episodes = {kind: collections.deque() for kind in self.KINDS}
        self._recent: collections.deque[float] = collections.deque(maxlen=slope_episodes)

    def record_step(self, is_expert: np.ndarray, valid: np.ndarray) -> None:
        """Count one vector step: ``is_expert``, ``valid`` bool [E] (autoreset steps are not
        steps of any episode)."""
        valid = np.asarray(valid, bool)
        expert = np.asarray(is_expert, bool) & valid
        self._episode_steps += valid
        self._episode_expert += expert
        self._interval += (int(valid.sum()), int(expert.sum()))

    def record_episode(self, env_index: int, env_step: int, return_: float) -> tuple[bool, float]:
        """File the episode of env ``env_index`` that ended at ``env_step`` (after its last
        :meth:`record_step`). Returns (agent_only, expert share of its steps in [0, 1])."""
        steps = int(self._episode_steps[env_index])
        expert = int(self._episode_expert[env_index])
        self._episode_steps[env_index] = self._episode_expert[env_index] = 0
        agent_only = expert == 0
        kind = self._episodes["agent_only" if agent_only else "mixed"]
        kind.append((int(env_step), float(return_)))
        while kind and kind[0][0] <= env_step - self.windows[-1]:
            kind.popleft()
        self._recent.append(float(return_))
        return agent_only, expert / max(steps, 1)

    def expert_step_share(self) -> float | None:
        """Share of the valid env steps since the last call that the expert took; None if
        there were none."""
        steps, expert = self._interval
        self._interval[:] = 0
        return None if steps == 0 else float(expert) / float(steps)

    def window(self, kind: str, env_step: int, steps: int) -> tuple[int, float, float]:
        """(count, mean return, slope per million env steps) of the ``kind`` episodes that
        ended in the last ``steps`` env steps before ``env_step``; NaN mean without episodes,
        NaN slope with fewer than 3."""
        recent = [(s, r) for s, r in self._episodes[kind] if s > env_step - steps]
        if not recent:
            return 0, math.nan, math.nan
        x, y = np.asarray(recent, np.float64).T
        slope = slope_t(x, y)[0] * SLOPE_UNIT if len(recent) >= 3 else math.nan
        return len(recent), float(y.mean()), slope

    def reward_slope(self) -> float:
        """Least-squares slope of the last ``slope_episodes`` returns against their index
        (return per episode); NaN with fewer than 3 episodes."""
        if len(self._recent) < 3:
            return math.nan
        return slope_t(np.arange(len(self._recent)), np.asarray(self._recent))[0]

    def scalars(self, env_step: int) -> dict[str, float]:
        """TensorBoard scalars at ``env_step`` (NaN ones left out): ``returns/<kind>_mean_<W>``,
        ``returns/<kind>_slope_<W>`` (per million env steps), ``returns/<kind>_episodes_<W>``
        for both kinds and windows (W as 1M, 5M, 25k...), and
        ``returns/reward_slope_<n>ep``."""
        out = {}
        for kind in self.KINDS:
            for steps in self.windows:
                count, mean, slope = self.window(kind, env_step, steps)
                w = format_steps(steps)
                out.update({f"returns/{kind}_episodes_{w}": float(count),
                            f"returns/{kind}_mean_{w}": mean,
                            f"returns/{kind}_slope_{w}": slope})
        out[f"returns/reward_slope_{self._recent.maxlen}ep"] = self.reward_slope()
        return {k: v for k, v in out.items() if not math.isnan(v)}


def summary_line(env_step: int, total_steps: int, scalars: dict[str, float],
                 windows: tuple[int, int], target_update_period: int | None = None) -> str:
    """Seed 003's status line from a log interval's TensorBoard scalars: env steps, expert
    ratio (and the share it took), agent-only and mixed return means over both windows with
    the long window's slope, reward slope, Q range, loss, grad norm, clip ratio (ClipΔ) and
    target age (optimizer updates since the last hard copy, out of ``target_update_period``).
    Parts whose scalars are missing are left out."""
    get = scalars.get
    parts = [f"step {format_steps(env_step)}/{format_steps(total_steps)}"]
    if get("expert/ratio") is not None:
        took = get("expert/step_share")
        parts.append(f"expert {100 * get('expert/ratio'):.0f}%"
                     + ("" if took is None else f" (took {100 * took:.0f}%)"))
    short, long = (format_steps(w) for w in windows)
    for kind, label in (("agent_only", "agent-only"), ("mixed", "mixed")):
        means = [(w, get(f"returns/{kind}_mean_{w}")) for w in (short, long)]
        if all(m is None for _, m in means):
            continue
        text = " ".join(f"R{w} {m:.1f}" for w, m in means if m is not None)
        slope = get(f"returns/{kind}_slope_{long}")
        if slope is not None:
            text += f" slope{long} {slope:+.3g}/M"
        text += f" (n={get(f'returns/{kind}_episodes_{long}', 0):.0f})"
        parts.append(f"{label} {text}")
    reward_slope = next((v for k, v in scalars.items() if k.startswith("returns/reward_slope_")),
                        None)
    if reward_slope is not None:
        parts.append(f"rwd slope {reward_slope:+.3g}/ep")
    if get("train/q_min") is not None and get("train/q_max") is not None:
        parts.append(f"Q [{get('train/q_min'):.4g}, {get('train/q_max'):.4g}]")
    loss = get("train/loss", get("train/critic_loss"))
    if loss is not None:
        parts.append(f"loss {loss:.4g}")
    grad = get("train/grad_norm", get("train/critic_grad_norm"))
    if grad is not None:
        text = f"grad {grad:.4g}"
        if get("train/clip_ratio") is not None:
            text += f" clipΔ {get('train/clip_ratio'):.3f}"
        parts.append(text)
    if get("train/target_age") is not None:
        age = format_steps(get("train/target_age"))
        parts.append(f"target age {age}" + (f"/{format_steps(target_update_period)}"
                                            if target_update_period else ""))
    return " | ".join(parts)
