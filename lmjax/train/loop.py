"""The host loop: data, compiled steps, logging, evaluation, checkpoints, preemption."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time

import jax
import numpy as np

from lmjax import config as config_lib, flops as flops_lib, models, parallel
from lmjax.data import batches
from lmjax.data.dataset import Dataset, load_dataset
from lmjax.data import tokenizers
from lmjax.errors import DataError
from lmjax.logging import RunLogger, read_metrics, truncate_metrics
from lmjax.train import rundir
from lmjax.train.checkpoint import Checkpointer
from lmjax.train.optim import make_optimizer
from lmjax.train.step import make_steps


def _jax_preemption_service() -> bool:
    try:  # not public API: without it, fall back to the per-process handler
        from jax._src import distributed

        return distributed.global_state.preemption_sync_manager is not None
    except (ImportError, AttributeError):
        return False


class Preemption:
    """SIGTERM: the loop saves a checkpoint at a step boundary and exits cleanly.

    One process: a Python SIGTERM handler sets `requested`. Several processes (jax.distributed):
    JAX's preemption sync manager (started by jax.distributed.initialize) catches SIGTERM on any
    host and the hosts agree on one step to stop at (reached_preemption_sync_point, called at every
    step), so no host leaves the collective train step or the checkpoint barrier alone.
    """

    def __init__(self):
        self.requested = False
        self._old = None
        self._multihost = False

    def __enter__(self):
        self._multihost = jax.process_count() > 1 and _jax_preemption_service()
        if self._multihost:
            return self  # a Python handler would replace JAX's SIGTERM notifier
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def reached(self, step: int) -> bool:
        """Stop after `step`? Call at every step (on every process: it is a collective protocol)."""
        if self._multihost:
            from jax.experimental import multihost_utils

            self.requested = multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def resolve(cfg: config_lib.Config, ds: Dataset) -> config_lib.Config:
    """Fill in what comes from the data (the vocabulary size) and validate against the splits."""
    model = cfg.model
    if model.vocab_size == 0:
        model = dataclasses.replace(model, vocab_size=ds.vocab_size)
    elif model.vocab_size != ds.vocab_size:
        raise DataError(f"model.vocab_size={model.vocab_size} but the tokenizer has {ds.vocab_size} tokens")
    train_n = len(batches.usable_tokens(ds.train, cfg.data.train_tokens))
    for name, n in (("training", train_n), ("validation", len(ds.val))):
        if model.context + 1 > n:
            raise DataError(f"the context ({model.context}) is longer than the {name} split ({n} tokens)")
    return dataclasses.replace(cfg, model=model).validate()


def load_run_data(cfg: config_lib.Config, workdir: str | None = None):
    """(resolved cfg, dataset); a run directory's saved tokenizer pins the vocabulary."""
    tok = None
    saved = os.path.join(workdir, rundir.CONFIG) if workdir else ""
    if saved and os.path.isfile(saved) and os.path.isfile(os.path.join(workdir, tokenizers.FILE)):
        # The saved vocabulary belongs to the saved data config: with another one, load fresh and
        # let rundir.prepare report the difference.
        if rundir.read_json(saved).get("data") == config_lib.to_dict(cfg.data):
            tok = tokenizers.load(workdir)
    ds = load_dataset(cfg.data, tokenizer=tok)
    return resolve(cfg, ds), ds


def evaluate(steps, params, ds: Dataset, cfg) -> dict:
    """Validation loss (nats/token) over the whole split (or train.eval_batches), bpb, perplexity."""
    total, count = 0.0, 0.0
    sums = []
    if steps.eval_stream is not None:  # stateful: carry the recurrent state along each stream
        from lmjax.models.recurrent import initial_carry

        carry = initial_carry(cfg.model, cfg.train.eval_batch_size)
        for windows, mask in batches.eval_streams(ds.val, cfg.model.context, cfg.train.eval_batch_size):
            s, c, carry = steps.eval_stream(params, parallel.put_batch(windows, steps.mesh),
                                            parallel.put_batch(mask, steps.mesh), carry)
            sums.append((s, c))
    else:
        for windows, mask in batches.eval_windows(ds.val, cfg.model.context, cfg.train.eval_batch_size,
                                                  cfg.train.eval_batches):
            sums.append(steps.eval(params, parallel.put_batch(windows, steps.mesh),
                                   parallel.put_batch(mask, steps.mesh)))
    for s, c in jax.device_get(sums):  # one host sync for the whole evaluation
        total += float(s)
        count += float(c)
    loss = total / count
    return {"val_loss": loss, "val_bpb": loss / math.log(2) / ds.val_bytes_per_token,
            "val_ppl": math.exp(min(loss, 700.0)), "val_tokens": int(count)}


