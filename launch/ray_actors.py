"""Actors on Ray (``actors.backend=ray``): actors.num_actors copies of the split loop's actor,
on this machine or on the machines of a Ray cluster.

The layout is Sebulba's (Hessel et al. 2021, "Podracer architectures for scalable
reinforcement learning") with the actors in processes that Ray places and restarts (Moritz
et al. 2018, "Ray: a distributed framework for emerging AI applications"), as tmrl's
rollout workers on several game PCs feed one trainer. Each Ray actor (:class:`ActorHost`)
runs a :class:`launch.actor.Actor` in a thread of its own process, with its own env workers
(env.num_envs gymnasium envs, or one TrackMania game), seed stream (``seed + SEED_STRIDE *
index``, fresh after a restart) and expert mixer, and returns its vector steps in chunks of
up to actors.chunk_size through Ray's object store. :class:`RayActors` is the learner
process's side; it has the thread actor's interface, so the loop runs it unchanged: its
thread forwards each chunk's records, tagged with the actor's index (its replay group), to
the loop's queue, and sends each new publication of the acting params (one ``ray.put`` for
all actors) with the next call to each actor. Only arrays, numbers, strings and the config
cross the wire (:func:`to_wire`).

Faults: an actor that dies (its machine switched off, its game lost beyond
trackmania.reconnect_attempts, a Python exception) is restarted by Ray up to
actors.max_restarts times; the learner drops its partial episodes (an
:class:`launch.actor.ActorLost` record) and learns from the others meanwhile;
``perf/actors_alive`` counts the live ones. When none has answered for actors.lost_timeout
seconds the actor side ends as "actors lost": the run checkpoints and exits with code 3.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import socket
import sys
import threading
import time
import traceback
import warnings
from typing import Any

import jax
import numpy as np

import envs
from launch.actor import QUEUE_POLL, Actor, ActorLost, EpisodeDropped, ParamStore, RatioPacer, \
    VectorStep, hand_over
from rl.config import ActorsConfig, Config

log = logging.getLogger("launch")

SEED_STRIDE = 1_000_003
"""Actor i runs with seed + SEED_STRIDE * i (env seeds, mixer) and the exploration key folded
with i: independent streams, and actor 0 seeded as the thread actor."""
CHUNK_WAIT = 0.5
"""Seconds an actor waits to fill a chunk before it sends what it has."""
RETRY_DELAY = 1.0
"""Seconds between calls to an actor that did not answer (Ray may be restarting it)."""
STOP_TIMEOUT = 10.0
"""Seconds to wait for the actors to close their env workers before killing them."""
START_TIMEOUT = 600.0
"""Seconds to wait for every actor to be placed, compile and reset its envs."""
PROBE_TIMEOUT = 5.0
"""Seconds to wait for a TCP connection to the cluster address before giving up."""
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch that, set to 0 before ``import ray``, keeps a local instance on 127.0.0.1."""


class ClusterUnreachable(RuntimeError):
    """The Ray cluster of actors.ray_address cannot be reached."""


class RayActorsError(RuntimeError):
    """A Ray actor failed at its start; the message holds its traceback."""


def _ray():
    """The ray module, or a clear error naming the extra that installs it."""
    try:
        import ray
    except ImportError as e:
        raise ModuleNotFoundError("actors.backend=ray needs Ray: pip install -e "
                                  "'.[distributed]'") from e
    return ray


_started_here = False  # whether connect() started the local instance (disconnect ends it)


