"""Scaling plots (matplotlib, no pyplot state: figures are drawn with the Agg/SVG canvases and
saved as PNG and SVG, so they work headless and never touch the process's backend).

Every plot function returns a matplotlib Figure; `save(fig, out_dir, name)` writes both files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from lmjax.errors import DataError
from lmjax.scaling.approaches import Allocation, IsoFlopProfile, envelope, parametric
from lmjax.scaling.bootstrap import Bootstrap
from lmjax.scaling.extrapolation import model_sizes
from lmjax.scaling.fit import FitResult

CMAP = "viridis"


def save(fig: Figure, out_dir: str | os.PathLike, name: str) -> list[str]:
    """Write fig as out_dir/name.png and out_dir/name.svg; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        path = os.path.join(os.fspath(out_dir), f"{name}.{ext}")
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths


def _panels(x: str, both: tuple[str, str], title: str, draw) -> Figure:
    """One panel for x, or the two of ``both`` side by side for x="both" (then without a title);
    draw(fig, ax, x, title) fills a panel."""
    xs = both if x == "both" else (x,)
    fig, axes = _figure(len(xs))
    for ax, xi in zip(axes, xs):
        draw(fig, ax, xi, title if len(xs) == 1 else "")
    return fig


def _figure(ncols: int = 1, width: float = 5.5, height: float = 4.2) -> tuple[Figure, list]:
    # Fixed margins: a layout engine (constrained / tight) doubles the drawing time.
    fig = Figure(figsize=(width * ncols, height))
    fig.subplots_adjust(left=0.7 / (width * ncols), right=1 - 0.25 / (width * ncols), bottom=0.12, top=0.92,
                        wspace=0.28)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


_SUP = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def _pow10(v: float) -> str:
    """1e14 -> '10¹⁴', 3e14 -> '3×10¹⁴' (plain text: mathtext labels dominate drawing time)."""
    if v <= 0:
        return ""
    e = int(np.floor(np.log10(v) + 1e-9))
    m = v / 10.0**e
    head = "" if abs(m - 1) < 1e-6 else f"{m:.2g}\u00d7"
    return f"{head}10{str(e).translate(_SUP)}"


def _log_axis(axis) -> None:
    """Plain-text labels on a log axis: powers of ten; 2x and 5x too when it spans < 2 decades."""

    def minor(v, _):
        lo, hi = sorted(axis.get_view_interval())
        if lo <= 0 or np.log10(hi / lo) >= 2:
            return ""
        m = round(v / 10.0 ** np.floor(np.log10(v) + 1e-9), 6)
        return _pow10(v) if m in (2.0, 5.0) else ""

    axis.set_major_formatter(FuncFormatter(lambda v, _: _pow10(v)))
    axis.set_minor_formatter(FuncFormatter(minor))


def _log_loss_axis(ax):
    """Log-scaled loss axis with plain labels (2, 2.5, 3, ...): loss spans less than a decade,
    where matplotlib's default labels every minor tick with mathtext (slow and cluttered)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(NullLocator())


def _colorbar(fig, ax, norm, label):
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=CMAP)
    cb = fig.colorbar(sm, ax=ax, label=label)
    _log_axis(cb.ax.yaxis)


def _lognorm(v) -> LogNorm:
    v = np.asarray(v, np.float64)
    lo, hi = float(np.min(v)), float(np.max(v))
    return LogNorm(lo, hi if hi > lo else lo * 1.0001)


# ------------------------------------------------------------------ training curves


def loss_curves(curves: pd.DataFrame, x: str = "C", *, frontier: bool = True, title: str = "") -> Figure:
    """Loss vs tokens (x="D") or FLOPs (x="C") per run, coloured by model size, on log axes;
    with x="C" the compute frontier (lowest loss at each budget) is drawn dashed. x="both":
    the two side by side."""
    return _panels(x, ("D", "C"), title, lambda fig, ax, xi, t: _draw_curves(fig, ax, curves, xi, frontier, t))


def _draw_curves(fig, ax, curves, x, frontier, title):
    norm = _lognorm(curves["N"])
    cmap = matplotlib.colormaps[CMAP]
    for _, g in curves.groupby("run", sort=False) if "run" in curves else [(None, curves)]:
        g = g.sort_values(x)
        ax.plot(g[x], g["loss"], color=cmap(norm(g["N"].iloc[0])), lw=1.2, alpha=0.85)
    if frontier and x == "C" and "run" in curves:
        try:
            env = envelope(curves, min_runs=1)
            ax.plot(env.points["C"], env.points["loss"], "k--", lw=1.5, label="compute frontier")
            ax.legend(loc="upper right")
        except DataError:  # a frontier needs two or more eval points per run
            pass
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    _log_loss_axis(ax)
    ax.set_xlabel("training FLOPs C" if x == "C" else "tokens D")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title or f"loss vs {'FLOPs' if x == 'C' else 'tokens'}")
    _colorbar(fig, ax, norm, "parameters N")


# ------------------------------------------------------------------ fitted law slices


def _groups(v: np.ndarray, max_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Group ids and representative values: distinct values when few, else log-quantile bins."""
    gid = model_sizes(v, 0.005)
    if gid.max() + 1 > max_groups:
        edges = np.quantile(np.log(v), np.linspace(0, 1, max_groups + 1))
        gid = np.clip(np.searchsorted(edges, np.log(v), side="right") - 1, 0, max_groups - 1)
    reps = np.array([np.exp(np.mean(np.log(v[gid == g]))) for g in np.unique(gid)])
    _, gid = np.unique(gid, return_inverse=True)
    return gid, reps


