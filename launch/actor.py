"""The actor of the actor/learner split: env workers, collector, expert and acting params.

It acts on the stacked observations of all envs with its copy of the acting params, lets the
expert of the curriculum take its share of the steps, steps the env workers and hands each
vector step to the learner as a :class:`VectorStep` of plain arrays and numbers. In lockstep
mode the loop calls :meth:`Actor.begin` and :meth:`Actor.finish` around the learner's work; in
the concurrent modes :meth:`Actor.run` does both in its own thread and never waits for a grad
step (Hessel et al. 2021, "Podracer architectures for scalable reinforcement learning").
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import queue
import threading
import time
from typing import Any

import jax
import numpy as np

import envs
from launch.experts import Expert
from rl import curriculum
from rl import schedules
from rl.config import Config

log = logging.getLogger("launch")

QUEUE_POLL = 0.1
"""Seconds between two looks at the stop flag while the actor waits (queue or learner)."""


def make_act(agent: Any):
    """The jitted ``act(state, obs, prev_actions, key, step, epsilon, noisy)`` of ``agent``:
    its actions with the key folded with ``step`` (the vector step, or an evaluation step
    counter); ``noisy`` is static. Shared by the actor and the evaluation."""
    @functools.partial(jax.jit, static_argnames="noisy")
    def act(state, obs, prev_actions, key, step, epsilon, noisy):
        return agent.act(state, obs, jax.random.fold_in(key, step), epsilon, noisy=noisy,
                         prev_actions=prev_actions)
    return act


@dataclasses.dataclass
class VectorStep:
    """One vector step, as it crosses from the actor to the learner (arrays and numbers).

    slot: the replay slot of every env (``envs.SLOT_KEYS`` plus ``is_expert`` bool [E]).
    episodes: the episodes that finished in this step.
    taken: env steps in it (autoreset slots, where the env ignored the action, are not).
    epsilon: the exploration rate the actions were drawn with.
    params_version: grad steps of the params that acted (for perf/param_lag).
    late_steps: real-time steps that missed the game's clock (TrackMania; else 0).
    timings: the game worker's rtgym timings in seconds (TrackMania; else empty).
    progress: track progress of each env [E] (TrackMania; else None).
    actor: the index of the actor that took it (its replay group; 0 but with Ray actors).
    dropped: the envs whose episode a bad value ended (``env.on_bad_value drop_episode``),
      each ``{"env": index, "reason": message}``: their streams' running episodes must
      leave the replay once this step's slot is in.
    """

    slot: dict[str, np.ndarray]
    episodes: list[envs.EpisodeStats]
    taken: int
    epsilon: float
    params_version: int
    late_steps: int = 0
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    progress: np.ndarray | None = None
    actor: int = 0
    dropped: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class EpisodeDropped:
    """The game connection was lost, or an env worker failed, and the env workers were
    restarted: the partial episodes of the steps sent so far must not enter the replay.
    ``restarts``: the actor's restart count (seeds the new workers); ``reconnects``: game
    reconnections in this process; ``env_restarts``: env worker rebuilds in this process
    (after a failure; 0 for a game reconnection); ``actor``: the actor's index (with Ray
    actors)."""

    restarts: int
    reconnects: int
    actor: int = 0
    env_restarts: int = 0


@dataclasses.dataclass
class ActorLost:
    """A Ray actor died (``launch/ray_actors.py``): its partial episodes must not enter the
    replay (the steps it took but never sent died with it). ``reason``: Ray's error."""

    actor: int
    reason: str


class GameLost(RuntimeError):
    """The game could not be reached again within trackmania.reconnect_attempts, or the env
    workers failed more than env.max_restarts times within env.restart_window env steps."""


def hand_over(handover: queue.Queue, record: Any, stop: threading.Event) -> float:
    """Put ``record`` in the hand-over queue, waiting while it is full (until ``stop``);
    returns the seconds waited."""
    start = time.perf_counter()
    while not stop.is_set():
        try:
            handover.put(record, timeout=QUEUE_POLL)
            break
        except queue.Full:
            continue
    return time.perf_counter() - start


