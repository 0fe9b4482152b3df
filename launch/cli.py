"""Command line -> validated Config: preset (--algo) or a resumed run, then field overrides."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import tyro

from rl import config as config_lib
from rl import presets
from rl.config import Config, ConfigError

DESCRIPTION = """Train an agent. Everyday flags:
  --algo NAME        preset to start from ({presets}); default iqn_btr
  --env ID           gymnasium env id (env.id), e.g. CarRacing-v3, CartPole-v1, ALE/Pong-v5
  --total-steps N    env steps to train for (training.total_steps)
  --seed S           seed of everything (seed)
  --run-dir DIR      where the run is written (logging.run_dir)
  --resume RUN_DIR   continue a run from its latest checkpoint with its saved config
  --print-config     print the resolved config as JSON and exit (diff two presets with it;
                     env.frame_stack / env.reward_clip auto show the env's values)
  --on-divergence A  warn | stop | rollback when the health monitor sees divergence
                     (health.on_divergence; flags and thresholds: --health.*)
  --actors.mode M    lockstep | bounded | realtime | auto: acting and learning take turns,
                     or run side by side holding the replay ratio, or never holding the
                     actor (auto: realtime on TrackMania, bounded elsewhere)
  --actors.backend B thread | process | auto: the concurrent actor in a thread or in a child
                     process (auto: a process in realtime mode)
  --expert.kind K --expert.source S
                     expert curriculum: scripted module:function, checkpoint RUN_DIR or
                     playback DEMO_DIR takes a decaying share of the steps (docs/expert.md)
Every config field below can be overridden too, e.g. --agent.learning-rate 3e-4."""


FILE_PATH_FIELDS = ("demos.path", "expert.source", "trackmania.trajectory")
"""Fields that make a run read files (or, ``expert.source`` of a scripted expert, import a
module): read from another run's config.json they must stay inside that run directory, or be
given on the command line (:func:`check_paths_from_file`)."""
OWN_EXPERT_MODULES = ("envs.scripted",)
"""Modules of this project a scripted ``expert.source`` read from a file may name."""


@dataclasses.dataclass(frozen=True)
class Invocation:
    """A parsed command line: the resolved config, the run directory when resuming, and
    whether only to print the config."""

    config: Config
    resume_dir: Path | None
    print_config: bool = False


def _daily_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--algo")
    parser.add_argument("--env")
    parser.add_argument("--total-steps", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--run-dir")
    parser.add_argument("--resume")
    parser.add_argument("--print-config", action="store_true")
    parser.add_argument("--on-divergence")
    return parser


def parse(argv: list[str], prog: str = "launch/run.py") -> Invocation:
    """Resolve the command line into a Config.

    The base is the preset named by ``--algo`` or, with ``--resume RUN_DIR``, the config saved
    in RUN_DIR/config.json; the everyday flags and then any ``--section.field`` overrides are
    applied on top and validated.

    Raises:
      ConfigError: unknown preset, invalid value, an unreadable saved config, or a path
        field of the saved config that points outside RUN_DIR
        (:func:`check_paths_from_file`).
      FileNotFoundError: --resume names a directory without config.json.
      SystemExit: tyro's own errors (wrong type, unknown flag) and --help, exit code 2 / 0.
    """
    daily, rest = _daily_parser().parse_known_args(argv)
    resume_dir = Path(daily.resume) if daily.resume else None
    if resume_dir is not None:
        base = load_run_config(resume_dir, "--resume")
        if daily.algo is not None and daily.algo != base.algo:
            raise ConfigError("algo", daily.algo, f"cannot change on --resume (the run used "
                                                  f"{base.algo!r})")
        base = presets.replace(base, logging=dict(run_dir=str(resume_dir)))
    else:
        base = presets.get(daily.algo or "iqn_btr")
    if daily.env is not None:
        base = presets.replace(base, env=dict(id=daily.env))
    if daily.total_steps is not None:
        base = presets.replace(base, training=dict(total_steps=daily.total_steps))
    if daily.seed is not None:
        base = dataclasses.replace(base, seed=daily.seed)
    if daily.run_dir is not None:
        base = presets.replace(base, logging=dict(run_dir=daily.run_dir))
    if daily.on_divergence is not None:
        base = presets.replace(base, health=dict(on_divergence=daily.on_divergence))
    description = DESCRIPTION.format(presets=", ".join(sorted(presets.PRESETS)))
    config = override(base, rest, prog, description, resume_dir)
    return Invocation(config=config, resume_dir=resume_dir, print_config=daily.print_config)


def load_run_config(run_dir: Path, flag: str) -> Config:
    """The config.json of a run directory named by ``flag`` (e.g. ``--resume``).

    Raises:
      FileNotFoundError: there is no config.json in ``run_dir``.
      ConfigError: it is unreadable or holds invalid values.
    """
    saved = Path(run_dir) / "config.json"
    if not saved.is_file():
        raise FileNotFoundError(f"{flag} {run_dir}: no config.json there; is it a run "
                                "directory written by launch/run.py?")
    return config_lib.load(saved)


def override(base: Config, args: list[str], prog: str, description: str,
             run_dir: Path | None = None) -> Config:
    """``base`` with the ``--section.field VALUE`` overrides of ``args`` applied and
    validated (tyro; ``--help`` prints every field with ``description``). With ``run_dir``,
    ``base`` was read from that run directory: its path fields are checked
    (:func:`check_paths_from_file`).

    Raises:
      ConfigError: a removed field, an invalid value, or a path field of ``run_dir``'s
        config pointing outside it.
      SystemExit: tyro's own errors (wrong type, unknown flag) and --help, exit code 2 / 0.
    """
    for arg in args:
        field = arg.removeprefix("--").split("=")[0].replace("-", "_")
        if arg.startswith("--") and field in config_lib.REMOVED_FIELDS:
            raise ConfigError(field, arg, config_lib.REMOVED_FIELDS[field])
    config = tyro.cli(Config, default=base, args=args, prog=prog, description=description)
    if run_dir is not None:
        given = {arg.removeprefix("--").split("=")[0].replace("-", "_") for arg in args
                 if arg.startswith("--")}
        check_paths_from_file(config, run_dir, given)
    return config


def check_paths_from_file(config: Config, run_dir: Path, given: set[str]) -> None:
    """Refuse what a run directory's config.json could make this run read or import from
    elsewhere: each :data:`FILE_PATH_FIELDS` field in use and not in ``given`` (the fields
    set on the command line, ``section.field``) must resolve inside ``run_dir``; a scripted
    expert's module must be one of :data:`OWN_EXPERT_MODULES`.

    Raises:
      ConfigError: naming the field, its value and the flag that confirms it.
    """
    used = {"demos.path": config.demos.path,
            "expert.source": None if config.expert.kind == "none" else config.expert.source,
            "trackmania.trajectory": config.trackmania.trajectory
            if config.env.id == "trackmania" else None}
    inside = run_dir.resolve()
    for name, value in used.items():
        if value is None or name in given:
            continue
        flag = "--" + name.replace("_", "-")
        if name == "expert.source" and config.expert.kind == "scripted":
            if value.split(":")[0] in OWN_EXPERT_MODULES:
                continue
            raise ConfigError(name, value, f"is a module read from {run_dir / 'config.json'}; "
                              f"a run directory may only name {list(OWN_EXPERT_MODULES)}: "
                              f"pass {flag} {value} on the command line to import it")
        if not Path(value).resolve().is_relative_to(inside):
            raise ConfigError(name, value, f"read from {run_dir / 'config.json'}, points "
                              f"outside the run directory; pass {flag} {value} on the "
                              "command line to read it (a run directory must not make a "
                              "run read files elsewhere)")
