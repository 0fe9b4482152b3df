"""C51 learner, the distributional core of Rainbow.

Bellemare et al. 2017 (categorical DQN); Hessel et al. 2018 (Rainbow: with double Q,
dueling, noisy nets, n-step and PER by the loss). The shared machinery is in :mod:`rl.agent`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from nets import ValueNetwork
from replay import Batch
from rl import agent as agent_lib
from rl import losses
from rl.agent import LossTerms, TrainState, ValueAgent
from rl.config import Config


@dataclasses.dataclass(frozen=True)
class C51(ValueAgent):
    """Categorical learner on the fixed support linspace(v_min, v_max, num_atoms): the n-step
    target distribution of a* (double Q: chosen by the online net) is projected onto the
    support; the loss is the cross-entropy against the log-softmax of the online logits, and
    it is also the PER priority (Hessel et al. 2018)."""

    @classmethod
    def build_network(cls, config: Config, num_actions: int, is_image: bool,
                      feature_size: int = 0) -> ValueNetwork:
        return ValueNetwork(agent_lib.encoder(config, num_actions, is_image, feature_size),
                            agent_lib.head(config, num_actions, config.agent.num_atoms))

    @property
    def support(self) -> jax.Array:
        """float32 [num_atoms] atoms from v_min to v_max."""
        agent = self.config.agent
        return jnp.linspace(agent.v_min, agent.v_max, agent.num_atoms, dtype=jnp.float32)

    def _q(self, params, batch_stats, obs, prev_actions, key, *, noisy):
        """Q as the expected value of the categorical distribution: float32 [B, A]."""
        logits, _ = self._apply(params, batch_stats, (obs,), prev_actions, key, train=False,
                                noisy=noisy)
        return jnp.sum(jax.nn.softmax(logits) * self.support, axis=-1)

    def _losses(self, params, state: TrainState, batch: Batch, key) -> LossTerms:
        noisy = self.config.network.noisy
        k_noise, k_noise_t, k_sel = jax.random.split(key, 3)
        logits_tm1, batch_stats = self._apply(params, state.batch_stats, (batch.obs,),
                                              batch.prev_actions, k_noise, train=True,
                                              noisy=noisy)                        # [B, A, M]
        logits_a = jnp.take_along_axis(logits_tm1, batch.action[:, None, None], axis=1)[:, 0]
        logits_t, _ = self._apply(state.target_params, state.target_batch_stats,
                                  (batch.next_obs,), batch.next_prev_actions, k_noise_t,
                                  train=False, noisy=noisy)
        support = self.support
        probs_t = jax.nn.softmax(logits_t)
        q_sel = self._selector_q(params, state, batch, jnp.sum(probs_t * support, -1), k_sel)
        target = jax.vmap(losses.categorical_double_q_target, (0, 0, 0, 0, None, None))(
            batch.reward, batch.discount, probs_t, q_sel, support, self.target_bound)
        target = jax.lax.stop_gradient(target)                                   # [B, M]
        log_p = jax.nn.log_softmax(logits_a)
        per_example = -jnp.sum(target * log_p, axis=-1)
        td_abs = jnp.abs(jnp.sum(target * support, -1) - jnp.sum(jnp.exp(log_p) * support, -1))
        q = jnp.sum(jax.nn.softmax(logits_tm1) * support, axis=-1)
        return LossTerms(per_example, jax.lax.stop_gradient(per_example),
                         jax.lax.stop_gradient(td_abs), q, batch_stats)
