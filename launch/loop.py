"""The training loop: the actor and the learner, side by side or taking turns.

:class:`Trainer` builds the parts (``launch.actor.Actor``, ``launch.learner.Learner``, the
logbook, health watch, evaluation and checkpoints) and runs them in the mode of
``actors.mode``:

- lockstep: one thread; the actor sends its actions, the learner adds the queued slots and
  runs the grad steps it owes while the env workers step, then the step is taken in (the
  loop of before the split, reproducible by seed);
- bounded: the actor runs in its own thread and hands vector steps over a bounded queue; the
  learner (this thread) takes them in, waits for data when it is ahead of
  training.replay_ratio, and holds the actor when it is actors.max_lag grad steps behind;
- realtime: the same, but the actor never waits for the learner (TrackMania's clock); by
  default the actor runs in a child process (``launch.actor_process``, actors.backend), where
  its ``act`` never waits on the grad step.

Whatever the mode, each vector step is taken in by :meth:`Trainer.take` in the order the
actor made them, which logs it and, at their intervals, writes the log interval, checks
health, evaluates and checkpoints. Checkpoints are a consistent cut: every slot taken in is
in the replay, none still queued is counted.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

import envs
from launch import multihost, ray_actors
from launch.actor import Actor, ActorLost, EpisodeDropped, GameLost, ParamStore, RatioPacer, \
    VectorStep
from launch.actor_process import ActorProcess
from launch.checkpoint import NEW_LOOP, RunCheckpoints, SaveFailed, resume
from launch.evaluation import Evaluation
from launch.experts import Expert
from launch.health_watch import HealthWatch
from launch.learner import Learner, learning_starts
from launch.logbook import Clocks, Logbook, PerfWindow
from launch.ray_actors import RayActors
from rl import health as health_lib
from rl import schedules, sharding
from rl.config import Config
from rl.learners import make_agent

log = logging.getLogger("launch")

EXIT_GAME_LOST = 3
"""Exit code when the TrackMania game cannot be reached, no Ray actor answered for
actors.lost_timeout seconds, or an env gave a bad value with env.on_bad_value error (after
a checkpoint was saved); also after training.max_failed_saves checkpoint saves failed in a
row, and when --resume finds checkpoints but none restores (``launch/run.py``)."""
EXIT_DIVERGED = 4
"""Exit code when training diverged and health.on_divergence (stop, or rollback out of
attempts) ended the run (after a checkpoint was saved)."""
EXIT_INTERRUPTED = 130
"""Exit code after Ctrl-C (after a checkpoint was saved)."""
ACTOR_JOIN_TIMEOUT = 10.0
"""Seconds the learner waits for the actor thread to stop before closing its env workers."""


class StopOnSigint:
    """Turns the first Ctrl-C into a flag the loop checks between steps, so the interrupt
    never lands inside a jitted call with donated buffers or a checkpoint write; a second
    Ctrl-C raises KeyboardInterrupt at once."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: stopping after this step (press again to quit without saving)")

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self._previous)


