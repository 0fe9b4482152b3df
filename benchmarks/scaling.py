"""Scaling: the learner across devices, and the actors across Ray actors.

**Learner** (default): samples/s of the update on 1 device and on a mesh of N
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

**Actors** (``--actors 1,2,4``): env steps/s of the actor side alone (no learner: the
records are taken off the queue and counted), for the thread backend (one actor) and for Ray
(``actors.backend=ray``, launch/ray_actors.py) with each number of actors, each running
``--env-preset`` on ``--env`` with ``--num-envs`` envs per actor, in one process and one
local Ray instance. Every side is started, warmed up for ``--warmup-seconds`` and counted
for ``--seconds``; ``--repeats`` rounds go through the sides in turn. It prints per side the
env steps/s in all and per actor, and for Ray with one actor the transport's cost per
transition against the thread (``overhead_us = 1e6 / ray_1 - 1e6 / thread``, per env step).

    python benchmarks/scaling.py --actors 1,2,4 --env CartPole-v1 --env-preset dqn
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
    p.add_argument("--actors", default=None,
                   help="comma-separated numbers of Ray actors: time the actor side instead")
    p.add_argument("--env", default="CartPole-v1", help="--actors: the env id")
    p.add_argument("--env-preset", default="dqn", help="--actors: the preset that acts")
    p.add_argument("--num-envs", type=int, default=4, help="--actors: envs per actor")
    p.add_argument("--seconds", type=float, default=20.0, help="--actors: counted per side")
    p.add_argument("--warmup-seconds", type=float, default=5.0,
                   help="--actors: uncounted per side, after its start")
    p.add_argument("--repeats", type=int, default=1, help="--actors: rounds over the sides")
    args = p.parse_args(argv)
    if args.devices < 2:
        p.error(f"--devices {args.devices}: the mesh needs at least 2")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    # Before JAX starts: XLA reads the flag once. A user's own device count wins.
    if args.actors is None and "xla_force_host_platform_device_count" not in os.environ.get(
            "XLA_FLAGS", ""):
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
    if args.actors is not None:
        bench_actors(args, [int(n) for n in args.actors.split(",")])
        return
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


def actor_config(args, backend: str, num_actors: int):
    """The config of one actor side: ``--env-preset`` on ``--env``, ``--num-envs`` envs per
    actor, acting from the first step (no random warm-up)."""
    from launch import cli  # noqa: PLC0415
    from rl import config as config_lib  # noqa: PLC0415
    import envs  # noqa: PLC0415

    config = cli.parse(["--algo", args.env_preset, "--env", args.env, "--env.num-envs",
                        str(args.num_envs), "--actors.mode", "bounded", "--actors.backend",
                        backend, "--actors.num-actors", str(num_actors),
                        "--training.learning-starts", "0", "--total-steps", str(10**9)]).config
    spec = envs.env_spec(config.env.id, **envs.make_kwargs(config))
    return config_lib.resolve_env_auto(config, spec.is_image), spec


def time_actor_side(args, backend: str, num_actors: int) -> tuple[float, list[float]]:
    """(env steps/s in all, per actor) of one actor side, counted off its queue."""
    import queue  # noqa: PLC0415
    import threading  # noqa: PLC0415

    import jax  # noqa: PLC0415

    import envs  # noqa: PLC0415
    from launch.actor import Actor, ParamStore, RatioPacer  # noqa: PLC0415
    from launch.checkpoint import NEW_LOOP  # noqa: PLC0415
    from launch.ray_actors import RayActors  # noqa: PLC0415
    from rl.learners import make_agent  # noqa: PLC0415

    config, spec = actor_config(args, backend, num_actors)
    agent = make_agent(config, spec.num_actions, spec.is_image, spec.feature_size)
    key = jax.random.PRNGKey(0)
    params = agent.acting_state(agent.init(key, envs.zeros_obs(spec, (config.env.frame_stack,))))
    counters = dict(NEW_LOOP)
    if backend == "ray":
        actor = RayActors(config, spec, counters, 0, key, None, None)
    else:
        actor = Actor(config, spec, agent, counters, 0, key, None, None)
        actor.compile(params)
    handover, stop = queue.Queue(maxsize=config.actors.queue_size), threading.Event()
    thread = threading.Thread(target=actor.run, daemon=True, args=(
        handover, ParamStore(params, 0), RatioPacer(0.0, 1.0, enabled=False), stop))
    actor.start()
    thread.start()
    steps = [0] * num_actors
    try:
        for seconds, counted in ((args.warmup_seconds, False), (args.seconds, True)):
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                try:
                    record = handover.get(timeout=0.1)
                except queue.Empty:
                    continue
                if counted:
                    steps[record.actor] += record.taken
    finally:
        stop.set()
        thread.join(30)
        actor.close()
    rates = [n / args.seconds for n in steps]
    return sum(rates), rates


def bench_actors(args, counts: list[int]) -> None:
    """Thread vs Ray actor sides, in turn, ``--repeats`` rounds; prints one line per side
    and round, then the medians and the transport overhead."""
    import ray  # noqa: PLC0415

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
    ray.init(address="local", include_dashboard=False, configure_logging=False,
             log_to_driver=False)
    sides = [("thread", 1)] + [("ray", n) for n in counts]
    totals: dict[tuple[str, int], list[float]] = {side: [] for side in sides}
    for round_ in range(args.repeats):
        for backend, n in sides:
            total, rates = time_actor_side(args, backend, n)
            totals[(backend, n)].append(total)
            print(f"round={round_} env={args.env} num_envs={args.num_envs} backend={backend} "
                  f"actors={n} env_steps_per_s={total:.0f} per_actor="
                  f"{','.join(f'{r:.0f}' for r in rates)}", flush=True)
    median = {side: statistics.median(v) for side, v in totals.items()}
    for (backend, n), value in median.items():
        print(f"median env={args.env} backend={backend} actors={n} env_steps_per_s={value:.0f} "
              f"per_actor={value / n:.0f}", flush=True)
    if ("ray", 1) in median:
        overhead = 1e6 / median[("ray", 1)] - 1e6 / median[("thread", 1)]
        print(f"overhead_us_per_env_step ray_1_vs_thread={overhead:.1f}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
