"""Fitting: the Chinchilla reference fit, recovery of known laws, weights, user forms."""

import numpy as np
import pandas as pd
import pytest
from scaling_synth import TRUE, chinchilla_loss, grid_points

from lmjax.scaling import fit, get_law, kaplan_nd, make_law, power_law

# Besiroglu et al. (2024) on these 240 points (tests/data/README via /work/shared/reference).
PUBLISHED = {"E": (1.8172, 0.002), "A": (477.8, 3.0), "B": (2143.0, 20.0), "alpha": (0.3473, 0.001),
             "beta": (0.3672, 0.001)}


def test_chinchilla_reference_fit(chinchilla_fit):
    assert chinchilla_fit.n_points == 240
    for name, (value, tol) in PUBLISHED.items():
        assert abs(chinchilla_fit.params[name] - value) <= tol, (name, chinchilla_fit.params[name])
    assert chinchilla_fit.objective == pytest.approx(1.0182740e-3, rel=1e-6)


def test_reference_fit_is_a_minimum(chinchilla_fit, chinchilla_points):
    """A float64 scipy L-BFGS-B polish from our optimum (exact gradients) finds nothing lower."""
    import jax
    import jax.numpy as jnp
    from scipy.optimize import minimize

    from lmjax.scaling.search import objective

    law = chinchilla_fit.law
    with jax.enable_x64(True):
        x = {k: jnp.asarray(chinchilla_points[k].to_numpy()) for k in ("N", "D")}
        ly = jnp.log(jnp.asarray(chinchilla_points["loss"].to_numpy()))
        w = jnp.ones_like(ly)
        vg = jax.jit(jax.value_and_grad(lambda t: objective(law, t, x, ly, w)))
        theta0 = np.array([chinchilla_fit.theta[p] for p in law.params])
        res = minimize(lambda t: tuple(np.asarray(v, np.float64) for v in vg(jnp.asarray(t))), theta0,
                       jac=True, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12})
    assert res.fun >= chinchilla_fit.objective * (1 - 1e-9)


def test_recovers_exact_chinchilla_law():
    df = grid_points(TRUE, noise=0.0)
    res = fit("chinchilla", df)
    for k, v in TRUE.items():
        assert res.params[k] == pytest.approx(v, rel=2e-3), k
    assert res.objective < 1e-9


def test_power_law_with_offset_recovers():
    N = np.geomspace(1e6, 1e10, 12)
    df = pd.DataFrame({"N": N, "loss": 1.7 + 300.0 * N**-0.3})
    res = fit(power_law("N"), df)
    assert res.params == pytest.approx({"E": 1.7, "A": 300.0, "alpha": 0.3}, rel=2e-3)


def test_kaplan_pure_power_law_is_least_squares():
    D = np.geomspace(1e8, 1e11, 10)
    loss = (5.4e13 / D) ** 0.095 * np.exp(0.01 * np.sin(np.arange(10)))
    res = fit("kaplan_D", pd.DataFrame({"D": D, "loss": loss}))
    assert res.method == "lstsq"
    slope, icpt = np.polyfit(np.log(D), np.log(loss), 1)
    assert res.params["alpha_D"] == pytest.approx(-slope, rel=1e-9)
    assert np.log(res.params["D_c"]) == pytest.approx(icpt / -slope, rel=1e-9)
    huber = fit("kaplan_D", pd.DataFrame({"D": D, "loss": loss}), method="huber")
    assert huber.params["alpha_D"] == pytest.approx(0.095, abs=0.01)


def test_kaplan_two_variable_forms_recover():
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e9, 6), np.geomspace(1e8, 1e11, 6)))
    p = {"N_c": 8.8e13, "D_c": 5.4e13, "alpha_N": 0.076, "alpha_D": 0.095}
    loss = ((p["N_c"] / N) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / D) ** p["alpha_D"]
    res = fit(kaplan_nd(), pd.DataFrame({"N": N, "D": D, "loss": loss}))
    assert np.allclose(res.predict({"N": N, "D": D}), loss, rtol=1e-4)
    assert res.params["alpha_D"] == pytest.approx(0.095, rel=0.02)
    S = np.geomspace(1e3, 1e5, 6)
    N2, S2 = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e9, 6), S))
    loss_s = (6.5e13 / N2) ** 0.077 + (2.1e3 / S2) ** 0.76
    res_s = fit("kaplan_NS", pd.DataFrame({"N": N2, "S": S2, "loss": loss_s}))
    assert np.allclose(res_s.predict({"N": N2, "S": S2}), loss_s, rtol=1e-4)


def test_user_form_is_one_function():
    def offset_power(p, x):
        return p["E"] + p["A"] * x["N"] ** -p["alpha"]

    law = make_law("mine", offset_power, inputs=("N",),
                   grid={"E": [0.5, 1.5, 2.5], "A": [10.0, 100.0, 1000.0], "alpha": [0.1, 0.3, 0.6]})
    N = np.geomspace(1e6, 1e10, 12)
    df = pd.DataFrame({"N": N, "loss": 1.7 + 300.0 * N**-0.3})
    res = fit(law, df)
    assert res.params == pytest.approx({"E": 1.7, "A": 300.0, "alpha": 0.3}, rel=2e-3)


def test_weights_zero_and_integer():
    df = grid_points(TRUE, n_sizes=4, n_data=4, noise=0.02, seed=3)
    w = np.ones(len(df))
    w[:3] = 0.0
    a = fit("chinchilla", df, weights=w)
    b = fit("chinchilla", df.iloc[3:])
    assert a.objective == pytest.approx(b.objective, rel=1e-6)
    w2 = np.ones(len(df))
    w2[5] = 2.0
    c = fit("chinchilla", df, weights=w2)
    d = fit("chinchilla", pd.concat([df, df.iloc[[5]]]))
    assert c.objective == pytest.approx(d.objective, rel=1e-6)


def test_predict_and_residuals(chinchilla_fit, chinchilla_points):
    p = chinchilla_fit.params
    N, D = chinchilla_points["N"].to_numpy(), chinchilla_points["D"].to_numpy()
    assert np.allclose(chinchilla_fit.predict(chinchilla_points), chinchilla_loss(p, N, D), rtol=1e-12)
    assert np.sqrt(np.mean(chinchilla_fit.residuals() ** 2)) < 0.03
    assert set(chinchilla_fit.as_dict()) == {"E", "A", "B", "alpha", "beta", "huber"}


def test_unknown_form():
    from lmjax.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown scaling-law form 'chinchila'"):
        get_law("chinchila")


def test_batched_lbfgs_on_rosenbrock():
    import jax
    import jax.numpy as jnp

    from lmjax.scaling import lbfgs

    def rosen(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    with jax.enable_x64(True):
        x0 = jnp.array([[-1.2, 1.0, 0.5], [2.0, -1.0, 3.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
        st = jax.jit(lambda x: lbfgs.minimize_batched(jax.value_and_grad(rosen), x, (), memory=10, max_iter=2000,
                                                      ftol=1e-14, gtol=1e-10))(x0)
        assert np.allclose(np.asarray(st.x), 1.0, atol=1e-5)
        assert bool(np.all(np.asarray(st.done)))


def test_fitting_leaves_default_dtypes_alone(chinchilla_fit):
    import jax.numpy as jnp

    assert jnp.ones(3).dtype == jnp.float32  # float64 only inside the fitter's enable_x64 context
