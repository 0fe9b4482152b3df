"""Feature extractors. Input is a stacked observation [B, k, *frame] (or, for envs with float
features, the dict {"frame": that, "features": [B, k, F]}); output float32 [B, F_out]."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nets.layers import Conv, adaptive_max_pool, max_pool_same


def images_to_nhwc(obs: jax.Array, dtype=jnp.float32) -> jax.Array:
    """[B, k, H, W] uint8 frames -> [B, H, W, k] in [0, 1] of ``dtype`` (bfloat16 holds
    every k / 255 that float32 rounds to, to 8 bits)."""
    return jnp.transpose(obs, (0, 2, 3, 1)).astype(dtype) / 255.0


def normalize(kind: str, x: jax.Array, train: bool, name: str,
              dtype=jnp.float32) -> jax.Array:
    """Feature normalisation after a conv or dense layer, before its ReLU.

    kind: ``none``; ``layer`` (Ba et al. 2016, over the last axis); ``batch`` (Ioffe & Szegedy
    2015, PyTorch defaults momentum 0.1 / eps 1e-5: batch statistics when ``train``, else the
    running averages kept in the ``batch_stats`` collection). Output in ``dtype``; flax
    computes the statistics in float32.
    """
    if kind == "layer":
        return nn.LayerNorm(dtype=dtype, name=name)(x)
    if kind == "batch":
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                            dtype=dtype, name=name)(x)
    return x


class ResidualBlock(nn.Module):
    """ReLU, 3x3 conv, ReLU, 3x3 conv, add (Espeholt et al. 2018), convs optionally
    spectral-normalised (Miyato et al. 2018; BTR applies it here only); convs compute in
    ``dtype`` (parameters float32)."""

    channels: int
    spectral_norm: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = x
        for i in range(2):
            y = nn.relu(y)
            conv = Conv(self.channels, (3, 3), padding="SAME", name=f"conv{i}",
                        dtype=self.dtype)
            y = nn.SpectralNorm(conv, name=f"sn{i}")(y, update_stats=train) \
                if self.spectral_norm else conv(y)
        return x + y


class ImpalaCNN(nn.Module):
    """Impala CNN as used by BTR (Clark et al. 2024; Espeholt et al. 2018).

    Per stage: 3x3 conv, 3x3 stride-2 max-pool, two residual blocks; ReLU at the end; adaptive
    max-pool to pooled_size x pooled_size; flatten. With channels (16, 32, 32) x width_scale 2
    and pooled_size 6: 64 * 36 = 2304 features.

    ``norm`` (see :func:`normalize`) follows each stage's first conv. Layers compute in
    ``dtype`` (parameters float32).

    Call args: obs uint8 [B, k, H, W]; train (update spectral-norm power-iteration and
    BatchNorm stats). Returns ``dtype`` [B, channels[-1] * width_scale * pooled_size**2].
    """

    channels: Sequence[int] = (16, 32, 32)
    width_scale: int = 2
    spectral_norm: bool = True
    pooled_size: int = 6
    norm: str = "none"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, obs: jax.Array, train: bool) -> jax.Array:
        x = images_to_nhwc(obs, self.dtype)
        for s, c in enumerate(self.channels):
            c = c * self.width_scale
            x = Conv(c, (3, 3), padding="SAME", name=f"stage{s}_conv", dtype=self.dtype)(x)
            x = normalize(self.norm, x, train, f"stage{s}_norm", self.dtype)
            x = max_pool_same(x, 3, 2)
            for b in range(2):
                x = ResidualBlock(c, self.spectral_norm, self.dtype,
                                  name=f"stage{s}_res{b}")(x, train)
        x = nn.relu(x)
        x = adaptive_max_pool(x, (self.pooled_size, self.pooled_size))
        return x.reshape(x.shape[0], -1)


class SmallCNN(nn.Module):
    """Nature-DQN convolutions (Mnih et al. 2015): 8x8 s4, 4x4 s2, 3x3 s1, each followed by
    ``norm`` (see :func:`normalize`) and ReLU; flatten. Layers compute in ``dtype``.

    Call args: obs uint8 [B, k, H, W]; train (BatchNorm mode). Returns ``dtype`` [B, F].
    """

    channels: Sequence[int] = (32, 64, 64)
    norm: str = "none"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, obs: jax.Array, train: bool) -> jax.Array:
        x = images_to_nhwc(obs, self.dtype)
        specs = ((8, 4), (4, 2), (3, 1))
        for i, c in enumerate(self.channels):
            kernel, stride = specs[min(i, len(specs) - 1)]
            x = Conv(c, (kernel, kernel), strides=(stride, stride), padding="VALID",
                     name=f"conv{i}", dtype=self.dtype)(x)
            x = nn.relu(normalize(self.norm, x, train, f"norm{i}", self.dtype))
        return x.reshape(x.shape[0], -1)


class MLP(nn.Module):
    """MLP over the flattened stacked observation: Dense, ``norm`` (see :func:`normalize`),
    ReLU per layer, computing in ``dtype``.

    Call args: obs float [B, k, D]; train (BatchNorm mode). Returns ``dtype`` [B, hidden[-1]].
    """

    hidden: Sequence[int] = (256, 256)
    norm: str = "none"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, obs: jax.Array, train: bool) -> jax.Array:
        x = obs.reshape(obs.shape[0], -1).astype(self.dtype)
        for i, h in enumerate(self.hidden):
            x = nn.relu(normalize(self.norm, nn.Dense(h, dtype=self.dtype, name=f"dense{i}")(x),
                                  train, f"norm{i}", self.dtype))
        return x


def resolve_torso(name: str, is_image: bool) -> str:
    """The concrete torso for a config value: ``auto`` is mlp for vectors, small_cnn for images.

    Raises:
      ValueError: a CNN torso for vector observations or the mlp for images, naming
        ``network.torso``.
    """
    if name == "auto":
        return "small_cnn" if is_image else "mlp"
    if name in ("impala", "small_cnn") and not is_image:
        raise ValueError(f"network.torso={name!r} needs image observations but this env gives "
                         "vectors; use --network.torso mlp (or auto)")
    if name == "mlp" and is_image:
        raise ValueError("network.torso='mlp' on image observations is not supported; use "
                         "impala, small_cnn or auto")
    return name


class WithFeatures(nn.Module):
    """A torso for observations ``{"frame": [B, k, *frame], "features": float [B, k, F]}``:
    the inner torso's output on the frames (or the flattened frames when ``torso`` is None),
    concatenated with ReLU(Dense(feature_dim)) of the flattened feature stack (Linesight feeds
    its float inputs through a dense layer the same way).

    Call args: obs dict as above; train (passed to the inner torso). Returns ``dtype``
    [B, F_torso + feature_dim].
    """

    torso: nn.Module | None
    feature_dim: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, obs: dict, train: bool) -> jax.Array:
        frame = obs["frame"]
        x = (frame.reshape(frame.shape[0], -1).astype(self.dtype) if self.torso is None
             else self.torso(frame, train))
        f = obs["features"].reshape(frame.shape[0], -1).astype(self.dtype)
        f = nn.relu(nn.Dense(self.feature_dim, dtype=self.dtype, name="features")(f))
        return jnp.concatenate([x, f], axis=-1)


def make_torso(config, is_image: bool, feature_size: int = 0) -> nn.Module:
    """Build the torso named by a ``rl.config.NetworkConfig`` (see :func:`resolve_torso`),
    wrapped in :class:`WithFeatures` (``config.feature_dim`` wide) when the env has
    ``feature_size`` > 0 float features; layers compute in ``config.dtype``."""
    name = resolve_torso(config.torso, is_image)
    dtype = jnp.dtype(config.dtype)
    if name == "impala":
        torso = ImpalaCNN(tuple(config.impala_channels), config.width_scale,
                          config.spectral_norm, config.pooled_size, config.norm, dtype)
    elif name == "small_cnn":
        torso = SmallCNN(tuple(config.cnn_channels), config.norm, dtype)
    else:
        torso = MLP(tuple(config.mlp_hidden), config.norm, dtype)
    return WithFeatures(torso, config.feature_dim, dtype) if feature_size else torso
