"""Config validation, presets, the command line and the saved-config round trip."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from launch import cli
from rl import config as config_lib
from rl import presets
from rl.config import AgentConfig, Config, ConfigError, EnvConfig, ReplayConfig, TrainingConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("build, field, value", [
    (lambda: AgentConfig(gamma=1.0), "agent.gamma", 1.0),
    (lambda: AgentConfig(n_step=0), "agent.n_step", 0),
    (lambda: AgentConfig(learning_rate=-1e-4), "agent.learning_rate", -1e-4),
    (lambda: AgentConfig(munchausen_clip=0.5), "agent.munchausen_clip", 0.5),
    (lambda: AgentConfig(epsilon_off_fraction=0.0), "agent.epsilon_off_fraction", 0.0),
    (lambda: EnvConfig(num_envs=0), "env.num_envs", 0),
    (lambda: EnvConfig(frame_stack=2.5), "env.frame_stack", 2.5),
    (lambda: ReplayConfig(priority_exponent=1.5), "replay.priority_exponent", 1.5),
    (lambda: TrainingConfig(replay_ratio=0.0), "training.replay_ratio", 0.0),
    (lambda: TrainingConfig(batch_size=True), "training.batch_size", True),
    (lambda: Config(seed=-1), "seed", -1),
    (lambda: Config(replay=ReplayConfig(capacity=20)), "replay.capacity", 20),
])
def test_invalid_values_name_field_value_and_range(build, field, value):
    with pytest.raises(ConfigError) as info:
        build()
    assert info.value.field == field
    assert info.value.value == value
    assert field in str(info.value) and repr(value) in str(info.value)


def test_presets_are_valid_and_distinct():
    btr, plain = presets.get("iqn_btr"), presets.get("iqn")
    assert btr.agent.munchausen and btr.network.spectral_norm and btr.replay.prioritized
    assert btr.network.torso == "impala" and btr.network.width_scale == 2
    assert (btr.agent.gamma, btr.agent.n_step, btr.agent.learning_rate) == (0.997, 3, 1e-4)
    assert btr.agent.target_update_period == 500 and btr.training.replay_ratio == 1 / 64
    assert not (plain.agent.munchausen or plain.network.spectral_norm or plain.replay.prioritized)
    assert not plain.network.noisy


def test_unknown_preset_suggests_close_match():
    with pytest.raises(ConfigError, match="did you mean 'iqn_btr'"):
        presets.get("iqn_bt")


def test_config_round_trip(tmp_path):
    cfg = presets.replace(presets.get("iqn"), env=dict(id="CartPole-v1", reward_clip=None),
                          network=dict(mlp_hidden=(32, 16)))
    config_lib.save(cfg, tmp_path / "config.json")
    assert '"mlp_hidden": [\n' in (tmp_path / "config.json").read_text()  # readable text
    assert config_lib.load(tmp_path / "config.json") == cfg


def test_load_rejects_unknown_and_invalid_fields(tmp_path):
    data = config_lib.to_dict(presets.get("iqn"))
    data["agent"]["gamma"] = 2.0
    (tmp_path / "bad.json").write_text(__import__("json").dumps(data))
    with pytest.raises(ConfigError, match="agent.gamma"):
        config_lib.load(tmp_path / "bad.json")
    data["agent"]["gamma"] = 0.9
    data["agent"]["gama"] = 0.9
    (tmp_path / "bad.json").write_text(__import__("json").dumps(data))
    with pytest.raises(ConfigError, match="agent.gama"):
        config_lib.load(tmp_path / "bad.json")


def test_cli_daily_flags_and_overrides():
    inv = cli.parse(["--algo=iqn", "--env", "CartPole-v1", "--total-steps", "1234", "--seed", "7",
                     "--run-dir", "runs/x", "--agent.learning-rate", "3e-4",
                     "--network.mlp-hidden", "8", "8"])
    cfg = inv.config
    assert cfg.algo == "iqn" and cfg.env.id == "CartPole-v1"
    assert cfg.training.total_steps == 1234 and cfg.seed == 7 and cfg.logging.run_dir == "runs/x"
    assert cfg.agent.learning_rate == 3e-4 and cfg.network.mlp_hidden == (8, 8)
    assert inv.resume_dir is None


def test_cli_resume_reloads_saved_config(tmp_path):
    saved = presets.replace(presets.get("iqn"), env=dict(id="CartPole-v1"))
    config_lib.save(saved, tmp_path / "config.json")
    inv = cli.parse(["--resume", str(tmp_path), "--total-steps", "999"])
    assert inv.resume_dir == tmp_path
    assert inv.config == dataclasses.replace(
        presets.replace(saved, logging=dict(run_dir=str(tmp_path))),
        training=dataclasses.replace(saved.training, total_steps=999))
    with pytest.raises(ConfigError, match="cannot change on --resume"):
        cli.parse(["--resume", str(tmp_path), "--algo", "iqn_btr"])


def _run(*args):
    return subprocess.run([sys.executable, str(ROOT / "launch" / "run.py"), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize("args, needle", [
    (["--algo", "rainbowz"], "algo='rainbowz'"),
    (["--env", "CartPol-v1"], "CartPole-v1"),
    (["--agent.gamma", "1.5"], "agent.gamma=1.5"),
    (["--training.batch-size", "abc"], "abc"),
    (["--total-steps", "0"], "training.total_steps=0"),
    (["--algo", "iqn_btr", "--env", "CartPole-v1"], "network.torso='impala'"),
])
def test_run_rejects_bad_input_before_work(tmp_path, args, needle):
    result = _run(*args, "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
