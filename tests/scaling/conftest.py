"""Fixtures for the scaling tests: the reference Chinchilla points and a small synthetic sweep."""

import os
import sys

import pandas as pd
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from scaling_synth import write_sweep  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "chinchilla_epoch_svg.csv")


@pytest.fixture(scope="session")
def chinchilla_csv():
    return os.path.abspath(DATA)


@pytest.fixture(scope="session")
def chinchilla_points(chinchilla_csv):
    """The 240 points Besiroglu et al. (2024) fit: the 5 highest-loss points dropped."""
    df = pd.read_csv(chinchilla_csv)
    return df.sort_values("loss", kind="stable").iloc[:-5].sort_index().reset_index(drop=True)


@pytest.fixture(scope="session")
def chinchilla_fit(chinchilla_points):
    from lmjax.scaling import fit

    return fit("chinchilla", chinchilla_points)


@pytest.fixture(scope="session")
def small_sweep(tmp_path_factory):
    """2 families x 5 sizes x 3 data sizes, 8 eval steps per run."""
    d = tmp_path_factory.mktemp("sweep")
    write_sweep(d)
    return d
