"""Config validation, presets, the command line and the saved-config round trip."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import envs
from launch import cli
from rl import config as config_lib
from rl import presets
from rl.config import (AgentConfig, Config, ConfigError, EnvConfig, NetworkConfig, ReplayConfig,
                       TrackmaniaConfig, TrainingConfig, resolve_env_auto)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("build, field, value", [
    (lambda: AgentConfig(gamma=1.0), "agent.gamma", 1.0),
    (lambda: AgentConfig(n_step=0), "agent.n_step", 0),
    (lambda: AgentConfig(learning_rate=-1e-4), "agent.learning_rate", -1e-4),
    (lambda: AgentConfig(munchausen_clip=0.5), "agent.munchausen_clip", 0.5),
    (lambda: AgentConfig(epsilon_off_fraction=0.0), "agent.epsilon_off_fraction", 0.0),
    (lambda: EnvConfig(num_envs=0), "env.num_envs", 0),
    (lambda: EnvConfig(frame_stack=2.5), "env.frame_stack", 2.5),
    (lambda: EnvConfig(frame_stack="four"), "env.frame_stack", "four"),
    (lambda: EnvConfig(frame_stack=0), "env.frame_stack", 0),
    (lambda: EnvConfig(reward_clip="off"), "env.reward_clip", "off"),
    (lambda: ReplayConfig(priority_exponent=1.5), "replay.priority_exponent", 1.5),
    (lambda: TrainingConfig(replay_ratio=0.0), "training.replay_ratio", 0.0),
    (lambda: TrainingConfig(batch_size=True), "training.batch_size", True),
    (lambda: TrainingConfig(max_failed_saves=0), "training.max_failed_saves", 0),
    (lambda: TrainingConfig(max_failed_saves=1.5), "training.max_failed_saves", 1.5),
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


def _main(capsys, *args):
    """launch/run.py's main in this process: (exit code, stderr). Cheaper than a subprocess
    (no second jax start-up); test_run_rejects_bad_input_in_a_real_process covers that path."""
    from launch import run

    try:
        code = run.main(list(args))
    except SystemExit as e:  # tyro's own parse errors
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args, needle", [
    (["--algo", "rainbowz"], "algo='rainbowz'"),
    (["--env", "CartPol-v1"], "CartPole-v1"),
    (["--agent.gamma", "1.5"], "agent.gamma=1.5"),
    (["--training.batch-size", "abc"], "abc"),
    (["--total-steps", "0"], "training.total_steps=0"),
    (["--training.max-failed-saves", "0"], "training.max_failed_saves=0"),
    (["--expert.kind", "scripted"], "expert.source=None"),
    (["--algo", "tempest_seed003", "--expert.source", "envs.scripted:nothing"],
     "no function 'nothing'"),
    # auto leaves CartPole's rewards unclipped, so the auto clamp has no r_max.
    (["--algo", "dqn", "--env", "CartPole-v1", "--agent.target-clamp", "auto"],
     "agent.target_clamp='auto': needs env.reward_clip (r_max), which auto leaves off"),
])
def test_run_rejects_bad_input_before_work(tmp_path, capsys, args, needle):
    code, stderr = _main(capsys, *args, "--run-dir", str(tmp_path / "run"))
    assert code == 2, stderr
    assert needle in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "run").exists()


def test_run_rejects_bad_input_in_a_real_process(tmp_path):
    result = _run("--algo", "iqn_btr", "--env", "CartPole-v1", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert "network.torso='impala'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


# --- validation of the learner, target, optimiser and network fields ------------------------

@pytest.mark.parametrize("build, field, value", [
    (lambda: AgentConfig(learner="ppo"), "agent.learner", "ppo"),
    (lambda: AgentConfig(learner="c51"), "agent.munchausen", True),   # munchausen on by default
    (lambda: AgentConfig(learner="dqn", munchausen=True), "agent.munchausen", True),
    (lambda: AgentConfig(learner="c51", munchausen=False, v_min=5.0, v_max=5.0),
     "agent.v_max", 5.0),
    (lambda: AgentConfig(v_min=0.0, v_max=-1.0), "agent.v_max", -1.0),
    (lambda: AgentConfig(num_atoms=1), "agent.num_atoms", 1),
    (lambda: AgentConfig(td_loss="l1"), "agent.td_loss", "l1"),
    (lambda: AgentConfig(target_clamp=-1.0), "agent.target_clamp", -1.0),
    (lambda: AgentConfig(target_clamp=0.0), "agent.target_clamp", 0.0),
    (lambda: AgentConfig(target_clamp="max"), "agent.target_clamp", "max"),
    (lambda: AgentConfig(target_update="never"), "agent.target_update", "never"),
    (lambda: AgentConfig(target_tau=0.0), "agent.target_tau", 0.0),
    (lambda: AgentConfig(target_tau=1.5), "agent.target_tau", 1.5),
    (lambda: AgentConfig(target_soft_period=0), "agent.target_soft_period", 0),
    (lambda: AgentConfig(optimizer="sgd"), "agent.optimizer", "sgd"),
    (lambda: AgentConfig(weight_decay=0.01), "agent.weight_decay", 0.01),   # adam
    (lambda: AgentConfig(optimizer="adamw", weight_decay=-0.1), "agent.weight_decay", -0.1),
    (lambda: AgentConfig(adam_eps=0.0), "agent.adam_eps", 0.0),
    (lambda: AgentConfig(grad_accumulation=0), "agent.grad_accumulation", 0),
    (lambda: AgentConfig(lr_schedule="step"), "agent.lr_schedule", "step"),
    (lambda: AgentConfig(lr_end=0.0), "agent.lr_end", 0.0),
    (lambda: AgentConfig(lr_end=1.0), "agent.lr_end", 1.0),
    (lambda: AgentConfig(lr_decay_steps=0), "agent.lr_decay_steps", 0),
    (lambda: AgentConfig(lr_warmup_steps=-1), "agent.lr_warmup_steps", -1),
    (lambda: AgentConfig(max_grad_norm=-1.0), "agent.max_grad_norm", -1.0),
    (lambda: AgentConfig(epsilon_unit="frames"), "agent.epsilon_unit", "frames"),
    (lambda: AgentConfig(epsilon_draw="actor"), "agent.epsilon_draw", "actor"),
    (lambda: AgentConfig(epsilon_cutoff=-5), "agent.epsilon_cutoff", -5),
    (lambda: AgentConfig(epsilon_after_cutoff="start"), "agent.epsilon_after_cutoff", "start"),
    (lambda: AgentConfig(epsilon_off_fraction=1.5), "agent.epsilon_off_fraction", 1.5),
    (lambda: NetworkConfig(norm="group"), "network.norm", "group"),
    (lambda: NetworkConfig(action_history=-1), "network.action_history", -1),
    (lambda: NetworkConfig(action_history_dim=0), "network.action_history_dim", 0),
    (lambda: NetworkConfig(cnn_channels=()), "network.cnn_channels", ()),
    (lambda: EnvConfig(reward_scale=0.0), "env.reward_scale", 0.0),
    (lambda: EnvConfig(reward_scale=-2.0), "env.reward_scale", -2.0),
    (lambda: EnvConfig(reward_scale=float("inf")), "env.reward_scale", float("inf")),
    (lambda: EnvConfig(reward_clip=0.0), "env.reward_clip", 0.0),
    (lambda: EnvConfig(no_progress_timeout=0), "env.no_progress_timeout", 0),
    (lambda: EnvConfig(id="trackmania", no_progress_timeout=10), "env.no_progress_timeout", 10),
    (lambda: ReplayConfig(importance_exponent_schedule="cosine"),
     "replay.importance_exponent_schedule", "cosine"),
    (lambda: ReplayConfig(importance_exponent_increment=0.0),
     "replay.importance_exponent_increment", 0.0),
    (lambda: Config(agent=AgentConfig(target_clamp="auto"), env=EnvConfig(reward_clip=None)),
     "agent.target_clamp", "auto"),
])
def test_new_fields_validated_naming_field_and_value(build, field, value):
    with pytest.raises(ConfigError) as info:
        build()
    assert info.value.field == field
    assert info.value.value == value
    assert f"{field}={value!r}" in str(info.value)


def test_valid_combinations_of_the_new_fields_are_accepted():
    # The boundaries of the ranges above, and the combinations the errors point to.
    AgentConfig(learner="c51", munchausen=False, v_min=-1.0, v_max=-0.5, num_atoms=2)
    AgentConfig(learner="dqn", munchausen=False, td_loss="mse", target_clamp=0.5)
    AgentConfig(target_tau=1.0, target_update="both", grad_accumulation=4)
    AgentConfig(optimizer="adamw", weight_decay=0.01)
    AgentConfig(optimizer="radam", weight_decay=0.1, lr_schedule="cosine", lr_warmup_steps=0)
    AgentConfig(epsilon_cutoff=0, epsilon_off_fraction=1.0, max_grad_norm=0.0)
    NetworkConfig(norm="batch", action_history=0)
    NetworkConfig(norm="layer", action_history=4)
    EnvConfig(reward_scale=1e-3, reward_clip=None)
    ReplayConfig(importance_exponent_schedule="increment")
    cfg = Config(agent=AgentConfig(target_clamp="auto"), env=EnvConfig(reward_clip=5.0))
    assert cfg.agent.target_clamp == "auto"


def test_capacity_counts_action_history():
    # Each of 8 streams needs n_step + max(frame_stack - 1, action_history) + 2 = 3 + 100 + 2
    # = 105 slots: capacity 840 is enough, 839 is not.
    network = NetworkConfig(action_history=100)
    Config(network=network, replay=ReplayConfig(capacity=840),
           training=TrainingConfig(batch_size=32))
    with pytest.raises(ConfigError) as info:
        Config(network=network, replay=ReplayConfig(capacity=839),
               training=TrainingConfig(batch_size=32))
    assert info.value.field == "replay.capacity" and "capacity >= 840" in str(info.value)


def test_capacity_is_checked_again_with_the_resolved_frame_stack():
    # Each of 8 streams: n_step 3 + (frame_stack - 1) + 2 slots; auto counts as 1 (5 slots,
    # capacity 40) until resolved: 4 frames on images need 8 slots (64).
    cfg = Config(replay=ReplayConfig(capacity=40), training=TrainingConfig(batch_size=32))
    assert resolve_env_auto(cfg, is_image=False).env.frame_stack == 1
    with pytest.raises(ConfigError) as info:
        resolve_env_auto(cfg, is_image=True)
    assert info.value.field == "replay.capacity" and "capacity >= 64" in str(info.value)


# --- env fields resolved by the env: auto ----------------------------------------------------

@pytest.mark.parametrize("env_id, kwargs, want", [
    ("CarRacing-v3", {}, (1.0, 4)),
    ("trackmania", dict(image_size=64, trackmania=TrackmaniaConfig()), (1.0, 4)),  # frames
    ("CartPole-v1", {}, (None, 1)),
    ("Pendulum-v1", dict(action_space="continuous"), (None, 1)),
])
def test_env_auto_resolves_by_the_env_spec(env_id, kwargs, want):
    spec = envs.env_spec(env_id, **kwargs)
    cfg = Config(env=EnvConfig(id=env_id, num_envs=1),  # TrackMania: one game, no eval
                 training=TrainingConfig(eval_interval=0))
    assert (cfg.env.reward_clip, cfg.env.frame_stack) == ("auto", "auto")
    env = resolve_env_auto(cfg, spec.is_image).env
    assert (env.reward_clip, env.frame_stack) == want
    assert resolve_env_auto(resolve_env_auto(cfg, spec.is_image), not spec.is_image).env == env


def test_explicit_env_values_win_over_auto():
    # From a preset: tm20_rainbow stores raw rewards in 4-frame stacks, on any env.
    for is_image in (True, False):
        env = resolve_env_auto(presets.get("tm20_rainbow"), is_image).env
        assert (env.reward_clip, env.frame_stack) == (None, 4)
    # From the command line, either way round.
    cartpole = cli.parse(["--algo", "dqn", "--env", "CartPole-v1", "--env.frame-stack", "3",
                          "--env.reward-clip", "0.5"]).config
    env = resolve_env_auto(cartpole, is_image=False).env
    assert (env.reward_clip, env.frame_stack) == (0.5, 3)
    car = cli.parse(["--algo", "dqn", "--env.reward-clip", "None"]).config
    env = resolve_env_auto(car, is_image=True).env
    assert (env.reward_clip, env.frame_stack) == (None, 4)


def test_value_presets_get_atari_values_on_pixels_and_raw_ones_on_vectors():
    for name in ("iqn_btr", "iqn", "dqn", "rainbow", "linesight_a01", "tempest_seed003"):
        cfg = presets.get(name)
        assert (cfg.env.reward_clip, cfg.env.frame_stack) == ("auto", "auto"), name
        assert resolve_env_auto(cfg, True).env.reward_clip == 1.0
        assert resolve_env_auto(cfg, False).env.frame_stack == 1
    tqc = resolve_env_auto(presets.get("tqc"), is_image=False).env  # Pendulum, as before
    assert (tqc.reward_clip, tqc.frame_stack) == (None, 1)


def test_env_steps_per_update_converts_target_periods():
    # An update is grad_accumulation grad steps, replay_ratio grad steps per env step.
    assert presets.get("rainbow").env_steps_per_update == 4.0    # 2000 updates = 8,000 steps
    assert presets.get("iqn_btr").env_steps_per_update == 64.0
    assert presets.get("tempest_seed003").env_steps_per_update == 0.5    # 4 / 8


# --- presets round-trip through the saved text ---------------------------------------------

def _same_with_types(a, b, path="config"):
    """Equal values of equal types at every leaf (so 1.0 does not come back as 1)."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _same_with_types(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same_with_types(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def _variants():
    for name in presets.PRESETS:
        yield name, presets.get(name)
    yield "iqn_btr+auto", presets.replace(presets.get("iqn_btr"),
                                          agent=dict(target_clamp="auto"))
    yield "rainbow+clamp", presets.replace(presets.get("rainbow"),
                                           agent=dict(target_clamp=12.5, lr_schedule="cosine",
                                                      lr_end=3.3e-6, lr_warmup_steps=1000),
                                           env=dict(reward_scale=0.1))
    yield "tm20+auto", presets.replace(presets.get("tm20_rainbow"),
                                       env=dict(reward_clip=2.5),
                                       agent=dict(target_clamp="auto", target_update="both",
                                                  target_tau=0.125, grad_accumulation=4),
                                       network=dict(action_history=3, norm="layer"))


