"""benchmarks/sample_efficiency.py --against sbx: the sbx kwargs built from our config carry
our numbers (benchmarks/sbx_peer.py), and the LunarLander case is RL Zoo's tuned DQN. Needs
sbx only to construct the models (skipped without it)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import sample_efficiency as se  # noqa: E402  (puts the repository root first on sys.path)
import sbx_peer  # noqa: E402

from rl import presets  # noqa: E402


def case(algo: str, env: str) -> tuple[object, dict]:
    """(our resolved config, sbx spec) of a --against sbx case, seed 0, the case's budget."""
    args = argparse.Namespace(algo=algo, env=env, expert="none", against="sbx", overrides=[],
                              eval_interval=se.EVAL_INTERVALS[env], eval_episodes=10)
    config = se.our_config(se.run_flags(args, 0, se.TARGETS[env][1]))
    return config, sbx_peer.sbx_spec(config)


@pytest.fixture(scope="module")
def cases() -> dict:
    return {key: case(*key) for key in se.SBX_FITS}


def test_train_schedule_worked_numbers():
    # replay ratio x envs = grad steps per vector step, run in calls of grad_steps_per_call.
    assert sbx_peer.train_schedule(1.0, 4, 1) == (4, 4)     # RL Zoo LunarLander
    assert sbx_peer.train_schedule(0.5, 1, 4) == (1, 2)     # dqn preset, 4 envs
    assert sbx_peer.train_schedule(1.0, 1, 1) == (1, 1)     # tqc preset
    assert sbx_peer.train_schedule(0.25, 1, 1) == (4, 1)    # Rainbow's 1 per 4 steps
    assert sbx_peer.train_schedule(6.0, 1, 1) == (1, 6)     # tqc_tm20


def test_tqc_pendulum(cases):
    config, spec = cases[("tqc", "Pendulum-v1")]
    kw, tqc = spec["kwargs"], config.tqc
    assert (spec["algo"], spec["env_id"], spec["num_envs"]) == ("TQC", "Pendulum-v1", 1)
    assert (spec["total_timesteps"], spec["eval_interval"], spec["eval_episodes"]) == \
        (15_000, 2_500, 10)
    assert (kw["learning_rate"], kw["qf_learning_rate"]) == (1e-3, 1e-3) == \
        (tqc.actor_learning_rate, tqc.critic_learning_rate)
    assert (kw["batch_size"], kw["gamma"], kw["buffer_size"], kw["learning_starts"]) == \
        (256, 0.99, 1_000_000, 1_000)
    assert (kw["train_freq"], kw["gradient_steps"], kw["tau"]) == (1, 1, 0.005)
    assert kw["top_quantiles_to_drop_per_net"] == tqc.top_quantiles_to_drop == 2
    assert kw["policy_kwargs"] == dict(net_arch=dict(pi=[256, 256], qf=[256, 256]),
                                       n_quantiles=25, n_critics=2)
    assert (kw["ent_coef"], kw["target_entropy"], kw["n_steps"]) == ("auto_1.0", "auto", 1)
    assert spec["optimizer"] == dict(eps=1e-8, max_grad_norm=0.0)


def test_dqn_cartpole(cases):
    config, spec = cases[("dqn", "CartPole-v1")]
    kw = spec["kwargs"]
    assert (spec["algo"], spec["num_envs"], spec["total_timesteps"]) == ("DQN", 4, 50_000)
    assert (kw["learning_rate"], kw["batch_size"], kw["gamma"], kw["buffer_size"]) == \
        (1e-3, 64, 0.99, 100_000)
    assert (kw["learning_starts"], kw["n_steps"]) == (1_000, 3)
    # Replay ratio 0.5 on 4 envs: 2 grad steps per vector step.
    assert (kw["train_freq"], kw["gradient_steps"]) == (1, 2)
    # 100 updates x (1 / 0.5) env steps per update.
    assert (kw["target_update_interval"], kw["tau"]) == (200, 1.0)
    # Linear 1 -> 0.02 over 10k of 50k env steps.
    assert (kw["exploration_initial_eps"], kw["exploration_final_eps"],
            kw["exploration_fraction"]) == (1.0, 0.02, 0.2)
    assert kw["policy_kwargs"] == dict(net_arch=[256, 256])
    assert spec["optimizer"] == dict(eps=1e-4, max_grad_norm=100.0)
    assert config.agent.eval_epsilon == 0.0 and config.env.frame_stack == 1
    # SB3 draws epsilon once per vector step; ours per env is refused on 4 envs, not on 1.
    assert config.agent.epsilon_draw == "vector_step"
    per_env = presets.replace(config, agent=dict(epsilon_draw="env"))
    with pytest.raises(sbx_peer.SbxMappingError, match="agent.epsilon_draw"):
        sbx_peer.sbx_spec(per_env)
    sbx_peer.sbx_spec(presets.replace(per_env, env=dict(num_envs=1)))


