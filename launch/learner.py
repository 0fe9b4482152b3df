"""The learner of the actor/learner split: the train state, the device replay and the update.

It takes the actor's vector steps into the replay with the jitted ``add`` (on TrackMania an
episode's slots wait until it ends, so a lost connection drops it whole), earns grad steps at
``training.replay_ratio`` once the replay holds ``learning_starts`` slots, runs them as
jitted ``update`` calls, and hands out copies of the acting params for the actor. With
``learner.devices`` > 1 the update runs on a mesh of devices (``rl/sharding.py``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import envs
from launch.actor import VectorStep
from rl import agent as agent_lib
from rl import health as health_lib
from rl import schedules, sharding
from rl.config import Config
from rl.learners import make_agent, update_metric_names

log = logging.getLogger("launch")

DEMO_CHUNK = 1024
"""Demo slots written to the replay per device call when injecting."""


class Learner:
    """Owns the TrainState, the replay state and the run's loop counters.

    Args:
      config, spec: the run's config and env spaces.
      agent: the learner object of ``rl.learners.make_agent``.
      state, replay_state: the train and replay states to start from (fresh or restored).
      loop: the loop counters (checkpointed with the state); this object updates env_steps,
        vector_steps, episodes, replay_slots and grad_credit.
      learning_starts: replay slots before the first grad step.

    Raises:
      ConfigError: learner.devices asks for more devices than there are, or a batch that
        does not split across them.
    """

    def __init__(self, config: Config, spec: envs.EnvSpec, agent: Any, state: Any,
                 replay_state: Any, loop: dict, learning_starts: int):
        self.config, self.spec, self.agent = config, spec, agent
        self.mesh = sharding.learner_mesh(config.learner, config.training.batch_size)
        if self.mesh is not None:
            log.info("learner on %d devices (%s), %d transitions of each batch per device",
                     self.mesh.size, ", ".join(str(d) for d in self.mesh.devices.flat),
                     config.training.batch_size // self.mesh.size)
        self.state = sharding.replicate(state, self.mesh)
        self.replay_state = sharding.replicate(replay_state, self.mesh)
        self.loop = loop
        self.learning_starts = learning_starts
        self.grad_steps = int(state.grad_steps)
        self.busy_time = 0.0  # seconds in update calls since the start
        self._whole_episodes = envs.is_trackmania(config.env.id)
        # Per actor (replay group): slots of the running episode (whole episodes only).
        self._pending: list[list[dict]] = [[] for _ in range(config.actor_groups)]
        self._ready: collections.deque[tuple[int, dict]] = collections.deque()  # to add
        self._add = jax.jit(agent.replay.add, donate_argnums=0)
        self._drop = jax.jit(agent.replay.drop_partial_episodes, donate_argnums=0)
        self._fold = jax.jit(agent_lib.fold_metrics, donate_argnums=0)
        self._set_demo_weight = jax.jit(agent.replay.set_demo_weight, donate_argnums=0)
        self._copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))
        self.metric_names = update_metric_names(config)
        self._interval = agent_lib.metrics_fold(self.metric_names)
        self.demo_weight: float | None = None
        self._update = self._compile_update(loop["lr_scale"])

    def _compile_update(self, lr_scale: float):
        """The jitted update with the learning rates times ``lr_scale`` (1 but after
        rollbacks); compiled at once on TrackMania, where a first call would stall."""
        config, spec = self.config, self.spec
        learner = self.agent if lr_scale == 1.0 else make_agent(
            health_lib.scale_learning_rates(config, lr_scale), spec.num_actions, spec.is_image,
            spec.feature_size)
        on_mesh = {} if self.mesh is None else dict(out_shardings=jax.sharding.NamedSharding(
            self.mesh, jax.sharding.PartitionSpec()))  # state, replay and metrics replicated
        jitted = jax.jit(learner.update, donate_argnums=(0, 1), **on_mesh)
        if self._whole_episodes:
            with self._on_mesh():
                return jitted.lower(self.state, self.replay_state, 0.4).compile()
        return jitted

    def _on_mesh(self):
        """The context an update is traced in: the learner's mesh, if any."""
        return contextlib.nullcontext() if self.mesh is None else jax.set_mesh(self.mesh)

    def compile(self) -> None:
        """Compile ``add`` and the metric fold for the shapes of a vector step, before the
        game's clock starts."""
        e, spec = self.config.env.num_envs, self.spec
        scalar = jax.ShapeDtypeStruct((), np.float32)
        self._fold = self._fold.lower(agent_lib.metrics_fold(self.metric_names),
                                      {k: scalar for k in self.metric_names}).compile()
        self._add = self._add.lower(
            self.replay_state, obs=envs.zeros_obs(spec, (e,)),
            action=np.zeros((e, *spec.action_shape), spec.action_dtype),
            reward=np.zeros(e, np.float32), terminated=np.zeros(e, bool),
            truncated=np.zeros(e, bool), valid=np.ones(e, bool),
            steps_since_start=np.zeros(e, np.int32), is_expert=np.zeros(e, bool),
            group=0).compile()

    # --- data in ---------------------------------------------------------------------------
    def inject_demos(self, demo_slots: dict[str, np.ndarray] | None) -> None:
        """Set the demo sampling weight and, into a fresh replay (not one restored with its
        demos), write the demonstration slots (``launch.run.load_demo_slots``)."""
        if demo_slots is None:
            return
        self.demo_weight = schedules.demo_sampling_weight(self.config.demos,
                                                          self.loop["env_steps"])
        if self.loop["replay_slots"] > 0:
            return
        replay = self.agent.replay
        self.replay_state = self._set_demo_weight(self.replay_state, self.demo_weight)
        add_sequence = jax.jit(replay.add_sequence, donate_argnums=0)
        length = len(demo_slots["valid"])
        for group in range(replay.num_groups):  # each actor's streams hold the demos
            for start in range(0, length, DEMO_CHUNK):
                chunk = jax.tree.map(lambda v: v[start:start + DEMO_CHUNK], demo_slots)
                self.replay_state = add_sequence(self.replay_state, chunk, group)
        log.info("injected %d demo transitions (%d slots per env stream, %d left for the "
                 "agent's own before demos are overwritten); demo sampling weight %.3g",
                 int(demo_slots["valid"].sum()), length, replay.capacity_per_stream - length,
                 self.demo_weight)

    def accept(self, record: VectorStep) -> None:
        """Count a vector step and queue its slots for the replay (its actor's group);
        grad steps are earned by its env steps once the replay (with what is queued) holds
        learning_starts slots."""
        loop, slot, group = self.loop, record.slot, record.actor
        loop["vector_steps"] += 1
        loop["env_steps"] += record.taken
        loop["episodes"] += len(record.episodes)
        if self._whole_episodes:
            pending = self._pending[group]
            pending.append(slot)
            if not slot["valid"].all():  # the final frame: the episode is whole
                self._ready.extend((group, s) for s in pending)
                pending.clear()
        else:
            self._ready.append((group, slot))
        num_envs = self.config.env.num_envs
        if loop["replay_slots"] + len(self._ready) * num_envs >= self.learning_starts:
            loop["grad_credit"] += record.taken * self.config.training.replay_ratio

    def drop_partial_episode(self, group: int = 0, env_indices: list[int] | None = None) -> int:
        """Forget the running episodes of actor ``group`` (its game was lost, or the Ray
        actor died), or of its envs ``env_indices`` only (indices within the group; a bad value
        ended their episodes): the slots waiting for the episode's end, and in the replay
        the slots of each stream's episode in progress (``DeviceReplay.
        drop_partial_episodes``), so no n-step window spans the break. Returns the env
        steps dropped."""
        # Whole-episode groups (TrackMania) have one env: its pending slots are the episode.
        dropped = sum(int(slot["valid"].sum()) for slot in self._pending[group])
        self._pending[group].clear()
        self.add_ready()
        streams = np.ones(self.config.env.num_envs, bool)
        if env_indices is not None:
            streams[:] = False
            streams[env_indices] = True
        stored = int(jnp.sum(self.replay_state.valid))
        self.replay_state = self._drop(self.replay_state, group, streams)
        return dropped + stored - int(jnp.sum(self.replay_state.valid))

    def add_ready(self) -> None:
        """Write every queued slot to the device replay (its actor's group)."""
        while self._ready:
            group, slot = self._ready.popleft()
            self.replay_state = self._add(self.replay_state, **slot, group=group)
            self.loop["replay_slots"] += self.config.env.num_envs

    # --- learning --------------------------------------------------------------------------
    def can_update(self) -> bool:
        """Whether the replay ratio owes a whole update call (grad_steps_per_call)."""
        return self.loop["grad_credit"] >= self.config.training.grad_steps_per_call

    def update(self) -> None:
        """One update call (grad_steps_per_call grad steps) on the replay, with the
        importance exponent of this env step; its metrics join the log interval's fold."""
        training = self.config.training
        beta = schedules.importance_exponent(self.config.replay, self.loop["env_steps"],
                                             training.total_steps, self.grad_steps)
        start = time.perf_counter()
        with self._on_mesh():
            self.state, self.replay_state, metrics = self._update(self.state,
                                                                  self.replay_state, beta)
        self._interval = self._fold(self._interval, metrics)
        jax.block_until_ready(self.state.grad_steps)
        self.busy_time += time.perf_counter() - start
        self.loop["grad_credit"] -= training.grad_steps_per_call
        self.grad_steps += training.grad_steps_per_call

    def take_metrics(self) -> dict[str, float]:
        """Means (and extremes) of the update metrics since the last call; {} if none ran."""
        metrics = agent_lib.fold_means(self._interval)
        self._interval = agent_lib.metrics_fold(self.metric_names)
        return metrics

    def decay_demo_weight(self) -> float | None:
        """Move the demo sampling weight to its value at this env step (seed 004's decay);
        returns it, or None without demos."""
        if self.demo_weight is None:
            return None
        weight = schedules.demo_sampling_weight(self.config.demos, self.loop["env_steps"])
        if weight != self.demo_weight:
            self.replay_state = self._set_demo_weight(self.replay_state, weight)
            self.demo_weight = weight
        return weight

    # --- params out ------------------------------------------------------------------------
    def acting_params(self) -> Any:
        """What the actor needs to act (``agent.acting_state``, on the first learner device),
        sharing the learner's buffers: only for a caller that is done with it before the next
        :meth:`update`."""
        return sharding.first_device(self.agent.acting_state(self.state), self.mesh)

    def acting_params_copy(self) -> Any:
        """A copy of the acting params that the next update's donation leaves intact,
        ready when returned (so that the actor's next act never waits on the learner)."""
        return jax.block_until_ready(self._copy(self.acting_params()))

    def restore(self, state: Any, lr_scale: float) -> None:
        """Go on from ``state`` (a rollback's best checkpoint) with the learning rates times
        ``lr_scale``."""
        self.state = sharding.replicate(state, self.mesh)
        self._update = self._compile_update(lr_scale)

    @property
    def credit_backlog(self) -> float:
        """Grad steps owed by the replay ratio and not yet run."""
        return self.loop["grad_credit"]


def learning_starts(config: Config) -> int:
    """Replay slots before the first grad step: training.learning_starts, and at least the
    n_step + 1 slots per stream that sampling needs."""
    return max(config.training.learning_starts,
               config.env.num_envs * config.actor_groups * (config.agent.n_step + 1))

