"""TrackMania 2020 through tmrl 0.7.1 (``env.id = "trackmania"``), one job per module:

* :mod:`envs.trackmania.plugin`: the OpenPlanet plugin's telemetry record (:data:`RECORD`), its
  TCP client (:class:`OpenPlanetClient`) and :class:`GameConnectionError`. Standard library only.
* :mod:`envs.trackmania.env`: the env: spaces and observation layout (:func:`tm_spec`,
  :func:`adapt_observation`, :func:`controls_table`, :func:`driver_action`), our rtgym interface
  on tmrl's, :class:`TrackmaniaEnv` and its guarded worker process (:func:`make_tm_vector_env`).
* :mod:`envs.trackmania.reward`: our reward (tmrl's progress along a recorded trajectory plus
  seed 004's shaping terms) and the trajectory files.
* :mod:`envs.trackmania.standin`: a headless stand-in for the game, its plugin, gamepad and
  screen (``trackmania.backend = "standin"``, tests).

Imports go one way: ``plugin`` imports nothing of this package; ``standin`` imports ``plugin``;
``env`` imports ``plugin`` and, when it needs them, ``reward`` and ``standin``. This package
re-exports the env's public names; the reward and the stand-in are imported from their modules.
"""

from envs.trackmania.env import (
    CAR_FEATURES,
    ENV_ID,
    TrackmaniaEnv,
    adapt_observation,
    controls_table,
    driver_action,
    is_trackmania,
    make_tm_vector_env,
    tm_spec,
    write_tmrl_config,
)
from envs.trackmania.plugin import RECORD, GameConnectionError, OpenPlanetClient

__all__ = [
    "CAR_FEATURES",
    "ENV_ID",
    "RECORD",
    "GameConnectionError",
    "OpenPlanetClient",
    "TrackmaniaEnv",
    "adapt_observation",
    "controls_table",
    "driver_action",
    "is_trackmania",
    "make_tm_vector_env",
    "tm_spec",
    "write_tmrl_config",
]