def test_dqn_lunarlander_is_rl_zoo(cases):
    config, spec = cases[("dqn", "LunarLander-v3")]
    kw, zoo = spec["kwargs"], se.RL_ZOO_LUNARLANDER_DQN
    assert (spec["env_id"], spec["num_envs"], spec["total_timesteps"]) == \
        ("LunarLander-v3", 1, zoo["n_timesteps"])
    assert (spec["eval_interval"], spec["eval_episodes"]) == (10_000, 10)
    for name in ("learning_rate", "batch_size", "buffer_size", "learning_starts", "gamma",
                 "target_update_interval", "train_freq", "exploration_fraction",
                 "exploration_final_eps"):
        assert kw[name] == zoo[name], name
    # gradient_steps -1 on one env: as many as the train_freq steps collected.
    assert kw["gradient_steps"] == kw["train_freq"] * spec["num_envs"]
    assert kw["policy_kwargs"] == dict(net_arch=zoo["net_arch"])
    # sbx's DQN defaults, which ours is set to: 1-step, tau 1, eps 1 at the start, Adam
    # eps 1e-8, no clip.
    assert (kw["n_steps"], kw["tau"], kw["exploration_initial_eps"]) == (1, 1.0, 1.0)
    assert spec["optimizer"] == dict(eps=1e-8, max_grad_norm=0.0)
    # The vector env's auto fields: raw rewards (a crash stays -100), one observation.
    assert (config.env.reward_clip, config.env.frame_stack) == (None, 1)


def test_unmappable_settings_are_refused():
    config = presets.dqn()
    with pytest.raises(sbx_peer.SbxMappingError, match="agent.double_q"):
        sbx_peer.sbx_spec(config)
    plain = presets.replace(config, agent=dict(double_q=False, random_warmup=True,
                                               epsilon_draw="vector_step"),
                            network=dict(mlp_hidden=(256,)),
                            env=dict(reward_clip=1.0, frame_stack=1))
    with pytest.raises(sbx_peer.SbxMappingError, match="env.reward_clip"):
        sbx_peer.sbx_spec(plain)
    stratified = presets.replace(plain, env=dict(reward_clip=None),
                                 replay=dict(sampling="stratified"))
    with pytest.raises(sbx_peer.SbxMappingError, match="replay.sampling"):
        sbx_peer.sbx_spec(stratified)
    tqc = presets.replace(presets.tqc(), env=dict(reward_clip=None, frame_stack=1))
    with pytest.raises(sbx_peer.SbxMappingError, match="tqc.num_critics"):
        sbx_peer.sbx_spec(tqc)  # the paper's 5 critics
    tm = dataclasses.replace(tqc, tqc=dataclasses.replace(tqc.tqc, num_critics=2,
                                                          critic_grad_clip=1.0))
    with pytest.raises(sbx_peer.SbxMappingError, match="tqc.critic_grad_clip"):
        sbx_peer.sbx_spec(tm)


