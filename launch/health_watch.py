"""The health part of the loop: feeds ``rl.health.HealthMonitor`` and reports its flags
(console, ``health/<flag>`` in TensorBoard and W&B, a W&B alert for each flag raised,
``RUN_DIR/health.json``)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from rl import health as health_lib
from rl.config import Config

log = logging.getLogger("launch")


def _earlier_events(path: Path) -> list[dict]:
    """The events of a resumed run's health.json (none for a new run). An unreadable file is
    kept aside as health.json.unreadable rather than overwritten."""
    if not path.exists():
        return []
    try:
        return list(json.loads(path.read_text())["events"])
    except (ValueError, KeyError, TypeError) as e:
        aside = path.with_name(path.name + ".unreadable")
        path.rename(aside)
        log.warning("%s is unreadable (%s); moved to %s and starting a new one", path, e, aside)
        return []


class HealthWatch:
    """The run's health monitor and where its events go.

    Args:
      config: the run's config; num_actions: for Munchausen's entropy bonus range.
      run_dir: holds health.json (a resumed run's earlier events are kept).
      learning_starts: replay slots before the first grad step.
      writer: the run's ``launch.wandb_log.RunWriter`` (TensorBoard, and W&B when on).
    """

    def __init__(self, config: Config, num_actions: int, run_dir: Path, learning_starts: int,
                 writer):
        agent = config.agent
        self.path = run_dir / "health.json"
        self.writer = writer
        self.uses_epsilon = agent.learner != "tqc"
        self.monitor = health_lib.HealthMonitor(
            config.health, gamma=agent.gamma, total_steps=config.training.total_steps,
            learning_starts=learning_starts,
            bonus_range=(agent.munchausen_alpha * agent.munchausen_clip,
                         agent.munchausen_tau * math.log(num_actions))
            if agent.munchausen else (0.0, 0.0),
            epsilon_start=agent.epsilon_start, events=_earlier_events(self.path))

    def record_rewards(self, rewards: np.ndarray) -> None:
        """Rewards (as stored in the replay) of a vector step or of injected demos."""
        self.monitor.record_rewards(float(np.min(rewards)), float(np.max(rewards)))

    def report(self, events: list[health_lib.HealthEvent]) -> list[health_lib.HealthEvent]:
        """Log flag changes; returns the divergence flags to act on
        (:meth:`rl.health.HealthMonitor.to_act_on`)."""
        for event in events:
            self.writer.add_scalar(f"health/{event.name}", float(event.raised), event.step)
            if event.raised:
                self.writer.add_text("health", f"{event.severity} {event.name}: "
                                     f"{event.message}", event.step)
                self.writer.alert(f"{event.name} raised", f"{event.severity} at env step "
                                  f"{event.step}: {event.message}",
                                  "ERROR" if event.severity == health_lib.DIVERGENCE else "WARN")
                log.warning("health: %s %s at env step %d: %s", event.severity, event.name,
                            event.step, event.message)
            else:
                log.info("health: %s cleared at env step %d (%s)", event.name, event.step,
                         event.message)
        if events:
            self.write_summary()
        return self.monitor.to_act_on(events)

    def check(self, env_steps: int, metrics: dict[str, float], epsilon: float
              ) -> list[health_lib.HealthEvent]:
        """Run the checks of a log interval; returns the divergence flags to act on."""
        return self.report(self.monitor.check(env_steps, metrics,
                                              epsilon if self.uses_epsilon else None))

    def write_summary(self) -> None:
        """Rewrite health.json with every event and the flags up now."""
        self.path.write_text(json.dumps(self.monitor.summary(), indent=2) + "\n")
