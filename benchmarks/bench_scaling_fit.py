"""Benchmark: the Chinchilla grid fit (4,500 starts, 240 points) and 1,000 bootstrap resamples.

    .venv/bin/python benchmarks/bench_scaling_fit.py [--scipy-starts 20] [--bootstrap 1000]

Each configuration runs in a fresh process:
  cold   an empty JAX compilation cache: includes every compile;
  warm   the persistent compilation cache filled by the cold run (lmjax.jax_setup.setup_jax),
         the normal case for a second `lmjax fit`;
and within each process the call is repeated ("again": compiled programs in memory).
The scipy reference is L-BFGS-B with numerical gradients (as Besiroglu et al. 2024 ran it) from
--scipy-starts grid points, its time scaled to all 4,500 starts (--scipy-starts 4500 runs all).
Prints a table; never a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(ROOT, "tests", "data", "chinchilla_epoch_svg.csv")


def _points():
    import pandas as pd

    df = pd.read_csv(DATA)
    return df.sort_values("loss", kind="stable").iloc[:-5].sort_index().reset_index(drop=True)


def child(n_boot: int) -> dict:
    """Runs in a subprocess: times fit and bootstrap, twice each."""
    t0 = time.perf_counter()
    from lmjax.jax_setup import setup_jax

    setup_jax()
    from lmjax.scaling import bootstrap, fit

    pts = _points()
    out = {"import_s": time.perf_counter() - t0}
    for rep in ("first", "again"):
        t, c = time.perf_counter(), time.process_time()
        res = fit("chinchilla", pts)
        out[f"fit_{rep}_s"] = time.perf_counter() - t
        out[f"fit_{rep}_cpu"] = time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        b = bootstrap(res, n_boot, seed=0)
        out[f"boot_{rep}_s"] = time.perf_counter() - t
        out[f"boot_{rep}_cpu"] = time.process_time() - c
    out["params"] = res.params
    out["huber"] = res.objective
    out["ci_alpha"] = list(b.interval("alpha"))
    out["ci_beta"] = list(b.interval("beta"))
    return out


def scipy_reference(n_starts: int) -> tuple[float, float, dict]:
    """L-BFGS-B with finite-difference gradients from n_starts grid points (evenly spread)."""
    import numpy as np
    from scipy.optimize import minimize
    from scipy.special import huber, logsumexp

    pts = _points()
    lN, lD, ly = np.log(pts["N"].to_numpy()), np.log(pts["D"].to_numpy()), np.log(pts["loss"].to_numpy())

    def obj(t):
        e, a, b, alpha, beta = t
        pred = logsumexp(np.stack([a - alpha * lN, b - beta * lD, np.full_like(lN, e)]), axis=0)
        return float(np.sum(huber(1e-3, pred - ly)))

    import itertools

    grid = [np.arange(-1, 1.01, 0.5), np.arange(0, 25.1, 5), np.arange(0, 25.1, 5), np.arange(0, 2.01, 0.5),
            np.arange(0, 2.01, 0.5)]
    starts = np.array(list(itertools.product(*grid)))
    idx = np.linspace(0, len(starts) - 1, n_starts).round().astype(int)
    best = (np.inf, None)
    t = time.perf_counter()
    for s in starts[idx]:
        r = minimize(obj, s, method="L-BFGS-B")
        if r.fun < best[0]:
            best = (r.fun, r.x)
    dt = time.perf_counter() - t
    e, a, b, alpha, beta = best[1]
    return dt, dt * len(starts) / n_starts, {"E": np.exp(e), "A": np.exp(a), "B": np.exp(b), "alpha": alpha,
                                             "beta": beta, "huber": best[0]}


def run_child(cache: str, n_boot: int) -> dict:
    env = dict(os.environ, LMJAX_JAX_CACHE=cache, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--bootstrap", str(n_boot)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_s"] = time.perf_counter() - t
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--scipy-starts", type=int, default=20, help="0 skips the scipy reference")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.bootstrap)))
        return

    with tempfile.TemporaryDirectory(prefix="lmjax_bench_cache_") as cache:
        cold = run_child(cache, args.bootstrap)
        warm = run_child(cache, args.bootstrap)
    print(f"Chinchilla grid fit: 240 points x 4,500 starts; bootstrap: {args.bootstrap} resamples "
          f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    print("wall seconds (CPU seconds of the process in brackets; on a loaded machine wall > CPU)")
    print(f"{'step':38s} {'cold cache':>18s} {'warm cache':>18s}")
    rows = [("process start + imports", "import_s"), ("fit, first call", "fit_first_s"),
            ("fit, again in the same process", "fit_again_s"), ("bootstrap, first call", "boot_first_s"),
            ("bootstrap, again in the same process", "boot_again_s"), ("whole process", "process_s")]

    def cell(r, key):
        cpu = r.get(key.replace("_s", "_cpu"))
        return f"{r[key]:7.2f}s" + (f" ({cpu:6.2f}s)" if cpu is not None else " " * 10)

    for label, key in rows:
        print(f"{label:38s} {cell(cold, key):>18s} {cell(warm, key):>18s}")
    p = warm["params"]
    print(f"fit: E={p['E']:.4f} A={p['A']:.2f} B={p['B']:.1f} alpha={p['alpha']:.4f} beta={p['beta']:.4f} "
          f"huber={warm['huber']:.7e}")
    print(f"bootstrap 95%: alpha ({warm['ci_alpha'][0]:.3f}, {warm['ci_alpha'][1]:.3f}), "
          f"beta ({warm['ci_beta'][0]:.3f}, {warm['ci_beta'][1]:.3f})")
    print("published (Besiroglu et al. 2024): E=1.8172 A=477.84 B=2143.86 alpha=0.34731 beta=0.36718 "
          "huber=1.0182740e-03; alpha (0.317, 0.373), beta (0.331, 0.415)")
    if args.scipy_starts > 0:
        dt, full, best = scipy_reference(args.scipy_starts)
        print(f"scipy L-BFGS-B, numerical gradients: {args.scipy_starts} starts in {dt:.1f}s -> "
              f"{full:.0f}s for 4,500 starts (best of these starts: huber={best['huber']:.7e}, "
              f"alpha={best['alpha']:.4f}, beta={best['beta']:.4f})")


if __name__ == "__main__":
    main()
