"""Record demonstration episodes from a policy or a human driver into the demo format
(``envs/demos.py``).

    python launch/record_demos.py --algo tqc_tm20 --policy random --episodes 20 --out demos/car
    python launch/record_demos.py --algo dqn --env CartPole-v1 --policy envs.scripted:cartpole \\
        --episodes 10 --out demos/cartpole
    python launch/record_demos.py --algo tqc_tm20 --policy human --episodes 5 --out demos/tm

The env is built from the resolved config exactly as ``launch/run.py`` builds it (env id, action
space, frame skip, image size, episode limit; ``--algo`` and every ``--section.field`` override
work as there), so train with the same preset and ``--demos.path OUT``. Files are numbered after
the ones already in OUT; none is overwritten.

``--policy``: ``random`` (uniform actions), ``module:function``, a function of the stacked
observations ``[B, frame_stack, *frame_shape]`` (the observation pytree when the env has
features) returning B actions (see ``envs/scripted.py``), or ``human`` (TrackMania only).

``--policy human`` records a person driving TrackMania: the env is built passive (it never
sends controls; the reset sequence still respawns the car) and steps in real time, and the
person drives with their own keyboard or pad. Each recorded action a_t is the input the game
reported at capture time, 0.04 s into step t (``trackmania.start_obs_capture``), as
[gas, brake, steer] clipped to [-1, 1] (continuous), or the nearest
``trackmania.discrete_actions`` entry (:func:`envs.trackmania.driver_action`). The previous
actions in the observation features (``trackmania.action_history``) are rewritten to these
recorded actions, as the env would have shown them to an agent that took them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import tqdm

import envs
from envs.demos import EpisodeSplitter, episode_path, save_episode
from envs.trackmania import GameConnectionError, controls_table, driver_action, is_trackmania
from launch import cli
from launch.experts import load_policy
from rl.config import Config, resolve_env_auto


class HumanLabels:
    """Relabels the slots of a passive TrackMania run with what the human driver did.

    The env was stepped with dummy actions (zeros); :meth:`relabel` puts the driver's inputs
    in their place and rewrites the previous-action block of the features (the last 3h
    entries, h = ``trackmania.action_history``, oldest first) from those recorded actions:
    all zeros at an episode's reset frame (rtgym's default action), then the controls of the
    last h recorded actions (discrete: their ``controls_table`` rows, as the env sends them).

    Args:
      spec: the env's spec (TrackMania: ``feature_size`` = base + 3h).
      tm: the ``trackmania`` config section (``discrete_actions``, ``action_history``).
      num_envs: E.
    """

    def __init__(self, spec: envs.EnvSpec, tm: Any, num_envs: int):
        self.spec = spec
        self.controls = controls_table(tm.discrete_actions)
        self.h = tm.action_history
        self._history = np.zeros((num_envs, self.h, 3), np.float32)

    def relabel(self, slot: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
        """The slot of one passive step with the driver's actions and previous actions.

        Args:
          slot: :meth:`envs.Collector.step`'s slot (not modified), with the dummy actions.
          info: the step's vector info (``Collector.last_info``): ``driver_action`` float32
            [E, 3] = [gas, brake, steer] as the game reports them (gas, brake in [0, 1], steer
            in [-1, 1]), with gymnasium's ``_driver_action`` mask [E].

        Returns:
          A new slot: ``action`` [E, *action_shape] holds the driver's inputs where ``valid``
          (float32 clipped to [-1, 1], or int32 :func:`envs.trackmania.driver_action`
          indices); the autoreset slots (``valid`` False) keep the dummy. ``obs`` features
          carry the recorded previous actions.

        Raises:
          RuntimeError: a valid step without ``driver_action`` in ``info``.
        """
        valid = np.asarray(slot["valid"], bool)
        reported = np.asarray(info.get("_driver_action", np.zeros_like(valid)), bool)
        if (valid & ~reported).any():
            raise RuntimeError("the TrackMania env reported no driver_action for a step: cannot "
                               "record the human driver's inputs")
        action = np.array(slot["action"])
        controls = np.zeros((len(valid), 3), np.float32)
        for e in np.flatnonzero(valid):
            inputs = np.asarray(info["driver_action"][e], np.float32)
            if self.spec.continuous:
                action[e] = controls[e] = np.clip(inputs, -1.0, 1.0)
            else:
                action[e] = driver_action(self.controls, inputs)
                controls[e] = self.controls[action[e]]
        frames, features = envs.split_obs(self.spec, slot["obs"])
        features = np.array(features)
        if self.h:
            # o_t's buffer: the episode's last h actions before a_t (zeros from its reset).
            self._history[np.asarray(slot["steps_since_start"]) == 0] = 0.0
            features[:, features.shape[1] - 3 * self.h:] = self._history.reshape(len(valid), -1)
            self._history[valid] = np.concatenate(
                [self._history[valid, 1:], controls[valid, None]], axis=1)
        return dict(slot, action=action, obs=envs.join_obs(self.spec, frames, features))


def record(config: Config, policy_name: str, num_episodes: int, out: Path,
           num_envs: int = 1) -> list[tuple[Path, float]]:
    """Run ``policy_name`` on the config's env until ``num_episodes`` episodes have ended and
    write each to ``out`` (created if needed). ``human``: a person drives TrackMania (see the
    module docstring).

    Returns ``(path, raw return)`` of each written episode, in order.

    Raises:
      ValueError: a bad policy name (:func:`load_policy`), ``human`` on an env other than
        TrackMania, env settings ``envs.make_env`` refuses, or actions the collector refuses
        (wrong shape).
      envs.trackmania.GameConnectionError: the game cannot be reached or stops answering.
    """
    env_cfg = config.env
    make_kwargs = envs.make_kwargs(config)
    human = policy_name == "human"
    if human and not is_trackmania(env_cfg.id):
        raise ValueError(f"--policy human records a person driving TrackMania: it needs "
                         f"--env trackmania, got env.id={env_cfg.id!r}")
    spec = envs.env_spec(env_cfg.id, **make_kwargs)
    env_cfg = resolve_env_auto(config, spec.is_image).env  # frame_stack as a run here
    if human:
        labels = HumanLabels(spec, config.trackmania, num_envs)
        make_kwargs["passive"] = True

        def policy(_obs: Any) -> np.ndarray:  # the passive env never sends these
            return np.zeros((num_envs, *spec.action_shape), spec.action_dtype)
    else:
        policy = load_policy(policy_name, spec, config.seed)
    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob("episode_*.npz"))
    next_index = int(existing[-1].stem.split("_")[-1]) + 1 if existing else 0
    meta = dict(env_id=env_cfg.id, frame_skip=env_cfg.frame_skip, image_size=env_cfg.image_size,
                action_space="continuous" if spec.continuous else "discrete",
                max_episode_steps=env_cfg.max_episode_steps,
                source="human" if human else f"policy {policy_name}")
    vector_env = envs.make_vector_env(env_cfg.id, num_envs, asynchronous=False, seed=config.seed,
                                      **make_kwargs)
    collector = envs.Collector(vector_env, spec, env_cfg.frame_stack, reward_clip=None)
    splitter = EpisodeSplitter(num_envs, meta, spec)
    written: list[tuple[Path, float]] = []
    bar = tqdm.tqdm(total=num_episodes, unit="episode", dynamic_ncols=True)
    try:
        collector.reset(seed=config.seed)
        while len(written) < num_episodes:
            slot, _ = collector.step(np.asarray(policy(collector.stacked_obs)))
            if human:
                slot = labels.relabel(slot, collector.last_info)
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
        print(__doc__.strip() + "\n\nFlags: --policy (random, module:function or human; default "
              "random), --episodes N (default 10), "
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
    except (ValueError, GameConnectionError) as e:  # ConfigError, EnvIdError, DemoError, ...
        print(f"error: {e}", file=sys.stderr)
        return 2
    returns = [r for _, r in written]
    print(f"wrote {len(written)} episodes to {own.out} (return {np.mean(returns):.2f} +- "
          f"{np.std(returns):.2f}); train on them with --demos.path {own.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