class ParamStore:
    """The newest acting params and their version (grad steps), published by the learner
    and read by the actor without waiting. Thread-safe; what it holds is a copy that the
    learner never donates."""

    def __init__(self, params: Any, version: int):
        self._lock = threading.Lock()
        self._params, self._version = params, version

    def publish(self, params: Any, version: int) -> None:
        """Replace the params (a copy the learner keeps no reference to)."""
        with self._lock:
            self._params, self._version = params, version

    def latest(self) -> tuple[Any, int]:
        """(params, version) of the newest publication."""
        with self._lock:
            return self._params, self._version


class RatioPacer:
    """Bounded mode's hold on the actor: it waits while the learner owes more than
    ``max_lag`` grad steps, counting the steps still in the queue (``owed = credit +
    queued env steps * replay_ratio``). Disabled (never waits) in real time."""

    def __init__(self, replay_ratio: float, max_lag: float, enabled: bool):
        self._cond = threading.Condition()
        self._ratio, self._max_lag, self._enabled = replay_ratio, max_lag, enabled
        self._produced = self._consumed = 0
        self._credit = 0.0

    def _owed(self) -> float:
        return self._credit + (self._produced - self._consumed) * self._ratio

    def wait(self, stop: threading.Event) -> float:
        """Block while the learner is too far behind (or until ``stop``); seconds waited."""
        start = time.perf_counter()
        with self._cond:
            while self._enabled and self._owed() > self._max_lag and not stop.is_set():
                self._cond.wait(QUEUE_POLL)
        return time.perf_counter() - start

    def produced(self, env_steps: int) -> None:
        """The actor queued ``env_steps`` more env steps."""
        with self._cond:
            self._produced += env_steps

    def learner_at(self, consumed: int, credit: float) -> None:
        """The learner has taken ``consumed`` env steps (since this pacer started) off the
        queue and owes ``credit`` grad steps for them."""
        with self._cond:
            self._consumed, self._credit = consumed, credit
            self._cond.notify_all()