def run_summary(cfg, ds, status: str, steps: int, final_train_loss, wall_s: float, last_eval: dict | None,
                **extra) -> dict:
    """summary.json of a run (the loop's and a vmapped group's): counts, tokens, FLOPs, final metrics."""
    counts = models.param_counts(cfg.model)
    fpt = models.flops_per_token(cfg.model)
    tokens = steps * cfg.train.batch_size * cfg.model.context
    summary = {
        "status": status, "family": cfg.model.family, "name": cfg.name, "steps": steps,
        "tokens": tokens, "flops": tokens * fpt, "flops_per_token": fpt,
        "params_total": counts["total"], "params_embedding": counts["embedding"],
        "params_non_embedding": counts["non_embedding"], "final_train_loss": final_train_loss,
        "wall_s": wall_s, **extra,
        "train_bytes_per_token": ds.train_bytes_per_token, "val_bytes_per_token": ds.val_bytes_per_token,
    }
    if last_eval is not None:
        summary.update({f"final_{k}": v for k, v in last_eval.items()})
    return summary


def train(cfg: config_lib.Config, workdir: str, *, force_new: bool = False, announce=print) -> dict:
    """Train (or resume) the run in ``workdir``; returns its summary."""
    cfg.validate()
    if cfg.model.family == "ngram":
        from lmjax.train.ngram_run import run_ngram

        return run_ngram(cfg, workdir, force_new=force_new, announce=announce)
    cfg, ds = load_run_data(cfg, workdir if not force_new else None)
    mesh = parallel.make_mesh(cfg.mesh.shape)  # bad input fails before the run directory is touched
    parallel.check_batch(cfg.train.batch_size, mesh)
    cfg_dict = config_lib.to_dict(cfg)
    is_main = jax.process_index() == 0
    if is_main:
        rundir.prepare(workdir, cfg_dict, force_new=force_new, announce=announce)
    previous = rundir.read_summary(workdir)
    if previous and previous.get("status") == "done":
        announce(f"{workdir}: run already finished ({previous['steps']} steps)")
        return previous
    if is_main:
        rundir.write_json(os.path.join(workdir, rundir.CONFIG), cfg_dict)
        ds.tokenizer.save(workdir)

    model = models.build(cfg.model)
    tx, lr_schedule = make_optimizer(cfg.optim, cfg.train.steps)
    steps = make_steps(model, tx, lr_schedule, cfg, mesh)
    ckpt = Checkpointer(os.path.join(workdir, rundir.CHECKPOINTS), keep=cfg.train.keep_checkpoints)

    start = ckpt.latest_step()
    if start is None:  # fresh, or killed before the first checkpoint completed: drop stale records
        state, start = steps.init(jax.random.key(cfg.train.seed)), 0
        wall_before = 0.0
        if is_main:
            truncate_metrics(workdir, 0)
    else:
        state = ckpt.restore(steps.abstract_state, steps.state_sharding, start)
        if is_main:
            truncate_metrics(workdir, start)
        done = [r for r in read_metrics(workdir) if "wall_s" in r]
        wall_before = done[-1]["wall_s"] if done else 0.0
        announce(f"{workdir}: resuming from step {start}")

    fpt = models.flops_per_token(cfg.model)
    tokens_per_step = cfg.train.batch_size * cfg.model.context
    peak = cfg.train.peak_flops or flops_lib.peak_flops_per_device()
    logger = RunLogger(workdir, cfg, cfg_dict, total_steps=cfg.train.steps, start_step=start, enabled=is_main)
    batch_fn = batches.stream_batch if cfg.data.stateful else batches.train_batch
    train_tokens = batches.usable_tokens(ds.train, cfg.data.train_tokens)
    batch_shape = (cfg.train.batch_size, cfg.model.context + 1)

    def batch_at(i):
        return parallel.make_batch(
            lambda rows: batch_fn(train_tokens, seed=cfg.train.seed, step=i, batch_size=cfg.train.batch_size,
                                  seq_len=cfg.model.context, rows=rows), batch_shape, mesh)

    t_start = time.perf_counter()
    t_mark, step_mark, eval_time = t_start, start, 0.0
    last_eval, last_train_loss, status = None, None, "done"
    step = start
    with Preemption() as preempt:
        while step < cfg.train.steps:
            state, metrics = steps.train(state, batch_at(step))
            step += 1
            record, diverged = {"step": step}, False
            if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                m = jax.device_get(metrics)  # host sync only at log steps
                now = time.perf_counter()
                tps = (step - step_mark) * tokens_per_step / max(now - t_mark - eval_time, 1e-9)
                last_train_loss = float(m["train_loss"])
                record.update(train_loss=last_train_loss, lr=float(m["lr"]), grad_norm=float(m["grad_norm"]),
                              tokens_per_s=tps, mfu=flops_lib.mfu(tps * fpt, peak, jax.device_count()))
                t_mark, step_mark, eval_time = now, step, 0.0
                diverged = not math.isfinite(last_train_loss)
            if not diverged and ((cfg.train.eval_every and step % cfg.train.eval_every == 0)
                                 or step == cfg.train.steps):
                t0 = time.perf_counter()
                last_eval = evaluate(steps, state.params, ds, cfg)
                eval_time += time.perf_counter() - t0
                record.update(last_eval)
            if len(record) > 1:
                record.update(tokens=step * tokens_per_step, flops=step * tokens_per_step * fpt,
                              wall_s=wall_before + time.perf_counter() - t_start)
                logger.log(record)
            if diverged:  # stop now; the last checkpoint is from before the divergence
                status = "diverged"
                announce(f"{workdir}: train loss {last_train_loss} at step {step}: the run diverged; stopping")
                break
            logger.advance(step)
            if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0:
                ckpt.save(step, state)
            if preempt.reached(step) and step < cfg.train.steps:
                status = "preempted"
                announce(f"{workdir}: SIGTERM received; saving a checkpoint at step {step} and exiting")
                break
    if status != "diverged":
        ckpt.save(step, state, wait=True)
    ckpt.close()
    if last_train_loss is None and step > start:
        last_train_loss = float(jax.device_get(metrics)["train_loss"])
    summary = run_summary(cfg, ds, status, step, last_train_loss, wall_before + time.perf_counter() - t_start,
                          last_eval)
    if is_main:
        rundir.write_json(os.path.join(workdir, rundir.SUMMARY), summary)
    logger.finish(summary)
    return summary


def restore_params(workdir: str, cfg=None, mesh_shape=(-1, 1, 1)):
    """(cfg, dataset, steps, params) of the latest checkpoint of a run directory."""
    cfg = cfg or rundir.load_config(workdir)
    cfg, ds = load_run_data(cfg, workdir)
    cfg = dataclasses.replace(cfg, mesh=dataclasses.replace(cfg.mesh, shape=tuple(mesh_shape)))
    mesh = parallel.make_mesh(cfg.mesh.shape)
    model = models.build(cfg.model)
    tx, lr_schedule = make_optimizer(cfg.optim, cfg.train.steps)
    steps = make_steps(model, tx, lr_schedule, cfg, mesh)
    ckpt = Checkpointer(os.path.join(workdir, rundir.CHECKPOINTS), keep=cfg.train.keep_checkpoints,
                        async_save=False)
    if ckpt.latest_step() is None:
        raise rundir.RunDirError(f"{workdir} has no checkpoint")
    state = ckpt.restore(steps.abstract_state, steps.state_sharding)
    ckpt.close()
    return cfg, ds, steps, state.params, int(state.step)
