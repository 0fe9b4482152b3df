"""The PyTorch peers of benchmarks/learner.py --against-pytorch have the shapes of the
project's networks (same parameter counts), so the timings compare like with like."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import torch_peers  # noqa: E402
from rl import presets  # noqa: E402
from rl.learners import make_agent  # noqa: E402


def count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def torch_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_btr_peer_has_the_iqn_btr_network_and_a_finite_update():
    cfg = presets.get("iqn_btr")
    agent = make_agent(cfg, 5, is_image=True)
    state = jax.eval_shape(agent.init, jax.random.PRNGKey(0), np.zeros((4, 84, 84), np.uint8))
    torch.manual_seed(0)
    peer = torch_peers.BTRUpdate(5)
    # 5.27M parameters in both (BTR's figure), half of them noisy sigmas.
    assert torch_count(peer.online) == count(state.params) == 5_265_580
    priorities = peer(peer.random_batch(2, seed=0))
    assert priorities.shape == (2,) and torch.isfinite(priorities).all()
    actions = peer.act(np.zeros((3, 4, 84, 84), np.uint8))
    assert actions.shape == (3,) and ((0 <= actions) & (actions < 5)).all()


def test_tqc_peer_has_the_tqc_tm20_networks():
    cfg = presets.replace(presets.get("tqc_tm20"), env=dict(id="CarRacing-v3"))
    agent = make_agent(cfg, 3, is_image=True)
    state = jax.eval_shape(agent.init, jax.random.PRNGKey(0), np.zeros((4, 64, 64), np.uint8))
    peer = torch_peers.TQCUpdate()
    assert torch_count(peer.actor) == count(state.actor_params)
    assert torch_count(peer.critics) == count(state.critic_params)
    before = [p.clone() for p in peer.target.parameters()]
    priorities = peer(peer.random_batch(4, seed=0))
    assert priorities.shape == (4,) and torch.isfinite(priorities).all()
    moved = [not torch.equal(a, b) for a, b in zip(before, peer.target.parameters())]
    assert all(moved)  # Polyak toward the updated critics
