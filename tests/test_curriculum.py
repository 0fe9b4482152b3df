"""Expert curriculum (seed 003): the ratio schedule and its raised floor, who takes each step,
the is_expert flag through replay and learner, the return statistics, and the experts."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.demos import DemoEpisode, episode_path, save_episode
from launch import experts
from launch.checkpoint import RunCheckpoints
from rl import config as config_lib
from rl import curriculum, presets, schedules
from rl.config import ConfigError, ExpertConfig
from rl.learners import make_agent
from replay import DeviceReplay

import test_learner_jit
import test_tqc


def expert_cfg(**kw):
    return ExpertConfig(**{**dict(kind="scripted", source="envs.scripted:cartpole",
                                  ratio_start=0.95, ratio_floor=0.1, ratio_decay_steps=1000), **kw})


# --- the schedule -------------------------------------------------------------------------

def test_linear_and_exponential_ratio_worked_numbers():
    linear = expert_cfg()
    assert schedules.expert_ratio(linear, 0) == pytest.approx(0.95)
    assert schedules.expert_ratio(linear, 500) == pytest.approx(0.525)  # halfway
    assert schedules.expert_ratio(linear, 1000) == pytest.approx(0.1)
    exponential = expert_cfg(ratio_schedule="exponential")
    assert schedules.expert_ratio(exponential, 1000) == pytest.approx(0.1 + 0.85 * math.exp(-1))
    assert schedules.expert_ratio(ExpertConfig(), 0) == 0.0  # kind none: never the expert


@pytest.mark.parametrize("shape", ["linear", "exponential"])
def test_ratio_never_falls_below_the_floor_and_never_rises(shape):
    cfg = expert_cfg(ratio_schedule=shape, ratio_floor=0.05)
    ratios = np.array([schedules.expert_ratio(cfg, t) for t in range(0, 50_000, 7)])
    assert ratios.min() >= 0.05 and ratios.max() <= 0.95
    assert np.all(np.diff(ratios) <= 0)


def test_floor_raise_window_starts_on_resume_and_survives_another_resume():
    cfg = expert_cfg(floor_raise=0.2, floor_raise_steps=300)
    window = schedules.expert_floor_raise(cfg, None, env_step=5000)
    assert window == dict(floor=0.2, steps=300, start=5000)
    # Resuming again with the same values continues the window (the clock is not reset).
    assert schedules.expert_floor_raise(cfg, window, env_step=5200) is window
    # New values start a new window; None ends it.
    assert schedules.expert_floor_raise(expert_cfg(floor_raise=0.3, floor_raise_steps=300),
                                        window, 5200)["start"] == 5200
    assert schedules.expert_floor_raise(expert_cfg(), window, 5200) is None
    assert schedules.expert_ratio(cfg, 4999, window) == pytest.approx(0.1)
    assert schedules.expert_ratio(cfg, 5000, window) == pytest.approx(0.2)
    assert schedules.expert_ratio(cfg, 5299, window) == pytest.approx(0.2)
    assert schedules.expert_ratio(cfg, 5300, window) == pytest.approx(0.1)
    # A raised floor below the schedule changes nothing.
    assert schedules.expert_ratio(cfg, 0, dict(window, start=0)) == pytest.approx(0.95)


def test_expert_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="expert.source"):
        ExpertConfig(kind="scripted")
    with pytest.raises(ConfigError, match="expert.source.*kind is none"):
        ExpertConfig(source="envs.scripted:cartpole")
    with pytest.raises(ConfigError, match="expert.ratio_floor"):
        expert_cfg(ratio_floor=0.99)
    with pytest.raises(ConfigError, match="expert.floor_raise"):
        expert_cfg(floor_raise=1.5)
    with pytest.raises(ConfigError, match="logging.return_windows"):
        config_lib.LoggingConfig(return_windows=(5000, 1000))


# --- who takes each step ------------------------------------------------------------------

def test_step_mode_expert_share_follows_the_schedule_and_the_floor():
    cfg = expert_cfg(ratio_decay_steps=40_000)
    num_envs, mixer = 8, curriculum.ExpertMixer(8, "step", seed=3)
    valid = np.ones(num_envs, bool)
    taken = {}
    for t in range(0, 80_000, num_envs):
        ratio = schedules.expert_ratio(cfg, t)
        chosen = mixer.choose(ratio, np.zeros(num_envs), valid)
        bucket = taken.setdefault(t // 10_000, [0, 0.0])
        bucket[0] += chosen.sum()
        bucket[1] += ratio * num_envs
    for count, expected in taken.values():  # 10,000 draws per bucket
        sd = math.sqrt(expected * (1 - expected / 10_000))
        assert abs(count - expected) < 4 * sd
    floor_share = (taken[6][0] + taken[7][0]) / 20_000  # past the decay: at the floor
    assert abs(floor_share - 0.1) < 4 * math.sqrt(0.1 * 0.9 / 20_000)


def test_step_mode_never_picks_autoreset_steps():
    mixer = curriculum.ExpertMixer(4, "step", seed=0)
    valid = np.array([True, False, True, False])
    for _ in range(100):
        assert not mixer.choose(1.0, np.zeros(4), valid)[~valid].any()


def test_episode_mode_keeps_the_driver_for_a_whole_episode():
    num_envs, length = 4, 10
    mixer = curriculum.ExpertMixer(num_envs, "episode", seed=1)
    drivers = []
    for episode in range(500):
        picks = np.array([mixer.choose(0.3, np.full(num_envs, s), np.ones(num_envs, bool))
                          for s in range(length)])
        assert np.all(picks == picks[0])  # same driver at every step of the episode
        drivers.append(picks[0])
    share = np.mean(drivers)
    assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 2000)


# --- return statistics --------------------------------------------------------------------

def test_agent_only_returns_exclude_mixed_episodes():
    stats = curriculum.ReturnStats(num_envs=2, windows=(100, 1000))
    valid = np.ones(2, bool)
    stats.record_step(np.array([False, True]), valid)  # env 1 had one expert step
    stats.record_step(np.array([False, False]), valid)
    assert stats.record_episode(0, 10, 5.0) == (True, 0.0)
    assert stats.record_episode(1, 10, 50.0) == (False, 0.5)
    # The counters start over: env 1's next episode is agent-only.
    stats.record_step(np.array([False, False]), valid)
    assert stats.record_episode(1, 20, 7.0) == (True, 0.0)
    assert stats.window("agent_only", 20, 1000)[:2] == (2, 6.0)
    assert stats.window("mixed", 20, 1000)[:2] == (1, 50.0)
    # Autoreset steps (valid False) are no episode's steps.
    stats.record_step(np.array([True, True]), np.array([False, False]))
    assert stats.record_episode(0, 30, 1.0) == (True, 0.0)
    assert stats.expert_step_share() == pytest.approx(1 / 6)
    assert stats.expert_step_share() is None  # reset by the read


def test_window_means_and_slopes_against_hand_values():
    stats = curriculum.ReturnStats(num_envs=1, windows=(1_000_000, 5_000_000))
    # Returns rising 2.0 per million env steps, one episode every 250k steps up to 6M.
    steps = np.arange(250_000, 6_000_001, 250_000)
    for s in steps:
        stats.record_step(np.zeros(1, bool), np.ones(1, bool))
        stats.record_episode(0, int(s), 10.0 + 2e-6 * s)
    count, mean, slope = stats.window("agent_only", 6_000_000, 1_000_000)
    # Ended in (5M, 6M]: 5.25M, 5.5M, 5.75M, 6M -> mean return at 5.625M.
    assert count == 4 and mean == pytest.approx(10 + 2 * 5.625) and slope == pytest.approx(2.0)
    count, mean, slope = stats.window("agent_only", 6_000_000, 5_000_000)
    assert count == 20 and mean == pytest.approx(10 + 2 * 3.625) and slope == pytest.approx(2.0)
    scalars = stats.scalars(6_000_000)
    assert scalars["returns/agent_only_mean_1M"] == pytest.approx(21.25)
    assert scalars["returns/agent_only_slope_5M"] == pytest.approx(2.0)
    assert "returns/mixed_mean_1M" not in scalars  # no mixed episode: nothing logged
    # Episodes older than the long window are dropped.
    assert len(stats._episodes["agent_only"]) == 20


def test_reward_slope_over_the_last_episodes_hand_values():
    stats = curriculum.ReturnStats(num_envs=1, slope_episodes=4)
    for i, r in enumerate([100.0, 0.0, 1.0, 3.0, 5.0, 7.0]):
        stats.record_episode(0, i, r)
        if i == 1:
            assert math.isnan(stats.reward_slope())  # fewer than 3 episodes
    assert stats.reward_slope() == pytest.approx(2.0)  # the last 4: 1, 3, 5, 7
    stats.record_episode(0, 7, 1.0)  # last 4: 3, 5, 7, 1 -> sum(dx dy) / sum(dx^2) = -2 / 5
    assert stats.reward_slope() == pytest.approx(-0.4)
    assert stats.scalars(7)["returns/reward_slope_4ep"] == pytest.approx(-0.4)


def test_summary_line_shows_the_seed_003_figures():
    scalars = {"expert/ratio": 0.1, "expert/step_share": 0.098,
               "returns/agent_only_mean_1M": 310.2, "returns/agent_only_mean_5M": 300.06,
               "returns/agent_only_slope_5M": -0.19, "returns/agent_only_episodes_5M": 12,
               "returns/reward_slope_20ep": -49.168, "train/q_min": -12.91, "train/q_max": 1024.1,
               "train/loss": 0.367, "train/grad_norm": 8.787, "train/clip_ratio": 0.569,
               "train/target_age": 12_500}
    line = curriculum.summary_line(1_200_000, 10_000_000, scalars, (1_000_000, 5_000_000), 25_000)
    assert line == ("step 1.2M/10M | expert 10% (took 10%) | agent-only R1M 310.2 R5M 300.1 "
                    "slope5M -0.19/M (n=12) | rwd slope -49.2/ep | Q [-12.91, 1024] | "
                    "loss 0.367 | grad 8.787 clipΔ 0.569 | target age 12.5k/25k")
    # TQC's names, no expert, no episodes yet.
    assert curriculum.summary_line(500, 1000, {"train/critic_loss": 2.0,
                                               "train/critic_grad_norm": 3.0},
                                   (100, 200)) == "step 500/1k | loss 2 | grad 3"


# --- replay and learner -------------------------------------------------------------------

def test_is_expert_is_stored_and_sampled_with_its_transition():
    replay = DeviceReplay(num_streams=2, capacity_per_stream=64, frame_stack=1, n_step=1,
                          gamma=0.9, prioritized=False)
    replay_state = replay.init(np.zeros(1, np.float32), np.zeros((), np.int32))
    rng = np.random.default_rng(0)
    flags = rng.random((40, 2)) < 0.5
    slots = dict(obs=np.zeros((40, 2, 1), np.float32), action=np.zeros((40, 2), np.int32),
                 reward=np.zeros((40, 2), np.float32), terminated=np.zeros((40, 2), bool),
                 truncated=np.zeros((40, 2), bool), valid=np.ones((40, 2), bool),
                 steps_since_start=np.tile(np.arange(40, dtype=np.int32)[:, None], (1, 2)),
                 is_expert=flags)
    replay_state = jax.jit(replay.add_sequence)(replay_state, slots)
    stored = np.zeros((2, 64), bool)
    stored[:, :40] = flags.T
    np.testing.assert_array_equal(np.asarray(replay_state.is_expert), stored)
    batch = jax.jit(replay.sample, static_argnums=2)(replay_state, jax.random.PRNGKey(1), 512,
                                                      0.5)
    stream, ring = np.divmod(np.asarray(batch.indices), 64)
    np.testing.assert_array_equal(np.asarray(batch.is_expert), stored[stream, ring])
    assert 0.3 < np.asarray(batch.is_expert).mean() < 0.7


# The weighting is shared code (rl.agent.sampled_updates); value learners and TQC show it.
@pytest.mark.parametrize("learner", ["dqn", "iqn", "tqc"])
def test_expert_loss_weight_scales_only_the_expert_share_of_the_loss(learner):
    if learner == "tqc":
        cfg, loss_name, num_actions = test_tqc.tiny(), "critic_loss", test_tqc.ACTION_DIM
        _, state, plain = test_tqc.filled(cfg)
    else:
        cfg, loss_name = test_learner_jit.tiny(learner, network=dict(torso="auto")), "loss"
        num_actions = 3
        _, state, plain = test_learner_jit.filled(cfg, image=False)
    # The same contents flagged three ways: the same batches are drawn from each.
    mixed = plain.replace(is_expert=plain.is_expert.at[0].set(True))  # stream 0: the expert's
    expert = plain.replace(is_expert=jnp.ones_like(plain.is_expert))
    agent = make_agent(presets.replace(cfg, expert=dict(loss_weight=3.0)), num_actions,
                       is_image=False)
    update = jax.jit(agent.update)
    metrics = [update(state, replay, jnp.float32(0.5))[2] for replay in (plain, mixed, expert)]
    unweighted, weighted, all_expert = (float(m[loss_name]) for m in metrics)
    assert [float(m["expert_fraction"]) for m in metrics][::2] == [0.0, 1.0]
    assert 0 < float(metrics[1]["expert_fraction"]) < 1
    # Every transition the expert's: 3x the loss; some: the expert part alone is scaled.
    assert all_expert == pytest.approx(3 * unweighted, rel=1e-5)
    assert unweighted < weighted < all_expert


# --- the experts --------------------------------------------------------------------------

def cartpole_config(**expert):
    return presets.replace(presets.get("dqn"), env=dict(id="CartPole-v1", num_envs=2,
                                                        frame_stack=2), expert=expert)


@pytest.fixture(scope="module")
def cartpole_spec():
    return envs.env_spec("CartPole-v1")


def test_scripted_expert_acts_and_bad_sources_name_the_field(cartpole_spec):
    cfg = cartpole_config(kind="scripted", source="envs.scripted:cartpole")
    expert = experts.build_expert(cfg, cartpole_spec)
    obs = np.zeros((2, 2, 4), np.float32)
    obs[0, -1, 2], obs[1, -1, 2] = 0.1, -0.1  # pole falling right, left
    actions, available = expert.act(obs, None, np.zeros(2, np.int32))
    np.testing.assert_array_equal(actions, [1, 0])
    assert available.all() and actions.dtype == np.int32
    for source, message in [("envs.scripted", "module:function"),
                            ("envs.nothing:cartpole", "cannot import"),
                            ("envs.scripted:nothing", "no function"),
                            ("numpy:ones_like", "shape \\[2, 2, 4\\]")]:
        with pytest.raises(ConfigError, match=f"expert.source.*{message}"):
            experts.build_expert(cartpole_config(kind="scripted", source=source), cartpole_spec)


def test_playback_expert_replays_each_demo_then_moves_on(tmp_path, cartpole_spec):
    for i, length in enumerate([3, 5]):
        save_episode(episode_path(tmp_path, i), DemoEpisode(
            obs=np.zeros((length + 1, 4), np.float32), action=((np.arange(length) + i) % 2).astype(np.int32),
            reward=np.ones(length, np.float32), terminated=np.arange(length) == length - 1,
            truncated=np.zeros(length, bool),
            meta=dict(env_id="CartPole-v1", frame_skip=4, image_size=84,
                      action_space="discrete", source="test")))
    expert = experts.build_expert(cartpole_config(kind="playback", source=str(tmp_path)),
                                  cartpole_spec)
    obs = np.zeros((2, 2, 4), np.float32)
    played = [expert.act(obs, None, np.array([s, s])) for s in range(5)]
    actions = np.array([a for a, _ in played])
    available = np.array([ok for _, ok in played])
    # Env 0 plays demo 0 (3 steps), env 1 demo 1 (5 steps).
    np.testing.assert_array_equal(actions[:3, 0], [0, 1, 0])
    np.testing.assert_array_equal(actions[:, 1], [1, 0, 1, 0, 1])
    np.testing.assert_array_equal(available[:, 0], [True, True, True, False, False])
    assert available[:, 1].all()
    # A new episode (the step goes back to 0): env 0 moves on by 2 demos, to demo 0 again.
    assert expert.act(obs, None, np.array([0, 5]))[1].tolist() == [True, False]


def test_checkpoint_expert_acts_greedily_like_the_saved_agent(tmp_path, cartpole_spec):
    source = presets.replace(cartpole_config(), network=dict(mlp_hidden=(8,), hidden_dim=8))
    config_lib.save(source, tmp_path / "config.json")
    agent = make_agent(source, cartpole_spec.num_actions, False)
    state = agent.init(jax.random.PRNGKey(7), np.zeros((2, 4), np.float32))
    checkpoints = RunCheckpoints(tmp_path, 1)
    checkpoints.save(100, state, None, dict(env_steps=100))
    checkpoints.close()
    for empty in ("best", "best_train"):  # made by the writer; the expert must not make them
        (tmp_path / empty).rmdir()

    expert = experts.build_expert(
        presets.replace(source, expert=dict(kind="checkpoint", source=str(tmp_path))),
        cartpole_spec)
    assert "latest checkpoint, env step 100" in expert.checkpoint
    obs = np.random.default_rng(0).normal(size=(2, 2, 4)).astype(np.float32)
    q = agent.q_values(state, obs, jax.random.PRNGKey(0), noisy=False)
    actions, available = expert.act(obs, None, np.zeros(2, np.int32))
    np.testing.assert_array_equal(actions, np.argmax(np.asarray(q), -1))
    assert available.all()

    other = presets.replace(source, env=dict(frame_stack=3),
                            expert=dict(kind="checkpoint", source=str(tmp_path)))
    with pytest.raises(ConfigError, match="expert.source.*env.frame_stack=2"):
        experts.build_expert(other, cartpole_spec)
    missing = presets.replace(source, expert=dict(kind="checkpoint", source=str(tmp_path / "x")))
    with pytest.raises(ConfigError, match="no config.json"):
        experts.build_expert(missing, cartpole_spec)
    # The expert's run is only read: no best/ or best_train/ directories appear there.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "config.json"]
