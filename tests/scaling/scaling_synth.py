"""Synthetic scaling data for the tests: points and sweep tables from known laws."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

TRUE = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}
LSTM = {"E": 2.1, "A": 300.0, "B": 1500.0, "alpha": 0.28, "beta": 0.33}


def chinchilla_loss(p, N, D):
    return p["E"] + p["A"] / np.asarray(N) ** p["alpha"] + p["B"] / np.asarray(D) ** p["beta"]


def grid_points(p=TRUE, n_sizes=6, n_data=6, noise=0.01, seed=0, n_range=(1e7, 3e9), d_range=(1e9, 3e11)):
    """Final-loss points on an N x D grid with multiplicative log-normal noise."""
    rng = np.random.default_rng(seed)
    N, D = np.meshgrid(np.geomspace(*n_range, n_sizes), np.geomspace(*d_range, n_data), indexing="ij")
    N, D = N.ravel(), D.ravel()
    loss = chinchilla_loss(p, N, D) * np.exp(noise * rng.standard_normal(N.size))
    return pd.DataFrame({"N": N, "D": D, "loss": loss})


def write_sweep(directory, families=None, n_sizes=5, data_mult=(10, 20, 40), evals=8, noise=0.005, seed=0,
                flops_factor=6.3):
    """A sweep results.csv (the collector's columns): one row per (run, eval step)."""
    families = families or {"transformer": TRUE, "lstm": LSTM}
    rng = np.random.default_rng(seed)
    rows = []
    for fam, p in families.items():
        for n in np.geomspace(2e6, 5e7, n_sizes):
            for m in data_mult:
                run = f"{fam}_N{n:.0f}_x{m}"
                d_final = m * n
                for i in range(1, evals + 1):
                    tokens = d_final * i / evals
                    val = chinchilla_loss(p, n, tokens) * np.exp(noise * rng.standard_normal())
                    rows.append({
                        "family": fam, "run": run, "seed": 0, "lr": 1e-3, "params_total": 1.2 * n,
                        "params_non_embedding": n, "tokens": tokens, "flops": flops_factor * n * tokens,
                        "train_loss": val * 1.01, "val_loss": val, "val_bpb": val / np.log(2) / 4,
                        "wall_s": 1.0 * i, "step": 100 * i, "final": i == evals,
                    })
    os.makedirs(directory, exist_ok=True)
    df = pd.DataFrame(rows)
    df.to_csv(os.path.join(directory, "results.csv"), index=False)
    return df