def connect(actors: ActorsConfig) -> None:
    """Start a local Ray instance (actors.ray_address None; on the loopback address only) or
    join the cluster at ``auto`` / ``HOST:PORT``; a no-op when Ray is already up.
    :func:`disconnect` shuts down an instance started here.

    Raises:
      ClusterUnreachable: no cluster answers at the address (a TCP probe of HOST:PORT for
        PROBE_TIMEOUT seconds first, so a dead address fails fast and clearly).
      ModuleNotFoundError: Ray is not installed (the ``[distributed]`` extra).
    """
    address = actors.ray_address
    if address is None and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ONLY, "0")
    global _started_here
    ray = _ray()
    if ray.is_initialized():
        return
    if address not in (None, "auto"):
        host, port = address.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT).close()
        except OSError as e:
            raise ClusterUnreachable(f"cannot reach the Ray cluster at {address} "
                                     f"(actors.ray_address): {e}; start it with `ray start "
                                     "--head` there, or leave actors.ray_address unset for "
                                     "a local instance") from None
    try:
        with warnings.catch_warnings():  # Ray forks then execs its daemons: harmless here
            warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
            # "local": a new instance even where `ray start` left one running.
            ray.init(address=address or "local", include_dashboard=False,
                     configure_logging=False, log_to_driver=True)
    except ConnectionError as e:
        raise ClusterUnreachable(f"cannot join the Ray cluster at {address} "
                                 f"(actors.ray_address): {e}") from None
    if address is None:
        _started_here = True
        log.info("started a local Ray instance (%s)", ray.get_runtime_context().gcs_address)
        return
    log.info("joined the Ray cluster at %s: %s", address, ray.cluster_resources())


def disconnect() -> None:
    """Shut down the local Ray instance :func:`connect` started (a joined cluster runs on)."""
    global _started_here
    if _started_here:
        sys.modules["ray"].shutdown()
        _started_here = False


def to_wire(record: VectorStep | EpisodeDropped) -> dict[str, Any]:
    """A record as plain data for Ray's object store: a dict of arrays, numbers and
    strings (episodes as dicts)."""
    data = {k: v for k, v in vars(record).items() if k != "actor"}
    if isinstance(record, VectorStep):
        data["episodes"] = [dataclasses.asdict(e) for e in record.episodes]
    return {"kind": type(record).__name__, **data}


def from_wire(data: dict[str, Any], actor: int) -> VectorStep | EpisodeDropped:
    """The record of :func:`to_wire`, tagged with the index of the actor that sent it."""
    data = dict(data)
    kind = data.pop("kind")
    if kind == "EpisodeDropped":
        return EpisodeDropped(**data, actor=actor)
    data["episodes"] = [envs.EpisodeStats(**e) for e in data["episodes"]]
    return VectorStep(**data, actor=actor)


