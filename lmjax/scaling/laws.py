"""Scaling-law functional forms.

A form is a `Law`: one function of `(params, inputs)` plus the names and the starting grid the
fitter needs. Every built-in form returns the *log* of the predicted loss (the fitter compares
logs), written in log-sum-exp form so that huge or tiny terms never overflow.

Fit-space parameters are the ones the optimizer moves (e.g. Chinchilla's `e = log E`); `natural`
maps them to the numbers one reports (E, A, B, alpha, beta).

Adding a form takes one function::

    def my_law(p, x):                       # p, x: dicts of jnp arrays
        return p["E"] + p["A"] * x["N"] ** -p["alpha"]

    law = make_law("mine", my_law, inputs=("N",),
                   grid={"E": [1, 2], "A": [10, 100, 1000], "alpha": [0.2, 0.5]})

(`log=True` when the function already returns log L.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lmjax.errors import ConfigError

Params = Mapping[str, "jnp.ndarray"]
Inputs = Mapping[str, "jnp.ndarray"]


def _identity(p: Mapping[str, float]) -> dict:
    return dict(p)


def _lse(*terms):
    """log(sum(exp(terms))) elementwise, without stacking (XLA:CPU fuses this far better)."""
    m = terms[0]
    for t in terms[1:]:
        m = jnp.maximum(m, t)
    m = jax.lax.stop_gradient(m)
    return m + jnp.log(sum(jnp.exp(t - m) for t in terms))


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a static jit argument
class Law:
    """A scaling-law form.

    log_predict(params, inputs) -> log L, params keyed by `params` (fit space), inputs keyed by
    `inputs` (column names such as "N", "D", "C", "S"). `natural` maps fit-space values (floats
    or numpy arrays) to reported parameters. `loglinear`, when set, marks a pure power law
    log L = c0 + c1 * log x: it maps the least-squares coefficients (c0, c1) to fit-space params.
    `derived` maps natural parameters to derived quantities (bootstrapped alongside them).
    """

    name: str
    inputs: tuple[str, ...]
    params: tuple[str, ...]
    log_predict: Callable[[Params, Inputs], jnp.ndarray]
    grid: Mapping[str, Sequence[float]]
    natural: Callable[[Mapping], dict] = _identity
    loglinear: Callable[[float, float], dict] | None = None
    derived: Callable[[Mapping], dict] | None = None
    formula: str = ""

    def __post_init__(self):
        missing = [p for p in self.params if p not in self.grid]
        if missing:
            raise ConfigError(f"law {self.name!r}: no starting grid for parameter(s) {missing}")

    def grid_points(self, grid: Mapping[str, Sequence[float]] | None = None) -> np.ndarray:
        """All starting points (S, P) of the Cartesian grid, in `params` order."""
        g = dict(self.grid)
        if grid:
            unknown = set(grid) - set(self.params)
            if unknown:
                raise ConfigError(
                    f"grid names unknown parameter(s) {sorted(unknown)} of law {self.name!r}; "
                    f"its parameters are {list(self.params)}"
                )
            g.update(grid)
        axes = [np.asarray(g[p], dtype=np.float64).ravel() for p in self.params]
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=-1)

    def predict(self, theta: Mapping[str, float], inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Predicted loss (not log) at `inputs`, from fit-space parameters `theta`."""
        with jax.enable_x64(True):
            x = {k: jnp.asarray(np.asarray(inputs[k], dtype=np.float64)) for k in self.inputs}
            p = {k: jnp.asarray(np.float64(theta[k])) for k in self.params}
            return np.exp(np.asarray(self.log_predict(p, x), np.float64))


def make_law(
    name: str,
    fn: Callable[[Params, Inputs], jnp.ndarray],
    *,
    inputs: Sequence[str],
    grid: Mapping[str, Sequence[float]],
    log: bool = False,
    natural: Callable[[Mapping], dict] | None = None,
) -> Law:
    """A law from one function of (params, inputs) returning L (or log L with log=True)."""
    log_fn = fn if log else (lambda p, x: jnp.log(fn(p, x)))
    return Law(
        name=name,
        inputs=tuple(inputs),
        params=tuple(grid),
        log_predict=log_fn,
        grid=dict(grid),
        natural=natural or _identity,
    )


