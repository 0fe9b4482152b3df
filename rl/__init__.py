"""Learners, losses, configs and presets. Importing the package sets the project's XLA flags
(``rl/xla.py``) unless JAX has already started, and glibc's malloc to keep freed memory for
reuse (``rl/malloc.py``)."""

from rl.malloc import keep_freed_memory
from rl.xla import apply_xla_flags

apply_xla_flags()
keep_freed_memory()
