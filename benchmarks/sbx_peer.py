"""sbx (Stable Baselines Jax, PyPI ``sbx-rl``) as the peer of ``benchmarks/sample_efficiency.py
--against sbx``: our run's settings mapped onto sbx's DQN / TQC, and one sbx run.

:func:`sbx_spec` reads a resolved :class:`rl.config.Config` and returns what an sbx run needs
(constructor kwargs, env, seed, budget, evaluation cadence) as plain JSON data, or raises
:class:`SbxMappingError` naming the field sbx cannot reproduce. It needs neither sbx nor jax.
Run as a script under an interpreter that has sbx (``--sbx-python``)::

    python benchmarks/sbx_peer.py RUN_DIR/sbx_spec.json

it trains that spec and writes ``evaluations.json`` beside it: ``[env step, mean return,
[returns]]`` at every multiple of the evaluation interval (deterministic actions, episode i
of the evaluation at step t reset with seed ``seed + 100_003 + t + i``, as ours in
``launch/evaluation.py``), and the run's wall seconds. This file imports nothing of ours, so
sbx may live in another venv.

How our settings become sbx's (sbx 0.28 / SB3 2.9 semantics):

- grad steps: ours earn ``training.replay_ratio`` grad steps per env step, run in calls of
  ``training.grad_steps_per_call``; sbx runs ``gradient_steps`` every ``train_freq`` vector
  steps. ``train_freq`` is the fewest vector steps whose credit is a whole number of calls,
  ``gradient_steps`` that credit (RL Zoo's ``train_freq 4, gradient_steps -1`` on one env is
  our replay ratio 1 in calls of 4).
- DQN target: ours copies every ``agent.target_update_period`` optimizer updates, sbx every
  ``target_update_interval`` env steps: period x ``Config.env_steps_per_update``.
- DQN exploration: ours linear over ``agent.epsilon_decay_steps`` env steps, sbx over
  ``exploration_fraction`` of ``total_timesteps``: decay_steps / total_steps. SB3 draws the
  epsilon coin once per vector step (all envs explore or none): ours with
  ``agent.epsilon_draw vector_step`` (or one env).
- Adam's eps (``optimizer_kwargs``) and DQN's global-norm clip (an optax chain built here;
  sbx's DQN has no clip of its own) travel too.
- Not in sbx, so refused: double Q, dueling, noisy nets, PER, Munchausen, lr schedules,
  gradient accumulation, soft or mixed DQN targets, epsilon cutoffs, evaluation epsilon > 0,
  more or fewer than 2 TQC critics, TQC gradient clips, reward clipping / scaling, frame
  stacks > 1, a DQN torso other than one Dense layer as wide as the head.
"""

from __future__ import annotations

import fractions
import json
import sys
import time
from pathlib import Path

SPEC_FILE = "sbx_spec.json"
"""The spec's file name in an sbx run directory."""
EVALUATIONS_FILE = "evaluations.json"
"""What an sbx run writes beside its spec."""
EVAL_SEED_OFFSET = 100_003
"""Evaluation env seeds are seed + this + eval step + episode (``launch/evaluation.py``)."""
MAX_TRAIN_FREQ = 1_000
"""Longest train_freq (vector steps) accepted when mapping a replay ratio."""
SWAP_FLAGS_KEY = "our_flags"
"""Spec key of ``benchmarks/sbx_swap.py``: our run's launch/run.py flags."""

SBX_LOG_STD = (-20.0, 2.0)
"""sbx's SquashedGaussianActor clips log std to these (fixed in sbx)."""
SBX_ALPHA_ADAM_EPS = 1e-8
"""sbx's entropy-coefficient optimiser is ``optax.adam`` with its default eps."""


class SbxMappingError(ValueError):
    """A setting of our run that sbx cannot reproduce."""

    def __init__(self, field: str, value: object, why: str):
        super().__init__(f"sbx cannot reproduce {field}={value!r}: {why}")


def _need(ok: bool, field: str, value: object, why: str) -> None:
    if not ok:
        raise SbxMappingError(field, value, why)