def test_sbx_models_build(cases):
    """sbx accepts the kwargs (skipped without sbx-rl)."""
    pytest.importorskip("sbx")
    import sbx
    from stable_baselines3.common.env_util import make_vec_env

    for _, spec in cases.values():
        kwargs = dict(spec["kwargs"])
        policy_kwargs = dict(kwargs.pop("policy_kwargs"),
                             optimizer_kwargs=dict(eps=spec["optimizer"]["eps"]))
        if spec["algo"] == "DQN":
            policy_kwargs["optimizer_class"] = sbx_peer._adam(spec["optimizer"]["max_grad_norm"])
        env = make_vec_env(spec["env_id"], n_envs=spec["num_envs"], seed=0)
        model = getattr(sbx, spec["algo"])("MlpPolicy", env, policy_kwargs=policy_kwargs,
                                           **kwargs)
        assert model.batch_size == kwargs["batch_size"]
        assert model.train_freq.frequency == kwargs["train_freq"]
        if spec["algo"] == "DQN":
            # sbx divides the interval by the env count: calls of one vector step each.
            assert model.target_update_interval == \
                kwargs["target_update_interval"] // spec["num_envs"]
        else:
            assert model.policy.n_target_quantiles == 2 * (25 - 2)
        env.close()


def test_dips_after_target_worked_values():
    target = -200.0
    curves = [
        [(1, -900.0), (2, -150.0), (3, -400.0), (4, -201.0), (5, -200.0)],  # reached at 2
        [(1, -180.0), (2, -170.0)],                                         # reached at 1
        [(1, -900.0), (2, -800.0)],                                         # never
    ]
    # seed 0: 3 evaluations after step 2, two below (-400, -201; -200 is at it); seed 1: 1
    # after, none below; seed 2 never reached it.
    assert se.dips_after_target(curves, target) == "2/4"
    assert se.dips_after_target([curves[2]], target) == "-"


def test_swap_batch_from_sb3_samples():
    """sbx_swap.to_batch: one-frame stacks, discount gamma(1 - done), the rest carried."""
    torch = pytest.importorskip("torch")
    import types

    import numpy as np
    import sbx_swap

    samples = types.SimpleNamespace(
        observations=torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
        actions=torch.tensor([[0.5], [-1.0]]),
        next_observations=torch.tensor([[7.0, 8.0, 9.0], [1.0, 1.0, 1.0]]),
        dones=torch.tensor([[0.0], [1.0]]), rewards=torch.tensor([[-3.0], [-0.5]]),
        discounts=None)
    batch = sbx_swap.to_batch(samples, 0.99)
    assert batch.obs.shape == (2, 1, 3) and batch.next_obs.shape == (2, 1, 3)
    np.testing.assert_allclose(batch.next_obs[0, 0], [7.0, 8.0, 9.0])
    np.testing.assert_allclose(batch.discount, [0.99, 0.0])
    np.testing.assert_allclose(batch.reward, [-3.0, -0.5])
    np.testing.assert_allclose(batch.action, [[0.5], [-1.0]])
    np.testing.assert_allclose(batch.weights, [1.0, 1.0])
    samples.discounts = torch.tensor([[0.5], [0.25]])  # SB3's n-step buffer gives its own
    np.testing.assert_allclose(sbx_swap.to_batch(samples, 0.99).discount, [0.5, 0.0])


def test_swap_refuses_a_dqn_spec(tmp_path, cases):
    import sbx_swap

    _, spec = cases[("dqn", "CartPole-v1")]
    path = tmp_path / sbx_peer.SPEC_FILE
    path.write_text(__import__("json").dumps(dict(spec, **{sbx_peer.SWAP_FLAGS_KEY: []})))
    with pytest.raises(ValueError, match="TQC"):
        sbx_swap.run(path)