# ------------------------------------------------------------------ Chinchilla (Hoffmann 2022)

CHINCHILLA_GRID = {
    "e": np.arange(-1.0, 1.01, 0.5),
    "a": np.arange(0.0, 25.1, 5.0),
    "b": np.arange(0.0, 25.1, 5.0),
    "alpha": np.arange(0.0, 2.01, 0.5),
    "beta": np.arange(0.0, 2.01, 0.5),
}


def _chinchilla_log(p, x):
    return _lse(p["a"] - p["alpha"] * jnp.log(x["N"]), p["b"] - p["beta"] * jnp.log(x["D"]), p["e"])


def _exp(v):
    with np.errstate(over="ignore"):
        return np.exp(v)


def _chinchilla_natural(p):
    return {"E": _exp(p["e"]), "A": _exp(p["a"]), "B": _exp(p["b"]), "alpha": p["alpha"], "beta": p["beta"]}


def chinchilla_derived(p: Mapping) -> dict:
    """Compute-optimal allocation exponents and coefficient of Hoffmann et al. (2022), eq. 4:
    N_opt(C) = G (C/6)^a, D_opt(C) = G^-1 (C/6)^b, a = beta/(alpha+beta), b = alpha/(alpha+beta),
    G = (alpha A / (beta B))^(1/(alpha+beta))."""
    s = p["alpha"] + p["beta"]
    with np.errstate(all="ignore"):
        G = np.exp((np.log(p["alpha"] * p["A"]) - np.log(p["beta"] * p["B"])) / s)
    return {"a": p["beta"] / s, "b": p["alpha"] / s, "G": G}


def chinchilla() -> Law:
    """L(N, D) = E + A / N^alpha + B / D^beta; fitted as LSE(a - alpha log N, b - beta log D, e)."""
    return Law(
        name="chinchilla",
        inputs=("N", "D"),
        params=("e", "a", "b", "alpha", "beta"),
        log_predict=_chinchilla_log,
        grid=CHINCHILLA_GRID,
        natural=_chinchilla_natural,
        derived=chinchilla_derived,
        formula="L(N, D) = E + A/N^alpha + B/D^beta",
    )


# ------------------------------------------------------------------ power law with offset


def power_law(x: str = "N") -> Law:
    """L(x) = E + A x^-alpha for x in {N, D, C}; fitted as LSE(e, a - alpha log x)."""
    if x not in ("N", "D", "C"):
        raise ConfigError(f"power_law: x must be one of N, D, C, got {x!r}")

    def log_predict(p, inp):
        return _lse(p["e"], p["a"] - p["alpha"] * jnp.log(inp[x]))

    def natural(p):
        return {"E": _exp(p["e"]), "A": _exp(p["a"]), "alpha": p["alpha"]}

    # C spans larger values than N or D, so its coefficient grid reaches further.
    a_grid = np.arange(0.0, 50.1, 5.0) if x == "C" else CHINCHILLA_GRID["a"]
    return Law(
        name=f"power_{x}",
        inputs=(x,),
        params=("e", "a", "alpha"),
        log_predict=log_predict,
        grid={"e": CHINCHILLA_GRID["e"], "a": a_grid, "alpha": CHINCHILLA_GRID["alpha"]},
        natural=natural,
        formula=f"L({x}) = E + A/{x}^alpha",
    )


# ------------------------------------------------------------------ Kaplan et al. (2020)

_LOG_C_GRID = np.array([10.0, 20.0, 30.0, 40.0])  # log N_c, log D_c, log S_c starts
_KAPLAN_EXP_GRID = np.array([0.05, 0.1, 0.3, 0.6])