class ActorHost:
    """One Ray actor: a :class:`launch.actor.Actor` stepping in a thread of this process,
    its records waiting in a bounded queue (actors.queue_size vector steps; a full queue
    holds the actor) for :meth:`collect`. Built by Ray from plain data; a restart by Ray
    builds it again with a fresh seed.

    Args:
      config, spec: the run's config and env spaces; index: the actor's index i.
      counters: the run's loop counters at the start; learning_starts: replay slots before
        learning; act_key: uint32 [2] key data; floor_raise: the expert's floor raise.

    The actor compiles ``act`` on freshly initialised params and resets its envs here; it
    steps from the first :meth:`collect`, which brings the learner's params (the arguments
    stay small, so Ray can always rebuild an actor it restarts).
    """

    def __init__(self, config: Config, spec: envs.EnvSpec, index: int, counters: dict,
                 learning_starts: int, act_key: np.ndarray, floor_raise: dict | None):
        import ray

        from launch.experts import build_expert  # here: heavy, and only in the actor
        from rl.learners import make_agent

        self.index, self.failure, self._thread = index, None, None
        counters = dict(counters)
        with warnings.catch_warnings():  # Ray's own use of a deprecated API
            warnings.simplefilter("ignore", DeprecationWarning)
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        if restarted:  # a fresh seed for the new env workers and mixer
            counters["restarts"] += 1 + int.from_bytes(os.urandom(3), "little")
        own = dataclasses.replace(config, seed=config.seed + SEED_STRIDE * index)
        self._records: queue.Queue = queue.Queue(maxsize=config.actors.queue_size)
        self._stop = threading.Event()
        try:
            agent = make_agent(own, spec.num_actions, spec.is_image, spec.feature_size)
            key = jax.random.fold_in(jax.numpy.asarray(act_key), index)
            self.actor = Actor(own, spec, agent, counters, learning_starts, key,
                               build_expert(own, spec), floor_raise)
            init = agent.init(key, envs.zeros_obs(spec, (config.env.frame_stack,)))
            self.actor.compile(agent.acting_state(init))
            self.actor.start()
        except BaseException as e:
            self.failure = (type(e).__name__, str(e), traceback.format_exc(),
                            isinstance(e, envs.GameConnectionError))

    def ready(self) -> tuple[int, str] | tuple:
        """(pid, node address) once the env workers run; else (error type, message,
        traceback, whether it was a game connection error)."""
        if self.failure is not None:
            return self.failure
        import ray
        return os.getpid(), ray.util.get_node_ip_address()

    def collect(self, params: Any, version: int, counters: dict[str, int]) -> dict[str, Any]:
        """Publish ``params`` (None: unchanged) and the run's counters (env_steps, episodes,
        replay_slots: the epsilon schedule, warm-up and end follow all actors' steps), then
        return up to actors.chunk_size records, waiting at most CHUNK_WAIT seconds.

        Returns: dict(records=[wire records], ended=None or how the actor ended ("done",
        "stopped"), wait_time, env_wait_time (seconds since the start)). An actor that
        failed (an exception, a lost game, a failed start after a restart) prints its
        traceback and ends its process, so that Ray restarts it.
        """
        if self.failure is not None:
            self._crash(self.failure[2])
        actor = self.actor
        if params is not None:
            params = jax.device_put(params)
            if self._thread is None:
                self.store = ParamStore(params, version)
                self._thread = threading.Thread(
                    target=actor.run, name="actor", daemon=True,
                    args=(self._records, self.store, RatioPacer(0.0, 1.0, enabled=False),
                          self._stop))
                self._thread.start()
            else:
                self.store.publish(params, version)
        actor.env_steps = max(actor.env_steps, counters["env_steps"])
        actor.episodes = max(actor.episodes, counters["episodes"])
        actor.replay_slots = max(actor.replay_slots, counters["replay_slots"])
        records, deadline = [], time.monotonic() + CHUNK_WAIT
        while len(records) < self.actor.config.actors.chunk_size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                records.append(to_wire(self._records.get(timeout=min(left, QUEUE_POLL))))
            except queue.Empty:
                if actor.ended is not None:
                    break
        ended = actor.ended if self._records.empty() else None
        # A bad env value (env.on_bad_value error) ends this actor like a crash: Ray
        # restarts it with fresh envs and the learner drops its partial episodes.
        if ended in ("error", "game lost", "bad value"):
            error = actor.error
            self._crash("".join(traceback.format_exception(error)) if error is not None
                        else "the game was lost beyond trackmania.reconnect_attempts"
                        if ended == "game lost" else "a bad env value (env.on_bad_value)")
        return dict(records=records, ended=ended, wait_time=actor.wait_time,
                    env_wait_time=actor.env_wait_time)

    def _crash(self, text: str) -> None:
        print(f"actor {self.index} failed (Ray restarts it while actors.max_restarts "
              f"allows):\n{text}", file=sys.stderr, flush=True)
        os._exit(1)

    def stop(self) -> None:
        """Stop the actor's thread and close its env workers."""
        if self.failure is not None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
        self.actor.close()


