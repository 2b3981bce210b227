"""`lmjax fit`: the acceptance run on the Chinchilla reference data, plots, errors."""

import argparse
import json

import pytest

from lmjax.scaling import cli

# Besiroglu et al. (2024): fit values (tolerances of the issue) and bootstrap 95% intervals.
PUBLISHED = {"E": (1.8172, 0.002), "A": (477.8, 3.0), "B": (2143.0, 20.0), "alpha": (0.3473, 0.001),
             "beta": (0.3672, 0.001)}
PUBLISHED_CI = {"alpha": (0.317, 0.373), "beta": (0.331, 0.415)}


def _run(argv, capsys):
    parser = argparse.ArgumentParser(prog="lmjax")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_reference_data_json(chinchilla_csv, capsys):
    code, out, err = _run(["fit", chinchilla_csv, "--form", "chinchilla", "--drop-highest-loss", "5", "--json"],
                          capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["n_points"] == 240
    for name, (value, tol) in PUBLISHED.items():
        assert abs(res[name] - value) <= tol, (name, res[name])
    assert res["huber"] == pytest.approx(1.018e-3, abs=5e-7)
    assert set(res["ci"]) >= {"E", "A", "B", "alpha", "beta"}
    assert res["bootstrap"]["resamples"] == 1000
    for name, (lo, hi) in PUBLISHED_CI.items():
        assert abs(res["ci"][name][0] - lo) <= 0.01 and abs(res["ci"][name][1] - hi) <= 0.01, res["ci"][name]
    assert res["derived"]["a"] == pytest.approx(0.513, abs=0.01)
    assert res["se"]["alpha"] == pytest.approx(0.0154, rel=0.2)


def test_fit_sweep_directory(small_sweep, capsys):
    code, out, err = _run(["fit", str(small_sweep), "--bootstrap", "50", "--no-approaches", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert set(res["families"]) == {"lstm", "transformer"}
    assert res["families"]["lstm"]["n_points"] == 15
    code, out, err = _run(["fit", str(small_sweep), "--family", "lstm", "--bootstrap", "50", "--drop-highest-loss",
                           "1"], capsys)
    assert code == 0, err
    assert "lstm: L(N, D)" in out and "(14 points" in out and "envelope: N_opt" in out


def test_fit_text_output_and_other_forms(chinchilla_csv, capsys):
    code, out, _ = _run(["fit", chinchilla_csv, "--form", "kaplan_N", "--bootstrap", "100"], capsys)
    assert code == 0
    assert "alpha_N" in out and "N_c" in out and "95% interval" in out


def test_fit_errors(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("N,D,loss\n1e7,1e9,3.0\n2e7,-1,2.9\n")
    code, _, err = _run(["fit", str(bad)], capsys)
    assert code == 2
    assert "column 'D' must be positive" in err and "rows 1 " in err
    code, _, err = _run(["fit", str(tmp_path / "missing.csv")], capsys)
    assert code == 2 and "no such file" in err
