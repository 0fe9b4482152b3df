"""Memory: what a checkpoint of a large replay adds to the process's peak stays within what
the run announces at start (the replay's bytes: orbax copies what it saves to host memory),
and the run logs the bytes it holds. ``benchmarks/memory.py`` measures whole runs at 131k and
1M slots (docs/reliability.md)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from launch.loop import tree_bytes

ROOT = Path(__file__).resolve().parents[1]

REPLAY_MB = 400

SAVE_A_LARGE_REPLAY = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(ROOT)!r})
    import jax, jax.numpy as jnp, numpy as np
    from launch.checkpoint import RunCheckpoints

    def kb(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])

    state = dict(params=jnp.ones((1000,), jnp.float32))
    # Compressible, as game frames are: zstd's buffers stay small, a copy would not.
    frames = jnp.asarray(np.resize(np.arange(251, dtype=np.uint8), ({REPLAY_MB}, 1 << 20)))
    replay = dict(obs=frames, valid=jnp.ones(({REPLAY_MB},), bool))
    checkpoints = RunCheckpoints(sys.argv[1], keep=2)
    checkpoints.save(1, state, replay, dict(step=1))  # compiles, warms up
    replay = dict(obs=jax.jit(lambda x: x + 1)(frames), valid=replay["valid"])  # a new array,
    del frames  # as after a training step
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS: the peak of the next save alone
    before = kb("VmRSS")
    checkpoints.save(2, state, replay, dict(step=2))
    after = kb("VmHWM")
    restored = checkpoints.restore(2, state, replay)[1]
    same = all(bool(jnp.array_equal(restored[k], replay[k])) for k in replay)
    print(before, after, same)
""")


def test_saving_a_large_replay_adds_about_its_bytes_to_the_peak(tmp_path):
    """A fresh 400 MB replay saved in a warmed-up process: the save raises the peak resident
    memory by about the replay's bytes, the host copy the run logs at start, plus the writer's
    own buffers (measured: 376-410 MB here on 2026-12-07, so a 10% margin; 3.6 GB for 7.4 GB
    at 1M slots), and the checkpoint restores equal."""
    result = subprocess.run([sys.executable, "-c", SAVE_A_LARGE_REPLAY, str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rss_before, peak_after, same = result.stdout.split()
    replay_kb = REPLAY_MB * 1024
    assert int(rss_before) > replay_kb  # the replay is resident
    assert int(peak_after) - int(rss_before) <= 1.1 * replay_kb, result.stdout
    assert same == "True"


def test_tree_bytes_counts_every_array_leaf_once():
    tree = dict(obs=jnp.zeros((2, 3, 4), jnp.uint8), reward=np.zeros(5, np.float32),
                nested=[jnp.zeros((), jnp.int32)], name="not an array", count=7)
    assert tree_bytes(tree) == 24 + 20 + 4
