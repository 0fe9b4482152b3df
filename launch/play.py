"""Watch a trained agent: ``python launch/play.py RUN_DIR [--checkpoint C] [--episodes N]
[--video FILE.mp4] [--env ID]``.

Loads the run's config (RUN_DIR/config.json) and one of its checkpoints and plays the greedy
policy (noise off, ``agent.eval_epsilon``), one episode after another on a fresh env
(episode i seeded seed + i), printing each episode's return and length and then the means.
No learning. TrackMania is played in real time through the same guarded worker and watchdog
as in training. ``--video`` writes every picture of the episodes to one MP4 file.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np

import envs
from launch import cli, video
from launch.actor import make_act
from launch.evaluation import greedy_episodes
from launch.experts import CheckpointNotFound, RestoredPolicy, input_differences, restore_policy
from launch.loop import EXIT_GAME_LOST
from rl import config as config_lib
from rl import presets
from rl.config import Config

DESCRIPTION = """Play a run's greedy policy and print each episode's return and length:
  launch/play.py RUN_DIR [flags]   RUN_DIR: a run directory of launch/run.py (first)
  --checkpoint C     best | best_train | latest | an env step of RUN_DIR/checkpoints;
                     default: best, else best_train, else latest
  --episodes N       episodes to play, one after another (default 3)
  --video FILE.mp4   write the episodes to one MP4 video (the [video] extra)
  --env ID           play on another env id whose observations and actions match the run's
  --seed S           episode i is seeded S + i (default: the run's seed)

Every field of the run's config can be overridden too, e.g. --env.max-episode-steps 200 or
--trackmania.backend standin (fields the policy's inputs depend on must stay as trained)."""


@dataclasses.dataclass(frozen=True)
class Request:
    """A parsed command line of play.py."""

    run_dir: Path
    saved: Config
    """The run's config, as trained."""
    config: Config
    """What is played: the saved config with --env, --seed and the field overrides."""
    checkpoint: str | None
    """A name of ``launch.experts.CHECKPOINT_NAMES``, an env step, or None (best first)."""
    episodes: int
    video: Path | None


def _flags() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--checkpoint")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--video")
    parser.add_argument("--env")
    parser.add_argument("--seed", type=int)
    return parser


def parse(argv: list[str]) -> Request:
    """The command line as a :class:`Request`.

    Raises:
      ValueError: no RUN_DIR first, --episodes < 1, a --video that is not an .mp4 file;
        ConfigError: invalid overrides (see ``launch.cli.override``).
      FileNotFoundError: RUN_DIR has no config.json.
      SystemExit: --help (0) and tyro's or argparse's own errors (2).
    """
    if not argv or argv[0].startswith("-"):
        if "-h" in argv or "--help" in argv:
            cli.override(presets.get("iqn_btr"), ["--help"], "launch/play.py RUN_DIR",
                         DESCRIPTION)
        raise ValueError("RUN_DIR: name a run directory of launch/run.py as the first argument")
    run_dir = Path(argv[0])
    flags, rest = _flags().parse_known_args(argv[1:])
    if flags.episodes < 1:
        raise ValueError(f"--episodes {flags.episodes}: must be an integer >= 1")
    if flags.video is not None and Path(flags.video).suffix.lower() != ".mp4":
        raise ValueError(f"--video {flags.video}: must name an .mp4 file")
    saved = cli.load_run_config(run_dir, "RUN_DIR")
    base = saved
    if flags.env is not None:
        base = presets.replace(base, env=dict(id=flags.env))
    if flags.seed is not None:
        base = dataclasses.replace(base, seed=flags.seed)
    config = cli.override(base, rest, "launch/play.py RUN_DIR", DESCRIPTION, run_dir)
    return Request(run_dir=run_dir, saved=saved, config=config, checkpoint=flags.checkpoint,
                   episodes=flags.episodes, video=Path(flags.video) if flags.video else None)


def _spaces(spec: envs.EnvSpec) -> str:
    """The observations and actions of ``spec`` in words (equal words: equal spaces)."""
    frames = f"{np.dtype(spec.frame_dtype)}{list(spec.frame_shape)}"
    features = f" + {spec.feature_size} features" if spec.feature_size else ""
    actions = (f"continuous actions {list(spec.action_shape)}" if spec.continuous
               else f"{spec.num_actions} discrete actions")
    return f"observations {frames}{features}, {actions}"


def load(request: Request) -> tuple[Config, envs.EnvSpec, RestoredPolicy]:
    """(config played, its env spec, the restored policy), checked to fit each other.

    Raises:
      ValueError: the played env's observations or actions differ from the run's (naming
        both), a field the policy's inputs depend on was overridden, the checkpoint asked
        for does not exist (listing those that do), --video of TrackMania's lidar
        interfaces (no pictures); EnvIdError for an unknown env id.
    """
    saved, config = request.saved, request.config
    saved_spec = envs.env_spec(saved.env.id, **envs.make_kwargs(saved))
    envs.check_env_id(config.env.id, action_space=config.env.action_space)
    spec = envs.env_spec(config.env.id, **envs.make_kwargs(config))
    saved = config_lib.resolve_env_auto(saved, saved_spec.is_image)
    config = config_lib.resolve_env_auto(config, spec.is_image)
    for field, theirs, ours in input_differences(saved, config):
        if field != "env.id":  # another id with the same spaces is fine (checked below)
            raise ValueError(f"--{field.replace('_', '-')} {ours!r}: the run {request.run_dir} "
                             f"was trained with {field}={theirs!r}; its policy needs the "
                             "inputs it was trained on")
    if _spaces(spec) != _spaces(saved_spec):
        raise ValueError(f"--env {config.env.id}: it has {_spaces(spec)}; the run "
                         f"{request.run_dir} was trained on {saved.env.id} with "
                         f"{_spaces(saved_spec)}: play it on an env with the same spaces")
    if request.video is not None and envs.is_trackmania(config.env.id) and not spec.is_image:
        raise ValueError(f"--video {request.video}: trackmania.interface "
                         f"{config.trackmania.interface} observes lidar beams, not pictures: "
                         "videos of TrackMania need the images interface")
    try:
        restored = restore_policy(request.run_dir, saved, saved_spec, request.checkpoint)
    except CheckpointNotFound as e:
        raise ValueError(f"{request.run_dir} {e}") from None
    return config, spec, restored


def play(request: Request, config: Config, spec: envs.EnvSpec, restored: RestoredPolicy
         ) -> list[envs.EpisodeStats]:
    """Play the episodes, printing each one's return and length and then the means, and
    write the video. Returns the episodes.

    Raises:
      GameConnectionError: TrackMania's game was lost.
    """
    act, state = make_act(restored.agent), restored.state
    key = jax.random.PRNGKey(config.seed)
    history = config.network.action_history
    # Compiled now: a first call inside a real-time step (TrackMania) would be late.
    act(state, envs.zeros_obs(spec, (1, config.env.frame_stack)),
        np.full((1, history), -1, np.int32) if history else None, key, 0,
        config.agent.eval_epsilon, noisy=False)
    fps = envs.frame_rate(spec, frame_skip=config.env.frame_skip, trackmania=config.trackmania)
    episodes = []
    count = f"{request.episodes} episode" + ("s" if request.episodes > 1 else "")
    print(f"playing {count} of {config.env.id}", flush=True)
    with (video.Mp4Writer(request.video, fps) if request.video else
          contextlib.nullcontext()) as mp4:
        record = (lambda _, picture: mp4.append(picture)) if mp4 else None
        for i in range(request.episodes):
            episode, = greedy_episodes(act, state, config, jax.random.fold_in(key, i),
                                       num_episodes=1, seed=config.seed + i, on_frame=record)
            episodes.append(episode)
            print(f"episode {i + 1}/{request.episodes}: return {episode.return_:.2f}, "
                  f"length {episode.length}", flush=True)
    print(f"mean return {np.mean([e.return_ for e in episodes]):.2f}, mean length "
          f"{np.mean([e.length for e in episodes]):.1f} over {count}")
    if mp4:
        print(f"video: {request.video} ({mp4.frames} frames at {fps:g} fps)")
    return episodes


def main(argv: list[str] | None = None) -> int:
    """Parse, load and play. Returns the exit code: 0 done, 2 bad input (one ``error:``
    line on stderr: no config.json or no such checkpoint in RUN_DIR, an env whose spaces
    do not fit, the [video] extra missing for --video, ...), 3 TrackMania's game was lost,
    130 interrupted (the video so far is kept)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        request = parse(argv)
        if request.video is not None:
            video.check_installed("--video")
        config, spec, restored = load(request)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"checkpoint: {restored.checkpoint} in {request.run_dir}"
          + ("" if request.checkpoint else " (the default: best, else best_train, else latest)"),
          flush=True)
    try:
        play(request, config, spec, restored)
    except envs.GameConnectionError as e:
        print(f"error: game connection lost: {e}", file=sys.stderr)
        return EXIT_GAME_LOST
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
