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


# --- C51: categorical projection and double-Q target --------------------------------------

Z5 = jnp.array([-2.0, -1.0, 0.0, 1.0, 2.0])


def _project(z_p, probs, z_q=Z5):
    return np.asarray(losses.categorical_l2_project(jnp.asarray(z_p, jnp.float32),
                                                    jnp.asarray(probs, jnp.float32),
                                                    jnp.asarray(z_q, jnp.float32)))


@pytest.mark.parametrize("atom, expected", [
    (0.25, [0, 0, 0.75, 0.25, 0]),     # 1/4 of the way from 0 to 1: 3/4 stays on 0
    (-1.5, [0.5, 0.5, 0, 0, 0]),       # half-way between -2 and -1
    (1.9, [0, 0, 0, 0.1, 0.9]),
    (-0.1, [0, 0.1, 0.9, 0, 0]),
    (1.0, [0, 0, 0, 1, 0]),            # on an atom: all of it there
    (-2.0, [1, 0, 0, 0, 0]),
    (2.0, [0, 0, 0, 0, 1]),
    (-7.3, [1, 0, 0, 0, 0]),           # below v_min: all on the lowest atom
    (40.0, [0, 0, 0, 0, 1]),           # above v_max: all on the highest atom
])
def test_categorical_project_single_atom(atom, expected):
    np.testing.assert_allclose(_project([atom], [1.0]), expected, atol=1e-6)


def test_categorical_project_mixture_hand_worked():
    # 0.2 at -5 -> atom -2; 0.5 at 0.25 -> 0.375 on 0, 0.125 on 1; 0.3 at 7 -> atom 2.
    out = _project([-5.0, 0.25, 7.0], [0.2, 0.5, 0.3])
    np.testing.assert_allclose(out, [0.2, 0.0, 0.375, 0.125, 0.3], atol=1e-6)
    np.testing.assert_allclose(out.sum(), 1.0, rtol=1e-6)
    # Two atoms landing on the same support atom add up; N != M is allowed.
    out = _project([0.5, 0.5, -0.5, 3.0, -3.0, 1.0, 1.25],
                   [0.1, 0.1, 0.2, 0.15, 0.05, 0.2, 0.2])
    # 0.5 (x2, 0.2): 0.1 on 0, 0.1 on 1; -0.5 (0.2): 0.1 on -1, 0.1 on 0; 3 -> 2 (0.15);
    # -3 -> -2 (0.05); 1 (0.2) on 1; 1.25 (0.2): 0.15 on 1, 0.05 on 2.
    np.testing.assert_allclose(out, [0.05, 0.1, 0.2, 0.45, 0.2], atol=1e-6)


def test_categorical_project_identity_on_support():
    probs = np.array([0.1, 0.2, 0.3, 0.25, 0.15])
    np.testing.assert_allclose(_project(Z5, probs), probs, atol=1e-6)


def test_categorical_project_scales_with_atom_spacing():
    # Rainbow support: 51 atoms on [-10, 10], dz = 0.4. 0.1 is a quarter of the way from
    # 0 (index 25) to 0.4 (index 26).
    support = np.linspace(-10.0, 10.0, 51)
    out = _project([0.1, -9.8], [0.6, 0.4], support)
    expected = np.zeros(51)
    expected[25], expected[26] = 0.6 * 0.75, 0.6 * 0.25
    expected[0], expected[1] = 0.4 * 0.5, 0.4 * 0.5     # -9.8: half-way between -10 and -9.6
    np.testing.assert_allclose(out, expected, atol=1e-6)


def _target(r, discount, probs, q_selector, bound=None, support=Z5):
    return np.asarray(losses.categorical_double_q_target(
        jnp.float32(r), jnp.float32(discount), jnp.asarray(probs, jnp.float32),
        jnp.asarray(q_selector, jnp.float32), jnp.asarray(support, jnp.float32), bound))


@pytest.mark.parametrize("r, expected", [
    (0.5, [0, 0, 0.5, 0.5, 0]),
    (1.0, [0, 0, 0, 1, 0]),
    (-1.75, [0.75, 0.25, 0, 0, 0]),
    (5.0, [0, 0, 0, 0, 1]),
    (-5.0, [1, 0, 0, 0, 0]),
])
def test_categorical_target_terminal_puts_all_mass_at_reward(r, expected):
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(5), size=3)          # whatever the next state's distribution
    out = _target(r, 0.0, probs, [0.3, -1.0, 2.0])
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_categorical_target_double_q_selects_by_selector():
    # The target net prefers action 1 (mass near +2), the selector picks action 0.
    probs = np.array([[0.1, 0.2, 0.3, 0.25, 0.15],
                      [0.0, 0.0, 0.0, 0.1, 0.9]])
    # r = 0, discount 1: the chosen distribution comes back unchanged.
    np.testing.assert_allclose(_target(0.0, 1.0, probs, [5.0, 1.0]), probs[0], atol=1e-6)
    np.testing.assert_allclose(_target(0.0, 1.0, probs, [1.0, 5.0]), probs[1], atol=1e-6)
    # r = 1, discount 1: shifted one atom up, the top atom (3) clipped onto 2.
    np.testing.assert_allclose(_target(1.0, 1.0, probs, [5.0, 1.0]),
                               [0.0, 0.1, 0.2, 0.3, 0.4], atol=1e-6)
    # r = 0, discount 0.5: atoms at -1, -0.5, 0, 0.5, 1 of action 0.
    # -1: 0.1 on -1; -0.5 (0.2): 0.1 on -1, 0.1 on 0; 0: 0.3 on 0; 0.5 (0.25): 0.125 on 0 and
    # 1; 1: 0.15 on 1.
    np.testing.assert_allclose(_target(0.0, 0.5, probs, [5.0, 1.0]),
                               [0.0, 0.2, 0.525, 0.275, 0.0], atol=1e-6)