def train_schedule(replay_ratio: float, grad_steps_per_call: int, num_envs: int
                   ) -> tuple[int, int]:
    """(train_freq in vector steps, gradient_steps) that run our grad steps: ``replay_ratio``
    per env step in calls of ``grad_steps_per_call``, ``num_envs`` env steps per vector step.

    Worked numbers: ratio 1, calls of 4, 1 env -> (4, 4) (RL Zoo's LunarLander DQN); ratio
    0.5, calls of 1, 4 envs -> (1, 2) (our dqn preset); ratio 1, calls of 1, 1 env -> (1, 1).
    """
    credit = fractions.Fraction(replay_ratio).limit_denominator(10_000) * num_envs
    per_call = fractions.Fraction(grad_steps_per_call)
    # Fewest vector steps whose credit is a whole number of calls.
    calls = credit / per_call
    train_freq = calls.denominator
    _need(train_freq <= MAX_TRAIN_FREQ, "training.replay_ratio", replay_ratio,
          f"needs a train_freq of {train_freq} vector steps (> {MAX_TRAIN_FREQ})")
    return train_freq, int(credit * train_freq)


def _common(config) -> dict:
    """Checks and kwargs shared by DQN and TQC: env preprocessing, replay, loop sizes."""
    env, agent, training, replay = config.env, config.agent, config.training, config.replay
    _need(env.frame_stack == 1, "env.frame_stack", env.frame_stack,
          "sbx feeds the env's observation as is (resolve auto first; vectors give 1)")
    _need(env.reward_clip is None, "env.reward_clip", env.reward_clip,
          "sbx stores raw rewards (resolve auto first; vectors give None)")
    _need(env.reward_scale == 1.0, "env.reward_scale", env.reward_scale, "sbx stores raw rewards")
    _need(env.max_episode_steps is None, "env.max_episode_steps", env.max_episode_steps,
          "the peer uses the registered time limit")
    _need(not replay.prioritized, "replay.prioritized", True, "sbx samples uniformly")
    _need(not replay.stratified, "replay.sampling", replay.sampling,
          "sbx draws each batch i.i.d. (iid, or auto without PER)")
    _need(config.demos.path is None and config.expert.kind == "none", "expert.kind",
          config.expert.kind, "sbx learns from its own steps only")
    _need(agent.lr_schedule == "constant" and agent.optimizer == "adam", "agent.lr_schedule",
          agent.lr_schedule, "the peer gives sbx a constant-lr Adam")
    _need(agent.grad_accumulation == 1, "agent.grad_accumulation", agent.grad_accumulation,
          "sbx applies every gradient step")
    train_freq, gradient_steps = train_schedule(training.replay_ratio,
                                                training.grad_steps_per_call, env.num_envs)
    return dict(buffer_size=replay.capacity, learning_starts=training.learning_starts,
                batch_size=training.batch_size, gamma=agent.gamma, n_steps=agent.n_step,
                train_freq=train_freq, gradient_steps=gradient_steps, seed=config.seed,
                verbose=0)


