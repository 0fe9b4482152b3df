"""XLA flags the project sets for speed, before JAX starts its backends.

``import rl`` (every entry point imports it: ``launch/run.py``, the benchmarks, the notebooks,
the tests) adds :data:`PROJECT_XLA_FLAGS` to the ``XLA_FLAGS`` environment variable, which
XLA reads once, when JAX first starts a backend. A flag the user already sets in
``XLA_FLAGS`` is left as the user set it, so ``XLA_FLAGS="--xla_cpu_use_xnnpack=true"`` wins.

Why: XLA:CPU's YNNPACK and XNNPACK paths lose to its Eigen kernels on this project's
convolutions and their gradients. ``benchmarks/learner.py`` on 2 AMD EPYC cores (jax 0.10.2),
flags on and off in alternating processes, 3 pairs, ms per grad step (on / off):

=========================  ===================  =====================
update                     batch 32             batch 256
=========================  ===================  =====================
iqn_btr (BTR Impala net)   743-784 / 899-959    6,309-6,916 / 11,820-12,645
tqc_tm20 (Nature CNN x3)   70-72 / 85-92        588-641 / 891-964
dqn (Nature CNN, 84x84)    23-27 / 28-34        193-214 / 481-529
=========================  ===================  =====================

Acting: iqn_btr at batch 8 27-37 / 42-44 ms; tqc_tm20 at batch 1 0.5-0.8 / 0.3-0.9 ms
(noise at that size).
"""

from __future__ import annotations

import logging
import os
from typing import MutableMapping

PROJECT_XLA_FLAGS = {
    "--xla_cpu_experimental_ynn_fusion_type": "",
    "--xla_cpu_use_xnnpack": "false",
}
"""Flag -> value: convolutions, dots and their gradients on XLA:CPU's Eigen kernels instead
of YNNPACK fusions and XNNPACK (CPU only; GPU compilation ignores them)."""

OPT_OUT = "TMRL_JAX_XLA_DEFAULTS"
"""Set to ``1`` to keep XLA's own defaults (the project adds no flag)."""

log = logging.getLogger(__name__)


def apply_xla_flags(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Add to ``environ["XLA_FLAGS"]`` each flag of :data:`PROJECT_XLA_FLAGS` that it does
    not set already; returns the flags added (name -> value). Adds nothing when
    ``environ[OPT_OUT] == "1"``.

    Takes effect only if no JAX backend has started in this process yet (XLA reads the
    variable once); otherwise logs a warning that names the flags and does nothing.
    """
    from jax._src import xla_bridge  # noqa: PLC0415  (only to ask whether XLA has started)

    if environ.get(OPT_OUT) == "1":
        return {}
    user = environ.get("XLA_FLAGS", "")
    given = {part.split("=", 1)[0] for part in user.split()}
    added = {name: value for name, value in PROJECT_XLA_FLAGS.items() if name not in given}
    if not added:
        return {}
    if xla_bridge.backends_are_initialized():
        log.warning("JAX started before rl was imported: the project's XLA flags %s are not "
                    "in effect (import rl first, or set them in XLA_FLAGS)",
                    " ".join(f"{k}={v}" for k, v in added.items()))
        return {}
    environ["XLA_FLAGS"] = " ".join([user, *(f"{k}={v}" for k, v in added.items())]).strip()
    return added
