"""Quantile Huber loss and Munchausen / double-Q targets against worked numbers, rlax and numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from rl import losses


def test_quantile_huber_hand_worked():
    # pred at taus (0.25, 0.75) = (0, 2); targets (1, 3).
    # delta = [[1, 3], [-1, 1]]; huber(k=1) = [[0.5, 2.5], [0.5, 0.5]]
    # weights |tau - 1{delta<0}| = [[0.25, 0.25], [0.25, 0.75]]
    # row means: (0.125 + 0.625)/2 = 0.375 ; (0.125 + 0.375)/2 = 0.25 ; sum = 0.625
    loss = losses.quantile_huber_loss(jnp.array([0.0, 2.0]), jnp.array([0.25, 0.75]),
                                      jnp.array([1.0, 3.0]), 1.0)
    np.testing.assert_allclose(loss, 0.625, rtol=1e-6)


def test_quantile_huber_kappa_divides():
    # One pair, delta = 3, tau = 0.5, kappa = 2: huber = 2 * (3 - 1) = 4, /kappa = 2, * 0.5 = 1.
    loss = losses.quantile_huber_loss(jnp.array([0.0]), jnp.array([0.5]), jnp.array([3.0]), 2.0)
    np.testing.assert_allclose(loss, 1.0, rtol=1e-6)


def test_quantile_huber_matches_rlax():
    rng = np.random.default_rng(0)
    ours_grad = jax.jit(jax.grad(losses.quantile_huber_loss), static_argnums=3)
    ref_grad = jax.jit(jax.grad(lambda p, t, z: rlax.quantile_regression_loss(p, t, z, 1.0)))
    for i in range(20):
        n, n_prime = [(8, 8), (1, 5), (7, 3)][i % 3]
        pred = jnp.asarray(rng.normal(size=n) * 3, jnp.float32)
        taus = jnp.asarray(rng.uniform(size=n), jnp.float32)
        target = jnp.asarray(rng.normal(size=n_prime) * 3, jnp.float32)
        ours = losses.quantile_huber_loss(pred, taus, target, 1.0)
        ref = rlax.quantile_regression_loss(pred, taus, target, huber_param=1.0)
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
        # Gradients agree too (target gradients stopped in both).
        g_ours = ours_grad(pred, taus, target, 1.0)
        g_ref = ref_grad(pred, taus, target)
        np.testing.assert_allclose(g_ours, g_ref, rtol=1e-5, atol=1e-6)


def test_quantile_huber_minimised_at_true_quantiles():
    # Fitting free quantiles to samples of N(0, 1) recovers the normal quantiles when kappa is
    # small (with kappa = 1 the Huber part pulls them toward the mean).
    rng = np.random.default_rng(1)
    taus = jnp.array([0.1, 0.5, 0.9])
    target = jnp.asarray(rng.normal(size=4000), jnp.float32)
    pred = jnp.zeros(3)
    grad = jax.jit(jax.grad(losses.quantile_huber_loss))
    for _ in range(8000):
        pred = pred - 0.01 * grad(pred, taus, target, 0.01)
    np.testing.assert_allclose(pred, np.quantile(np.asarray(target), [0.1, 0.5, 0.9]), atol=0.03)


def _munchausen_numpy(r, discount, q_tm1, a, dist_t, tau, alpha, clip_min):
    def log_softmax(x):
        x = x - x.max()
        return x - np.log(np.exp(x).sum())
    log_pi_tm1 = log_softmax(q_tm1 / tau)
    bonus = alpha * min(max(tau * log_pi_tm1[a], clip_min), 0.0)
    q_t = dist_t.mean(axis=0)
    log_pi_t = log_softmax(q_t / tau)
    pi_t = np.exp(log_pi_t)
    out = np.empty(dist_t.shape[0])
    for j in range(dist_t.shape[0]):
        out[j] = r + bonus + discount * sum(pi_t[b] * (dist_t[j, b] - tau * log_pi_t[b])
                                            for b in range(dist_t.shape[1]))
    return out


@pytest.mark.parametrize("scale", [0.01, 1.0, 30.0])
def test_munchausen_target_matches_numpy(scale):
    rng = np.random.default_rng(2)
    fn = jax.jit(losses.munchausen_quantile_target, static_argnums=(5, 6, 7))
    for _ in range(10):
        num_actions, n_prime = 5, 7
        q_tm1 = rng.normal(size=num_actions) * scale
        dist_t = rng.normal(size=(n_prime, num_actions)) * scale
        a, r, discount = int(rng.integers(num_actions)), float(rng.normal()), 0.99 ** 3
        ours = fn(jnp.float32(r), jnp.float32(discount), jnp.asarray(q_tm1, jnp.float32),
                  jnp.int32(a), jnp.asarray(dist_t, jnp.float32), 0.03, 0.9, -1.0)
        ref = _munchausen_numpy(r, discount, q_tm1, a, dist_t, 0.03, 0.9, -1.0)
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_munchausen_bonus_clipped_and_terminal():
    # A very unlikely action: tau * log pi << -1, so the bonus is alpha * -1 = -0.9.
    q_tm1 = jnp.array([0.0, 100.0])
    dist_t = jnp.ones((3, 2))
    out = losses.munchausen_quantile_target(jnp.float32(1.0), jnp.float32(0.0), q_tm1,
                                            jnp.int32(0), dist_t, 0.03, 0.9, -1.0)
    np.testing.assert_allclose(out, [1.0 - 0.9] * 3, rtol=1e-6)
    # The greedy action has log pi ~ 0: no bonus.
    out = losses.munchausen_quantile_target(jnp.float32(1.0), jnp.float32(0.0), q_tm1,
                                            jnp.int32(1), dist_t, 0.03, 0.9, -1.0)
    np.testing.assert_allclose(out, [1.0] * 3, atol=1e-6)


def test_double_q_target_uses_selector_action():
    dist_t = jnp.array([[1.0, 10.0], [2.0, 20.0]])
    # Selector prefers action 0 although the target net prefers action 1.
    out = losses.quantile_q_target(jnp.float32(0.5), jnp.float32(0.9), dist_t, jnp.array([3.0, 1.0]))
    np.testing.assert_allclose(out, [0.5 + 0.9 * 1.0, 0.5 + 0.9 * 2.0], rtol=1e-6)
