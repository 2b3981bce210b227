"""One tidy table of a sweep's cross-entropy curves: DIR/results.csv and DIR/results.parquet.

One row per (run, evaluation step); ``final`` marks each finished run's last row. Columns (the
scaling fits read the first fourteen by name):

    family, run, seed, lr, params_total, params_non_embedding, tokens, flops, train_loss, val_loss,
    val_bpb, wall_s, step, final,
    status, params_embedding, flops_per_token, d_model (width: d_model / d_hidden), n_layers,
    context, batch_size, steps (planned), train_tokens (planned: steps x batch x context),
    unique_tokens (data.train_tokens, 0 = the whole split), val_ppl, size, budget (IsoFLOP C),
    coord_<key> (other grid coordinates).

train_loss is the loss logged at that step (or, if the step logged none, the latest one before it).
Failed runs are left out unless include_failed (their losses may be NaN); unfinished runs give
their rows so far, none of them final.
"""

from __future__ import annotations

import math
import os

from lmjax import config as config_lib, models
from lmjax.logging import read_metrics
from lmjax.sweep import store

COLUMNS = ["family", "run", "seed", "lr", "params_total", "params_non_embedding", "tokens", "flops",
           "train_loss", "val_loss", "val_bpb", "wall_s", "step", "final"]
EXTRA = ["status", "params_embedding", "flops_per_token", "d_model", "n_layers", "context", "batch_size", "steps",
         "train_tokens", "unique_tokens", "val_ppl", "size", "budget"]
KNOWN_COORDS = {"family", "size", "params_non_embedding", "tokens", "steps", "seed", "lr", "budget"}


def _float(v):
    if isinstance(v, str):
        try:
            return float(v)  # "nan" / "inf" as the logger writes them
        except ValueError:
            return math.nan
    return math.nan if v is None else float(v)


def _width(model) -> int | None:
    for name in ("d_model", "d_hidden", "d_embed"):
        if hasattr(model, name):
            return getattr(model, name)
    return None


def run_rows(path: str, state: str, coords: dict | None = None) -> list[dict]:
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        return []
    cfg = config_lib.from_dict(store.read_json(cfg_path))
    counts = models.param_counts(cfg.model)
    fpt = models.flops_per_token(cfg.model) if cfg.model.family != "ngram" else 0.0
    metrics = {}
    last_train = math.nan
    for rec in read_metrics(path):  # later records of a step replace earlier ones (a re-logged step)
        metrics[rec["step"]] = rec
    rows = []
    tps = cfg.train.batch_size * cfg.model.context
    base = {
        "family": cfg.model.family, "run": cfg.name or os.path.basename(os.path.normpath(path)),
        "seed": cfg.train.seed, "lr": cfg.optim.lr, "params_total": counts["total"],
        "params_non_embedding": counts["non_embedding"], "status": state, "params_embedding": counts["embedding"],
        "flops_per_token": fpt, "d_model": _width(cfg.model), "n_layers": getattr(cfg.model, "n_layers", None),
        "context": cfg.model.context, "batch_size": cfg.train.batch_size, "steps": cfg.train.steps,
        "train_tokens": cfg.train.steps * tps, "unique_tokens": cfg.data.train_tokens,
    }
    coords = coords or {}
    base["size"] = coords.get("size")
    base["budget"] = coords.get("budget")
    for k, v in coords.items():
        if k not in KNOWN_COORDS:
            base["coord_" + k.replace(".", "_")] = v
    for step in sorted(metrics):
        rec = metrics[step]
        if "train_loss" in rec:
            last_train = _float(rec["train_loss"])
        if "val_loss" not in rec:
            continue
        rows.append({**base, "tokens": rec.get("tokens", step * tps), "flops": rec.get("flops", step * tps * fpt),
                     "train_loss": last_train, "val_loss": _float(rec["val_loss"]),
                     "val_bpb": _float(rec.get("val_bpb")), "wall_s": rec.get("wall_s"), "step": step,
                     "final": False, "val_ppl": _float(rec.get("val_ppl"))})
    if rows and state == "done":
        rows[-1]["final"] = True
    return rows


def collect(sweep_dir: str, *, include_failed: bool = False, write: bool = True):
    """The results table (a pandas DataFrame); written to DIR/results.csv and .parquet."""
    import pandas as pd

    data, states = store.sweep_states(sweep_dir)
    rows = []
    for r in states:
        if r["state"] == "failed" and not include_failed:
            continue
        rows += run_rows(os.path.join(sweep_dir, r["dir"]), r["state"], r.get("coords"))
    coord_cols = sorted({k for row in rows for k in row if k.startswith("coord_")})
    df = pd.DataFrame(rows, columns=COLUMNS + EXTRA + coord_cols)
    df = df.sort_values(["family", "params_non_embedding", "run", "step"], kind="stable").reset_index(drop=True)
    df["final"] = df["final"].astype(bool)
    if write:
        df.to_csv(os.path.join(sweep_dir, "results.csv"), index=False)
        try:
            df.to_parquet(os.path.join(sweep_dir, "results.parquet"), index=False)
        except (ImportError, ValueError) as e:  # parquet needs pyarrow; the csv is the contract
            print(f"lmjax: results.parquet not written: {e}")
    return df