def test_swap_gives_sbx_our_policy():
    """Our actor's params in sbx's actor: the same Gaussian before the tanh (skipped
    without sbx-rl)."""
    pytest.importorskip("sbx")
    import jax
    import numpy as np
    import sbx_swap
    from sbx.common.policies import SquashedGaussianActor

    from nets.tqc import TanhGaussianActor

    obs = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    ours = TanhGaussianActor(2, (8, 8))
    params = ours.init(jax.random.PRNGKey(0), obs[:, None])["params"]
    mean, log_std = ours.apply({"params": params}, obs[:, None])
    dist = SquashedGaussianActor([8, 8], 2).apply(sbx_swap.sbx_actor_params(params, 2), obs)
    np.testing.assert_allclose(dist.distribution.mean(), mean, rtol=1e-6)
    np.testing.assert_allclose(dist.distribution.stddev(), np.exp(log_std), rtol=1e-6)
    np.testing.assert_allclose(dist.mode(), np.tanh(mean), rtol=1e-6)


def test_peer_specs_from_several_threads():
    """run_seed builds specs in its worker threads; unlocked, our config parser failed
    there (SystemError from CPython's AST constructor) for 2 of 4 seeds."""
    import concurrent.futures

    args = argparse.Namespace(algo="tqc", env="Pendulum-v1", expert="none", against="sbx",
                              overrides=[], eval_interval=1250, eval_episodes=10)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        specs = list(pool.map(lambda seed: se.peer_spec(args, seed, 7500, se.SWAP), range(4)))
    assert [spec["kwargs"]["seed"] for spec in specs] == [0, 1, 2, 3]
    assert all(spec[sbx_peer.SWAP_FLAGS_KEY][:2] == ["--algo", "tqc"] for spec in specs)
    assert sbx_peer.SWAP_FLAGS_KEY not in se.peer_spec(args, 0, 7500, "sbx")


def test_summary_table_worked_values():
    args = argparse.Namespace(algo="tqc", env="Pendulum-v1", columns=["lockstep", "sbx"],
                              budget=2000, eval_interval=1000)
    curves = {"lockstep": [[(1000, -300.0), (2000, -150.0)], [(1000, -180.0), (2000, -250.0)]],
              "sbx": [[(1000, -900.0), (2000, -800.0)], [(1000, -100.0), (2000, -120.0)]]}
    results = {c: dict(steps=[se.steps_to_target(r, -200.0) for r in curves[c]],
                       walls=[60.0, 180.0], curves=curves[c]) for c in curves}
    rows = {line.split(" | ")[0].lstrip("| "): line.rstrip(" |").split(" | ")[1:]
            for line in se.summary_table(args, results, -200.0).splitlines()[2:]}
    assert rows["seeds that reached the target"] == ["2/2", "1/2"]
    assert rows["median env steps to target"] == ["1500", "> 2000"]
    assert rows["env steps to target by seed"] == ["2000 1000", "none 1000"]
    assert rows["mean eval return at 1000"] == ["-240.0", "-500.0"]
    assert rows["mean eval return at 2000"] == ["-200.0", "-460.0"]
    assert rows["evaluations below target after reaching it"] == ["1/1", "0/1"]
    assert rows["median wall minutes per run"] == ["2.0", "2.0"]


