"""Implicit quantile network (Dabney et al. 2018) with dueling, optionally noisy, heads."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nets.layers import HeadDense


class CosineEmbedding(nn.Module):
    """IQN quantile embedding: ReLU(Dense(cos(pi * i * tau), i = 0..n-1)) (Dabney et al. 2018, eq. 4).

    Call args: taus float32 [B, N] in [0, 1]. Returns float32 [B, N, features].
    """

    features: int
    num_cosines: int = 64

    @nn.compact
    def __call__(self, taus: jax.Array) -> jax.Array:
        i = jnp.arange(self.num_cosines, dtype=jnp.float32)
        cosines = jnp.cos(jnp.pi * i * taus[..., None])
        return nn.relu(nn.Dense(self.features, name="dense")(cosines))


class IQNNetwork(nn.Module):
    """Torso -> Hadamard product with the tau embedding -> dueling heads -> quantiles.

    Attributes:
      torso: a module mapping obs [B, k, *frame] to features [B, F] (nets.torsos).
      num_actions: size of the discrete action set.
      hidden_dim: hidden width of each head (BTR: 512).
      num_cosines: cosines in the tau embedding (BTR: 64).
      dueling: value + advantage - mean(advantage) (Wang et al. 2016).
      noisy_net: NoisyDense head layers (Fortunato et al. 2018) with sigma0.

    Call args:
      obs: [B, k, *frame] (uint8 images or float vectors).
      taus: float32 [B, N] quantile fractions.
      train: update spectral-norm statistics (mutable ``batch_stats``).
      noisy: draw head noise from the ``noise`` rng (False: noise-free means).
    Returns float32 [B, N, num_actions]: quantile values Z_tau(s, a).
    """

    torso: nn.Module
    num_actions: int
    hidden_dim: int = 512
    num_cosines: int = 64
    dueling: bool = True
    noisy_net: bool = True
    sigma0: float = 0.5

    @nn.compact
    def __call__(self, obs: jax.Array, taus: jax.Array, *, train: bool, noisy: bool) -> jax.Array:
        features = self.torso(obs, train)                       # [B, F]
        embedding = CosineEmbedding(features.shape[-1], self.num_cosines, name="tau_embedding")(taus)
        x = features[:, None, :] * embedding                    # [B, N, F]
        dense = lambda n, name: HeadDense(n, self.noisy_net, self.sigma0, name=name)
        if not self.dueling:
            h = nn.relu(dense(self.hidden_dim, "hidden")(x, noisy))
            return dense(self.num_actions, "q")(h, noisy)
        value = dense(1, "value")(nn.relu(dense(self.hidden_dim, "value_hidden")(x, noisy)), noisy)
        adv = dense(self.num_actions, "advantage")(
            nn.relu(dense(self.hidden_dim, "advantage_hidden")(x, noisy)), noisy)
        return value + adv - adv.mean(axis=-1, keepdims=True)
