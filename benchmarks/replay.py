"""Throughput and memory of the device replay at full capacity, and against flashbax.

Builds a :class:`replay.DeviceReplay` with uint8 frames, fills it through ``add`` (a
jitted ``fori_loop`` of adds with synthetic episodes), then reports:

* add throughput: slots/s over jitted, donated ``add`` calls (one call = E slots);
* sample + set_priorities throughput: transitions/s over one jitted, donated call that
  samples a batch (stacked obs, n-step targets, IS weights) and writes new priorities;
* bytes per stored transition: ``sum(nbytes of the state) / (E * C)``;
* set_demo_weight: calls/s of the whole-tree rescale the training loop runs once per log
  interval while the demo sampling weight decays.

``--against flashbax`` instead times, in this process, one prioritised sample + priority
write-back per call of ours and of flashbax's prioritised trajectory buffer
(``flashbax.make_prioritised_trajectory_buffer``, PyPI ``flashbax``, the ``[bench]`` extra)
at each of ``--capacities`` (default 20k and 1M slots) and batch 256: the same E streams,
capacity, batch and priority exponent; flashbax samples windows of ``frame_stack + n_step``
slots (what one of our transitions reads) with their probabilities and then calls
``set_priorities`` (its ``device`` argument is the JAX backend, ``set_batch_scan`` on CPU);
ours is :meth:`DeviceReplay.sample` (stacks, n-step returns, IS weights) then
:meth:`DeviceReplay.set_priorities`. Both are jitted with the state donated, fed
precomputed keys and priorities, and timed in alternating rounds (median per call). The
frames are 1 byte (``--frame``): two 1M-slot buffers of 84x84 frames would take 13 GiB,
and what is compared is the sum tree and the index work, not frame copies (with 84x84
frames the frame gathers dominate both).

Usage::

  python benchmarks/replay.py --capacity 1000000
  python benchmarks/replay.py --against flashbax        # pip install -e ".[bench]"
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

# Run as a script, this file's folder is sys.path[0] and its own name would shadow the
# `replay` package; put the repository root first.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import machine, markdown_table  # noqa: E402
from replay import DeviceReplay  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capacity", type=int, default=1_000_000, help="total slots E * C")
    parser.add_argument("--num-streams", type=int, default=8, help="E, env streams")
    parser.add_argument("--frame", type=str, default=None,
                        help="frame shape HxW or N (uint8); default 84x84, 1 with --against")
    parser.add_argument("--frame-stack", type=int, default=4)
    parser.add_argument("--batch", type=int, nargs="+", default=None,
                        help="batch sizes; default 32 256, 256 with --against")
    parser.add_argument("--against", choices=["flashbax"], default=None,
                        help="time sample + set_priorities beside flashbax's prioritised buffer")
    parser.add_argument("--capacities", type=int, nargs="+", default=[20_000, 1_000_000],
                        help="total slots E * C compared with --against")
    parser.add_argument("--priority-exponent", type=float, default=0.6, help="alpha")
    parser.add_argument("--n-step", type=int, default=3)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--uniform", action="store_true", help="uniform instead of PER")
    parser.add_argument("--add-seconds", type=float, default=5.0, help="time budget per measurement")
    args = parser.parse_args()
    if args.frame is None:
        args.frame = "1" if args.against else "84x84"
    if args.batch is None:
        args.batch = [256] if args.against else [32, 256]
    return args


def make_fill(replay: DeviceReplay, frame: tuple[int, ...]):
    """Jitted fill: ``num_adds`` adds of synthetic episodes (lengths 200 + 37 * stream) with
    uint8 frames of shape ``frame`` (any rank)."""
    num_streams = replay.num_streams
    episode_len = 200 + 37 * jnp.arange(num_streams, dtype=jnp.int32)

    def one_step(t, carry):
        state, since, pending = carry
        ids = ((t + jnp.arange(num_streams)) % 256).astype(jnp.uint8)
        obs = jnp.broadcast_to(ids.reshape((num_streams,) + (1,) * len(frame)),
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
        start = state.count[0]  # int32 [G]; the benchmarked replay has one group
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


NUM_INPUTS = 64
"""Keys and priority vectors prepared before timing and cycled through, so a timed call
costs no host-side key slicing or scalar upload."""


def parse_frame(text: str) -> tuple[int, ...]:
    """``"84x84"`` -> ``(84, 84)``, ``"1"`` -> ``(1,)``."""
    return tuple(int(x) for x in text.lower().split("x"))


def make_replay(args: argparse.Namespace, capacity: int) -> DeviceReplay:
    """The benchmarked replay: ``args.num_streams`` streams of ``capacity // E`` slots."""
    return DeviceReplay(
        num_streams=args.num_streams,
        capacity_per_stream=capacity // args.num_streams,
        frame_stack=args.frame_stack,
        n_step=args.n_step,
        gamma=args.gamma,
        prioritized=not args.uniform,
        priority_exponent=args.priority_exponent,
    )


