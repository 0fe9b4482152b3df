"""Implicit quantile network (Dabney et al. 2018) with dueling, optionally noisy, heads."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class CosineEmbedding(nn.Module):
    """IQN quantile embedding: ReLU(Dense(cos(pi * i * tau), i = 0..n-1)) (Dabney et al. 2018, eq. 4).

    Call args: taus float32 [B, N] in [0, 1]. Returns ``dtype`` [B, N, features] (the Dense
    computes in ``dtype``; the cosines are float32).
    """

    features: int
    num_cosines: int = 64
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, taus: jax.Array) -> jax.Array:
        i = jnp.arange(self.num_cosines, dtype=jnp.float32)
        cosines = jnp.cos(jnp.pi * i * taus[..., None])
        return nn.relu(nn.Dense(self.features, dtype=self.dtype, name="dense")(cosines))


class IQNNetwork(nn.Module):
    """Encoder -> Hadamard product with the tau embedding -> head -> quantiles (Dabney et al.
    2018).

    Attributes:
      encoder: :class:`nets.heads.Encoder` mapping obs [B, k, *frame] to features [B, F].
      head: :class:`nets.heads.ValueHead` with one output per action.
      num_cosines: cosines in the tau embedding (BTR: 64).
      dtype: computation dtype of the tau embedding (the encoder and head have their own).

    Call args:
      obs: [B, k, *frame] (uint8 images or float vectors).
      taus: float32 [B, N] quantile fractions.
      prev_actions: int32 [B, h] previous actions, or None.
      train: update normalisation statistics (mutable ``batch_stats``).
      noisy: draw head noise from the ``noise`` rng (False: noise-free means).
    Returns float32 [B, N, num_actions]: quantile values Z_tau(s, a).
    """

    encoder: nn.Module
    head: nn.Module
    num_cosines: int = 64
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, obs: jax.Array, taus: jax.Array, *, prev_actions=None, train: bool,
                 noisy: bool) -> jax.Array:
        features = self.encoder(obs, prev_actions, train)                  # [B, F]
        embedding = CosineEmbedding(features.shape[-1], self.num_cosines, self.dtype,
                                    name="tau_embedding")(taus)
        return self.head(features[:, None, :] * embedding, noisy)[..., 0]  # [B, N, A]
