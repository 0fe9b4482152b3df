"""Pieces shared by the value networks: the encoder (torso plus action history) and the
(dueling, optionally noisy) head; and the DQN / C51 network built from them."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nets.layers import HeadDense


class Encoder(nn.Module):
    """Torso features, optionally concatenated with an embedding of the previous actions.

    With ``action_history_dim > 0`` and ``prev_actions`` of width h > 0, the h previous
    actions are one-hot encoded (-1, before the episode start, encodes as all zeros),
    flattened to [B, h * num_actions] and passed through Dense(action_history_dim) + ReLU
    (the seeds' ``action_history_hidden_dim``).

    Attributes:
      torso: module mapping obs [B, k, *frame] to float32 [B, F] (nets.torsos).
      num_actions: size of the discrete action set.
      action_history_dim: width of the action-history embedding; 0 ignores prev_actions.
      dtype: computation dtype of the embedding (the torso has its own).

    Call args: obs [B, k, *frame]; prev_actions int32 [B, h] or None; train (BatchNorm and
    spectral-norm statistics). Returns the torso's dtype [B, F (+ action_history_dim)].
    """

    torso: nn.Module
    num_actions: int
    action_history_dim: int = 0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, obs, prev_actions: jax.Array | None, train: bool) -> jax.Array:
        features = self.torso(obs, train)
        if self.action_history_dim == 0 or prev_actions is None or prev_actions.shape[-1] == 0:
            return features
        one_hot = jax.nn.one_hot(prev_actions, self.num_actions, dtype=jnp.float32)  # -1 -> 0s
        history = one_hot.reshape(one_hot.shape[0], -1)
        history = nn.relu(nn.Dense(self.action_history_dim, dtype=self.dtype,
                                   name="action_history")(history))
        return jnp.concatenate([features, history], axis=-1)


class ValueHead(nn.Module):
    """Per-action outputs from features, dueling or not (Wang et al. 2016).

    Dueling: V(x) [..., 1, K] + A(x) [..., A, K] - mean_a A(x); each stream is
    Dense(hidden) + ReLU + Dense. Plain: Dense(hidden) + ReLU + Dense(A * K). K is
    ``outputs_per_action`` (1 for Q values and IQN quantiles, the atom count for C51).

    Attributes:
      num_actions, outputs_per_action, hidden_dim: sizes.
      dueling: value + advantage streams.
      noisy_net: NoisyDense layers (Fortunato et al. 2018) with sigma0.
      dtype: computation dtype of the layers (parameters float32); the output is float32.

    Call args: x float [..., F]; noisy (draw head noise from the ``noise`` rng).
    Returns float32 [..., num_actions, outputs_per_action].
    """

    num_actions: int
    outputs_per_action: int = 1
    hidden_dim: int = 512
    dueling: bool = True
    noisy_net: bool = True
    sigma0: float = 0.5
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, noisy: bool) -> jax.Array:
        a, k = self.num_actions, self.outputs_per_action
        dense = lambda n, name: HeadDense(n, self.noisy_net, self.sigma0, self.dtype, name=name)
        shape = x.shape[:-1]
        if not self.dueling:
            h = nn.relu(dense(self.hidden_dim, "hidden")(x, noisy))
            return dense(a * k, "q")(h, noisy).reshape(*shape, a, k).astype(jnp.float32)
        value = dense(k, "value")(nn.relu(dense(self.hidden_dim, "value_hidden")(x, noisy)),
                                  noisy).reshape(*shape, 1, k)
        adv = dense(a * k, "advantage")(
            nn.relu(dense(self.hidden_dim, "advantage_hidden")(x, noisy)), noisy
        ).reshape(*shape, a, k)
        value, adv = value.astype(jnp.float32), adv.astype(jnp.float32)
        return value + adv - adv.mean(axis=-2, keepdims=True)


class ValueNetwork(nn.Module):
    """Encoder -> head: K outputs per action (DQN: K = 1, Mnih et al. 2015; C51: K logits over
    the atoms, Bellemare et al. 2017).

    Attributes: encoder (:class:`Encoder`); head (:class:`ValueHead`).
    Call args: obs [B, k, *frame]; prev_actions int32 [B, h] or None; train; noisy.
    Returns float32 [B, num_actions, outputs_per_action].
    """

    encoder: Encoder
    head: ValueHead

    def __call__(self, obs, *, prev_actions=None, train: bool, noisy: bool) -> jax.Array:
        return self.head(self.encoder(obs, prev_actions, train), noisy)
