"""The three compute-optimal allocation approaches of Hoffmann et al. (2022).

1. `envelope`: the lower envelope of the training curves over FLOP budgets; the run on the
   envelope at budget C gives N_opt(C), its tokens at C give D_opt(C).
2. `isoflop`: per FLOP budget, a parabola of loss in log N; its minimum gives N_opt(C) and
   D_opt(C) = C / (k N_opt).
3. `parametric`: from the fitted L(N, D) = E + A/N^alpha + B/D^beta,
   N_opt(C) = G (C/k)^a, D_opt(C) = G^-1 (C/k)^b, a = beta/(alpha+beta), b = alpha/(alpha+beta).

Approaches 1 and 2 end with power laws N_opt = n0 C^a, D_opt = d0 C^b fitted by least squares in
log-log. k is the FLOPs per parameter per token: 6 (C = 6ND) by default, or the median of
C / (N D) when the table has the exact FLOPs (`flops_per_param_token`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pandas as pd

from lmjax.errors import DataError
from lmjax.scaling.fit import loglog_lstsq


@dataclasses.dataclass
class Allocation:
    """N_opt(C) = n0 C^a and D_opt(C) = d0 C^b from one approach.

    points: the (C, N_opt, D_opt, loss) estimates the power laws were fitted to (empty for the
    parametric approach). a_se / b_se: least-squares standard errors (NaN with < 3 points).
    """

    method: str
    a: float
    b: float
    n0: float
    d0: float
    points: pd.DataFrame
    a_se: float = float("nan")
    b_se: float = float("nan")
    note: str = ""

    def n_opt(self, C):
        return self.n0 * np.asarray(C, np.float64) ** self.a

    def d_opt(self, C):
        return self.d0 * np.asarray(C, np.float64) ** self.b

    def tokens_per_param(self, C):
        return self.d_opt(C) / self.n_opt(C)

    def summary(self) -> str:
        def pm(v, se):
            return f"{v:.3f}" + (f" +- {se:.3f}" if np.isfinite(se) else "")

        return (f"{self.method}: N_opt ~ C^{pm(self.a, self.a_se)}, D_opt ~ C^{pm(self.b, self.b_se)}"
                + (f" ({len(self.points)} points)" if len(self.points) else "")
                + (f"; {self.note}" if self.note else ""))


def flops_per_param_token(points: pd.DataFrame, exact: bool) -> float:
    """k in C = k N D: 6 unless the table has exact FLOPs, then their median ratio."""
    if not exact or "C" not in points:
        return 6.0
    return float(np.median(points["C"] / (points["N"] * points["D"])))


def _power_fits(method: str, pts: pd.DataFrame, note: str = "") -> Allocation:
    if len(pts) < 2 or pts["C"].nunique() < 2:
        raise DataError(f"{method}: need optimal points at two or more FLOP budgets, got {len(pts)}")
    out = {}
    for col in ("N_opt", "D_opt"):
        (c0, c1), _ = loglog_lstsq(pts["C"], pts[col])
        lx, ly = np.log(pts["C"].to_numpy()), np.log(pts[col].to_numpy())
        n = len(lx)
        se = np.nan
        if n > 2:
            resid = ly - c0 - c1 * lx
            sxx = np.sum((lx - lx.mean()) ** 2)
            se = float(np.sqrt(np.sum(resid**2) / (n - 2) / sxx)) if sxx > 0 else np.nan
        out[col] = (float(np.exp(c0)), float(c1), se)
    (n0, a, a_se), (d0, b, b_se) = out["N_opt"], out["D_opt"]
    return Allocation(method, a, b, n0, d0, pts.reset_index(drop=True), a_se, b_se, note)


# ------------------------------------------------------------------ approach 1


def envelope(
    curves: pd.DataFrame | None,
    points: pd.DataFrame | None = None,
    *,
    n_budgets: int = 200,
    min_runs: int = 2,
) -> Allocation:
    """Approach 1: the lowest loss over runs at each FLOP budget.

    curves: rows (run, N, D, C, loss), several per run. Each run's loss is interpolated linearly
    in (log C, log loss) between its eval points; at each of `n_budgets` log-spaced budgets that
    at least `min_runs` runs reach, the run with the lowest loss is the optimum. Without
    curves, the Pareto frontier of the final points (lowest loss so far in increasing C) is
    used instead, which is coarser.
    """
    if curves is None or curves.empty or "run" not in curves:
        if points is None or points.empty:
            raise DataError("envelope: needs training curves (with a run column) or final points")
        p = points.sort_values(["C", "loss"]).reset_index(drop=True)
        best = np.minimum.accumulate(p["loss"].to_numpy())
        front = p[p["loss"].to_numpy() <= best].drop_duplicates("C")
        pts = pd.DataFrame({"C": front["C"], "N_opt": front["N"], "D_opt": front["D"], "loss": front["loss"]})
        return _power_fits("envelope", pts, "frontier of final points (no training curves)")

    runs = []
    for _, g in curves.groupby("run", sort=False):
        g = g.sort_values("C")
        g = g[(g["C"] > 0) & (g["loss"] > 0)]
        if len(g) >= 2:
            runs.append((np.log(g["C"].to_numpy()), np.log(g["loss"].to_numpy()),
                         np.log(g["D"].to_numpy()), float(g["N"].iloc[0])))
    if len(runs) < min_runs:
        raise DataError(f"envelope: need {min_runs} or more runs with two or more eval points, got {len(runs)}")
    lo = min(r[0][0] for r in runs)
    hi = max(r[0][-1] for r in runs)
    budgets = np.linspace(lo, hi, n_budgets)
    loss_RB = np.full((len(runs), n_budgets), np.inf)
    logd_RB = np.full((len(runs), n_budgets), np.nan)
    for i, (lc, ll, ld, _) in enumerate(runs):
        inside = (budgets >= lc[0]) & (budgets <= lc[-1])
        loss_RB[i, inside] = np.interp(budgets[inside], lc, ll)
        logd_RB[i, inside] = np.interp(budgets[inside], lc, ld)
    covered = np.isfinite(loss_RB).sum(axis=0) >= min_runs
    if covered.sum() < 2:
        raise DataError(f"envelope: fewer than two FLOP budgets are reached by {min_runs} or more runs")
    arg = np.argmin(loss_RB[:, covered], axis=0)
    cols = np.flatnonzero(covered)
    pts = pd.DataFrame({
        "C": np.exp(budgets[covered]),
        "N_opt": np.array([runs[i][3] for i in arg]),
        "D_opt": np.exp(logd_RB[arg, cols]),
        "loss": np.exp(loss_RB[arg, cols]),
    })
    return _power_fits("envelope", pts)


def frontier(curves: pd.DataFrame, n_budgets: int = 200) -> pd.DataFrame:
    """The compute frontier (C, loss): the lowest loss any run reaches at each budget."""
    env = envelope(curves, n_budgets=n_budgets, min_runs=1)
    return env.points[["C", "loss"]]


# ------------------------------------------------------------------ approach 2


@dataclasses.dataclass
class IsoFlopProfile:
    C: float
    N: np.ndarray  # model sizes on the profile
    loss: np.ndarray
    coef: np.ndarray  # parabola in ln N: loss = c2 ln(N)^2 + c1 ln N + c0
    N_opt: float
    loss_opt: float
    ok: bool
    note: str = ""


def budget_groups(C: np.ndarray, tol_decades: float = 0.1) -> np.ndarray:
    """Cluster FLOP values into budgets: sorted log10 C split at gaps wider than tol_decades.
    Returns a group id per value."""
    lc = np.log10(np.asarray(C, np.float64))
    order = np.argsort(lc)
    gid_sorted = np.concatenate([[0], np.cumsum(np.diff(lc[order]) > tol_decades)])
    gid = np.empty_like(gid_sorted)
    gid[order] = gid_sorted
    return gid


def _profile(C: float, N: np.ndarray, loss: np.ndarray, min_sizes: int) -> IsoFlopProfile:
    order = np.argsort(N)
    N, loss = N[order], loss[order]
    if np.unique(N).size < min_sizes:
        return IsoFlopProfile(C, N, loss, np.full(3, np.nan), np.nan, np.nan, False,
                              f"{np.unique(N).size} model sizes (< {min_sizes})")
    coef = np.polyfit(np.log(N), loss, 2)
    if coef[0] <= 0:
        return IsoFlopProfile(C, N, loss, coef, np.nan, np.nan, False, "not convex")
    ln_opt = -coef[1] / (2 * coef[0])
    ok = np.log(N[0]) <= ln_opt <= np.log(N[-1])
    return IsoFlopProfile(C, N, loss, coef, float(np.exp(ln_opt)), float(np.polyval(coef, ln_opt)), bool(ok),
                          "" if ok else "minimum outside the sampled sizes")


def isoflop_profiles(
    points: pd.DataFrame,
    curves: pd.DataFrame | None = None,
    *,
    source: str = "auto",
    tol_decades: float = 0.1,
    min_sizes: int = 3,
    n_budgets: int = 8,
    min_budgets: int = 3,
) -> list[IsoFlopProfile]:
    """Loss vs N at fixed FLOP budgets.

    source "points": final points grouped into budgets, for IsoFLOP sweeps: by the `budget`
    column when the table has one, else clusters of C within tol_decades. "curves": training curves interpolated (in log C, log loss) at n_budgets
    log-spaced budgets, the best run per model size; this reuses the checkpoints of an N x D
    grid sweep (the loss mid-run of a decaying schedule is somewhat above that of a run of that
    length, so these minima lean to larger N). "auto": points when they give min_budgets usable
    profiles, else whichever of the two gives more.
    """
    if source not in ("auto", "points", "curves"):
        raise DataError(f"isoflop: source must be 'auto', 'points' or 'curves', got {source!r}")
    have_curves = curves is not None and not curves.empty and "run" in curves
    from_points = []
    if source in ("auto", "points"):
        if "budget" in points and pd.to_numeric(points["budget"], errors="coerce").gt(0).any():
            # An IsoFLOP sweep names each run's budget (the collector's `budget` column).
            budget = pd.to_numeric(points["budget"], errors="coerce").to_numpy(np.float64)
            groups = [(b, points[budget == b]) for b in np.unique(budget[budget > 0])]
        else:
            gid = budget_groups(points["C"].to_numpy(), tol_decades)
            groups = [(None, points[gid == g]) for g in np.unique(gid)]
        for b, sel in groups:
            C = b if b is not None else float(np.exp(np.log(sel["C"]).mean()))
            from_points.append(_profile(C, sel["N"].to_numpy(np.float64), sel["loss"].to_numpy(np.float64),
                                        min_sizes))
        if source == "points" or sum(p.ok for p in from_points) >= min_budgets or not have_curves:
            return from_points
    if not have_curves:
        raise DataError("isoflop: source='curves' needs training curves with a run column")
    from_curves = _curve_profiles(curves, min_sizes, n_budgets)
    if source == "curves" or sum(p.ok for p in from_curves) > sum(p.ok for p in from_points):
        return from_curves
    return from_points


def _curve_profiles(curves: pd.DataFrame, min_sizes: int, n_budgets: int) -> list[IsoFlopProfile]:
    runs = [g.sort_values("C") for _, g in curves.groupby("run", sort=False) if len(g) >= 2]
    if not runs:
        return []
    lo = np.log(float(np.min([r["C"].iloc[0] for r in runs])))
    hi = np.log(float(np.max([r["C"].iloc[-1] for r in runs])))
    profiles = []
    for lb in np.linspace(lo, hi, n_budgets + 2)[1:-1]:
        best: dict[float, float] = {}
        for r in runs:
            lc = np.log(r["C"].to_numpy())
            if lc[0] <= lb <= lc[-1]:
                ll = float(np.exp(np.interp(lb, lc, np.log(r["loss"].to_numpy()))))
                n = float(r["N"].iloc[0])
                best[n] = min(best.get(n, np.inf), ll)
        if best:
            N = np.array(sorted(best))
            profiles.append(_profile(float(np.exp(lb)), N, np.array([best[n] for n in N]), min_sizes))
    return profiles


def isoflop(
    points: pd.DataFrame,
    curves: pd.DataFrame | None = None,
    *,
    k: float = 6.0,
    min_budgets: int = 2,
    **kwargs,
) -> tuple[Allocation, list[IsoFlopProfile]]:
    """Approach 2: IsoFLOP parabolas, their minima, and power laws through them."""
    profiles = isoflop_profiles(points, curves, min_budgets=min_budgets, **kwargs)
    good = [p for p in profiles if p.ok]
    if len(good) < min_budgets:
        why = "; ".join(f"C={p.C:.3g}: {p.note}" for p in profiles if not p.ok)
        raise DataError(f"isoflop: {len(good)} usable FLOP budgets, need {min_budgets}" + (f" ({why})" if why else ""))
    pts = pd.DataFrame({
        "C": [p.C for p in good],
        "N_opt": [p.N_opt for p in good],
        "D_opt": [p.C / (k * p.N_opt) for p in good],
        "loss": [p.loss_opt for p in good],
    })
    return _power_fits("isoflop", pts), profiles


# ------------------------------------------------------------------ approach 3


def parametric(params: Mapping[str, float], *, k: float = 6.0) -> Allocation:
    """Approach 3 from Chinchilla parameters (E, A, B, alpha, beta): closed form.

    Works on numpy arrays of bootstrap samples too (then the fields are arrays).
    """
    alpha, beta, A, B = (np.asarray(params[n], np.float64) for n in ("alpha", "beta", "A", "B"))
    s = alpha + beta
    a, b = beta / s, alpha / s
    G = (alpha * A / (beta * B)) ** (1 / s)
    # N_opt = G (C/k)^a  ->  n0 = G k^-a
    return Allocation("parametric", a, b, G * k ** (-a), (1 / G) * k ** (-b), pd.DataFrame(),
                      note=f"C = {k:.3g} N D")


def allocation_table(params: Mapping[str, float], budgets, *, k: float = 6.0) -> pd.DataFrame:
    """N_opt, D_opt, tokens per parameter and predicted loss at each budget (approach 3)."""
    alloc = parametric(params, k=k)
    C = np.asarray(budgets, np.float64)
    n, d = alloc.n_opt(C), alloc.d_opt(C)
    loss = params["E"] + params["A"] / n ** params["alpha"] + params["B"] / d ** params["beta"]
    return pd.DataFrame({"C": C, "N_opt": n, "D_opt": d, "tokens_per_param": d / n, "loss": loss})