@pytest.mark.parametrize("name, cfg", list(_variants()), ids=[n for n, _ in _variants()])
def test_presets_round_trip_unchanged(name, cfg, tmp_path):
    data = config_lib.to_dict(cfg)
    assert config_lib.from_dict(data) == cfg
    through_json = json.loads(json.dumps(data))
    back = config_lib.from_dict(through_json)
    assert back == cfg
    _same_with_types(config_lib.to_dict(back), data)
    config_lib.save(cfg, tmp_path / "config.json")
    loaded = config_lib.load(tmp_path / "config.json")
    assert loaded == cfg
    _same_with_types(config_lib.to_dict(loaded), data)


def test_preset_names_match_their_algo_field():
    for name in presets.PRESETS:
        assert presets.get(name).algo == name


# --- --print-config -----------------------------------------------------------------------

def _run_wide(*args):
    # A wide terminal so tyro's boxed messages do not wrap field names.
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, str(ROOT / "launch" / "run.py"), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


def test_print_config_rainbow_and_tm20_differ_as_documented():
    rainbow = _run_wide("--algo", "rainbow", "--print-config")
    assert rainbow.returncode == 0, rainbow.stderr
    rainbow_cfg = json.loads(rainbow.stdout)
    assert rainbow_cfg["algo"] == "rainbow"
    assert rainbow_cfg["agent"]["learner"] == "c51"
    assert rainbow_cfg["agent"]["target_update_period"] == 2000
    assert (rainbow_cfg["env"]["reward_clip"], rainbow_cfg["env"]["frame_stack"]) == (1.0, 4)
    assert config_lib.from_dict(rainbow_cfg) == resolve_env_auto(presets.get("rainbow"), True)

    tm20 = _run_wide("--algo", "tm20_rainbow", "--print-config")
    assert tm20.returncode == 0, tm20.stderr
    tm20_cfg = json.loads(tm20.stdout)
    assert tm20_cfg["agent"]["learner"] == "iqn"
    assert tm20_cfg["agent"]["target_update_period"] == 1500
    assert tm20_cfg["env"]["reward_clip"] is None
    assert config_lib.from_dict(tm20_cfg) == presets.get("tm20_rainbow")


