"""Learners, losses, configs and presets. Importing the package sets the project's XLA flags
(``rl/xla.py``) unless JAX has already started."""

from rl.xla import apply_xla_flags

apply_xla_flags()
