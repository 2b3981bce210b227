"""Test set-up: 8 forced CPU devices, offline wandb, the persistent compile cache; a notebook runner."""

import json
import os

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")

from lmjax.jax_setup import setup_jax  # noqa: E402

setup_jax()

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")


@pytest.fixture
def run_notebook():
    """run_notebook(name) executes notebooks/<name> in a fresh kernel (any failing cell raises) and
    returns the JSON its code printed on a line starting "RESULT "."""
    import nbformat
    from nbclient import NotebookClient

    def run(name: str) -> dict:
        nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}}).execute()
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
        line = next(ln for ln in text.splitlines() if ln.startswith("RESULT "))
        return json.loads(line[len("RESULT "):])

    return run
