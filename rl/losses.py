"""Per-example distributional losses and targets; batch them with ``jax.vmap``.

Names follow rlax: ``*_tm1`` at the sampled state s_{t-1}, ``*_t`` at the bootstrap state.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def huber(x: jax.Array, kappa: float) -> jax.Array:
    """Huber function: 0.5 x^2 for |x| <= kappa, else kappa (|x| - 0.5 kappa). Elementwise."""
    abs_x = jnp.abs(x)
    quadratic = jnp.minimum(abs_x, kappa)
    return 0.5 * quadratic**2 + kappa * (abs_x - quadratic)


def quantile_huber_loss(dist_tm1: jax.Array, tau_tm1: jax.Array, dist_target: jax.Array,
                        kappa: float = 1.0) -> jax.Array:
    """Quantile Huber loss of one example (Dabney et al. 2018, IQN eq. 3).

    loss = sum_i mean_j |tau_i - 1{delta_ij < 0}| * huber(delta_ij, kappa) / kappa,
    delta_ij = dist_target_j - dist_tm1_i. The target is not differentiated through.
    With kappa = 1 this equals ``rlax.quantile_regression_loss`` (which omits the 1/kappa).

    Args:
      dist_tm1: float [N] predicted quantile values at fractions tau_tm1.
      tau_tm1: float [N] quantile fractions in [0, 1].
      dist_target: float [N'] target samples.
      kappa: Huber threshold > 0.
    Returns a float32 scalar.
    """
    chex.assert_rank([dist_tm1, tau_tm1, dist_target], 1)
    chex.assert_equal_shape([dist_tm1, tau_tm1])
    delta = jax.lax.stop_gradient(dist_target)[None, :] - dist_tm1[:, None]     # [N, N']
    weight = jnp.abs(tau_tm1[:, None] - (delta < 0).astype(delta.dtype))
    return jnp.sum(jnp.mean(weight * huber(delta, kappa) / kappa, axis=1))


def munchausen_quantile_target(r_t: jax.Array, discount_t: jax.Array, q_target_tm1: jax.Array,
                               a_tm1: jax.Array, dist_target_t: jax.Array, tau: float,
                               alpha: float, clip_min: float) -> jax.Array:
    """Munchausen-IQN target samples of one example (Vieillard et al. 2020, M-IQN; BTR).

    pi = softmax(q / tau) of the target network; the target is
      r + alpha * clip(tau * log pi(a_tm1 | s_tm1), clip_min, 0)
        + discount * sum_a pi_t(a) [Z_target(s_t, a) - tau * log pi_t(a)],
    one value per target quantile sample. With n-step returns r is the discounted n-step
    sum, the bonus is for the first action only and discount = gamma^n (0 at a terminal).

    Args:
      r_t: float scalar reward (n-step sum).
      discount_t: float scalar bootstrap discount.
      q_target_tm1: float [A] target-network Q (quantile mean) at s_tm1.
      a_tm1: int scalar action taken at s_tm1.
      dist_target_t: float [N', A] target-network quantile values at s_t.
      tau: softmax temperature > 0; alpha: bonus weight; clip_min: l0 < 0.
    Returns float [N'] target samples.
    """
    chex.assert_rank([r_t, discount_t, q_target_tm1, a_tm1, dist_target_t], [0, 0, 1, 0, 2])
    log_pi_tm1 = jax.nn.log_softmax(q_target_tm1 / tau)
    bonus = alpha * jnp.clip(tau * log_pi_tm1[a_tm1], clip_min, 0.0)
    q_t = dist_target_t.mean(axis=0)
    log_pi_t = jax.nn.log_softmax(q_t / tau)
    soft_value = jnp.sum(jnp.exp(log_pi_t) * (dist_target_t - tau * log_pi_t), axis=-1)
    return r_t + bonus + discount_t * soft_value


def quantile_q_target(r_t: jax.Array, discount_t: jax.Array, dist_target_t: jax.Array,
                      q_selector_t: jax.Array) -> jax.Array:
    """(Double-)Q quantile target of one example (Dabney et al. 2018; van Hasselt et al. 2016).

    target_j = r + discount * Z_target(s_t, argmax_a q_selector_t(a))_j.

    Args:
      r_t, discount_t: float scalars; dist_target_t: float [N', A];
      q_selector_t: float [A] Q values used to pick the action (online net for double Q).
    Returns float [N'].
    """
    chex.assert_rank([r_t, discount_t, dist_target_t, q_selector_t], [0, 0, 2, 1])
    return r_t + discount_t * dist_target_t[:, jnp.argmax(q_selector_t)]


def categorical_l2_project(z_p: jax.Array, probs: jax.Array, z_q: jax.Array) -> jax.Array:
    """Project a distribution on atoms ``z_p`` onto the fixed, evenly spaced support ``z_q``
    (Bellemare et al. 2017, C51 Algorithm 1), vectorised over atoms without a serial loop.

    Each atom is clipped to [z_q[0], z_q[-1]] and its mass split between the two nearest
    support atoms in proportion to closeness: projected_j = sum_i probs_i * max(0,
    1 - |clip(z_p_i) - z_q_j| / dz). Agrees with ``rlax.categorical_l2_project`` on evenly
    spaced supports.

    Args:
      z_p: float [N] atoms of the source distribution (e.g. r + discount * z).
      probs: float [N] their probabilities.
      z_q: float [M] evenly spaced target support, M >= 2, increasing.
    Returns float [M] probabilities on z_q (sum = sum(probs)).
    """
    chex.assert_rank([z_p, probs, z_q], 1)
    chex.assert_equal_shape([z_p, probs])
    dz = z_q[1] - z_q[0]
    clipped = jnp.clip(z_p, z_q[0], z_q[-1])
    weight = jnp.clip(1.0 - jnp.abs(clipped[:, None] - z_q[None, :]) / dz, 0.0, 1.0)  # [N, M]
    return jnp.sum(probs[:, None] * weight, axis=0)


def categorical_double_q_target(r_t: jax.Array, discount_t: jax.Array, probs_target_t: jax.Array,
                                q_selector_t: jax.Array, support: jax.Array,
                                bound: float | None = None) -> jax.Array:
    """(Double-)Q categorical target of one example (Bellemare et al. 2017; Hessel et al. 2018).

    The target network's distribution at a* = argmax q_selector_t, shifted to r + discount * z
    (optionally clamped to [-bound, bound]), projected back onto the support.

    Args:
      r_t, discount_t: float scalars (n-step reward sum, gamma^n or 0 at a terminal).
      probs_target_t: float [A, M] target-network probabilities at s_t.
      q_selector_t: float [A] Q values choosing a* (online net for double Q).
      support: float [M] evenly spaced atoms.
      bound: backup clamp, or None.
    Returns float [M] target probabilities.
    """
    chex.assert_rank([r_t, discount_t, probs_target_t, q_selector_t, support], [0, 0, 2, 1, 1])
    z_t = r_t + discount_t * support
    if bound is not None:
        z_t = jnp.clip(z_t, -bound, bound)
    return categorical_l2_project(z_t, probs_target_t[jnp.argmax(q_selector_t)], support)


def truncated_quantile_target(r_t: jax.Array, discount_t: jax.Array, quantiles_t: jax.Array,
                              entropy_bonus_t: jax.Array, num_to_drop: int) -> jax.Array:
    """TQC target atoms of one example (Kuznetsov et al. 2020, eq. 10).

    The target critics' atoms at (s_t, a_t ~ pi) are pooled over critics, sorted, and the
    ``num_to_drop`` largest removed (k per critic, so k * N in all); the rest become
    r + discount * (atom + entropy_bonus_t), with entropy_bonus_t = -alpha * log pi(a_t|s_t).

    Args:
      r_t, discount_t: float scalars (n-step reward sum; gamma^n, 0 at a terminal).
      quantiles_t: float [N, M] target-critic quantiles.
      entropy_bonus_t: float scalar.
      num_to_drop: static int in [0, N * M).
    Returns float [N * M - num_to_drop], sorted ascending.
    """
    chex.assert_rank([r_t, discount_t, quantiles_t, entropy_bonus_t], [0, 0, 2, 0])
    atoms = jnp.sort(quantiles_t.reshape(-1))[: quantiles_t.size - num_to_drop]
    return r_t + discount_t * (atoms + entropy_bonus_t)


def tanh_gaussian_log_prob(pre_tanh: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """log pi(a) of a = tanh(u), u ~ N(mean, exp(log_std)^2), summed over the last axis
    (Haarnoja et al. 2018, appendix C), with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))
    for numerical stability. Shapes [..., d] -> [...]."""
    normal = -0.5 * ((pre_tanh - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi)
    squash = 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
    return jnp.sum(normal - squash, axis=-1)
