"""Learner scaling across devices: samples/s of the update on 1 device and on a mesh of N
(``learner.devices``, ``rl/sharding.py``) at the same global batch, in one process.

For each ``--algo`` it builds the agent as ``benchmarks/learner.py`` does (random frames, the
replay filled), compiles the update twice, once on the first device and once on a mesh of
``--devices`` devices (state and replay replicated, batch split), and times the two
alternately, one call each, ``--iters`` times. It prints ``ms_1``, ``ms_N`` (medians per
call), samples/s of each and ``speedup = ms_1 / ms_N``. On a CPU it asks XLA for ``--devices``
host devices (``--xla_force_host_platform_device_count``), which share the machine's cores:
there the figure is the cost of splitting the batch, not a gain. On a machine with several
GPUs the devices are the GPUs.

    python benchmarks/scaling.py --algo dqn,iqn_btr --devices 2 --batch-size 256
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", default="dqn,iqn_btr", help="comma-separated preset names")
    p.add_argument("--devices", type=int, default=2, help="devices of the mesh (>= 2)")
    p.add_argument("--batch-size", type=int, default=256, help="global batch of both sides")
    p.add_argument("--iters", type=int, default=7, help="timed calls per side")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per side")
    p.add_argument("--capacity", type=int, default=16384, help="replay capacity")
    p.add_argument("--num-actions", type=int, default=5)
    args = p.parse_args(argv)
    if args.devices < 2:
        p.error(f"--devices {args.devices}: the mesh needs at least 2")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    # Before JAX starts: XLA reads the flag once. A user's own device count wins.
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.devices}")
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
    sys.path.insert(0, os.path.dirname(_HERE))
    sys.path.append(_HERE)
    import jax  # noqa: PLC0415

    from common import machine  # noqa: PLC0415
    import learner as learner_bench  # noqa: PLC0415

    print(f"{machine()} backend={jax.default_backend()} "
          f"devices={jax.device_count()}", flush=True)
    for algo in [a.strip() for a in args.algo.split(",") if a.strip()]:
        bench(args, algo, learner_bench)


def bench(args, algo: str, learner_bench) -> None:
    """Times one preset on 1 device and on the mesh, alternating; prints one line."""
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from rl import sharding  # noqa: PLC0415
    from rl.config import LearnerConfig  # noqa: PLC0415
    from rl.learners import make_agent  # noqa: PLC0415

    options = argparse.Namespace(width_scale=None, dtype=None, image_size=None,
                                 capacity=args.capacity, grad_steps_per_call=1,
                                 num_actions=args.num_actions)
    cfg = learner_bench.make_config(options, algo, args.batch_size)
    frame_shape, frame_dtype, is_image, action_shape, action_dtype, num_actions = \
        learner_bench.spaces(options, cfg)
    agent = make_agent(cfg, num_actions, is_image=is_image)
    k = agent.config.env.frame_stack
    state = agent.init(jax.random.PRNGKey(0), np.zeros((k, *frame_shape), frame_dtype))
    replay_state = learner_bench.fill_replay(agent, frame_shape, frame_dtype, action_shape,
                                             action_dtype, num_actions)
    mesh = sharding.learner_mesh(LearnerConfig(devices=args.devices), args.batch_size)
    sides = {}
    for name, side_mesh in (("1", None), (str(args.devices), mesh)):
        carry = list(jax.device_get((state, replay_state)))
        carry = list(sharding.replicate(tuple(carry), side_mesh))
        context = (jax.set_mesh(side_mesh) if side_mesh is not None
                   else contextlib.nullcontext())
        with context:
            update = jax.jit(agent.update, donate_argnums=(0, 1)).lower(
                carry[0], carry[1], 0.4).compile()
        sides[name] = (update, carry)

    def call(name: str) -> float:
        update, carry = sides[name]
        t0 = time.perf_counter()
        carry[0], carry[1], metrics = update(carry[0], carry[1], 0.4)
        jax.block_until_ready((carry, metrics))
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        for name in sides:
            call(name)
    times = {name: [] for name in sides}
    for _ in range(args.iters):
        for name in sides:
            times[name].append(call(name))
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    one, many = ms["1"], ms[str(args.devices)]
    print(f"algo={algo} batch={args.batch_size} ms_1={one:.1f} ms_{args.devices}={many:.1f} "
          f"samples_per_s_1={1000 * args.batch_size / one:.0f} "
          f"samples_per_s_{args.devices}={1000 * args.batch_size / many:.0f} "
          f"speedup={one / many:.2f} pairs={args.iters}", flush=True)


if __name__ == "__main__":
    main()
