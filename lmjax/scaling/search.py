"""Many Huber fits at once: the objective, a chunked batched solve, and a staged search.

    objective(theta) = sum_i w_i * Huber_delta(log_predict(theta, x_i) - log L_i)

Huber_delta(r) = r^2/2 for |r| <= delta, delta (|r| - delta/2) otherwise (scipy.special.huber,
as in Hoffmann et al. 2022 and Besiroglu et al. 2024). Gradients are exact (jax.grad).

Compiled shapes are bucketed so that one process compiles a handful of programs, whatever the
number of points or starts: points are padded with zero weight to 64, 256, 1024, ...; problems
run in fixed-size chunks (256 in float32, 64 in float64; fewer problems: the next power of 2).
With the persistent compilation cache (lmjax.jax_setup.setup_jax) a second process compiles
nothing.

Precision: everything runs inside `jax.enable_x64(True)`, a thread-local context, so the rest of
the process keeps JAX's default dtypes. Exploration stages may run in float32 (4-5x cheaper on
CPU); the last stage of every search runs in float64.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lmjax.scaling import lbfgs
from lmjax.scaling.laws import Law

DELTA = 1e-3
MEMORY = 10
CHUNK = {np.dtype(np.float32): 256, np.dtype(np.float64): 64}
TOL = {np.dtype(np.float32): (1e-6, 0.0), np.dtype(np.float64): (1e-13, 0.0)}  # (ftol, gtol)

# A stage: (keep, max_iter, dtype). keep: an int count or a float fraction of the searches
# alive in each group, the best ones so far; they continue with a fresh L-BFGS memory.
Stage = tuple[float | int, int, str]
FIT_SCHEDULE: tuple[Stage, ...] = ((1.0, 40, "float32"), (256, 200, "float32"), (64, 3000, "float64"))
BOOT_SCHEDULE: tuple[Stage, ...] = ((1.0, 80, "float32"), (1, 3000, "float64"))


def huber(r, delta):
    """scipy.special.huber(delta, r), elementwise."""
    a = jnp.abs(r)
    return jnp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def objective(law: Law, theta_P, x: Mapping, log_y, w, delta: float = DELTA):
    """Weighted Huber sum of log residuals for one parameter vector (jax arrays)."""
    p = {n: theta_P[i] for i, n in enumerate(law.params)}
    r = law.log_predict(p, x) - log_y
    return jnp.sum(w * huber(r, delta))


@functools.partial(jax.jit, static_argnames=("law", "delta", "memory"))
def _solve(law, theta0_SP, x, log_y, w_SN, ftol, gtol, max_iter, *, delta, memory):
    def fun(theta_P, w_N):
        return jax.value_and_grad(objective, argnums=1)(law, theta_P, x, log_y, w_N, delta)

    st = lbfgs.minimize_batched(fun, theta0_SP, (w_SN,), memory=memory, max_iter=max_iter, ftol=ftol, gtol=gtol)
    return st.x, st.f, st.it


def _bucket(n: int, lo: int = 16, base: int = 2) -> int:
    """The smallest lo * base^j >= n."""
    b = lo
    while b < n:
        b *= base
    return b


def solve(law: Law, theta0_SP, x: Mapping, y, w_SN, *, delta=DELTA, max_iter=1000, dtype="float64"):
    """L-BFGS from every row of theta0_SP, row s weighted by w_SN[s] ((N,) rows are shared).

    numpy in, numpy float64 out: (theta_SP, f_S, evaluations of the slowest chunk).
    """
    dtype = np.dtype(dtype)
    ftol, gtol = TOL[dtype]
    theta0_SP = np.asarray(theta0_SP, np.float64)
    S, N = theta0_SP.shape[0], len(y)
    w_SN = np.broadcast_to(np.asarray(w_SN, np.float64), (S, N))
    # Pad points to a bucket with zero-weight copies of the first point (finite wherever the real
    # points are, so no NaN can leak into the sums) and problems to whole chunks.
    n_pad = _bucket(N, 64, 4)  # 64, 256, 1024, ...: few programs; zero-weight padding is cheap
    chunk = min(CHUNK[dtype], _bucket(S))
    s_pad = -(-S // chunk) * chunk
    pad = np.zeros(n_pad - N, np.int64)
    xp = {k: np.concatenate([np.asarray(v, np.float64), np.asarray(v, np.float64)[pad]]) for k, v in x.items()}
    ly = np.log(np.asarray(y, np.float64))
    ly = np.concatenate([ly, ly[pad]])
    wp = np.zeros((s_pad, n_pad))
    wp[:S, :N] = w_SN
    th = np.concatenate([theta0_SP, np.repeat(theta0_SP[:1], s_pad - S, axis=0)])
    thetas, fs, evals = [], [], 0
    with jax.enable_x64(True):
        xj = {k: jnp.asarray(v, dtype) for k, v in xp.items()}
        lyj = jnp.asarray(ly, dtype)
        args = (jnp.asarray(ftol, dtype), jnp.asarray(gtol, dtype), jnp.int32(max_iter))
        outs = [
            _solve(law, jnp.asarray(th[i : i + chunk], dtype), xj, lyj, jnp.asarray(wp[i : i + chunk], dtype),
                   *args, delta=float(delta), memory=MEMORY)
            for i in range(0, s_pad, chunk)
        ]  # dispatched asynchronously, then gathered
        for t, f, it in outs:
            thetas.append(np.asarray(t, np.float64))
            fs.append(np.asarray(f, np.float64))
            evals = max(evals, int(np.max(it)))
    theta = np.concatenate(thetas)[:S]
    f = np.concatenate(fs)[:S]
    return theta, np.where(np.isfinite(f), f, np.inf), evals


def search(
    law: Law,
    theta0_GKP,
    x: Mapping,
    y,
    w_GN,
    *,
    schedule: Sequence[Stage] = FIT_SCHEDULE,
    delta: float = DELTA,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Staged multi-start search for G independent problems (e.g. bootstrap resamples), each
    with K starts and its own point weights w_GN[g].

    Returns (theta_GKP, f_GK, best_G, evaluations): every start's last iterate and objective
    (from the last stage it took part in), the index of each group's best start among those
    that finished the last stage, and the number of objective evaluations of the slowest
    problem summed over stages.
    """
    theta = np.array(theta0_GKP, np.float64)
    G, K, P = theta.shape
    w_GN = np.broadcast_to(np.asarray(w_GN, np.float64), (G, len(y)))
    f = np.zeros((G, K))
    alive = np.broadcast_to(np.arange(K), (G, K))
    evals = 0
    for keep, max_iter, dtype in schedule:
        n = int(round(keep * alive.shape[1])) if isinstance(keep, float) else int(keep)
        n = max(1, min(n, alive.shape[1]))
        order = np.argsort(np.take_along_axis(f, alive, axis=1), axis=1, kind="stable")
        alive = np.take_along_axis(alive, order[:, :n], axis=1)  # (G, n)
        g_idx = np.repeat(np.arange(G), n)
        k_idx = alive.ravel()
        th, fv, ev = solve(law, theta[g_idx, k_idx], x, y, w_GN[g_idx], delta=delta,
                           max_iter=max_iter, dtype=dtype)
        theta[g_idx, k_idx], f[g_idx, k_idx] = th, fv
        evals += ev
    f_alive = np.take_along_axis(f, alive, axis=1)
    best = np.take_along_axis(alive, np.argmin(f_alive, axis=1)[:, None], axis=1)[:, 0]
    return theta, f, best, evals
