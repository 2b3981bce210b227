"""lmjax.scaling: scaling-law forms, fits with bootstrap intervals, the three Chinchilla
approaches, the extrapolation check, plots, and a one-call report.

    from lmjax import scaling
    data = scaling.load("sweeps/my_sweep")            # or a CSV with N, D, loss
    res = scaling.fit("chinchilla", data.points)       # Huber + L-BFGS over Chinchilla's grid
    boot = scaling.bootstrap(res, 1000)                # SEs and percentile intervals
    boot.summary()["alpha"], boot.interval("a")
"""

from lmjax.scaling.approaches import (Allocation, IsoFlopProfile, allocation_table, envelope,
                                      flops_per_param_token, isoflop, isoflop_profiles, parametric)
from lmjax.scaling.bootstrap import Bootstrap, bootstrap
from lmjax.scaling.data import ScalingData, from_points, from_sweep_table, load
from lmjax.scaling.extrapolation import Extrapolation, extrapolation_check
from lmjax.scaling.fit import FitResult, fit, loglog_lstsq
from lmjax.scaling.laws import (FORMS, Law, chinchilla, get_law, kaplan_d, kaplan_n, kaplan_nd,
                                kaplan_ns, make_law, power_law)
from lmjax.scaling.report import Analysis, analyze, report

__all__ = [
    "Allocation", "Analysis", "Bootstrap", "Extrapolation", "FORMS", "FitResult", "IsoFlopProfile", "Law",
    "ScalingData", "allocation_table", "analyze", "bootstrap", "chinchilla", "envelope", "extrapolation_check",
    "fit", "flops_per_param_token", "from_points", "from_sweep_table", "get_law", "isoflop", "isoflop_profiles",
    "kaplan_d", "kaplan_n", "kaplan_nd", "kaplan_ns", "load", "loglog_lstsq", "make_law", "parametric",
    "power_law", "report",
]
