"""Atari env throughput: env steps per second of ``envs.make_vector_env`` on each backend,
random actions, no agent, in one process.

Paths (``--paths``): ``gym-sync`` (gymnasium ``SyncVectorEnv``, this process),
``gym-async`` (``AsyncVectorEnv``: spawned worker processes, the default env.asynchronous) and
``envpool`` (envs/envpool_env.py: C++ threads, one per env up to the core count). All get the
run's preprocessing (BTR: frame skip 4 with the max of the last two frames, 84x84 gray, up to
30 no-ops, sticky actions 0.25). For each number of envs E the paths are built once, then
stepped in alternating windows of ``--seconds`` (``--rounds`` rounds) so that machine noise
hits all alike; the table shows each path's median over the rounds. Autoreset steps are not
counted (launch/run.py does not count them); frames/s = 4 x env steps/s.

    python benchmarks/envs.py                          # Pong, E = 1, 4, 8, 3 s x 3 rounds
    python benchmarks/envs.py --env ALE/BeamRider-v5 --num-envs 8 --seconds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import common
import envs  # after common, which puts the repository root on sys.path (this file is envs.py)

PATHS = {
    "gym-sync": dict(backend="gymnasium", asynchronous=False),
    "gym-async": dict(backend="gymnasium", asynchronous=True),
    "envpool": dict(backend="envpool", asynchronous=False),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="ALE/Pong-v5", help="an ALE/*-v5 id")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one window")
    parser.add_argument("--rounds", type=int, default=3, help="windows per path and E")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def window(vector_env, num_envs: int, seconds: float, rng: np.random.Generator) -> float:
    """Env steps per second over ``seconds`` of random actions (autoreset steps not counted)."""
    n = int(vector_env.single_action_space.n)
    resetting = np.zeros(num_envs, bool)
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        _, _, terminated, truncated, _ = vector_env.step(rng.integers(0, n, num_envs))
        steps += int(np.sum(~resetting))
        resetting = np.asarray(terminated) | np.asarray(truncated)
    return steps / elapsed


def main() -> None:
    args = parse_args()
    print(common.machine())
    if "envpool" in args.paths:
        import envpool

        print(f"envpool {envpool.__version__}")
    rng = np.random.default_rng(args.seed)
    table: dict[str, dict[int, float]] = {p: {} for p in args.paths}
    for num_envs in args.num_envs:
        built = {p: envs.make_vector_env(args.env, num_envs, seed=args.seed, **PATHS[p])
                 for p in args.paths}
        try:
            rates: dict[str, list[float]] = {p: [] for p in args.paths}
            for vector_env in built.values():
                vector_env.reset(seed=args.seed)
                window(vector_env, num_envs, 0.5, rng)  # warm-up: caches, worker start
            for r in range(args.rounds):
                for p, vector_env in built.items():
                    rates[p].append(window(vector_env, num_envs, args.seconds, rng))
                    print(f"  E={num_envs} round {r} {p}: {rates[p][-1]:.0f} env steps/s",
                          flush=True)
            for p in args.paths:
                table[p][num_envs] = statistics.median(rates[p])
        finally:
            for vector_env in built.values():
                vector_env.close()
    print(f"\n{args.env}: env steps/s (median of {args.rounds} windows of {args.seconds:g} s; "
          "frames/s = 4x)")
    rows = [[p, *(f"{table[p][e]:.0f}" for e in args.num_envs)] for p in args.paths]
    print(common.markdown_table(["path", *(f"E={e}" for e in args.num_envs)], rows))
    print(common.machine())


if __name__ == "__main__":
    main()
