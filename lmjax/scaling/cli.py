"""`lmjax fit INPUT --form chinchilla [--drop-highest-loss K] [--bootstrap R] [--json] [--plots DIR]`

INPUT is a sweep directory (DIR/results.csv) or a CSV of points with columns N, D, loss
(optionally C, family). Prints the fitted parameters with bootstrap intervals; --json prints
one JSON object instead: keys E, A, B, alpha, beta (the form's parameters), huber, and ci / se
per parameter. With several families in the input, each is fitted and the JSON object is
{"families": {name: {...}}}.
"""

from __future__ import annotations

import argparse
import json
import sys

from lmjax.errors import LmjaxError


def add_parser(subparsers) -> argparse.ArgumentParser:
    from lmjax.scaling.laws import FORMS

    p = subparsers.add_parser("fit", help="fit a scaling law (with bootstrap intervals) to a sweep or CSV",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="sweep directory (with results.csv) or CSV file of points")
    p.add_argument("--form", default="chinchilla", choices=sorted(FORMS), help="functional form (default chinchilla)")
    p.add_argument("--drop-highest-loss", type=int, default=0, metavar="K",
                   help="drop the K points of highest loss before fitting (per family)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="R",
                   help="bootstrap resamples for intervals (default 1000; 0 for none)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--family", default=None, help="fit only this model family")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plots", default=None, metavar="DIR", help="write PNG and SVG plots into DIR")
    p.add_argument("--no-approaches", action="store_true",
                   help="skip Chinchilla approaches 1-2 and the extrapolation check")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from lmjax.jax_setup import setup_jax

    setup_jax()
    from lmjax.scaling import plots
    from lmjax.scaling.data import load
    from lmjax.scaling.report import analyze

    try:
        if args.bootstrap < 0:
            raise _config(f"--bootstrap must be >= 0, got {args.bootstrap}")
        if not 0 < args.level < 1:
            raise _config(f"--level must be in (0, 1), got {args.level}")
        data = load(args.input)
        families = [args.family] if args.family else (data.families or [None])
        analyses = {}
        for fam in families:
            d = data.family(fam) if fam is not None else data
            d = d.drop_highest_loss(args.drop_highest_loss)
            name = fam or "all"
            prefix = f"{fam}_" if fam is not None and len(families) > 1 else ""
            analyses[name] = analyze(d, form=args.form, n_boot=args.bootstrap, seed=args.seed, level=args.level,
                                     plots_dir=args.plots, name=name, prefix=prefix,
                                     approaches=not args.no_approaches)
        if args.plots and len(analyses) > 1:
            plots.save(plots.families({k: a.fit for k, a in analyses.items()}, data.points), args.plots, "families")
    except LmjaxError as e:
        print(f"lmjax fit: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        if len(analyses) == 1:
            obj = next(iter(analyses.values())).to_json()
        else:
            obj = {"families": {k: a.to_json() for k, a in analyses.items()}}
        if data.notes:
            obj["data_notes"] = list(data.notes)
        print(json.dumps(_finite(obj), indent=2, default=_jsonable))
    else:
        print("\n\n".join(a.text() for a in analyses.values()))
        for note in data.notes:
            print(f"note: {note}")
        if args.plots:
            print(f"\nplots written to {args.plots}")
    return 0


def _config(msg):
    from lmjax.errors import ConfigError

    return ConfigError(msg)


def _finite(obj):
    """NaN / inf become null so the output is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and obj != obj or obj in (float("inf"), float("-inf")):
        return None
    return obj


def _jsonable(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lmjax")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
