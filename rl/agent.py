"""The value-based learner shared by IQN, C51 and DQN: one TrainState, pure functions.

Everything that does not depend on the return representation lives here: acting
(epsilon-greedy, noisy nets, action history), the gradient step with PER weighting,
gradient clipping and accumulation, the optimiser and its learning-rate schedule, hard /
soft / combined target updates, backup clamping, sampling and priority write-back, and the
metrics. A learner subclass supplies the network and the per-example loss.

Build with :func:`make_agent`; jit once at the edge, e.g.
``jax.jit(agent.update, donate_argnums=(0, 1))`` and ``jax.jit(agent.act, static_argnames="noisy")``.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Any, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from nets import Encoder, ValueHead, make_torso
from replay import Batch, DeviceReplay, ReplayState
from rl.config import AgentConfig, Config
from rl.sharding import shard_batch


class TrainState(flax.struct.PyTreeNode):
    """Everything the learner carries between steps.

    Attributes:
      params, target_params: online and target network parameters (target starts as a copy).
      batch_stats, target_batch_stats: BatchNorm running statistics and spectral-norm
        power-iteration vectors ({} when the network has neither).
      opt_state: optax state (clip, optimiser, gradient accumulation).
      rng: uint32 [2] PRNG key, split inside every update.
      grad_steps: int32 [] gradient computations (micro-batches) so far; optimizer updates
        are grad_steps // agent.grad_accumulation.
    """

    params: Any
    target_params: Any
    batch_stats: Any
    target_batch_stats: Any
    opt_state: Any
    rng: jax.Array
    grad_steps: jax.Array


class LossTerms(NamedTuple):
    """What a learner's loss returns per batch (all float32).

    per_example: [B] loss before importance weighting.
    priorities: [B] new PER priorities.
    td_abs: [B] |expected backup - Q(s, a)|.
    q: [B, A] online Q at the sampled states (no gradient), for the metrics.
    batch_stats: updated normalisation statistics of the online network.
    """

    per_example: jax.Array
    priorities: jax.Array
    td_abs: jax.Array
    q: jax.Array
    batch_stats: Any


METRIC_NAMES = ("loss", "q_mean", "q_min", "q_max", "td_abs_mean", "grad_norm",
                "clipped_fraction", "clip_ratio", "learning_rate", "target_age",
                "target_param_gap", "importance_weight_mean")
"""Scalars returned by ``update``: loss (importance-weighted mean), Q of the sampled states
(mean, min, max over batch and actions), mean |TD|, global grad norm before clipping, share
of steps clipped, clip ratio min(1, max_grad_norm / grad_norm) (seed 003's ClipΔ), current
learning rate, optimizer updates since the last hard target copy, relative distance
||online - target|| / ||online||, mean importance weight."""


def explore_mask(agent: AgentConfig, key: jax.Array, num_envs: int, epsilon: jax.Array
                 ) -> jax.Array:
    """Which of ``num_envs`` envs take a random action this step: bool [E], each True with
    probability ``epsilon`` (float scalar), drawn per env or once for all of them
    (``agent.epsilon_draw``)."""
    shape = (num_envs,) if agent.epsilon_draw == "env" else ()
    return jnp.broadcast_to(jax.random.uniform(key, shape) < epsilon, (num_envs,))


def where_tree(cond: jax.Array, new: Any, old: Any) -> Any:
    """Leaf-wise ``jnp.where(cond, new, old)`` over two pytrees of the same structure; ``cond``
    is a bool scalar (a due-or-not switch inside a jitted step)."""
    return jax.tree.map(lambda n, o: jnp.where(cond, n, o), new, old)


def all_finite(tree: Any) -> jax.Array:
    """bool scalar: every element of every float leaf of ``tree`` is finite (no NaN / inf);
    integer and bool leaves (step counters, PRNG keys) are skipped."""
    ok = jnp.bool_(True)
    for leaf in jax.tree.leaves(tree):
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            ok &= jnp.isfinite(leaf).all()
    return ok


@dataclasses.dataclass(frozen=True)
class ValueAgent:
    """A value-based agent's pure functions, with the static config closed over.

    Subclasses implement ``build_network``, ``_q`` and ``_losses`` (and ``_init_inputs`` when
    the network takes more than the observations).

    Attributes:
      config: the run config (static).
      num_actions: size of the discrete action set.
      network: the Flax network.
      optimizer: optax transformation (:func:`make_optimizer`).
      lr_schedule: learning rate as a function of optimizer updates.
      replay: the device replay whose state ``update`` samples from.
      target_bound: backup clamp bound (None: no clamping), resolved from agent.target_clamp.
    """

    config: Config
    num_actions: int
    network: nn.Module
    optimizer: optax.GradientTransformation
    lr_schedule: optax.Schedule
    replay: DeviceReplay
    target_bound: float | None

    # --- learner-specific --------------------------------------------------------------
    @classmethod
    def build_network(cls, config: Config, num_actions: int, is_image: bool,
                      feature_size: int = 0) -> nn.Module:
        """The learner's Flax network for a config (see :func:`encoder` and :func:`head`)."""
        raise NotImplementedError

    def _init_inputs(self, obs: jax.Array) -> tuple:
        """Positional network inputs for ``init``: the observations (IQN adds taus)."""
        return (obs,)

    def _q(self, params, batch_stats, obs, prev_actions, key, *, noisy: bool) -> jax.Array:
        """Q values float32 [B, A] in inference mode (running normalisation statistics)."""
        raise NotImplementedError

    def _losses(self, params, state: TrainState, batch: Batch, key: jax.Array) -> LossTerms:
        """Per-example loss of a batch (differentiated with respect to ``params``)."""
        raise NotImplementedError

    # --- shared helpers ----------------------------------------------------------------
    def _apply(self, params, batch_stats, inputs: tuple, prev_actions, key, *, train: bool,
               noisy: bool):
        """Network output and the (updated when ``train``) normalisation statistics."""
        variables = {"params": params, "batch_stats": batch_stats}
        kwargs = dict(prev_actions=prev_actions, train=train, noisy=noisy, rngs={"noise": key})
        if train:
            out, mutated = self.network.apply(variables, *inputs, mutable=["batch_stats"],
                                              **kwargs)
            return out, mutated.get("batch_stats", {})
        return self.network.apply(variables, *inputs, **kwargs), batch_stats

    def _clamp(self, backup: jax.Array) -> jax.Array:
        """The backup clamped to [-target_bound, target_bound] (unchanged without a bound)."""
        if self.target_bound is None:
            return backup
        return jnp.clip(backup, -self.target_bound, self.target_bound)

    def _selector_q(self, params, state: TrainState, batch: Batch, target_q: jax.Array,
                    key: jax.Array) -> jax.Array:
        """Q [B, A] at the bootstrap states that picks a*: the online net (double Q) or the
        target net's own ``target_q``."""
        if not self.config.agent.double_q:
            return target_q
        return self._q(params, state.batch_stats, batch.next_obs, batch.next_prev_actions, key,
                       noisy=self.config.network.noisy)

    # --- init ----------------------------------------------------------------------------
    def init(self, key: jax.Array, obs_example: jax.Array) -> TrainState:
        """Fresh train state; the target is an exact copy of the online parameters.

        Args:
          key: PRNG key (uint32 [2]).
          obs_example: one stacked observation [k, *frame], or its pytree with features
            (shapes and dtypes only).
        """
        k_params, k_noise, k_state = jax.random.split(key, 3)
        obs = jax.tree.map(lambda x: jnp.zeros((1, *x.shape), x.dtype), obs_example)
        prev = jnp.full((1, self.config.network.action_history), -1, jnp.int32)
        variables = self.network.init({"params": k_params, "noise": k_noise},
                                      *self._init_inputs(obs), prev_actions=prev, train=False,
                                      noisy=True)
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})
        return TrainState(params=params, target_params=jax.tree.map(jnp.copy, params),
                          batch_stats=batch_stats,
                          target_batch_stats=jax.tree.map(jnp.copy, batch_stats),
                          opt_state=self.optimizer.init(params), rng=k_state,
                          grad_steps=jnp.zeros((), jnp.int32))

    # --- acting --------------------------------------------------------------------------
    def q_values(self, state: TrainState, obs: jax.Array, key: jax.Array, *, noisy: bool,
                 prev_actions: jax.Array | None = None) -> jax.Array:
        """Q(s, a) of the online network in inference mode. obs [B, k, *frame], prev_actions
        int32 [B, h] (with network.action_history = h > 0) -> float32 [B, A]."""
        return self._q(state.params, state.batch_stats, obs, prev_actions, key, noisy=noisy)

    @staticmethod
    def acting_state(state: TrainState) -> TrainState:
        """What :meth:`act` reads of ``state`` (params, batch stats, counters): the state with
        the target networks and optimiser state left out (None), for the actor's copy."""
        return state.replace(target_params=None, target_batch_stats=None, opt_state=None)

    def act(self, state: TrainState, obs: jax.Array, key: jax.Array, epsilon: jax.Array, *,
            noisy: bool, prev_actions: jax.Array | None = None) -> jax.Array:
        """Epsilon-greedy actions on the online Q.

        Args:
          obs: [E, k, *frame] stacked observations; prev_actions: int32 [E, h] or None.
          key: PRNG key; epsilon: float scalar in [0, 1].
          noisy: sample head noise (training) or use noise-free means (evaluation). Static.
        Returns int32 [E].
        """
        k_q, k_explore, k_random = jax.random.split(key, 3)
        greedy = jnp.argmax(self.q_values(state, obs, k_q, noisy=noisy,
                                          prev_actions=prev_actions), axis=-1)
        random = jax.random.randint(k_random, greedy.shape, 0, self.num_actions)
        explore = explore_mask(self.config.agent, k_explore, greedy.shape[0], epsilon)
        return jnp.where(explore, random, greedy).astype(jnp.int32)

    # --- learning ------------------------------------------------------------------------
    def _loss(self, params, state: TrainState, batch: Batch, key: jax.Array):
        terms = self._losses(params, state, batch, key)
        return jnp.mean(terms.per_example * batch.weights), terms

    def _target_update(self, state: TrainState, params, batch_stats, grad_steps):
        """New (target_params, target_batch_stats, target_age) after this grad step."""
        agent = self.config.agent
        k = agent.grad_accumulation
        updates = grad_steps // k
        applied = grad_steps % k == 0  # MultiSteps applies an update on every k-th call
        target = (state.target_params, state.target_batch_stats)
        online = (params, batch_stats)
        if agent.target_update in ("soft", "both"):
            due = applied & (updates % agent.target_soft_period == 0)
            blended = optax.incremental_update(online, target, agent.target_tau)
            target = where_tree(due, blended, target)
        if agent.target_update in ("hard", "both"):
            target = where_tree(applied & (updates % agent.target_update_period == 0),
                                 online, target)
            age = updates % agent.target_update_period
        else:
            age = updates
        return target[0], target[1], age

    def learn_step(self, state: TrainState, batch: Batch, key: jax.Array
                   ) -> tuple[TrainState, dict[str, jax.Array], jax.Array]:
        """One gradient computation on a sampled batch (one optimizer update every
        agent.grad_accumulation calls), then the target update.

        Returns (new state, float32 scalar metrics named in METRIC_NAMES, new priorities
        float32 [B]).
        """
        agent = self.config.agent
        (loss, terms), grads = jax.value_and_grad(self._loss, has_aux=True)(
            state.params, state, batch, key)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_steps = state.grad_steps + 1
        target_params, target_batch_stats, age = self._target_update(
            state, params, terms.batch_stats, grad_steps)
        new_state = state.replace(params=params, opt_state=opt_state,
                                  batch_stats=terms.batch_stats, target_params=target_params,
                                  target_batch_stats=target_batch_stats, grad_steps=grad_steps)
        if agent.max_grad_norm > 0:
            clipped = (grad_norm > agent.max_grad_norm).astype(jnp.float32)
            clip_ratio = jnp.minimum(1.0, agent.max_grad_norm / jnp.maximum(grad_norm, 1e-12))
        else:
            clipped, clip_ratio = jnp.float32(0.0), jnp.float32(1.0)
        gap = optax.tree.norm(jax.tree.map(jnp.subtract, params, target_params)) / jnp.maximum(
            optax.tree.norm(params), 1e-12)
        q = jax.lax.stop_gradient(terms.q)
        metrics = dict(loss=loss, q_mean=q.mean(), q_min=q.min(), q_max=q.max(),
                       td_abs_mean=terms.td_abs.mean(), grad_norm=grad_norm,
                       clipped_fraction=clipped, clip_ratio=clip_ratio,
                       learning_rate=self.lr_schedule(grad_steps // agent.grad_accumulation),
                       target_age=age, target_param_gap=gap,
                       importance_weight_mean=batch.weights.mean())
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        return new_state, metrics, jax.lax.stop_gradient(terms.priorities)

    def update(self, state: TrainState, replay_state: ReplayState,
               importance_exponent: jax.Array
               ) -> tuple[TrainState, ReplayState, dict[str, jax.Array]]:
        """``training.grad_steps_per_call`` grad steps in one device call (see
        :func:`sampled_updates`).

        Args:
          state: the train state (donate it when jitting).
          replay_state: the replay contents (donate it too).
          importance_exponent: PER beta (float scalar) for this call.
        Returns (state, replay_state, float32 scalar metrics named in METRIC_NAMES,
        SAMPLING_METRIC_NAMES and COUNT_METRIC_NAMES).
        """
        return sampled_updates(self, state, replay_state, importance_exponent)


LAST_VALUE_METRICS = ("learning_rate", "target_age", "target_param_gap", "alpha")
"""Metrics an update call reports from its last grad step instead of averaging."""

SAMPLING_METRIC_NAMES = ("demo_fraction", "expert_fraction")
"""Metrics of the sampled batches that every learner's update adds: the share of
demonstration transitions (seed 004's demo_fraction_in_batch) and of transitions an expert
policy took (the expert curriculum)."""

COUNT_METRIC_NAMES = ("nonfinite_steps",)
"""Counts that every learner's update adds, summed over the grad steps of a call and over
the calls of a log interval: grad steps skipped because their loss, gradient or new state
was not finite (:func:`sampled_updates`)."""


def sampled_updates(agent, state, replay_state: ReplayState, importance_exponent: jax.Array):
    """``config.training.grad_steps_per_call`` grad steps, each sampling a fresh batch from
    ``agent.replay`` and writing the new priorities back (prioritized replay).

    ``agent`` is any learner with ``config``, ``replay`` and ``learn_step(state, batch, key) ->
    (state, metrics, priorities)``; ``state`` has an ``rng`` field. Expert transitions have
    their importance weights multiplied by ``expert.loss_weight``. The learner's metrics plus
    SAMPLING_METRIC_NAMES are averaged over the steps, except names ending in ``_min`` /
    ``_max`` (min / max), LAST_VALUE_METRICS (last) and COUNT_METRIC_NAMES (sum). Traced
    under a mesh with a ``data`` axis, each batch is split across its devices
    (:func:`rl.sharding.shard_batch`).

    A step whose metrics, priorities or new state (any float leaf: params, optimizer and
    target state) are not all finite is skipped: the state stays as before but for the rng,
    which advances so the next step samples another batch, and its priorities are not
    written; ``nonfinite_steps`` counts it. Its metrics are kept as computed (NaN or inf), so
    the interval's means show it and the health monitor's nonfinite flag is raised.
    """
    cfg = agent.config

    def grad_step(carry, _):
        state, replay_state = carry
        rng, k_sample, k_loss = jax.random.split(state.rng, 3)
        batch = shard_batch(agent.replay.sample(replay_state, k_sample,
                                                cfg.training.batch_size, importance_exponent))
        if cfg.expert.loss_weight != 1.0:
            batch = batch.replace(weights=batch.weights * jnp.where(
                batch.is_expert, jnp.float32(cfg.expert.loss_weight), jnp.float32(1.0)))
        state = state.replace(rng=rng)
        new_state, metrics, priorities = agent.learn_step(state, batch, k_loss)
        ok = all_finite((metrics, priorities, new_state))
        # A cond, not a select: a select over the state let XLA recompute values inside the
        # fusions feeding it (a hard target copy then missed the online BatchNorm statistics
        # by an ulp), and one over the sum tree would touch the whole replay every step.
        state, replay_state = jax.lax.cond(
            ok, lambda: (new_state, agent.replay.set_priorities(replay_state, batch.indices,
                                                                priorities)),
            lambda: (state, replay_state))
        return (state, replay_state), dict(
            metrics, demo_fraction=batch.is_demo.mean(dtype=jnp.float32),
            expert_fraction=batch.is_expert.mean(dtype=jnp.float32),
            nonfinite_steps=(~ok).astype(jnp.float32))

    # A loop, not trace-time unrolling: compile time does not grow with the step count. Its
    # body runs at the unrolled speed because the nets' convolutions have layout-fixed
    # gradients (nets.layers.conv2d).
    (state, replay_state), stacked = jax.lax.scan(grad_step, (state, replay_state), None,
                                                  length=cfg.training.grad_steps_per_call)
    reduce = dict(last=lambda v: v[-1], min=jnp.min, max=jnp.max, mean=jnp.mean, sum=jnp.sum)
    return state, replay_state, {k: reduce[_reduction(k)](v) for k, v in stacked.items()}


def _reduction(name: str) -> str:
    if name in LAST_VALUE_METRICS:
        return "last"
    if name in COUNT_METRIC_NAMES:
        return "sum"
    return "min" if name.endswith("_min") else "max" if name.endswith("_max") else "mean"


UPDATES_KEY = "_updates"
"""Key of the update-call count in a metrics fold."""


def metrics_fold(names) -> dict[str, jax.Array]:
    """An empty fold of the scalar metrics ``names`` for :func:`fold_metrics`: +inf for
    ``_min`` names, -inf for ``_max``, 0 otherwise, and a zero update count."""
    start = dict(min=jnp.inf, max=-jnp.inf, last=0.0, mean=0.0, sum=0.0)
    fold = {k: jnp.float32(start[_reduction(k)]) for k in names}
    fold[UPDATES_KEY] = jnp.float32(0)
    return fold


def fold_metrics(fold: dict[str, jax.Array], metrics: dict[str, jax.Array]
                 ) -> dict[str, jax.Array]:
    """Fold one update call's metrics into ``fold`` (:func:`metrics_fold`) on the device, by
    the rules of :func:`sampled_updates`: running min / max, last value, or sum (for means
    divided by the count in :func:`fold_means`). Jit it with the fold donated."""
    rule = dict(min=jnp.minimum, max=jnp.maximum, last=lambda total, v: v, mean=operator.add,
                sum=operator.add)
    out = {k: rule[_reduction(k)](fold[k], v) for k, v in metrics.items()}
    out[UPDATES_KEY] = fold[UPDATES_KEY] + 1
    return out


def fold_means(fold: dict[str, jax.Array]) -> dict[str, float]:
    """The metrics of a log interval from its fold: means of the update calls' values, min
    of ``_min``, max of ``_max``, last of LAST_VALUE_METRICS, totals of COUNT_METRIC_NAMES;
    {} when no update ran."""
    host = {k: float(v) for k, v in jax.device_get(fold).items()}
    count = host.pop(UPDATES_KEY)
    if count == 0:
        return {}
    return {k: v / count if _reduction(k) == "mean" else v for k, v in host.items()}


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """optax.clip_by_global_norm(max_norm), or the identity when max_norm is 0 (disabled)."""
    return optax.clip_by_global_norm(max_norm) if max_norm > 0 else optax.identity()


def make_optimizer(config: Config, lr: optax.Schedule) -> optax.GradientTransformation:
    """Global-norm clipping (skipped when max_grad_norm is 0), then adam / adamw / radam with
    the learning-rate schedule ``lr`` (:func:`rl.schedules.learning_rate`); wrapped in
    optax.MultiSteps when grad_accumulation > 1 (the mean gradient of k micro-batches, clipped,
    makes one update)."""
    agent = config.agent
    if agent.optimizer == "adam":
        opt = optax.adam(lr, eps=agent.adam_eps)
    elif agent.optimizer == "adamw":
        opt = optax.adamw(lr, eps=agent.adam_eps, weight_decay=agent.weight_decay)
    else:
        opt = optax.chain(optax.scale_by_radam(eps=agent.adam_eps),
                          optax.add_decayed_weights(agent.weight_decay),
                          optax.scale_by_learning_rate(lr))
    opt = optax.chain(clip_by_global_norm(agent.max_grad_norm), opt)
    if agent.grad_accumulation > 1:
        opt = optax.MultiSteps(opt, every_k_schedule=agent.grad_accumulation)
    return opt


def make_replay(config: Config) -> DeviceReplay:
    """The device replay for a config: one ring per env stream (``config.actor_groups`` x
    env.num_envs streams, a group of env.num_envs per actor or learner process) of
    capacity // streams slots."""
    streams = config.actor_groups * config.env.num_envs
    return DeviceReplay(num_streams=streams, num_groups=config.actor_groups,
                        capacity_per_stream=config.replay.capacity // streams,
                        frame_stack=config.env.frame_stack, n_step=config.agent.n_step,
                        gamma=config.agent.gamma, prioritized=config.replay.prioritized,
                        priority_exponent=config.replay.priority_exponent,
                        priority_eps=config.replay.priority_eps,
                        action_history=config.network.action_history,
                        stratified=config.replay.stratified)


def target_bound(config: Config, num_actions: int) -> float | None:
    """The backup clamp bound of agent.target_clamp: None, the number, or for ``auto``
    r_max / (1 - gamma) with r_max = env.reward_clip, plus munchausen_tau * log(num_actions)
    per step with Munchausen (its soft value adds at most that entropy per step)."""
    agent = config.agent
    if agent.target_clamp != "auto":
        return agent.target_clamp
    per_step = config.env.reward_clip
    if agent.munchausen:
        per_step += agent.munchausen_tau * math.log(num_actions)
    return per_step / (1.0 - agent.gamma)


def leading_size(obs) -> int:
    """Batch size B of an observation pytree (its leaves share the leading axis)."""
    return jax.tree.leaves(obs)[0].shape[0]


def encoder(config: Config, num_actions: int, is_image: bool, feature_size: int = 0) -> Encoder:
    """The torso of network.torso (with the embedding of ``feature_size`` float features, if
    any) plus the action-history embedding.

    Raises:
      ValueError: a torso that does not fit the observations (see nets.resolve_torso).
    """
    net = config.network
    return Encoder(make_torso(net, is_image, feature_size), num_actions,
                   net.action_history_dim if net.action_history > 0 else 0, jnp.dtype(net.dtype))


def head(config: Config, num_actions: int, outputs_per_action: int) -> ValueHead:
    """The (dueling, noisy) head of the network config."""
    net = config.network
    return ValueHead(num_actions, outputs_per_action, net.hidden_dim, net.dueling, net.noisy,
                     net.noisy_sigma0, jnp.dtype(net.dtype))