def tree_bytes(tree: Any) -> int:
    """Bytes of the arrays of a pytree (global shapes: a replicated array counts once)."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree) if hasattr(x, "dtype"))


class Trainer:
    """One run's parts, wired (see the module docstring).

    Args:
      config: the resolved config; spec: the env's spaces (``envs.env_spec``).
      run_dir: the run directory (config already written); resume_run: restore its latest
        checkpoint.
      demo_slots: demonstrations to inject into a fresh replay (``launch.run.
        load_demo_slots``), or None; expert: the curriculum's expert, or None.
      wandb_run: the W&B run of learner process 0 (``launch.wandb_log.start``), or None;
        finished when the run closes.

    """

    def __init__(self, config: Config, spec: envs.EnvSpec, run_dir: Path, resume_run: bool,
                 demo_slots: dict[str, np.ndarray] | None = None, expert: Expert | None = None,
                 wandb_run: Any | None = None):
        self.config, self.run_dir = config, run_dir
        training, processes = config.training, config.learner.num_processes
        self.process = config.learner.process_id  # 0 but with several learner processes
        agent = make_agent(config, spec.num_actions, spec.is_image, spec.feature_size)
        self.checkpoints = RunCheckpoints(run_dir, training.keep_checkpoints)
        k_init, act_key, eval_key = jax.random.split(jax.random.PRNGKey(config.seed), 3)
        state = agent.init(k_init, envs.zeros_obs(spec, (config.env.frame_stack,)))
        replay_state = agent.replay.init(envs.zeros_obs(spec),
                                         np.zeros(spec.action_shape, spec.action_dtype))
        if processes > 1:  # templates on every process's devices, for a collective restore
            mesh = sharding.learner_mesh(config.learner, training.batch_size)
            state, replay_state = sharding.replicate((state, replay_state), mesh)
        loop = dict(NEW_LOOP)
        if resume_run:
            state, replay_state, loop = resume(self.checkpoints, state, replay_state,
                                               training.learning_starts)
        self.loop = loop
        starts = learning_starts(config)
        self.learner = Learner(config, spec, agent, state, replay_state, loop, starts)
        self.learner.inject_demos(demo_slots)
        self.floor_raise = loop["expert_floor_raise"] = schedules.expert_floor_raise(
            config.expert, loop["expert_floor_raise"], loop["env_steps"])
        self.mode = config.actors.resolved_mode(config.env.id)
        backend = config.actors.resolved_backend(config.env.id)
        if backend == "process":
            self.actor: Actor | ActorProcess | RayActors = ActorProcess(
                config, spec, loop, starts, act_key, expert, self.floor_raise,
                self.learner.acting_params(), self.learner.grad_steps)
        elif backend == "ray":
            ray_actors.connect(config.actors)
            self.actor = RayActors(config, spec, loop, starts, act_key, expert,
                                   self.floor_raise)
        elif processes > 1:  # its own envs, seed stream and exploration, as a Ray actor's
            own = dataclasses.replace(config,
                                      seed=config.seed + ray_actors.SEED_STRIDE * self.process)
            self.actor = Actor(own, spec, agent, loop, starts,
                               jax.random.fold_in(act_key, self.process), expert,
                               self.floor_raise)
        else:
            self.actor = Actor(config, spec, agent, loop, starts, act_key, expert,
                               self.floor_raise)
        if envs.is_trackmania(config.env.id):  # compile before the game's clock starts
            self.actor.compile(self.learner.acting_params())
            self.learner.compile()
        # Process 0 logs the run; another learner process its own copy beside it.
        log_dir = run_dir if self.process == 0 else run_dir / f"process_{self.process}"
        self.logbook = Logbook(config, log_dir, loop, expert is not None, wandb_run)
        self.health = HealthWatch(config, spec.num_actions, log_dir, starts,
                                  self.logbook.writer)
        if loop.get("reward_range"):  # a resumed run: the rewards its replay held
            self.health.monitor.record_rewards(*loop["reward_range"])
        if demo_slots is not None:
            self.health.record_rewards(demo_slots["reward"])
        self.evaluation = Evaluation(config, agent, eval_key, loop["env_steps"])
        interval = training.checkpoint_interval
        self.next_checkpoint = (loop["env_steps"] // interval + 1) * interval
        self.clocks = Clocks(env_steps=loop["env_steps"], grad_steps=self.learner.grad_steps)
        self.perf = PerfWindow(self.clocks)
        self.handover: queue.Queue | None = None  # concurrent modes: actor -> learner
        self.store: ParamStore | None = None  # concurrent modes: learner -> actor
        self.stop = StopOnSigint()
        self.diverged = self.game_lost = self.actors_lost = self.bad_value = False
        self.bad_values = 0  # episodes dropped for a bad env value (drop_episode)
        self.actor_losses = 0  # Ray actors lost (each restarted by Ray while it may)
        self.failed_saves = self.failed_in_a_row = 0  # checkpoint writes that failed
        self.saves_failed = False  # training.max_failed_saves in a row: the run stops
        self._report_start()

    def _report_start(self) -> None:
        config = self.config
        self._report_memory()
        log.info("loop: actors.mode=%s%s", self.mode,
                 " (auto)" if config.actors.mode == "auto" else "")
        if config.learner.num_processes > 1:
            log.info("learner process %d of %d (coordinator %s): %d devices in all, %d here",
                     self.process, config.learner.num_processes,
                     config.learner.coordinator_address, jax.device_count(),
                     jax.local_device_count())
        if isinstance(self.actor, ActorProcess):
            log.info("loop: the actor runs in a child process (actors.backend=process%s)",
                     ", auto" if config.actors.backend == "auto" else "")
        agent, per_update = config.agent, config.env_steps_per_update
        if agent.learner != "tqc":  # the periods count updates; say them in env steps too
            parts = []
            if agent.target_update in ("hard", "both"):
                parts.append(f"hard copy every {agent.target_update_period} updates = "
                             f"{agent.target_update_period * per_update:g} env steps")
            if agent.target_update in ("soft", "both"):
                parts.append(f"Polyak blend every {agent.target_soft_period} updates = "
                             f"{agent.target_soft_period * per_update:g} env steps")
            log.info("target network: %s (one optimizer update per grad_accumulation / "
                     "replay_ratio = %g env steps)", "; ".join(parts), per_update)
        if config.agent.epsilon_unit == "episodes":
            log.warning("agent.epsilon_unit=episodes: epsilon decays per finished episode. "
                        "Seed 000 lost its exploration this way (episodes lengthen as the "
                        "agent improves, so epsilon reached its end value after ~150k of 10M "
                        "steps); prefer steps")
        if self.floor_raise is not None:
            raise_ = self.floor_raise
            log.info("expert: floor raised to %.3g from env step %d to %d", raise_["floor"],
                     raise_["start"], raise_["start"] + raise_["steps"])

    def _report_memory(self) -> None:
        """Log the bytes of the replay and the train state (the process's memory is about
        their sum plus the runtime's; docs/reliability.md has measured figures)."""
        learner, training = self.learner, self.config.training
        replay = tree_bytes(learner.replay_state)
        log.info("memory: replay %.3g GB (replay.capacity %d), train state %.3g MB (params, "
                 "target, optimizer)", replay / 1e9, self.config.replay.capacity,
                 tree_bytes(learner.state) / 1e6)
        if training.save_replay:
            log.info("checkpoints hold the replay (training.save_replay): %.3g GB written per "
                     "checkpoint, up to %d kept; each save holds a host-memory copy of it while "
                     "it writes (orbax copies what it saves to host memory first): peak memory "
                     "up to %.3g GB more", replay / 1e9, training.keep_checkpoints, replay / 1e9)

    # --- one vector step taken in --------------------------------------------------------
    def take(self, record: VectorStep | EpisodeDropped | ActorLost) -> bool:
        """Take in one of the actor's records: count and queue it, log it, and run the
        parts whose interval ends here. Returns False when the run must stop (diverged)."""
        loop, learner = self.loop, self.learner
        if isinstance(record, EpisodeDropped):
            loop["restarts"] = max(loop["restarts"], record.restarts)
            log.warning("dropped the partial episode (%d steps)",
                        learner.drop_partial_episode(record.actor))
            counter = ("perf/env_restarts", record.env_restarts) if record.env_restarts \
                else ("perf/reconnects", record.reconnects)
            self.logbook.writer.add_scalar(*counter, loop["env_steps"])
            return True
        if isinstance(record, ActorLost):
            log.warning("dropped the partial episodes of Ray actor %d (%d steps)",
                        record.actor, learner.drop_partial_episode(record.actor))
            self.actor_losses += 1
            self.logbook.writer.add_scalar("perf/actor_losses", self.actor_losses,
                                           loop["env_steps"])
            return True
        learner.accept(record)
        if record.dropped:
            self._drop_bad_episodes(record)
        self.clocks.env_steps = loop["env_steps"]
        self.health.record_rewards(record.slot["reward"])
        for own in self.logbook.record(record, loop["env_steps"], learner.grad_steps):
            self.health.monitor.record_episode(loop["env_steps"], own)
        step = loop["env_steps"]
        if self.logbook.due(step) and not self._log_interval(record.epsilon):
            return False
        eval_step = self.evaluation.due(step)
        if eval_step is not None:
            self._evaluate(eval_step)
        video_step = self.evaluation.video_due(step)
        if video_step is not None and self.process == 0:  # process 0 logs the run
            self.evaluation.record_video(self.learner.acting_params(), video_step,
                                         self.run_dir, self.logbook.writer)
        if step >= self.next_checkpoint:
            self.next_checkpoint += self.config.training.checkpoint_interval
            self.save("periodic")
        return not self.saves_failed

    def _drop_bad_episodes(self, record: VectorStep) -> None:
        """Drop from the replay the episodes that a bad env value ended (its slot, zeroed,
        is already queued), and count them in perf/bad_values."""
        indices = [bad["env"] for bad in record.dropped]
        steps = self.learner.drop_partial_episode(record.actor, indices)
        for bad in record.dropped:
            log.warning("dropped the episode of env %d (%s); the env was reset",
                        bad["env"], bad["reason"])
        log.warning("%d env steps of %d episode(s) left the replay", steps, len(indices))
        self.bad_values += len(indices)
        self.logbook.writer.add_scalar("perf/bad_values", self.bad_values, self.loop["env_steps"])

    def _log_interval(self, epsilon: float) -> bool:
        """Write the log interval's scalars, check health (and act on divergence), offer
        the best-by-training checkpoint. False when the run must stop."""
        config, loop, learner = self.config, self.loop, self.learner
        step = loop["env_steps"]
        self.clocks.grad_steps, self.clocks.learner_busy = learner.grad_steps, learner.busy_time
        self.clocks.env_wait, self.clocks.actor_wait = (self.actor.env_wait_time,
                                                        self.actor.wait_time)
        scalars = {"charts/epsilon": epsilon,
                   "charts/importance_exponent": schedules.importance_exponent(
                       config.replay, step, config.training.total_steps, learner.grad_steps),
                   "charts/episodes": loop["episodes"],
                   **self.perf.scalars(self.clocks, config.training.batch_size),
                   **self.logbook.interval_scalars(),
                   "perf/grad_credit_backlog": learner.credit_backlog,
                   "perf/queue_depth": self.queue_depth(),
                   **({"perf/actors_alive": self.actor.alive}
                      if isinstance(self.actor, RayActors) else {}),
                   "train/grad_steps": learner.grad_steps}
        metrics = learner.take_metrics()
        scalars.update({f"train/{k}": v for k, v in metrics.items()})
        scalars.update(self.logbook.episode_stats.scalars(step))
        if self.actor.expert is not None:
            scalars["expert/ratio"] = schedules.expert_ratio(config.expert, step,
                                                             self.floor_raise)
            share = self.logbook.episode_stats.expert_step_share()
            if share is not None:
                scalars["expert/step_share"] = share
        weight = learner.decay_demo_weight()
        if weight is not None:
            scalars["charts/demo_sampling_weight"] = weight
        self.logbook.write(step, scalars)
        if not self._on_health(self.health.check(step, metrics, epsilon)):
            return False
        self._offer_best_train()
        self.logbook.show(step, scalars, set(self.health.monitor.raised))
        return True

    def queue_depth(self) -> int:
        """Vector steps waiting in the queue between actor and learner (0 in lockstep)."""
        return 0 if self.handover is None else self.handover.qsize()

    def _on_health(self, divergence: list[health_lib.HealthEvent]) -> bool:
        """Act on divergence flags (health.on_divergence); False when the run must stop."""
        action = self.config.health.on_divergence
        if divergence and action == "stop":
            log.error("training diverged (%s); stopping (health.on_divergence=stop)",
                      ", ".join(e.name for e in divergence))
            self.diverged = True
        elif divergence and action == "rollback":
            self.diverged = not self._rollback(divergence)
        return not self.diverged

    def _rollback(self, divergence: list[health_lib.HealthEvent]) -> bool:
        """Restore the best checkpoint with lower learning rates; False when out of rollbacks
        or without a best checkpoint."""
        cfg, loop, checkpoints = self.config.health, self.loop, self.checkpoints
        kinds = [k for k in ("eval", "train") if checkpoints.best_step(k) is not None]
        names = ", ".join(e.name for e in divergence)
        if loop["rollbacks"] >= cfg.max_rollbacks or not kinds:
            log.error("training diverged (%s) and cannot roll back: %s; stopping", names,
                      f"health.max_rollbacks={cfg.max_rollbacks} used up" if kinds else
                      "no best checkpoint yet (needs an evaluation or "
                      "training.best_train_window finished episodes)")
            return False
        best_step = checkpoints.best_step(kinds[0])
        restored, best_loop = checkpoints.restore_best(kinds[0], self.learner.state)
        loop["rollbacks"] += 1
        loop["lr_scale"] *= cfg.rollback_lr_factor
        self.learner.restore(restored, loop["lr_scale"])
        self.publish()
        step, writer = loop["env_steps"], self.logbook.writer
        log.warning("health: rollback %d of %d for %s: restored the best-by-%s checkpoint of env "
                    "step %d (return %.4g); learning rates now x%.3g of the config's",
                    loop["rollbacks"], cfg.max_rollbacks, names, kinds[0], best_step,
                    best_loop["best_eval_return" if kinds[0] == "eval" else "best_train_return"],
                    loop["lr_scale"])
        writer.add_scalar("charts/rollbacks", loop["rollbacks"], step)
        writer.add_scalar("charts/lr_scale", loop["lr_scale"], step)
        self.health.monitor.record_rollback(step, best_step, kinds[0], loop["lr_scale"], names)
        return self._on_health(self.health.report(self.health.monitor.restart(step)))

    def _offer_best_train(self) -> None:
        """Save best_train/ when the mean of the last best_train_window agent-only returns
        is the best so far; checked once per log interval, so a run of improving episodes is
        one save, and none while a divergence flag is up (the mean spans episodes of before
        it)."""
        window, own = self.config.training.best_train_window, self.logbook.own_returns
        if not window or len(own) < window or self.health.monitor.diverging():
            return
        train_return = float(np.mean(own))
        best = self.loop["best_train_return"]
        if best is None or train_return > best:
            self.loop["best_train_return"] = train_return
            step = self.loop["env_steps"]
            self._write(f"best-by-training checkpoint at env step {step}",
                        lambda: self.checkpoints.save_best(step, self.learner.state, self.loop,
                                                           train_return, kind="train"))

    def _evaluate(self, step: int) -> None:
        """Evaluate the current policy and log it (scalars, health, best/) at ``step``, the
        multiple of training.eval_interval it was due for; the env-step counter may be up to
        num_envs - 1 past it, the best checkpoint's loop counters say where."""
        writer, reached = self.logbook.writer, self.loop["env_steps"]
        if self.process == 0:
            returns = self.evaluation.run(self.learner.acting_params(), step)
            mean = float(np.mean(returns))
            for name, value in (("mean", mean), ("std", np.std(returns)),
                                ("min", np.min(returns)), ("max", np.max(returns))):
                writer.add_scalar(f"eval/return_{name}", float(value), step)
            log.info("eval at env step %d%s: return %.2f +- %.2f over %d episodes", step,
                     f" (policy of env step {reached})" if reached != step else "", mean,
                     float(np.std(returns)), len(returns))
        if self.config.learner.num_processes > 1:  # process 0 evaluated; all act on it
            mean = multihost.broadcast_from_first(mean if self.process == 0 else 0.0)
        self.health.monitor.record_eval(step, mean)
        best = self.loop["best_eval_return"]
        if best is None or mean > best:
            self.loop["best_eval_return"] = mean
            self._write(f"best-by-evaluation checkpoint at env step {step}",
                        lambda: self.checkpoints.save_best(step, self.learner.state, self.loop,
                                                           mean))

    def save(self, reason: str) -> None:
        """Checkpoint at a consistent cut: every slot taken in is added to the replay
        first; the counters count exactly the steps taken in. A failed write is logged
        and counted (:meth:`_write`)."""
        learner, loop = self.learner, self.loop
        learner.add_ready()
        loop["reward_range"] = self.health.monitor.reward_range
        step, save_replay = loop["env_steps"], self.config.training.save_replay
        if self._write(f"checkpoint at env step {step} ({reason})",
                       lambda: self.checkpoints.save(
                           step, learner.state, learner.replay_state if save_replay else None,
                           loop)):
            log.info("checkpoint at env step %d (%s) in %s", step, reason,
                     self.run_dir / "checkpoints")

    def _write(self, what: str, write: Callable[[], None]) -> bool:
        """Run one checkpoint write (``what`` names it in the log); returns whether it was
        written. A failed one (SaveFailed: disk full, no permission) is logged and counted
        in perf/failed_saves, and the run goes on from the checkpoints saved before, until
        training.max_failed_saves writes in a row failed: then ``saves_failed`` stops it."""
        try:
            write()
        except SaveFailed as e:
            self.failed_saves += 1
            self.failed_in_a_row += 1
            limit = self.config.training.max_failed_saves
            self.saves_failed = self.saves_failed or self.failed_in_a_row >= limit
            log.error("%s not saved (%d in a row failed, training.max_failed_saves=%d%s; the "
                      "checkpoints saved before are kept): %s", what, self.failed_in_a_row,
                      limit, ": stopping" if self.saves_failed else "", e)
            self.logbook.writer.add_scalar("perf/failed_saves", self.failed_saves,
                                           self.loop["env_steps"])
            return False
        self.failed_in_a_row = 0
        return True

    def publish(self) -> None:
        """Hand the actor a copy of the learner's acting params (concurrent modes)."""
        if self.store is not None:
            self.store.publish(self.learner.acting_params_copy(), self.learner.grad_steps)

    # --- the modes -------------------------------------------------------------------------
    def run(self) -> int:
        """Start the env workers and train until training.total_steps env steps, Ctrl-C, a
        lost game, a divergence stop or training.max_failed_saves failed saves in a row;
        save once and close everything. Returns the exit code: 0 done, 3 game lost (or not
        started) or saves failed, 4 diverged, 130 interrupted.

        Raises:
          whatever the actor or the learner raised (after both stopped and the env workers
          were closed; no checkpoint is written then).
        """
        try:
            if self.mode == "lockstep":
                self._run_lockstep()
            else:
                self._run_concurrent()
        except envs.GameConnectionError as e:
            self._abort()
            if self.actor.started:  # not at the start: a failure
                raise
            log.error("cannot start the game: %s", e)
            return EXIT_GAME_LOST
        except BaseException:
            self._abort()
            raise
        self.stop.restore()
        self.logbook.bar.close()
        try:
            return self._finish()
        finally:
            self._close()

    def _abort(self) -> None:
        """Restore Ctrl-C and close everything, saving nothing (the run failed)."""
        self.stop.restore()
        self._close()

    def _run_lockstep(self) -> None:
        """Acting and learning take turns: the learner works while the env workers step.
        With several learner processes each takes in every process's step (see
        ``launch/multihost.py``), and a stop asked in one is agreed on by all."""
        learner, actor, loop = self.learner, self.actor, self.loop
        total, num_envs = self.config.training.total_steps, self.config.env.num_envs
        processes = self.config.learner.num_processes
        stopping = False  # agreed by every process (the Ctrl-C flag is only this one's)
        actor.start()
        while loop["env_steps"] < total and not (stopping if processes > 1
                                                   else self.stop.requested):
            start = time.perf_counter()
            actor.begin(learner.acting_params(), learner.grad_steps, loop["replay_slots"])
            acting = time.perf_counter() - start
            learner.add_ready()
            while learner.can_update():
                learner.update()
            start = time.perf_counter()
            try:
                record = actor.finish()
            except GameLost as e:
                log.error("%s", e)
                self.game_lost = True
                break
            except envs.BadEnvValue as e:
                log.error("%s (env.on_bad_value error)", e)
                self.bad_value = True
                break
            self.clocks.learner_wait += acting + time.perf_counter() - start
            if processes == 1:
                if not self.take(record):
                    break
                continue
            records, stopping = multihost.gather_steps(record, self.stop.requested, num_envs)
            if not all(self.take(r) for r in records):
                break
            # Epsilon follows every process's env steps and episodes.
            actor.env_steps, actor.episodes = loop["env_steps"], loop["episodes"]
        if processes > 1:  # every process ends the same way (a later Ctrl-C is too late)
            self.stop.requested = stopping

    def _run_concurrent(self) -> None:
        """The actor in its own thread, the learner here (see the module docstring)."""
        config, learner, loop = self.config, self.learner, self.loop
        self.handover = queue.Queue(maxsize=config.actors.queue_size)
        self.store = ParamStore(learner.acting_params_copy(), learner.grad_steps)
        max_lag = config.actors.max_lag or 2 * config.training.grad_steps_per_call
        pacer = RatioPacer(config.training.replay_ratio, max_lag, enabled=self.mode == "bounded")
        stop = threading.Event()
        thread = threading.Thread(target=self.actor.run, name="actor", daemon=True,
                                  args=(self.handover, self.store, pacer, stop))
        self.actor.start()  # last: the game's clock runs from its reset
        thread.start()
        consumed, updates = 0, 0
        try:
            while not self.stop.requested:
                records = self._drain(wait=not learner.can_update())
                for record in records:
                    consumed += getattr(record, "taken", 0)
                    if not self.take(record) or loop["env_steps"] >= config.training.total_steps:
                        return
                if not records and self.actor.ended is not None and self.handover.empty():
                    self._actor_ended()
                    return
                learner.add_ready()
                if learner.can_update():
                    learner.update()
                    updates += 1
                    if updates % config.actors.param_publish_interval == 0:
                        self.publish()
                pacer.learner_at(consumed, learner.credit_backlog)
        finally:
            stop.set()
            thread.join(ACTOR_JOIN_TIMEOUT)
            if thread.is_alive():
                log.warning("the actor thread did not stop within %.0f s", ACTOR_JOIN_TIMEOUT)

    def _drain(self, wait: bool) -> list[Any]:
        """Every record in the queue; with ``wait``, block for the first (up to 0.1 s)."""
        records = []
        if wait:
            start = time.perf_counter()
            try:
                records.append(self.handover.get(timeout=0.1))
            except queue.Empty:
                pass
            self.clocks.learner_wait += time.perf_counter() - start
        while True:
            try:
                records.append(self.handover.get_nowait())
            except queue.Empty:
                return records

    def _actor_ended(self) -> None:
        """The actor stopped on its own: raise its error, or note a lost game."""
        if self.actor.error is not None:
            log.error("the actor failed: %s: %s (traceback below)",
                      type(self.actor.error).__name__, self.actor.error)
            raise self.actor.error
        self.game_lost = self.actor.ended == "game lost"
        self.actors_lost = self.actor.ended == "actors lost"
        self.bad_value = self.actor.ended == "bad value"

    def _finish(self) -> int:
        """Save once (unless the last periodic checkpoint is of this step), write health.json
        and say how the run ended; returns the exit code (3 when the end is not saved)."""
        interrupted, loop = self.stop.requested, self.loop
        if interrupted:
            log.warning("interrupted at env step %d: saving a checkpoint", loop["env_steps"])
        ended = "interrupted" if interrupted else "game lost" if self.game_lost else \
            "actors lost" if self.actors_lost else "bad env value" if self.bad_value else \
            "diverged" if self.diverged else "saves failed" if self.saves_failed else None
        # After saves_failed a write has just failed at this step: not again.
        if (ended or self.checkpoints.latest_step() != loop["env_steps"]) \
                and not self.saves_failed:
            self.save(ended or "final")
        # An end that is not saved is not done: resuming redoes the steps since the last save.
        self.saves_failed |= self.checkpoints.latest_step() != loop["env_steps"]
        ended = ended or ("saves failed" if self.saves_failed else None)
        self.health.write_summary()
        if ended:
            log.info("resume with: python launch/run.py --resume %s", self.run_dir)
        else:
            log.info("done: %d env steps, %d grad steps, %d episodes", loop["env_steps"],
                     self.learner.grad_steps, loop["episodes"])
        return EXIT_INTERRUPTED if interrupted else \
            EXIT_GAME_LOST if self.game_lost or self.actors_lost or self.bad_value \
            or self.saves_failed else EXIT_DIVERGED if self.diverged else 0

    def _close(self) -> None:
        """Close the event files, the checkpoint managers and the env workers."""
        self.logbook.close()
        self.checkpoints.close()
        self.actor.close()


def train(config: Config, spec: envs.EnvSpec, run_dir: Path, resume_run: bool,
          demo_slots: dict[str, np.ndarray] | None = None, expert: Expert | None = None,
          wandb_run: Any | None = None) -> int:
    """Run (or continue) training; returns the process exit code (see :meth:`Trainer.run`)."""
    return Trainer(config, spec, run_dir, resume_run, demo_slots, expert, wandb_run).run()
