"""Extrapolation check: fit on all but the largest models, predict the held-out ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from lmjax.errors import DataError
from lmjax.scaling.approaches import budget_groups
from lmjax.scaling.fit import FitResult, fit
from lmjax.scaling.laws import Law, get_law


@dataclasses.dataclass
class Extrapolation:
    fit: FitResult  # fitted on the smaller models only
    held_out: pd.DataFrame  # N, D, loss, predicted, rel_error for the largest models
    n_threshold: float  # models with N >= n_threshold were held out

    @property
    def mean_abs_rel_error(self) -> float:
        return float(np.mean(np.abs(self.held_out["rel_error"])))

    @property
    def max_abs_rel_error(self) -> float:
        return float(np.max(np.abs(self.held_out["rel_error"])))

    @property
    def rmse_log(self) -> float:
        r = np.log(self.held_out["predicted"]) - np.log(self.held_out["loss"])
        return float(np.sqrt(np.mean(r**2)))

    def summary(self) -> str:
        return (f"extrapolation to N >= {self.n_threshold:.3g} ({len(self.held_out)} held-out points, "
                f"fit on {self.fit.n_points}): mean |rel error| {self.mean_abs_rel_error:.2%}, "
                f"max {self.max_abs_rel_error:.2%}")


def model_sizes(N, tol_decades: float = 0.005) -> np.ndarray:
    """Group ids of distinct model sizes (N within tol_decades counts as one size)."""
    return budget_groups(np.asarray(N, np.float64), tol_decades)


def extrapolation_check(points: pd.DataFrame, law: str | Law = "chinchilla", *, holdout_sizes: int = 1,
                        **fit_kwargs) -> Extrapolation:
    """Fit `law` on the points of all but the `holdout_sizes` largest model sizes and report the
    relative error of its predictions on the held-out ones."""
    law = get_law(law)
    if holdout_sizes < 1:
        raise DataError(f"extrapolation: holdout_sizes must be >= 1, got {holdout_sizes}")
    sizes = model_sizes(points["N"])
    n_sizes = int(sizes.max()) + 1
    if n_sizes <= holdout_sizes:
        raise DataError(f"extrapolation: {n_sizes} model sizes, cannot hold out {holdout_sizes} and fit on the rest")
    held = sizes >= n_sizes - holdout_sizes
    result = fit(law, points[~held], **fit_kwargs)
    test = points[held]
    pred = result.predict(test)
    table = pd.DataFrame({"N": test["N"].to_numpy(), "D": test["D"].to_numpy(), "loss": test["loss"].to_numpy(),
                          "predicted": pred})
    table["rel_error"] = table["predicted"] / table["loss"] - 1
    return Extrapolation(result, table, float(test["N"].min()))
