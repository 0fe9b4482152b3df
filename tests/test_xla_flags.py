"""The XLA flags the project sets (rl/xla.py): in effect after ``import rl``, and the user's
own XLA_FLAGS win."""

import os
import subprocess
import sys
from pathlib import Path

from rl import xla

ROOT = Path(__file__).resolve().parents[1]

# A convolution's gradients, compiled (big enough for XLA:CPU to use YNNPACK): its optimised HLO names the YNNPACK fusions XLA:CPU
# made (none when the project's flags are in effect).
PROBE = r"""
import os, sys
if sys.argv[1] == "rl":
    import rl  # noqa: F401
import jax, jax.numpy as jnp

def loss(x, w):
    return jnp.tanh(jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))).sum()

text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(
    jnp.ones((4, 32, 32, 16)), jnp.ones((3, 3, 16, 32))).compile().as_text()
print(os.environ.get("XLA_FLAGS", ""))
print("ynn_fusion" in text)
"""


def probe(first_import: str, xla_flags: str | None) -> tuple[str, bool]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    out = subprocess.run([sys.executable, "-c", PROBE, first_import], capture_output=True,
                         text=True, env={**env, "PYTHONPATH": str(ROOT)}, check=True, timeout=120)
    flags, ynn = out.stdout.split("\n")[:2]
    return flags, ynn == "True"


def test_the_flags_are_in_effect_after_import_rl():
    flags, ynn = probe("rl", None)
    assert flags.split() == [f"{k}={v}" for k, v in xla.PROJECT_XLA_FLAGS.items()]
    assert not ynn
    # Without them XLA:CPU fuses the same gradient with YNNPACK: the flags change the code.
    flags, ynn = probe("jax", None)
    assert flags == "" and ynn


def test_a_flag_the_user_sets_wins_and_the_opt_out_keeps_xla_defaults():
    user = "--xla_cpu_use_xnnpack=true --xla_force_host_platform_device_count=1"
    flags, _ = probe("rl", user)
    assert flags == f"{user} --xla_cpu_experimental_ynn_fusion_type="
    environ = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=+x "
                            "--xla_cpu_use_xnnpack=false"}
    assert xla.apply_xla_flags(environ) == {}
    assert environ["XLA_FLAGS"] == ("--xla_cpu_experimental_ynn_fusion_type=+x "
                                    "--xla_cpu_use_xnnpack=false")
    environ = {xla.OPT_OUT: "1"}
    assert xla.apply_xla_flags(environ) == {} and "XLA_FLAGS" not in environ


def test_after_jax_started_nothing_is_changed_and_a_warning_says_so(caplog):
    import jax

    jax.devices()  # the test process's backend has started
    environ: dict[str, str] = {}
    assert xla.apply_xla_flags(environ) == {} and environ == {}
    assert "not in effect" in caplog.text and "--xla_cpu_use_xnnpack=false" in caplog.text
