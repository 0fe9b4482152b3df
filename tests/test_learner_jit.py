"""Jitted IQN learner steps of every preset on tiny configs (``pytest -k jit``)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import presets
from rl.iqn import METRIC_NAMES, make_iqn

IMAGE = (36, 36)  # small_cnn: 36 -> 8 -> 3 -> 1


def tiny(name, **agent):
    cfg = presets.get(name)
    return presets.replace(
        cfg,
        env=dict(num_envs=2, frame_stack=2),
        network=dict(impala_channels=(4, 8), width_scale=1, pooled_size=2, cnn_channels=(4, 8, 8),
                     mlp_hidden=(16,), hidden_dim=16, cosine_embedding_dim=8),
        agent=dict(num_tau_samples=4, num_tau_prime_samples=5, num_quantile_samples=3, **agent),
        replay=dict(capacity=256),
        training=dict(batch_size=8, learning_starts=0),
    )


def filled(cfg, image=True, steps=60, seed=0):
    """Agent, train state and a replay holding ``steps`` random slots per stream."""
    frame_shape, dtype = (IMAGE, np.uint8) if image else ((4,), np.float32)
    agent = make_iqn(cfg, num_actions=3, is_image=image)
    e, k = cfg.env.num_envs, cfg.env.frame_stack
    state = agent.init(jax.random.PRNGKey(seed), np.zeros((k, *frame_shape), dtype))
    replay_state = agent.replay.init(np.zeros(frame_shape, dtype), np.zeros((), np.int32))
    add = jax.jit(agent.replay.add, donate_argnums=0)
    rng = np.random.default_rng(seed)
    sss = np.zeros(e, np.int32)
    for _ in range(steps):
        obs = (rng.integers(0, 255, (e, *frame_shape)) if image else rng.normal(size=(e, 4)))
        terminated = rng.random(e) < 0.05
        replay_state = add(replay_state, obs=obs.astype(dtype),
                           action=rng.integers(0, 3, e).astype(np.int32),
                           reward=rng.normal(size=e).astype(np.float32), terminated=terminated,
                           truncated=np.zeros(e, bool), valid=np.ones(e, bool),
                           steps_since_start=sss)
        sss = np.where(terminated, 0, sss + 1).astype(np.int32)
    return agent, state, replay_state


def traced_update(agent):
    """A jitted, donating update that counts its traces."""
    traces = []

    def fn(state, replay_state, beta):
        traces.append(1)
        return agent.update(state, replay_state, beta)

    return jax.jit(fn, donate_argnums=(0, 1)), traces


CASES = [("iqn_btr", True), ("iqn", True), ("iqn", False)]


@pytest.mark.parametrize("name, image", CASES)
def test_jit_update_shapes_finite_no_retrace(name, image):
    cfg = tiny(name)
    agent, state, replay_state = filled(cfg, image)
    shapes = jax.tree.map(lambda x: (x.shape, x.dtype), (state, replay_state))
    update, traces = traced_update(agent)
    for i in range(3):
        state, replay_state, metrics = update(state, replay_state, jnp.float32(0.4 + 0.1 * i))
    assert len(traces) == 1
    assert jax.tree.map(lambda x: (x.shape, x.dtype), (state, replay_state)) == shapes
    assert set(metrics) == set(METRIC_NAMES)
    for name_, value in metrics.items():
        assert value.shape == () and value.dtype == jnp.float32, name_
        assert np.isfinite(float(value)), name_
    chex.assert_tree_all_finite(state.params)
    assert int(state.grad_steps) == 3


@pytest.mark.parametrize("name", ["iqn_btr", "iqn"])
def test_jit_target_copied_exactly_at_period(name):
    cfg = tiny(name, target_update_period=3)
    agent, state, replay_state = filled(cfg)
    update, _ = traced_update(agent)
    for step in range(1, 8):
        before = jax.tree.map(np.asarray, state.target_params)
        state, replay_state, metrics = update(state, replay_state, jnp.float32(0.5))
        after = jax.tree.map(np.asarray, state.target_params)
        changed = any(not np.array_equal(a, b) for a, b in
                      zip(jax.tree.leaves(before), jax.tree.leaves(after)))
        assert changed == (step % 3 == 0), step
        if step % 3 == 0:
            chex.assert_trees_all_equal(state.target_params, state.params)
            chex.assert_trees_all_equal(state.target_batch_stats, state.batch_stats)
        assert float(metrics["target_age"]) == step % 3


def test_jit_scan_runs_several_grad_steps_per_call():
    cfg = presets.replace(tiny("iqn"), training=dict(grad_steps_per_call=4))
    agent, state, replay_state = filled(cfg)
    update, traces = traced_update(agent)
    state, replay_state, _ = update(state, replay_state, jnp.float32(0.5))
    state, replay_state, _ = update(state, replay_state, jnp.float32(0.5))
    assert int(state.grad_steps) == 8 and len(traces) == 1


@pytest.mark.parametrize("name", ["iqn_btr", "iqn"])
def test_jit_loss_falls_on_fixed_batch(name):
    # A frozen target (no copy within the 150 steps) makes this a fixed regression problem.
    cfg = tiny(name, learning_rate=1e-3, target_update_period=1000)
    agent, state, replay_state = filled(cfg)
    batch = agent.replay.sample(replay_state, jax.random.PRNGKey(1), 8, 0.5)
    learn = jax.jit(agent.learn_step)
    losses = []
    for i in range(150):
        state, metrics, _ = learn(state, batch, jax.random.PRNGKey(100 + i))
        losses.append(float(metrics["loss"]))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10]), (losses[:10], losses[-10:])


def test_jit_prioritized_update_writes_new_priorities():
    cfg = tiny("iqn_btr")
    agent, state, replay_state = filled(cfg)
    leaves_before = np.asarray(replay_state.sum_tree).copy()
    update, _ = traced_update(agent)
    state, replay_state, _ = update(state, replay_state, jnp.float32(0.4))
    leaves_after = np.asarray(replay_state.sum_tree)
    n = leaves_after.shape[0] // 2
    changed = np.flatnonzero(leaves_before[n:] != leaves_after[n:])
    assert 1 <= changed.size <= cfg.training.batch_size
    # Only sampleable (positive) leaves are touched, and they stay positive.
    assert np.all(leaves_before[n:][changed] > 0) and np.all(leaves_after[n:][changed] > 0)


def test_jit_act_epsilon_greedy():
    cfg = tiny("iqn")
    agent, state, _ = filled(cfg, steps=0)
    obs = jnp.asarray(np.random.default_rng(0).integers(0, 255, (64, 2, *IMAGE)), jnp.uint8)
    act = jax.jit(agent.act, static_argnames="noisy")
    greedy = act(state, obs, jax.random.PRNGKey(0), 0.0, noisy=False)
    assert greedy.shape == (64,) and greedy.dtype == jnp.int32
    q = agent.q_values(state, obs, jax.random.split(jax.random.PRNGKey(0), 3)[0], noisy=False)
    np.testing.assert_array_equal(greedy, jnp.argmax(q, axis=-1))
    counts = np.zeros(3)
    for i in range(50):
        counts += np.bincount(np.asarray(act(state, obs, jax.random.PRNGKey(i), 1.0, noisy=False)),
                              minlength=3)
    # epsilon 1: uniform over 3 actions; 3200 draws, each share within 5 sigma of 1/3.
    assert np.all(np.abs(counts / counts.sum() - 1 / 3) < 5 * np.sqrt(2 / 9 / 3200))