def _dqn_kwargs(config) -> tuple[dict, dict]:
    agent, net, training = config.agent, config.network, config.training
    _need(not agent.double_q, "agent.double_q", True,
          "sbx's DQN bootstraps from max_a Q_target (set --agent.no-double-q)")
    _need(not net.dueling and not net.noisy, "network.dueling" if net.dueling else
          "network.noisy", True, "sbx's QNetwork is a plain MLP")
    _need(net.torso in ("mlp", "auto") and net.norm == "none" and net.action_history == 0,
          "network.torso", net.torso, "sbx's MlpPolicy is Dense-ReLU layers, no norm")
    _need(tuple(net.mlp_hidden) == (net.hidden_dim,), "network.mlp_hidden", net.mlp_hidden,
          f"sbx's QNetwork has two hidden layers of one width: ours must be one torso layer "
          f"as wide as the head (--network.mlp-hidden {net.hidden_dim})")
    _need(agent.td_loss == "huber" and agent.kappa == 1.0, "agent.kappa", agent.kappa,
          "sbx's DQN uses optax.huber_loss with delta 1")
    _need(agent.target_update == "hard", "agent.target_update", agent.target_update,
          "sbx's DQN copies the target every target_update_interval env steps (tau 1)")
    period = agent.target_update_period * config.env_steps_per_update
    _need(float(period).is_integer(), "agent.target_update_period", agent.target_update_period,
          f"is {period:g} env steps, not a whole number")
    _need(agent.epsilon_schedule == "linear" and agent.epsilon_unit == "steps"
          and agent.epsilon_cutoff is None and agent.epsilon_off_fraction is None,
          "agent.epsilon_schedule", agent.epsilon_schedule,
          "sbx's epsilon is linear in env steps, with no cutoff")
    _need(agent.eval_epsilon == 0.0, "agent.eval_epsilon", agent.eval_epsilon,
          "the peer evaluates with deterministic (greedy) actions")
    _need(agent.epsilon_draw == "vector_step" or config.env.num_envs == 1,
          "agent.epsilon_draw", agent.epsilon_draw,
          "SB3's DQN.predict draws epsilon once per vector step (--agent.epsilon-draw "
          "vector_step)")
    _need(not (training.learning_starts > 0 and not agent.random_warmup), "agent.random_warmup",
          False, "SB3 acts uniformly at random before learning_starts (--agent.random-warmup)")
    kwargs = dict(
        target_update_interval=int(period), tau=1.0, learning_rate=agent.learning_rate,
        exploration_initial_eps=agent.epsilon_start, exploration_final_eps=agent.epsilon_end,
        exploration_fraction=agent.epsilon_decay_steps / training.total_steps,
        policy_kwargs=dict(net_arch=[net.hidden_dim, net.hidden_dim]))
    return kwargs, dict(eps=agent.adam_eps, max_grad_norm=agent.max_grad_norm)


def _tqc_kwargs(config) -> tuple[dict, dict]:
    agent, tqc = config.agent, config.tqc
    _need(tqc.num_critics == 2, "tqc.num_critics", tqc.num_critics, "sbx's TQC has 2 critics")
    _need(not tqc.shared_critic_init, "tqc.shared_critic_init", True,
          "sbx initialises its critics from separate keys")
    _need(tqc.actor_grad_clip == 0 and tqc.critic_grad_clip == 0, "tqc.critic_grad_clip",
          tqc.critic_grad_clip, "sbx's TQC does not clip gradients")
    _need(tqc.alpha_learning_rate == tqc.actor_learning_rate, "tqc.alpha_learning_rate",
          tqc.alpha_learning_rate, "sbx steps the temperature at the actor's learning rate")
    _need(agent.adam_eps == SBX_ALPHA_ADAM_EPS, "agent.adam_eps", agent.adam_eps,
          f"sbx's temperature optimiser has Adam's default eps {SBX_ALPHA_ADAM_EPS}")
    _need((tqc.log_std_min, tqc.log_std_max) == SBX_LOG_STD, "tqc.log_std_min",
          (tqc.log_std_min, tqc.log_std_max), f"sbx clips log std to {SBX_LOG_STD}")
    _need(agent.kappa == 1.0 and agent.target_clamp is None, "agent.kappa", agent.kappa,
          "sbx's quantile Huber threshold is 1, its backup unclipped")
    _need(config.network.torso in ("mlp", "auto"), "network.torso", config.network.torso,
          "the peer runs sbx's MlpPolicy")
    _need(not (config.training.learning_starts > 0 and not agent.random_warmup),
          "agent.random_warmup", False, "SB3 acts uniformly at random before learning_starts")
    kwargs = dict(
        learning_rate=tqc.actor_learning_rate, qf_learning_rate=tqc.critic_learning_rate,
        tau=agent.target_tau, policy_delay=tqc.policy_delay,
        top_quantiles_to_drop_per_net=tqc.top_quantiles_to_drop,
        ent_coef=f"auto_{tqc.alpha}" if tqc.learn_alpha else float(tqc.alpha),
        target_entropy="auto" if tqc.target_entropy is None else float(tqc.target_entropy),
        policy_kwargs=dict(net_arch=dict(pi=list(tqc.actor_hidden), qf=list(tqc.critic_hidden)),
                           n_quantiles=tqc.num_quantiles, n_critics=tqc.num_critics))
    return kwargs, dict(eps=agent.adam_eps, max_grad_norm=0.0)


