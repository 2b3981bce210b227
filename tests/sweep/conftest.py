"""Fixtures of the sweep tests (helpers live in sweep_helpers.py)."""

import pytest

from sweep_helpers import write_sweep


@pytest.fixture
def sweep_file(tmp_path):
    return lambda **kw: write_sweep(tmp_path, **kw)
