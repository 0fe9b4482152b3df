"""TQC: truncated quantile critics for continuous control, as pure functions over one state.

Kuznetsov et al. 2020, "Controlling Overestimation Bias with Truncated Mixture of Continuous
Distributional Quantile Critics"; the actor and temperature follow SAC (Haarnoja et al. 2018).
With seed 004's stability controls: separate actor / critic gradient clipping, backup
clipping (agent.target_clamp), fixed or learned alpha, critics initialised independently.
Build with :func:`make_tqc`; jit ``update`` and ``act`` like the value learners.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from nets import WithFeatures, make_torso
from nets.tqc import CriticEnsemble, TanhGaussianActor
from replay import Batch, DeviceReplay, ReplayState
from rl import losses
from rl.agent import (clip_by_global_norm, explore_mask, make_replay, sampled_updates,
                      target_bound, where_tree)
from rl.config import Config


class TQCState(flax.struct.PyTreeNode):
    """Everything TQC carries between steps.

    Attributes:
      actor_params, critic_params, target_critic_params: network parameters (critic leaves
        carry a leading axis of size num_critics; the target starts as a copy).
      log_alpha: float32 [] log of the entropy temperature.
      actor_opt_state, critic_opt_state, alpha_opt_state: optax states.
      rng: uint32 [2] PRNG key.
      grad_steps: int32 [] critic updates so far.
    """

    actor_params: Any
    critic_params: Any
    target_critic_params: Any
    log_alpha: jax.Array
    actor_opt_state: Any
    critic_opt_state: Any
    alpha_opt_state: Any
    rng: jax.Array
    grad_steps: jax.Array


METRIC_NAMES = ("critic_loss", "actor_loss", "alpha", "entropy", "q_taken_mean", "q_taken_std",
                "q_min", "q_max", "backup_mean", "backup_std", "critic_grad_norm",
                "actor_grad_norm", "critics_identical_fraction", "importance_weight_mean")
"""Scalars returned by ``update`` (seed 004's monitors): critic and actor losses; alpha and
the policy entropy (-log pi mean); Q of the taken action (mean over critics and quantiles;
mean and std over the batch, min, max); backup (target atom) mean and std; global grad norms
before clipping; the share of the batch where two critics give the same Q (|dQ| < 1e-6);
mean importance weight."""


@dataclasses.dataclass(frozen=True)
class TQC:
    """The TQC agent's pure functions, with the static config closed over.

    Attributes:
      config: the run config (static).
      action_dim: d, actions are float32 in [-1, 1]^d.
      actor, critic: the Flax modules.
      actor_optimizer, critic_optimizer, alpha_optimizer: optax transformations.
      replay: the device replay.
      target_bound: backup clip bound (None: no clipping), from agent.target_clamp.
      target_entropy: the entropy learned alpha steers toward.
    """

    config: Config
    action_dim: int
    actor: nn.Module
    critic: nn.Module
    actor_optimizer: optax.GradientTransformation
    critic_optimizer: optax.GradientTransformation
    alpha_optimizer: optax.GradientTransformation
    replay: DeviceReplay
    target_bound: float | None
    target_entropy: float

    @property
    def num_to_drop(self) -> int:
        """Target atoms dropped in all: top_quantiles_to_drop per critic."""
        return self.config.tqc.top_quantiles_to_drop * self.config.tqc.num_critics

    # --- init ------------------------------------------------------------------------
    def init(self, key: jax.Array, obs_example: jax.Array) -> TQCState:
        """Fresh state; every critic from its own key (unless tqc.shared_critic_init), the target
        critics a copy.

        Args: key (uint32 [2]); obs_example: one stacked observation [k, *frame], or its
        pytree with features.
        """
        k_actor, k_critic, k_state = jax.random.split(key, 3)
        obs = jax.tree.map(lambda x: jnp.zeros((1, *x.shape), x.dtype), obs_example)
        actor_params = self.actor.init(k_actor, obs)["params"]
        critic_params = self.critic.init(k_critic, obs, jnp.zeros((1, self.action_dim)))["params"]
        if self.config.tqc.shared_critic_init:  # seed 004's twins: every critic a copy of the first
            critic_params = jax.tree.map(lambda p: jnp.broadcast_to(p[:1], p.shape), critic_params)
        log_alpha = jnp.log(jnp.float32(self.config.tqc.alpha))
        return TQCState(actor_params=actor_params, critic_params=critic_params,
                        target_critic_params=jax.tree.map(jnp.copy, critic_params),
                        log_alpha=log_alpha,
                        actor_opt_state=self.actor_optimizer.init(actor_params),
                        critic_opt_state=self.critic_optimizer.init(critic_params),
                        alpha_opt_state=self.alpha_optimizer.init(log_alpha),
                        rng=k_state, grad_steps=jnp.zeros((), jnp.int32))

    # --- policy ----------------------------------------------------------------------
    def _sample(self, actor_params, obs, key):
        """Reparameterised a = tanh(u) [B, d] and log pi(a|s) [B]."""
        mean, log_std = self.actor.apply({"params": actor_params}, obs)
        pre_tanh = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
        return jnp.tanh(pre_tanh), losses.tanh_gaussian_log_prob(pre_tanh, mean, log_std)

    @staticmethod
    def acting_state(state: TQCState) -> TQCState:
        """What :meth:`act` reads of ``state`` (the actor's params, counters): the critics
        and optimiser states left out (None), for the actor's copy."""
        return state.replace(critic_params=None, target_critic_params=None,
                             actor_opt_state=None, critic_opt_state=None,
                             alpha_opt_state=None)

    def act(self, state: TQCState, obs: jax.Array, key: jax.Array, epsilon: jax.Array, *,
            noisy: bool, prev_actions: jax.Array | None = None) -> jax.Array:
        """Actions float32 [E, d] in [-1, 1].

        Args:
          obs: [E, k, *frame]; key: PRNG key.
          epsilon: probability of a uniform random action instead (1 during the warm-up).
          noisy: sample the stochastic policy (training) or take tanh(mean) (evaluation).
          prev_actions: unused (action history is for discrete actions).
        """
        del prev_actions
        k_policy, k_explore, k_random = jax.random.split(key, 3)
        if noisy:
            action, _ = self._sample(state.actor_params, obs, k_policy)
        else:
            action = jnp.tanh(self.actor.apply({"params": state.actor_params}, obs)[0])
        random = jax.random.uniform(k_random, action.shape, minval=-1.0, maxval=1.0)
        explore = explore_mask(self.config.agent, k_explore, action.shape[0], epsilon)
        return jnp.where(explore[:, None], random, action).astype(jnp.float32)

    # --- learning --------------------------------------------------------------------
    def _critic_loss(self, critic_params, state: TQCState, batch: Batch, key):
        tqc, kappa = self.config.tqc, self.config.agent.kappa
        alpha = jnp.exp(state.log_alpha)
        next_action, next_log_prob = self._sample(state.actor_params, batch.next_obs, key)
        next_z = self.critic.apply({"params": state.target_critic_params}, batch.next_obs,
                                   next_action)                                  # [B, N, M]
        backup = jax.vmap(losses.truncated_quantile_target, (0, 0, 0, 0, None))(
            batch.reward, batch.discount, next_z, -alpha * next_log_prob, self.num_to_drop)
        if self.target_bound is not None:
            backup = jnp.clip(backup, -self.target_bound, self.target_bound)
        backup = jax.lax.stop_gradient(backup)                                   # [B, K]
        z = self.critic.apply({"params": critic_params}, batch.obs, batch.action)  # [B, N, M]
        taus = (jnp.arange(tqc.num_quantiles, dtype=jnp.float32) + 0.5) / tqc.num_quantiles
        per_critic = jax.vmap(jax.vmap(losses.quantile_huber_loss, (0, None, None, None)),
                              (0, None, 0, None))(z, taus, backup, kappa)         # [B, N]
        # Mean over quantiles, targets and critics (the paper's 1 / (kNM) sum; SB3 and the
        # user's seed-004 code), so grad-clip thresholds mean what they did there.
        per_example = per_critic.mean(axis=1) / tqc.num_quantiles
        loss = jnp.mean(per_example * batch.weights)
        q = z.mean(axis=2)                                                        # [B, N]
        td_abs = jnp.abs(backup.mean(axis=1) - q.mean(axis=1))
        return loss, (q, backup, td_abs)

    def _actor_loss(self, actor_params, state: TQCState, obs, key):
        alpha = jnp.exp(state.log_alpha)
        action, log_prob = self._sample(actor_params, obs, key)
        q = self.critic.apply({"params": state.critic_params}, obs, action).mean(axis=(1, 2))
        return jnp.mean(alpha * log_prob - q), log_prob

    def learn_step(self, state: TQCState, batch: Batch, key: jax.Array
                   ) -> tuple[TQCState, dict[str, jax.Array], jax.Array]:
        """One critic update, then (every policy_delay steps) the actor and alpha updates and
        the Polyak update of the target critics.

        Returns (new state, float32 scalar metrics named in METRIC_NAMES, new priorities
        float32 [B] = |mean backup - mean Q(s, a)|).
        """
        tqc, agent = self.config.tqc, self.config.agent
        k_critic, k_actor = jax.random.split(key)
        (critic_loss, (q, backup, td_abs)), critic_grads = jax.value_and_grad(
            self._critic_loss, has_aux=True)(state.critic_params, state, batch, k_critic)
        updates, critic_opt_state = self.critic_optimizer.update(
            critic_grads, state.critic_opt_state, state.critic_params)
        critic_params = optax.apply_updates(state.critic_params, updates)
        state = state.replace(critic_params=critic_params, critic_opt_state=critic_opt_state,
                              grad_steps=state.grad_steps + 1)

        (actor_loss, log_prob), actor_grads = jax.value_and_grad(
            self._actor_loss, has_aux=True)(state.actor_params, state, batch.obs, k_actor)
        # Computed every step and kept only when due: with the default delay of 1 nothing is
        # wasted, and a select keeps the step one straight-line program.
        due = state.grad_steps % tqc.policy_delay == 0
        updates, actor_opt_state = self.actor_optimizer.update(
            actor_grads, state.actor_opt_state, state.actor_params)
        actor_params = optax.apply_updates(state.actor_params, updates)
        log_alpha, alpha_opt_state = state.log_alpha, state.alpha_opt_state
        if tqc.learn_alpha:
            entropy_gap = jax.lax.stop_gradient(log_prob + self.target_entropy).mean()
            alpha_grad = -entropy_gap  # d/d(log alpha) of -log_alpha * mean(log pi + H*)
            updates, alpha_opt_state = self.alpha_optimizer.update(
                alpha_grad, state.alpha_opt_state, state.log_alpha)
            log_alpha = optax.apply_updates(state.log_alpha, updates)
        state = state.replace(
            actor_params=where_tree(due, actor_params, state.actor_params),
            actor_opt_state=where_tree(due, actor_opt_state, state.actor_opt_state),
            log_alpha=where_tree(due, log_alpha, state.log_alpha),
            alpha_opt_state=where_tree(due, alpha_opt_state, state.alpha_opt_state),
            target_critic_params=optax.incremental_update(
                critic_params, state.target_critic_params, agent.target_tau))

        q_taken = q.mean(axis=1)
        n = tqc.num_critics
        if n > 1:
            gaps = jnp.abs(q[:, :, None] - q[:, None, :]) + jnp.eye(n) * 1e9  # [B, N, N]
            identical = (gaps.min(axis=(1, 2)) < 1e-6).astype(jnp.float32).mean()
        else:
            identical = jnp.float32(0.0)
        metrics = dict(critic_loss=critic_loss, actor_loss=actor_loss,
                       alpha=jnp.exp(state.log_alpha), entropy=-log_prob.mean(),
                       q_taken_mean=q_taken.mean(), q_taken_std=q_taken.std(),
                       q_min=q_taken.min(), q_max=q_taken.max(), backup_mean=backup.mean(),
                       backup_std=backup.std(), critic_grad_norm=optax.tree.norm(critic_grads),
                       actor_grad_norm=optax.tree.norm(actor_grads),
                       critics_identical_fraction=identical,
                       importance_weight_mean=batch.weights.mean())
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        return state, metrics, jax.lax.stop_gradient(td_abs)

    def update(self, state: TQCState, replay_state: ReplayState, importance_exponent: jax.Array
               ) -> tuple[TQCState, ReplayState, dict[str, jax.Array]]:
        """``training.grad_steps_per_call`` TQC steps in one device call (see
        :func:`rl.agent.sampled_updates`); donate state and replay_state when jitting. The
        metrics are METRIC_NAMES plus :data:`rl.agent.SAMPLING_METRIC_NAMES` and
        :data:`rl.agent.COUNT_METRIC_NAMES`."""
        return sampled_updates(self, state, replay_state, importance_exponent)


def make_tqc(config: Config, action_dim: int, is_image: bool, feature_size: int = 0) -> TQC:
    """Build TQC for an env with actions in [-1, 1]^action_dim.

    Image observations go through a torso (network.torso: impala or small_cnn; one per actor
    and per critic); vector observations enter the MLPs directly. ``feature_size`` > 0 float
    features beside the frames are embedded and concatenated (``nets.WithFeatures``).

    Raises:
      ValueError: a torso that does not fit the observations (see nets.resolve_torso).
    """
    tqc, agent = config.tqc, config.agent
    dtype = jnp.dtype(config.network.dtype)
    if is_image:
        torso = make_torso(config.network, is_image, feature_size)
    else:
        torso = (WithFeatures(None, config.network.feature_dim, dtype) if feature_size
                 else None)
    actor = TanhGaussianActor(action_dim, tuple(tqc.actor_hidden), torso, tqc.log_std_min,
                              tqc.log_std_max, dtype)
    critic = CriticEnsemble(tqc.num_critics, tqc.num_quantiles, tuple(tqc.critic_hidden), torso,
                            dtype)
    adam = lambda lr: optax.adam(lr, eps=agent.adam_eps)
    target_entropy = (-float(action_dim) if tqc.target_entropy is None
                      else float(tqc.target_entropy))
    return TQC(config=config, action_dim=action_dim, actor=actor, critic=critic,
               actor_optimizer=optax.chain(clip_by_global_norm(tqc.actor_grad_clip),
                                           adam(tqc.actor_learning_rate)),
               critic_optimizer=optax.chain(clip_by_global_norm(tqc.critic_grad_clip),
                                            adam(tqc.critic_learning_rate)),
               alpha_optimizer=adam(tqc.alpha_learning_rate), replay=make_replay(config),
               target_bound=target_bound(config, action_dim), target_entropy=target_entropy)
