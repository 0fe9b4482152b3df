"""Flax Linen modules: torsos, noisy layers and the IQN network."""

from nets.iqn import CosineEmbedding, IQNNetwork
from nets.layers import HeadDense, NoisyDense, adaptive_max_pool
from nets.torsos import MLP, ImpalaCNN, SmallCNN, make_torso, resolve_torso

__all__ = ["CosineEmbedding", "IQNNetwork", "HeadDense", "NoisyDense", "adaptive_max_pool",
           "MLP", "ImpalaCNN", "SmallCNN", "make_torso", "resolve_torso"]
