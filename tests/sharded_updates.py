"""Run by tests/test_sharding.py in a process with two CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=2``): for each learner, the same updates
from the same state and replay on one device and on a 2-device mesh (``rl/sharding.py``).
Prints one JSON object: learner -> the largest relative gap over the state's float leaves
(max |a - b| / max |b| per leaf), whether the 2-device program all-reduces, and the devices
the updated params live on.

With ``PROCESS_ID COORDINATOR [NAME ...]`` arguments (tests/test_multihost.py runs two such
processes, one CPU device each) the mesh is the two processes' devices, joined by
``launch.multihost.initialize``; the one-device updates run on this process's device; NAMEs
(e.g. ``iqn_btr``) keep only those learners.
"""

import contextlib
import json
import sys

import fast_compile

# Unoptimised LLVM codegen: compiles about twice as fast. The HLO passes under test (sharding
# propagation, SPMD partitioning, the all-reduce) do not read this flag.
fast_compile.apply()

import jax  # noqa: E402  (XLA reads XLA_FLAGS when its backend starts, not on import)
import numpy as np  # noqa: E402

import rl  # noqa: F401  (the project's XLA flags, before JAX starts)
from launch import multihost
import test_learner_jit as value_tests
import test_tqc as tqc_tests
from rl import sharding
from rl.config import LearnerConfig

STEPS = 2


def cases(names=("iqn_btr", "rainbow", "dqn", "tqc")):
    """name -> (agent, state, replay_state) on tiny nets, one per learner kind (of
    ``names``)."""
    out = {}
    for name in ("iqn_btr", "rainbow", "dqn"):
        if name in names:
            cfg = value_tests.tiny(name, network=dict(torso="mlp"))
            out[f"{name} ({cfg.agent.learner})"] = value_tests.filled(cfg, image=False)
    if "tqc" in names:
        out["tqc (tqc)"] = tqc_tests.filled(tqc_tests.tiny())
    return out


def updated(agent, state, replay_state, mesh):
    """After STEPS jitted updates under ``mesh`` (None: one device): the state on the host,
    the state on its devices, and the compiled program's text."""
    state, replay_state = sharding.replicate((state, replay_state), mesh)
    update = jax.jit(agent.update, donate_argnums=(0, 1))
    with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
        compiled = update.lower(state, replay_state, 0.5).compile()
        for _ in range(STEPS):
            state, replay_state, _ = compiled(state, replay_state, 0.5)
    return jax.device_get(state), state, compiled.as_text()


def relative_gap(a, b) -> float:
    """Largest max |a - b| / max |b| over the float leaves of two pytrees."""
    gaps = [float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-12))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
            if np.issubdtype(np.asarray(y).dtype, np.floating) and np.size(y)]
    return max(gaps)


def main() -> None:
    names = sys.argv[3:] or ("iqn_btr", "rainbow", "dqn", "tqc")
    if len(sys.argv) >= 3:  # two processes, one device each
        multihost.initialize(LearnerConfig(devices="all", num_processes=2,
                                           process_id=int(sys.argv[1]),
                                           coordinator_address=sys.argv[2],
                                           coordinator_timeout=120))
    assert jax.device_count() == 2, jax.devices()
    mesh = sharding.learner_mesh(LearnerConfig(devices=2), batch_size=8)
    report = {}
    for name, (agent, state, replay_state) in cases(names).items():
        copy = lambda tree: jax.tree.map(np.copy, jax.device_get(tree))
        one, _, _ = updated(agent, copy(state), copy(replay_state), None)
        two, on_mesh, text = updated(agent, state, replay_state, mesh)
        leaf = jax.tree.leaves(on_mesh)[0]
        report[name] = dict(gap=relative_gap(two, one), all_reduce="all-reduce" in text,
                            devices=len(leaf.sharding.device_set))
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