def filled(replay: DeviceReplay, args: argparse.Namespace, frame: tuple[int, ...]):
    """A state past its first wrap-around (every slot written), and the seconds it took."""
    start = time.perf_counter()
    state = replay.init(np.zeros(frame, np.uint8), np.int32(0))
    state = make_fill(replay, frame)(state, replay.capacity_per_stream + args.n_step + 1)
    jax.block_until_ready(state)
    return state, time.perf_counter() - start


def timing_inputs(batch_size: int) -> tuple[list[jax.Array], list[jax.Array]]:
    """NUM_INPUTS PRNG keys and float32 ``[batch_size]`` priorities in [0, 2), on device."""
    keys = list(jax.random.split(jax.random.key(0), NUM_INPUTS))
    priorities = jax.random.uniform(jax.random.key(1), (NUM_INPUTS, batch_size)) * 2.0
    return keys, list(priorities)


def ours_step(replay: DeviceReplay, state: Any, batch_size: int) -> Callable[[int], Any]:
    """``step(i)``: one jitted, donated call of :meth:`DeviceReplay.sample` (beta 0.4) then
    :meth:`DeviceReplay.set_priorities` with the i-th prepared key and priorities; returns
    what to block on (the new state and the batch)."""

    def learn(state, key, priorities, beta):
        batch = replay.sample(state, key, batch_size, beta)
        # The batch is returned so XLA cannot drop the frame gathers.
        return replay.set_priorities(state, batch.indices, priorities), batch

    learn = jax.jit(learn, donate_argnums=0)
    keys, priorities = timing_inputs(batch_size)
    beta = jnp.float32(0.4)
    box = {"state": state}

    def step(i: int):
        box["state"], batch = learn(box["state"], keys[i % NUM_INPUTS],
                                    priorities[i % NUM_INPUTS], beta)
        return box["state"], batch

    return step


def import_flashbax():
    """The flashbax module.

    Raises:
      SystemExit: flashbax is not installed (it comes with the ``[bench]`` extra).
    """
    try:
        import flashbax  # noqa: PLC0415  (a benchmark-only dependency)
    except ImportError as err:
        raise SystemExit(f"--against flashbax needs the flashbax package ({err}): "
                         f'pip install -e ".[bench]"') from err
    return flashbax


