"""The three Chinchilla approaches and the extrapolation check."""

import numpy as np
import pandas as pd
import pytest
from scaling_synth import TRUE, chinchilla_loss, grid_points

from lmjax.errors import DataError
from lmjax.scaling import (allocation_table, envelope, extrapolation_check, isoflop, load, parametric)


def test_parametric_closed_form_is_the_constrained_minimum(chinchilla_fit):
    p = chinchilla_fit.params
    alloc = parametric(p)
    assert alloc.a + alloc.b == pytest.approx(1.0)
    assert alloc.a == pytest.approx(p["beta"] / (p["alpha"] + p["beta"]))
    for C in (1e19, 1e22, 1e24):
        n, d = alloc.n_opt(C), alloc.d_opt(C)
        assert 6 * n * d == pytest.approx(C, rel=1e-10)
        grid = n * np.geomspace(0.5, 2.0, 20001)
        losses = chinchilla_loss(p, grid, C / (6 * grid))
        assert grid[np.argmin(losses)] == pytest.approx(n, rel=1e-3)
    tab = allocation_table(p, [1e21, 1e23])
    assert list(tab.columns) == ["C", "N_opt", "D_opt", "tokens_per_param", "loss"]
    assert 15 < tab["tokens_per_param"].iloc[0] < 25  # ~20 tokens per parameter (Chinchilla's rule)
    k_exact = parametric(p, k=6.3)
    assert 6.3 * k_exact.n_opt(1e21) * k_exact.d_opt(1e21) == pytest.approx(1e21)


def _isoflop_points(p=TRUE, budgets=(1e18, 3e18, 1e19, 3e19, 1e20), n_per=9, noise=0.0):
    rows = []
    a = parametric(p)
    for C in budgets:
        for N in a.n_opt(C) * np.geomspace(0.25, 4.0, n_per):
            D = C / (6 * N)
            rows.append({"N": N, "D": D, "C": C, "loss": chinchilla_loss(p, N, D)})
    df = pd.DataFrame(rows)
    df["loss"] *= np.exp(noise * np.random.default_rng(0).standard_normal(len(df)))
    return df


def test_isoflop_recovers_the_allocation_exponents():
    df = _isoflop_points()
    alloc, profiles = isoflop(df)
    assert len(profiles) == 5 and all(pr.ok for pr in profiles)
    truth = parametric(TRUE)
    assert alloc.a == pytest.approx(truth.a, abs=0.01)
    assert alloc.b == pytest.approx(truth.b, abs=0.01)
    assert np.allclose(alloc.points["N_opt"], truth.n_opt(alloc.points["C"]), rtol=0.05)


def test_isoflop_needs_budgets():
    df = _isoflop_points(budgets=(1e18, 1e19))
    with pytest.raises(DataError, match="2 usable FLOP budgets, need 3"):
        isoflop(df, min_budgets=3)
    bad = _isoflop_points(budgets=(1e18,), n_per=2)
    with pytest.raises(DataError, match="model sizes"):
        isoflop(bad)


def test_envelope_from_training_curves(small_sweep):
    data = load(small_sweep).family("transformer")
    env = envelope(data.curves)
    assert env.method == "envelope" and len(env.points) > 10
    assert 0.2 < env.a < 0.8
    # C = k N D exactly on the curves, so the exponents sum to one.
    assert env.a + env.b == pytest.approx(1.0, abs=1e-6)
    assert env.points["loss"].iloc[-1] < env.points["loss"].iloc[0]
    assert env.points["N_opt"].iloc[-1] > env.points["N_opt"].iloc[0]


def test_envelope_without_curves_uses_the_frontier():
    df = grid_points(TRUE, n_sizes=6, n_data=6, noise=0.0)
    df["C"] = 6 * df["N"] * df["D"]
    env = envelope(None, df)
    assert "frontier" in env.note
    assert np.all(np.diff(env.points["loss"]) < 0)


def test_extrapolation_check():
    df = grid_points(TRUE, n_sizes=6, n_data=6, noise=0.0)
    ex = extrapolation_check(df, "chinchilla")
    assert ex.n_threshold == pytest.approx(df["N"].max())
    assert len(ex.held_out) == 6 and ex.fit.n_points == 30
    assert ex.max_abs_rel_error < 1e-3
    assert "held-out" in ex.summary()
    with pytest.raises(DataError, match="cannot hold out"):
        extrapolation_check(df[df["N"] == df["N"].max()], "chinchilla")


def test_isoflop_groups_by_the_budget_column():
    df = _isoflop_points()
    df["budget"] = df["C"]
    df["C"] *= np.exp(np.random.default_rng(1).uniform(-0.3, 0.3, len(df)))  # realized FLOPs scatter
    alloc, profiles = isoflop(df)
    assert sorted(p.C for p in profiles) == [1e18, 3e18, 1e19, 3e19, 1e20]
    assert alloc.a == pytest.approx(parametric(TRUE).a, abs=0.01)
