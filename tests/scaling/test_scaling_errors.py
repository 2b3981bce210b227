"""Bad input: one clear error naming the rows or the column."""

import numpy as np
import pandas as pd
import pytest

from lmjax.errors import ConfigError, DataError
from lmjax.scaling import fit, from_points, load


def _df(n=8):
    N = np.geomspace(1e7, 1e9, n)
    return pd.DataFrame({"N": N, "D": 20 * N, "loss": 2 + 100 / N**0.3})


def test_missing_column():
    with pytest.raises(DataError, match=r"missing column\(s\) \['D'\]"):
        fit("chinchilla", _df().drop(columns="D"))
    with pytest.raises(DataError, match=r"missing column\(s\) \['loss'\]"):
        from_points(_df().drop(columns="loss"))


@pytest.mark.parametrize("col", ["N", "D", "loss"])
def test_non_positive_rows_named(col):
    df = _df()
    df.loc[[2, 5], col] = [0.0, -1.0]
    with pytest.raises(DataError, match=rf"'{col}' must be positive.* 2, 5 "):
        fit("chinchilla", df)
    with pytest.raises(DataError, match=rf"'{col}' must be positive.* 2, 5 "):
        from_points(df)


def test_nan_rows_named():
    df = _df()
    df.loc[3, "loss"] = np.nan
    df.loc[6, "N"] = np.nan
    with pytest.raises(DataError, match=r"NaN.*\['N', 'loss'\].* 3, 6 "):
        from_points(df)
    with pytest.raises(DataError, match=r"'N' is NaN.* 6 "):
        fit("chinchilla", df)


def test_fewer_points_than_parameters():
    with pytest.raises(DataError, match="4 points with non-zero weight, but the form has 5 parameters"):
        fit("chinchilla", _df(4))


def test_bad_options():
    with pytest.raises(ConfigError, match="method"):
        fit("chinchilla", _df(), method="adam")
    with pytest.raises(ConfigError, match="least squares in log-log needs a pure power law"):
        fit("chinchilla", _df(), method="lstsq")
    with pytest.raises(DataError, match="weights"):
        fit("chinchilla", _df(), weights=-np.ones(8))


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="results.csv"):
        load(tmp_path)
    bad = tmp_path / "bad.csv"
    _df().drop(columns="N").to_csv(bad, index=False)
    with pytest.raises(DataError, match=r"bad.csv: missing column\(s\) \['N'\]"):
        load(bad)
