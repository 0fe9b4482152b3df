"""Layers shared by the nets: factorised noisy dense, strided and adaptive max-pools."""

from __future__ import annotations

import functools
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
      dtype: computation dtype (the weight is built in float32, then cast).

    Call args:
      x: float [..., fan_in].
      noisy: add the noise (training / exploring) or use the means only (evaluation).
    Returns ``dtype`` [..., features].
    """

    features: int
    sigma0: float = 0.5
    dtype: jnp.dtype = jnp.float32

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
        x = x.astype(self.dtype)
        if not noisy:
            return x @ w_mu.astype(self.dtype) + b_mu.astype(self.dtype)
        key_in, key_out = jax.random.split(self.make_rng("noise"))
        eps_in = _scale_noise(jax.random.normal(key_in, (fan_in,)))
        eps_out = _scale_noise(jax.random.normal(key_out, (self.features,)))
        # One matmul with the noisy weight: half the work of x @ w_mu + ((x * eps_in) @
        # w_sigma) * eps_out from 8 rows up (BTR's head: 1.9-2x faster forward and backward).
        weight = (w_mu + w_sigma * jnp.outer(eps_in, eps_out)).astype(self.dtype)
        return x @ weight + b_mu.astype(self.dtype) + (b_sigma * eps_out).astype(self.dtype)


class HeadDense(nn.Module):
    """A head layer that is NoisyDense when ``noisy_net`` else a plain Dense (PyTorch-style init).

    Call args: x float [..., fan_in], noisy (bool, ignored by the plain Dense).
    Returns ``dtype`` [..., features] (the computation dtype; parameters float32).
    """

    features: int
    noisy_net: bool
    sigma0: float = 0.5
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, noisy: bool) -> jax.Array:
        if self.noisy_net:
            return NoisyDense(self.features, self.sigma0, self.dtype, name="noisy")(x, noisy)
        return nn.Dense(self.features, dtype=self.dtype, name="dense")(x)


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


def _same_pads(size: int, window: int, stride: int) -> tuple[int, int, int]:
    """(output size, padding before, padding after) of a SAME pool along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return out, total // 2, total - total // 2


