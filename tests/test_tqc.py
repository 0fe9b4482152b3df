"""TQC: the truncated target, the squashed-Gaussian log-likelihood, and the jitted update with
seed 004's controls (independent critics, fixed / learned alpha, gradient and backup clipping)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import losses, presets
from rl.learners import make_agent, update_metric_names
from rl.agent import COUNT_METRIC_NAMES, SAMPLING_METRIC_NAMES
from rl.tqc import METRIC_NAMES

OBS_DIM, ACTION_DIM = 3, 2


def tiny(**tqc):
    agent = tqc.pop("agent", {})
    return presets.replace(
        presets.get("tqc"),
        env=dict(num_envs=2),
        tqc={**dict(num_critics=2, num_quantiles=5, top_quantiles_to_drop=1, critic_hidden=(16,),
                    actor_hidden=(16,)), **tqc},
        agent=agent,
        replay=dict(capacity=256),
        training=dict(batch_size=16, learning_starts=0),
    )


def filled(cfg, steps=60, seed=0):
    agent = make_agent(cfg, ACTION_DIM, is_image=False)
    state = agent.init(jax.random.PRNGKey(seed), np.zeros((1, OBS_DIM), np.float32))
    replay_state = agent.replay.init(np.zeros(OBS_DIM, np.float32),
                                     np.zeros(ACTION_DIM, np.float32))
    add = jax.jit(agent.replay.add, donate_argnums=0)
    rng = np.random.default_rng(seed)
    e = cfg.env.num_envs
    for t in range(steps):
        replay_state = add(replay_state, obs=rng.normal(size=(e, OBS_DIM)).astype(np.float32),
                           action=rng.uniform(-1, 1, (e, ACTION_DIM)).astype(np.float32),
                           reward=rng.normal(size=e).astype(np.float32),
                           terminated=np.zeros(e, bool), truncated=np.zeros(e, bool),
                           valid=np.ones(e, bool), steps_since_start=np.full(e, t, np.int32))
    return agent, state, replay_state


def batch_of(agent, replay_state, seed=1):
    return agent.replay.sample(replay_state, jax.random.PRNGKey(seed), 16, 0.5)


# --- pure functions -----------------------------------------------------------------------

def test_truncated_target_hand_worked():
    # Two critics x three quantiles; drop 1 per critic = the 2 largest of the 6 pooled atoms.
    z = jnp.array([[1.0, 5.0, 3.0], [2.0, 6.0, 4.0]])
    out = losses.truncated_quantile_target(jnp.float32(0.5), jnp.float32(0.9), z,
                                           jnp.float32(-0.1), 2)
    np.testing.assert_allclose(out, 0.5 + 0.9 * (np.array([1, 2, 3, 4]) - 0.1), rtol=1e-6)


def test_truncated_target_matches_numpy_reference():
    rng = np.random.default_rng(0)
    for _ in range(15):  # each new shape compiles afresh: keep the count modest
        n, m = rng.integers(1, 5), rng.integers(2, 30)
        drop = int(rng.integers(0, m)) * n
        z = rng.normal(size=(n, m)).astype(np.float32) * 5
        r, d, bonus = rng.normal(), rng.uniform(0, 1), rng.normal()
        want = r + d * (np.sort(z.ravel())[: n * m - drop] + bonus)
        got = losses.truncated_quantile_target(jnp.float32(r), jnp.float32(d), jnp.asarray(z),
                                               jnp.float32(bonus), drop)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    rng = np.random.default_rng(1)
    u = rng.normal(size=(64, 3)) * 2
    mean, log_std = rng.normal(size=(64, 3)), rng.uniform(-2, 1, (64, 3))
    std = np.exp(log_std)
    normal = -0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    want = np.sum(normal - np.log(1 - np.tanh(u) ** 2), axis=-1)
    got = losses.tanh_gaussian_log_prob(jnp.asarray(u, jnp.float32), jnp.asarray(mean, jnp.float32),
                                        jnp.asarray(log_std, jnp.float32))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# --- the jitted learner -------------------------------------------------------------------

def test_jit_tqc_update_shapes_finite_no_retrace():
    cfg = tiny()
    agent, state, replay_state = filled(cfg)
    shapes = jax.tree.map(lambda x: (x.shape, x.dtype), (state, replay_state))
    traces = []

    def fn(s, r, beta):
        traces.append(1)
        return agent.update(s, r, beta)

    update = jax.jit(fn, donate_argnums=(0, 1))
    for _ in range(3):
        state, replay_state, metrics = update(state, replay_state, jnp.float32(0.4))
    assert len(traces) == 1 and int(state.grad_steps) == 3
    assert jax.tree.map(lambda x: (x.shape, x.dtype), (state, replay_state)) == shapes
    assert set(metrics) == set(METRIC_NAMES) | set(SAMPLING_METRIC_NAMES) \
        | set(COUNT_METRIC_NAMES) == set(update_metric_names(cfg))
    assert float(metrics["nonfinite_steps"]) == 0
    for name, value in metrics.items():
        assert value.shape == () and np.isfinite(float(value)), name
    chex.assert_tree_all_finite((state.actor_params, state.critic_params))


def test_jit_tqc_tm20_update_on_images():
    cfg = presets.replace(presets.get("tqc_tm20"), env=dict(frame_stack=2),
                          network=dict(cnn_channels=(4, 8, 8)),
                          tqc=dict(critic_hidden=(16,), actor_hidden=(16,), num_quantiles=10),
                          replay=dict(capacity=128), training=dict(batch_size=8))
    agent = make_agent(cfg, 3, is_image=True)
    frame = np.zeros((36, 36), np.uint8)
    state = agent.init(jax.random.PRNGKey(0), np.zeros((2, 36, 36), np.uint8))
    replay_state = agent.replay.init(frame, np.zeros(3, np.float32))
    add = jax.jit(agent.replay.add, donate_argnums=0)
    rng = np.random.default_rng(0)
    for t in range(30):
        replay_state = add(replay_state, obs=rng.integers(0, 255, (1, 36, 36)).astype(np.uint8),
                           action=rng.uniform(-1, 1, (1, 3)).astype(np.float32),
                           reward=rng.normal(size=1).astype(np.float32),
                           terminated=np.zeros(1, bool), truncated=np.zeros(1, bool),
                           valid=np.ones(1, bool), steps_since_start=np.full(1, t, np.int32))
    update = jax.jit(agent.update, donate_argnums=(0, 1))
    for _ in range(2):
        state, replay_state, metrics = update(state, replay_state, jnp.float32(0.4))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert float(metrics["alpha"]) == pytest.approx(0.01, rel=1e-6)  # seed 004: fixed alpha
    # Each critic owns its CNN torso: kernels carry the ensemble axis.
    conv = state.critic_params["torso"]["conv0"]["kernel"]
    assert conv.shape[0] == 2 and not np.allclose(conv[0], conv[1])


def test_jit_critics_are_initialised_independently():
    cfg = tiny(num_critics=3)
    agent, state, replay_state = filled(cfg)
    for leaf in jax.tree.leaves(state.critic_params):
        assert leaf.shape[0] == 3
        if leaf.ndim == 3:  # kernels: every pair of critics differs
            for i in range(3):
                for j in range(i + 1, 3):
                    assert not np.allclose(leaf[i], leaf[j])
    _, metrics, _ = jax.jit(agent.learn_step)(state, batch_of(agent, replay_state),
                                              jax.random.PRNGKey(0))
    assert float(metrics["critics_identical_fraction"]) == 0.0
    # Two critics with the same parameters are flagged on the whole batch.
    twins = state.replace(critic_params=jax.tree.map(
        lambda x: jnp.broadcast_to(x[:1], x.shape), state.critic_params))
    _, metrics, _ = jax.jit(agent.learn_step)(twins, batch_of(agent, replay_state),
                                              jax.random.PRNGKey(0))
    assert float(metrics["critics_identical_fraction"]) == 1.0


def test_jit_fixed_alpha_stays_fixed():
    cfg = tiny(learn_alpha=False, alpha=0.01)
    agent, state, replay_state = filled(cfg)
    learn = jax.jit(agent.learn_step)
    for i in range(5):
        state, metrics, _ = learn(state, batch_of(agent, replay_state, i), jax.random.PRNGKey(i))
    assert float(metrics["alpha"]) == pytest.approx(0.01, rel=1e-6)


@pytest.mark.parametrize("target_entropy, direction", [(10.0, 1), (-10.0, -1)])
def test_jit_learned_alpha_moves_toward_target_entropy(target_entropy, direction):
    # Policy entropy of a 2-d squashed Gaussian is far below +10 and far above -10: alpha
    # must grow to push entropy up in the first case and shrink in the second.
    cfg = tiny(learn_alpha=True, alpha=0.5, alpha_learning_rate=1e-2,
               target_entropy=target_entropy)
    agent, state, replay_state = filled(cfg)
    learn = jax.jit(agent.learn_step)
    alphas = []
    for i in range(20):
        state, metrics, _ = learn(state, batch_of(agent, replay_state, i), jax.random.PRNGKey(i))
        alphas.append(float(metrics["alpha"]))
    assert direction * (alphas[-1] - 0.5) > 0.05, alphas
    assert all(direction * (b - a) > 0 for a, b in zip(alphas, alphas[1:])), alphas


@pytest.mark.parametrize("which", ["actor", "critic"])
def test_grad_clip_bounds_the_gradient_adam_receives(which):
    # With a huge Adam epsilon the first update is -lr / eps * (clipped) gradient, so the size
    # of the update reads the norm of the gradient after clipping.
    lr, eps, clip = 0.5, 1e6, 1.0

    def update_norm(clip_value):
        cfg = tiny(agent=dict(adam_eps=eps), actor_learning_rate=lr, critic_learning_rate=lr,
                   **{f"{which}_grad_clip": clip_value})
        agent = make_agent(cfg, ACTION_DIM, is_image=False)
        params = getattr(agent.init(jax.random.PRNGKey(0), np.zeros((1, OBS_DIM), np.float32)),
                         f"{which}_params")
        optimizer = getattr(agent, f"{which}_optimizer")
        grads = jax.tree.map(lambda x: jnp.full_like(x, 3.0), params)
        updates, _ = optimizer.update(grads, optimizer.init(params), params)
        return float(jnp.sqrt(sum(jnp.sum(u ** 2) for u in jax.tree.leaves(updates)))), \
            float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads))))

    clipped, grad_norm = update_norm(clip)
    free, _ = update_norm(0.0)
    np.testing.assert_allclose(clipped, lr / eps * clip, rtol=1e-4)
    np.testing.assert_allclose(free, lr / eps * grad_norm, rtol=1e-4)
    assert grad_norm > 10 * clip


def test_jit_grad_norm_metrics_report_the_unclipped_norm():
    cfg = tiny(actor_grad_clip=1e-3, critic_grad_clip=1e-3)
    agent, state, replay_state = filled(cfg)
    _, metrics, _ = jax.jit(agent.learn_step)(state, batch_of(agent, replay_state),
                                              jax.random.PRNGKey(0))
    assert float(metrics["actor_grad_norm"]) > 1e-2
    assert float(metrics["critic_grad_norm"]) > 1e-2


def test_jit_backup_clip_bounds_the_targets():
    cfg = tiny(agent=dict(target_clamp=5.0))
    agent, state, replay_state = filled(cfg)
    batch = batch_of(agent, replay_state)
    batch = batch.replace(reward=jnp.full_like(batch.reward, 1000.0).at[0].set(-1000.0))
    _, (_, backup, _) = agent._critic_loss(state.critic_params, state, batch,
                                           jax.random.PRNGKey(0))
    assert float(backup.max()) == 5.0 and float(backup.min()) == -5.0
    unclipped = make_agent(tiny(), ACTION_DIM, is_image=False)
    _, (_, backup, _) = unclipped._critic_loss(state.critic_params, state, batch,
                                               jax.random.PRNGKey(0))
    assert float(backup.max()) > 900


def test_jit_act_policy_modes():
    cfg = tiny()
    agent, state, _ = filled(cfg, steps=0)
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(256, 1, OBS_DIM)), jnp.float32)
    act = jax.jit(agent.act, static_argnames="noisy")
    greedy = act(state, obs, jax.random.PRNGKey(0), 0.0, noisy=False)
    assert greedy.shape == (256, ACTION_DIM) and greedy.dtype == jnp.float32
    np.testing.assert_array_equal(greedy, act(state, obs, jax.random.PRNGKey(1), 0.0, noisy=False))
    sampled = act(state, obs, jax.random.PRNGKey(0), 0.0, noisy=True)
    assert not np.allclose(sampled, greedy)
    random = np.asarray(act(state, obs, jax.random.PRNGKey(2), 1.0, noisy=False))
    # Uniform on [-1, 1]: mean 0, variance 1/3 (512 draws; 5 sigma bounds).
    assert np.all(np.abs(random) <= 1) and abs(random.mean()) < 5 * np.sqrt(1 / 3 / 512)
    assert abs(random.var() - 1 / 3) < 0.1