def test_one_tqc_step_equals_sbx_given_the_same_params_batch_and_noise(monkeypatch):
    """Our TQC learn_step against sbx's ``TQC._train`` (one grad step, skipped without
    sbx-rl), from the same parameters, batch and policy noise: the same losses, temperature
    and actor; the same critics once sbx's critic Adam has eps 2e-8, because sbx steps each
    critic on its own loss where ours (as SB3's) steps the mean over critics, whose gradient
    is half as large."""
    pytest.importorskip("sbx")
    import gymnasium as gym
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import sbx
    import sbx_swap
    from sbx.common.type_aliases import ReplayBufferSamplesNp

    from replay import Batch
    from rl.learners import make_agent

    b, hidden = 64, (32, 32)
    noise, calls = np.random.default_rng(7).normal(size=(2, b)).astype(np.float32), []
    # Both draw the policy noise twice, next actions (critic) then actions (actor), as
    # [B, 1] (ours) or [1, B] (sbx's tfp): the same numbers in the same order.

    def normal(key, shape=(), dtype=jnp.float32):
        calls.append(shape)
        return jnp.asarray(noise[(len(calls) - 1) % 2].reshape(shape), dtype)

    monkeypatch.setattr(jax.random, "normal", normal)
    config = presets.replace(presets.get("tqc"), tqc=dict(
        num_critics=2, num_quantiles=5, top_quantiles_to_drop=1, critic_hidden=hidden,
        actor_hidden=hidden, actor_learning_rate=1e-3, critic_learning_rate=1e-3,
        alpha_learning_rate=1e-3), training=dict(batch_size=b), replay=dict(capacity=1024))
    agent = make_agent(config, 1, is_image=False)
    state = agent.init(jax.random.PRNGKey(0), np.zeros((1, 3), np.float32))
    rng = np.random.default_rng(0)
    obs, next_obs = (rng.normal(size=(b, 3)).astype(np.float32) for _ in range(2))
    action = rng.uniform(-1, 1, (b, 1)).astype(np.float32)
    reward = (3 * rng.normal(size=b)).astype(np.float32)

    model = sbx.TQC("MlpPolicy", gym.make("Pendulum-v1"), learning_rate=1e-3,
                    qf_learning_rate=1e-3, batch_size=b, top_quantiles_to_drop_per_net=1,
                    ent_coef="auto_1.0", policy_kwargs=dict(
                        net_arch=dict(pi=list(hidden), qf=list(hidden)), n_quantiles=5,
                        n_critics=2), seed=0)
    policy = model.policy

    def critic(params, i):
        names = {"dense0": "Dense_0", "dense1": "Dense_1", "quantiles": "Dense_2"}
        return {"params": {names[k]: jax.tree.map(lambda x: x[i], v)
                           for k, v in params["critics"].items()}}

    def reset(train_state, params, eps, **target):
        tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3, eps=eps)
        return train_state.replace(params=params, tx=tx, opt_state=tx.init(params), **target)

    actor = reset(policy.actor_state, sbx_swap.sbx_actor_params(state.actor_params, 2), 1e-8)
    qf1, qf2 = (reset(getattr(policy, f"qf{i + 1}_state"), critic(state.critic_params, i), 2e-8,
                      target_params=critic(state.target_critic_params, i)) for i in range(2))
    batch = Batch(obs=jnp.asarray(obs)[:, None], prev_actions=jnp.zeros((b, 0), jnp.int32),
                  action=jnp.asarray(action), reward=jnp.asarray(reward),
                  discount=jnp.full(b, 0.99, jnp.float32), next_obs=jnp.asarray(next_obs)[:, None],
                  next_prev_actions=jnp.zeros((b, 0), jnp.int32), n_steps=jnp.ones(b, jnp.int32),
                  indices=jnp.zeros(b, jnp.int32), weights=jnp.ones(b, jnp.float32),
                  is_demo=jnp.zeros(b, bool), is_expert=jnp.zeros(b, bool))
    ours, metrics, _ = agent.learn_step(state, batch, jax.random.PRNGKey(5))
    data = ReplayBufferSamplesNp(obs, action, next_obs, np.zeros(b, np.float32), reward,
                                 np.full(b, 0.99, np.float32))
    qf1, qf2, actor, ent_coef, _, info = model._train(
        model.tau, model.target_entropy, 1, policy.n_target_quantiles, data, 1, 0, qf1, qf2,
        actor, model.ent_coef_state, jax.random.PRNGKey(5))
    qf1_loss, qf2_loss, actor_loss = (float(x) for x in info[:3])
    assert len(calls) == 4

    close = lambda a, b: jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)
    np.testing.assert_allclose(float(metrics["critic_loss"]), (qf1_loss + qf2_loss) / 2,
                               rtol=1e-5)
    np.testing.assert_allclose(float(metrics["actor_loss"]), actor_loss, rtol=1e-5)
    np.testing.assert_allclose(float(ours.log_alpha), float(ent_coef.params["log_ent_coef"]),
                               rtol=1e-5)
    close(sbx_swap.sbx_actor_params(ours.actor_params, 2), actor.params)
    close(critic(ours.critic_params, 0), qf1.params)
    close(critic(ours.critic_params, 1), qf2.params)
    close(critic(ours.target_critic_params, 1), qf2.target_params)
