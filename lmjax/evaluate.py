"""Evaluate a run directory's latest checkpoint: loss, bits per byte, perplexity, loss by position."""

from __future__ import annotations

import jax
import numpy as np

from lmjax import models
from lmjax.data import batches
from lmjax.train import rundir
from lmjax.train.step import token_losses


def loss_by_position(cfg, ds, steps, params) -> list[float]:
    """Mean validation loss (nats) at each position 0..T-1 of the context window (Kaplan et al. fig. 7)."""
    model = models.build(cfg.model)

    def per_position(p, windows, mask):
        logits = model.apply({"params": p}, windows[:, :-1], train=False)
        losses = token_losses(logits, windows[:, 1:]) * mask
        return losses.sum(0), mask.sum(0)

    fn = jax.jit(per_position)
    total = np.zeros(cfg.model.context)
    count = np.zeros(cfg.model.context)
    for windows, mask in batches.eval_windows(ds.val, cfg.model.context, cfg.train.eval_batch_size,
                                              cfg.train.eval_batches):
        s, c = jax.device_get(fn(params, windows, mask))
        total += s
        count += c
    return (total / np.maximum(count, 1)).tolist()


def evaluate_run(workdir: str, *, by_position: bool = False) -> dict:
    cfg = rundir.load_config(workdir)
    if cfg.model.family == "ngram":
        from lmjax.train.ngram_run import evaluate_ngram_run

        return evaluate_ngram_run(workdir, cfg, by_position=by_position)
    from lmjax.train.loop import evaluate, restore_params

    cfg, ds, steps, params, step = restore_params(workdir, cfg)
    out = {"workdir": workdir, "step": step, **evaluate(steps, params, ds, cfg)}
    if by_position:
        out["loss_by_position"] = loss_by_position(cfg, ds, steps, params)
    return out
