"""Record demonstration episodes from a policy into the demo format (``envs/demos.py``).

    python launch/record_demos.py --algo tqc_tm20 --policy random --episodes 20 --out demos/car
    python launch/record_demos.py --algo dqn --env CartPole-v1 --policy envs.scripted:cartpole \\
        --episodes 10 --out demos/cartpole

The env is built from the resolved config exactly as ``launch/run.py`` builds it (env id, action
space, frame skip, image size, episode limit; ``--algo`` and every ``--section.field`` override
work as there), so train with the same preset and ``--demos.path OUT``. Files are numbered after
the ones already in OUT; none is overwritten.

``--policy``: ``random`` (uniform actions) or ``module:function``, a function of the stacked
observations ``[B, frame_stack, *frame_shape]`` returning B actions (see ``envs/scripted.py``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import tqdm

import envs
from envs.demos import EpisodeSplitter, episode_path, save_episode
from launch import cli
from rl.config import Config


def load_policy(name: str, spec: envs.EnvSpec, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """``random`` or an imported ``module:function``, as ``policy(obs) -> actions``: ``obs`` the
    stacked observations [B, frame_stack, *frame_shape], actions [B, *spec.action_shape]
    (int32 in [0, num_actions), or float32 in [-1, 1]). ``random`` draws uniformly, seeded by
    ``seed``.

    Raises:
      ValueError: the name has no ``:``, the module does not import or has no such function.
    """
    if name == "random":
        rng = np.random.default_rng(seed)

        def random_policy(obs: np.ndarray) -> np.ndarray:
            if spec.continuous:
                return rng.uniform(-1.0, 1.0, (obs.shape[0], *spec.action_shape)).astype(np.float32)
            return rng.integers(0, spec.num_actions, obs.shape[0]).astype(np.int32)

        return random_policy
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--policy {name!r}: must be 'random' or 'module:function', e.g. "
                         "envs.scripted:cartpole")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"--policy {name!r}: cannot import module {module_name!r} ({e})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"--policy {name!r}: module {module_name!r} has no function {attr!r}")
    return fn


def record(config: Config, policy_name: str, num_episodes: int, out: Path,
           num_envs: int = 1) -> list[tuple[Path, float]]:
    """Run ``policy_name`` on the config's env until ``num_episodes`` episodes have ended and
    write each to ``out`` (created if needed).

    Returns ``(path, raw return)`` of each written episode, in order.

    Raises:
      ValueError: a bad policy name (:func:`load_policy`), env settings ``envs.make_env``
        refuses, or actions the collector refuses (wrong shape).
    """
    env_cfg = config.env
    make_kwargs = dict(frame_skip=env_cfg.frame_skip, image_size=env_cfg.image_size,
                       max_episode_steps=env_cfg.max_episode_steps,
                       action_space=env_cfg.action_space)
    spec = envs.env_spec(env_cfg.id, **make_kwargs)
    policy = load_policy(policy_name, spec, config.seed)
    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob("episode_*.npz"))
    next_index = int(existing[-1].stem.split("_")[-1]) + 1 if existing else 0
    meta = dict(env_id=env_cfg.id, frame_skip=env_cfg.frame_skip, image_size=env_cfg.image_size,
                action_space="continuous" if spec.continuous else "discrete",
                max_episode_steps=env_cfg.max_episode_steps, source=f"policy {policy_name}")
    vector_env = envs.make_vector_env(env_cfg.id, num_envs, asynchronous=False, seed=config.seed,
                                      **make_kwargs)
    collector = envs.Collector(vector_env, spec, env_cfg.frame_stack, reward_clip=None)
    splitter = EpisodeSplitter(num_envs, meta)
    written: list[tuple[Path, float]] = []
    bar = tqdm.tqdm(total=num_episodes, unit="episode", dynamic_ncols=True)
    try:
        collector.reset(seed=config.seed)
        while len(written) < num_episodes:
            slot, _ = collector.step(np.asarray(policy(collector.stacked_obs)))
            for _, episode in splitter.push(slot):
                if len(written) == num_episodes:
                    break
                path = episode_path(out, next_index + len(written))
                save_episode(path, episode)
                written.append((path, episode.return_))
                bar.update(1)
                bar.set_postfix(length=episode.length, ret=f"{episode.return_:.1f}")
    finally:
        bar.close()
        collector.close()
    return written


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and record. Returns 0, or 2 on bad input (one message)."""
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip() + "\n\nFlags: --policy (default random), --episodes N (default 10), "
              "--out DIR (required), --num-envs E (default 1), and the env fields of "
              "launch/run.py --help.")
        return 0
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--policy", default="random")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--out")
    parser.add_argument("--num-envs", type=int, default=1)
    own, rest = parser.parse_known_args(argv)
    try:
        if own.out is None:
            raise ValueError("--out DIR is required: the directory the episodes are written to")
        if own.episodes < 1 or own.num_envs < 1:
            raise ValueError(f"--episodes and --num-envs must be >= 1, got {own.episodes}, "
                             f"{own.num_envs}")
        config = cli.parse(rest, prog="launch/record_demos.py").config
        envs.check_env_id(config.env.id, action_space=config.env.action_space)
        written = record(config, own.policy, own.episodes, Path(own.out), own.num_envs)
    except ValueError as e:  # ConfigError, EnvIdError, DemoError, a bad policy
        print(f"error: {e}", file=sys.stderr)
        return 2
    returns = [r for _, r in written]
    print(f"wrote {len(written)} episodes to {own.out} (return {np.mean(returns):.2f} +- "
          f"{np.std(returns):.2f}); train on them with --demos.path {own.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
