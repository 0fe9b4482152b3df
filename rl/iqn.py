"""IQN learner, with the Beyond-The-Rainbow recipe when Munchausen is on.

Dabney et al. 2018 (IQN); Vieillard et al. 2020 (Munchausen); Clark et al. 2024 (BTR).
The shared machinery (optimiser, target updates, PER, metrics) is in :mod:`rl.agent`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from nets import IQNNetwork
from replay import Batch
from rl import agent as agent_lib
from rl import losses
from rl.agent import LossTerms, TrainState, ValueAgent
from rl.config import Config


@dataclasses.dataclass(frozen=True)
class IQN(ValueAgent):
    """Implicit quantile network learner: quantile Huber loss on sampled fractions, double-Q
    or Munchausen targets, priorities |TD| of the expected values."""

    @classmethod
    def build_network(cls, config: Config, num_actions: int, is_image: bool,
                      feature_size: int = 0) -> IQNNetwork:
        return IQNNetwork(agent_lib.encoder(config, num_actions, is_image, feature_size),
                          agent_lib.head(config, num_actions, 1),
                          num_cosines=config.network.cosine_embedding_dim,
                          dtype=jnp.dtype(config.network.dtype))

    def _taus(self, key, batch: int, n: int) -> jax.Array:
        return jax.random.uniform(key, (batch, n), jnp.float32)

    def _init_inputs(self, obs):
        return obs, jnp.full((agent_lib.leading_size(obs), 1), 0.5)

    def _dist(self, params, batch_stats, obs, prev_actions, taus, key, *, train, noisy):
        return self._apply(params, batch_stats, (obs, taus), prev_actions, key, train=train,
                           noisy=noisy)

    def _q(self, params, batch_stats, obs, prev_actions, key, *, noisy):
        """Q as the mean of num_quantile_samples quantiles: float32 [B, A]."""
        k_tau, k_noise = jax.random.split(key)
        taus = self._taus(k_tau, agent_lib.leading_size(obs),
                          self.config.agent.num_quantile_samples)
        dist, _ = self._dist(params, batch_stats, obs, prev_actions, taus, k_noise, train=False,
                             noisy=noisy)
        return dist.mean(axis=1)

    def _losses(self, params, state: TrainState, batch: Batch, key) -> LossTerms:
        agent, noisy = self.config.agent, self.config.network.noisy
        b = batch.action.shape[0]
        k_tau, k_noise, k_tau_p, k_noise_t, k_sel = jax.random.split(key, 5)
        taus = self._taus(k_tau, b, agent.num_tau_samples)
        dist_tm1, batch_stats = self._dist(params, state.batch_stats, batch.obs,
                                           batch.prev_actions, taus, k_noise, train=True,
                                           noisy=noisy)                              # [B, N, A]
        dist_a = jnp.take_along_axis(dist_tm1, batch.action[:, None, None], axis=2)[..., 0]
        taus_p = self._taus(k_tau_p, b, agent.num_tau_prime_samples)
        if agent.munchausen:
            cat = lambda x, y: jnp.concatenate([x, y])
            dist_both, _ = self._dist(state.target_params, state.target_batch_stats,
                                      jax.tree.map(cat, batch.obs, batch.next_obs),
                                      cat(batch.prev_actions, batch.next_prev_actions),
                                      cat(taus_p, taus_p), k_noise_t, train=False, noisy=noisy)
            target_tm1, target_t = dist_both[:b], dist_both[b:]
            targets = jax.vmap(losses.munchausen_quantile_target,
                               (0, 0, 0, 0, 0, None, None, None))(
                batch.reward, batch.discount, target_tm1.mean(axis=1), batch.action, target_t,
                agent.munchausen_tau, agent.munchausen_alpha, agent.munchausen_clip)
        else:
            target_t, _ = self._dist(state.target_params, state.target_batch_stats,
                                     batch.next_obs, batch.next_prev_actions, taus_p, k_noise_t,
                                     train=False, noisy=noisy)
            q_sel = self._selector_q(params, state, batch, target_t.mean(axis=1), k_sel)
            targets = jax.vmap(losses.quantile_q_target)(batch.reward, batch.discount, target_t,
                                                         q_sel)
        targets = jax.lax.stop_gradient(self._clamp(targets))                     # [B, N']
        per_example = jax.vmap(losses.quantile_huber_loss, (0, 0, 0, None))(
            dist_a, taus, targets, agent.kappa)
        # Priority: |TD| of the expected values, which falls to 0 when the means agree.
        td_abs = jax.lax.stop_gradient(jnp.abs(targets.mean(axis=1) - dist_a.mean(axis=1)))
        return LossTerms(per_example, td_abs, td_abs, dist_tm1.mean(axis=1), batch_stats)