def _window_slices(xp: jax.Array, window: int, stride: int, out_h: int, out_w: int):
    """The window**2 strided slices of the padded input, offset (i, j) in row-major order."""
    for i in range(window):
        for j in range(window):
            yield i, j, jax.lax.slice(xp, (0, i, j, 0),
                                      (xp.shape[0], i + (out_h - 1) * stride + 1,
                                       j + (out_w - 1) * stride + 1, xp.shape[3]),
                                      (1, stride, stride, 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool_same(x: jax.Array, window: int, stride: int) -> jax.Array:
    """Max-pool over H and W with SAME padding: the values and gradients of flax's
    ``nn.max_pool(x, (window, window), strides=(stride, stride), padding="SAME")``.

    The forward is the maximum of ``window**2`` strided slices of the input padded with
    -inf; it keeps the offset of each window's first maximum (uint8), and the backward sends
    each output's gradient to that input as a sum of ``window**2`` interior-padded selects,
    which XLA fuses into one pass writing the input-sized gradient.

    Why: XLA:CPU lowers the gradient of ``reduce_window`` max (select-and-scatter) to slow
    index loops (177 ms against 11 ms for the forward of BTR's first pool at batch 32 on
    2 cores), and autodiff through a chain of ``jnp.maximum`` writes one padded gradient per
    offset plus tie-splitting selects (about 230 ms of a 750 ms ``iqn_btr`` step). Ties go
    to the first offset in row-major order, as ``reduce_window``'s gradient does.

    Args:
      x: float [B, H, W, C].
      window, stride: the window side and its stride, both >= 1 (static).
    Returns [B, ceil(H / stride), ceil(W / stride), C], x's dtype.
    """
    return _max_pool_fwd(x, window, stride)[0]


def _max_pool_fwd(x, window, stride):
    (out_h, pad_h0, pad_h1), (out_w, pad_w0, pad_w1) = (
        _same_pads(x.shape[1], window, stride), _same_pads(x.shape[2], window, stride))
    xp = jnp.pad(x, ((0, 0), (pad_h0, pad_h1), (pad_w0, pad_w1), (0, 0)),
                 constant_values=-jnp.inf)
    best, where = None, None
    for i, j, part in _window_slices(xp, window, stride, out_h, out_w):
        if best is None:
            best, where = part, jnp.zeros(part.shape, jnp.uint8)
        else:
            better = part > best  # strict: the first maximum keeps the gradient
            best = jnp.where(better, part, best)
            where = jnp.where(better, jnp.uint8(i * window + j), where)
    return best, (where, x.shape)


def _max_pool_bwd(window, stride, residuals, g):
    where, shape = residuals
    (out_h, pad_h0, _), (out_w, pad_w0, _) = (_same_pads(shape[1], window, stride),
                                              _same_pads(shape[2], window, stride))
    # Padded input row p = r * stride + i of output row r and offset i: rows of one phase
    # p % stride collect the offsets i of that phase, output rows shifted by i // stride.
    # Each phase is output-sized; interleaving them is the one input-sized write.
    rows = out_h + (window - 1) // stride
    cols = out_w + (window - 1) // stride
    zero = jnp.zeros((), g.dtype)
    phases = []
    for phase_h in range(stride):
        row = []
        for phase_w in range(stride):
            grad = jnp.zeros((g.shape[0], rows, cols, g.shape[3]), g.dtype)
            for i in range(phase_h, window, stride):
                for j in range(phase_w, window, stride):
                    part = jnp.where(where == i * window + j, g, zero)
                    grad = grad + jax.lax.pad(part, zero, (
                        (0, 0, 0), (i // stride, rows - out_h - i // stride, 0),
                        (j // stride, cols - out_w - j // stride, 0), (0, 0, 0)))
            row.append(grad)
        phases.append(jnp.stack(row, axis=3))
    grad = jnp.stack(phases, axis=2).reshape(g.shape[0], rows * stride, cols * stride,
                                             g.shape[3])
    return (grad[:, pad_h0:pad_h0 + shape[1], pad_w0:pad_w0 + shape[2]],)


max_pool_same.defvjp(_max_pool_fwd, _max_pool_bwd)


_NHWC = ("NHWC", "HWIO", "NHWC")


def conv2d(x: jax.Array, kernel: jax.Array, window_strides, padding, lhs_dilation=None,
           rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
           precision=None) -> jax.Array:
    """``lax.conv_general_dilated`` (the signature flax's ``nn.Conv`` calls) for NHWC inputs
    and HWIO kernels, written as a stride-1 convolution whose VJP's two gradient convolutions
    are convolutions of that same layout. A strided convolution becomes a stride-1 one on the
    space-to-depth input (stride s: s x s blocks of pixels as channels; the kernel cut into
    the same blocks, zero-padded to a multiple of s), the same products and sums.

    Why: XLA:CPU's fast (Eigen) convolutions need that layout, without dilation. Autodiff's
    gradients of a strided convolution are dilated convolutions (generic loops on CPU), and
    inside a ``lax.scan`` or ``while`` body XLA leaves the gradient convolutions in other
    dimension orders, which also run as generic loops (a scanned ``iqn_btr`` step took 27x
    the unrolled one on 2 cores). Written out here, they are the same fast convolutions in
    or out of a loop.

    Args:
      x: float [B, H, W, C_in]; kernel: float [kh, kw, C_in, C_out].
      window_strides: (s_h, s_w) >= 1.
      padding: "SAME", "VALID" or ((lo, hi), (lo, hi)) with lo, hi >= 0.
    Returns float [B, H', W', C_out], as ``lax.conv_general_dilated``.
    Raises:
      ValueError: dilation, feature groups, or another layout than NHWC / HWIO.
    """
    if feature_group_count != 1 or any(d is not None and tuple(d) != (1, 1)
                                       for d in (lhs_dilation, rhs_dilation)):
        raise ValueError("conv2d: no dilation or feature groups (got lhs_dilation="
                         f"{lhs_dilation}, rhs_dilation={rhs_dilation}, feature_group_count="
                         f"{feature_group_count})")
    if dimension_numbers is not None and (
            jax.lax.conv_dimension_numbers(x.shape, kernel.shape, dimension_numbers)
            != jax.lax.conv_dimension_numbers(x.shape, kernel.shape, _NHWC)):
        raise ValueError(f"conv2d: NHWC inputs and HWIO kernels only, got {dimension_numbers}")
    strides = tuple(int(s) for s in window_strides)
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2], strides, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    if strides == (1, 1):
        return _conv_stride1(x, kernel, pads)
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    (s_h, s_w), (kh, kw) = strides, kernel.shape[:2]
    out_h, out_w = (x.shape[1] - kh) // s_h + 1, (x.shape[2] - kw) // s_w + 1
    blocks_h, blocks_w = -(-kh // s_h), -(-kw // s_w)
    rows, cols = (out_h - 1 + blocks_h) * s_h, (out_w - 1 + blocks_w) * s_w
    # Rows past the last window are dropped; rows the zero-padded kernel reads are zeros.
    x = jnp.pad(x[:, :rows, :cols], ((0, 0), (0, max(rows - x.shape[1], 0)),
                                      (0, max(cols - x.shape[2], 0)), (0, 0)))
    b, c = x.shape[0], x.shape[3]
    x = x.reshape(b, rows // s_h, s_h, cols // s_w, s_w, c).transpose(0, 1, 3, 2, 4, 5)
    kernel = jnp.pad(kernel, ((0, blocks_h * s_h - kh), (0, blocks_w * s_w - kw), (0, 0),
                              (0, 0)))
    kernel = kernel.reshape(blocks_h, s_h, blocks_w, s_w, c, -1).transpose(0, 2, 1, 3, 4, 5)
    return _conv_stride1(x.reshape(b, rows // s_h, cols // s_w, s_h * s_w * c),
                         kernel.reshape(blocks_h, blocks_w, s_h * s_w * c, -1),
                         ((0, 0), (0, 0)))


KERNEL_GRAD_POSITIONS = 16_384
"""Contracted positions (samples x output pixels) per convolution of a kernel gradient."""
KERNEL_GRAD_MIN_SAMPLES = 8
"""Fewest samples per convolution of a kernel gradient."""
KERNEL_GRAD_MAX_CHUNKS = 32
"""Most convolutions one kernel gradient is split into (each is an op in the program)."""


def kernel_grad_chunk(batch: int, pixels: int) -> int:
    """Samples per convolution of a kernel gradient over ``batch`` samples of ``pixels``
    output pixels: a divisor of ``batch`` near KERNEL_GRAD_POSITIONS / pixels (at least
    KERNEL_GRAD_MIN_SAMPLES, at most KERNEL_GRAD_MAX_CHUNKS chunks).

    Why: XLA:CPU's Eigen convolution is slow when the contraction over samples and pixels is
    long. On 2 AMD EPYC (Zen 5) cores, an Impala kernel gradient at batch 256 took 58.6 ms
    in one convolution and 39.1-39.5 ms as 16 or 32 summed ones (42x42, 32 -> 32 channels;
    this rule takes 32); 13.7 vs 8.3 ms at 11x11 in 2; 15.7 vs 8.6 ms at batch 32 in 4 (42x42,
    32 -> 64). The whole ``iqn_btr`` torso gradient at batch 256: 1,747 vs 1,663 ms (same at
    batch 32).

    Args: batch (samples, >= 1) and pixels (output pixels per sample) of the gradient.
    Returns a divisor of ``batch``."""
    want = max(KERNEL_GRAD_MIN_SAMPLES, KERNEL_GRAD_POSITIONS // max(pixels, 1))
    fits = [d for d in range(1, batch + 1)
            if batch % d == 0 and batch // d <= KERNEL_GRAD_MAX_CHUNKS]
    below = [d for d in fits if d <= want]
    return max(below) if below else min(fits)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_stride1(x, kernel, pads):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=_NHWC)


def _conv_stride1_fwd(x, kernel, pads):
    return _conv_stride1(x, kernel, pads), (x, kernel)


def _conv_stride1_bwd(pads, residuals, g):
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    (top, bottom), (left, right) = pads
    # dx: g against the kernel flipped in space with in/out swapped, padded to "full".
    flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
    dx = jax.lax.conv_general_dilated(
        g, flipped, (1, 1), ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right)),
        dimension_numbers=_NHWC)
    # dkernel: C_in as the batch, B as the contracted feature, g as a [H', W', B, C_out] kernel,
    # summed over chunks of the batch (see kernel_grad_chunk).
    size = kernel_grad_chunk(x.shape[0], g.shape[1] * g.shape[2])
    dkernel = sum(
        jax.lax.conv_general_dilated(
            x[i:i + size].transpose(3, 1, 2, 0), g[i:i + size].transpose(1, 2, 0, 3), (1, 1),
            pads, dimension_numbers=_NHWC)
        for i in range(0, x.shape[0], size))
    return dx, dkernel.transpose(1, 2, 0, 3)


_conv_stride1.defvjp(_conv_stride1_fwd, _conv_stride1_bwd)


@jax.custom_vjp
def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """``y + bias`` over the last axis, whose bias gradient is a matmul with a ones vector.

    Why: autodiff's bias gradient is a sum over batch and space, which XLA:CPU rewrites
    into slow windowed reductions (tree reduction for precision): 21 ms for one
    [32, 84, 84, 32] gradient against 2.9 ms as ``ones @ g`` on 2 cores; the Impala torso's
    grad step 8-10% faster. Same sum, another order (float32 rounding differs).

    Args: y float [..., C]; bias float [C]. Returns y's shape and dtype.
    """
    return y + bias


def _add_bias_fwd(y, bias):
    return y + bias, None


def _add_bias_bwd(_, g):
    rows = g.reshape(-1, g.shape[-1])
    return g, jnp.ones((rows.shape[0],), g.dtype) @ rows


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


class Conv(nn.Module):
    """2-D convolution of NHWC inputs: flax ``nn.Conv``'s parameters (``kernel``
    [kh, kw, C_in, features], LeCun normal; ``bias`` [features], zeros; same names, shapes
    and initial values), computed with :func:`conv2d` and :func:`add_bias`.

    Attributes:
      features: output channels.
      kernel_size: (kh, kw).
      strides: (s_h, s_w).
      padding: "SAME", "VALID" or ((lo, hi), (lo, hi)).
      dtype: computation dtype (parameters float32).

    Call args: x float [B, H, W, C_in]. Returns ``dtype`` [B, H', W', features].
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: str | tuple = "SAME"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.strides, self.padding)
        return add_bias(y, bias.astype(self.dtype))
