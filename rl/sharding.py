"""The learner on several devices: data parallelism through ``jax.sharding``.

With ``learner.devices`` > 1 the learner builds a :class:`jax.sharding.Mesh` with one axis,
``data`` (:func:`learner_mesh`), places the train state and the replay on every device of
it (:func:`replicate`) and traces its update under ``jax.set_mesh(mesh)``. Inside the
update, :func:`shard_batch` constrains each sampled batch to be split along ``data``, so
XLA's SPMD partitioner runs the forward and backward passes of each device's share of the
batch on that device and all-reduces the gradients (GSPMD; no ``pmap``, no hand-written
collectives). Under no mesh (one device) :func:`shard_batch` changes nothing, so the pure
learner functions are the same code on one device and on many.

The replay is replicated: every device holds the whole buffer and runs the same ``add`` and
the same ``sample`` (same key, same sum tree), so prioritised sampling is exactly that of one
device; only the sampled batch is split. The cost is the buffer's memory on every device
(a replay that does not fit one device would need sharding by env stream, not done here).

With several learner processes (``launch/multihost.py``) the mesh holds every device of
every process, and "replicated" means a copy on each of them.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rl.config import ConfigError, LearnerConfig

DATA_AXIS = "data"
"""Name of the mesh axis the batch is split along."""


def learner_mesh(learner: LearnerConfig, batch_size: int,
                 devices: list[jax.Device] | None = None) -> Mesh | None:
    """The learner's mesh over the first ``learner.devices`` of ``devices`` (default
    ``jax.devices()``), or None for one device.

    Raises:
      ConfigError: more devices asked for than there are (naming learner.devices and the
        devices found), or a batch that does not split evenly across them (naming
        training.batch_size).
    """
    devices = jax.devices() if devices is None else devices
    count = len(devices) if learner.devices == "all" else learner.devices
    if count > len(devices):
        raise ConfigError("learner.devices", learner.devices,
                          f"this process has {len(devices)} {devices[0].platform} device(s); "
                          "on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N "
                          "makes N")
    if count == 1:
        return None
    if batch_size % count:
        raise ConfigError("training.batch_size", batch_size,
                          f"must be a multiple of the {count} learner devices")
    return Mesh(np.asarray(devices[:count]), (DATA_AXIS,))


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """``tree`` with every array on every device of ``mesh`` (unchanged without a mesh).
    A mesh spanning processes gets each array from its host copy: a device array put
    straight onto other processes' devices gives an array whose shards cannot be read."""
    if mesh is None:
        return tree
    if jax.process_count() > 1:
        tree = jax.device_get(tree)
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def first_device(tree: Any, mesh: Mesh | None) -> Any:
    """``tree``'s replicated arrays as their copy on this process's first device of the mesh
    (unchanged without a mesh; no copy made): what an actor acts with, so that acting runs
    once rather than on every learner device, and only on devices of this process."""
    if mesh is None:
        return tree
    return jax.tree.map(lambda x: x.addressable_data(0), tree)


def shard_batch(batch: Any) -> Any:
    """Inside a traced update: ``batch`` (leaves with a leading batch axis) constrained to be
    split along the ``data`` axis of the mesh set by ``jax.set_mesh``; unchanged when no
    mesh with that axis is set."""
    if DATA_AXIS not in jax.sharding.get_abstract_mesh().axis_names:
        return batch
    return jax.lax.with_sharding_constraint(batch, PartitionSpec(DATA_AXIS))