def law_slices(result: FitResult, x: str = "N", *, max_groups: int = 8, title: str = "") -> Figure:
    """Final loss vs N per data size (x="N") or vs D per model size (x="D"), with the fitted law
    drawn at each group's representative value of the other variable. x="both": side by side.
    A law of one input is drawn against it."""
    if len(result.law.inputs) == 1:
        return _law_1d(result, title)
    return _panels(x, ("N", "D"), title, lambda fig, ax, xi, t: _draw_slices(fig, ax, result, xi, max_groups, t))


def _draw_slices(fig, ax, result, x, max_groups, title):
    other = "D" if x == "N" else "N"
    xs, os_, loss = result.inputs[x], result.inputs[other], result.loss
    gid, reps = _groups(os_, max_groups)
    norm = _lognorm(reps)
    cmap = matplotlib.colormaps[CMAP]
    grid = np.geomspace(xs.min() / 1.5, xs.max() * 1.5, 100)
    for g, rep in enumerate(reps):
        sel = gid == g
        c = cmap(norm(rep))
        ax.scatter(xs[sel], loss[sel], color=c, s=18, zorder=3)
        ax.plot(grid, result.predict({x: grid, other: np.full_like(grid, rep)}), color=c, lw=1.2)
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    _log_loss_axis(ax)
    ax.set_xlabel("parameters N" if x == "N" else "tokens D")
    ax.set_ylabel("final loss")
    ax.set_title(title or f"{result.law.name}: loss vs {x} per {other}")
    _colorbar(fig, ax, norm, "tokens D" if other == "D" else "parameters N")


def _law_1d(result: FitResult, title: str) -> Figure:
    (x,) = result.law.inputs
    fig, (ax,) = _figure()
    xs = result.inputs[x]
    grid = np.geomspace(xs.min() / 1.5, xs.max() * 1.5, 100)
    ax.scatter(xs, result.loss, s=18, zorder=3)
    ax.plot(grid, result.predict({x: grid}), lw=1.5, label=result.law.formula or result.law.name)
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    _log_loss_axis(ax)
    ax.set_xlabel(x)
    ax.set_ylabel("loss")
    ax.set_title(title or f"{result.law.name}: loss vs {x}")
    ax.legend()
    return fig


def residuals(result: FitResult, *, title: str = "") -> Figure:
    """log(predicted) - log(observed) vs each input of the law."""
    fig, axes = _figure(len(result.law.inputs))
    r = result.residuals()
    for ax, name in zip(axes, result.law.inputs):
        ax.scatter(result.inputs[name], r, s=12, color="tab:blue")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xscale("log")
        _log_axis(ax.xaxis)
        ax.set_xlabel(name)
        ax.set_ylabel("log residual (pred - obs)")
    axes[0].set_title(title or f"{result.law.name} residuals (RMS {np.sqrt(np.mean(r ** 2)):.2e})")
    return fig


# ------------------------------------------------------------------ compute-optimal allocation


