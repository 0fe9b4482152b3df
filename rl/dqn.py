"""DQN learner with the usual switches: double Q, dueling, noisy nets, n-step, PER.

Mnih et al. 2015 (DQN); van Hasselt et al. 2016 (double); Wang et al. 2016 (dueling);
Fortunato et al. 2018 (noisy); Schaul et al. 2016 (PER). Shared machinery: :mod:`rl.agent`.
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
class DQN(ValueAgent):
    """Scalar-Q learner: backup r + discount * Q_target(s', a*), a* by the online net (double)
    or the target net; Huber (threshold kappa) or 0.5 * td^2 loss; priorities |td|."""

    @classmethod
    def build_network(cls, config: Config, num_actions: int, is_image: bool,
                      feature_size: int = 0) -> ValueNetwork:
        return ValueNetwork(agent_lib.encoder(config, num_actions, is_image, feature_size),
                            agent_lib.head(config, num_actions, 1))

    def _q(self, params, batch_stats, obs, prev_actions, key, *, noisy):
        q, _ = self._apply(params, batch_stats, (obs,), prev_actions, key, train=False,
                           noisy=noisy)
        return q[..., 0]

    def _losses(self, params, state: TrainState, batch: Batch, key) -> LossTerms:
        agent, noisy = self.config.agent, self.config.network.noisy
        k_noise, k_noise_t, k_sel = jax.random.split(key, 3)
        q_tm1, batch_stats = self._apply(params, state.batch_stats, (batch.obs,),
                                         batch.prev_actions, k_noise, train=True, noisy=noisy)
        q_tm1 = q_tm1[..., 0]
        q_a = jnp.take_along_axis(q_tm1, batch.action[:, None], axis=1)[:, 0]
        q_t = self._q(state.target_params, state.target_batch_stats, batch.next_obs,
                      batch.next_prev_actions, k_noise_t, noisy=noisy)
        a_star = jnp.argmax(self._selector_q(params, state, batch, q_t, k_sel), axis=-1)
        bootstrap = jnp.take_along_axis(q_t, a_star[:, None], axis=1)[:, 0]
        backup = jax.lax.stop_gradient(self._clamp(batch.reward + batch.discount * bootstrap))
        td = backup - q_a
        per_example = losses.huber(td, agent.kappa) if agent.td_loss == "huber" else 0.5 * td**2
        td_abs = jax.lax.stop_gradient(jnp.abs(td))
        return LossTerms(per_example, td_abs, td_abs, q_tm1, batch_stats)
