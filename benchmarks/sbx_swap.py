"""sbx's TQC loop with our update: where does a difference between ours and sbx come from?

``benchmarks/sample_efficiency.py --against sbx --swap`` runs, beside ours and sbx, a third
column: sbx's loop (its env, exploration, replay buffer, warm-up and evaluation, exactly as
``benchmarks/sbx_peer.py`` runs it) whose ``train`` is our TQC ``learn_step`` (``rl.tqc``),
from our initial parameters, on the batches sbx's replay samples. After every training call
our actor's parameters are copied into sbx's actor (the same Dense layers), so sbx acts and
evaluates with our policy. Seed by seed the column shares sbx's env stream and its random
draws of warm-up actions and policy noise; our initial parameters, the learner's draws and
the update are ours. A column that follows sbx seed by seed says our update is not where a
difference between ours and sbx comes from; one that follows ours says it is. Run as a
script under this project's interpreter with sbx-rl installed::

    python benchmarks/sbx_swap.py RUN_DIR/sbx_spec.json

The spec is sbx_peer's with ``sbx_peer.SWAP_FLAGS_KEY`` added: the launch/run.py flags of
our seed, from which our config is rebuilt. It writes ``evaluations.json`` as sbx_peer
does. TQC only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import rl  # noqa: E402,F401  (the project's XLA flags, before jax starts)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import envs  # noqa: E402
import sbx_peer  # noqa: E402
from launch import cli  # noqa: E402
from replay import Batch  # noqa: E402
from rl import config as config_lib  # noqa: E402
from rl.learners import make_agent  # noqa: E402


def sbx_actor_params(actor_params: dict, num_hidden: int) -> dict:
    """Our ``TanhGaussianActor`` params as sbx's ``SquashedGaussianActor`` params: hidden
    layers ``dense{i}`` -> ``Dense_{i}``, then ``mean`` and ``log_std`` (same shapes)."""
    names = {f"dense{i}": f"Dense_{i}" for i in range(num_hidden)}
    names.update(mean=f"Dense_{num_hidden}", log_std=f"Dense_{num_hidden + 1}")
    return {"params": {names[k]: v for k, v in actor_params.items()}}


def to_batch(samples, gamma: float) -> Batch:
    """SB3 replay samples as our :class:`replay.Batch` of 1-step transitions.

    Args: ``samples`` with float32 torch tensors ``observations`` / ``next_observations``
    [B, *obs], ``actions`` [B, d], ``rewards`` / ``dones`` [B, 1] (``dones`` already 0 at
    time-limit ends, SB3's handle_timeout_termination) and ``discounts`` [B, 1] or None;
    ``gamma``, used when ``discounts`` is None.
    Returns obs / next_obs float32 [B, 1, *obs] (one-frame stacks), discount float32 [B] =
    discount x (1 - done), unit importance weights, no action history."""
    obs = samples.observations.numpy()
    n = obs.shape[0]
    dones = samples.dones.numpy().reshape(-1)
    discounts = (np.full(n, gamma, np.float32) if samples.discounts is None
                 else samples.discounts.numpy().reshape(-1))
    no_history = jnp.zeros((n, 0), jnp.int32)
    return Batch(obs=jnp.asarray(obs)[:, None], prev_actions=no_history,
                 action=jnp.asarray(samples.actions.numpy()),
                 reward=jnp.asarray(samples.rewards.numpy().reshape(-1)),
                 discount=jnp.asarray(discounts * (1.0 - dones), jnp.float32),
                 next_obs=jnp.asarray(samples.next_observations.numpy())[:, None],
                 next_prev_actions=no_history, n_steps=jnp.ones(n, jnp.int32),
                 indices=jnp.zeros(n, jnp.int32), weights=jnp.ones(n, jnp.float32),
                 is_demo=jnp.zeros(n, bool), is_expert=jnp.zeros(n, bool))


def run(spec_path: Path) -> dict:
    """Train the spec at ``spec_path`` with our update in sbx's loop (see the module
    docstring); returns sbx_peer.run's result.

    Raises:
      ValueError: the spec is not TQC or has no ``our_flags``.
    """
    spec = json.loads(spec_path.read_text())
    if spec["algo"] != "TQC" or sbx_peer.SWAP_FLAGS_KEY not in spec:
        raise ValueError(f"{spec_path}: the swap runs TQC specs with "
                         f"{sbx_peer.SWAP_FLAGS_KEY!r}, got algo {spec['algo']!r} and keys "
                         f"{sorted(spec)}")
    import sbx
    config = cli.parse(spec[sbx_peer.SWAP_FLAGS_KEY]).config
    env_spec = envs.env_spec(config.env.id, **envs.make_kwargs(config))
    config = config_lib.resolve_env_auto(config, env_spec.is_image)
    agent = make_agent(config, env_spec.num_actions, env_spec.is_image, env_spec.feature_size)
    key = jax.random.PRNGKey(spec["kwargs"]["seed"])
    init_key, key = jax.random.split(key)
    obs_example = envs.zeros_obs(env_spec, (config.env.frame_stack,))
    ours = dict(state=agent.init(init_key, obs_example), key=key)
    learn_step = jax.jit(agent.learn_step, donate_argnums=0)
    num_hidden = len(config.tqc.actor_hidden)

    def give_sbx_our_actor(model) -> None:
        model.policy.actor_state = model.policy.actor_state.replace(
            params=sbx_actor_params(ours["state"].actor_params, num_hidden))

    def train(self, gradient_steps: int, batch_size: int) -> None:
        for _ in range(gradient_steps):
            batch = to_batch(self.replay_buffer.sample(batch_size), self.gamma)
            ours["key"], step_key = jax.random.split(ours["key"])
            ours["state"], _, _ = learn_step(ours["state"], batch, step_key)
        give_sbx_our_actor(self)

    setup_model = sbx.TQC._setup_model

    def setup_with_our_actor(self) -> None:
        setup_model(self)
        give_sbx_our_actor(self)

    sbx.TQC.train = train
    sbx.TQC._setup_model = setup_with_our_actor
    return sbx_peer.run(spec_path)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} RUN_DIR/{sbx_peer.SPEC_FILE}")
    run(Path(sys.argv[1]))