def isoflop_profiles(profiles: Sequence[IsoFlopProfile], *, title: str = "") -> Figure:
    """Loss vs N per FLOP budget with the fitted parabolas (in log N) and their minima."""
    fig, (ax,) = _figure()
    norm = _lognorm([p.C for p in profiles])
    cmap = matplotlib.colormaps[CMAP]
    for p in profiles:
        c = cmap(norm(p.C))
        ax.scatter(p.N, p.loss, color=c, s=18, zorder=3)
        if np.all(np.isfinite(p.coef)):
            n = np.geomspace(p.N.min(), p.N.max(), 100)
            ax.plot(n, np.polyval(p.coef, np.log(n)), color=c, lw=1.2, ls="-" if p.ok else ":")
        if p.ok:
            ax.scatter([p.N_opt], [p.loss_opt], marker="*", s=120, color=c, edgecolor="k", zorder=4)
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    ax.set_xlabel("parameters N")
    ax.set_ylabel("loss")
    ax.set_title(title or "IsoFLOP profiles (stars: minima)")
    _colorbar(fig, ax, norm, "FLOPs C")
    return fig


def allocation(
    allocations: Sequence[Allocation],
    *,
    boot: Bootstrap | None = None,
    k: float = 6.0,
    C_range: tuple[float, float] | None = None,
    level: float = 0.95,
    title: str = "",
) -> Figure:
    """N_opt(C) and D_opt(C) for each approach; the parametric one with a bootstrap band."""
    fig, axes = _figure(2)
    Cs = [a.points["C"].to_numpy() for a in allocations if len(a.points)]
    if C_range is None:
        allc = np.concatenate(Cs) if Cs else np.array([1e18, 1e24])
        C_range = (allc.min() / 3, allc.max() * 3)
    C = np.geomspace(*C_range, 100)
    colours = {"envelope": "tab:blue", "isoflop": "tab:orange", "parametric": "tab:green"}
    for ax, which in zip(axes, ("N", "D")):
        for a in allocations:
            col = colours.get(a.method, "k")
            exp = a.a if which == "N" else a.b
            y = a.n_opt(C) if which == "N" else a.d_opt(C)
            ax.plot(C, y, color=col, lw=1.5, label=f"{a.method}: \u221d C^{exp:.3f}")
            if len(a.points):
                ax.scatter(a.points["C"], a.points[f"{which}_opt"], color=col, s=14, alpha=0.7)
        if boot is not None:
            band = parametric(boot.samples, k=k)
            vals = (band.n0[:, None] * C[None] ** band.a[:, None] if which == "N"
                    else band.d0[:, None] * C[None] ** band.b[:, None])
            q = 100 * (1 - level) / 2
            lo, hi = np.nanpercentile(vals, [q, 100 - q], axis=0)
            ax.fill_between(C, lo, hi, color=colours["parametric"], alpha=0.2,
                            label=f"parametric {level:.0%} bootstrap band")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_axis(ax.xaxis)
        _log_axis(ax.yaxis)
        ax.set_xlabel("FLOPs C")
        ax.set_ylabel("optimal parameters N_opt" if which == "N" else "optimal tokens D_opt")
        ax.legend(fontsize=8)
    axes[0].set_title(title or "compute-optimal allocation")
    return fig


# ------------------------------------------------------------------ families


def families(fits: Mapping[str, FitResult], points: pd.DataFrame | None = None, *, k: float = 6.0,
             title: str = "") -> Figure:
    """Final loss vs FLOPs per family (points), with each family's compute-optimal loss
    L(N_opt(C), D_opt(C)) from its Chinchilla fit (or its fitted law of C)."""
    fig, (ax,) = _figure(width=6.5)
    cmap = matplotlib.colormaps["tab10"]
    allC = np.concatenate([k * f.inputs["N"] * f.inputs["D"] if "N" in f.inputs and "D" in f.inputs
                           else f.inputs[f.law.inputs[0]] for f in fits.values()])
    C = np.geomspace(allC.min() / 2, allC.max() * 2, 100)
    for i, (name, f) in enumerate(sorted(fits.items())):
        col = cmap(i % 10)
        if points is not None and "family" in points:
            sel = points[points["family"].astype(str) == name]
            ax.scatter(sel["C"], sel["loss"], color=col, s=14, alpha=0.7)
        if f.law.name == "chinchilla":
            a = parametric(f.params, k=k)
            ax.plot(C, f.predict({"N": a.n_opt(C), "D": a.d_opt(C)}), color=col, lw=1.5,
                    label=f"{name}: E={f.params['E']:.2f}, alpha={f.params['alpha']:.2f}, beta={f.params['beta']:.2f}")
        elif f.law.inputs == ("C",):
            ax.plot(C, f.predict({"C": C}), color=col, lw=1.5, label=name)
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    _log_loss_axis(ax)
    ax.set_xlabel("FLOPs C")
    ax.set_ylabel("final loss")
    ax.set_title(title or "families: compute-optimal loss")
    ax.legend(fontsize=8)
    return fig
