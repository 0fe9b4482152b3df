"""glibc malloc settings of rl/malloc.py: after ``import rl``, a large block freed and asked
for again (on a worker thread, as XLA:CPU's buffers are) is reused without page faults; with
the opt-out, every block faults its pages in again."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from rl import malloc

ROOT = Path(__file__).resolve().parents[1]

# Minor page faults of 5 rounds of a 96 MiB malloc block written on a worker thread, after
# one round that may fault the heap in.
PROBE = r"""
import ctypes, resource, threading
import rl  # noqa: F401

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def rounds(n, out):
    for _ in range(n):  # malloc, write, free: what XLA:CPU does with its buffers
        block = libc.malloc(96 << 20)
        ctypes.memset(block, 1, 96 << 20)
        libc.free(block)
    out.append(None)

def faults(n):
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    done = []
    thread = threading.Thread(target=rounds, args=(n, done))
    thread.start(); thread.join()
    assert done
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

faults(1)
print(faults(5))
"""

needs_glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the settings are glibc's (Linux)")


def minor_faults(opt_out: bool) -> int:
    env = {k: v for k, v in os.environ.items() if k != malloc.OPT_OUT}
    if opt_out:
        env[malloc.OPT_OUT] = "1"
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env={**env, "PYTHONPATH": str(ROOT)}, check=True, timeout=120)
    return int(out.stdout.split()[-1])


@needs_glibc
def test_freed_blocks_are_reused_without_page_faults():
    pages = 5 * (96 << 20) // 4096
    # glibc's defaults: each round maps its block afresh and faults every page in.
    assert minor_faults(opt_out=True) > 0.9 * pages
    # The project's settings: the block stays in the heap; almost no fault is left.
    assert minor_faults(opt_out=False) < 0.01 * pages


@needs_glibc
def test_keep_freed_memory_applies_every_setting_or_none_with_the_opt_out():
    assert malloc.keep_freed_memory({}) == {name: value for name, (_, value)
                                            in malloc.SETTINGS.items()}
    assert malloc.keep_freed_memory({malloc.OPT_OUT: "1"}) == {}
