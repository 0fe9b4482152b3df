"""Device-resident replay: per-stream rings, frame-stack dedup, n-step returns, PER."""

from replay import sum_tree
from replay.buffer import Batch, DeviceReplay, ReplayState

__all__ = ["Batch", "DeviceReplay", "ReplayState", "sum_tree"]