class Actor:
    """Owns the env workers (``envs.make_vector_env``, the guarded TrackMania worker), the
    collector, the expert and its mixer, and the counters acting needs.

    Args:
      config, spec: the run's config and env spaces.
      agent: the learner object (its ``act`` only is used, through :func:`make_act`).
      counters: the run's loop counters at the start (env_steps, vector_steps, episodes,
        replay_slots, restarts); the actor keeps its own copies.
      learning_starts: replay slots before learning (random warm-up until then).
      act_key: PRNG key of the exploration.
      expert: the curriculum's expert or None; floor_raise: ``schedules.expert_floor_raise``.
    """

    def __init__(self, config: Config, spec: envs.EnvSpec, agent: Any, counters: dict,
                 learning_starts: int, act_key: jax.Array, expert: Expert | None,
                 floor_raise: dict | None):
        self.config, self.spec, self.expert = config, spec, expert
        self._act = make_act(agent)
        self._act_key, self._floor_raise = act_key, floor_raise
        self.learning_starts = learning_starts
        self.env_steps, self.vector_steps = counters["env_steps"], counters["vector_steps"]
        self.episodes, self.replay_slots = counters["episodes"], counters["replay_slots"]
        self.restarts, self.reconnects = counters["restarts"], 0
        self.env_restarts = 0
        self._failures: list[int] = []  # env steps of the env worker failures
        self._history = config.network.action_history
        self._realtime = envs.is_trackmania(config.env.id)
        self.mixer = curriculum.ExpertMixer(config.env.num_envs, config.expert.mode,
                                            seed=config.seed + 104_729 * (self.restarts + 1))
        # Seconds since the start, read by the learner's thread for its shares.
        self.wait_time = self.env_wait_time = 0.0
        self.ended: str | None = None  # set by run() after its last hand-over
        self.error: BaseException | None = None
        self._pending: tuple[np.ndarray, float, int] | None = None
        self._send_error: Exception | None = None  # the env workers failed in begin()
        self.collector: envs.Collector | None = None

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has started the env workers."""
        return self.collector is not None

    def start(self) -> None:
        """Start the env workers and reset them (the game's clock runs from here: start
        just before the first step).

        Raises:
          envs.GameConnectionError: the game cannot be started.
        """
        self.collector = self._start_collector()

    def _start_collector(self) -> envs.Collector:
        env_cfg, seed = self.config.env, self.config.seed + 7919 * self.restarts
        vector_env = envs.make_vector_env(env_cfg.id, env_cfg.num_envs,
                                          asynchronous=env_cfg.asynchronous, seed=seed,
                                          no_progress_timeout=env_cfg.no_progress_timeout,
                                          **envs.make_kwargs(self.config))
        collector = envs.Collector(vector_env, self.spec, env_cfg.frame_stack,
                                   env_cfg.reward_clip, reward_scale=env_cfg.reward_scale,
                                   action_history=self._history,
                                   on_bad_value=env_cfg.on_bad_value)
        try:
            collector.reset(seed=seed)
        except BaseException:
            collector.close()
            raise
        return collector

    def compile(self, params: Any) -> None:
        """Compile ``act`` before the game's clock starts (a first call is late)."""
        e = self.config.env.num_envs
        self._act(params, envs.zeros_obs(self.spec, (e, self.config.env.frame_stack)),
                  np.full((e, self._history), -1, np.int32) if self._history else None,
                  self._act_key, 0, 1.0, noisy=True).block_until_ready()

    def epsilon(self, replay_slots: int) -> float:
        """The exploration rate of the next step; 1 during a random warm-up while the replay
        holds fewer than learning_starts slots."""
        if self.config.agent.random_warmup and replay_slots < self.learning_starts:
            return 1.0
        return schedules.epsilon(self.config.agent, self.env_steps,
                                 self.config.training.total_steps, self.episodes)

    def begin(self, params: Any, version: int, replay_slots: int) -> None:
        """Choose the actions of every env (the agent's, the expert's where the curriculum
        draws it) and send them to the env workers; :meth:`finish` collects the step.
        ``replay_slots``: the replay's fill, for the random warm-up."""
        epsilon = self.epsilon(replay_slots)
        collector = self.collector
        prev_actions = collector.prev_actions if self._history else None
        obs = collector.stacked_obs
        actions = np.asarray(self._act(params, obs, prev_actions, self._act_key,
                                       self.vector_steps, epsilon, noisy=True))
        is_expert = np.zeros(self.config.env.num_envs, bool)
        if self.expert is not None:
            steps_since_start = collector.steps_since_start
            ratio = schedules.expert_ratio(self.config.expert, self.env_steps, self._floor_raise)
            is_expert = self.mixer.choose(ratio, steps_since_start, collector.step_valid)
            if is_expert.any():
                expert_actions, available = self.expert.act(obs, prev_actions, steps_since_start)
                is_expert &= available
                mask = is_expert.reshape(-1, *[1] * (actions.ndim - 1))
                actions = np.where(mask, expert_actions, actions)
        self._pending = (is_expert, epsilon, version)
        try:
            collector.step_async(actions)
        except (OSError, EOFError) as e:  # a dead worker's pipe: finish() rebuilds them
            if self._realtime:
                raise
            self._send_error = e

    def finish(self) -> VectorStep | EpisodeDropped:
        """Wait for the step sent by :meth:`begin` and return it. On TrackMania, a lost game
        connection restarts the worker and returns :class:`EpisodeDropped`.

        Any other failure of the env workers (a worker killed or crashed, an exception in
        an env's step) rebuilds them with a fresh seed and returns :class:`EpisodeDropped`.

        Raises:
          GameLost: the game did not come back within trackmania.reconnect_attempts, or
            the env workers failed more than env.max_restarts times in env.restart_window
            env steps.
          envs.BadEnvValue: a bad value with ``env.on_bad_value error`` (its ``env_step``
            set to this step's).
        """
        is_expert, epsilon, version = self._pending
        self._pending = None
        if self._send_error is not None:
            error, self._send_error = self._send_error, None
            return self._restart_envs(error)
        start = time.perf_counter()
        try:
            slot, finished = self.collector.step_wait()
        except envs.GameConnectionError as e:
            if not self._realtime:
                raise
            return self._reconnect(e)
        except envs.BadEnvValue as e:
            e.env_step = self.env_steps + 1
            raise
        except Exception as e:
            if self._realtime:  # the game worker's own failures are GameConnectionErrors
                raise
            return self._restart_envs(e)
        finally:
            self.env_wait_time += time.perf_counter() - start
        slot["is_expert"] = is_expert  # never set on autoreset steps (ExpertMixer)
        taken = int(slot["valid"].sum())
        self.vector_steps += 1
        self.env_steps += taken
        self.episodes += len(finished)
        self.replay_slots += self.config.env.num_envs
        step = VectorStep(slot=slot, episodes=finished, taken=taken, epsilon=epsilon,
                          params_version=version)
        for bad in self.collector.last_dropped:
            bad.env_step = self.env_steps
            step.dropped.append({"env": bad.env_index, "reason": str(bad)})
        if self._realtime:
            info = self.collector.last_info
            step.late_steps = int(np.sum(info.get("late_steps", 0)))
            step.timings = {k: float(np.mean(v)) for k, v in info.items()
                            if k.startswith("rtgym_")}
            if "progress" in info:
                step.progress = np.asarray(info["progress"], np.float32)
        return step

    def _reconnect(self, error: Exception) -> EpisodeDropped:
        """Restart the game worker after a lost connection (the partial episode is
        dropped by the learner)."""
        attempts = self.config.trackmania.reconnect_attempts
        log.warning("game connection lost: %s", error)
        self.collector.close()
        for attempt in range(1, attempts + 1):
            log.info("reconnecting to the game (attempt %d of %d)", attempt, attempts)
            self.restarts += 1
            try:
                self.collector = self._start_collector()
            except envs.GameConnectionError as e:
                log.warning("reconnect failed: %s", e)
                continue
            self.reconnects += 1
            return EpisodeDropped(restarts=self.restarts, reconnects=self.reconnects)
        raise GameLost(f"giving up on the game (trackmania.reconnect_attempts={attempts}): "
                       f"{error}")

    def _restart_envs(self, error: Exception) -> EpisodeDropped:
        """Rebuild the env workers after ``error`` (the partial episodes are dropped by the
        learner), unless they failed more than env.max_restarts times in the window."""
        env = self.config.env
        log.warning("the env workers failed at env step %d: %s: %s", self.env_steps,
                    type(error).__name__, error)
        self._failures = [s for s in self._failures if s > self.env_steps - env.restart_window]
        self._failures.append(self.env_steps)
        try:
            self.collector.envs.close(terminate=True)
        except Exception as e:  # a broken vector env may fail to close: its workers are gone
            log.warning("closing the failed env workers: %s: %s", type(e).__name__, e)
        if len(self._failures) > env.max_restarts:
            self.collector = None
            raise GameLost(f"the env workers failed {len(self._failures)} times within "
                           f"{env.restart_window} env steps (env.max_restarts "
                           f"{env.max_restarts}); the last error: {type(error).__name__}: "
                           f"{error}") from error
        self.restarts += 1
        self.collector = self._start_collector()
        self.env_restarts += 1
        log.info("env workers rebuilt with a fresh seed (restart %d)", self.env_restarts)
        return EpisodeDropped(restarts=self.restarts, reconnects=self.reconnects,
                              env_restarts=self.env_restarts)

    def run(self, handover: queue.Queue, store: ParamStore, pacer: RatioPacer,
            stop: threading.Event) -> None:
        """The actor thread: act with the newest published params, step, hand over, until
        training.total_steps env steps, ``stop``, a lost game or an error. Sets ``ended``
        ("done", "game lost", "bad value" (env.on_bad_value error), "stopped" or "error",
        with ``error``) after its last hand-over; never raises."""
        total = self.config.training.total_steps
        try:
            while self.env_steps < total and not stop.is_set():
                self.wait_time += pacer.wait(stop)
                if stop.is_set():
                    break
                params, version = store.latest()
                self.begin(params, version, self.replay_slots)
                record = self.finish()
                self.wait_time += hand_over(handover, record, stop)
                if isinstance(record, VectorStep):
                    pacer.produced(record.taken)
            self.ended = "done" if self.env_steps >= total else "stopped"
        except GameLost as e:
            log.error("%s", e)
            self.ended = "game lost"
        except envs.BadEnvValue as e:
            log.error("%s (env.on_bad_value error)", e)
            self.ended = "bad value"
        except BaseException as e:  # reported by the learner's thread, with its traceback
            self.error = e
            self.ended = "error"

    def close(self) -> None:
        """Close the env workers (they may already be gone after Ctrl-C or a crash)."""
        if self.collector is None:
            return
        try:
            self.collector.close()
        except Exception as e:
            log.warning("closing env workers: %s", e)