def _printed_env(capsys, *args) -> tuple:
    from launch import run

    assert run.main([*args, "--print-config"]) == 0
    env = json.loads(capsys.readouterr().out)["env"]
    return env["reward_clip"], env["frame_stack"]


def test_print_config_shows_the_env_values_auto_resolved_to(capsys):
    assert _printed_env(capsys, "--algo", "dqn") == (1.0, 4)  # CarRacing
    assert _printed_env(capsys, "--algo", "dqn", "--env", "CartPole-v1") == (None, 1)
    assert _printed_env(capsys, "--algo", "dqn", "--env", "CartPole-v1",
                        "--env.frame-stack", "2") == (None, 2)


def test_a_resumed_run_keeps_its_saved_env_values(tmp_path, capsys):
    # A run of before auto saved CartPole with Atari's values: resuming keeps them (its
    # checkpoint holds 4-frame stacks), and so does a run saved with auto's values.
    for clip, stack in ((1.0, 4), (None, 1)):
        saved = presets.replace(presets.get("dqn"), env=dict(id="CartPole-v1",
                                                             reward_clip=clip, frame_stack=stack))
        config_lib.save(saved, tmp_path / "config.json")
        assert _printed_env(capsys, "--resume", str(tmp_path)) == (clip, stack)


@pytest.mark.parametrize("args, field", [
    (["--agent.learner", "c51"], "agent.munchausen"),
    (["--algo", "tm20_rainbow", "--agent.target-clamp", "auto"], "agent.target_clamp"),
])
def test_print_config_rejects_inconsistent_overrides(args, field):
    result = _run_wide("--print-config", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert field in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


# --- the actors section and the removed learner budget ----------------------------------------

@pytest.mark.parametrize("build, field, value", [
    (lambda: config_lib.ActorsConfig(mode="async"), "actors.mode", "async"),
    (lambda: config_lib.ActorsConfig(queue_size=0), "actors.queue_size", 0),
    (lambda: config_lib.ActorsConfig(max_lag=0.0), "actors.max_lag", 0.0),
    (lambda: config_lib.ActorsConfig(param_publish_interval=0),
     "actors.param_publish_interval", 0),
    (lambda: Config(actors=config_lib.ActorsConfig(max_lag=2.0),
                    training=TrainingConfig(grad_steps_per_call=4)), "actors.max_lag", 2.0),
    (lambda: config_lib.ActorsConfig(backend="mpi"), "actors.backend", "mpi"),
    # The process backend is for real time; CartPole resolves auto to bounded.
    (lambda: Config(actors=config_lib.ActorsConfig(backend="process")), "actors.backend",
     "process"),
    (lambda: Config(actors=config_lib.ActorsConfig(mode="lockstep", backend="process")),
     "actors.backend", "process"),
])
def test_actors_fields_validated_naming_field_and_value(build, field, value):
    with pytest.raises(ConfigError) as e:
        build()
    assert e.value.field == field and e.value.value == value


def test_auto_mode_is_realtime_on_trackmania_and_bounded_elsewhere():
    assert presets.get("iqn_tm20").actors.resolved_mode("trackmania") == "realtime"
    assert presets.get("iqn").actors.resolved_mode("CartPole-v1") == "bounded"
    assert config_lib.ActorsConfig(mode="lockstep").resolved_mode("trackmania") == "lockstep"


def test_auto_backend_is_a_process_in_realtime_mode_only():
    auto = config_lib.ActorsConfig()
    assert auto.resolved_backend("trackmania") == "process"
    assert auto.resolved_backend("CartPole-v1") == "thread"
    assert config_lib.ActorsConfig(mode="realtime").resolved_backend("CartPole-v1") == "process"
    assert config_lib.ActorsConfig(backend="thread").resolved_backend("trackmania") == "thread"
    realtime_process = config_lib.ActorsConfig(mode="realtime", backend="process")
    assert Config(actors=realtime_process).actors.backend == "process"


def test_the_removed_learner_budget_is_refused_saying_what_replaced_it(tmp_path, capsys):
    code, stderr = _main(capsys, "--algo", "iqn_tm20", "--trackmania.learner-budget", "0.5",
                         "--run-dir", str(tmp_path / "run"))
    assert code == 2 and "trackmania.learner_budget" in stderr
    assert "actors.mode=realtime" in stderr and "Traceback" not in stderr
    # A config.json of before, on --resume.
    data = config_lib.to_dict(presets.get("iqn_tm20"))
    data["trackmania"]["learner_budget"] = 0.8
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(data))
    code, stderr = _main(capsys, "--resume", str(run_dir))
    assert code == 2 and "trackmania.learner_budget=0.8" in stderr
    assert "actors.mode=realtime" in stderr


def test_replay_sampling_auto_is_stratified_with_per_and_iid_without():
    from rl.agent import make_replay  # noqa: PLC0415

    assert ReplayConfig(prioritized=True).stratified
    assert not ReplayConfig(prioritized=False).stratified
    assert ReplayConfig(prioritized=False, sampling="stratified").stratified
    assert not ReplayConfig(prioritized=True, sampling="iid").stratified
    def replay_of(*flags):
        return make_replay(cli.parse([*flags, "--env.frame-stack", "1"]).config)

    assert replay_of("--algo", "iqn_btr").stratified  # PER
    assert not replay_of("--algo", "tqc").stratified  # uniform, as sbx's
    assert replay_of("--algo", "tqc", "--replay.sampling", "stratified").stratified
    with pytest.raises(ConfigError, match="replay.sampling"):
        ReplayConfig(sampling="sorted")