def sbx_spec(config) -> dict:
    """The sbx run of a resolved config (``rl.config.resolve_env_auto`` applied): JSON data
    with ``algo`` (DQN or TQC), ``env_id``, ``num_envs``, ``total_timesteps``,
    ``eval_interval`` / ``eval_episodes`` (env steps / episodes), ``kwargs`` (the sbx
    constructor's) and ``optimizer`` (Adam eps, DQN's global-norm clip; 0: none).

    Raises:
      SbxMappingError: a setting sbx cannot reproduce, naming our field.
    """
    learner, training = config.agent.learner, config.training
    _need(learner in ("dqn", "tqc"), "agent.learner", learner, "sbx has DQN and TQC here")
    _need(training.eval_interval > 0, "training.eval_interval", 0, "the comparison needs it")
    kwargs, optimizer = (_dqn_kwargs if learner == "dqn" else _tqc_kwargs)(config)
    return dict(algo=learner.upper(), env_id=config.env.id, num_envs=config.env.num_envs,
                total_timesteps=training.total_steps, eval_interval=training.eval_interval,
                eval_episodes=training.eval_episodes,
                kwargs={**_common(config), **kwargs}, optimizer=optimizer)


# --- the run (imports sbx; nothing of ours) ---------------------------------------------

def _adam(max_grad_norm: float):
    """An optimizer_class for sbx's policies: Adam, after a global-norm clip when > 0."""
    import optax

    def make(learning_rate, **kwargs):
        adam = optax.adam(learning_rate, **kwargs)
        return optax.chain(optax.clip_by_global_norm(max_norm=max_grad_norm), adam) \
            if max_grad_norm > 0 else adam
    return make


def evaluate(model, env_id: str, episodes: int, seed: int) -> list[float]:
    """Returns of ``episodes`` episodes of the deterministic policy; episode i reset with seed
    ``seed + i``."""
    import gymnasium as gym

    env, returns = gym.make(env_id), []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def run(spec_path: Path) -> dict:
    """Train the spec at ``spec_path``; write and return its evaluations."""
    import sbx
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    spec = json.loads(spec_path.read_text())
    kwargs = dict(spec["kwargs"])
    seed, interval = kwargs["seed"], spec["eval_interval"]
    policy_kwargs = dict(kwargs.pop("policy_kwargs"))
    policy_kwargs["optimizer_class"] = _adam(spec["optimizer"]["max_grad_norm"])
    policy_kwargs["optimizer_kwargs"] = dict(eps=spec["optimizer"]["eps"])
    if spec["algo"] == "TQC":  # sbx wraps it in inject_hyperparams; the mapping has no clip
        import optax
        policy_kwargs["optimizer_class"] = optax.adam
    evaluations: list = []

    class EvalAtMultiples(BaseCallback):
        """Evaluate on the first vector step at or past each multiple of the interval, logged
        at the multiple (as ours)."""

        def _on_step(self) -> bool:
            due = self.num_timesteps // interval * interval
            if due > (evaluations[-1][0] if evaluations else 0):
                returns = evaluate(self.model, spec["env_id"], spec["eval_episodes"],
                                   seed + EVAL_SEED_OFFSET + due)
                evaluations.append([due, sum(returns) / len(returns), returns])
                print(f"eval at env step {due}: {evaluations[-1][1]:.2f}", flush=True)
            return True

    env = make_vec_env(spec["env_id"], n_envs=spec["num_envs"], seed=seed)
    model = getattr(sbx, spec["algo"])("MlpPolicy", env, policy_kwargs=policy_kwargs, **kwargs)
    start = time.perf_counter()
    model.learn(total_timesteps=spec["total_timesteps"], callback=EvalAtMultiples())
    result = dict(evaluations=evaluations, wall_s=time.perf_counter() - start,
                  sbx_version=sbx.__version__)
    (spec_path.parent / EVALUATIONS_FILE).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} RUN_DIR/{SPEC_FILE}")
    run(Path(sys.argv[1]))
