"""Bootstrap uncertainty for fitted laws: resample points with replacement, refit, vectorized.

Each resample is a vector of multinomial counts used as point weights, so all resamples are
refitted in one batched search (lmjax.scaling.search): every resample starts from the full
fit's optimum and from the few grid starts whose searches ended best in the full fit. Pure
power laws are refitted in closed form. Standard errors and percentile intervals come for
every parameter and for any derived quantity (a function of the natural parameters).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from lmjax.errors import ConfigError
from lmjax.scaling.fit import FitResult, loglog_lstsq
from lmjax.scaling.search import BOOT_SCHEDULE, Stage, search


@dataclasses.dataclass
class Bootstrap:
    """Bootstrap samples of a fit. samples[name] is an (R,) array (NaN where a refit failed)."""

    fit: FitResult
    samples: dict[str, np.ndarray]
    objective: np.ndarray
    level: float = 0.95

    @property
    def n(self) -> int:
        return int(self.objective.shape[0])

    @property
    def n_failed(self) -> int:
        return int(np.count_nonzero(~np.isfinite(self.objective)))

    def values(self, quantity: str | Callable[[Mapping[str, np.ndarray]], np.ndarray]) -> np.ndarray:
        """Samples of a parameter (by name) or of a derived quantity fn(params) (vectorized)."""
        if callable(quantity):
            return np.asarray(quantity(self.samples), np.float64)
        if quantity in self.samples:
            return self.samples[quantity]
        derived = _derived(self.fit, self.samples)
        if quantity in derived:
            return derived[quantity]
        raise ConfigError(f"bootstrap: unknown quantity {quantity!r}; known: {sorted(self.samples) + sorted(derived)}")

    def se(self, quantity) -> float | np.ndarray:
        v = self.values(quantity)
        with np.errstate(over="ignore", invalid="ignore"):  # unidentified parameters: se = inf
            return np.nanstd(v, axis=0, ddof=1)

    def interval(self, quantity, level: float | None = None) -> tuple:
        """Percentile interval (lo, hi) at `level` (default self.level)."""
        level = self.level if level is None else level
        if not 0 < level < 1:
            raise ConfigError(f"bootstrap: level must be in (0, 1), got {level}")
        v = self.values(quantity)
        q = 100 * (1 - level) / 2
        lo, hi = np.nanpercentile(v, [q, 100 - q], axis=0)
        return lo, hi

    def summary(self, level: float | None = None) -> dict[str, dict[str, float]]:
        """{name: {value, se, lo, hi}} for every parameter and the law's derived quantities."""
        point = {**self.fit.params, **_derived(self.fit, {k: np.float64(v) for k, v in self.fit.params.items()})}
        out = {}
        for name, value in point.items():
            lo, hi = self.interval(name, level)
            out[name] = {"value": float(value), "se": float(self.se(name)), "lo": float(lo), "hi": float(hi)}
        return out


def _derived(fit: FitResult, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if fit.law.derived is None:
        return {}
    return {k: np.asarray(v, np.float64) for k, v in fit.law.derived(params).items()}


def resample_weights(n_points: int, n: int, seed: int = 0) -> np.ndarray:
    """(n, n_points) multinomial counts: n resamples of n_points points with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_points, np.full(n_points, 1.0 / n_points), size=n).astype(np.float64)


def bootstrap(
    fit: FitResult,
    n: int = 1000,
    *,
    seed: int = 0,
    starts: int = 3,
    level: float = 0.95,
    schedule: Sequence[Stage] = BOOT_SCHEDULE,
) -> Bootstrap:
    """Refit `fit` on `n` resamples of its points (with replacement).

    starts: how many of the full fit's best grid starts each resample also tries (besides the
    full fit's optimum).
    """
    if n < 2:
        raise ConfigError(f"bootstrap: need at least 2 resamples, got {n}")
    law = fit.law
    points = np.flatnonzero(fit.weights > 0)
    counts = np.zeros((n, fit.n_points))
    counts[:, points] = resample_weights(points.size, n, seed)
    w_RN = counts * fit.weights
    if fit.method == "lstsq":
        (xname,) = law.inputs
        coef, sse = loglog_lstsq(fit.inputs[xname], fit.loss, w_RN)
        theta = {k: np.asarray(v) for k, v in law.loglinear(coef[:, 0], coef[:, 1]).items()}
        objective = np.where(np.isfinite(coef).all(axis=1), sse, np.nan)
    else:
        best = np.array([[fit.theta[p] for p in law.params]])
        theta0_KP = np.concatenate([best, fit.best_starts(starts)])
        theta0_RKP = np.broadcast_to(theta0_KP, (n, *theta0_KP.shape))
        theta_RKP, f_RK, best_R, _ = search(law, theta0_RKP, fit.inputs, fit.loss, w_RN,
                                             schedule=schedule, delta=fit.delta)
        rows = np.arange(n)
        objective = np.where(np.isfinite(f_RK[rows, best_R]), f_RK[rows, best_R], np.nan)
        theta = {p: theta_RKP[rows, best_R, i] for i, p in enumerate(law.params)}
    ok = np.isfinite(objective)
    samples = {k: np.where(ok, np.asarray(v, np.float64), np.nan) for k, v in law.natural(theta).items()}
    return Bootstrap(fit=fit, samples=samples, objective=objective, level=level)
