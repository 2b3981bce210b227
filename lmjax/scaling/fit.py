"""Fitting scaling laws: Huber loss on log loss, L-BFGS from a grid of starts, all vectorized.

    objective(theta) = sum_i w_i * Huber_delta(log_predict(theta, x_i) - log L_i)

with Huber_delta(r) = r^2/2 for |r| <= delta, delta (|r| - delta/2) otherwise (scipy.special.huber,
as in Hoffmann et al. 2022 and Besiroglu et al. 2024). Gradients are exact (jax.grad); every
grid start runs at once under vmap. The search runs in two stages: all starts for
`explore_iter` iterations, then the `polish` best ones to tight convergence (restarted with a
fresh L-BFGS memory), which finds the same optimum as running every start to the end, in a
fraction of the time.

Pure power laws (Law.loglinear) are fitted by weighted least squares in log-log instead.

Precision: fitting runs in float64 inside `jax.enable_x64(True)` (a thread-local context), so
other code in the process keeps its default dtypes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from lmjax.errors import ConfigError, DataError
from lmjax.scaling import lbfgs
from lmjax.scaling.laws import Law, get_law

DELTA = 1e-3


def huber(r, delta):
    """scipy.special.huber(delta, r), elementwise."""
    a = jnp.abs(r)
    return jnp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def objective(law: Law, theta_P, x: Mapping, log_y, w, delta: float = DELTA):
    """Weighted Huber sum of log residuals for one parameter vector (jax arrays)."""
    p = {n: theta_P[i] for i, n in enumerate(law.params)}
    r = law.log_predict(p, x) - log_y
    return jnp.sum(w * huber(r, delta))


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
    final_theta: np.ndarray | None = None  # (S, P) after the search (unpolished rows: stage 1)
    final_objective: np.ndarray | None = None  # (S,)
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


def _rows(idx: np.ndarray) -> str:
    shown = ", ".join(str(i) for i in idx[:20])
    return f"[{shown}{', ...' if idx.size > 20 else ''}] (0-based, {idx.size} in all)"


# ------------------------------------------------------------------ Huber + L-BFGS


@functools.partial(jax.jit, static_argnames=("law", "delta", "memory", "batched_w"))
def _solve(law, theta0_SP, x, log_y, w, ftol, gtol, max_iter, *, delta, memory, batched_w):
    """L-BFGS on every row of theta0_SP; w is (N,) shared or (S, N) per problem."""

    def fun(theta_P, *a):
        w_N = a[0] if batched_w else w
        return jax.value_and_grad(objective, argnums=1)(law, theta_P, x, log_y, w_N, delta)

    args = (w,) if batched_w else ()
    st = lbfgs.minimize_batched(fun, theta0_SP, args, memory=memory, max_iter=max_iter, ftol=ftol, gtol=gtol)
    return st.x, st.f, st.it, st.done


_TOL = {np.dtype(np.float32): (1e-6, 0.0), np.dtype(np.float64): (1e-12, 0.0)}


def solve(law: Law, theta0_SP, x, y, w, *, delta=DELTA, max_iter=1000, dtype=np.float64, memory=10):
    """Batched Huber fits; numpy in, numpy (float64) out.

    theta0_SP: (S, P) starts; w: (N,) shared weights or (S, N) per problem. dtype float32 is
    for cheap exploration, float64 for the final answer. Returns (theta_SP, f_S, evals, done_S).
    """
    dtype = np.dtype(dtype)
    ftol, gtol = _TOL[dtype]
    with jax.enable_x64(True):
        theta0 = jnp.asarray(np.asarray(theta0_SP), dtype)
        xj = {k: jnp.asarray(np.asarray(v), dtype) for k, v in x.items()}
        wj = jnp.asarray(np.asarray(w), dtype)
        log_y = jnp.asarray(np.log(np.asarray(y, np.float64)), dtype)
        out = _solve(law, theta0, xj, log_y, wj, jnp.asarray(ftol, dtype), jnp.asarray(gtol, dtype),
                     jnp.int32(max_iter), delta=float(delta), memory=memory, batched_w=wj.ndim == 2)
        theta, f, it, done = (np.array(a, dtype=np.float64 if a.dtype != np.bool_ else bool) for a in out)
    return theta, f, int(np.max(it)), done


# (keep, max_iter, dtype): explore every start cheaply in float32, then the best in float64.
SCHEDULE = ((1.0, 40, "float32"), (0.1, 200, "float32"), (32, 2000, "float64"))


def fit(
    law: str | Law,
    data,
    *,
    weights: Sequence[float] | None = None,
    method: str = "auto",
    grid: Mapping[str, Sequence[float]] | None = None,
    delta: float = DELTA,
    schedule: Sequence[tuple[float, int]] = SCHEDULE,
) -> FitResult:
    """Fit `law` to `data` (columns: the law's inputs and `loss`).

    method: "huber" (grid + L-BFGS, the default for forms with an offset), "lstsq" (least
    squares in log-log, only for pure power laws; the default for those), or "auto".
    grid overrides the starting values of some parameters (fit-space names).
    schedule: stages (keep, max_iter, dtype); each stage keeps the `keep` best searches so far
    (an int count, or a float fraction of them) and continues them (fresh L-BFGS memory) for at
    most `max_iter` evaluations in `dtype`. The last stage should run to convergence in float64.
    ((1.0, 5000, "float64"),) runs every start to the end.
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
    theta, f = starts.copy(), np.zeros(len(starts))
    alive, n_evals = np.arange(len(starts)), 0
    for keep, iters, dtype in schedule:
        n = int(round(keep * len(alive))) if isinstance(keep, float) else int(keep)
        alive = alive[np.argsort(f[alive], kind="stable")[: max(1, min(n, len(alive)))]]
        theta[alive], f[alive], ev, _ = solve(law, theta[alive], x, y, w, delta=delta, max_iter=iters,
                                              dtype=dtype)
        f[alive] = np.where(np.isfinite(f[alive]), f[alive], np.inf)
        n_evals += ev
    best = alive[int(np.argmin(f[alive]))]
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
