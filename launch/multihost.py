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
      (records, stop): records[p] is process p's step with ``actor`` = p, bit for bit as
      process p made it (its episodes' returns as float64), the same in every process.
    """
    episodes = record.episodes
    pad = num_envs - len(episodes)
    local = dict(
        slot=record.slot, taken=np.int64(record.taken), epsilon=np.float64(record.epsilon),
        version=np.int64(record.params_version), stop=np.bool_(stop),
        episodes=np.int64(len(episodes)),
        env_index=np.asarray([e.env_index for e in episodes] + [0] * pad, np.int64),
        return_=np.asarray([e.return_ for e in episodes] + [0.0] * pad, np.float64),
        length=np.asarray([e.length for e in episodes] + [0] * pad, np.int64),
        truncated=np.asarray([e.truncated for e in episodes] + [False] * pad, bool))
    every = _allgather(local)
    records = []
    for p, step in enumerate(every):
        finished = [envs.EpisodeStats(env_index=int(step["env_index"][j]),
                                      return_=float(step["return_"][j]),
                                      length=int(step["length"][j]),
                                      truncated=bool(step["truncated"][j]))
                    for j in range(int(step["episodes"]))]
        records.append(VectorStep(slot=step["slot"], episodes=finished,
                                  taken=int(step["taken"]), epsilon=float(step["epsilon"]),
                                  params_version=int(step["version"]), actor=p))
    return records, any(bool(step["stop"]) for step in every)


def _allgather(tree: dict) -> list[dict]:
    """``tree`` (numpy leaves of the same shapes and dtypes in every process) of every
    process, in process order. Packed into one byte array: one all-gather per call, where a
    pytree of 17 leaves took 26 ms a call against 2 ms on 2 CPU processes."""
    leaves, treedef = jax.tree.flatten(tree)
    leaves = [np.asarray(leaf, order="C") for leaf in leaves]
    packed = np.concatenate([leaf.reshape(-1).view(np.uint8) for leaf in leaves])
    rows = np.asarray(multihost_utils.process_allgather(packed)).reshape(-1, packed.size)
    out = []
    for row in rows:
        parts, offset = [], 0
        for leaf in leaves:
            parts.append(row[offset:offset + leaf.nbytes].view(leaf.dtype).reshape(leaf.shape))
            offset += leaf.nbytes
        out.append(jax.tree.unflatten(treedef, parts))
    return out


def broadcast_from_first(value: float) -> float:
    """Process 0's ``value`` in every process (collective; the others pass a placeholder)."""
    return float(multihost_utils.broadcast_one_to_all(np.float32(value)))
