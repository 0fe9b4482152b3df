"""Every notebook in notebooks/ runs top to bottom in a fresh Jupyter kernel (nbclient) without
a cell error, in under two minutes, and is stored without outputs.

The notebooks are found by globbing, so a new ``notebooks/*.ipynb`` is picked up with no change
here. The kernel is the "python3" kernel resolved to this interpreter (the venv under test), with
``MPLBACKEND=Agg`` so that figures are built but not rendered into outputs. A copy of each
notebook with a raising cell must fail the same runner: the check cannot pass vacuously.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(path.name for path in NOTEBOOKS_DIR.glob("*.ipynb"))
KERNEL_NAME = "python3"
TIME_LIMIT_S = 120.0
"""Wall-clock limit for one notebook, kernel start included (also each cell's timeout)."""


def _runs_this_interpreter(argv: list[str]) -> bool:
    """Whether a kernel spec's command starts this Python: a bare ``python`` / ``python3`` /
    ``python3.X`` (jupyter_client swaps in ``sys.executable`` for those) or a path to it."""
    exe = argv[0]
    major, minor = sys.version_info[:2]
    if exe in {"python", f"python{major}", f"python{major}.{minor}"}:
        return True
    found = shutil.which(exe) or exe
    try:
        return os.path.samefile(found, sys.executable)
    except OSError:
        return False


def kernel_manager(kernels_dir: Path) -> KernelManager:
    """A manager for the "python3" kernel running ``sys.executable``: the installed kernel
    spec when it resolves there, else one written under ``kernels_dir``."""
    specs = KernelSpecManager()
    try:
        usable = _runs_this_interpreter(specs.get_kernel_spec(KERNEL_NAME).argv)
    except NoSuchKernel:
        usable = False
    if not usable:
        spec_dir = kernels_dir / KERNEL_NAME
        spec_dir.mkdir(parents=True, exist_ok=True)
        (spec_dir / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (tests)",
            "language": "python",
        }))
        specs = KernelSpecManager(kernel_dirs=[str(kernels_dir)])
    km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)
    assert _runs_this_interpreter(km.kernel_spec.argv), km.kernel_spec.argv
    return km


def execute(nb: nbformat.NotebookNode, kernels_dir: Path) -> float:
    """Run ``nb`` in place (outputs filled in) in a fresh kernel whose working directory is
    notebooks/; returns the wall-clock seconds, kernel start included.

    Raises:
      CellExecutionError: a cell raised (nbclient stops at the first one).
    """
    km = kernel_manager(kernels_dir)
    client = NotebookClient(nb, km=km, timeout=int(TIME_LIMIT_S), kernel_name=KERNEL_NAME,
                            resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
    start = time.perf_counter()
    try:
        # cleanup_kc: with a kernel manager passed in, nbclient would otherwise leave the
        # kernel running and its client's sockets open.
        client.execute(cleanup_kc=True, env={**os.environ, "MPLBACKEND": "Agg"})
    finally:
        elapsed = time.perf_counter() - start
        assert not km.is_alive(), "the kernel outlived its notebook"
    return elapsed


def test_notebooks_are_found():
    assert "loss_inspection.ipynb" in NOTEBOOKS, NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_stored_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, f"{name} has no code cells"
    dirty = [i for i, cell in enumerate(code) if cell.outputs or cell.execution_count is not None]
    assert not dirty, f"{name}: code cells {dirty} carry outputs; clear them before committing"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, tmp_path):
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    elapsed = execute(nb, tmp_path / "kernels")
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code), "a code cell did not run"
    assert elapsed < TIME_LIMIT_S, f"{name} took {elapsed:.1f} s (limit {TIME_LIMIT_S:.0f} s)"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_runner_fails_on_a_raising_cell(name, tmp_path):
    # The copy breaks right after the first code cell, so the kernel stops before the work.
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    first = next(i for i, cell in enumerate(nb.cells) if cell.cell_type == "code")
    nb.cells.insert(first + 1, nbformat.v4.new_code_cell(
        'raise RuntimeError("deliberately broken notebook")'))
    with pytest.raises(CellExecutionError, match="deliberately broken notebook"):
        execute(nb, tmp_path / "kernels")
    assert nb.cells[first].execution_count is not None
    assert all(cell.execution_count is None for cell in nb.cells[first + 2:]
               if cell.cell_type == "code")
