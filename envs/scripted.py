"""Scripted policies for the classic-control envs: worked examples of the ``module:function``
policies that ``launch/record_demos.py`` records demonstrations from.

A scripted policy takes the stacked observations the agent sees, ``[B, frame_stack,
*frame_shape]`` (newest frame last), and returns B actions in the env's action space as
``make_env`` builds it. Host-only numpy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cartpole"]


def cartpole(obs: np.ndarray) -> np.ndarray:
    """CartPole-v1: push toward the side the pole is falling to, with a small pull back to the
    centre. A proportional-derivative rule on the newest frame [x, x_dot, theta, theta_dot]:
    push right (1) iff ``theta + 0.5 * theta_dot + 0.05 * x + 0.1 * x_dot > 0``.

    Args:
      obs: float32 [B, k, 4].

    Returns:
      int32 [B] actions in {0, 1}.
    """
    x, x_dot, theta, theta_dot = np.moveaxis(np.asarray(obs)[:, -1], -1, 0)
    return (theta + 0.5 * theta_dot + 0.05 * x + 0.1 * x_dot > 0).astype(np.int32)
