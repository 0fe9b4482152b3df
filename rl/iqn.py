"""IQN learner with the Beyond-The-Rainbow recipe, as pure functions over one TrainState.

Dabney et al. 2018 (IQN); Vieillard et al. 2020 (Munchausen); Clark et al. 2024 (BTR).
Build with :func:`make_iqn`; jit once at the edge, e.g.
``jax.jit(agent.update, donate_argnums=(0, 1))`` and ``jax.jit(agent.act, static_argnames="noisy")``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from nets import IQNNetwork, make_torso
from replay import Batch, DeviceReplay, ReplayState
from rl import losses
from rl.config import Config


class TrainState(flax.struct.PyTreeNode):
    """Everything the learner carries between steps.

    Attributes:
      params, target_params: online and target network parameters (target starts as a copy).
      batch_stats, target_batch_stats: spectral-norm power-iteration vectors ({} without SN).
      opt_state: optax state (clip + Adam).
      rng: uint32 [2] PRNG key, split inside every update.
      grad_steps: int32 [] optimiser steps taken so far.
    """

    params: Any
    target_params: Any
    batch_stats: Any
    target_batch_stats: Any
    opt_state: Any
    rng: jax.Array
    grad_steps: jax.Array


METRIC_NAMES = ("loss", "q_mean", "q_min", "q_max", "td_abs_mean", "grad_norm",
                "clipped_fraction", "target_age", "importance_weight_mean")


@dataclasses.dataclass(frozen=True)
class IQN:
    """The IQN agent's pure functions, with the static config closed over.

    Attributes:
      config: the run config (static).
      num_actions: size of the discrete action set.
      network: the Flax IQN network.
      optimizer: optax transformation (global-norm clip, then Adam).
      replay: the device replay whose state ``update`` samples from.
    """

    config: Config
    num_actions: int
    network: IQNNetwork
    optimizer: optax.GradientTransformation
    replay: DeviceReplay

    # --- network application -------------------------------------------------------
    def _apply(self, params, batch_stats, obs, taus, key, *, train: bool, noisy: bool):
        variables = {"params": params, "batch_stats": batch_stats}
        rngs = {"noise": key}
        if train:
            out, mutated = self.network.apply(variables, obs, taus, train=True, noisy=noisy,
                                              rngs=rngs, mutable=["batch_stats"])
            return out, mutated.get("batch_stats", {})
        return self.network.apply(variables, obs, taus, train=False, noisy=noisy, rngs=rngs), \
            batch_stats

    def _taus(self, key, batch: int, n: int) -> jax.Array:
        return jax.random.uniform(key, (batch, n), jnp.float32)

    # --- init ------------------------------------------------------------------------
    def init(self, key: jax.Array, obs_example: jax.Array) -> TrainState:
        """Fresh train state; the target is an exact copy of the online parameters.

        Args:
          key: PRNG key (uint32 [2]).
          obs_example: one stacked observation [k, *frame] (shape and dtype only).
        """
        k_params, k_noise, k_state = jax.random.split(key, 3)
        obs = jnp.zeros((1, *obs_example.shape), obs_example.dtype)
        variables = self.network.init({"params": k_params, "noise": k_noise}, obs,
                                      jnp.full((1, 1), 0.5), train=False, noisy=True)
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})
        return TrainState(params=params, target_params=jax.tree.map(jnp.copy, params),
                          batch_stats=batch_stats,
                          target_batch_stats=jax.tree.map(jnp.copy, batch_stats),
                          opt_state=self.optimizer.init(params), rng=k_state,
                          grad_steps=jnp.zeros((), jnp.int32))

    # --- acting ----------------------------------------------------------------------
    def q_values(self, state: TrainState, obs: jax.Array, key: jax.Array, *,
                 noisy: bool) -> jax.Array:
        """Q(s, a) as the mean of num_quantile_samples quantiles. obs [B, k, *frame] ->
        float32 [B, A]."""
        k_tau, k_noise = jax.random.split(key)
        taus = self._taus(k_tau, obs.shape[0], self.config.agent.num_quantile_samples)
        dist, _ = self._apply(state.params, state.batch_stats, obs, taus, k_noise, train=False,
                              noisy=noisy)
        return dist.mean(axis=1)

    def act(self, state: TrainState, obs: jax.Array, key: jax.Array, epsilon: jax.Array, *,
            noisy: bool) -> jax.Array:
        """Epsilon-greedy actions on the quantile-mean Q.

        Args:
          obs: [E, k, *frame] stacked observations.
          key: PRNG key; epsilon: float scalar in [0, 1].
          noisy: sample head noise (training) or use noise-free means (evaluation). Static.
        Returns int32 [E].
        """
        k_q, k_explore, k_random = jax.random.split(key, 3)
        greedy = jnp.argmax(self.q_values(state, obs, k_q, noisy=noisy), axis=-1)
        random = jax.random.randint(k_random, greedy.shape, 0, self.num_actions)
        explore = jax.random.uniform(k_explore, greedy.shape) < epsilon
        return jnp.where(explore, random, greedy).astype(jnp.int32)

    # --- learning --------------------------------------------------------------------
    def _loss(self, params, state: TrainState, batch: Batch, key: jax.Array):
        agent, noisy = self.config.agent, self.config.network.noisy
        b = batch.action.shape[0]
        k_tau, k_noise, k_tau_p, k_noise_t, k_sel, k_noise_sel = jax.random.split(key, 6)
        taus = self._taus(k_tau, b, agent.num_tau_samples)
        dist_tm1, batch_stats = self._apply(params, state.batch_stats, batch.obs, taus, k_noise,
                                            train=True, noisy=noisy)                # [B, N, A]
        dist_a = jnp.take_along_axis(dist_tm1, batch.action[:, None, None], axis=2)[..., 0]
        taus_p = self._taus(k_tau_p, b, agent.num_tau_prime_samples)
        if agent.munchausen:
            both = jax.tree.map(lambda x, y: jnp.concatenate([x, y]), batch.obs, batch.next_obs)
            dist_both, _ = self._apply(state.target_params, state.target_batch_stats, both,
                                       jnp.concatenate([taus_p, taus_p]), k_noise_t,
                                       train=False, noisy=noisy)
            target_tm1, target_t = dist_both[:b], dist_both[b:]
            targets = jax.vmap(losses.munchausen_quantile_target,
                               (0, 0, 0, 0, 0, None, None, None))(
                batch.reward, batch.discount, target_tm1.mean(axis=1), batch.action, target_t,
                agent.munchausen_tau, agent.munchausen_alpha, agent.munchausen_clip)
        else:
            target_t, _ = self._apply(state.target_params, state.target_batch_stats,
                                      batch.next_obs, taus_p, k_noise_t, train=False, noisy=noisy)
            if agent.double_q:
                taus_sel = self._taus(k_sel, b, agent.num_quantile_samples)
                q_sel, _ = self._apply(params, state.batch_stats, batch.next_obs, taus_sel,
                                       k_noise_sel, train=False, noisy=noisy)
                q_sel = q_sel.mean(axis=1)
            else:
                q_sel = target_t.mean(axis=1)
            targets = jax.vmap(losses.quantile_q_target)(batch.reward, batch.discount, target_t,
                                                         q_sel)
        targets = jax.lax.stop_gradient(targets)                                   # [B, N']
        per_example = jax.vmap(losses.quantile_huber_loss, (0, 0, 0, None))(
            dist_a, taus, targets, agent.kappa)
        loss = jnp.mean(per_example * batch.weights)
        # Priority: |TD| of the expected values, which falls to 0 when the means agree.
        td_abs = jnp.abs(targets.mean(axis=1) - dist_a.mean(axis=1))
        q = jax.lax.stop_gradient(dist_tm1.mean(axis=1))
        aux = dict(batch_stats=batch_stats, td_abs=td_abs, q_mean=q.mean(), q_min=q.min(),
                   q_max=q.max())
        return loss, aux

    def learn_step(self, state: TrainState, batch: Batch, key: jax.Array
                   ) -> tuple[TrainState, dict[str, jax.Array], jax.Array]:
        """One gradient step on a sampled batch.

        Returns (new state, metrics of float32 scalars named in METRIC_NAMES, new priorities
        float32 [B] = |TD| of the expected values). The target params are hard-copied from
        the online ones when the new grad-step count is a multiple of target_update_period.
        """
        agent = self.config.agent
        (loss, aux), grads = jax.value_and_grad(self._loss, has_aux=True)(
            state.params, state, batch, key)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_steps = state.grad_steps + 1
        period = agent.target_update_period
        new_state = state.replace(
            params=params, opt_state=opt_state, batch_stats=aux["batch_stats"],
            target_params=optax.periodic_update(params, state.target_params, grad_steps, period),
            target_batch_stats=optax.periodic_update(aux["batch_stats"],
                                                     state.target_batch_stats, grad_steps,
                                                     period),
            grad_steps=grad_steps)
        clipped = (grad_norm > agent.max_grad_norm) if agent.max_grad_norm > 0 else False
        metrics = dict(loss=loss, q_mean=aux["q_mean"], q_min=aux["q_min"], q_max=aux["q_max"],
                       td_abs_mean=aux["td_abs"].mean(), grad_norm=grad_norm,
                       clipped_fraction=jnp.asarray(clipped, jnp.float32),
                       target_age=(grad_steps % period).astype(jnp.float32),
                       importance_weight_mean=batch.weights.mean())
        return new_state, metrics, aux["td_abs"]

    def update(self, state: TrainState, replay_state: ReplayState,
               importance_exponent: jax.Array
               ) -> tuple[TrainState, ReplayState, dict[str, jax.Array]]:
        """``training.grad_steps_per_call`` grad steps in one device call, each sampling a fresh
        batch and writing new priorities back (prioritized replay).

        Args:
          state: the train state (donate it when jitting).
          replay_state: the replay contents (donate it too).
          importance_exponent: PER beta (float scalar) for this call.
        Returns (state, replay_state, metrics): metrics are float32 scalars, averaged over the
        steps except q_min / q_max (min / max) and target_age (last).
        """
        cfg = self.config
        steps = []
        # Unrolled at trace time rather than lax.scan: XLA:CPU runs the convolutions of a
        # while-loop body about 8x slower (measured; see benchmarks/learner.py).
        for _ in range(cfg.training.grad_steps_per_call):
            rng, k_sample, k_loss = jax.random.split(state.rng, 3)
            batch = self.replay.sample(replay_state, k_sample, cfg.training.batch_size,
                                       importance_exponent)
            state, metrics, priorities = self.learn_step(state.replace(rng=rng), batch, k_loss)
            if cfg.replay.prioritized:
                replay_state = self.replay.set_priorities(replay_state, batch.indices, priorities)
            steps.append(metrics)
        metrics = {k: jnp.stack([m[k] for m in steps]) for k in steps[0]}
        reduced = {k: v.mean() for k, v in metrics.items()}
        reduced.update(q_min=metrics["q_min"].min(), q_max=metrics["q_max"].max(),
                       target_age=metrics["target_age"][-1])
        return state, replay_state, reduced


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """Global-norm clipping (skipped when max_grad_norm is 0) then Adam(lr, eps)."""
    agent = config.agent
    adam = optax.adam(agent.learning_rate, eps=agent.adam_eps)
    if agent.max_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(agent.max_grad_norm), adam)
    return adam


def make_replay(config: Config) -> DeviceReplay:
    """The device replay for a config: one ring per env stream of capacity // num_envs slots."""
    return DeviceReplay(num_streams=config.env.num_envs,
                        capacity_per_stream=config.replay.capacity // config.env.num_envs,
                        frame_stack=config.env.frame_stack, n_step=config.agent.n_step,
                        gamma=config.agent.gamma, prioritized=config.replay.prioritized,
                        priority_exponent=config.replay.priority_exponent,
                        priority_eps=config.replay.priority_eps)


def make_iqn(config: Config, num_actions: int, is_image: bool) -> IQN:
    """Build the IQN agent for a config and an env's action count / observation kind.

    Raises:
      ValueError: a torso that does not fit the observations (see nets.resolve_torso).
    """
    net_cfg = config.network
    network = IQNNetwork(torso=make_torso(net_cfg, is_image), num_actions=num_actions,
                         hidden_dim=net_cfg.hidden_dim, num_cosines=net_cfg.cosine_embedding_dim,
                         dueling=net_cfg.dueling, noisy_net=net_cfg.noisy,
                         sigma0=net_cfg.noisy_sigma0)
    return IQN(config=config, num_actions=num_actions, network=network,
               optimizer=make_optimizer(config), replay=make_replay(config))
