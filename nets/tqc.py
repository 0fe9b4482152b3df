"""Actor and critic ensemble of TQC (Kuznetsov et al. 2020) for continuous actions."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _features(torso: nn.Module | None, obs: jax.Array, dtype) -> jax.Array:
    """CNN features of images, or the flattened stacked vector observation in ``dtype``."""
    if torso is None:
        return obs.reshape(obs.shape[0], -1).astype(dtype)
    return torso(obs, False)


def _mlp(x: jax.Array, hidden: Sequence[int], dtype) -> jax.Array:
    for i, h in enumerate(hidden):
        x = nn.relu(nn.Dense(h, dtype=dtype, name=f"dense{i}")(x))
    return x


class TanhGaussianActor(nn.Module):
    """Squashed Gaussian policy: features -> MLP -> (mean, log_std) of u; a = tanh(u).

    Attributes:
      action_dim: d.
      hidden: MLP widths.
      torso: CNN for image observations, or None (vector observations are flattened).
      log_std_min, log_std_max: clip of log_std.
      dtype: computation dtype of the MLP (parameters float32; the torso has its own).

    Call args: obs [B, k, *frame]. Returns (mean, log_std), float32 [B, d] each.
    """

    action_dim: int
    hidden: Sequence[int] = (256, 256)
    torso: nn.Module | None = None
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = _mlp(_features(self.torso, obs, self.dtype), self.hidden, self.dtype)
        mean = nn.Dense(self.action_dim, dtype=self.dtype, name="mean")(x).astype(jnp.float32)
        log_std = nn.Dense(self.action_dim, dtype=self.dtype,
                           name="log_std")(x).astype(jnp.float32)
        return mean, jnp.clip(log_std, self.log_std_min, self.log_std_max)


class QuantileCritic(nn.Module):
    """One distributional critic: [features, action] -> MLP -> M quantiles of Z(s, a).

    Call args: obs [B, k, *frame], action float32 [B, d]. Returns float32 [B, M] (layers
    compute in ``dtype``).
    """

    num_quantiles: int
    hidden: Sequence[int] = (512, 512, 512)
    torso: nn.Module | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = jnp.concatenate([_features(self.torso, obs, self.dtype), action.astype(self.dtype)],
                            axis=-1)
        return nn.Dense(self.num_quantiles, dtype=self.dtype, name="quantiles")(
            _mlp(x, self.hidden, self.dtype)).astype(jnp.float32)


class CriticEnsemble(nn.Module):
    """N quantile critics as one vmapped module: parameters carry a leading axis N and each
    critic is initialised from its own key (seed 004's identical twins cannot happen).

    Call args: obs [B, k, *frame], action [B, d]. Returns float32 [B, N, M].
    """

    num_critics: int
    num_quantiles: int
    hidden: Sequence[int] = (512, 512, 512)
    torso: nn.Module | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        ensemble = nn.vmap(QuantileCritic, variable_axes={"params": 0},
                           split_rngs={"params": True}, in_axes=None, out_axes=1,
                           axis_size=self.num_critics)
        return ensemble(self.num_quantiles, self.hidden, self.torso, self.dtype,
                        name="critics")(obs, action)