def flashbax_step(flashbax, args: argparse.Namespace, capacity: int, batch_size: int,
                  frame: tuple[int, ...]) -> tuple[Callable[[int], Any], float]:
    """flashbax's peer of :func:`ours_step`: a filled prioritised trajectory buffer of the
    same E, capacity and alpha whose items are windows of ``frame_stack + n_step`` slots
    (the slots one of our transitions reads), and ``step(i)``: one jitted, donated call of
    its ``sample`` (windows and probabilities) then ``set_priorities``. Returns
    ``(step, fill seconds)``.
    """
    num_streams = args.num_streams
    time_axis = capacity // num_streams
    window = args.frame_stack + args.n_step
    backend = jax.default_backend()
    buffer = flashbax.make_prioritised_trajectory_buffer(
        add_batch_size=num_streams, sample_batch_size=batch_size,
        sample_sequence_length=window, period=1, min_length_time_axis=window,
        max_length_time_axis=time_axis, priority_exponent=args.priority_exponent,
        device=backend if backend in ("cpu", "gpu", "tpu") else "cpu")
    slot = dict(obs=jnp.zeros(frame, jnp.uint8), action=jnp.int32(0), reward=jnp.float32(0),
                terminated=jnp.bool_(False), truncated=jnp.bool_(False))

    start = time.perf_counter()
    state = buffer.init(slot)
    add = jax.jit(buffer.add, donate_argnums=0)
    chunk = min(time_axis, 1000)
    sequence = jax.tree.map(lambda x: jnp.zeros((num_streams, chunk, *x.shape), x.dtype), slot)
    for _ in range(-(-(time_axis + window) // chunk)):
        state = add(state, sequence)
    jax.block_until_ready(state)
    fill_s = time.perf_counter() - start

    def learn(state, key, priorities):
        sample = buffer.sample(state, key)
        return buffer.set_priorities(state, sample.indices, priorities), sample

    learn = jax.jit(learn, donate_argnums=0)
    keys, priorities = timing_inputs(batch_size)
    box = {"state": state}

    def step(i: int):
        box["state"], sample = learn(box["state"], keys[i % NUM_INPUTS], priorities[i % NUM_INPUTS])
        return box["state"], sample

    return step, fill_s


def alternate(steps: dict[str, Callable[[int], Any]], budget_s: float, calls: int = 10,
              min_rounds: int = 10) -> dict[str, list[float]]:
    """Seconds per call of each ``step(i)``, one list entry per round of ``calls`` calls.

    Rounds alternate between the steps (order reversed every other round) until
    ``budget_s`` has passed and at least ``min_rounds`` rounds were taken, so load on a
    shared machine falls on all of them alike. Each step is compiled and warmed up first.
    """
    for step in steps.values():
        for i in range(3):
            jax.block_until_ready(step(i))
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    names, start, i = list(steps), time.perf_counter(), 0
    while len(seconds[names[0]]) < min_rounds or time.perf_counter() - start < budget_s:
        for name in names if len(seconds[names[0]]) % 2 == 0 else names[::-1]:
            tic = time.perf_counter()
            for _ in range(calls):
                out = steps[name](i)
                i += 1
            jax.block_until_ready(out)
            seconds[name].append((time.perf_counter() - tic) / calls)
    return seconds


def against_flashbax(args: argparse.Namespace) -> None:
    """The ``--against flashbax`` table: ours and flashbax per capacity and batch size."""
    if args.uniform:
        raise SystemExit("--against flashbax compares prioritised buffers; drop --uniform")
    flashbax = import_flashbax()
    version = importlib.metadata.version("flashbax")
    frame = parse_frame(args.frame)
    print(machine())
    print(f"sample + priority write-back per call, ours vs flashbax {version} "
          f"(prioritised trajectory buffer, device {jax.default_backend()!r}); "
          f"E={args.num_streams} streams, k={args.frame_stack}, n={args.n_step}, "
          f"alpha={args.priority_exponent}, uint8 frames {frame}; median of alternating rounds "
          f"of 10 calls, jitted and donated both")
    if np.prod(frame) < 64:
        print(f"{int(np.prod(frame))}-byte frames: what is timed is the sum tree and the index "
              f"work, not frame copies (two 1M-slot buffers of 84x84 frames would need 13 GiB, "
              f"and their frame gathers would dominate both columns)")
    rows = []
    for capacity in args.capacities:
        for batch_size in args.batch:
            replay = make_replay(args, capacity)
            state, ours_fill_s = filled(replay, args, frame)
            theirs, theirs_fill_s = flashbax_step(flashbax, args, capacity, batch_size, frame)
            seconds = alternate({"ours": ours_step(replay, state, batch_size), "flashbax": theirs},
                                args.add_seconds * 2)
            ours_s = statistics.median(seconds["ours"])
            theirs_s = statistics.median(seconds["flashbax"])
            rows.append([f"{replay.num_leaves:,}", batch_size, f"{ours_s * 1e3:.3f}",
                         f"{batch_size / ours_s:,.0f}", f"{theirs_s * 1e3:.3f}",
                         f"{batch_size / theirs_s:,.0f}", f"{theirs_s / ours_s:.2f}"])
            print(f"  capacity {replay.num_leaves:,} B={batch_size}: fill {ours_fill_s:.1f} s "
                  f"(ours) / {theirs_fill_s:.1f} s (flashbax), {len(seconds['ours'])} rounds",
                  flush=True)
            del state, theirs
    print(markdown_table(["capacity", "batch", "ours ms/call", "ours transitions/s",
                          "flashbax ms/call", "flashbax transitions/s",
                          "ours/flashbax (transitions/s)"], rows))
    print(f"loadavg at the end (1/5/15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    args = parse_args()
    if args.against == "flashbax":
        against_flashbax(args)
        return
    frame = parse_frame(args.frame)
    replay = make_replay(args, args.capacity)
    num_streams, capacity_per_stream = replay.num_streams, replay.capacity_per_stream
    print(machine())
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; E={num_streams} "
          f"C={capacity_per_stream} (total {num_streams * capacity_per_stream:,} slots), frame {frame} uint8, "
          f"k={args.frame_stack}, n={args.n_step}, {'uniform' if args.uniform else 'PER'}")

    state, fill_s = filled(replay, args, frame)
    print(f"fill: {fill_s:.1f} s for {int(replay.size(state)):,} slots, "
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
        step = ours_step(replay, state, batch_size)
        del state  # donated to the step, which hands the newest back
        per_call = statistics.median(alternate({"ours": step}, args.add_seconds)["ours"])
        state, _ = step(0)
        print(f"sample+set_priorities B={batch_size}: {batch_size / per_call:,.0f} transitions/s "
              f"({per_call * 1e3:.3f} ms per call)")

    set_demo_weight = jax.jit(replay.set_demo_weight, donate_argnums=0)
    state, calls_per_s = timed(lambda s, i: set_demo_weight(s, 1.0 + (i % 2)), state,
                               args.add_seconds, min_iters=2)
    print(f"set_demo_weight: {1e3 / calls_per_s:,.1f} ms per call over {replay.num_leaves:,} leaves")


if __name__ == "__main__":
    main()
