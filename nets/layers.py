"""Layers shared by the nets: factorised noisy dense, strided and adaptive max-pools."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def _scale_noise(x: jax.Array) -> jax.Array:
    return jnp.sign(x) * jnp.sqrt(jnp.abs(x))


class NoisyDense(nn.Module):
    """Dense layer with factorised Gaussian parameter noise (Fortunato et al. 2018, sec. 3.2).

    y = (mu_w + sigma_w * f(eps_in) f(eps_out)^T) x + mu_b + sigma_b * f(eps_out), with
    f(e) = sign(e) sqrt(|e|). mu ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), sigma = sigma0/sqrt(fan_in).
    One noise sample per call, shared across the batch, drawn from the ``noise`` rng collection.

    Attributes:
      features: output width.
      sigma0: initial noise scale (paper: 0.5).

    Call args:
      x: float [..., fan_in].
      noisy: add the noise (training / exploring) or use the means only (evaluation).
    Returns float32 [..., features].
    """

    features: int
    sigma0: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, noisy: bool) -> jax.Array:
        fan_in = x.shape[-1]
        bound = 1.0 / math.sqrt(fan_in)
        uniform = lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound)
        sigma = lambda key, shape: jnp.full(shape, self.sigma0 / math.sqrt(fan_in), jnp.float32)
        w_mu = self.param("kernel_mu", uniform, (fan_in, self.features))
        w_sigma = self.param("kernel_sigma", sigma, (fan_in, self.features))
        b_mu = self.param("bias_mu", uniform, (self.features,))
        b_sigma = self.param("bias_sigma", sigma, (self.features,))
        if not noisy:
            return x @ w_mu + b_mu
        key_in, key_out = jax.random.split(self.make_rng("noise"))
        eps_in = _scale_noise(jax.random.normal(key_in, (fan_in,)))
        eps_out = _scale_noise(jax.random.normal(key_out, (self.features,)))
        # (x * eps_in) @ (sigma * eps_out) == x @ (sigma * outer(eps_in, eps_out)) without the outer.
        return x @ w_mu + ((x * eps_in) @ w_sigma) * eps_out + b_mu + b_sigma * eps_out


class HeadDense(nn.Module):
    """A head layer that is NoisyDense when ``noisy_net`` else a plain Dense (PyTorch-style init).

    Call args: x float [..., fan_in], noisy (bool, ignored by the plain Dense).
    Returns float32 [..., features].
    """

    features: int
    noisy_net: bool
    sigma0: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, noisy: bool) -> jax.Array:
        if self.noisy_net:
            return NoisyDense(self.features, self.sigma0, name="noisy")(x, noisy)
        return nn.Dense(self.features, name="dense")(x)


def adaptive_max_pool(x: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """Adaptive max-pool over H and W, with PyTorch's AdaptiveMaxPool2d windows.

    Output cell i covers rows [floor(i*H/out), ceil((i+1)*H/out)). Max is separable, so rows
    then columns are pooled.

    Args:
      x: [B, H, W, C].
      out_hw: (out_h, out_w), each >= 1.
    Returns [B, out_h, out_w, C], same dtype.
    """

    def pool_axis(v: jax.Array, axis: int, out: int) -> jax.Array:
        size = v.shape[axis]
        cells = []
        for i in range(out):
            start, stop = (i * size) // out, -((-(i + 1) * size) // out)
            cells.append(jax.lax.slice_in_dim(v, start, stop, axis=axis).max(axis=axis,
                                                                            keepdims=True))
        return jnp.concatenate(cells, axis=axis)

    return pool_axis(pool_axis(x, 1, out_hw[0]), 2, out_hw[1])


def max_pool_same(x: jax.Array, window: int, stride: int) -> jax.Array:
    """Max-pool over H and W with SAME padding: the values and gradients of flax's
    ``nn.max_pool(x, (window, window), strides=(stride, stride), padding="SAME")``, written
    as the maximum of ``window**2`` strided slices of the input padded with -inf.

    Why: XLA:CPU lowers the gradient of ``reduce_window`` max (select-and-scatter) to slow
    index loops (177 ms against 11 ms for the forward of BTR's first pool at batch 32 on
    2 cores); the gradient of a maximum of slices is elementwise selects and pads. Where
    several inputs of a window tie for the maximum, the gradient is shared between them
    (``reduce_window`` gives it to one): ties need exactly equal floats.

    Args:
      x: float [B, H, W, C].
      window, stride: the window side and its stride, both >= 1.
    Returns [B, ceil(H / stride), ceil(W / stride), C], x's dtype.
    """
    _, h, w, _ = x.shape
    out_h, out_w = -(-h // stride), -(-w // stride)
    pads = []
    for size, out in ((h, out_h), (w, out_w)):
        total = max((out - 1) * stride + window - size, 0)
        pads.append((total // 2, total - total // 2))
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
    pooled = None
    for i in range(window):
        for j in range(window):
            part = jax.lax.slice(x, (0, i, j, 0),
                                 (x.shape[0], i + (out_h - 1) * stride + 1,
                                  j + (out_w - 1) * stride + 1, x.shape[3]),
                                 (1, stride, stride, 1))
            pooled = part if pooled is None else jnp.maximum(pooled, part)
    return pooled
