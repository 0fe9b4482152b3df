"""Network modules: shapes, the BTR Impala layout, noisy layers, adaptive pooling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import IQNNetwork, ImpalaCNN, NoisyDense, adaptive_max_pool, make_torso
from rl.config import NetworkConfig


def test_adaptive_max_pool_matches_pytorch_windows():
    x = np.random.default_rng(0).normal(size=(2, 11, 11, 3)).astype(np.float32)
    out = np.asarray(adaptive_max_pool(jnp.asarray(x), (6, 6)))
    for i in range(6):
        for j in range(6):
            r0, r1 = (i * 11) // 6, -((-(i + 1) * 11) // 6)
            c0, c1 = (j * 11) // 6, -((-(j + 1) * 11) // 6)
            np.testing.assert_allclose(out[:, i, j], x[:, r0:r1, c0:c1].max(axis=(1, 2)))


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


@pytest.mark.parametrize("dueling, noisy", [(True, True), (False, False)])
def test_iqn_network_shapes_and_dueling(dueling, noisy):
    cfg = NetworkConfig(torso="mlp", mlp_hidden=(16,), hidden_dim=8, dueling=dueling,
                        noisy=noisy)
    net = IQNNetwork(make_torso(cfg, is_image=False), num_actions=3, hidden_dim=8,
                     num_cosines=cfg.cosine_embedding_dim, dueling=dueling, noisy_net=noisy)
    obs = jnp.ones((5, 2, 4))
    taus = jnp.linspace(0.05, 0.95, 7)[None].repeat(5, 0)
    variables = net.init({"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(1)}, obs,
                         taus, train=False, noisy=True)
    out = net.apply(variables, obs, taus, train=False, noisy=False)
    assert out.shape == (5, 7, 3) and out.dtype == jnp.float32
    # Quantiles depend on tau.
    assert float(jnp.abs(out[:, 0] - out[:, -1]).max()) > 0
    if dueling:
        assert {"value", "advantage"} <= set(variables["params"])
