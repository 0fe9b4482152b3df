"""glibc malloc settings the project sets for speed: freed memory is kept for reuse.

``import rl`` calls :func:`keep_freed_memory` (Linux with glibc; elsewhere it does nothing).
It sets, with ``mallopt``: one arena for every thread (``M_ARENA_MAX`` 1), no ``mmap`` for
large blocks (``M_MMAP_MAX`` 0), no return of the heap's top to the system
(``M_TRIM_THRESHOLD`` -1: never trim) and a heap that grows 64 MiB at a time (``M_TOP_PAD``).

Why: each XLA:CPU execution asks malloc for its buffers (one temp block of about 200 MB for
an ``iqn_btr`` step at batch 32, plus 65-130 MB convolution scratch blocks on the worker
threads). With glibc's defaults every block above 32 MB (64 MB in a thread's arena) is a fresh
``mmap``, unmapped on free, so every step page-faults its memory in again: 49k minor faults
(193 MB) and 130-430 ms of kernel time per ``iqn_btr`` batch-32 step on 2 AMD EPYC cores.
Kept in the heap, the blocks are reused: 0 faults after the first steps (``benchmarks/
learner.py``'s figures are in the README). The cost: the process keeps its peak heap size
until it exits, which a training process reaches every step anyway.

Set ``TMRL_JAX_MALLOC_DEFAULTS=1`` to keep glibc's defaults. The ``MALLOC_*`` environment
variables the user sets are read by glibc at start-up; a later ``mallopt`` overrides them,
so that opt-out is the way to keep them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
from typing import Mapping

# mallopt parameter numbers from glibc's malloc.h.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -4, -8

SETTINGS = {
    "M_ARENA_MAX": (M_ARENA_MAX, 1),
    "M_MMAP_MAX": (M_MMAP_MAX, 0),
    "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, -1),
    "M_TOP_PAD": (M_TOP_PAD, 64 << 20),
}
"""Name -> (mallopt parameter, value) that :func:`keep_freed_memory` sets (C ints). A trim
threshold of -1 never trims: the largest positive one, 2 GiB, is below the free top of an
``iqn_btr`` batch-256 step (3 GB), which was then trimmed and faulted in again every step."""

OPT_OUT = "TMRL_JAX_MALLOC_DEFAULTS"
"""Set to ``1`` to keep glibc's malloc defaults (the project calls no ``mallopt``)."""

log = logging.getLogger(__name__)


def keep_freed_memory(environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    """Apply :data:`SETTINGS` with glibc's ``mallopt``; returns the settings applied (name ->
    value): all of them, or none on another C library or OS, or when ``environ[OPT_OUT] ==
    "1"``. A ``mallopt`` that glibc refuses is logged and left out of the result.

    Call it before the threads that allocate start (``import rl`` does, before JAX starts its
    backend): a thread that already has its own arena keeps it.
    """
    if environ.get(OPT_OUT) == "1" or platform.system() != "Linux":
        return {}
    if platform.libc_ver()[0] != "glibc":
        return {}
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    applied = {}
    for name, (param, value) in SETTINGS.items():
        if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1:
            applied[name] = value
        else:
            log.warning("glibc refused mallopt(%s, %d): left at its default", name, value)
    return applied
