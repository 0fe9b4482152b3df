"""Test-session setup: one XLA compilation cache for the session, shared by its workers, and
XLA:CPU's generated code at LLVM -O0 (tests/fast_compile.py).

Many tests compile the same small networks again (a fresh ``jax.jit`` per test, and every
``launch/run.py`` subprocess and its resume); with a persistent cache in a fresh temporary
directory they load the executable instead. The environment variables reach the subprocesses;
the directory is removed when the session ends, so nothing carries over between sessions.
"""

import atexit
import os
import shutil
import tempfile

import fast_compile

# The pytest-xdist workers inherit the controller's variable and share its directory; only
# the process that made it removes it.
_CACHE = os.environ.get("TMRL_JAX_TEST_CACHE")
if _CACHE is None:
    _CACHE = tempfile.mkdtemp(prefix="jax-compilation-cache-")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    os.environ["TMRL_JAX_TEST_CACHE"] = _CACHE
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
fast_compile.apply()  # LLVM -O0: compiles a third faster (tests/fast_compile.py)

import jax  # noqa: E402  (after the variables, so a first import reads them too)

jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
