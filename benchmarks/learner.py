"""Throughput of the jitted learner update (and of acting) for one or more presets.

Builds the agent of each ``--algo`` with ``make_agent``: discrete presets on uint8 frames of
the preset's image size with ``--num-actions`` actions, tqc presets on the spaces of their own
env (Pendulum-v1 vectors, CarRacing images with 3 continuous actions). Fills its device
replay with random data (one ring per env stream, every slot written),
then for each batch size compiles ``jax.jit(agent.update, donate_argnums=(0, 1))`` ahead of
time (``compile_s``), runs ``--warmup`` calls and times ``--iters`` calls, each doing
``--grad-steps-per-call`` sampled grad steps (PER sampling and priority write-back included).
It also times the jitted ``agent.act(noisy=True)`` on a batch of ``env.num_envs`` stacked
observations. Numbers are wall-clock on the default JAX device.

With ``--against-pytorch`` (``iqn_btr`` and ``tqc_tm20``; needs torch, the ``[bench]`` extra)
it also builds the PyTorch peer of the update (``benchmarks/torch_peers.py``: BTR's network
and Munchausen-IQN step, or TQC with ``tqc_tm20``'s shapes) and times both in this process,
one JAX call then one torch call, ``--iters`` times, with torch on as many threads as XLA
has cores. It prints the medians ``jax_ms``, ``torch_ms`` and ``ratio = torch_ms / jax_ms``
(above 1: ours is faster) for the update at each batch size and, for ``iqn_btr``, for acting
at each of ``--act-batch-sizes``: once with the calls back to back, once paced (``paced``
line: each side's call every ``--act-period-ms``, default 50 ms, the other's in between, as
the actor of the 20 Hz game calls its policy; both sides then start from idle threads, whose
wake-up the back-to-back line hides and the paced one counts). For the update it also prints
a ``blocks`` line: ``--iters`` JAX calls, then ``--iters`` torch calls (alternating single
calls, each side starts in the other's memory footprint; on a quiet machine the two ratios
agreed within 4%). Torch's batch is already on the host: its time leaves out the replay
sampling that the JAX update includes.

Run:
  python benchmarks/learner.py --algo iqn_btr,rainbow,tm20_rainbow --batch-sizes 32,256 --iters 5
  python benchmarks/learner.py --algo iqn --width-scale 1 --grad-steps-per-call 4
  python benchmarks/learner.py --algo iqn_btr,tqc_tm20 --against-pytorch --iters 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# Running as a script puts benchmarks/ first on sys.path, where benchmarks/replay.py would
# shadow the ``replay`` package; import the project's packages from the repository root.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import envs  # noqa: E402
from rl import presets  # noqa: E402
from rl.learners import make_agent  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", default="iqn_btr",
                   help="comma-separated preset names (rl/presets.py), measured one after another")
    p.add_argument("--batch-sizes", default="32,256", help="comma-separated batch sizes")
    p.add_argument("--grad-steps-per-call", type=int, default=1)
    p.add_argument("--iters", type=int, default=10, help="timed calls per batch size")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls after compiling")
    p.add_argument("--num-actions", type=int, default=5, help="5 = CarRacing discrete")
    p.add_argument("--image-size", type=int, default=None,
                   help="override env.image_size (default: the preset's)")
    p.add_argument("--width-scale", type=int, default=None, help="override network.width_scale")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16"),
                   help="override network.dtype (the layers' computation dtype)")
    p.add_argument("--capacity", type=int, default=16384, help="replay capacity (all streams)")
    p.add_argument("--against-pytorch", action="store_true",
                   help="time the PyTorch peer of the update and of acting side by side")
    p.add_argument("--act-batch-sizes", default=None,
                   help="comma-separated batch sizes for acting (default: env.num_envs)")
    p.add_argument("--act-period-ms", type=float, default=50.0,
                   help="with --against-pytorch, also time acting paced: each side's call "
                   "every this many ms, the other's half a period later (50: TrackMania's "
                   "20 Hz control step; 0: back-to-back calls only)")
    return p.parse_args(argv)


def make_config(args, algo, batch_size):
    network = {} if args.width_scale is None else dict(width_scale=args.width_scale)
    if args.dtype is not None:
        network["dtype"] = args.dtype
    env = {} if args.image_size is None else dict(image_size=args.image_size)
    return presets.replace(
        presets.get(algo), env=env, network=network,
        replay=dict(capacity=args.capacity),
        training=dict(batch_size=batch_size, grad_steps_per_call=args.grad_steps_per_call))


def spaces(args, cfg):
    """(frame shape, frame dtype, is_image, action shape, action dtype, num_actions)."""
    if cfg.agent.learner == "tqc":
        spec = envs.env_spec(cfg.env.id, frame_skip=cfg.env.frame_skip,
                             image_size=cfg.env.image_size, action_space=cfg.env.action_space,
                             trackmania=cfg.trackmania)
        return (spec.frame_shape, spec.frame_dtype, spec.is_image, spec.action_shape,
                np.float32, spec.num_actions)
    size = cfg.env.image_size
    return (size, size), np.uint8, True, (), np.int32, args.num_actions


def random_obs(rng, shape, dtype):
    if dtype == np.uint8:
        return rng.integers(0, 256, shape, np.uint8)
    return rng.normal(size=shape).astype(dtype)


def random_actions(rng, e, action_shape, num_actions):
    if action_shape:
        return rng.uniform(-1, 1, (e, *action_shape)).astype(np.float32)
    return rng.integers(0, num_actions, e).astype(np.int32)


def fill_replay(agent, frame_shape, frame_dtype, action_shape, action_dtype, num_actions,
                seed=0):
    """Replay state with every slot of every stream written with random data."""
    e, c = agent.replay.num_streams, agent.replay.capacity_per_stream
    replay_state = agent.replay.init(np.zeros(frame_shape, frame_dtype),
                                     np.zeros(action_shape, action_dtype))
    add = jax.jit(agent.replay.add, donate_argnums=0)
    rng = np.random.default_rng(seed)
    since = np.zeros(e, np.int32)
    for _ in range(c):
        terminated = rng.random(e) < 0.01
        replay_state = add(replay_state, obs=random_obs(rng, (e, *frame_shape), frame_dtype),
                           action=random_actions(rng, e, action_shape, num_actions),
                           reward=rng.normal(size=e).astype(np.float32), terminated=terminated,
                           truncated=np.zeros(e, bool), valid=np.ones(e, bool),
                           steps_since_start=since)
        since = np.where(terminated, 0, since + 1).astype(np.int32)
    return jax.block_until_ready(replay_state)


def main(argv=None):
    args = parse_args(argv)
    for algo in [a.strip() for a in args.algo.split(",") if a.strip()]:
        bench(args, algo)


def bench(args, algo):
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    cfg = make_config(args, algo, batch_sizes[0])
    frame_shape, frame_dtype, is_image, action_shape, action_dtype, num_actions = spaces(args, cfg)
    agent = make_agent(cfg, num_actions, is_image=is_image)
    cfg = agent.config  # env auto fields resolved
    e, k = cfg.env.num_envs, cfg.env.frame_stack
    peer = make_peer(algo, cfg, num_actions) if args.against_pytorch else None
    state = agent.init(jax.random.PRNGKey(0), np.zeros((k, *frame_shape), frame_dtype))
    params = (state.actor_params, state.critic_params) if hasattr(state, "actor_params") \
        else state.params
    n_params = sum(x.size for x in jax.tree.leaves(params))
    t0 = time.perf_counter()
    replay_state = fill_replay(agent, frame_shape, frame_dtype, action_shape, action_dtype,
                               num_actions)
    fill_s = time.perf_counter() - t0
    print(f"jax={jax.__version__} backend={jax.default_backend()} "
          f"device={jax.devices()[0].device_kind} cpus={os.cpu_count()} algo={algo} "
          f"torso={cfg.network.torso} width_scale={cfg.network.width_scale} "
          f"dtype={cfg.network.dtype} params={n_params} "
          f"num_envs={e} frame_stack={k} capacity={cfg.replay.capacity} "
          f"fill_s={fill_s:.1f}", flush=True)

    state = time_updates(args, algo, batch_sizes, num_actions, is_image, state, replay_state,
                         peer)
    time_acting(args, algo, agent, state, (k, *frame_shape), frame_dtype, peer)


def alternate(jax_step, torch_step, pairs: int, period_s: float = 0.0
              ) -> tuple[list[float], list[float]]:
    """Seconds of each of ``pairs`` calls of ``jax_step(i)`` (which must block until its
    result is ready) and of ``torch_step()``, one after the other. With ``period_s`` > 0
    each side's call starts every ``period_s`` seconds, the other side's half a period
    later (a paced loop, as an actor of a real-time game calls its policy); a call that
    overruns its slot starts the next one at once."""
    jax_s, torch_s = [], []
    slot = time.perf_counter()
    for i in range(pairs):
        for step, times in ((lambda: jax_step(i), jax_s), (torch_step, torch_s)):
            if period_s > 0:
                time.sleep(max(0.0, slot - time.perf_counter()))
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
            slot = max(slot, t0) + period_s / 2
    return jax_s, torch_s


def timed(fn, i) -> float:
    """Seconds of one ``fn(i)`` call."""
    t0 = time.perf_counter()
    fn(i)
    return time.perf_counter() - t0


def time_updates(args, algo, batch_sizes, num_actions, is_image, state, replay_state, peer):
    """Compile and time the update at each batch size (against ``peer`` when given); prints
    a line per batch size and returns the last train state."""
    beta = jnp.float32(0.4)
    for batch in batch_sizes:
        agent = make_agent(make_config(args, algo, batch), num_actions, is_image=is_image)
        t0 = time.perf_counter()
        update = jax.jit(agent.update, donate_argnums=(0, 1)).lower(
            state, replay_state, beta).compile()
        compile_s = time.perf_counter() - t0
        carry = [state, replay_state, None]

        def step(_):
            carry[:] = update(carry[0], carry[1], beta)
            jax.block_until_ready(carry)

        for i in range(args.warmup):
            step(i)
        if peer is None:
            t0 = time.perf_counter()
            for _ in range(args.iters):  # dispatched back to back, as in training
                carry[:] = update(carry[0], carry[1], beta)
            jax.block_until_ready(carry)
            elapsed = time.perf_counter() - t0
        else:
            host_batch = peer.random_batch(batch, seed=3)
            for _ in range(args.warmup):
                peer(host_batch)
            jax_s, torch_s = alternate(step, lambda: peer(host_batch), args.iters)
            elapsed = sum(jax_s)
            print_ratio(f"algo={algo} update batch={batch}", jax_s, torch_s)
            # Single alternating calls each start in the other side's memory; blocks of
            # calls check that this does not decide the ratio.
            jax_block = [timed(step, i) for i in range(args.iters)]
            torch_block = [timed(lambda _: peer(host_batch), i) for i in range(args.iters)]
            print_ratio(f"algo={algo} update batch={batch} blocks", jax_block, torch_block)
        state, replay_state, metrics = carry
        steps = args.iters * args.grad_steps_per_call
        assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
        print(f"algo={algo} batch={batch} grad_steps_per_call={args.grad_steps_per_call} "
              f"grad_steps_per_s={steps / elapsed:.4g} samples_per_s={steps * batch / elapsed:.4g} "
              f"ms_per_grad_step={1000 * elapsed / steps:.1f} compile_s={compile_s:.1f}",
              flush=True)
    return state


def time_acting(args, algo, agent, state, obs_shape, obs_dtype, peer):
    """Time the jitted noisy ``agent.act`` at each of ``--act-batch-sizes`` (default
    env.num_envs), against ``peer.act`` when the peer has one; prints a line per size."""
    act = jax.jit(agent.act, static_argnames="noisy")
    act_batches = ([int(b) for b in args.act_batch_sizes.split(",") if b.strip()]
                   if args.act_batch_sizes else [agent.config.env.num_envs])
    peer_act = getattr(peer, "act", None)
    for n in act_batches:
        obs_np = random_obs(np.random.default_rng(1), (n, *obs_shape), obs_dtype)
        obs = jnp.asarray(obs_np)
        prev = jnp.zeros((n, agent.config.network.action_history), jnp.int32)
        call = lambda i: jax.block_until_ready(act(
            state, obs, jax.random.PRNGKey(i), jnp.float32(0.0), noisy=True,
            prev_actions=prev))
        for i in range(max(args.warmup, 1)):
            call(i)
        if peer_act is None:
            t0 = time.perf_counter()
            for i in range(args.iters):
                call(100 + i)
            act_ms = 1000 * (time.perf_counter() - t0) / args.iters
        else:
            for _ in range(max(args.warmup, 1)):
                peer_act(obs_np)
            # Acting is short: at least 10 pairs.
            jax_s, torch_s = alternate(lambda i: call(100 + i), lambda: peer_act(obs_np),
                                       max(args.iters, 10))
            print_ratio(f"algo={algo} act batch={n}", jax_s, torch_s)
            if args.act_period_ms > 0:
                paced = alternate(lambda i: call(200 + i), lambda: peer_act(obs_np),
                                  max(args.iters, 10), args.act_period_ms / 1000)
                print_ratio(f"algo={algo} act batch={n} paced period_ms={args.act_period_ms:g}",
                            *paced)
            act_ms = 1000 * statistics.median(jax_s)
        print(f"algo={algo} act_ms_batch_E={act_ms:.2f} E={n} noisy=True", flush=True)


def print_ratio(label, jax_s, torch_s):
    jax_ms, torch_ms = 1000 * statistics.median(jax_s), 1000 * statistics.median(torch_s)
    print(f"{label} jax_ms={jax_ms:.1f} torch_ms={torch_ms:.1f} "
          f"ratio={torch_ms / jax_ms:.3f} pairs={len(jax_s)}", flush=True)


def make_peer(algo, cfg, num_actions):
    """The PyTorch peer of ``algo``'s update (see benchmarks/torch_peers.py), with torch on
    as many threads as XLA:CPU uses."""
    try:
        from benchmarks import torch_peers  # noqa: PLC0415  (torch only with this flag)
    except ImportError as err:
        raise SystemExit(f"--against-pytorch needs torch ({err}): "
                         "pip install -e '.[bench]'") from err
    torch_peers.torch.set_num_threads(os.cpu_count())
    torch_peers.torch.manual_seed(0)
    if algo == "iqn_btr":
        agent = cfg.agent
        return torch_peers.BTRUpdate(
            num_actions, num_taus=agent.num_tau_samples, lr=agent.learning_rate,
            adam_eps=agent.adam_eps, max_grad_norm=agent.max_grad_norm,
            munchausen_tau=agent.munchausen_tau, munchausen_alpha=agent.munchausen_alpha,
            munchausen_clip=agent.munchausen_clip)
    if algo == "tqc_tm20":
        tqc = cfg.tqc
        return torch_peers.TQCUpdate(
            action_dim=num_actions, frame_stack=cfg.env.frame_stack,
            image_size=cfg.env.image_size, hidden=tuple(tqc.critic_hidden),
            num_critics=tqc.num_critics, num_quantiles=tqc.num_quantiles,
            drop_per_critic=tqc.top_quantiles_to_drop, alpha=tqc.alpha,
            actor_lr=tqc.actor_learning_rate, critic_lr=tqc.critic_learning_rate,
            grad_clip=tqc.critic_grad_clip, polyak=cfg.agent.target_tau)
    raise SystemExit(f"--against-pytorch has peers for iqn_btr and tqc_tm20, not {algo!r}")


if __name__ == "__main__":
    main()
