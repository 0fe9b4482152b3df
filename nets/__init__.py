"""Flax Linen modules: torsos, encoder and heads, noisy layers and the value networks."""

from nets.heads import Encoder, ValueHead, ValueNetwork
from nets.iqn import CosineEmbedding, IQNNetwork
from nets.layers import HeadDense, NoisyDense, adaptive_max_pool
from nets.torsos import (MLP, ImpalaCNN, SmallCNN, WithFeatures, make_torso, normalize,
                         resolve_torso)

__all__ = ["Encoder", "ValueHead", "ValueNetwork", "CosineEmbedding", "IQNNetwork",
           "HeadDense", "NoisyDense", "adaptive_max_pool", "MLP", "ImpalaCNN", "SmallCNN",
           "make_torso", "normalize", "resolve_torso", "WithFeatures"]
