"""Fitting scaling laws to a table of points.

Forms with an offset (Chinchilla, E + A x^-alpha, Kaplan's two-variable forms, user forms) are
fitted by minimizing the Huber loss (delta = 1e-3) between log prediction and log loss with
L-BFGS from a grid of starting points, all starts vectorized (lmjax.scaling.search). The search
is staged: every start explores for a few iterations in float32, the 256 best continue, the 64
best are polished to convergence in float64; the best polished one is the fit. Pure power laws
(Law.loglinear) are fitted by weighted least squares in log-log.

Float64: the JAX work runs under `jax.enable_x64(True)` (thread-local), never process-wide.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lmjax.errors import ConfigError, DataError
from lmjax.scaling.data import format_rows as _rows
from lmjax.scaling.laws import Law, get_law
from lmjax.scaling.search import DELTA, FIT_SCHEDULE, Stage, search


@dataclasses.dataclass
class FitResult:
    """A fitted law. `theta` is in fit space, `params` are the reported (natural) values."""

    law: Law
    theta: dict[str, float]
    params: dict[str, float]
    objective: float
    method: str  # "huber" or "lstsq"
    inputs: dict[str, np.ndarray]  # the points fitted
    loss: np.ndarray
    weights: np.ndarray
    delta: float = DELTA
    starts: np.ndarray | None = None  # (S, P) initial grid, fit space
    final_theta: np.ndarray | None = None  # (S, P) each start's last iterate (from its last stage)
    final_objective: np.ndarray | None = None  # (S,) objective there (float32 for early-dropped starts)
    n_evals: int = 0

    @property
    def n_points(self) -> int:
        return int(self.loss.shape[0])

    def predict(self, inputs: Mapping[str, np.ndarray] | pd.DataFrame) -> np.ndarray:
        """Predicted loss at `inputs` (a mapping or DataFrame holding the law's input columns)."""
        return self.law.predict(self.theta, {k: np.asarray(inputs[k]) for k in self.law.inputs})

    def residuals(self) -> np.ndarray:
        """log(predicted) - log(observed) at the fitted points."""
        return np.log(self.predict(self.inputs)) - np.log(self.loss)

    def best_starts(self, k: int) -> np.ndarray:
        """The k grid starts (fit space) whose searches ended lowest, best first."""
        if self.starts is None:
            return np.asarray([[self.theta[n] for n in self.law.params]])
        order = np.argsort(np.where(np.isfinite(self.final_objective), self.final_objective, np.inf))
        return self.starts[order[:k]]

    def as_dict(self) -> dict:
        out = {k: float(v) for k, v in self.params.items()}
        out["huber" if self.method == "huber" else "sse"] = float(self.objective)
        return out


# ------------------------------------------------------------------ inputs


def _prepare(law: Law, data, weights) -> tuple[dict, np.ndarray, np.ndarray]:
    if isinstance(data, pd.DataFrame):
        cols = set(data.columns)
    elif isinstance(data, Mapping):
        cols = set(data)
    else:
        raise ConfigError(f"fit: data must be a DataFrame or a mapping of columns, got {type(data).__name__}")
    need = [*law.inputs, "loss"]
    missing = [c for c in need if c not in cols]
    if missing:
        raise DataError(f"fit {law.name!r}: missing column(s) {missing}; the form needs columns {need}")
    x = {k: np.asarray(data[k], dtype=np.float64).ravel() for k in law.inputs}
    y = np.asarray(data["loss"], dtype=np.float64).ravel()
    n = y.shape[0]
    for k, v in {**x, "loss": y}.items():
        if v.shape[0] != n:
            raise DataError(f"fit: column {k!r} has {v.shape[0]} values, loss has {n}")
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size:
            raise DataError(f"fit: column {k!r} is NaN or infinite in rows {_rows(bad)}")
        bad = np.flatnonzero(v <= 0)
        if bad.size:
            raise DataError(f"fit: column {k!r} must be positive; non-positive in rows {_rows(bad)}")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape[0] != n:
        raise DataError(f"fit: {w.shape[0]} weights for {n} points")
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        raise DataError(f"fit: weights must be finite and non-negative; bad in rows {_rows(bad)}")
    n_eff = int(np.count_nonzero(w))
    if n_eff < len(law.params):
        raise DataError(
            f"fit {law.name!r}: {n_eff} points with non-zero weight, but the form has "
            f"{len(law.params)} parameters; need at least as many points as parameters"
        )
    return x, y, w


def fit(
    law: str | Law,
    data,
    *,
    weights: Sequence[float] | None = None,
    method: str = "auto",
    grid: Mapping[str, Sequence[float]] | None = None,
    delta: float = DELTA,
    schedule: Sequence[Stage] = FIT_SCHEDULE,
) -> FitResult:
    """Fit `law` to `data` (columns: the law's inputs and `loss`).

    method: "huber" (grid + L-BFGS, the default for forms with an offset), "lstsq" (least
    squares in log-log, only for pure power laws; the default for those), or "auto".
    grid overrides the starting values of some parameters (fit-space names).
    schedule: stages (keep, max_iter, dtype) of lmjax.scaling.search.search; the last stage
    should run to convergence in float64. ((1.0, 5000, "float64"),) runs every start to the end.
    """
    law = get_law(law)
    x, y, w = _prepare(law, data, weights)
    if method == "auto":
        method = "lstsq" if law.loglinear is not None else "huber"
    if method == "lstsq":
        return _fit_lstsq(law, x, y, w)
    if method != "huber":
        raise ConfigError(f"fit: method must be 'auto', 'huber' or 'lstsq', got {method!r}")
    if not delta > 0:
        raise ConfigError(f"fit: Huber delta must be positive, got {delta}")

    starts = law.grid_points(grid)
    theta_GKP, f_GK, best, n_evals = search(law, starts[None], x, y, w[None], schedule=schedule, delta=delta)
    theta, f, best = theta_GKP[0], f_GK[0], int(best[0])
    if not np.isfinite(f[best]):
        raise DataError(f"fit {law.name!r}: the objective is not finite at any starting point")
    theta_best = {n: float(theta[best, i]) for i, n in enumerate(law.params)}
    return FitResult(
        law=law, theta=theta_best, params=_natural(law, theta_best), objective=float(f[best]),
        method="huber", inputs=x, loss=y, weights=w, delta=delta, starts=starts,
        final_theta=theta, final_objective=f, n_evals=n_evals,
    )


def _natural(law: Law, theta: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in law.natural({k: np.float64(v) for k, v in theta.items()}).items()}


# ------------------------------------------------------------------ least squares in log-log


def loglog_lstsq(x, y, w=None) -> tuple[np.ndarray, float]:
    """Weighted least squares log y = c0 + c1 log x. Returns ((c0, c1), weighted SSE).

    x, y may carry a leading batch axis with w of shape (R, N) for many fits at once.
    """
    lx, ly = np.log(np.asarray(x, np.float64)), np.log(np.asarray(y, np.float64))
    w = np.ones_like(ly) if w is None else np.asarray(w, np.float64)
    lx, ly = np.broadcast_to(lx, w.shape), np.broadcast_to(ly, w.shape)
    sw = w.sum(-1)
    mx, my = (w * lx).sum(-1) / sw, (w * ly).sum(-1) / sw
    sxx = (w * (lx - mx[..., None]) ** 2).sum(-1)
    sxy = (w * (lx - mx[..., None]) * (ly - my[..., None])).sum(-1)
    c1 = sxy / np.where(sxx > 0, sxx, np.nan)
    c0 = my - c1 * mx
    sse = (w * (ly - c0[..., None] - c1[..., None] * lx) ** 2).sum(-1)
    return np.stack([c0, c1], axis=-1), sse


def _fit_lstsq(law: Law, x, y, w) -> FitResult:
    if law.loglinear is None:
        raise ConfigError(f"fit: least squares in log-log needs a pure power law; {law.name!r} is not one")
    (xname,) = law.inputs
    if np.unique(x[xname][w > 0]).size < 2:
        raise DataError(f"fit {law.name!r}: column {xname!r} needs at least two distinct values")
    (c0, c1), sse = loglog_lstsq(x[xname], y, w)
    theta = {k: float(v) for k, v in law.loglinear(c0, c1).items()}
    return FitResult(law=law, theta=theta, params=_natural(law, theta), objective=float(sse),
                     method="lstsq", inputs=x, loss=y, weights=w)
