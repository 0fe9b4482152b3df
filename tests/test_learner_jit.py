"""Jitted learner steps of every preset on tiny configs (``pytest -k jit``), and the training
controls they share: target update modes, gradient accumulation, backup clamping, BatchNorm."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import test_tqc
from rl import presets, schedules
from rl.agent import COUNT_METRIC_NAMES, METRIC_NAMES, SAMPLING_METRIC_NAMES, explore_mask
from rl.config import resolve_env_auto
from rl.learners import make_agent, update_metric_names

IMAGE = (36, 36)  # small_cnn: 36 -> 8 -> 3 -> 1


def tiny(name, network=None, replay=None, **agent):
    cfg = presets.get(name)
    return presets.replace(
        cfg,
        env=dict(num_envs=1 if cfg.env.id == "trackmania" else 2, frame_stack=2),
        network=dict(impala_channels=(4, 8), width_scale=1, pooled_size=2, cnn_channels=(4, 8, 8),
                     mlp_hidden=(16,), hidden_dim=16, cosine_embedding_dim=8,
                     action_history_dim=8, **(network or {})),
        agent={**dict(num_tau_samples=4, num_tau_prime_samples=5, num_quantile_samples=3,
                      num_atoms=11), **agent},
        replay=dict(capacity=256, **(replay or {})),
        training=dict(batch_size=8, learning_starts=0, grad_steps_per_call=1),
    )


def filled(cfg, image=True, steps=60, seed=0):
    """Agent, train state and a replay holding ``steps`` random slots per stream."""
    frame_shape, dtype = (IMAGE, np.uint8) if image else ((4,), np.float32)
    agent = make_agent(cfg, num_actions=3, is_image=image)
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


# Every discrete-action preset (the tqc presets: tests/test_tqc.py).
VALUE_PRESETS = [n for n in presets.PRESETS if presets.get(n).agent.learner != "tqc"]
CASES = [(name, True) for name in VALUE_PRESETS] + [("iqn", False), ("dqn", False)]


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
    assert set(metrics) == set(METRIC_NAMES) | set(SAMPLING_METRIC_NAMES) \
        | set(COUNT_METRIC_NAMES) == set(update_metric_names(cfg))
    assert float(metrics["nonfinite_steps"]) == 0
    for name_, value in metrics.items():
        assert value.shape == () and value.dtype == jnp.float32, name_
        assert np.isfinite(float(value)), name_
    chex.assert_tree_all_finite(state.params)
    assert int(state.grad_steps) == 3


# The copy is shared code (ValueAgent._target_update); tm20 adds BatchNorm statistics.
@pytest.mark.parametrize("name", ["iqn", "tm20_rainbow"])
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
    agent, state, replay_state = filled(cfg, image=False)
    update, traces = traced_update(agent)
    state, replay_state, _ = update(state, replay_state, jnp.float32(0.5))
    state, replay_state, _ = update(state, replay_state, jnp.float32(0.5))
    assert int(state.grad_steps) == 8 and len(traces) == 1


@pytest.mark.parametrize("name", ["iqn_btr", "iqn", "dqn"])
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
    # The floor is above 0: fresh taus (IQN) or noise each step keep the loss stochastic.
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10]), (losses[:10], losses[-10:])


def test_jit_c51_fits_expected_backup_on_fixed_batch():
    # The cross-entropy cannot fall below the target distribution's entropy, so C51's fit is
    # read from |E[target] - Q(s, a)|, with noise off so the frozen target is fixed.
    cfg = tiny("rainbow", network=dict(noisy=False), learning_rate=1e-3,
               target_update_period=1000)
    agent, state, replay_state = filled(cfg)
    batch = _fixed_batch(agent, replay_state)
    learn = jax.jit(agent.learn_step)
    losses, td = [], []
    for i in range(150):
        state, metrics, _ = learn(state, batch, jax.random.PRNGKey(100 + i))
        losses.append(float(metrics["loss"]))
        td.append(float(metrics["td_abs_mean"]))
    assert np.mean(td[-10:]) < 0.25 * np.mean(td[:10]), (td[:10], td[-10:])
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_jit_prioritized_update_writes_new_priorities():
    # The write-back is the shared sampled_updates; iqn compiles faster than iqn_btr.
    cfg = tiny("iqn", replay=dict(prioritized=True))
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


def _prioritized_learner(family, steps_per_call):
    """(agent, state, replay state) of a tiny learner of ``family`` (dqn, rainbow, iqn, tqc)
    on vector observations, with prioritized replay."""
    if family == "tqc":
        cfg = test_tqc.tiny()
    else:
        cfg = tiny(family, network=dict(torso="auto"))
    cfg = presets.replace(cfg, replay=dict(prioritized=True),
                          training=dict(grad_steps_per_call=steps_per_call))
    if family == "tqc":
        return test_tqc.filled(cfg)
    return filled(cfg, image=False)


def _with_nan_rewards(replay_state, slots=slice(None)):
    """The replay with NaN stored rewards at ``slots`` (an index of the per-stream axis)."""
    return replay_state.replace(reward=replay_state.reward.at[:, slots].set(jnp.nan))


@pytest.mark.parametrize("family", ["dqn", "rainbow", "iqn", "tqc"])
def test_jit_nonfinite_steps_keep_the_state_and_the_priorities(family):
    """NaN rewards in every stored transition make each loss NaN: the update keeps the whole
    state (params, optimizer and target state, step counter) bit for bit but advances the
    rng, counts both steps, and writes no priority; on clean data it learns again."""
    agent, state, replay_state = _prioritized_learner(family, steps_per_call=2)
    clean = jnp.array(replay_state.reward)
    poisoned = _with_nan_rewards(replay_state)
    state_before, replay_before = jax.tree.map(np.array, (state, poisoned))
    update, traces = traced_update(agent)
    state, replay_state, metrics = update(state, poisoned, jnp.float32(0.5))
    assert float(metrics["nonfinite_steps"]) == 2
    assert not all(np.isfinite(float(v)) for v in metrics.values())
    chex.assert_trees_all_equal(state.replace(rng=state_before.rng), state_before)
    assert not np.array_equal(state.rng, state_before.rng)
    chex.assert_trees_all_equal(replay_state, replay_before)  # sum tree and max priority
    state, replay_state, metrics = update(state, replay_state.replace(reward=clean),
                                          jnp.float32(0.5))
    assert float(metrics["nonfinite_steps"]) == 0 and len(traces) == 1
    assert int(state.grad_steps) == int(state_before.grad_steps) + 2
    assert not np.array_equal(replay_state.sum_tree, replay_before.sum_tree)
    online = ("actor_params", "critic_params") if family == "tqc" else ("params",)
    for name in online:
        assert any(not np.array_equal(a, b) for a, b in zip(
            _leaves(getattr(state, name)), _leaves(getattr(state_before, name)))), name


def test_jit_nonfinite_steps_within_a_call_are_skipped_one_by_one():
    """A few NaN rewards: some sampled batches hold one and some do not. Six grad steps in
    one call skip exactly the steps that six one-step calls skip (same keys, same batches),
    count them, and end in the same state."""
    agent6, state, replay_state = _prioritized_learner("dqn", steps_per_call=6)
    agent1 = make_agent(presets.replace(agent6.config, training=dict(grad_steps_per_call=1)),
                        num_actions=3, is_image=False)
    replay_state = _with_nan_rewards(replay_state, slice(20, 22))
    beta = jnp.float32(0.5)
    state6, replay6, metrics6 = jax.jit(agent6.update)(state, replay_state, beta)
    update1 = jax.jit(agent1.update)
    state1, replay1, skipped = state, replay_state, []
    for _ in range(6):
        params = _leaves(state1.params)
        state1, replay1, metrics = update1(state1, replay1, beta)
        skipped.append(float(metrics["nonfinite_steps"]))
        kept = all(np.array_equal(a, b) for a, b in zip(params, _leaves(state1.params)))
        assert kept == (skipped[-1] == 1), skipped
    assert 0 < sum(skipped) < 6, skipped
    assert float(metrics6["nonfinite_steps"]) == sum(skipped)
    assert int(state6.grad_steps) == 6 - sum(skipped)
    chex.assert_trees_all_close(state6, state1, rtol=1e-4, atol=1e-5)
    chex.assert_trees_all_close(replay6, replay1, rtol=1e-4, atol=1e-5)


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


@pytest.mark.parametrize("draw", ["env", "vector_step"])
def test_jit_act_epsilon_draw_per_env_or_per_vector_step(draw):
    """epsilon 0.5 over 200 keys: each env explores half the time either way; with one draw
    per vector step a call explores in all 64 envs or in none (greedy everywhere)."""
    cfg = tiny("dqn", epsilon_draw=draw)  # deterministic greedy Q (IQN samples taus)
    agent, state, _ = filled(cfg, steps=0)
    masks = np.stack([explore_mask(cfg.agent, jax.random.PRNGKey(i), 64, jnp.float32(0.5))
                      for i in range(200)])
    assert masks.shape == (200, 64) and abs(masks.mean() - 0.5) < 5 * np.sqrt(0.25 / 200)
    same = masks.all(axis=1) | ~masks.any(axis=1)
    assert same.all() if draw == "vector_step" else not same.any()
    obs = jnp.asarray(np.random.default_rng(0).integers(0, 255, (64, 2, *IMAGE)), jnp.uint8)
    act = jax.jit(agent.act, static_argnames="noisy")
    greedy = np.asarray(act(state, obs, jax.random.PRNGKey(0), 0.0, noisy=False))
    all_greedy = np.mean([np.array_equal(act(state, obs, jax.random.PRNGKey(i), 0.5,
                                             noisy=False), greedy) for i in range(200)])
    # One draw: about half the calls are greedy in every env; per env: (1/2)^64 of them.
    assert abs(all_greedy - 0.5) < 0.2 if draw == "vector_step" else all_greedy == 0.0


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _fixed_batch(agent, replay_state, size=8, seed=1):
    return agent.replay.sample(replay_state, jax.random.PRNGKey(seed), size, 0.5)


def test_jit_soft_target_is_polyak_blend_every_period():
    cfg = tiny("iqn", target_update="soft", target_tau=0.1, target_soft_period=2)
    agent, state, replay_state = filled(cfg)
    batch = _fixed_batch(agent, replay_state)
    learn = jax.jit(agent.learn_step)
    target0 = _leaves(state.target_params)
    state, metrics, _ = learn(state, batch, jax.random.PRNGKey(0))
    for a, b in zip(target0, _leaves(state.target_params)):
        np.testing.assert_array_equal(a, b)  # step 1 of period 2: no blend
    state, metrics, _ = learn(state, batch, jax.random.PRNGKey(1))
    for t0, p, t in zip(target0, _leaves(state.params), _leaves(state.target_params)):
        np.testing.assert_allclose(t, 0.1 * p + 0.9 * t0, rtol=1e-6, atol=1e-7)
    assert float(metrics["target_age"]) == 2  # soft only: updates since the initial copy
    assert 0 < float(metrics["target_param_gap"])


def test_jit_both_mode_blends_each_update_and_hard_copies_at_period():
    cfg = tiny("dqn", target_update="both", target_tau=0.25, target_update_period=3)
    agent, state, replay_state = filled(cfg)
    batch = _fixed_batch(agent, replay_state)
    learn = jax.jit(agent.learn_step)
    for step in range(1, 4):
        before = _leaves(state.target_params)
        state, metrics, _ = learn(state, batch, jax.random.PRNGKey(step))
        after, online = _leaves(state.target_params), _leaves(state.params)
        if step < 3:
            for t0, p, t in zip(before, online, after):
                np.testing.assert_allclose(t, 0.25 * p + 0.75 * t0, rtol=1e-6, atol=1e-7)
        else:
            chex.assert_trees_all_equal(state.target_params, state.params)
            assert float(metrics["target_param_gap"]) == 0.0
        assert float(metrics["target_age"]) == step % 3


@pytest.mark.parametrize("name", ["dqn"])  # optax.MultiSteps wraps every learner alike
def test_jit_gradient_accumulation_equals_one_large_batch(name):
    # Noise-free, uniform replay (all weights 1) and no BatchNorm: the loss is a plain mean,
    # so the mean gradient of 4 micro-batches is the gradient of their union.
    common = dict(network=dict(noisy=False), replay=dict(prioritized=False),
                  target_update_period=1000, learning_rate=1e-2, max_grad_norm=0.01)
    accumulated = tiny(name, grad_accumulation=4, **common)
    single = tiny(name, **common)
    agent_k, state_k, replay_state = filled(accumulated)
    agent_1 = make_agent(single, num_actions=3, is_image=True)
    state_1 = agent_1.init(jax.random.PRNGKey(0), np.zeros((2, *IMAGE), np.uint8))
    chex.assert_trees_all_equal(state_k.params, state_1.params)
    big = _fixed_batch(agent_k, replay_state, size=32)
    learn_k = jax.jit(agent_k.learn_step)
    params0 = _leaves(state_k.params)
    for i in range(4):
        micro = jax.tree.map(lambda x: x[8 * i:8 * (i + 1)], big)
        state_k, metrics_k, _ = learn_k(state_k, micro, jax.random.PRNGKey(i))
        if i < 3:  # no update until the 4th micro-batch
            for a, b in zip(params0, _leaves(state_k.params)):
                np.testing.assert_array_equal(a, b)
    state_1, metrics_1, _ = jax.jit(agent_1.learn_step)(state_1, big, jax.random.PRNGKey(9))
    assert float(metrics_1["clip_ratio"]) < 1.0  # the clip acts on the accumulated gradient
    for a, b in zip(_leaves(state_k.params), _leaves(state_1.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert any(not np.allclose(a, b) for a, b in zip(params0, _leaves(state_1.params)))


@pytest.mark.parametrize("name", ["dqn", "iqn", "rainbow"])
def test_jit_backup_clamp_bounds_learned_q(name):
    # Rewards of 50 per step: unclamped Q climbs far past 5; clamped, it settles at the bound.
    def q_max_after_training(clamp):
        # C51: 41 atoms on [-100, 100] put an atom on the bound 5.
        cfg = tiny(name, network=dict(noisy=False), target_clamp=clamp, learning_rate=3e-3,
                   target_update_period=20, v_min=-100.0, v_max=100.0, num_atoms=41)
        agent, state, replay_state = filled(cfg)
        batch = _fixed_batch(agent, replay_state, size=16)
        batch = batch.replace(reward=jnp.full_like(batch.reward, 50.0))
        learn = jax.jit(agent.learn_step)
        for i in range(300):
            state, metrics, _ = learn(state, batch, jax.random.PRNGKey(i))
        return float(metrics["q_max"])

    assert q_max_after_training(None) > 20.0
    clamped = q_max_after_training(5.0)
    assert 2.5 < clamped < 6.0, clamped


def test_target_clamp_auto_bound():
    from rl.agent import target_bound

    cfg = presets.replace(presets.get("dqn"), agent=dict(target_clamp="auto", gamma=0.99),
                          env=dict(reward_clip=2.0))
    np.testing.assert_allclose(target_bound(cfg, 4), 2.0 / 0.01)
    # iqn_btr's reward_clip is auto: 1 on pixels, as make_agent resolves it.
    btr = presets.replace(presets.get("iqn_btr"), agent=dict(target_clamp="auto"))
    np.testing.assert_allclose(target_bound(resolve_env_auto(btr, is_image=True), 3),
                               (1.0 + 0.03 * np.log(3)) / 0.003)
    agent = make_agent(presets.replace(btr, network=dict(torso="small_cnn")), 3, is_image=True)
    np.testing.assert_allclose(agent.target_bound, (1.0 + 0.03 * np.log(3)) / 0.003)
    assert (agent.config.env.frame_stack, agent.replay.frame_stack) == (4, 4)
    assert target_bound(presets.get("dqn"), 4) is None


def test_jit_batchnorm_statistics_update_only_in_training():
    cfg = tiny("tm20_rainbow", target_update_period=1000)
    agent, state, replay_state = filled(cfg)
    assert cfg.network.norm == "batch" and state.batch_stats
    obs = _fixed_batch(agent, replay_state).obs
    key = jax.random.PRNGKey(3)
    before = _leaves(state.batch_stats)
    # Inference uses the running averages: a sample's Q does not depend on its batch mates.
    q_all = agent.q_values(state, obs, key, noisy=False)
    q_one = agent.q_values(state, obs[:1], key, noisy=False)
    np.testing.assert_allclose(q_all[:1], q_one, rtol=1e-5, atol=1e-6)
    for a, b in zip(before, _leaves(state.batch_stats)):
        np.testing.assert_array_equal(a, b)
    state, _, _ = jax.jit(agent.learn_step)(state, _fixed_batch(agent, replay_state), key)
    assert any(not np.allclose(a, b) for a, b in zip(before, _leaves(state.batch_stats)))
    # The target network keeps its own statistics until the next hard copy.
    for a, b in zip(before, _leaves(state.target_batch_stats)):
        np.testing.assert_array_equal(a, b)


def test_jit_learning_rate_metric_follows_schedule_in_optimizer_updates():
    cfg = tiny("dqn", lr_schedule="linear", learning_rate=1e-2, lr_end=1e-3, lr_decay_steps=4,
               grad_accumulation=2)
    agent, state, replay_state = filled(cfg)
    batch = _fixed_batch(agent, replay_state)
    learn = jax.jit(agent.learn_step)
    schedule = schedules.learning_rate(cfg.agent)
    for step in range(1, 11):
        state, metrics, _ = learn(state, batch, jax.random.PRNGKey(step))
        np.testing.assert_allclose(float(metrics["learning_rate"]), schedule(step // 2),
                                   rtol=1e-6)
    np.testing.assert_allclose(float(metrics["learning_rate"]), 1e-3, rtol=1e-6)


def test_jit_action_history_changes_q():
    cfg = tiny("linesight_a01")
    agent, state, replay_state = filled(cfg)
    batch = _fixed_batch(agent, replay_state)
    assert batch.prev_actions.shape == (8, 5)
    key = jax.random.PRNGKey(0)
    none = jnp.full((8, 5), -1, jnp.int32)
    q_none = agent.q_values(state, batch.obs, key, noisy=False, prev_actions=none)
    q_zero = agent.q_values(state, batch.obs, key, noisy=False, prev_actions=none.at[:, -1].set(0))
    assert float(jnp.abs(q_none - q_zero).max()) > 0


@pytest.mark.parametrize("name", ["iqn_btr", "dqn"])  # Impala; Nature CNN (strided convs)
def test_jit_scanned_update_equals_single_steps_with_fast_convolutions(name):
    """Two grad steps in one call (a lax.scan) give the state of two one-step calls; every
    convolution of the compiled update, gradients in the loop body included, has the layout
    of XLA:CPU's fast convolutions and no dilation (strided and in-loop gradients otherwise
    run as generic loops)."""
    two = presets.replace(tiny(name), training=dict(grad_steps_per_call=2))
    agent2, state, replay_state = filled(two)
    agent1 = make_agent(tiny(name), num_actions=3, is_image=True)
    beta = jnp.float32(0.5)
    update2 = jax.jit(agent2.update).lower(state, replay_state, beta).compile()
    state2, replay2, metrics2 = update2(state, replay_state, beta)
    update1 = jax.jit(agent1.update)
    state1, replay1, first = update1(state, replay_state, beta)
    state1, replay1, second = update1(state1, replay1, beta)
    chex.assert_trees_all_close(state2, state1, rtol=1e-4, atol=1e-5)
    chex.assert_trees_all_close(replay2, replay1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(metrics2["loss"], (first["loss"] + second["loss"]) / 2,
                               rtol=1e-4)
    convs = [line for line in update2.as_text().splitlines() if " convolution(" in line]
    slow = [c for c in convs if "dim_labels=b01f_01io->b01f" not in c or "lhs_dilate" in c
            or "rhs_dilate" in c]
    assert convs and not slow, slow[:3]


def _cosine(a, b):
    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(a)])
    b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(b)])
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("name", ["iqn_btr", "dqn"])  # Impala, IQN, noisy; Nature CNN
def test_jit_bfloat16_network_keeps_float32_params_and_the_float32_loss(name):
    """network.dtype=bfloat16 computes the layers in bfloat16 from the same float32
    parameters: on a fixed batch the loss is within 3% of float32's and the gradient points
    the same way (cosine > 0.99) in float32 gradients of the float32 parameters."""
    cfg32 = tiny(name)
    cfg16 = presets.replace(cfg32, network=dict(dtype="bfloat16"))
    agent32, state, replay_state = filled(cfg32)
    agent16 = make_agent(cfg16, num_actions=3, is_image=True)
    batch = agent32.replay.sample(replay_state, jax.random.PRNGKey(1), 8, 0.5)
    key = jax.random.PRNGKey(2)
    value_and_grad = lambda agent: jax.jit(jax.value_and_grad(
        lambda p: agent._loss(p, state, batch, key)[0]))(state.params)
    (loss32, grads32), (loss16, grads16) = value_and_grad(agent32), value_and_grad(agent16)
    np.testing.assert_allclose(loss16, loss32, rtol=0.03)
    assert _cosine(grads16, grads32) > 0.99
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(grads16))
    state16 = agent16.init(jax.random.PRNGKey(0), np.zeros((2, *IMAGE), np.uint8))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state16.params))
