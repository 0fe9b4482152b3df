"""Scripted policies (classic control, Atari): worked examples of the ``module:function``
policies that ``launch/record_demos.py`` records demonstrations from and that the expert
curriculum drives with (``--expert.kind scripted --expert.source envs.scripted:cartpole``).

A scripted policy takes the stacked observations the agent sees, ``[B, frame_stack,
*frame_shape]`` (newest frame last), and returns B actions in the env's action space as
``make_env`` builds it. Host-only numpy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["beam_rider", "cartpole", "pendulum"]


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


def pendulum(obs: np.ndarray) -> np.ndarray:
    """Pendulum-v1 (continuous): energy-pumping swing-up, then a PD stabiliser at the top.

    The env integrates ``theta_ddot = 15 sin(theta) + 3 u`` (theta = 0 upright, torque u in
    [-2, 2]), which conserves ``E = theta_dot^2 / 2 + 15 cos(theta)`` when u = 0; upright at
    rest is E = 15. On the newest frame [cos theta, sin theta, theta_dot]: near the top
    (``cos theta > 0.85``) apply ``u = -(10 theta + 2 theta_dot)``; elsewhere pump toward
    E = 15 with ``u = 2 sign((15 - E) theta_dot)`` (at rest, push +2 to start swinging).

    Args:
      obs: float32 [B, k, 3].

    Returns:
      float32 [B, 1] actions in [-1, 1] (torque / 2).
    """
    cos, sin, theta_dot = np.moveaxis(np.asarray(obs, np.float32)[:, -1], -1, 0)
    theta = np.arctan2(sin, cos)
    pump = (15.0 - (0.5 * theta_dot**2 + 15.0 * cos)) * theta_dot
    swing = np.where(pump >= 0, 2.0, -2.0)
    hold = -(10.0 * theta + 2.0 * theta_dot)
    torque = np.where(cos > 0.85, hold, swing)
    return np.clip(torque / 2.0, -1.0, 1.0).astype(np.float32)[:, None]


# BeamRider on the 84x84 frame (measured): the playfield is rows 19-64, the ship sits at rows
# 66-71 on one of five beams (columns 17, 30.5, 44, 57.5, 70.5), and the beams meet at a
# vanishing point (column 44, row -13).
_BR_CX, _BR_VANISH_ROW, _BR_SHIP_ROW = 44.0, -13.0, 68.0
_BR_ROWS = np.arange(19, 65)
# Column at which each playfield pixel's line through the vanishing point reaches the ship row,
# [46, 84]: the ship column an object there lines up with.
_BR_SHIP_X = _BR_CX + (np.arange(84) - _BR_CX) * (
    (_BR_SHIP_ROW - _BR_VANISH_ROW) / (_BR_ROWS[:, None] - _BR_VANISH_ROW))
_BR_FIRE, _BR_RIGHTFIRE, _BR_LEFTFIRE = 1, 7, 8


def _br_objects(frames: np.ndarray, threshold: int) -> np.ndarray:
    """bool [B, 46, 84]: playfield pixels brighter than their row's median by ``threshold``
    (the median removes the horizontal beams that scroll down the screen)."""
    field = frames[:, _BR_ROWS[0]:_BR_ROWS[-1] + 1]
    return field - np.median(field, axis=2, keepdims=True) > threshold


def _br_lowest_row(mask: np.ndarray) -> np.ndarray:
    """int [B]: the lowest (largest) screen row holding a pixel of ``mask`` [B, 46, 84], -1 if
    none."""
    return (mask.any(2) * (_BR_ROWS + 1)).max(1) - 1


def beam_rider(obs: np.ndarray) -> np.ndarray:
    """ALE/BeamRider-v5: always fire, dodge what comes down at the ship, else steer under the
    nearest enemy. Objects are playfield pixels above their row's median (enemies: +100, shots
    also: +40), each mapped along its beam to the ship row. On the newest frame:

    * Dodge (away from the threat, or inward from an outer beam) when an enemy in rows 48-64,
      or a shot in rows 38-64 that is lower than in the oldest frame of the stack (enemy shots
      fall, the ship's own rise), lines up within 16 columns of the ship.
    * Otherwise move toward the enemy that lines up closest to the ship, firing; fire in place
      once within 3 columns.
    * With no enemy in view, keep moving about the centre: after a lost life the game waits
      for a joystick move, which FIRE alone never gives.

    Actions: FIRE (1), RIGHTFIRE (7), LEFTFIRE (8) of the minimal action set [NOOP, FIRE, UP,
    RIGHT, LEFT, UPRIGHT, UPLEFT, RIGHTFIRE, LEFTFIRE]. Needs k >= 2 to see shots fall; with
    k = 1 only enemies are dodged.

    Args:
      obs: uint8 [B, k, 84, 84] (make_env's default image_size).

    Returns:
      int32 [B] actions in {1, 7, 8}.
    """
    obs = np.asarray(obs)
    newest, oldest = obs[:, -1].astype(np.int16), obs[:, 0].astype(np.int16)
    ship = newest[:, 66:72] > 100
    count = ship.sum((1, 2))
    ship_x = np.where(count > 0, (ship.sum(1) * np.arange(84)).sum(1) / np.maximum(count, 1),
                      _BR_CX)
    gap = _BR_SHIP_X - ship_x[:, None, None]  # [B, 46, 84]
    near = np.abs(gap) < 16
    lower = (_BR_ROWS >= 38)[:, None]
    enemies = _br_objects(newest, 100)
    close_enemies = enemies & near & (_BR_ROWS >= 48)[:, None]
    shots = _br_objects(newest, 40) & near & lower
    old_shots = _br_objects(oldest, 40) & near & lower
    old_row = _br_lowest_row(old_shots)
    danger = close_enemies.any((1, 2)) | ((old_row >= 0) & (_br_lowest_row(shots) > old_row))
    threat = close_enemies | shots
    threat_x = (threat * _BR_SHIP_X).sum((1, 2)) / np.maximum(threat.sum((1, 2)), 1)
    dodge = np.where(ship_x >= 64, -1,
                     np.where(ship_x <= 24, 1, np.where(ship_x >= threat_x, 1, -1)))
    gap = np.where(enemies, gap, np.inf).reshape(len(obs), -1)
    to_enemy = np.take_along_axis(gap, np.abs(gap).argmin(1)[:, None], 1)[:, 0]
    chase = np.where(np.abs(to_enemy) > 3, np.sign(to_enemy), 0)
    move = np.where(danger, dodge,
                    np.where(enemies.any((1, 2)), chase, np.where(ship_x < _BR_CX, 1, -1)))
    return np.select([move > 0, move < 0], [_BR_RIGHTFIRE, _BR_LEFTFIRE], _BR_FIRE).astype(np.int32)
