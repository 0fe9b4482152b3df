"""XLA:CPU's generated code at LLVM -O0 in the test processes
(``--xla_backend_optimization_level=0`` in ``XLA_FLAGS``; tests/conftest.py sets it for the
session and its subprocesses).

Why: most of the suite's time is XLA compiling small networks, and LLVM's optimisation of
the code XLA generates is a large share of each compile. At -O0 the learner-step tests took
145 s against 218 s, and the end-to-end runs (run_e2e, drive, loop, kill_resume) 324 s
against 476 s; 10 test files run side by side at -O0 and at XLA's default, one process each,
took 24:03 against 28:26 (2 Intel Xeon cores, 2026-12-07). The cost is in running: XLA's own loops
(elementwise fusions, pooling and their gradients) are unoptimised, e.g. a tqc_tm20 grad
step at batch 32 takes 151 ms against 62 ms (``benchmarks/learner.py``), which only tests of
many grad steps on full-size networks would notice. The HLO passes, and so what a program
computes, do not read the flag; convolutions and dots run Eigen's precompiled kernels either
way. Runs and benchmarks keep XLA's default.
"""

import os
from typing import MutableMapping

NAME = "--xla_backend_optimization_level"


def apply(environ: MutableMapping[str, str] = os.environ) -> None:
    """Add ``NAME=0`` to ``environ["XLA_FLAGS"]`` unless it sets an optimisation level; takes
    effect in a process whose JAX backend has not started yet."""
    flags = environ.get("XLA_FLAGS", "")
    if NAME not in flags:
        environ["XLA_FLAGS"] = f"{flags} {NAME}=0".strip()
