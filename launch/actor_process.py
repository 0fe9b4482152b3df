"""The actor in a child process (``actors.backend=process``), for realtime mode.

In one process the actor's ``act`` and the learner's grad step share XLA's CPU runtime, and
now and then ``act`` waits for a part of the grad step (up to 170 ms with the tqc_tm20 net
on 2 cores, while acting alone takes 1 ms): on TrackMania's 50 ms clock that is a late step
per grad step. A child process has a runtime of its own, as Sebulba's actors have cores of
their own (Hessel et al. 2021).

The child runs the same :class:`launch.actor.Actor` (its env workers, collector and expert
are built there from the config). What crosses between the processes is what crosses
between the threads: :class:`launch.actor.VectorStep` records one way, numpy copies of the
acting params the other way, plus the child's log records and how it ended.
:class:`ActorProcess` is the parent's side and has the thread actor's interface, so the loop
runs it unchanged.
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import queue
import signal
import threading
import time
import traceback
from typing import Any

import jax
import numpy as np

import envs
from launch.actor import QUEUE_POLL, Actor, ParamStore, RatioPacer, hand_over
from rl.config import Config

log = logging.getLogger("launch")

STOP_TIMEOUT = 10.0
"""Seconds the parent waits for the child to end after asking it to stop, before
terminating it."""


class ActorProcessError(RuntimeError):
    """The actor process failed; the message holds the child's traceback."""


class ActorProcess:
    """The parent's side of the actor process: starts it, forwards its records to the
    loop's queue, sends it each new publication of the acting params, and reports how it
    ended (``ended``, ``error``), as :meth:`launch.actor.Actor.run` does.

    Args: as :class:`launch.actor.Actor` (the expert is rebuilt in the child from the
    config; here it only says whether there is one), plus the acting params and their
    version (grad steps) to start from.
    """

    def __init__(self, config: Config, spec: envs.EnvSpec, counters: dict,
                 learning_starts: int, act_key: jax.Array, expert: Any,
                 floor_raise: dict | None, params: Any, version: int):
        self.config, self.expert = config, expert
        self.wait_time = self.env_wait_time = 0.0
        self.ended: str | None = None
        self.error: BaseException | None = None
        ctx = multiprocessing.get_context("spawn")
        self._records = ctx.Queue(maxsize=config.actors.queue_size)
        self._params = ctx.Queue(maxsize=1)
        self._stop = ctx.Event()
        self._version = version
        self._process = ctx.Process(
            target=_child_main, name="actor",
            args=(config, spec, dict(counters), learning_starts, np.asarray(act_key),
                  floor_raise, jax.device_get(params), version, self._records, self._params,
                  self._stop))

    @property
    def started(self) -> bool:
        """Whether the child has started its env workers."""
        return self._process.pid is not None and self.ended != "failed to start"

    def compile(self, params: Any) -> None:
        """Nothing here: the child compiles ``act`` before it starts the game's clock."""

    def start(self) -> None:
        """Start the child and wait until its env workers are reset.

        Raises:
          envs.GameConnectionError: the child could not start the game.
          ActorProcessError: the child failed otherwise (its traceback in the message).
        """
        self._process.start()
        while True:
            item = self._get()
            if item is None:
                continue
            if isinstance(item, logging.LogRecord):
                log.handle(item)
            elif item[0] == "started":
                return
            else:  # ("failed", type name, message, traceback, game connection error)
                self.ended = "failed to start"
                _, name, message, trace, game = item
                self._process.join(STOP_TIMEOUT)
                if game:
                    raise envs.GameConnectionError(message)
                raise ActorProcessError(f"the actor process failed at its start: {name}: "
                                        f"{message}\n{trace}")

    def _get(self) -> Any:
        """The child's next item, or None after QUEUE_POLL seconds without one.

        Raises:
          ActorProcessError: the child died without saying how it ended.
        """
        try:
            return self._records.get(timeout=QUEUE_POLL)
        except queue.Empty:
            if not self._process.is_alive():
                raise ActorProcessError(f"the actor process died (exit code "
                                        f"{self._process.exitcode})") from None
            return None

    def run(self, handover: queue.Queue, store: ParamStore, pacer: RatioPacer,
            stop: threading.Event) -> None:
        """The actor thread of the parent: forward records until the child ends (it stops
        on ``stop``, at training.total_steps, on a lost game or an error). Sets ``ended``
        and ``error`` after the last record is handed over; never raises."""
        try:
            while True:
                self._send_newest(store)
                if stop.is_set():
                    self._stop.set()
                item = self._get()
                if item is None:
                    continue
                if isinstance(item, logging.LogRecord):
                    log.handle(item)
                elif item[0] == "step":
                    _, record, self.wait_time, self.env_wait_time = item
                    hand_over(handover, record, stop)
                    pacer.produced(getattr(record, "taken", 0))
                else:  # ("ended", how, error text or None, wait_time, env_wait_time)
                    _, ended, failure, self.wait_time, self.env_wait_time = item
                    if failure is not None:
                        self.error = ActorProcessError(failure)
                    self.ended = ended
                    return
        except BaseException as e:  # reported by the learner's thread
            self.error = e
            self.ended = "error"

    def _send_newest(self, store: ParamStore) -> None:
        params, version = store.latest()
        if version == self._version:
            return
        try:  # replace a publication the child has not taken yet
            self._params.get_nowait()
        except queue.Empty:
            pass
        self._params.put((jax.device_get(params), version))
        self._version = version

    def close(self) -> None:
        """Stop the child (it closes its env workers) and wait for it; terminate it after
        STOP_TIMEOUT seconds."""
        self._stop.set()
        deadline = time.monotonic() + STOP_TIMEOUT
        while self._process.is_alive() and time.monotonic() < deadline:
            try:  # the child cannot exit while its queue holds what it sent
                item = self._records.get(timeout=QUEUE_POLL)
                if isinstance(item, logging.LogRecord):
                    log.handle(item)
            except queue.Empty:
                pass
        if self._process.is_alive():
            log.warning("the actor process did not stop within %.0f s: terminating it",
                        STOP_TIMEOUT)
            self._process.terminate()
            self._process.join(STOP_TIMEOUT)
        self._params.cancel_join_thread()  # params the child never took: do not wait at exit


