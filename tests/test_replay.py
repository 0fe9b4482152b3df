"""Tests for replay/: sum tree, frame-stack dedup, action history, n-step returns, PER.

The oracle is a plain-Python reference over a list of slots per stream (logical time,
no rings); the device buffer must agree with it on which positions are sampleable and
on every field of every sampleable transition, before and after wrap-around.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from replay import Batch, DeviceReplay, sum_tree
from replay.sum_tree import _descend

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------
# Reference implementation (plain Python over logical slots).


def simulate(seed, num_streams, num_steps, max_episode_len, action_shape=()):
    """Generates slots as the NEXT_STEP-autoreset collector would.

    Returns (inputs, slots): inputs[t] are the kwargs of add for vector step t (leading
    axis E); slots[e][t] is stream e's slot at logical step t as a dict.
    Observation ids are (stream, episode, steps_since_start) so foreign frames show up.
    """
    rng = np.random.default_rng(seed)
    slots = [[] for _ in range(num_streams)]
    episode = [0] * num_streams
    since = [0] * num_streams
    length = [int(rng.integers(1, max_episode_len + 1)) for _ in range(num_streams)]
    pending_final = [False] * num_streams
    inputs = []
    for t in range(num_steps):
        step = []
        for e in range(num_streams):
            obs = {
                "pix": np.full((2, 2), (e * 37 + t) % 256, np.uint8),
                "id": np.array([e, episode[e], since[e]], np.int32),
            }
            action = rng.normal(size=action_shape).astype(np.float32) if action_shape else np.int32(rng.integers(0, 5))
            if pending_final[e]:
                # Autoreset slot: final observation of the ended episode.
                slot = dict(obs=obs, action=action, reward=np.float32(0), terminated=False,
                            truncated=False, valid=False, sss=since[e])
                episode[e] += 1
                since[e] = 0
                length[e] = int(rng.integers(1, max_episode_len + 1))
                pending_final[e] = False
            else:
                end = since[e] + 1 == length[e]
                terminal = end and bool(rng.random() < 0.5)
                slot = dict(obs=obs, action=action, reward=np.float32(rng.normal()),
                            terminated=terminal, truncated=end and not terminal, valid=True,
                            sss=since[e])
                since[e] += 1
                pending_final[e] = end
            slots[e].append(slot)
            step.append(slot)
        inputs.append(dict(
            obs=jax.tree.map(lambda *xs: np.stack(xs), *[s["obs"] for s in step]),
            action=np.stack([s["action"] for s in step]),
            reward=np.array([s["reward"] for s in step], np.float32),
            terminated=np.array([s["terminated"] for s in step]),
            truncated=np.array([s["truncated"] for s in step]),
            valid=np.array([s["valid"] for s in step]),
            steps_since_start=np.array([s["sss"] for s in step], np.int32),
        ))
    return inputs, slots


def ref_sampleable(stream_slots, count, capacity, n, k, h=0):
    lo = max(0, count - capacity + max(k - 1, h))
    return [p for p in range(lo, count - n) if stream_slots[p]["valid"]]


def ref_prev_actions(stream_slots, p, h):
    """a_{p-h} .. a_{p-1}, -1 for actions before the episode start of slot p."""
    since = stream_slots[p]["sss"]
    return np.array([stream_slots[p - j]["action"] if j <= since else -1 for j in range(h, 0, -1)],
                    np.int32)


def ref_stack(stream_slots, p, k):
    since = stream_slots[p]["sss"]
    frames = [stream_slots[p - min(j, since)]["obs"] for j in range(k - 1, -1, -1)]
    return jax.tree.map(lambda *xs: np.stack(xs), *frames)


def ref_transition(stream_slots, p, n, gamma, k, h=0):
    m, reward, terminal = n, 0.0, False
    for j in range(n):
        s = stream_slots[p + j]
        reward += gamma**j * float(s["reward"])
        if s["terminated"] or s["truncated"]:
            m, terminal = j + 1, s["terminated"]
            break
    return dict(
        obs=ref_stack(stream_slots, p, k),
        prev_actions=ref_prev_actions(stream_slots, p, h),
        action=stream_slots[p]["action"],
        reward=reward,
        discount=0.0 if terminal else gamma**m,
        next_obs=ref_stack(stream_slots, p + m, k),
        next_prev_actions=ref_prev_actions(stream_slots, p + m, h),
        n_steps=m,
    )


def batch_item(batch: Batch, i):
    return jax.tree.map(lambda x: np.asarray(x)[i], batch)


def assert_matches_reference(item, ref):
    chex.assert_trees_all_equal(item.obs, ref["obs"])
    chex.assert_trees_all_equal(item.next_obs, ref["next_obs"])
    np.testing.assert_array_equal(item.action, ref["action"])
    for key in ("prev_actions", "next_prev_actions"):
        assert getattr(item, key).dtype == np.int32
        np.testing.assert_array_equal(getattr(item, key), ref[key], err_msg=key)
    np.testing.assert_allclose(item.reward, ref["reward"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(item.discount, ref["discount"], rtol=1e-6)
    assert int(item.n_steps) == ref["n_steps"]
    # Never a frame of another episode in either stack.
    for stack in (item.obs, item.next_obs):
        assert len(set(stack["id"][:, 1].tolist())) == 1
        assert len(set(stack["id"][:, 0].tolist())) == 1


def obs_example():
    return {"pix": np.zeros((2, 2), np.uint8), "id": np.zeros((3,), np.int32)}


def leaves(replay, state):
    lo = sum_tree.num_leaves_capacity(state.sum_tree)
    return np.asarray(state.sum_tree[lo: lo + replay.num_leaves])


# ----------------------------------------------------------------------------------
# Sum tree (jitted once: eager dispatch of the per-level ops is the slow part on CPU).

tree_set = jax.jit(sum_tree.set)
tree_sample = jax.jit(sum_tree.sample, static_argnums=2)
descend = jax.jit(_descend)


def assert_tree_consistent(tree):
    tree = np.asarray(tree)
    size = tree.shape[0] // 2
    for node in range(1, size):
        np.testing.assert_allclose(tree[node], tree[2 * node] + tree[2 * node + 1], rtol=1e-6)


def test_sum_tree_set_with_duplicates_and_get():
    tree = sum_tree.init(10)  # L = 16
    assert tree.shape == (32,) and tree.dtype == jnp.float32
    tree = tree_set(tree, jnp.array([0, 1, 2, 9]), jnp.array([1.0, 2.0, 3.0, 4.0]))
    # Leaf 3 written three times, leaf 5 twice; sums must stay those of the stored leaves.
    tree = tree_set(tree, jnp.array([3, 3, 5, 3, 5, 1]), jnp.array([7.0, 7.0, 0.5, 7.0, 0.5, 0.0]))
    expected = np.array([1, 0, 3, 7, 0, 0.5, 0, 0, 0, 4], np.float32)
    np.testing.assert_array_equal(sum_tree.get(tree, jnp.arange(10)), expected)
    np.testing.assert_allclose(sum_tree.total(tree), expected.sum())  # 15.5
    assert_tree_consistent(tree)
    # Duplicates with conflicting values: any winner is fine, sums must match it.
    tree = tree_set(tree, jnp.array([4, 4, 4]), jnp.array([1.0, 2.0, 3.0]))
    stored = np.asarray(sum_tree.get(tree, jnp.arange(16)))
    assert stored[4] in (1.0, 2.0, 3.0)
    np.testing.assert_allclose(sum_tree.total(tree), stored.sum())
    assert_tree_consistent(tree)


def test_sum_tree_single_leaf():
    tree = tree_set(sum_tree.init(1), jnp.array([0]), jnp.array([2.5]))
    assert float(sum_tree.total(tree)) == 2.5
    np.testing.assert_array_equal(tree_sample(tree, jax.random.key(0), 4), np.zeros(4))


@pytest.mark.parametrize("stratified", [True, False])
def test_sum_tree_sample_frequencies_proportional(stratified):
    values = np.array([0, 1, 2, 3, 0, 4, 0.5, 0, 7, 0.25, 0], np.float32)
    tree = tree_set(sum_tree.init(values.size), jnp.arange(values.size), values)
    draws = 200_000
    idx = np.asarray(jax.jit(sum_tree.sample, static_argnums=(2, 3))(
        tree, jax.random.key(1), draws, stratified))
    counts = np.bincount(idx, minlength=values.size)
    assert counts.size == values.size  # padding leaves never drawn
    p = values / values.sum()
    # Binomial sd is an upper bound for stratified draws; 5 sigma keeps this deterministic-safe.
    sigma = np.sqrt(draws * p * (1 - p))
    assert np.all(np.abs(counts - draws * p) <= 5 * sigma + 1)
    assert np.all(counts[values == 0] == 0)


def test_stratified_batches_hold_one_draw_per_segment_and_iid_batches_do_not():
    # 64 equal leaves, batches of 8: stratified puts draw i in leaves 8i .. 8i + 7, so a
    # batch's draws are in order and spread over the whole buffer; i.i.d. draws are not,
    # and their count of distinct segments hit follows 8 * (1 - (7/8)^8) = 5.25 on average.
    tree = sum_tree.build(np.ones(64, np.float32))
    keys = jax.random.split(jax.random.key(3), 2000)
    sample = jax.jit(jax.vmap(sum_tree.sample, in_axes=(None, 0, None, None)),
                     static_argnums=(2, 3))
    strat = np.asarray(sample(tree, keys, 8, True))
    np.testing.assert_array_equal(strat // 8, np.broadcast_to(np.arange(8), strat.shape))
    iid = np.asarray(sample(tree, keys, 8, False))
    segments = np.array([len(set(row // 8)) for row in iid])
    assert abs(segments.mean() - 8 * (1 - (7 / 8) ** 8)) < 0.1  # 5 standard errors
    assert (np.diff(iid, axis=1) < 0).any(axis=1).mean() > 0.99  # almost never in order


def test_sum_tree_float32_rounding_never_returns_zero_leaf():
    rng = np.random.default_rng(0)
    num = 4096
    values = rng.choice(np.array([0.0, 1e-8, 1e8, 1.0], np.float32), size=num, p=[0.5, 0.2, 0.05, 0.25])
    values[-1] = 0.0  # last leaf 0, so u near the total must not fall off the right end
    tree = tree_set(sum_tree.init(num), jnp.arange(num), values)
    idx = np.asarray(tree_sample(tree, jax.random.key(2), 100_000))
    assert np.all(values[idx] > 0)
    # Adversarial targets straight into the descent, including u >= total.
    root = sum_tree.total(tree)
    u = jnp.concatenate([
        jnp.array([0.0, root, jnp.nextafter(root, 0.0), 2 * root, root * (1 - 1e-7)]),
        jax.random.uniform(jax.random.key(3), (10_000,)) * root,
    ])
    assert np.all(values[np.asarray(descend(tree, u))] > 0)
    # Small cases: [1, 0] with u == total goes left; [0, 1] with u == 0 goes right.
    tiny = tree_set(sum_tree.init(2), jnp.array([0, 1]), jnp.array([1.0, 0.0]))
    assert int(descend(tiny, jnp.array([1.0]))[0]) == 0
    tiny = tree_set(sum_tree.init(2), jnp.array([0, 1]), jnp.array([0.0, 1.0]))
    assert int(descend(tiny, jnp.array([0.0]))[0]) == 1
    # 1e-8 next to 1e8 is lost in the sum (1e8 + 1e-8 == 1e8 in float32) yet reachable safely.
    tiny = tree_set(sum_tree.init(2), jnp.array([0, 1]), jnp.array([1e8, 1e-8]))
    assert float(sum_tree.total(tiny)) == np.float32(1e8)
    assert np.all(np.asarray(tree_sample(tiny, jax.random.key(4), 1000)) <= 1)


def ref_tree(leaves):
    """The heap-ordered sum tree of ``leaves`` in numpy: float32 [2L], node 0 unused."""
    size = 1 << (len(leaves) - 1).bit_length()
    level = np.zeros(size, np.float32)
    level[: len(leaves)] = leaves
    levels = [level]
    while level.size > 1:
        level = level[0::2] + level[1::2]
        levels.append(level)
    return np.concatenate([np.zeros(1, np.float32)] + levels[::-1])


def ref_descend(leaves, u):
    """Leaf whose interval [prefix_i, prefix_i + leaf_i) holds ``u``; past the total, the
    last positive leaf (float64 prefix sums; exact for the integer leaves used below)."""
    inclusive = np.cumsum(np.asarray(leaves, np.float64))
    positive = np.nonzero(np.asarray(leaves) > 0)[0]
    return np.where(u >= inclusive[-1], positive[-1],
                    np.searchsorted(inclusive, u, side="right"))


# Sizes that are not powers of two pad the leaf level (13 -> 16, 1025 -> 2048).
@pytest.mark.parametrize("num_leaves", [1, 2, 3, 5, 8, 13, 100, 1025])
def test_sum_tree_matches_numpy_reference_over_random_updates(num_leaves):
    # Integer leaves 0..8 (totals far below 2^24): every float32 sum is exact, so the device
    # tree must equal the reference bit for bit whatever the summation order, and each
    # target's leaf is unambiguous.
    rng = np.random.default_rng(num_leaves)
    set_fn = jax.jit(sum_tree.set)
    targets = 3 * num_leaves + 4
    descend_fn = jax.jit(_descend)
    leaves = np.zeros(num_leaves, np.float32)
    tree = sum_tree.init(num_leaves)
    for case in range(25):
        # 32 writes with duplicates (same value, so any winner gives the same tree) and
        # zeros (positions that stop being sampleable).
        idx = rng.integers(0, num_leaves, 32)
        values = rng.integers(0, 9, num_leaves).astype(np.float32) * (rng.random(num_leaves) < 0.8)
        tree = set_fn(tree, jnp.asarray(idx), jnp.asarray(values[idx]))
        leaves[idx] = values[idx]
        np.testing.assert_array_equal(tree, ref_tree(leaves), err_msg=f"case {case}")
        np.testing.assert_array_equal(sum_tree.get(tree, jnp.arange(num_leaves)), leaves)
        assert float(sum_tree.total(tree)) == leaves.sum()
        if leaves.sum() == 0:
            continue
        # Targets: each positive leaf's interval start (inclusive), middle and last float
        # below its end (exclusive), then 0, the total and beyond (rounding guards).
        start = np.cumsum(leaves) - leaves
        live = leaves > 0
        u = np.concatenate([start[live], start[live] + leaves[live] / 2,
                            np.nextafter(start[live] + leaves[live], np.float32(0)),
                            [0.0, leaves.sum(), 2 * leaves.sum()]]).astype(np.float32)
        u = np.resize(u, targets)  # one compiled shape per size
        got = np.asarray(descend_fn(tree, jnp.asarray(u)))
        np.testing.assert_array_equal(got, ref_descend(leaves, u), err_msg=f"case {case}")
        assert np.all(leaves[got] > 0)
    np.testing.assert_array_equal(sum_tree.build(leaves), tree)


@pytest.mark.parametrize("num_leaves,batch_size", [(37, 64), (300, 256), (5, 1)])
def test_sum_tree_sampling_frequencies_match_random_priorities(num_leaves, batch_size):
    # Many stratified batches: leaf i is drawn with frequency leaf_i / total (Schaul et al.
    # 2016, App. B.2.1); leaves of 0 never. 5 binomial sigmas (an upper bound for
    # stratified draws).
    rng = np.random.default_rng(num_leaves)
    values = (rng.gamma(0.5, size=num_leaves) * (rng.random(num_leaves) < 0.7)).astype(np.float32)
    values[rng.integers(num_leaves)] = 1.0  # at least one positive leaf
    tree = sum_tree.build(values)
    calls = 100_000 // batch_size + 1
    keys = jax.random.split(jax.random.key(num_leaves), calls)
    draws = jax.jit(jax.vmap(sum_tree.sample, in_axes=(None, 0, None)), static_argnums=2)(
        tree, keys, batch_size)
    counts = np.bincount(np.asarray(draws).ravel(), minlength=num_leaves)
    assert counts.size == num_leaves  # padding leaves never drawn
    n = calls * batch_size
    p = values.astype(np.float64) / values.sum(dtype=np.float64)
    assert np.all(np.abs(counts - n * p) <= 5 * np.sqrt(n * p * (1 - p)) + 1)
    assert np.all(counts[values == 0] == 0)


# ----------------------------------------------------------------------------------
# Worked example: frame stacks and n-step targets on one stream.


def test_worked_example_frame_stack_and_n_step():
    # k=4, n=3, gamma=0.5. Frames are ids 10*episode + step.
    #  t : obs  sss  reward flags      valid
    #  0 :  0    0     1                T     episode A
    #  1 :  1    1     2    terminated  T
    #  2 :  2    2     0                F     final obs of A
    #  3 : 10    0     4                T     episode B
    #  4 : 11    1     8    truncated   T
    #  5 : 12    2     0                F     final obs of B
    #  6 : 20    0    16                T     episode C ...
    #  7 : 21    1    32                T
    #  8 : 22    2    64                T
    #  9 : 23    3   128                T
    # 10 : 24    4   256                T
    replay = DeviceReplay(1, 16, frame_stack=4, n_step=3, gamma=0.5, prioritized=False)
    rows = [(0, 0, 1, 0, 0, 1), (1, 1, 2, 1, 0, 1), (2, 2, 0, 0, 0, 0), (10, 0, 4, 0, 0, 1),
            (11, 1, 8, 0, 1, 1), (12, 2, 0, 0, 0, 0), (20, 0, 16, 0, 0, 1), (21, 1, 32, 0, 0, 1),
            (22, 2, 64, 0, 0, 1), (23, 3, 128, 0, 0, 1), (24, 4, 256, 0, 0, 1)]
    state = replay.init(np.int32(0), np.int32(0))
    add = jax.jit(replay.add)
    for obs, sss, rew, term, trunc, valid in rows:
        state = add(state, jnp.array([obs]), jnp.array([obs]), jnp.array([rew], jnp.float32),
                           jnp.array([term], bool), jnp.array([trunc], bool), jnp.array([valid], bool),
                           jnp.array([sss]))
    # count = 11: sampleable p are valid with p <= 11-1-3 = 7 and p >= 11-16+3 < 0.
    np.testing.assert_array_equal(np.nonzero(leaves(replay, state))[0], [0, 1, 3, 4, 6, 7])
    batch = jax.jit(replay._gather)(state, jnp.array([0, 1, 3, 4, 6, 7]))
    np.testing.assert_array_equal(batch.obs, [[0, 0, 0, 0], [0, 0, 0, 1], [10, 10, 10, 10],
                                              [10, 10, 10, 11], [20, 20, 20, 20], [20, 20, 20, 21]])
    # p=0: terminal at t1 -> m=2, r = 1 + .5*2 = 2, discount 0, next = stack(t2) = [0,0,1,2].
    # p=3: truncated at t4 -> m=2, r = 4 + .5*8 = 8, discount .25, next = stack(t5).
    # p=6: no done -> m=3, r = 16 + .5*32 + .25*64 = 48, discount .125, next = stack(t9).
    np.testing.assert_array_equal(batch.next_obs, [[0, 0, 1, 2], [0, 0, 1, 2], [10, 10, 11, 12],
                                                   [10, 10, 11, 12], [20, 21, 22, 23], [21, 22, 23, 24]])
    np.testing.assert_allclose(batch.reward, [2, 2, 8, 8, 48, 96])
    np.testing.assert_allclose(batch.discount, [0, 0, 0.25, 0.5, 0.125, 0.125])
    np.testing.assert_array_equal(batch.n_steps, [2, 1, 2, 1, 3, 3])
    np.testing.assert_array_equal(batch.action, [0, 1, 10, 11, 20, 21])


def test_worked_example_action_history_through_wraparound():
    # h=3 > k-1=0, n=2, gamma=0.5, C=7 (> n + h + 1 = 6). Obs id = t.
    #  t : action sss flags      valid
    #  0 :  10    0              T     episode A
    #  1 :  11    1              T
    #  2 :  12    2   terminated T
    #  3 :  13    3              F     final obs of A (action ignored by the env)
    #  4 :  20    0              T     episode B
    #  5 :  21    1              T
    #  6 :  22    2              T
    #  7 :  23    3   truncated  T
    #  8 :  24    4              F     final obs of B
    #  9 :  30    0              T     episode C; ring 9 % 7 = 2 overwrites t2
    # 10..14: actions 31..35, sss 1..5
    rows = [(10, 0, 0, 0, 1), (11, 1, 0, 0, 1), (12, 2, 1, 0, 1), (13, 3, 0, 0, 0),
            (20, 0, 0, 0, 1), (21, 1, 0, 0, 1), (22, 2, 0, 0, 1), (23, 3, 0, 1, 1),
            (24, 4, 0, 0, 0)] + [(30 + s, s, 0, 0, 1) for s in range(6)]
    slots = [dict(obs=np.int32(t), action=np.int32(a), reward=np.float32(1.0),
                  terminated=bool(term), truncated=bool(trunc), valid=bool(valid), sss=sss)
             for t, (a, sss, term, trunc, valid) in enumerate(rows)]
    replay = DeviceReplay(1, 7, frame_stack=1, n_step=2, gamma=0.5, prioritized=False,
                          action_history=3)
    no_history = dataclasses.replace(replay, action_history=0)
    # (prev_actions, next_prev_actions) per sampleable start p, by hand.
    by_hand = {
        5: {1: ([-1, -1, 10], [10, 11, 12]),  # terminal at t2: m=2, bootstrap at final obs t3
            2: ([-1, 10, 11], [10, 11, 12])},
        10: {6: ([-1, 20, 21], [21, 22, 23]),  # truncated at t7: bootstrap t8 sees 21, 22, 23
             7: ([20, 21, 22], [21, 22, 23])},
        13: {9: ([-1, -1, -1], [-1, 30, 31]),  # after the autoreset slot: nothing of episode B
             10: ([-1, -1, 30], [30, 31, 32])},
        15: {11: ([-1, 30, 31], [31, 32, 33]),
             12: ([30, 31, 32], [32, 33, 34])},
    }
    # Positions with their future but with action history reaching an overwritten slot: t4 and
    # t5 read t2 (overwritten by t9); t6 and t7 read t4 / t5 (overwritten by t11 / t12).
    lost = {10: {4, 5}, 13: {6, 7}}

    state = replay.init(np.int32(0), np.int32(0))
    state0 = no_history.init(np.int32(0), np.int32(0))
    add, add0 = jax.jit(replay.add), jax.jit(no_history.add)
    gather_all = jax.jit(lambda s: replay._gather(s, jnp.arange(7)))  # one trace for all counts
    for t, slot in enumerate(slots):
        kwargs = {key: jnp.array([slot[key]]) for key in
                  ("obs", "action", "reward", "terminated", "truncated", "valid")}
        kwargs["steps_since_start"] = jnp.array([slot["sss"]])
        state, state0 = add(state, **kwargs), add0(state0, **kwargs)
        count = t + 1
        starts = ref_sampleable(slots, count, 7, 2, 1, 3)
        assert set(np.nonzero(leaves(replay, state))[0].tolist()) == {p % 7 for p in starts}
        if not starts:
            continue
        batch = batch_item(gather_all(state), np.array([p % 7 for p in starts]))
        for i, p in enumerate(starts):
            ref = ref_transition(slots, p, 2, 0.5, 1, 3)
            assert int(batch.n_steps[i]) == ref["n_steps"]
            np.testing.assert_array_equal(batch.prev_actions[i], ref["prev_actions"])
            np.testing.assert_array_equal(batch.next_prev_actions[i], ref["next_prev_actions"])
        if count in by_hand:
            assert starts == sorted(by_hand[count])
            prev, next_prev = zip(*by_hand[count].values())
            np.testing.assert_array_equal(batch.prev_actions, prev)
            np.testing.assert_array_equal(batch.next_prev_actions, next_prev)
        if count in lost:
            without = set(np.nonzero(leaves(no_history, state0))[0].tolist())
            assert without - {p % 7 for p in starts} == {p % 7 for p in lost[count]}

    batch = jax.jit(replay.sample, static_argnums=2)(state, jax.random.key(0), 64, 0.0)
    assert batch.prev_actions.dtype == batch.next_prev_actions.dtype == jnp.int32
    assert set(np.asarray(batch.indices).tolist()) == {11 % 7, 12 % 7}
    for i, ring in enumerate(np.asarray(batch.indices)):
        want = by_hand[15][11 if ring == 11 % 7 else 12]
        np.testing.assert_array_equal(batch.prev_actions[i], want[0])
        np.testing.assert_array_equal(batch.next_prev_actions[i], want[1])

    # Without action history the fields are empty int32 [B, 0], so the pytree is the same.
    batch0 = jax.jit(no_history._gather)(state0, jnp.array([4, 5, 6]))
    for x in (batch0.prev_actions, batch0.next_prev_actions):
        assert x.shape == (3, 0) and x.dtype == jnp.int32
    assert jax.tree.structure(batch0) == jax.tree.structure(batch)


@pytest.mark.parametrize("action", [np.float32(0), np.zeros(2, np.int32), np.bool_(False)])
def test_action_history_needs_scalar_integer_actions(action):
    replay = DeviceReplay(1, 8, 1, 2, 0.9, False, action_history=2)
    with pytest.raises(ValueError, match="action_history"):
        replay.init(np.int32(0), action)
    DeviceReplay(1, 8, 1, 2, 0.9, False).init(np.int32(0), action)  # fine without history


# ----------------------------------------------------------------------------------
# Random episodes against the reference, through wrap-around.


@pytest.mark.parametrize(
    "num_streams,capacity,k,n,prioritized,action_shape,h",
    [
        (3, 12, 4, 3, True, (), 0),
        (2, 9, 1, 1, False, (2,), 0),
        (2, 10, 2, 5, True, (), 0),
        (2, 10, 3, 2, True, (), 1),  # h < k - 1: the frame stack bounds the history
        (2, 11, 1, 2, False, (), 4),  # h > k - 1: the action history bounds it
    ],
)
def test_matches_reference_through_wraparound(num_streams, capacity, k, n, prioritized,
                                              action_shape, h):
    gamma = 0.9
    replay = DeviceReplay(num_streams, capacity, k, n, gamma, prioritized, priority_exponent=0.5,
                          action_history=h)
    num_steps = 3 * capacity + 7
    inputs, slots = simulate(0, num_streams, num_steps, max_episode_len=5, action_shape=action_shape)
    state = replay.init(obs_example(), np.zeros(action_shape, np.float32 if action_shape else np.int32))
    add = jax.jit(replay.add, donate_argnums=0)
    gather_all = jax.jit(lambda s: replay._gather(s, jnp.arange(replay.num_leaves)))
    sample = jax.jit(functools.partial(replay.sample, batch_size=256, importance_exponent=0.5))
    for t, kwargs in enumerate(inputs):
        state = add(state, **kwargs)
        count = t + 1
        expected = set()
        for e in range(num_streams):
            expected |= {e * capacity + p % capacity
                         for p in ref_sampleable(slots[e], count, capacity, n, k, h)}
        positive = set(np.nonzero(leaves(replay, state))[0].tolist())
        assert positive == expected, f"count={count}"
        assert int(replay.num_sampleable(state)) == len(expected)
        assert int(replay.size(state)) == num_streams * min(count, capacity)
        np.testing.assert_array_equal(state.count, [count])  # int32 [G], one group
        assert bool(replay.can_sample(state, 32)) == bool(expected)
        if not expected or count % 3:
            continue
        everything = gather_all(state)
        for e in range(num_streams):
            for p in ref_sampleable(slots[e], count, capacity, n, k, h):
                item = batch_item(everything, e * capacity + p % capacity)
                assert_matches_reference(item, ref_transition(slots[e], p, n, gamma, k, h))
        batch = sample(state, jax.random.key(count))
        sampled = np.asarray(batch.indices)
        assert set(sampled.tolist()) <= expected  # never invalid, unfinished or overwritten
        assert batch.prev_actions.shape == batch.next_prev_actions.shape == (256, h)
        for i in range(0, 256, 37):
            e, ring = divmod(int(sampled[i]), capacity)
            p = next(q for q in ref_sampleable(slots[e], count, capacity, n, k, h)
                     if q % capacity == ring)
            assert_matches_reference(batch_item(batch, i),
                                     ref_transition(slots[e], p, n, gamma, k, h))
    assert count > 2 * capacity  # wrapped around at least twice


# ----------------------------------------------------------------------------------
# Prioritized replay.


def filled(replay, seed=0, num_steps=None):
    num_steps = num_steps or 2 * replay.capacity_per_stream + 3
    inputs, slots = simulate(seed, replay.num_streams, num_steps, max_episode_len=6)
    state = replay.init(obs_example(), np.int32(0))
    add = jax.jit(replay.add, donate_argnums=0)
    for kwargs in inputs:
        state = add(state, **kwargs)
    return state, inputs, slots


def test_new_items_enter_at_max_priority_and_exponent_applied():
    alpha, eps = 0.5, 1e-6
    replay = DeviceReplay(2, 16, 2, 2, 0.99, True, priority_exponent=alpha, priority_eps=eps)
    state, _, _ = filled(replay)
    lv = leaves(replay, state)
    np.testing.assert_array_equal(np.unique(lv[lv > 0]), [1.0])  # initial max priority 1
    live = np.nonzero(lv)[0]
    state = replay.set_priorities(state, jnp.array(live[:2]), jnp.array([2.5, 0.0]))
    lv = leaves(replay, state)
    np.testing.assert_allclose(lv[live[:2]], [(2.5 + eps) ** alpha, eps**alpha], rtol=1e-6)
    np.testing.assert_allclose(state.max_priority, 2.5 + eps, rtol=1e-7)
    # The next valid item enters at max_priority ** alpha (a float, not truncated to 2).
    inputs, _ = simulate(1, 2, 40, max_episode_len=50)
    before = lv
    add = jax.jit(replay.add)
    for kwargs in inputs[:4]:
        state = add(state, **kwargs)
    lv = leaves(replay, state)
    new = [i for i in np.nonzero(lv)[0] if lv[i] != before[i]]
    assert new
    np.testing.assert_allclose(lv[new], (2.5 + eps) ** alpha, rtol=1e-6)


def test_set_priorities_ignores_unsampleable_leaves():
    replay = DeviceReplay(2, 16, 3, 2, 0.99, True)
    state, _, _ = filled(replay)
    lv = leaves(replay, state)
    dead = np.nonzero(lv == 0)[0][:3]
    state2 = replay.set_priorities(state, jnp.array(dead), jnp.array([5.0, 5.0, 5.0]))
    np.testing.assert_array_equal(leaves(replay, state2), lv)
    np.testing.assert_allclose(float(sum_tree.total(state2.sum_tree)), lv.sum(), rtol=1e-6)


def test_set_priorities_changes_sampling_frequency_and_weights():
    alpha, beta = 0.6, 0.4
    replay = DeviceReplay(2, 24, 2, 3, 0.99, True, priority_exponent=alpha)
    state, _, _ = filled(replay)
    live = np.nonzero(leaves(replay, state))[0]
    priorities = np.linspace(0.0, 4.0, live.size).astype(np.float32)
    state = replay.set_priorities(state, jnp.array(live), jnp.array(priorities))
    lv = leaves(replay, state)
    np.testing.assert_allclose(lv[live], (priorities + 1e-6) ** alpha, rtol=1e-5)

    draws = 200_000
    batch = jax.jit(replay.sample, static_argnames="batch_size")(state, jax.random.key(5), batch_size=draws,
                                                                  importance_exponent=beta)
    idx = np.asarray(batch.indices)
    counts = np.bincount(idx, minlength=replay.num_leaves)
    p = lv / lv.sum()
    sigma = np.sqrt(draws * p * (1 - p))
    assert np.all(np.abs(counts - draws * p) <= 5 * sigma + 1)
    # The eps floor keeps priority 0 sampleable, with a tiny probability.
    assert lv[live[0]] > 0

    # Importance weights: w = (N P)^-beta / max w (Schaul et al. 2016, Sec. 3.4).
    assert state.count.shape == (1,)  # one group
    n_stored = 2 * min(int(state.count[0]), 24)
    w = (n_stored * lv[idx] / lv.sum()) ** (-beta)
    np.testing.assert_allclose(batch.weights, w / w.max(), rtol=1e-4)
    assert batch.weights.dtype == jnp.float32


def test_uniform_mode_weights_one_and_uniform_frequencies():
    replay = DeviceReplay(2, 20, 4, 3, 0.99, False)
    state, _, _ = filled(replay)
    lv = leaves(replay, state)
    assert set(np.unique(lv).tolist()) <= {0.0, 1.0}
    live = np.nonzero(lv)[0]
    same = replay.set_priorities(state, jnp.array(live), jnp.full(live.size, 9.0))
    chex.assert_trees_all_equal(same, state)
    draws = 100_000
    batch = jax.jit(replay.sample, static_argnums=2)(state, jax.random.key(6), draws, 0.7)
    np.testing.assert_array_equal(batch.weights, np.ones(draws, np.float32))
    counts = np.bincount(np.asarray(batch.indices), minlength=replay.num_leaves)
    p = 1.0 / live.size
    assert np.all(np.abs(counts[live] - draws * p) <= 5 * np.sqrt(draws * p * (1 - p)) + 1)
    assert counts.sum() == counts[live].sum()


# ----------------------------------------------------------------------------------
# Groups of streams written independently (one per actor), and dropped partial episodes.


def group_rows(kwargs, group, per_group):
    """The rows of ``group``'s streams from a whole-E vector step of :func:`simulate`."""
    return jax.tree.map(lambda x: x[group * per_group: (group + 1) * per_group], kwargs)


