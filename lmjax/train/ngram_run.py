"""The n-gram baseline through the same harness: count, evaluate, write the same run files."""

from __future__ import annotations

import math
import os
import time

import numpy as np

from lmjax import config as config_lib
from lmjax.data import batches
from lmjax.logging import RunLogger
from lmjax.models.ngram import NGramLM
from lmjax.train import rundir

MODEL_FILE = "ngram.npz"


def _windows_logprobs(lm: NGramLM, ds, cfg):
    """Per-position log-probs over the validation windows (the neural models' eval windows)."""
    total, count = np.zeros(cfg.model.context), np.zeros(cfg.model.context)
    for windows, mask in batches.eval_windows(ds.val, cfg.model.context, cfg.train.eval_batch_size,
                                              cfg.train.eval_batches):
        lp = lm.window_logprobs(windows)  # (B, T): log p(x_{t+1} | context inside the window)
        total -= (lp * mask).sum(0)
        count += mask.sum(0)
    return total, count


def _metrics(total, count, ds) -> dict:
    loss = float(total.sum() / count.sum())
    return {"val_loss": loss, "val_bpb": loss / math.log(2) / ds.val_bytes_per_token,
            "val_ppl": math.exp(loss), "val_tokens": int(count.sum())}


def run_ngram(cfg, workdir: str, *, force_new: bool = False, announce=print) -> dict:
    from lmjax.train.loop import load_run_data

    cfg, ds = load_run_data(cfg, workdir if not force_new else None)
    cfg_dict = config_lib.to_dict(cfg)
    rundir.prepare(workdir, cfg_dict, force_new=force_new, announce=announce)
    previous = rundir.read_summary(workdir)
    if previous and previous.get("status") == "done":
        announce(f"{workdir}: run already finished")
        return previous
    rundir.write_json(os.path.join(workdir, rundir.CONFIG), cfg_dict)
    ds.tokenizer.save(workdir)
    t0 = time.perf_counter()
    train_tokens = np.asarray(batches.usable_tokens(ds.train, cfg.data.train_tokens))
    lm = NGramLM.fit(train_tokens, cfg.model)
    lm.save(os.path.join(workdir, MODEL_FILE))
    fit_s = time.perf_counter() - t0
    ev = _metrics(*_windows_logprobs(lm, ds, cfg), ds)
    wall = time.perf_counter() - t0
    logger = RunLogger(workdir, cfg, cfg_dict, total_steps=1, start_step=0)
    record = {"step": 1, "tokens": int(len(train_tokens)), "flops": 0.0, "wall_s": wall,
              "tokens_per_s": len(train_tokens) / max(fit_s, 1e-9), **ev}
    logger.log(record)
    summary = {"status": "done", "family": "ngram", "name": cfg.name, "steps": 1, "order": cfg.model.order,
               "tokens": int(len(train_tokens)), "flops": 0.0, "flops_per_token": 0.0,
               "num_ngrams": lm.num_ngrams, "params_total": lm.num_ngrams, "params_embedding": 0,
               "params_non_embedding": lm.num_ngrams, "final_train_loss": None, "wall_s": wall,
               "train_bytes_per_token": ds.train_bytes_per_token, "val_bytes_per_token": ds.val_bytes_per_token,
               **{f"final_{k}": v for k, v in ev.items()}}
    rundir.write_json(os.path.join(workdir, rundir.SUMMARY), summary)
    logger.finish(summary)
    return summary


def load_ngram(workdir: str) -> NGramLM:
    path = os.path.join(workdir, MODEL_FILE)
    if not os.path.isfile(path):
        raise rundir.RunDirError(f"{workdir} has no fitted n-gram model ({MODEL_FILE})")
    return NGramLM.load(path)


def evaluate_ngram_run(workdir: str, cfg, *, by_position: bool = False) -> dict:
    from lmjax.train.loop import load_run_data

    cfg, ds = load_run_data(cfg, workdir)
    lm = load_ngram(workdir)
    total, count = _windows_logprobs(lm, ds, cfg)
    out = {"workdir": workdir, "step": 1, **_metrics(total, count, ds)}
    if by_position:
        out["loss_by_position"] = (total / np.maximum(count, 1)).tolist()
    return out
