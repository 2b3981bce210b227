"""`make demo`: the quickstart scaling study on the embedded corpus.

Trains Transformers and LSTMs (5 sizes each x 3 training lengths, lmjax.sweep.quickstart_grid) with
the local backend into runs/quickstart, collects results.csv, fits the scaling laws per family and
writes the plots. A second `make demo` reuses the finished runs.
"""

from __future__ import annotations

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    from lmjax.errors import LmjaxError
    from lmjax.jax_setup import setup_jax

    setup_jax()
    sweep_dir = os.path.join(ROOT, "runs", "quickstart")
    plots = os.path.join(sweep_dir, "plots")
    t0 = time.perf_counter()
    try:
        from lmjax import scaling, sweep

        results = sweep.quickstart(sweep_dir)
        print(f"sweep done in {time.perf_counter() - t0:.0f} s: {results}")
        print(scaling.report(sweep_dir, plots))
    except LmjaxError as e:
        print(f"lmjax: error: {e}", file=sys.stderr)
        return 2
    print(f"plots in {plots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