def _kaplan_single(x: str, exponent: str, scale: str) -> Law:
    def log_predict(p, inp):
        return p[exponent] * (p[scale] - jnp.log(inp[x]))

    def natural(p):
        return {scale[4:]: _exp(p[scale]), exponent: p[exponent]}

    def loglinear(c0, c1):  # log L = alpha log x_c - alpha log x
        alpha = -c1
        return {scale: c0 / alpha, exponent: alpha}

    return Law(
        name=f"kaplan_{x}",
        inputs=(x,),
        params=(scale, exponent),
        log_predict=log_predict,
        grid={scale: _LOG_C_GRID, exponent: _KAPLAN_EXP_GRID},
        natural=natural,
        loglinear=loglinear,
        formula=f"L({x}) = ({scale[4:]}/{x})^{exponent}",
    )


def kaplan_n() -> Law:
    """L(N) = (N_c / N)^alpha_N, a pure power law (least squares in log-log)."""
    return _kaplan_single("N", "alpha_N", "log_N_c")


def kaplan_d() -> Law:
    """L(D) = (D_c / D)^alpha_D, a pure power law (least squares in log-log)."""
    return _kaplan_single("D", "alpha_D", "log_D_c")


def kaplan_nd() -> Law:
    """L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D."""

    def log_predict(p, x):
        r = p["alpha_N"] / p["alpha_D"]
        return p["alpha_D"] * _lse(r * (p["log_N_c"] - jnp.log(x["N"])), p["log_D_c"] - jnp.log(x["D"]))

    def natural(p):
        return {
            "N_c": _exp(p["log_N_c"]),
            "D_c": _exp(p["log_D_c"]),
            "alpha_N": p["alpha_N"],
            "alpha_D": p["alpha_D"],
        }

    return Law(
        name="kaplan_ND",
        inputs=("N", "D"),
        params=("log_N_c", "log_D_c", "alpha_N", "alpha_D"),
        log_predict=log_predict,
        grid={"log_N_c": _LOG_C_GRID, "log_D_c": _LOG_C_GRID,
              "alpha_N": _KAPLAN_EXP_GRID, "alpha_D": _KAPLAN_EXP_GRID},
        natural=natural,
        formula="L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D",
    )


def kaplan_ns() -> Law:
    """L(N, S) = (N_c/N)^alpha_N + (S_c/S)^alpha_S, S = optimizer steps."""

    def log_predict(p, x):
        return _lse(p["alpha_N"] * (p["log_N_c"] - jnp.log(x["N"])),
                    p["alpha_S"] * (p["log_S_c"] - jnp.log(x["S"])))

    def natural(p):
        return {"N_c": _exp(p["log_N_c"]), "S_c": _exp(p["log_S_c"]),
                "alpha_N": p["alpha_N"], "alpha_S": p["alpha_S"]}

    return Law(
        name="kaplan_NS",
        inputs=("N", "S"),
        params=("log_N_c", "log_S_c", "alpha_N", "alpha_S"),
        log_predict=log_predict,
        grid={"log_N_c": _LOG_C_GRID, "log_S_c": np.array([0.0, 5.0, 10.0, 20.0]),
              "alpha_N": _KAPLAN_EXP_GRID, "alpha_S": np.array([0.1, 0.3, 0.6, 1.0])},
        natural=natural,
        formula="L(N, S) = (N_c/N)^alpha_N + (S_c/S)^alpha_S",
    )


FORMS: dict[str, Callable[[], Law]] = {
    "chinchilla": chinchilla,
    "power_N": lambda: power_law("N"),
    "power_D": lambda: power_law("D"),
    "power_C": lambda: power_law("C"),
    "kaplan_N": kaplan_n,
    "kaplan_D": kaplan_d,
    "kaplan_ND": kaplan_nd,
    "kaplan_NS": kaplan_ns,
}


_BUILT: dict[str, Law] = {}


def get_law(form: str | Law) -> Law:
    """A built-in form by name (see FORMS), or a Law passed through.

    Built-in laws are created once per process, so jitted fitters compile once per form.
    """
    if isinstance(form, Law):
        return form
    if form not in FORMS:
        raise ConfigError(f"unknown scaling-law form {form!r}; choose one of {sorted(FORMS)}")
    if form not in _BUILT:
        _BUILT[form] = FORMS[form]()
    return _BUILT[form]
