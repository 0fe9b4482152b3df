"""Throughput and memory of the device replay at full capacity.

Builds a :class:`replay.DeviceReplay` with uint8 frames, fills it through ``add`` (a
jitted ``fori_loop`` of adds with synthetic episodes), then reports:

* add throughput: slots/s over jitted, donated ``add`` calls (one call = E slots);
* sample + set_priorities throughput: transitions/s over one jitted, donated call that
  samples a batch (stacked obs, n-step targets, IS weights) and writes new priorities;
* bytes per stored transition: ``sum(nbytes of the state) / (E * C)``;
* set_demo_weight: calls/s of the whole-tree rescale the training loop runs once per log
  interval while the demo sampling weight decays.

Usage: ``python benchmarks/replay.py --capacity 1000000``
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

# Run as a script, this file's folder is sys.path[0] and its own name would shadow the
# `replay` package; put the repository root first.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from replay import DeviceReplay  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capacity", type=int, default=1_000_000, help="total slots E * C")
    parser.add_argument("--num-streams", type=int, default=8, help="E, env streams")
    parser.add_argument("--frame", type=str, default="84x84", help="frame shape HxW (uint8)")
    parser.add_argument("--frame-stack", type=int, default=4)
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--n-step", type=int, default=3)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--uniform", action="store_true", help="uniform instead of PER")
    parser.add_argument("--add-seconds", type=float, default=5.0, help="time budget per measurement")
    return parser.parse_args()


def make_fill(replay: DeviceReplay, frame: tuple[int, ...]):
    """Jitted fill: ``num_adds`` adds of synthetic episodes (lengths 200 + 37 * stream)."""
    num_streams = replay.num_streams
    episode_len = 200 + 37 * jnp.arange(num_streams, dtype=jnp.int32)

    def one_step(t, carry):
        state, since, pending = carry
        obs = jnp.broadcast_to(((t + jnp.arange(num_streams)) % 256).astype(jnp.uint8)[:, None, None],
                               (num_streams, *frame))
        end = ~pending & (since + 1 == episode_len)
        terminal = end & ((t // 1000) % 2 == 0)
        state = replay.add(
            state,
            obs,
            (t + jnp.arange(num_streams)) % 6,
            jnp.ones((num_streams,), jnp.float32),
            terminal,
            end & ~terminal,
            ~pending,
            since,
        )
        since = jnp.where(pending, 0, since + 1)
        return state, since, end

    def fill(state, num_adds):
        zeros = jnp.zeros((num_streams,), jnp.int32)
        start = state.count
        state, _, _ = jax.lax.fori_loop(
            start, start + num_adds, one_step, (state, zeros, jnp.zeros((num_streams,), bool))
        )
        return state

    return jax.jit(fill, donate_argnums=0)


def timed(fn, state, budget_s: float, min_iters: int = 20):
    """Runs ``state = fn(state, i)`` until ``budget_s`` has passed; returns (state, calls/s)."""
    state = fn(state, 0)  # warm-up / compile
    jax.block_until_ready(state)
    iters, start = 0, time.perf_counter()
    while True:
        for _ in range(min_iters):
            state = fn(state, iters)
            iters += 1
        jax.block_until_ready(state)
        elapsed = time.perf_counter() - start
        if elapsed >= budget_s:
            return state, iters / elapsed


def main() -> None:
    args = parse_args()
    frame = tuple(int(x) for x in args.frame.lower().split("x"))
    num_streams = args.num_streams
    capacity_per_stream = args.capacity // num_streams
    replay = DeviceReplay(
        num_streams=num_streams,
        capacity_per_stream=capacity_per_stream,
        frame_stack=args.frame_stack,
        n_step=args.n_step,
        gamma=args.gamma,
        prioritized=not args.uniform,
    )
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; E={num_streams} C={capacity_per_stream} "
          f"(total {num_streams * capacity_per_stream:,} slots), frame {frame} uint8, "
          f"k={args.frame_stack}, n={args.n_step}, {'uniform' if args.uniform else 'PER'}")

    start = time.perf_counter()
    state = replay.init(np.zeros(frame, np.uint8), np.int32(0))
    fill = make_fill(replay, frame)
    state = fill(state, capacity_per_stream + args.n_step + 1)
    jax.block_until_ready(state)
    print(f"fill: {time.perf_counter() - start:.1f} s for {int(replay.size(state)):,} slots, "
          f"{int(replay.num_sampleable(state)):,} sampleable")

    nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
    per_transition = nbytes / replay.num_leaves
    frame_bytes = int(np.prod(frame))
    print(f"state: {nbytes / 2**30:.2f} GiB, {per_transition:,.1f} bytes per stored transition "
          f"(one {frame_bytes} B frame per slot; stacks are rebuilt at sample time, so not "
          f"{args.frame_stack} x {frame_bytes} = {args.frame_stack * frame_bytes} B, nor twice that "
          f"with a stored next observation)")

    add = jax.jit(replay.add, donate_argnums=0)
    obs = jnp.full((num_streams, *frame), 7, jnp.uint8)
    action = jnp.zeros((num_streams,), jnp.int32)
    reward = jnp.ones((num_streams,), jnp.float32)
    flags = jnp.zeros((num_streams,), bool)
    valid = jnp.ones((num_streams,), bool)
    since = jnp.full((num_streams,), 5, jnp.int32)
    state, calls_per_s = timed(
        lambda s, i: add(s, obs, action, reward, flags, flags, valid, since), state, args.add_seconds
    )
    print(f"add: {calls_per_s * num_streams:,.0f} slots/s ({calls_per_s:,.0f} calls/s of {num_streams} slots)")

    for batch_size in args.batch:
        def learn(state, key, beta):
            sample_key, priority_key = jax.random.split(key)
            batch = replay.sample(state, sample_key, batch_size, beta)
            priorities = jax.random.uniform(priority_key, (batch_size,)) * 2.0
            # The batch is returned so XLA cannot drop the frame gathers.
            return replay.set_priorities(state, batch.indices, priorities), batch

        learn = jax.jit(learn, donate_argnums=0)
        keys = jax.random.split(jax.random.key(0), 64)
        last = {}

        def step(s, i, learn=learn, keys=keys, last=last):
            s, last["batch"] = learn(s, keys[i % 64], jnp.float32(0.4))
            return s

        state, calls_per_s = timed(step, state, args.add_seconds)
        jax.block_until_ready(last["batch"])
        print(f"sample+set_priorities B={batch_size}: {calls_per_s * batch_size:,.0f} transitions/s "
              f"({calls_per_s:,.0f} calls/s)")

    set_demo_weight = jax.jit(replay.set_demo_weight, donate_argnums=0)
    state, calls_per_s = timed(lambda s, i: set_demo_weight(s, 1.0 + (i % 2)), state,
                               args.add_seconds, min_iters=2)
    print(f"set_demo_weight: {1e3 / calls_per_s:,.1f} ms per call over {replay.num_leaves:,} leaves")


if __name__ == "__main__":
    main()