def ref_leaves(replay, slots, counts, value=1.0):
    """Leaves the sum tree should hold: ``value`` at the sampleable positions of each stream,
    judged with the count of that stream's own group."""
    want = np.zeros(replay.num_leaves, np.float32)
    capacity = replay.capacity_per_stream
    for e, stream_slots in enumerate(slots):
        count = counts[e // replay.streams_per_group]
        for p in ref_sampleable(stream_slots, count, capacity, replay.n_step, replay.frame_stack,
                                replay.action_history):
            want[e * capacity + p % capacity] = value
    return want


def test_groups_write_their_own_streams_at_their_own_pace():
    capacity, k, n, gamma = 10, 3, 2, 0.9
    replay = DeviceReplay(4, capacity, k, n, gamma, True, priority_exponent=0.5, num_groups=2)
    assert replay.streams_per_group == 2
    rng = np.random.default_rng(7)
    schedule = [0, 0, 1, 0, 1, 1, 1] + rng.choice(2, size=45, p=[0.3, 0.7]).tolist()
    inputs, slots = simulate(1, 4, max(schedule.count(0), schedule.count(1)), max_episode_len=5)
    state = replay.init(obs_example(), np.int32(0))
    add = jax.jit(replay.add, donate_argnums=0)  # group traced: one compilation for both
    gather_all = jax.jit(lambda s: replay._gather(s, jnp.arange(replay.num_leaves)))
    sample = jax.jit(functools.partial(replay.sample, batch_size=128, importance_exponent=0.5))
    fields = ("action", "reward", "terminated", "truncated", "valid")
    counts = [0, 0]
    for i, g in enumerate(schedule):
        state = add(state, **group_rows(inputs[counts[g]], g, 2), group=g)
        counts[g] += 1
        assert state.count.dtype == jnp.int32
        np.testing.assert_array_equal(state.count, counts)
        assert int(replay.size(state)) == sum(2 * min(c, capacity) for c in counts)
        # Each stream holds exactly its own slots, in order; slots not yet written stay empty.
        host = jax.device_get(state)
        for e in range(4):
            count = counts[e // 2]
            written = {p % capacity: slots[e][p] for p in range(max(0, count - capacity), count)}
            for ring in range(capacity):
                if ring not in written:
                    assert not host.valid[e, ring] and not host.obs["id"][e, ring].any()
                    continue
                slot = written[ring]
                np.testing.assert_array_equal(host.obs["id"][e, ring], slot["obs"]["id"])
                for key in fields:
                    assert host.__getattribute__(key)[e, ring] == slot[key], (i, e, ring, key)
                assert host.steps_since_start[e, ring] == slot["sss"]
        # Leaves: 1 (= max_priority ** alpha) exactly where the reference allows a start.
        want = ref_leaves(replay, slots, counts)
        np.testing.assert_array_equal(leaves(replay, state), want, err_msg=f"add {i}: {counts}")
        np.testing.assert_allclose(float(sum_tree.total(state.sum_tree)), want.sum(), rtol=1e-6)
        if i % 6 != 5 or not want.any():
            continue
        batch = sample(state, jax.random.key(i))
        sampled = np.asarray(batch.indices)
        assert set(sampled.tolist()) <= set(np.nonzero(want)[0].tolist())
        everything = gather_all(state)
        for index in np.nonzero(want)[0]:
            e, ring = divmod(int(index), capacity)
            count = counts[e // 2]
            p = next(q for q in range(max(0, count - capacity), count) if q % capacity == ring)
            assert_matches_reference(batch_item(everything, index),
                                     ref_transition(slots[e], p, n, gamma, k))
    assert counts == [18, 34]  # both wrapped (group 1 three times): different paces
    assert add._cache_size() == 1  # both groups through one compilation

    rows = group_rows(inputs[0], 0, 2)
    with pytest.raises(ValueError, match="group"):
        replay.add(state, **rows, group=2)
    with pytest.raises(AssertionError):  # a whole-E step into a group of E_g = 2 streams
        replay.add(state, **inputs[0], group=0)


def test_groups_in_strict_alternation_equal_one_group():
    one = DeviceReplay(4, 9, 2, 2, 0.9, True, priority_exponent=0.6)
    two = dataclasses.replace(one, num_groups=2)
    inputs, _ = simulate(2, 4, 23, max_episode_len=4)
    state1 = one.init(obs_example(), np.int32(0))
    state2 = two.init(obs_example(), np.int32(0))
    add1, add2 = jax.jit(one.add), jax.jit(two.add)
    learn1 = jax.jit(lambda s, key: one.set_priorities(s, one.sample(s, key, 16, 0.4).indices,
                                                       jnp.arange(16.0)))
    learn2 = jax.jit(lambda s, key: two.set_priorities(s, two.sample(s, key, 16, 0.4).indices,
                                                       jnp.arange(16.0)))
    for t, kwargs in enumerate(inputs):
        state1 = add1(state1, **kwargs)
        for g in (0, 1):
            state2 = add2(state2, **group_rows(kwargs, g, 2), group=g)
        np.testing.assert_array_equal(state2.count, [t + 1, t + 1])
        chex.assert_trees_all_equal(state2.replace(count=state1.count), state1)
        if t >= 4 and t % 4 == 0:
            state1, state2 = learn1(state1, jax.random.key(t)), learn2(state2, jax.random.key(t))
    assert int(two.size(state2)) == int(one.size(state1)) == 4 * 9

    # add_sequence per group (all of group 1, then all of group 0) lands on the same state.
    sequence = jax.tree.map(lambda *xs: np.stack(xs), *inputs)  # [L, E]
    add_sequence = jax.jit(two.add_sequence)
    state = two.init(obs_example(), np.int32(0))
    for g in (1, 0):
        state = add_sequence(state, jax.tree.map(lambda x: x[:, 2 * g: 2 * g + 2], sequence), g)
    plain1 = jax.jit(one.add_sequence)(one.init(obs_example(), np.int32(0)), sequence)
    np.testing.assert_array_equal(state.count, [23, 23])
    chex.assert_trees_all_equal(state.replace(count=plain1.count), plain1)
    assert add_sequence._cache_size() == 1


def hand_slot(stream, episode, since, valid=True, terminated=False, truncated=False):
    """One slot in :func:`simulate`'s format, obs id (stream, episode, since)."""
    return dict(obs={"pix": np.full((2, 2), since, np.uint8),
                     "id": np.array([stream, episode, since], np.int32)},
                action=np.int32(since % 5), reward=np.float32(since + 10 * episode),
                terminated=terminated, truncated=truncated, valid=valid, sss=since)


def episode(stream, ep, length, end="running"):
    """``length`` slots of one episode (ending ``end``: running, terminated or truncated),
    then its final-observation slot unless running."""
    out = [hand_slot(stream, ep, s, terminated=end == "terminated" and s == length - 1,
                     truncated=end == "truncated" and s == length - 1) for s in range(length)]
    if end != "running":
        out.append(hand_slot(stream, ep, length, valid=False))
    return out


def vector_step(stream_slots, t):
    """add's kwargs for step t of the given streams' slot lists."""
    step = [stream[t] for stream in stream_slots]
    return dict(obs=jax.tree.map(lambda *xs: np.stack(xs), *[s["obs"] for s in step]),
                action=np.stack([s["action"] for s in step]),
                reward=np.array([s["reward"] for s in step], np.float32),
                terminated=np.array([s["terminated"] for s in step]),
                truncated=np.array([s["truncated"] for s in step]),
                valid=np.array([s["valid"] for s in step]),
                steps_since_start=np.array([s["sss"] for s in step], np.int32))


def test_drop_partial_episodes_forgets_the_running_episode_only():
    capacity, k, n, gamma = 12, 2, 3, 0.9  # H = 1
    replay = DeviceReplay(4, capacity, k, n, gamma, True, priority_exponent=0.5, num_groups=2)
    # Group 0 (9 adds), the actor that dies:
    #   stream 0: t0..2 episode 0 (truncated at t2), t3 its final obs, t4..8 episode 1 running
    #             (sss 0..4) -> positions 4..8 are dropped;
    #   stream 1: t0..7 episode 0 (terminated at t7), t8 its final obs -> nothing dropped.
    # Group 1 (15 adds, more than C), dropped second:
    #   stream 2: t0..14 one running episode, sss 0..14 > C - 1 -> the whole ring;
    #   stream 3: t0..5 episode 0 (terminated), t6 final obs, t7..14 episode 1 running (sss
    #             0..7) -> positions 7..14 (rings 7..11, 0..2).
    slots = [episode(0, 0, 3, "truncated") + episode(0, 1, 5),
             episode(1, 0, 8, "terminated"),
             episode(2, 0, 15),
             episode(3, 0, 6, "terminated") + episode(3, 1, 8)]
    # The restarted actor of group 0: fresh episodes from t9 on, in the same streams.
    slots[0] += episode(0, 2, 4, "terminated") + episode(0, 3, 9)
    slots[1] += episode(1, 1, 14)

    state = replay.init(obs_example(), np.int32(0))
    add = jax.jit(replay.add, donate_argnums=0)
    drop = jax.jit(replay.drop_partial_episodes)
    fresh = replay.init(obs_example(), np.int32(0))
    chex.assert_trees_all_equal(drop(fresh, 1), fresh)  # count 0: nothing to drop
    for g, t in [(0, t) for t in range(9)] + [(1, t) for t in range(15)]:
        state = add(state, **vector_step(slots[2 * g: 2 * g + 2], t), group=g)
    counts = [9, 15]
    np.testing.assert_array_equal(state.count, counts)
    before = leaves(replay, state)
    np.testing.assert_array_equal(before, ref_leaves(replay, slots, counts))
    # Worked: stream 0 {0, 1, 2, 4, 5}, stream 1 {0..5}, stream 2 {4..11}, stream 3 {4, 5, 7..11}.
    assert set(np.nonzero(before)[0].tolist()) == (
        {0, 1, 2, 4, 5} | {12 + p for p in range(6)} | {24 + p for p in range(4, 12)}
        | {36 + p for p in (4, 5, 7, 8, 9, 10, 11)})

    valid_before = np.asarray(state.valid)
    state = drop(state, 0)
    valid = np.asarray(state.valid)
    np.testing.assert_array_equal(valid[0], [1, 1, 1] + [0] * 9)  # 3: final obs, 4..8 dropped
    np.testing.assert_array_equal(valid[1], [1] * 8 + [0] * 4)  # unchanged
    np.testing.assert_array_equal(valid[2:], valid_before[2:])  # group 1 untouched
    after = leaves(replay, state)
    assert set(np.nonzero(after)[0].tolist()) == set(np.nonzero(before)[0].tolist()) - {4, 5}
    np.testing.assert_array_equal(after[12:], before[12:])  # stream 1 and group 1 untouched
    chex.assert_trees_all_equal(drop(state, 0), state)  # the episode is gone: a no-op now
    np.testing.assert_array_equal(state.count, counts)

    # One stream of the group (an env whose episode a bad value ended): stream 3 only.
    one = jax.jit(replay.drop_partial_episodes)(state, 1, np.array([False, True]))
    np.testing.assert_array_equal(np.asarray(one.valid)[:3], np.asarray(state.valid)[:3])
    np.testing.assert_array_equal(np.asarray(one.valid)[3], [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    assert set(np.nonzero(leaves(replay, one))[0].tolist()) == set(
        np.nonzero(leaves(replay, state))[0].tolist()) - {36 + p for p in (7, 8, 9, 10, 11)}

    state = drop(state, 1)
    assert drop._cache_size() == 1  # both groups through one compilation
    np.testing.assert_array_equal(np.asarray(state.valid)[:2], valid[:2])  # group 0 untouched
    valid = np.asarray(state.valid)
    np.testing.assert_array_equal(valid[2], [0] * 12)  # longer than the ring: all of it
    np.testing.assert_array_equal(valid[3], [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    assert set(np.nonzero(leaves(replay, state))[0].tolist()) == (
        {0, 1, 2} | {12 + p for p in range(6)} | {36 + 4, 36 + 5})

    # The reference from here on: the dropped positions are no longer valid.
    dropped = {0: set(range(4, 9)), 2: set(range(15)), 3: set(range(7, 15))}
    ref = [[dict(s, valid=s["valid"] and p not in dropped.get(e, ())) for p, s in enumerate(stream)]
           for e, stream in enumerate(slots)]
    np.testing.assert_array_equal(leaves(replay, state), ref_leaves(replay, ref, counts))
    sample = jax.jit(functools.partial(replay.sample, batch_size=256, importance_exponent=0.5))
    for t in range(9, 23):  # the restarted actor of group 0 writes on, through wrap-around
        state = add(state, **vector_step(slots[0:2], t), group=0)
        counts[0] = t + 1
        lv = leaves(replay, state)
        np.testing.assert_array_equal(lv, ref_leaves(replay, ref, counts), err_msg=f"t={t}")
        for p in dropped[0]:
            if p >= counts[0] - capacity:  # still stored: never readied by add
                assert lv[p % capacity] == 0, (t, p)
        if t == 12:  # position 9, the new episode's first, has its n future slots
            assert lv[9] > 0 and lv[12 + 9] > 0
        if counts[0] > 4 + capacity:  # ring 4 .. holds new positions from here on
            continue
        for key in range(4):
            batch = sample(state, jax.random.key(100 * t + key))
            indices = np.asarray(batch.indices)
            assert not set(indices.tolist()) & {p % capacity for p in dropped[0]}
            assert set(indices.tolist()) <= set(np.nonzero(lv)[0].tolist())
            for ring in set(indices[indices < capacity].tolist()):  # stream 0
                i = int(np.nonzero(indices == ring)[0][0])
                p = next(q for q in ref_sampleable(ref[0], counts[0], capacity, n, k)
                         if q % capacity == ring)
                assert not p <= 8 < p + int(batch.n_steps[i])  # never from 8 into 9
                assert_matches_reference(batch_item(batch, i),
                                         ref_transition(ref[0], p, n, gamma, k))
    # Worked at count 23 (positions 12..19 have their future and history): stream 0 all but
    # 13 (episode 2's final obs), stream 1 all; group 1 as after the drop.
    assert set(np.nonzero(leaves(replay, state))[0].tolist()) == (
        {p % 12 for p in (12, 14, 15, 16, 17, 18, 19)} | {12 + p % 12 for p in range(12, 20)}
        | {36 + 4, 36 + 5})


# ----------------------------------------------------------------------------------
# Jit, donation, retracing, validation.


def test_jitted_donated_add_matches_eager_and_no_retrace():
    chex.clear_trace_counter()
    replay = DeviceReplay(2, 10, 4, 3, 0.9, True)
    inputs, _ = simulate(3, 2, 27, max_episode_len=4)

    eager = replay.init(obs_example(), np.int32(0))
    for kwargs in inputs:
        eager = replay.add(eager, **kwargs)

    @chex.assert_max_traces(n=1)
    def add_fn(state, kwargs):
        return replay.add(state, **kwargs)

    @chex.assert_max_traces(n=1)
    def learn_fn(state, key, beta):
        batch = replay.sample(state, key, 8, beta)
        return replay.set_priorities(state, batch.indices, jnp.abs(batch.reward)), batch

    add = jax.jit(add_fn, donate_argnums=0)
    learn = jax.jit(learn_fn, donate_argnums=0)
    state = replay.init(obs_example(), np.int32(0))
    for kwargs in inputs:
        state = add(state, kwargs)
    chex.assert_trees_all_equal(state, eager)
    for i in range(5):
        state, _ = learn(state, jax.random.key(i), jnp.float32(0.4 + 0.1 * i))
        state = add(state, inputs[i])


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(capacity_per_stream=7), "capacity_per_stream"),  # needs > n + k = 7
        (dict(action_history=5, capacity_per_stream=9), "capacity_per_stream"),  # > n + h + 1
        (dict(action_history=-1), "action_history"),
        (dict(num_streams=0), "num_streams"),
        (dict(frame_stack=0), "frame_stack"),
        (dict(n_step=0), "n_step"),
        (dict(gamma=1.5), "gamma"),
        (dict(priority_exponent=-1.0), "priority_exponent"),
        (dict(priority_eps=0.0), "priority_eps"),
        (dict(num_groups=0), "num_groups"),
        (dict(num_groups=3), "num_groups"),  # does not divide num_streams=2
        (dict(num_groups=1.0), "num_groups"),
    ],
)
def test_constructor_validation(kwargs, field):
    base = dict(num_streams=2, capacity_per_stream=16, frame_stack=4, n_step=3, gamma=0.99,
                prioritized=True)
    with pytest.raises(ValueError, match=field):
        DeviceReplay(**{**base, **kwargs})


# ----------------------------------------------------------------------------------
# benchmarks/replay.py --against flashbax (the [bench] extra).


def test_benchmark_against_flashbax_prints_both_columns(monkeypatch, capsys):
    pytest.importorskip("flashbax")
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ whatever ran before
    from benchmarks import replay as replay_benchmark  # noqa: PLC0415

    monkeypatch.setattr("sys.argv", ["replay.py", "--against", "flashbax", "--capacities", "160",
                                     "--batch", "8", "--add-seconds", "0"])
    replay_benchmark.main()
    out = capsys.readouterr().out
    assert out.startswith("machine: nproc=")
    header = next(line for line in out.splitlines() if line.startswith("| capacity"))
    assert "ours ms/call" in header and "flashbax transitions/s" in header
    row = next(line for line in out.splitlines() if line.startswith("| 160 | 8 |"))
    ratio = float(row.strip("| ").split("|")[-1])
    assert ratio > 0


def test_benchmark_against_flashbax_without_it_names_the_extra(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ whatever ran before
    from benchmarks import replay as replay_benchmark  # noqa: PLC0415

    monkeypatch.setitem(sys.modules, "flashbax", None)  # import now fails
    monkeypatch.setattr("sys.argv", ["replay.py", "--against", "flashbax"])
    with pytest.raises(SystemExit, match=r'pip install -e "\.\[bench\]"'):
        replay_benchmark.main()
