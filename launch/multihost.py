"""The learner across several processes (one per host) with ``jax.distributed``.

With ``learner.num_processes`` = P > 1 the same command runs once on each host, each with its
own ``learner.process_id`` and the same ``learner.coordinator_address`` and run directory.
:func:`initialize` joins the processes (``jax.distributed.initialize``; on CPUs the
collectives go through gloo), after which ``jax.devices()`` lists every device of every
process and the learner's mesh (``rl/sharding.py``) spans them all: each device computes the
gradients of its share of the batch and XLA all-reduces them across hosts.

Everything else stays identical in every process, so that each runs the same programs in the
same order (JAX's multi-controller model): in lockstep mode each process steps its own
env.num_envs envs (its own seed stream, ``launch.ray_actors.SEED_STRIDE`` apart), and
:func:`gather_steps` gathers every process's vector step to all of them. Each process then
takes in all P steps in process order (process p's envs are replay group p, as a Ray actor's
are), so every process holds the same replay, counters, episode returns and health flags;
replicated params and replay mean each process holds a full copy. Process 0 writes the run's
logs and checkpoints' metadata and runs the evaluations (:func:`broadcast_from_first` hands
their mean to the others); the other processes log to ``RUN_DIR/process_<p>/``. Checkpoints
are collective (orbax saves and restores with every process).

Prioritised sampling is exact over all processes' streams: the one replay (replicated) holds
them all, and the sampled batch is split across the devices.
"""

from __future__ import annotations

import socket
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

import envs
from launch.actor import VectorStep
from rl.config import LearnerConfig

PROBE_INTERVAL = 0.5
"""Seconds between two tries to reach process 0's coordinator."""


class CoordinatorUnreachable(RuntimeError):
    """Process 0 cannot serve at learner.coordinator_address, or another process cannot
    reach it within learner.coordinator_timeout."""


def initialize(learner: LearnerConfig) -> None:
    """Join this process to the others (nothing with one process). Call it before anything
    uses a JAX device.

    JAX's coordination client ends the process (abort, no Python exception) when it cannot
    register, so the address is checked first: process 0 must be able to listen on it,
    the others must reach it within learner.coordinator_timeout. A process that never
    joins still ends the others through JAX after that timeout.

    Raises:
      CoordinatorUnreachable: the check failed (naming the address and this process).
    """
    if learner.num_processes == 1:
        return
    _check_address(learner)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(learner.coordinator_address, learner.num_processes,
                               learner.process_id,
                               initialization_timeout=learner.coordinator_timeout)


def _check_address(learner: LearnerConfig) -> None:
    """Process 0: the coordinator's port can be listened on here; others: it answers."""
    host, port = learner.coordinator_address.rsplit(":", 1)
    where = (f"learner.coordinator_address={learner.coordinator_address} (process "
             f"{learner.process_id} of {learner.num_processes})")
    if learner.process_id == 0:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, int(port)))
        except OSError as e:
            raise CoordinatorUnreachable(
                f"{where}: process 0 serves the coordinator there but cannot listen on it "
                f"({e}); name an address of this machine and a free port") from None
        return
    deadline = time.monotonic() + learner.coordinator_timeout
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=PROBE_INTERVAL).close()
            return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise CoordinatorUnreachable(
                    f"{where}: no coordinator answered within learner.coordinator_timeout="
                    f"{learner.coordinator_timeout} s ({e}); start process 0 with the same "
                    "address") from None
            time.sleep(PROBE_INTERVAL)


def gather_steps(record: VectorStep, stop: bool, num_envs: int
                 ) -> tuple[list[VectorStep], bool]:
    """Every process's vector step of this turn, in process order, and whether any process
    asked to stop (Ctrl-C). Collective: every process calls it once per vector step.

    Args:
      record: this process's vector step (its slot arrays [num_envs, ...]).
      stop: this process's stop request.
      num_envs: env.num_envs (episodes are padded to it to give every process one shape).

    Returns:
      (records, stop): records[p] is process p's step with ``actor`` = p, its numbers as
      every process sees them (returns in float32), so that all take in the same values.
    """
    episodes = record.episodes
    pad = num_envs - len(episodes)
    local = dict(
        slot=record.slot, taken=np.int32(record.taken), epsilon=np.float32(record.epsilon),
        version=np.int32(record.params_version), stop=np.int32(stop),
        episodes=np.int32(len(episodes)),
        env_index=np.asarray([e.env_index for e in episodes] + [0] * pad, np.int32),
        return_=np.asarray([e.return_ for e in episodes] + [0.0] * pad, np.float32),
        length=np.asarray([e.length for e in episodes] + [0] * pad, np.int32),
        truncated=np.asarray([e.truncated for e in episodes] + [False] * pad, bool))
    every = multihost_utils.process_allgather(local)
    records = []
    for p in range(len(every["taken"])):
        finished = [envs.EpisodeStats(env_index=int(every["env_index"][p, j]),
                                      return_=float(every["return_"][p, j]),
                                      length=int(every["length"][p, j]),
                                      truncated=bool(every["truncated"][p, j]))
                    for j in range(int(every["episodes"][p]))]
        slot = jax.tree.map(lambda v, own: np.asarray(v[p]).astype(own.dtype, copy=False),
                            every["slot"], record.slot)
        records.append(VectorStep(slot=slot, episodes=finished, taken=int(every["taken"][p]),
                                  epsilon=float(every["epsilon"][p]),
                                  params_version=int(every["version"][p]), actor=p))
    return records, bool(np.any(every["stop"]))


def broadcast_from_first(value: float) -> float:
    """Process 0's ``value`` in every process (collective; the others pass a placeholder)."""
    return float(multihost_utils.broadcast_one_to_all(np.float32(value)))
