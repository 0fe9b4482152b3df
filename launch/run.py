"""Train an agent: ``python launch/run.py --algo=iqn_btr [--env ID] [--resume RUN_DIR]``.

Parses the command line, checks the env, demos and expert, sets up the run directory and
hands over to the loop (``launch/loop.py``): an actor stepping the env workers and a learner
holding the train state and device replay, taking turns (``--actors.mode lockstep``) or side
by side (``bounded``, ``realtime``). Ctrl-C saves a checkpoint and exits.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np
import tqdm

import envs
from launch import cli, multihost, ray_actors, video, wandb_log
from launch.checkpoint import NoUsableCheckpoint
from launch.experts import build_expert
from launch.loop import EXIT_GAME_LOST, train
from nets import resolve_torso
from rl import config as config_lib
from rl import sharding
from rl.config import Config, ConfigError

log = logging.getLogger("launch")


class _TqdmHandler(logging.Handler):
    def emit(self, record):
        tqdm.tqdm.write(self.format(record), file=sys.stderr)


def _setup_logging(run_dir: Path) -> None:
    log.setLevel(logging.INFO)
    log.handlers.clear()
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    for handler in (_TqdmHandler(), logging.FileHandler(run_dir / "console.log")):
        handler.setFormatter(fmt)
        log.addHandler(handler)


def default_run_dir(config: Config) -> Path:
    """runs/<algo>-<env>-s<seed>-<YYYYmmdd-HHMMSS>, with '/' in env ids replaced."""
    env = config.env.id.replace("/", "_")
    return Path("runs") / f"{config.algo}-{env}-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


CPU_PRESET_HINT = (
    "on a CPU, --algo iqn_cpu is the preset that learns CarRacing-v3 in under an hour: on 2 "
    "cores its mean evaluation return (10 episodes) passed 700 within 32 minutes (40k-60k env "
    "steps) in 3 of 3 seeds and reached 785-873 at 60k (README, 'A policy that drives'); this "
    "preset's Impala network takes about 0.8 s per grad step at batch 32 and 7 s at batch 256 "
    "there")
"""What the main command (``--algo iqn_btr`` on CarRacing) says at start on a CPU."""


def cpu_preset_hint(config: Config, backend: str) -> str | None:
    """:data:`CPU_PRESET_HINT` for ``iqn_btr`` on CarRacing-v3 on JAX backend ``backend``
    ("cpu"), else None."""
    if config.algo == "iqn_btr" and config.env.id == "CarRacing-v3" and backend == "cpu":
        return CPU_PRESET_HINT
    return None


def load_demo_slots(config: Config, spec: envs.EnvSpec) -> dict[str, np.ndarray] | None:
    """The replay slots of ``demos.path`` (``envs.demo_slots``), or None without demos.

    Raises:
      DemoError: unusable demo files (see ``envs.load_demos``).
      ConfigError: the demos (times injection_repeat) need more slots per stream than the
        replay holds, so they would overwrite each other.
    """
    demos = config.demos
    if demos.path is None:
        return None
    episodes = envs.load_demos(demos.path, spec, frame_skip=config.env.frame_skip)
    slots = envs.demo_slots(episodes, spec, config.env.num_envs, repeat=demos.injection_repeat,
                            reward_scale=config.env.reward_scale,
                            reward_clip=config.env.reward_clip)
    per_stream = config.replay.capacity // config.env.num_envs
    if len(slots["valid"]) > per_stream:
        raise ConfigError("demos.path", demos.path,
                          f"holds {len(episodes)} episodes that, injected "
                          f"{demos.injection_repeat} times, take {len(slots['valid'])} slots per "
                          f"env stream; the replay holds {per_stream} per stream "
                          "(replay.capacity / env.num_envs): raise replay.capacity or lower "
                          "demos.injection_repeat")
    return slots


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, resolve the env's auto fields (``resolve_env_auto``), set up
    the run directory and train (or, with --print-config, print the resolved config as
    JSON). Returns the exit code: 0 done, 2 bad input (one message on stderr), 3 the Ray
    cluster of actors.ray_address cannot be reached or the learner processes could not
    join at learner.coordinator_address (before any work), the W&B run could not start
    (logging.wandb_project; before any training step), --resume found no checkpoint
    that restores, the game or the Ray actors were lost (after checkpointing), or
    checkpoints could not be saved (training.max_failed_saves), 4 diverged, 130
    interrupted after checkpointing."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        invocation = cli.parse(argv)
        config = invocation.config
        learner = config.learner
        if config.logging.video_interval:
            video.check_installed(f"logging.video_interval={config.logging.video_interval}")
        if learner.process_id == 0:  # the only one that logs to W&B
            wandb_log.require(config.logging)
        if learner.num_processes > 1 and invocation.resume_dir is None \
                and config.logging.run_dir is None:
            raise ConfigError("logging.run_dir", None, "must be set with learner.num_processes"
                              " > 1: every process names the same run directory")
        multihost.initialize(learner)  # before anything uses a device
        envs.check_env_id(config.env.id, action_space=config.env.action_space)
        spec = envs.env_spec(config.env.id, **envs.make_kwargs(config))
        # Before printing and saving: config.json, and so a resumed run, holds numbers.
        config = config_lib.resolve_env_auto(config, spec.is_image)
        if invocation.print_config:
            print(json.dumps(config_lib.to_dict(config), indent=2))
            return 0
        resolve_torso(config.network.torso, spec.is_image)
        sharding.learner_mesh(config.learner, config.training.batch_size)  # the devices exist
        if spec.continuous != (config.agent.learner == "tqc"):
            kind = "continuous" if spec.continuous else "discrete"
            raise ConfigError("agent.learner", config.agent.learner,
                              f"does not fit {config.env.id} with {kind} actions: tqc needs "
                              "continuous actions, iqn / c51 / dqn discrete ones (see "
                              "env.action_space)")
        demo_slots = load_demo_slots(config, spec)
        expert = build_expert(config, spec)
        run_dir = invocation.resume_dir or Path(config.logging.run_dir or default_run_dir(config))
        if invocation.resume_dir is None and learner.process_id == 0 \
                and (run_dir / "config.json").exists():
            raise ConfigError("logging.run_dir", str(run_dir),
                              "already holds a run; continue it with --resume "
                              f"{run_dir} or pick another --run-dir")
        if config.actors.resolved_backend(config.env.id) == "ray":
            ray_actors.connect(config.actors)  # the cluster answers, before any work
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as e:
        # ConfigError, EnvIdError, torso mismatch, Ray not installed
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ray_actors.ClusterUnreachable, multihost.CoordinatorUnreachable) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_GAME_LOST
    if config.learner.process_id == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        config_lib.save(config, run_dir / "config.json")
        _setup_logging(run_dir)
    else:  # the run is process 0's; this process logs beside it
        (run_dir / f"process_{config.learner.process_id}").mkdir(parents=True, exist_ok=True)
        _setup_logging(run_dir / f"process_{config.learner.process_id}")
    log.info("run directory %s (tensorboard --logdir %s)", run_dir, run_dir.parent)
    hint = cpu_preset_hint(config, jax.default_backend())
    if hint and config.learner.process_id == 0:
        log.info("%s", hint)
    try:
        wandb_run = wandb_log.start(config, run_dir) if config.learner.process_id == 0 else None
        return train(config, spec, run_dir, resume_run=invocation.resume_dir is not None,
                     demo_slots=demo_slots, expert=expert, wandb_run=wandb_run)
    except (NoUsableCheckpoint, wandb_log.WandbUnavailable) as e:
        log.error("%s", e)
        return EXIT_GAME_LOST


if __name__ == "__main__":
    sys.exit(main())
