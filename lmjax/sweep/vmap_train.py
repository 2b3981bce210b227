"""Many small runs in one compiled program: jax.vmap over stacked parameter and optimizer trees.

Runs that differ only in seed, learning rate (optim.lr, optim.min_lr) or the unique-data budget
(data.train_tokens) have identical shapes and programs. ``train_group`` stacks their states
along a leading run axis R and trains them in lockstep with one jitted, vmapped step; each run
keeps its own initialization (its seed), data order (batches drawn from its seed and its token
prefix), dropout stream and learning-rate schedule, so the losses equal those of separate runs
(to float32 rounding). Every run directory gets the same files the normal loop writes:
config.json, metrics.jsonl, summary.json, tokenizer.json and checkpoints/ (one unstacked
TrainState per run, restorable by lmjax.train.loop). A resumed group restarts from the runs'
common checkpoint step. wandb: vmapped runs are logged to wandb after training (replayed from
metrics.jsonl, one wandb run at a time), with the same group, name and id as a normal run.

The step mirrors lmjax.train.step.make_steps (loss, gradient accumulation, clipping, AdamW,
metrics) on a single device without a mesh: vmapping is for models far too small to shard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmjax import config as config_lib, flops as flops_lib, models
from lmjax.data import batches
from lmjax.logging import RunLogger, read_metrics, truncate_metrics, wandb_mode
from lmjax.train import rundir
from lmjax.train.checkpoint import Checkpointer
from lmjax.train.loop import load_run_data, resolve
from lmjax.train.optim import make_optimizer
from lmjax.train.step import TrainState, loss_sums

# Fields that may differ between the runs of one group (everything else must be equal).
VARYING = ("train.seed", "optim.lr", "optim.min_lr", "data.train_tokens")


class NotGroupable(Exception):
    """These runs cannot train as one vmapped group (the caller trains them one by one)."""


def group_key(cfg) -> str:
    """Equal for runs that can share one vmapped program."""
    from lmjax.sweep.grid import trajectory_dict

    d = trajectory_dict(cfg)
    for key in VARYING:
        section, field = key.split(".")
        d[section].pop(field, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def groups(cfgs, max_size: int = 0) -> list[list[int]]:
    """Indices of cfgs grouped by group_key (ngram runs alone), each group at most max_size long."""
    by_key: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        key = f"single-{i}" if cfg.model.family == "ngram" else group_key(cfg)
        by_key.setdefault(key, []).append(i)
    out = []
    for idx in by_key.values():
        step = max_size or len(idx)
        out += [idx[j:j + step] for j in range(0, len(idx), step)]
    return out


class _Preemption:
    def __init__(self):
        self.requested, self._old = False, None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:
            self._old = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def _make_group_steps(model, cfg0):
    """(init, train, eval) for one run; train and eval are vmapped over the run axis and jitted."""
    accum, steps = cfg0.train.grad_accum, cfg0.train.steps
    dummy_BT = jnp.zeros((1, cfg0.model.context), jnp.int32)
    tx0, _ = make_optimizer(cfg0.optim, steps)

    def init_state(rng):
        params = nn.meta.unbox(model.init({"params": rng, "dropout": rng}, dummy_BT, train=False)["params"])
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx0.init(params))

    def grads_and_loss(params, windows_BT1, rng):
        def loss_fn(p, w):
            total, count = loss_sums(model, p, w, train=True, rng=rng)
            return total / count, count

        if accum == 1:
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, windows_BT1)
            return loss, grads
        micro = windows_BT1.reshape(accum, -1, windows_BT1.shape[-1])

        def body(carry, w):
            loss_acc, grads_acc = carry
            (loss, _), g = jax.value_and_grad(loss_fn, has_aux=True)(params, w)
            return (loss_acc + loss, jax.tree.map(jnp.add, grads_acc, g)), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        (loss_sum, grads_sum), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros), micro)
        return loss_sum / accum, jax.tree.map(lambda g: g / accum, grads_sum)

    def train_step(state, hp, windows_BT1):
        # the run's own optimizer: its learning rates are traced values, the state's structure is
        # the one make_optimizer gives every run (so checkpoints are interchangeable)
        tx, lr_schedule = make_optimizer(dataclasses.replace(cfg0.optim, lr=hp["lr"], min_lr=hp["min_lr"]), steps)
        rng = jax.random.fold_in(hp["dropout_key"], state.step)
        loss, grads = grads_and_loss(state.params, windows_BT1, rng)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"train_loss": loss, "grad_norm": optax.global_norm(grads), "lr": lr_schedule(state.step)}
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    def eval_step(params, windows_BT1, mask_BT):
        return loss_sums(model, params, windows_BT1, mask_BT, train=False)

    init = jax.jit(init_state)
    train = jax.jit(jax.vmap(train_step), donate_argnums=0)
    evaluate = jax.jit(jax.vmap(eval_step, in_axes=(0, None, None)))
    return init, train, evaluate


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def _evaluate(evaluate, params, ds, cfg, n_runs: int) -> list[dict]:
    sums = [evaluate(params, jnp.asarray(w), jnp.asarray(m))
            for w, m in batches.eval_windows(ds.val, cfg.model.context, cfg.train.eval_batch_size,
                                             cfg.train.eval_batches)]
    totals, counts = [0.0] * n_runs, [0.0] * n_runs
    for s, c in jax.device_get(sums):
        for i in range(n_runs):
            totals[i] += float(s[i])
            counts[i] += float(c[i])
    out = []
    for t, c in zip(totals, counts):
        loss = t / c
        out.append({"val_loss": loss, "val_bpb": loss / math.log(2) / ds.val_bytes_per_token,
                    "val_ppl": math.exp(min(loss, 700.0)), "val_tokens": int(c)})
    return out


def train_group(cfgs, workdirs, *, announce=print) -> list[dict]:
    """Train runs with identical shapes together; returns one summary per run (as loop.train)."""
    if len(cfgs) != len(workdirs) or not cfgs:
        raise ValueError("train_group needs one workdir per config")
    if len({group_key(c) for c in cfgs}) != 1:
        raise NotGroupable("the runs differ in more than seed / learning rate / train_tokens")
    if cfgs[0].model.family == "ngram":
        raise NotGroupable("n-gram runs have no training steps")
    if jax.process_count() > 1:
        raise NotGroupable("vmapped groups run in a single process")
    for cfg in cfgs:
        cfg.validate()
    cfg0, ds = load_run_data(cfgs[0], workdirs[0])
    cfgs = [cfg0] + [resolve(c, ds) for c in cfgs[1:]]
    dicts = [config_lib.to_dict(c) for c in cfgs]
    for wd, d in zip(workdirs, dicts):
        rundir.prepare(wd, d, announce=announce)
        prev = rundir.read_summary(wd)
        if prev and prev.get("status") == "done":
            raise NotGroupable(f"{wd} already finished")
    for wd, d in zip(workdirs, dicts):
        rundir.write_json(os.path.join(wd, rundir.CONFIG), d)
        ds.tokenizer.save(wd)

    n = len(cfgs)
    model = models.build(cfg0.model)
    init, train_fn, evaluate = _make_group_steps(model, cfg0)
    ckpts = [Checkpointer(os.path.join(wd, rundir.CHECKPOINTS), keep=c.train.keep_checkpoints)
             for wd, c in zip(workdirs, cfgs)]
    latest = [c.latest_step() for c in ckpts]
    if len(set(latest)) > 1:
        for c in ckpts:
            c.close()
        raise NotGroupable(f"the runs' checkpoints are at different steps {latest}")
    start = latest[0] or 0
    wall_before = 0.0
    if latest[0] is None:
        state = _stack([init(jax.random.key(c.train.seed)) for c in cfgs])
    else:
        abstract = jax.eval_shape(init, jax.random.key(0))
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: sharding, abstract)
        state = _stack([ck.restore(abstract, shardings, start) for ck in ckpts])
        for wd in workdirs:
            truncate_metrics(wd, start)
        done = [r for r in read_metrics(workdirs[0]) if "wall_s" in r]
        wall_before = done[-1]["wall_s"] if done else 0.0
        announce(f"vmapped group of {n}: resuming from step {start}")

    hp = {"lr": jnp.asarray([c.optim.lr for c in cfgs], jnp.float32),
          "min_lr": jnp.asarray([c.optim.min_lr for c in cfgs], jnp.float32),
          "dropout_key": jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 1))(
              jnp.asarray([c.train.seed for c in cfgs], jnp.uint32))}
    counts = models.param_counts(cfg0.model)
    fpt = models.flops_per_token(cfg0.model)
    t = cfg0.train
    tokens_per_step = t.batch_size * cfg0.model.context
    peak = t.peak_flops or flops_lib.peak_flops_per_device()
    quiet = [dataclasses.replace(c, log=dataclasses.replace(c.log, wandb="disabled", progress=False)) for c in cfgs]
    loggers = [RunLogger(wd, q, d, total_steps=t.steps, start_step=start)
               for wd, q, d in zip(workdirs, quiet, dicts)]
    batch_fn = batches.stream_batch if cfg0.data.stateful else batches.train_batch
    tokens = [batches.usable_tokens(ds.train, c.data.train_tokens) for c in cfgs]

    def batch_at(i):
        return jnp.asarray(np.stack([batch_fn(tok, seed=c.train.seed, step=i, batch_size=t.batch_size,
                                              seq_len=cfg0.model.context) for tok, c in zip(tokens, cfgs)]))

    t_start = time.perf_counter()
    t_mark, step_mark, eval_time = t_start, start, 0.0
    last_eval, last_loss, status, metrics = [None] * n, [None] * n, "done", None
    step = start
    with _Preemption() as preempt:
        while step < t.steps:
            state, metrics = train_fn(state, hp, batch_at(step))
            step += 1
            records = [{"step": step} for _ in range(n)]
            if step % t.log_every == 0 or step == t.steps:
                m = jax.device_get(metrics)
                now = time.perf_counter()
                tps = (step - step_mark) * tokens_per_step / max(now - t_mark - eval_time, 1e-9)
                for i, rec in enumerate(records):
                    last_loss[i] = float(m["train_loss"][i])
                    rec.update(train_loss=last_loss[i], lr=float(m["lr"][i]), grad_norm=float(m["grad_norm"][i]),
                               tokens_per_s=tps, mfu=flops_lib.mfu(n * tps * fpt, peak, 1))
                t_mark, step_mark, eval_time = now, step, 0.0
            if (t.eval_every and step % t.eval_every == 0) or step == t.steps:
                t0 = time.perf_counter()
                last_eval = _evaluate(evaluate, state.params, ds, cfg0, n)
                eval_time += time.perf_counter() - t0
                for rec, ev in zip(records, last_eval):
                    rec.update(ev)
            if len(records[0]) > 1:
                wall = wall_before + time.perf_counter() - t_start
                for rec, logger in zip(records, loggers):
                    rec.update(tokens=step * tokens_per_step, flops=step * tokens_per_step * fpt, wall_s=wall)
                    logger.log(rec)
            if t.checkpoint_every and step % t.checkpoint_every == 0:
                for i, ck in enumerate(ckpts):
                    ck.save(step, _unstack(state, i))
            if preempt.requested and step < t.steps:
                status = "preempted"
                announce(f"vmapped group of {n}: SIGTERM received; saving checkpoints at step {step}")
                break
    for i, ck in enumerate(ckpts):
        ck.save(step, _unstack(state, i), wait=True)
        ck.close()
    if metrics is not None and any(v is None for v in last_loss):
        m = jax.device_get(metrics)
        last_loss = [float(m["train_loss"][i]) if v is None else v for i, v in enumerate(last_loss)]
    wall = wall_before + time.perf_counter() - t_start
    summaries = []
    for i, (cfg, wd) in enumerate(zip(cfgs, workdirs)):
        summary = {
            "status": status, "family": cfg.model.family, "name": cfg.name, "steps": step,
            "tokens": step * tokens_per_step, "flops": step * tokens_per_step * fpt, "flops_per_token": fpt,
            "params_total": counts["total"], "params_embedding": counts["embedding"],
            "params_non_embedding": counts["non_embedding"], "final_train_loss": last_loss[i],
            "wall_s": wall, "vmap_group": n,
            "train_bytes_per_token": ds.train_bytes_per_token, "val_bytes_per_token": ds.val_bytes_per_token,
        }
        if last_eval[i] is not None:
            summary.update({f"final_{k}": v for k, v in last_eval[i].items()})
        rundir.write_json(os.path.join(wd, rundir.SUMMARY), summary)
        loggers[i].finish(summary)
        summaries.append(summary)
    for cfg, d, wd, s in zip(cfgs, dicts, workdirs, summaries):
        if wandb_mode(cfg.log.wandb) != "disabled":
            replay_wandb(cfg, d, wd, s)
    return summaries


def replay_wandb(cfg, cfg_dict: dict, workdir: str, summary: dict) -> None:
    """Log a finished (vmapped) run's metrics.jsonl to wandb as if it had streamed them."""
    import wandb

    run_id = hashlib.sha256(os.path.abspath(workdir).encode()).hexdigest()[:12]
    run = wandb.init(project=cfg.log.wandb_project, group=cfg.log.wandb_group or None,
                     name=cfg.name or os.path.basename(os.path.abspath(workdir)), id=run_id, resume="allow",
                     dir=workdir, mode=wandb_mode(cfg.log.wandb), config=cfg_dict,
                     settings=wandb.Settings(silent=True, console="off"))
    for rec in read_metrics(workdir):
        run.log({k: v for k, v in rec.items() if k != "step" and isinstance(v, (int, float))}, step=rec["step"])
    for k, v in summary.items():
        if isinstance(v, (int, float, str)):
            run.summary[k] = v
    run.finish()
