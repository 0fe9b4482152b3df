"""Network modules: shapes, the BTR Impala layout, noisy layers, adaptive pooling."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import (Encoder, IQNNetwork, ImpalaCNN, NoisyDense, ValueHead, ValueNetwork,
                  adaptive_max_pool, make_torso, torsos)
from nets.layers import (KERNEL_GRAD_MAX_CHUNKS, Conv, add_bias, conv2d, kernel_grad_chunk,
                         max_pool_same)
from rl.config import NetworkConfig


def test_adaptive_max_pool_matches_pytorch_windows():
    x = np.random.default_rng(0).normal(size=(2, 11, 11, 3)).astype(np.float32)
    out = np.asarray(adaptive_max_pool(jnp.asarray(x), (6, 6)))
    for i in range(6):
        for j in range(6):
            r0, r1 = (i * 11) // 6, -((-(i + 1) * 11) // 6)
            c0, c1 = (j * 11) // 6, -((-(j + 1) * 11) // 6)
            np.testing.assert_allclose(out[:, i, j], x[:, r0:r1, c0:c1].max(axis=(1, 2)))


@pytest.mark.parametrize("shape, window, stride", [
    ((2, 11, 10, 3), 3, 2), ((1, 84, 84, 4), 3, 2), ((2, 8, 8, 2), 2, 2), ((1, 7, 9, 2), 3, 1)])
def test_max_pool_same_matches_reduce_window_values_and_gradients(shape, window, stride):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    cotangent = jnp.asarray(rng.normal(size=(shape[0], -(-shape[1] // stride),
                                              -(-shape[2] // stride), shape[3])), jnp.float32)
    reference = lambda v: nn.max_pool(v, (window, window), strides=(stride, stride),
                                      padding="SAME")
    ours = lambda v: max_pool_same(v, window, stride)
    np.testing.assert_array_equal(ours(x), reference(x))
    grad = lambda pool: jax.grad(lambda v: jnp.sum(pool(v) * cotangent))(x)
    np.testing.assert_allclose(grad(ours), grad(reference), rtol=1e-6, atol=1e-6)
    # Ties (small integers) go to the same input as reduce_window's gradient sends them.
    ties = jnp.asarray(rng.integers(0, 3, size=shape).astype(np.float32))
    tie_grad = lambda pool: jax.grad(lambda v: jnp.sum(pool(v) * cotangent))(ties)
    np.testing.assert_array_equal(ours(ties), reference(ties))
    np.testing.assert_allclose(tie_grad(ours), tie_grad(reference), rtol=1e-6, atol=1e-6)
    # A plain numpy reference for the windows: SAME pads (total // 2) before.
    out_h, out_w = cotangent.shape[1:3]
    pad_h = max((out_h - 1) * stride + window - shape[1], 0) // 2
    pad_w = max((out_w - 1) * stride + window - shape[2], 0) // 2
    xn = np.asarray(x)
    for i in range(out_h):
        for j in range(out_w):
            r0, c0 = max(i * stride - pad_h, 0), max(j * stride - pad_w, 0)
            r1, c1 = i * stride - pad_h + window, j * stride - pad_w + window
            np.testing.assert_array_equal(np.asarray(ours(x))[:, i, j],
                                          xn[:, r0:r1, c0:c1].max(axis=(1, 2)))


def test_impala_with_sliced_pool_equals_reduce_window_pool(monkeypatch):
    """The BTR torso's loss and parameter gradients on a fixed batch are those of the
    reduce_window pool it replaced."""
    torso = ImpalaCNN((4, 8, 8), width_scale=2, spectral_norm=True, pooled_size=6)
    obs = jnp.asarray(np.random.default_rng(2).integers(0, 256, (2, 4, 42, 42), np.uint8))
    variables = torso.init(jax.random.PRNGKey(0), obs, False)

    def loss_and_grads():
        def loss(params):
            out = torso.apply({**variables, "params": params}, obs, False)
            return jnp.mean(jnp.square(out - 0.5))
        return jax.value_and_grad(loss)(variables["params"])

    new = loss_and_grads()
    monkeypatch.setattr(torsos, "max_pool_same", lambda x, window, stride: nn.max_pool(
        x, (window, window), strides=(stride, stride), padding="SAME"))
    old = loss_and_grads()
    np.testing.assert_allclose(new[0], old[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(new[1]), jax.tree.leaves(old[1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_impala_btr_layout():
    torso = ImpalaCNN((16, 32, 32), width_scale=2, spectral_norm=True, pooled_size=6)
    obs = jnp.zeros((2, 4, 84, 84), jnp.uint8)
    variables = torso.init(jax.random.PRNGKey(0), obs, False)
    assert torso.apply(variables, obs, False).shape == (2, 64 * 36)
    # Spectral norm on the two convs of every residual block only: 3 stages x 2 blocks x 2.
    sn_paths = [p for p in jax.tree_util.tree_leaves_with_path(variables["batch_stats"])
                if p[0][-1].key.endswith("/u")]
    assert len(sn_paths) == 12
    assert all("res" in jax.tree_util.keystr(path) for path, _ in sn_paths)


def test_spectral_norm_bounds_residual_conv_gain():
    torso = ImpalaCNN((4,), width_scale=1, spectral_norm=True, pooled_size=2)
    obs = jnp.zeros((1, 1, 16, 16), jnp.uint8)
    variables = torso.init(jax.random.PRNGKey(0), obs, False)
    # Enough power iterations for sigma to converge, then the normalised kernel's largest
    # singular value (as a [9*C_in, C_out] matrix) is 1.
    for _ in range(50):
        _, updates = torso.apply(variables, obs, True, mutable=["batch_stats"])
        variables = {**variables, **updates}
    kernel = variables["params"]["stage0_res0"]["conv0"]["kernel"]
    sigma = variables["batch_stats"]["stage0_res0"]["sn0"]["conv0/kernel/sigma"]
    top = np.linalg.svd(np.asarray(kernel).reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
    np.testing.assert_allclose(sigma, top, rtol=1e-3)


def test_noisy_dense_noise_statistics():
    layer = NoisyDense(3, sigma0=0.5)
    x = jnp.ones((1, 4))
    params = layer.init({"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(1)}, x,
                        True)
    np.testing.assert_allclose(params["params"]["kernel_sigma"], 0.5 / 2.0)
    mean_out = layer.apply(params, x, False)
    keys = jax.random.split(jax.random.PRNGKey(2), 400)
    samples = jax.vmap(lambda k: layer.apply(params, x, True, rngs={"noise": k}))(keys)
    # Noise is zero-mean and changes the output; without noise the output is deterministic.
    assert float(samples.std(axis=0).min()) > 0.05
    np.testing.assert_allclose(samples.mean(axis=0), mean_out, atol=0.1)
    np.testing.assert_array_equal(layer.apply(params, x, False), mean_out)


def test_noisy_dense_equals_the_factorised_formula_values_and_gradients():
    """The layer's output and its gradients equal y = (mu_w + sigma_w * f(e_in) f(e_out)^T) x
    + mu_b + sigma_b * f(e_out), with the layer's own noise draw, written out in numpy."""
    layer = NoisyDense(6, sigma0=0.5)
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(5, 2, 7)).astype(np.float32))
    params = layer.init({"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(1)}, x,
                        True)["params"]
    params = jax.tree.map(lambda p: p + jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
    noise = jax.random.PRNGKey(4)
    f = lambda e: np.sign(e) * np.sqrt(np.abs(e))
    # NoisyDense draws from make_rng("noise"): reproduce that key outside the module.
    drawn = layer.apply({"params": params}, x, True, rngs={"noise": noise},
                        method=lambda m, x, n: m.make_rng("noise"))
    key_in, key_out = jax.random.split(drawn)
    e_in = f(np.asarray(jax.random.normal(key_in, (7,))))
    e_out = f(np.asarray(jax.random.normal(key_out, (6,))))
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    weight = p["kernel_mu"] + p["kernel_sigma"] * np.outer(e_in, e_out)
    expected = np.asarray(x, np.float64) @ weight + p["bias_mu"] + p["bias_sigma"] * e_out
    out = layer.apply({"params": params}, x, True, rngs={"noise": noise})
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # Gradients of sum(out * c): d/dW = x^T c spread by the noise outer product.
    c = rng.normal(size=expected.shape)
    grads = jax.grad(lambda q: jnp.sum(layer.apply({"params": q}, x, True, rngs={"noise": noise})
                                       * c))(params)
    xc = np.asarray(x, np.float64).reshape(-1, 7).T @ c.reshape(-1, 6)
    np.testing.assert_allclose(grads["kernel_mu"], xc, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads["kernel_sigma"], xc * np.outer(e_in, e_out), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(grads["bias_sigma"], c.reshape(-1, 6).sum(0) * e_out, rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("dueling, noisy", [(True, True), (False, False)])
def test_iqn_network_shapes_and_dueling(dueling, noisy):
    cfg = NetworkConfig(torso="mlp", mlp_hidden=(16,), hidden_dim=8, dueling=dueling,
                        noisy=noisy)
    net = IQNNetwork(Encoder(make_torso(cfg, is_image=False), num_actions=3),
                     ValueHead(3, 1, hidden_dim=8, dueling=dueling, noisy_net=noisy),
                     num_cosines=cfg.cosine_embedding_dim)
    obs = jnp.ones((5, 2, 4))
    taus = jnp.linspace(0.05, 0.95, 7)[None].repeat(5, 0)
    variables = net.init({"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(1)}, obs,
                         taus, train=False, noisy=True)
    out = net.apply(variables, obs, taus, train=False, noisy=False)
    assert out.shape == (5, 7, 3) and out.dtype == jnp.float32
    # Quantiles depend on tau.
    assert float(jnp.abs(out[:, 0] - out[:, -1]).max()) > 0
    if dueling:
        assert {"value", "advantage"} <= set(variables["params"]["head"])


def test_dueling_head_is_value_plus_centred_advantage():
    head = ValueHead(4, outputs_per_action=3, hidden_dim=5, dueling=True, noisy_net=False)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6))
    variables = head.init(jax.random.PRNGKey(1), x, False)
    out = head.apply(variables, x, False)
    assert out.shape == (2, 4, 3)
    p = variables["params"]
    dense = lambda name, v: v @ p[name]["dense"]["kernel"] + p[name]["dense"]["bias"]
    value = dense("value", jax.nn.relu(dense("value_hidden", x)))[:, None, :]
    adv = dense("advantage", jax.nn.relu(dense("advantage_hidden", x))).reshape(2, 4, 3)
    np.testing.assert_allclose(out, value + adv - adv.mean(axis=1, keepdims=True), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
def test_value_network_with_norm_and_action_history(norm):
    cfg = NetworkConfig(torso="small_cnn", cnn_channels=(4, 8), norm=norm)
    obs = jnp.asarray(np.random.default_rng(0).integers(0, 255, (3, 2, 36, 36)), jnp.uint8)
    prev = jnp.array([[-1, -1], [-1, 2], [1, 0]], jnp.int32)
    for outputs in (1, 11):  # DQN, C51 atoms
        net = ValueNetwork(Encoder(make_torso(cfg, True), 3, 8), ValueHead(3, outputs, 8))
        shape = (3, 3, outputs)
        variables = net.init({"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(1)},
                             obs, prev_actions=prev, train=False, noisy=True)
        out = net.apply(variables, obs, prev_actions=prev, train=False, noisy=False)
        assert out.shape == shape and out.dtype == jnp.float32
        assert "action_history" in variables["params"]["encoder"]
        assert ("batch_stats" in variables) == (norm == "batch")
        # The first row has no history (all -1): its one-hot input is zero.
        other = net.apply(variables, obs, prev_actions=prev.at[0].set(0), train=False, noisy=False)
        assert float(jnp.abs(other[0] - out[0]).max()) > 0
        np.testing.assert_array_equal(other[1:], out[1:])


@pytest.mark.parametrize("shape, kernel, strides, padding", [
    ((2, 9, 7, 3), 3, (1, 1), "SAME"), ((2, 9, 7, 3), 4, (1, 1), "SAME"),
    ((2, 9, 7, 3), 3, (1, 1), "VALID"), ((2, 36, 36, 4), 8, (4, 4), "VALID"),
    ((2, 15, 15, 6), 4, (2, 2), "VALID"), ((2, 11, 10, 3), 3, (2, 2), "SAME"),
    ((2, 13, 9, 3), 5, (3, 2), "VALID"), ((2, 13, 9, 3), 3, (2, 3), ((1, 2), (0, 1))),
    # Kernel gradients summed over batch chunks: 3 chunks of 8 (48x48), 2 of 8 (strided).
    ((24, 48, 48, 3), 3, (1, 1), "SAME"), ((16, 100, 100, 2), 4, (2, 2), "VALID")])
def test_conv2d_equals_lax_convolution_values_and_gradients(shape, kernel, strides, padding):
    """The layout-fixed convolution (space-to-depth for strides, kernel gradient in batch
    chunks) against lax.conv_general_dilated: outputs and both gradients on random data."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, shape[3], 5)), jnp.float32)
    reference = lambda x, w: jax.lax.conv_general_dilated(
        x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ours = lambda x, w: conv2d(x, w, strides, padding)
    out = reference(x, w)
    np.testing.assert_allclose(ours(x, w), out, rtol=1e-5, atol=1e-4)
    cotangent = jnp.asarray(rng.normal(size=out.shape), jnp.float32)
    grads = lambda conv: jax.grad(lambda x, w: jnp.sum(conv(x, w) * cotangent), (0, 1))(x, w)
    for a, b in zip(grads(ours), grads(reference)):
        # A kernel gradient entry sums up to 55k products in another order than lax's: float32
        # rounding is relative to the gradient's scale (AVX2 EPYC: 1.8e-4 at an entry of 4.2).
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4 + 1e-6 * float(jnp.abs(b).max()))


def test_kernel_gradient_chunks_divide_the_batch_near_the_target_size():
    assert kernel_grad_chunk(24, 48 * 48) == 8 and kernel_grad_chunk(16, 49 * 49) == 8
    assert kernel_grad_chunk(256, 42 * 42) == 8      # 32 chunks
    assert kernel_grad_chunk(256, 11 * 11) == 128    # 16384 / 121 = 135 -> 128
    assert kernel_grad_chunk(32, 21 * 21) == 32      # one convolution
    assert kernel_grad_chunk(1024, 84 * 84) == 32    # at most KERNEL_GRAD_MAX_CHUNKS
    assert kernel_grad_chunk(37, 84 * 84) == 37      # a prime batch: one convolution
    for batch in range(1, 300):
        for pixels in (1, 36, 121, 441, 1764, 7056):
            size = kernel_grad_chunk(batch, pixels)
            assert batch % size == 0 and batch // size <= KERNEL_GRAD_MAX_CHUNKS


def test_conv2d_refuses_dilation_and_other_layouts():
    x, w = jnp.zeros((1, 8, 8, 2)), jnp.zeros((3, 3, 2, 4))
    with pytest.raises(ValueError, match="rhs_dilation"):
        conv2d(x, w, (1, 1), "SAME", rhs_dilation=(2, 2))
    with pytest.raises(ValueError, match="NHWC"):
        conv2d(jnp.zeros((1, 2, 8, 8)), w, (1, 1), "SAME",
               dimension_numbers=("NCHW", "HWIO", "NCHW"))


@pytest.mark.parametrize("kernel, strides, padding", [
    ((3, 3), (1, 1), "SAME"), ((8, 8), (4, 4), "VALID"), ((4, 4), (2, 2), "VALID")])
def test_conv_module_is_flax_conv_with_the_same_parameters(kernel, strides, padding):
    """nets.layers.Conv against flax's nn.Conv on one key: the same parameter tree and
    initial values, outputs, and parameter gradients (its bias gradient as a matmul)."""
    x = jnp.asarray(np.random.default_rng(5).normal(size=(3, 20, 20, 4)), jnp.float32)
    ours = Conv(6, kernel, strides, padding)
    flax_conv = nn.Conv(6, kernel, strides, padding)
    params = ours.init(jax.random.PRNGKey(3), x)["params"]
    flax_params = flax_conv.init(jax.random.PRNGKey(3), x)["params"]
    jax.tree.map(np.testing.assert_array_equal, params, flax_params)
    params = {"kernel": params["kernel"], "bias": params["bias"] + 0.3}  # a nonzero bias
    out = flax_conv.apply({"params": params}, x)
    np.testing.assert_allclose(ours.apply({"params": params}, x), out, rtol=1e-5, atol=1e-5)
    cotangent = jnp.asarray(np.random.default_rng(6).normal(size=out.shape), jnp.float32)
    grads = lambda module: jax.grad(
        lambda p: jnp.sum(module.apply({"params": p}, x) * cotangent))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4),
                 grads(ours), grads(flax_conv))


def test_add_bias_gradient_is_the_sum_over_every_axis_but_the_last():
    """add_bias's gradients against numpy: g itself for y, g summed over batch and space
    (float64 reference) for the bias."""
    rng = np.random.default_rng(7)
    y = jnp.asarray(rng.normal(size=(4, 9, 7, 5)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(5,)), jnp.float32)
    g = rng.normal(size=(4, 9, 7, 5)).astype(np.float32)
    np.testing.assert_array_equal(add_bias(y, bias), y + bias)
    dy, dbias = jax.vjp(add_bias, y, bias)[1](jnp.asarray(g))
    np.testing.assert_array_equal(dy, g)
    np.testing.assert_allclose(dbias, g.astype(np.float64).sum(axis=(0, 1, 2)), rtol=1e-5,
                               atol=1e-5)
