"""Files from another person's run directory run no code and read nothing elsewhere: a
config.json's path fields must stay inside its run directory (or be given on the command
line), and crafted pickles in a trajectory or a demo file are refused without running."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from envs.demos import DemoError, load_episode
from envs.trackmania.reward import load_trajectory
from launch import cli
from rl import config as config_lib
from rl import presets
from rl.config import ConfigError


class TouchOnLoad:
    """Unpickling this creates ``marker``: the proof that a loader ran code from a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def saved_run(run_dir: Path, base: str = "dqn", **sections) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    config_lib.save(presets.replace(presets.get(base), **sections), run_dir / "config.json")
    return run_dir


@pytest.mark.parametrize("base, sections, field", [
    ("dqn", dict(demos=dict(path="/etc")), "demos.path"),
    ("dqn", dict(expert=dict(kind="checkpoint", source="../someone-else")), "expert.source"),
    ("tqc_tm20", dict(trackmania=dict(trajectory="/root/reward.pkl")), "trackmania.trajectory"),
])
def test_a_path_field_of_a_saved_config_must_stay_inside_its_run_directory(
        tmp_path, base, sections, field):
    run_dir = saved_run(tmp_path / "run", base, **sections)
    with pytest.raises(ConfigError, match=rf"{field}.*outside the run directory; pass "
                                          rf"--{field.replace('_', '-')}"):
        cli.parse(["--resume", str(run_dir)])
    section, name = field.split(".")

    def value_of(*flags):
        return getattr(getattr(cli.parse(["--resume", str(run_dir), *flags]).config, section),
                       name)

    outside = sections[section][name]
    assert value_of(f"--{field}", outside) == outside  # confirmed on the command line
    inside = str(run_dir / "files")  # inside the run directory: accepted as saved
    saved_run(run_dir, base, **{**sections, section: {**sections[section], name: inside}})
    assert value_of() == inside


def test_a_scripted_expert_read_from_a_file_may_only_name_this_projects_modules(tmp_path):
    run_dir = saved_run(tmp_path / "run", expert=dict(kind="scripted", source="os:getcwd"))
    with pytest.raises(ConfigError, match=r"expert.source.*'os:getcwd'.*module read from"):
        cli.parse(["--resume", str(run_dir)])
    assert cli.parse(["--resume", str(run_dir), "--expert.source", "os:getcwd"])
    saved_run(run_dir, expert=dict(kind="scripted", source="envs.scripted:cartpole"))
    assert cli.parse(["--resume", str(run_dir)]).config.expert.source == \
        "envs.scripted:cartpole"


def test_a_crafted_trajectory_pickle_is_refused_without_running_it(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "reward.pkl"
    path.write_bytes(pickle.dumps(TouchOnLoad(marker)))
    pickle.loads(path.read_bytes())  # the file does run code when pickle loads it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ValueError, match=r"refusing to load pathlib.*Path"):
        load_trajectory(path)
    assert not marker.exists()
    np.save(tmp_path / "ok.npy", np.zeros((3, 3)))
    assert load_trajectory(tmp_path / "ok.npy").shape == (3, 3)


def test_a_demo_file_with_a_pickled_object_is_refused_without_running_it(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "episode_000000.npz"
    with open(path, "wb") as f:
        np.savez(f, obs=np.array([TouchOnLoad(marker)], dtype=object))
    with pytest.raises(DemoError, match="not a readable demo episode"):
        load_episode(path)
    assert not marker.exists()
    with np.load(path, allow_pickle=True) as data:  # what an unsafe loader would do
        data["obs"]
    assert marker.exists()
    os.remove(marker)
