"""Load sweep results or a CSV of points into one tidy table.

Two inputs map to the same columns:

- a sweep directory DIR holding DIR/results.csv (or .parquet) written by the sweep collector,
  one row per (run, eval step): family, run, seed, lr, params_total, params_non_embedding,
  tokens, flops, train_loss, val_loss, val_bpb, wall_s, step, final. Points are the rows with
  final == True: N = params_non_embedding, D = tokens, C = flops, loss = val_loss. All rows
  become the training curves.
- a CSV (or parquet) with columns N, D, loss and optionally C (or C_flops / flops), family.

`ScalingData.points` has columns N, D, loss, C (6ND where absent), and family / run / step /
seed when known. `ScalingData.curves` (sweep directories only) has the same columns for every
eval step of every run. `exact_flops` says whether C came from the table.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd

from lmjax.errors import DataError

REQUIRED = ("N", "D", "loss")
SWEEP_COLUMNS = {"params_non_embedding": "N", "tokens": "D", "flops": "C", "val_loss": "loss"}
C_ALIASES = ("C", "C_flops", "flops")
KEEP = ("family", "run", "seed", "step", "lr", "S", "budget")


@dataclasses.dataclass
class ScalingData:
    points: pd.DataFrame
    curves: pd.DataFrame | None = None
    exact_flops: bool = False
    source: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def families(self) -> list[str]:
        if "family" not in self.points:
            return []
        return sorted(self.points["family"].astype(str).unique())

    def family(self, name: str) -> ScalingData:
        """The rows of one model family."""
        if name not in self.families:
            raise DataError(f"{self.source}: no family {name!r}; families are {self.families}")
        pts = self.points[self.points["family"].astype(str) == name].reset_index(drop=True)
        cur = None
        if self.curves is not None:
            cur = self.curves[self.curves["family"].astype(str) == name].reset_index(drop=True)
        return ScalingData(pts, cur, self.exact_flops, f"{self.source}[{name}]", list(self.notes))

    def drop_highest_loss(self, k: int) -> ScalingData:
        """Without the k points of highest loss (as Besiroglu et al. 2024 drop 5)."""
        if k < 0:
            raise DataError(f"drop_highest_loss: k must be >= 0, got {k}")
        if k == 0:
            return self
        keep = self.points.sort_values("loss", kind="stable").iloc[: max(0, len(self.points) - k)]
        return dataclasses.replace(self, points=keep.sort_index().reset_index(drop=True))


def load(path: str | os.PathLike) -> ScalingData:
    """A sweep directory or a CSV/parquet file of points -> ScalingData (validated)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("results.csv", "results.parquet"):
            table = os.path.join(path, name)
            if os.path.exists(table):
                return from_sweep_table(_read(table), source=table)
        raise DataError(f"{path}: a sweep directory must hold results.csv or results.parquet")
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or directory")
    df = _read(path)
    if "final" in df.columns and "val_loss" in df.columns:
        return from_sweep_table(df, source=path)
    return from_points(df, source=path)


def _read(path: str) -> pd.DataFrame:
    try:
        if path.endswith(".parquet"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot read the table ({e})") from None


def from_points(df: pd.DataFrame, source: str = "table") -> ScalingData:
    """A table of points with columns N, D, loss [, C | C_flops | flops] [, family]."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; need N, D, loss (optionally C, family)")
    out = pd.DataFrame({c: pd.to_numeric(df[c], errors="coerce") for c in REQUIRED})
    exact = False
    for c in C_ALIASES:
        if c in df.columns:
            out["C"] = pd.to_numeric(df[c], errors="coerce")
            exact = True
            break
    for c in KEEP:
        if c in df.columns:
            out[c] = df[c].values
    _validate(out, source, exact)
    if not exact:
        out["C"] = 6.0 * out["N"] * out["D"]
    return ScalingData(out[_order(out)], None, exact, source)


def from_sweep_table(df: pd.DataFrame, source: str = "results") -> ScalingData:
    """The sweep collector's results table: final rows are the points, all rows the curves."""
    need = [*SWEEP_COLUMNS, "final"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing} of a sweep results table")
    curves = df.rename(columns=SWEEP_COLUMNS)
    curves = pd.concat(
        [pd.DataFrame({c: pd.to_numeric(curves[c], errors="coerce") for c in ("N", "D", "loss", "C")}),
         curves[[c for c in KEEP if c in curves.columns]]],
        axis=1,
    )
    final = _as_bool(df["final"], source)
    notes = []
    if "family" in curves:
        # Families without a parameter count (Kneser-Ney n-grams: N = 0, no FLOPs) have no N to scale.
        n_final = curves.loc[final.values, ["family", "N"]]
        none = sorted(str(f) for f, g in n_final.groupby("family") if (g["N"].fillna(0) <= 0).all())
        if none:
            notes.append(f"families {none} have no parameter count (e.g. n-gram models); left out of the fits")
            keep = ~curves["family"].astype(str).isin(none).values
            curves, final = curves[keep], final[keep]
    no_c = ~(curves["C"] > 0).values & (curves["N"] > 0).values & (curves["D"] > 0).values
    if no_c.any():
        curves.loc[no_c, "C"] = 6.0 * curves.loc[no_c, "N"] * curves.loc[no_c, "D"]
        notes.append(f"{int(no_c.sum())} rows without FLOPs: C = 6 N D there")
    points = curves[final.values]
    if points.empty:
        raise DataError(f"{source}: no rows with final == True")
    _validate(points, source + " (final rows)", exact=True)
    points = points.reset_index(drop=True)
    curves = curves[np.isfinite(curves[["N", "D", "loss", "C"]]).all(axis=1)]
    curves = curves[(curves[["N", "D", "loss", "C"]] > 0).all(axis=1)].reset_index(drop=True)
    return ScalingData(points[_order(points)], curves[_order(curves)], True, source, notes)


def _as_bool(col: pd.Series, source: str) -> pd.Series:
    if col.dtype == bool:
        return col
    mapped = col.astype(str).str.strip().str.lower().map({"true": True, "false": False, "1": True, "0": False})
    bad = np.flatnonzero(mapped.isna().values)
    if bad.size:
        raise DataError(f"{source}: column 'final' must be True/False; bad in rows {_rows(bad)}")
    return mapped.astype(bool)


def _order(df: pd.DataFrame) -> list[str]:
    first = [c for c in ("family", "run", "N", "D", "C", "loss", "step", "seed", "lr") if c in df.columns]
    return first + [c for c in df.columns if c not in first]


def _validate(df: pd.DataFrame, source: str, exact: bool) -> None:
    cols = [*REQUIRED, *(["C"] if exact else [])]
    rows = df.index.to_numpy()
    vals = df[cols].to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(vals).all(axis=1))
    if bad.size:
        which = [c for c in cols if not np.isfinite(df[c].to_numpy(np.float64)).all()]
        raise DataError(f"{source}: NaN, missing or non-numeric values in column(s) {which}, rows {_rows(rows[bad])}")
    for c in cols:
        bad = np.flatnonzero(df[c].to_numpy(np.float64) <= 0)
        if bad.size:
            raise DataError(f"{source}: column {c!r} must be positive; non-positive in rows {_rows(rows[bad])}")


def format_rows(idx) -> str:
    """'2, 5 (0-based data rows, 2 in all)' (the first 20 shown)."""
    idx = np.asarray(idx)
    shown = ", ".join(str(i) for i in idx[:20])
    return f"{shown}{', ...' if idx.size > 20 else ''} (0-based data rows, {idx.size} in all)"


_rows = format_rows
