"""What lockstep mode must reproduce: runs of the loop recorded before the actor/learner split.

``python tests/lockstep_reference.py`` runs each case of :data:`CASES` through
``launch/run.py`` and writes :data:`REFERENCE`: every deterministic scalar of the run's
TensorBoard events (episode returns and lengths, losses, Q values, evaluation returns,
epsilon; the ``perf/`` timings left out), the loop counters of the last checkpoint and a
SHA-256 of every leaf of its train state and replay contents. The file in the repository was
recorded from the single-threaded loop of commit 9bc72fa, under XLA's default CPU flags (the
``car_racing_iqn_btr`` case with today's ``nets/layers.py`` put into that commit, its
``max_pool_same`` in the Impala torso: the pool's gradient and the noisy layer's one matmul
sum in another order);
``tests/test_loop.py`` runs the same cases in lockstep mode, with those flags, and asserts
equal loop counters, env data and event steps, and float values within the case's
tolerance (:data:`FLOAT_RTOL`: float sums depend on the CPU's kernels; the reference's AMD
EPYC and an Intel AVX-512 core differ in the last bits of the convolutions, an AMD EPYC that
shows AVX2 but no AVX-512 in those of the dense layers too).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rl import xla
from test_run_e2e import TINY_CAR_RACING

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).with_name("data") / "lockstep_reference.json"

_COMMON = ["--env.no-asynchronous", "--logging.no-progress-bar", "--logging.summary-interval",
           "0"]
CASES = {
    "cartpole_dqn": [
        "--algo", "dqn", "--env", "CartPole-v1", "--seed", "5", "--total-steps", "480",
        # The dqn preset's env values when recorded (auto now gives 1 and None on CartPole).
        "--env.frame-stack", "4", "--env.reward-clip", "1.0",
        # Uniform replay was sampled stratified when recorded (auto now draws i.i.d.).
        "--replay.sampling", "stratified",
        "--env.num-envs", "4", "--network.mlp-hidden", "16", "--network.hidden-dim", "16",
        "--training.learning-starts", "100", "--training.batch-size", "16",
        "--training.replay-ratio", "0.25", "--training.eval-interval", "240",
        "--training.eval-episodes", "2", "--training.checkpoint-interval", "240",
        "--logging.log-interval", "40", *_COMMON],
    "car_racing_iqn_btr": [*TINY_CAR_RACING, "--total-steps", "128",
                           "--logging.summary-interval", "0"],
}
"""Case name -> launch/run.py arguments (without --run-dir)."""

FLOAT_RTOL = {"car_racing_iqn_btr": 1e-5, "cartpole_dqn": 1e-5}
"""Case -> relative tolerance of its float scalars (every case: the CPU's convolution and
matmul kernels set the last bits). The train state and priorities are compared through
those scalars (losses, Q values, gradient norm, target gap, importance weights at every
logged step), not by hash; every other replay leaf (frames, actions, rewards, flags) still
by hash."""
FLOAT_LEAVES = ("['sum_tree']", "['max_priority']")
"""Replay leaves of float sums (the priorities and their running maximum), left to the
scalars in the FLOAT_RTOL cases: an AMD EPYC that shows AVX2 but no AVX-512 gave another
last bit of max_priority."""


def _leaf_hashes(tree) -> dict[str, str]:
    leaves = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.ascontiguousarray(np.asarray(leaf))
        leaves[jax.tree_util.keystr(path)] = f"{array.dtype}{list(array.shape)}:" + \
            hashlib.sha256(array.tobytes()).hexdigest()
    return leaves


def digest(run_dir: Path) -> dict:
    """The deterministic record of a finished run (see the module docstring)."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    scalars = {tag: [[e.step, e.value] for e in acc.Scalars(tag)]
               for tag in sorted(acc.Tags()["scalars"]) if not tag.startswith("perf/")}
    step = max(int(p.name) for p in (run_dir / "checkpoints").iterdir())
    manager = ocp.CheckpointManager((run_dir / "checkpoints").absolute(),
                                    options=ocp.CheckpointManagerOptions(
                                        create=False, enable_async_checkpointing=False))
    saved = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), replay=ocp.args.StandardRestore(),
        loop=ocp.args.JsonRestore()))
    manager.close()
    return dict(scalars=scalars, loop=saved["loop"], state=_leaf_hashes(saved["state"]),
                replay=_leaf_hashes(saved["replay"]))


def run_case(name: str, run_dir: Path, *extra: str) -> dict:
    """Run case ``name`` into ``run_dir`` (plus ``extra`` arguments) and return its digest."""
    # The reference was recorded under XLA's default CPU flags; the project's flags
    # (rl/xla.py, already in this process's XLA_FLAGS) pick other kernels, whose float sums
    # round differently.
    env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, xla.OPT_OUT: "1"}
    result = subprocess.run([sys.executable, str(ROOT / "launch" / "run.py"), *CASES[name],
                             "--run-dir", str(run_dir), *extra],
                            capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"case {name} exited with {result.returncode}:\n"
                           f"{result.stderr[-3000:]}")
    return digest(run_dir)


if __name__ == "__main__":
    REFERENCE.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        record = {name: run_case(name, Path(tmp) / name) for name in CASES}
    REFERENCE.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {REFERENCE}")