class RayActors:
    """The learner process's side of the Ray actors, with the thread actor's interface
    (``start``, ``run``, ``close``, ``ended``, ``error``, the wait clocks).

    Args: as :class:`launch.actor.Actor` (the expert is rebuilt in each actor from the
    config; here it only says whether there is one; ``counters`` is the loop's live dict,
    read for the counters each call sends).
    """

    def __init__(self, config: Config, spec: envs.EnvSpec, counters: dict,
                 learning_starts: int, act_key: jax.Array, expert: Any,
                 floor_raise: dict | None):
        self.config, self.expert, self.counters = config, expert, counters
        self.num_actors = config.actors.num_actors
        self.wait_time = self.env_wait_time = 0.0
        self.ended: str | None = None
        self.error: BaseException | None = None
        self._args = (spec, dict(counters), learning_starts, np.asarray(act_key), floor_raise)
        self._version = -1  # of the params last put in the object store
        self._hosts: list[Any] = []
        self._alive = [False] * self.num_actors
        self._clocks = np.zeros((self.num_actors, 2))  # wait, env wait seconds per actor
        self._paced = 0.0  # seconds the calls waited for the learner (bounded mode)

    @property
    def started(self) -> bool:
        """Whether every actor has started its env workers."""
        return bool(self._hosts) and self.ended != "failed to start"

    @property
    def alive(self) -> int:
        """Actors whose last call answered."""
        return sum(self._alive)

    def compile(self, params: Any) -> None:
        """Nothing here: each actor compiles ``act`` before it starts its envs."""

    def start(self) -> None:
        """Create the actors (Ray places them by actors.resources_per_actor) and wait until
        each has reset its env workers.

        Raises:
          envs.GameConnectionError: an actor could not start its game.
          RayActorsError: an actor failed otherwise (its traceback in the message).
        """
        ray = _ray()
        actors = self.config.actors
        resources = dict(actors.resources_per_actor)
        options = dict(num_cpus=resources.pop("CPU", 0), num_gpus=resources.pop("GPU", 0),
                       resources=resources, max_restarts=actors.max_restarts,
                       max_task_retries=0)
        if not options["num_gpus"]:  # no GPU of its own: keep its JAX off the learner's
            options["runtime_env"] = {"env_vars": {"JAX_PLATFORMS": "cpu"}}
        available = ray.cluster_resources()
        short = {k: v for k, v in actors.resources_per_actor.items()
                 if available.get(k, 0) < v * self.num_actors}
        if short:
            log.warning("the Ray cluster has %s of %s; %d actors need %s each "
                        "(actors.resources_per_actor): the missing ones wait for machines "
                        "that have them (up to %.0f s)",
                        {k: available.get(k, 0) for k in short}, sorted(short),
                        self.num_actors, actors.resources_per_actor, START_TIMEOUT)
        remote = ray.remote(ActorHost)
        spec, *rest = self._args
        self._hosts = [remote.options(**options).remote(self.config, spec, i, *rest)
                       for i in range(self.num_actors)]
        try:
            answers = ray.get([h.ready.remote() for h in self._hosts], timeout=START_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            self.ended = "failed to start"
            raise RayActorsError(
                f"the {self.num_actors} Ray actors did not all start within "
                f"{START_TIMEOUT:.0f} s; the cluster has {ray.cluster_resources()} and each "
                f"actor needs {actors.resources_per_actor} (actors.resources_per_actor)"
            ) from None
        for i, answer in enumerate(answers):
            if len(answer) == 2:
                self._alive[i] = True
                log.info("Ray actor %d: pid %d on %s", i, *answer)
                continue
            self.ended = "failed to start"
            name, message, trace, game = answer
            if game:
                raise envs.GameConnectionError(f"actor {i}: {message}")
            raise RayActorsError(f"Ray actor {i} failed at its start: {name}: {message}\n"
                                 f"{trace}")
        log.info("%d Ray actors started", self.num_actors)

    def run(self, handover: queue.Queue, store: ParamStore, pacer: RatioPacer,
            stop: threading.Event) -> None:
        """The forwarding thread: keep one ``collect`` call in flight per actor, hand each
        chunk's records over in order, drop a lost actor's partial episodes and call it
        again every RETRY_DELAY seconds. Ends (setting ``ended``) on ``stop``, when every
        actor is done, or as "actors lost" after actors.lost_timeout seconds without a live
        actor; never raises (an error goes to ``error``)."""
        try:
            self._forward(handover, store, pacer, stop)
        except BaseException as e:  # reported by the learner's thread
            self.error = e
            self.ended = "error"

    def _forward(self, handover: queue.Queue, store: ParamStore, pacer: RatioPacer,
                 stop: threading.Event) -> None:
        ray = _ray()
        lost_errors = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)
        sent = [-1] * self.num_actors  # params version each actor has
        params_ref, done, retry_at = None, set(), {}
        pending: dict[Any, int] = {}
        none_alive_since: float | None = None

        def call(i: int) -> None:
            nonlocal params_ref
            params, version = store.latest()
            if params_ref is None or version != self._version:
                params_ref, self._version = ray.put(jax.device_get(params)), version
            counters = {k: int(self.counters[k]) for k in ("env_steps", "episodes",
                                                            "replay_slots")}
            ref = self._hosts[i].collect.remote(
                params_ref if sent[i] != self._version else None, self._version, counters)
            sent[i] = self._version
            pending[ref] = i

        for i in range(self.num_actors):
            call(i)
        while not stop.is_set():
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=QUEUE_POLL) \
                if pending else ([], [])
            for ref in ready:
                i = pending.pop(ref)
                try:
                    out = ray.get(ref)
                except lost_errors as e:
                    self._lost(i, e, handover, stop)
                    sent[i], retry_at[i] = -1, time.monotonic() + RETRY_DELAY
                    continue
                if not self._alive[i]:
                    self._alive[i] = True
                    log.info("Ray actor %d is back (%d of %d alive)", i, self.alive,
                             self.num_actors)
                for data in out["records"]:
                    record = from_wire(data, i)
                    hand_over(handover, record, stop)
                    pacer.produced(getattr(record, "taken", 0))
                self._clocks[i] = out["wait_time"], out["env_wait_time"]
                self.env_wait_time = float(self._clocks[:, 1].sum())
                if out["ended"] is not None:
                    done.add(i)
                    continue
                self._paced += pacer.wait(stop)
                self.wait_time = float(self._clocks[:, 0].sum()) + self._paced
                call(i)
            now = time.monotonic()
            for i, when in list(retry_at.items()):
                if now >= when:
                    del retry_at[i]
                    call(i)
            if done and all(i in done or not self._alive[i] for i in range(self.num_actors)):
                self.ended = "done"  # the run's steps are taken (an actor may be down)
                return
            if self.alive == 0:
                none_alive_since = none_alive_since or now
                if now - none_alive_since > self.config.actors.lost_timeout:
                    log.error("no Ray actor answered for %.0f s (actors.lost_timeout)",
                              now - none_alive_since)
                    self.ended = "actors lost"
                    return
            else:
                none_alive_since = None
        self.ended = "stopped"

    def _lost(self, i: int, error: BaseException, handover: queue.Queue,
              stop: threading.Event) -> None:
        """Actor ``i`` did not answer: once per loss, log it and have the learner drop its
        partial episodes."""
        if not self._alive[i]:
            return
        self._alive[i] = False
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        log.warning("Ray actor %d lost (%s: %s); %d of %d alive, Ray restarts it while "
                    "actors.max_restarts=%d allows", i, type(error).__name__, reason,
                    self.alive, self.num_actors, self.config.actors.max_restarts)
        hand_over(handover, ActorLost(actor=i, reason=reason), stop)

    def close(self) -> None:
        """Stop the actors (they close their env workers), kill what did not stop within
        STOP_TIMEOUT seconds, and shut down the local Ray instance this run started."""
        if self._hosts:
            ray = _ray()
            stops = [h.stop.remote() for h in self._hosts]
            ray.wait(stops, num_returns=len(stops), timeout=STOP_TIMEOUT)
            for host in self._hosts:
                ray.kill(host, no_restart=True)
            self._hosts = []
        disconnect()
