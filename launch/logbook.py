"""What a run shows: TensorBoard (and W&B) scalars, the progress bar, the console status
line, episode returns, and the throughput of actor and learner over each log interval."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import tqdm

import envs
from launch.actor import VectorStep
from launch.wandb_log import RunWriter
from rl import config as config_lib
from rl import curriculum
from rl.config import Config

log = logging.getLogger("launch")


@dataclasses.dataclass
class Clocks:
    """Cumulative counters of a run since this process started: env and grad steps, and
    seconds the learner spent in update calls (busy) and waiting for the actor's data, the
    actor waiting for the env workers and for the learner or the queue."""

    env_steps: int = 0
    grad_steps: int = 0
    learner_busy: float = 0.0
    learner_wait: float = 0.0
    env_wait: float = 0.0
    actor_wait: float = 0.0


class PerfWindow:
    """perf/ scalars over a log interval from two readings of :class:`Clocks`."""

    def __init__(self, clocks: Clocks):
        self._time, self._last = time.perf_counter(), dataclasses.replace(clocks)

    def scalars(self, clocks: Clocks, batch_size: int) -> dict[str, float]:
        """perf/ rates and time shares since the last call (the interval's wall time)."""
        now = time.perf_counter()
        elapsed, last = max(now - self._time, 1e-9), self._last
        env = clocks.env_steps - last.env_steps
        grad = clocks.grad_steps - last.grad_steps
        out = {"perf/env_steps_per_sec": env / elapsed,
               "perf/grad_steps_per_sec": grad / elapsed,
               "perf/transitions_learned_per_sec": grad * batch_size / elapsed,
               "perf/learner_busy_share": (clocks.learner_busy - last.learner_busy) / elapsed,
               "perf/learner_wait_share": (clocks.learner_wait - last.learner_wait) / elapsed,
               "perf/env_wait_share": (clocks.env_wait - last.env_wait) / elapsed,
               "perf/actor_wait_share": (clocks.actor_wait - last.actor_wait) / elapsed}
        if grad and env:
            out["perf/replay_ratio_achieved"] = grad / env
        self._time, self._last = now, dataclasses.replace(clocks)
        return out


class Logbook:
    """TensorBoard writer (and W&B), progress bar and the run's episode statistics.

    Args:
      config: the run's config; run_dir: where the event files go.
      loop: the loop counters at the start (env_steps for the bar and first step).
      expert: whether an expert curriculum runs (episode returns by driver).
      wandb_run: the W&B run the scalars also go to (``launch.wandb_log.start``), or None;
        closed with the logbook.
    """

    def __init__(self, config: Config, run_dir: Path, loop: dict, expert: bool,
                 wandb_run: Any | None = None):
        self.config, self.expert = config, expert
        self._realtime = envs.is_trackmania(config.env.id)
        logging_cfg, num_envs = config.logging, config.env.num_envs
        self.writer = RunWriter(run_dir, wandb_run)
        # Every knob of the run, in TensorBoard's Text tab beside the curves it explains.
        self.writer.add_text("config", "```\n" + json.dumps(config_lib.to_dict(config),
                                                            indent=2) + "\n```",
                             loop["env_steps"])
        self.recent_returns: collections.deque[float] = collections.deque(maxlen=20)
        # Returns of agent-only episodes (all of them without an expert): the best_train/
        # choice and the health monitor's trend judge the agent's own policy.
        self.own_returns: collections.deque[float] = collections.deque(
            maxlen=max(1, config.training.best_train_window))
        self.num_actors = config.actor_groups  # Ray actors, or learner processes
        # One entry per env stream: actor i's envs are streams i*E .. (i+1)*E - 1.
        self.episode_stats = curriculum.ReturnStats(num_envs * self.num_actors,
                                                    logging_cfg.return_windows,
                                                    logging_cfg.reward_slope_episodes)
        self._actor_steps = np.zeros(self.num_actors, np.int64)  # over the log interval
        self._interval_start = time.perf_counter()
        self.next_log = loop["env_steps"] + logging_cfg.log_interval
        self.next_summary = loop["env_steps"] + logging_cfg.summary_interval \
            if logging_cfg.summary_interval else math.inf
        self.late = dict(steps=0, late=0, timings={})
        self._lag = [0, 0]  # sum of param lags, vector steps, over the interval
        self.last_loss: float | None = None
        self.bar = tqdm.tqdm(total=config.training.total_steps, initial=loop["env_steps"],
                             unit="step", dynamic_ncols=True,
                             disable=not logging_cfg.progress_bar, mininterval=1.0)

    def record(self, record: VectorStep, env_steps: int, grad_steps: int) -> list[float]:
        """Log a vector step taken by the learner at ``env_steps`` (after it) and its
        finished episodes; returns the returns of its agent-only episodes."""
        writer, stats = self.writer, self.episode_stats
        first = record.actor * self.config.env.num_envs
        stats.record_step(*(self._streams(record.slot[k], first) for k in ("is_expert",
                                                                            "valid")))
        self._actor_steps[record.actor] += record.taken
        own = []
        for episode in record.episodes:
            self.recent_returns.append(episode.return_)
            agent_only, expert_share = stats.record_episode(first + episode.env_index,
                                                            env_steps, episode.return_)
            if agent_only:
                self.own_returns.append(episode.return_)
                own.append(episode.return_)
            writer.add_scalar("episode/return", episode.return_, env_steps)
            writer.add_scalar("episode/length", episode.length, env_steps)
            if self.num_actors > 1:
                writer.add_scalar(f"actor_{record.actor}/episode_return", episode.return_,
                                  env_steps)
            if self.expert:
                kind = "agent_only" if agent_only else "mixed"
                writer.add_scalar(f"episode/{kind}_return", episode.return_, env_steps)
                writer.add_scalar("episode/expert_share", expert_share, env_steps)
            if record.progress is not None:
                writer.add_scalar("episode/track_progress",
                                  float(record.progress[episode.env_index]), env_steps)
        if self._realtime:
            self.late["steps"] += record.taken
            self.late["late"] += record.late_steps
            self.late["timings"].update(record.timings)
        self._lag[0] += grad_steps - record.params_version
        self._lag[1] += 1
        self.bar.update(record.taken)
        return own

    def _streams(self, values: np.ndarray, first: int) -> np.ndarray:
        """One actor's per-env ``values`` [E] placed among all streams [num_actors * E]."""
        if self.num_actors == 1:
            return values
        out = np.zeros(self.num_actors * len(values), values.dtype)
        out[first:first + len(values)] = values
        return out

    def due(self, env_steps: int) -> bool:
        """Whether a log interval ends at ``env_steps``."""
        return env_steps >= self.next_log

    def interval_scalars(self) -> dict[str, float]:
        """perf/param_lag, each Ray actor's env steps per second (``actor_<i>/``) and, on
        TrackMania, the late-step scalars of the interval (the late-step warning is printed
        here)."""
        out = {}
        if self._lag[1]:
            out["perf/param_lag"] = self._lag[0] / self._lag[1]
        self._lag = [0, 0]
        now = time.perf_counter()
        if self.num_actors > 1:
            elapsed = max(now - self._interval_start, 1e-9)
            out.update({f"actor_{i}/env_steps_per_sec": steps / elapsed
                        for i, steps in enumerate(self._actor_steps)})
        self._actor_steps[:] = 0
        self._interval_start = now
        if self._realtime:
            tm = self.config.trackmania
            share = self.late["late"] / max(self.late["steps"], 1)
            out.update({"perf/late_steps": self.late["late"], "perf/late_step_share": share})
            out.update({f"perf/{k}": v for k, v in self.late["timings"].items()})
            if share > tm.late_step_warning:
                log.warning("%.1f%% of the last %d steps were late (over %.0f ms): the actor "
                            "missed the game's 20 Hz clock; free the CPU or lower "
                            "training.replay_ratio (see docs/trackmania.md, 'timeouts')",
                            100 * share, self.late["steps"],
                            1000 * tm.time_step * (1 + tm.time_step_timeout_factor))
            self.late.update(steps=0, late=0)
        return out

    def write(self, env_steps: int, scalars: dict[str, float]) -> None:
        """Write a log interval's scalars; moves the next log step on."""
        self.next_log += self.config.logging.log_interval
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, env_steps)

    def show(self, env_steps: int, scalars: dict[str, float], raised: set[str]) -> None:
        """Refresh the progress bar with a log interval's figures (and the health flags
        ``raised``) and, when due, print the status line."""
        loss = scalars.get("train/loss", scalars.get("train/critic_loss"))
        if loss is not None:
            self.last_loss = loss
        postfix = dict(env_sps=f"{scalars['perf/env_steps_per_sec']:.0f}",
                       grad_sps=f"{scalars['perf/grad_steps_per_sec']:.1f}",
                       eps=f"{scalars['charts/epsilon']:.2f}")
        if "expert/ratio" in scalars:
            postfix["expert"] = f"{scalars['expert/ratio']:.0%}"
        if self.recent_returns:
            postfix["return"] = f"{np.mean(self.recent_returns):.1f}"
        if self.last_loss is not None:
            postfix["loss"] = f"{self.last_loss:.3f}"
        if raised:
            postfix["health"] = ",".join(sorted(raised))
        self.bar.set_postfix(postfix, refresh=False)
        if env_steps >= self.next_summary:
            self.next_summary += self.config.logging.summary_interval
            agent = self.config.agent
            hard = agent.target_update in ("hard", "both")
            log.info(curriculum.summary_line(
                env_steps, self.config.training.total_steps, scalars,
                self.config.logging.return_windows,
                agent.target_update_period if hard else None))

    def close(self) -> None:
        """Close the progress bar and the event files, and finish the W&B run."""
        self.bar.close()
        self.writer.close()