def test_categorical_target_bound_clamps_backup():
    probs = np.full((1, 5), 0.2)
    # r + z = [-1, 0, 1, 2, 3]; without the bound: 0.2 each on -1, 0, 1 and 0.4 on 2.
    np.testing.assert_allclose(_target(1.0, 1.0, probs, [0.0]), [0, 0.2, 0.2, 0.2, 0.4],
                               atol=1e-6)
    # Clamped to [-0.5, 0.5]: [-0.5, 0, 0.5, 0.5, 0.5] -> -0.5: 0.1 on -1 and 0; 0: 0.2 on 0;
    # 0.5 (x3): 0.3 on 0 and 0.3 on 1.
    np.testing.assert_allclose(_target(1.0, 1.0, probs, [0.0], bound=0.5),
                               [0, 0.1, 0.6, 0.3, 0], atol=1e-6)
    # The bound also clamps from below: r = -3 gives [-5, -4, -3, -2, -1], clamped to
    # [-1.5, 1.5]: four atoms at -1.5 (0.8: 0.4 on -2, 0.4 on -1) and 0.2 at -1.
    np.testing.assert_allclose(_target(-3.0, 1.0, probs, [0.0], bound=1.5),
                               [0.4, 0.6, 0, 0, 0], atol=1e-6)


@pytest.mark.parametrize("num_atoms, num_src", [(2, 2), (5, 5), (11, 1), (51, 51), (51, 7)])
def test_categorical_project_conserves_mass_and_matches_rlax(num_atoms, num_src):
    rng = np.random.default_rng(num_atoms * 100 + num_src)
    batch = 32
    v_min = rng.uniform(-20, 0, size=batch)
    v_max = v_min + rng.uniform(0.5, 30, size=batch)
    z_q = np.linspace(v_min, v_max, num_atoms, axis=1)                      # [B, M]
    span = (v_max - v_min)[:, None]
    z_p = rng.uniform(v_min[:, None] - span, v_max[:, None] + span, size=(batch, num_src))
    # Some atoms exactly on support points, including the ends.
    on = rng.integers(num_atoms, size=batch // 4)
    z_p[: batch // 4, 0] = z_q[np.arange(batch // 4), on]
    z_p[batch // 4: batch // 2, 0] = z_q[batch // 4: batch // 2, -1]
    probs = rng.dirichlet(np.ones(num_src) * 0.5, size=batch)
    args = [jnp.asarray(x, jnp.float32) for x in (z_p, probs, z_q)]
    got = jax.jit(jax.vmap(losses.categorical_l2_project))(*args)
    want = jax.jit(jax.vmap(rlax.categorical_l2_project))(*args)
    assert got.shape == (batch, num_atoms)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), np.ones(batch), atol=1e-5)
    assert float(got.min()) >= 0.0


@pytest.mark.filterwarnings("ignore:Rlax categorical_cross_entropy:PendingDeprecationWarning")
def test_categorical_target_matches_rlax_categorical_double_q_learning():
    # rlax.categorical_double_q_learning builds the same target (then a cross-entropy); compare
    # our target's cross-entropy with its loss.
    rng = np.random.default_rng(5)
    batch, num_actions = 32, 4
    support = jnp.linspace(-10.0, 10.0, 51, dtype=jnp.float32)
    logits_tm1 = jnp.asarray(rng.normal(size=(batch, num_actions, 51)), jnp.float32)
    logits_t = jnp.asarray(rng.normal(size=(batch, num_actions, 51)) * 2, jnp.float32)
    q_selector = jnp.asarray(rng.normal(size=(batch, num_actions)), jnp.float32)
    a_tm1 = jnp.asarray(rng.integers(num_actions, size=batch), jnp.int32)
    r = jnp.asarray(rng.normal(size=batch) * 5, jnp.float32)
    discount = jnp.asarray(rng.choice([0.0, 0.99**3], size=batch), jnp.float32)

    @jax.jit
    @jax.vmap
    def ours(logits_tm1, a_tm1, r, discount, logits_t, q_selector):
        target = losses.categorical_double_q_target(r, discount, jax.nn.softmax(logits_t),
                                                    q_selector, support)
        return target, -jnp.sum(target * jax.nn.log_softmax(logits_tm1[a_tm1]))

    @jax.jit
    @jax.vmap
    def ref(logits_tm1, a_tm1, r, discount, logits_t, q_selector):
        return rlax.categorical_double_q_learning(support, logits_tm1, a_tm1, r, discount,
                                                  support, logits_t, q_selector)

    target, ce = ours(logits_tm1, a_tm1, r, discount, logits_t, q_selector)
    np.testing.assert_allclose(target.sum(axis=1), np.ones(batch), atol=1e-5)
    np.testing.assert_allclose(ce, ref(logits_tm1, a_tm1, r, discount, logits_t, q_selector),
                               rtol=1e-5, atol=1e-5)