class _TaggedQueue:
    """The child's end of the record queue as the actor's hand-over queue: each record goes
    with the actor's wait and env-wait seconds so far."""

    def __init__(self, records: Any, actor: Actor):
        self._records, self._actor = records, actor

    def put(self, record: Any, timeout: float) -> None:
        self._records.put(("step", record, self._actor.wait_time, self._actor.env_wait_time),
                          timeout=timeout)


def _receive_params(params_q: Any, store: ParamStore, stop: threading.Event,
                    stop_event: Any) -> None:
    """The child's thread that publishes the params the parent sends, and turns the
    parent's stop request into the actor's stop flag."""
    while not stop.is_set():
        if stop_event.is_set():
            stop.set()
            return
        try:
            params, version = params_q.get(timeout=QUEUE_POLL)
        except queue.Empty:
            continue
        store.publish(jax.device_put(params), version)


def _child_main(config: Config, spec: envs.EnvSpec, counters: dict, learning_starts: int,
                act_key: np.ndarray, floor_raise: dict | None, params: Any, version: int,
                records: Any, params_q: Any, stop_event: Any) -> None:
    """The actor process: build the actor, compile ``act``, start the env workers, then run
    the actor until it ends; report every step, log record and the end to the parent."""
    from launch.experts import build_expert  # here: the parent imports this module early
    from rl.learners import make_agent

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    launch_log = logging.getLogger("launch")
    launch_log.handlers[:] = [logging.handlers.QueueHandler(records)]
    launch_log.setLevel(logging.INFO)
    launch_log.propagate = False
    try:
        envs.exit_with_parent()
        agent = make_agent(config, spec.num_actions, spec.is_image, spec.feature_size)
        actor = Actor(config, spec, agent, counters, learning_starts, jax.numpy.asarray(act_key),
                      build_expert(config, spec), floor_raise)
        params = jax.device_put(params)
        actor.compile(params)
        actor.start()
    except BaseException as e:
        records.put(("failed", type(e).__name__, str(e), traceback.format_exc(),
                     isinstance(e, envs.GameConnectionError)))
        return
    records.put(("started",))
    store, stop = ParamStore(params, version), threading.Event()
    threading.Thread(target=_receive_params, args=(params_q, store, stop, stop_event),
                     daemon=True, name="params").start()
    try:
        actor.run(_TaggedQueue(records, actor), store, RatioPacer(0.0, 1.0, enabled=False),
                  stop)
    finally:
        stop.set()
        actor.close()
    failure = None
    if actor.error is not None:
        failure = (f"the actor process failed: {type(actor.error).__name__}: {actor.error}; "
                   "its traceback:\n"
                   + "".join(traceback.format_exception(actor.error)).rstrip())
    records.put(("ended", actor.ended, failure, actor.wait_time, actor.env_wait_time))
