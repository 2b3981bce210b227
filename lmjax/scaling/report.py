"""One analysis of a table of points: fit, bootstrap, the three approaches, the extrapolation
check and the plots; shared by the `lmjax fit` command, `report()` and the notebook."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd

from lmjax.errors import DataError
from lmjax.scaling import plots
from lmjax.scaling.approaches import (Allocation, IsoFlopProfile, allocation_table, envelope,
                                      flops_per_param_token, isoflop, parametric)
from lmjax.scaling.bootstrap import Bootstrap, bootstrap
from lmjax.scaling.data import ScalingData, load
from lmjax.scaling.extrapolation import Extrapolation, extrapolation_check, model_sizes
from lmjax.scaling.fit import FitResult, fit
from lmjax.scaling.laws import Law, get_law


@dataclasses.dataclass
class Analysis:
    name: str
    fit: FitResult
    boot: Bootstrap | None
    k: float  # FLOPs per parameter per token
    allocations: dict[str, Allocation] = dataclasses.field(default_factory=dict)
    profiles: list[IsoFlopProfile] = dataclasses.field(default_factory=list)
    extrapolation: Extrapolation | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    plots: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        """Parameters, objective, and (with a bootstrap) se / ci / derived quantities."""
        out: dict = {"form": self.fit.law.name, "n_points": self.fit.n_points, **self.fit.as_dict()}
        if self.boot is not None:
            summ = self.boot.summary()
            out["ci"] = {k: [v["lo"], v["hi"]] for k, v in summ.items()}
            out["se"] = {k: v["se"] for k, v in summ.items()}
            out["bootstrap"] = {"resamples": self.boot.n, "failed": self.boot.n_failed, "level": self.boot.level}
            derived = {k: v["value"] for k, v in summ.items() if k not in self.fit.params}
            if derived:
                out["derived"] = derived
        if self.allocations:
            out["allocation"] = {k: {"a": float(np.mean(a.a)), "b": float(np.mean(a.b)),
                                     "a_se": _num(a.a_se), "b_se": _num(a.b_se)}
                                 for k, a in self.allocations.items()}
        if self.extrapolation is not None:
            e = self.extrapolation
            out["extrapolation"] = {"n_threshold": e.n_threshold, "held_out": len(e.held_out),
                                    "mean_abs_rel_error": e.mean_abs_rel_error,
                                    "max_abs_rel_error": e.max_abs_rel_error}
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    def text(self) -> str:
        """Human-readable summary."""
        f = self.fit
        lines = [f"{self.name}: {f.law.formula or f.law.name} ({f.n_points} points, {f.method}, "
                 f"{'Huber' if f.method == 'huber' else 'SSE'} {f.objective:.6g})"]
        summ = self.boot.summary() if self.boot is not None else {}
        if summ:
            lvl = f"{self.boot.level:.0%}"
            lines.append(f"  {'param':>8} {'value':>12} {'se':>10}   {lvl} interval "
                         f"({self.boot.n} bootstrap resamples)")
        for name, value in f.params.items():
            if name in summ:
                s = summ[name]
                lines.append(f"  {name:>8} {value:12.6g} {s['se']:10.4g}   ({s['lo']:.6g}, {s['hi']:.6g})")
            else:
                lines.append(f"  {name:>8} {value:12.6g}")
        for name, s in summ.items():
            if name not in f.params:
                lines.append(f"  {name:>8} {s['value']:12.6g} {s['se']:10.4g}   ({s['lo']:.6g}, {s['hi']:.6g})"
                             "  [derived]")
        if "parametric" in self.allocations:
            Cmax = float(np.max(self.k * f.inputs["N"] * f.inputs["D"]))
            tab = allocation_table(f.params, [Cmax, 10 * Cmax], k=self.k)
            for row in tab.itertuples():
                lines.append(f"  at C = {row.C:.3g}: N_opt = {row.N_opt:.3g}, D_opt = {row.D_opt:.3g}, "
                             f"{row.tokens_per_param:.1f} tokens/param, loss {row.loss:.4f}")
        for a in self.allocations.values():
            lines.append("  " + a.summary())
        if self.extrapolation is not None:
            lines.append("  " + self.extrapolation.summary())
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _poorly_identified(boot: Bootstrap, ratio: float = 10.0) -> list[str]:
    out = []
    for name in boot.fit.params:
        lo, hi = (abs(float(v)) for v in boot.interval(name))
        se = float(boot.se(name))
        at_zero = max(lo, hi) < 1e-8  # pinned to its bound: the data give it no gradient at all
        if not np.isfinite(se) or not np.isfinite(hi) or hi > ratio * max(lo, np.finfo(float).tiny) or at_zero:
            out.append(name)
    return out


def _num(v) -> float | None:
    v = float(np.mean(v))
    return v if np.isfinite(v) else None


def fit_table(law: Law, data: ScalingData) -> pd.DataFrame:
    """The rows a law is fitted to: final points, or training curves for laws of steps S."""
    if "S" in law.inputs and "S" not in data.points:
        if data.curves is None or "step" not in data.curves:
            raise DataError(f"form {law.name!r} needs a column S (optimizer steps) or a sweep with training curves")
        cur = data.curves[data.curves["step"] > 0]
        return cur.assign(S=cur["step"].astype(np.float64))
    return data.points


def analyze(
    data: ScalingData,
    *,
    form: str | Law = "chinchilla",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    plots_dir: str | os.PathLike | None = None,
    name: str = "fit",
    prefix: str = "",
    approaches: bool = True,
) -> Analysis:
    """Fit `form` to `data` (+ bootstrap, approaches, extrapolation check, plots)."""
    law = get_law(form)
    table = fit_table(law, data)
    result = fit(law, table)
    boot = bootstrap(result, n_boot, seed=seed, level=level) if n_boot > 0 else None
    k = flops_per_param_token(data.points, data.exact_flops)
    out = Analysis(name, result, boot, k)
    if boot is not None:
        loose = _poorly_identified(boot)
        if loose:
            out.notes.append(f"{', '.join(loose)} poorly identified by these points (the {boot.level:.0%} interval "
                             "spans more than a factor of 10, sits at 0, or the standard error is infinite): read the "
                             "law and its compute-optimal allocations with caution; more model or data sizes "
                             "and longer runs narrow them")
    if approaches and law.name == "chinchilla":
        out.allocations["parametric"] = parametric(result.params, k=k)
        try:
            out.allocations["envelope"] = envelope(data.curves, data.points)
        except DataError as e:
            out.notes.append(f"approach 1 skipped: {e}")
        try:
            out.allocations["isoflop"], out.profiles = isoflop(data.points, data.curves, k=k, min_budgets=3)
        except DataError as e:
            out.notes.append(f"approach 2 skipped: {e}")
    if approaches and set(law.inputs) <= set(data.points.columns) and "S" not in law.inputs:
        n_sizes = int(model_sizes(data.points["N"]).max()) + 1
        try:
            out.extrapolation = extrapolation_check(data.points, law, holdout_sizes=1)
        except DataError as e:
            out.notes.append(f"extrapolation check skipped ({n_sizes} model sizes): {e}")
    if plots_dir is not None:
        out.plots = _plots(out, data, plots_dir, prefix)
    return out


def _plots(a: Analysis, data: ScalingData, out_dir, prefix: str) -> list[str]:
    paths = []

    def save(fig, name):
        paths.extend(plots.save(fig, out_dir, prefix + name))

    if data.curves is not None and "run" in data.curves:
        save(plots.loss_curves(data.curves, "both"), "loss_curves")  # vs tokens | vs FLOPs + frontier
    if len(a.fit.law.inputs) == 1:
        save(plots.law_slices(a.fit), f"loss_vs_{a.fit.law.inputs[0]}")
    elif set(a.fit.law.inputs) == {"N", "D"}:
        save(plots.law_slices(a.fit, "both"), "loss_vs_N_and_D")  # per data size | per model size
    save(plots.residuals(a.fit), "residuals")
    if a.profiles:
        save(plots.isoflop_profiles(a.profiles), "isoflop")
    if a.allocations:
        save(plots.allocation(list(a.allocations.values()), boot=a.boot, k=a.k,
                              level=a.boot.level if a.boot else 0.95), "allocation")
    return paths


def report(sweep_dir: str | os.PathLike, out_dir: str | os.PathLike, *, n_boot: int = 200, seed: int = 0) -> str:
    """Fit Chinchilla's law per family (plus approaches 1-2 and the extrapolation check where
    the data supports them), write the plots into out_dir, and return a readable summary.
    The summary is also written to out_dir/scaling_report.txt."""
    from lmjax.jax_setup import setup_jax

    setup_jax()  # persistent compilation cache: later reports compile nothing
    data = load(sweep_dir)
    os.makedirs(out_dir, exist_ok=True)
    families = data.families or [None]
    parts = [f"Scaling report for {data.source} ({len(data.points)} final points"
             + (f", families {', '.join(families)})" if families != [None] else ")")
             + "".join(f"\nnote: {n}" for n in data.notes)]
    fits = {}
    for fam in families:
        d = data.family(fam) if fam is not None else data
        name = fam or "all"
        try:
            a = analyze(d, n_boot=n_boot, seed=seed, plots_dir=out_dir, name=name,
                        prefix=f"{name}_" if fam is not None else "")
        except DataError as e:
            parts.append(f"{name}: Chinchilla fit skipped: {e}")
            continue
        fits[name] = a.fit
        parts.append(a.text())
    if len(fits) > 1:
        plots.save(plots.families(fits, data.points), out_dir, "families")
    parts.append(f"plots: {os.fspath(out_dir)}")
    text = "\n\n".join(parts)
    with open(os.path.join(out_dir, "scaling_report.txt"), "w") as fh:
        fh.write(text + "\n")
    return text
