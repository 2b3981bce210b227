"""Many small runs in one compiled program: jax.vmap over stacked parameter and optimizer trees.

Runs whose programs have the same shapes (same model, batch, context, optimizer betas / epsilon /
weight decay / clipping) train together in one jitted, vmapped step, even when they differ in
seed, learning rate and its whole schedule (lr, min_lr, warmup, decay, schedule kind), training
length (train.steps) or unique data (data.train_tokens). Each run keeps its own initialization
(its seed), data order (batches drawn from its seed and its own step), dropout stream and
learning-rate schedule, so its losses equal those of a separate run (to float32 rounding).

How the schedule stays exact: the optimizer is the run's own make_optimizer chain built with a
constant learning rate of 1 (so its update is -(AdamW direction)), and the vmapped step multiplies
the update by the run's learning rate for that step, read from a table computed from the run's own
schedule function. -(u) x lr equals u x (-lr) bit for bit, and the optimizer state has the same
structure as a normal run's, so checkpoints are interchangeable with lmjax.train.loop.

Runs of different lengths: the group steps until its longest run ends; a finished run's state is
frozen (jnp.where on an "active" flag) and its files are final the moment it ends. Every run
directory gets the files the normal loop writes (config.json, metrics.jsonl, summary.json,
tokenizer.json, checkpoints/ holding one unstacked TrainState per run). A group resumes each run
from its own latest checkpoint. wandb: vmapped runs are logged after they finish (replayed from
metrics.jsonl, one wandb run at a time) under the group, name and id a normal run would have.

The step mirrors lmjax.train.step.make_steps (loss, gradient accumulation, clipping, AdamW,
metrics) on a single device without a mesh: vmapping is for models far too small to shard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmjax import config as config_lib, flops as flops_lib, models
from lmjax.data import batches
from lmjax.logging import RunLogger, open_wandb, read_metrics, truncate_metrics, wandb_mode
from lmjax.train import rundir
from lmjax.train.checkpoint import Checkpointer
from lmjax.train.loop import Preemption, load_run_data, resolve, run_summary
from lmjax.train.optim import make_optimizer
from lmjax.train.step import TrainState, grads_and_loss, loss_sums

# Fields that may differ between the runs of one group (everything else must be equal).
VARYING = ("train.seed", "train.steps", "optim.lr", "optim.min_lr", "optim.warmup_steps", "optim.decay_steps",
           "optim.schedule", "optim.wsd_decay_fraction", "data.train_tokens")


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
    """Indices of cfgs grouped by group_key (n-gram runs alone), each group at most max_size long.

    Within a group, runs of similar length go together (sorted by steps), so that a group's
    shorter runs waste little of the longest run's steps.
    """
    by_key: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        key = f"single-{i}" if cfg.model.family == "ngram" else group_key(cfg)
        by_key.setdefault(key, []).append(i)
    out = []
    for idx in by_key.values():
        idx = sorted(idx, key=lambda i: cfgs[i].train.steps)
        step = max_size or len(idx)
        out += [idx[j:j + step] for j in range(0, len(idx), step)]
    return out


def _unit_lr_optimizer(optim, steps):
    """The run's optimizer chain with a constant learning rate of 1 (the caller scales updates)."""
    unit = dataclasses.replace(optim, lr=1.0, min_lr=0.0, schedule="constant", warmup_steps=0, decay_steps=0)
    return make_optimizer(unit, steps)[0]


def lr_table(cfg, length: int) -> np.ndarray:
    """The run's learning rate at steps 0 .. length-1, from its own schedule (float32)."""
    _, schedule = make_optimizer(cfg.optim, cfg.train.steps)
    return np.asarray(jax.jit(jax.vmap(schedule))(jnp.arange(length, dtype=jnp.int32)), np.float32)


def make_group_steps(model, cfg0):
    """(init, train, eval): init for one run; train and eval vmapped over the run axis and jitted.

    train(state_R, hp_R, windows_RBT1, active_R) -> (state_R, metrics_R), hp = {"lr_table": (R, S),
    "dropout_key": (R,)}; a run whose ``active`` flag is False keeps its state.
    """
    accum = cfg0.train.grad_accum
    dummy_BT = jnp.zeros((1, cfg0.model.context), jnp.int32)
    tx = _unit_lr_optimizer(cfg0.optim, cfg0.train.steps)

    def init_state(rng):
        params = nn.meta.unbox(model.init({"params": rng, "dropout": rng}, dummy_BT, train=False)["params"])
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    def train_step(state, hp, windows_BT1, active):
        table = hp["lr_table"]
        lr = table[jnp.minimum(state.step, table.shape[0] - 1)]
        rng = jax.random.fold_in(hp["dropout_key"], state.step)
        loss, grads, _ = grads_and_loss(model, state.params, windows_BT1, rng, accum=accum)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        updates = jax.tree.map(lambda u: u * lr.astype(u.dtype), updates)  # (-direction) x lr
        params = optax.apply_updates(state.params, updates)
        new = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
        new = jax.tree.map(lambda a, b: jnp.where(active, a, b), new, state)
        return new, {"train_loss": loss, "grad_norm": optax.global_norm(grads), "lr": lr}

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
    for s, c in jax.device_get(sums):  # one host sync for the whole evaluation
        for i in range(n_runs):
            totals[i] += float(s[i])
            counts[i] += float(c[i])
    out = []
    for t, c in zip(totals, counts):
        loss = t / c
        out.append({"val_loss": loss, "val_bpb": loss / math.log(2) / ds.val_bytes_per_token,
                    "val_ppl": math.exp(min(loss, 700.0)), "val_tokens": int(c)})
    return out


@dataclasses.dataclass
class _Run:
    cfg: object
    cfg_dict: dict
    workdir: str
    ckpt: Checkpointer
    logger: RunLogger
    tokens: np.ndarray
    start: int
    wall_before: float
    step: int = 0
    mark_step: int = 0
    mark_time: float = 0.0
    eval_time: float = 0.0
    last_loss: float | None = None
    last_eval: dict | None = None
    summary: dict | None = None


def train_group(cfgs, workdirs, *, announce=print) -> list[dict]:
    """Train runs with identical shapes together; returns one summary per run (as loop.train)."""
    if len(cfgs) != len(workdirs) or not cfgs:
        raise ValueError("train_group needs one workdir per config")
    if len({group_key(c) for c in cfgs}) != 1:
        raise NotGroupable("the runs differ in more than seed / learning-rate schedule / steps / train_tokens")
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
    init, train_fn, evaluate = make_group_steps(model, cfg0)
    ckpts = [Checkpointer(os.path.join(wd, rundir.CHECKPOINTS), keep=c.train.keep_checkpoints)
             for wd, c in zip(workdirs, cfgs)]
    abstract = sharding = None
    states, runs = [], []
    for cfg, d, wd, ck in zip(cfgs, dicts, workdirs, ckpts):
        start, wall_before = ck.latest_step(), 0.0
        if start is None:
            states.append(init(jax.random.key(cfg.train.seed)))
            start = 0
        else:
            if abstract is None:
                abstract = jax.eval_shape(init, jax.random.key(0))
                one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
                sharding = jax.tree.map(lambda _: one, abstract)
            states.append(ck.restore(abstract, sharding, start))
            truncate_metrics(wd, start)
            done = [r for r in read_metrics(wd) if "wall_s" in r]
            wall_before = done[-1]["wall_s"] if done else 0.0
            announce(f"{wd}: resuming from step {start} (vmapped group of {n})")
        quiet = dataclasses.replace(cfg, log=dataclasses.replace(cfg.log, wandb="disabled", progress=False))
        logger = RunLogger(wd, quiet, d, total_steps=cfg.train.steps, start_step=start)
        runs.append(_Run(cfg, d, wd, ck, logger, batches.usable_tokens(ds.train, cfg.data.train_tokens),
                         start, wall_before, step=start, mark_step=start))
    state = _stack(states)
    del states
    longest = max(r.cfg.train.steps for r in runs)
    hp = {"lr_table": jnp.asarray(np.stack([lr_table(r.cfg, longest) for r in runs])),
          "dropout_key": jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 1))(
              jnp.asarray([r.cfg.train.seed for r in runs], jnp.uint32))}

    fpt = models.flops_per_token(cfg0.model)
    t = cfg0.train
    tokens_per_step = t.batch_size * cfg0.model.context
    peak = t.peak_flops or flops_lib.peak_flops_per_device()
    batch_fn = batches.stream_batch if cfg0.data.stateful else batches.train_batch
    blank = np.zeros((t.batch_size, cfg0.model.context + 1), np.int32)

    def finish(i: int, status: str) -> None:
        r = runs[i]
        if status != "diverged":  # keep only checkpoints from before a divergence
            r.ckpt.save(r.step, _unstack(state, i), wait=True)
        r.ckpt.close()
        summary = run_summary(r.cfg, ds, status, r.step, r.last_loss, r.wall_before + time.perf_counter() - t_start,
                              r.last_eval, vmap_group=n)
        rundir.write_json(os.path.join(r.workdir, rundir.SUMMARY), summary)
        r.logger.finish(summary)
        r.summary = summary

    t_start = time.perf_counter()
    for r in runs:
        r.mark_time = t_start
        if r.step >= r.cfg.train.steps:  # already at its end (a resumed run killed while finishing)
            finish(runs.index(r), "done")
    status = "done"
    active_key, active_dev = None, None
    iteration = 0
    with Preemption() as preempt:
        while True:
            active = [r.summary is None for r in runs]
            if not any(active):
                break
            if active != active_key:  # changes only when a run ends
                active_key, active_dev = active, jnp.asarray(active)
            windows = np.stack([batch_fn(r.tokens, seed=r.cfg.train.seed, step=r.step, batch_size=t.batch_size,
                                         seq_len=cfg0.model.context) if a else blank for r, a in zip(runs, active)])
            state, metrics = train_fn(state, hp, jnp.asarray(windows), active_dev)
            records, need_eval, m = {}, [], None
            for i, (r, a) in enumerate(zip(runs, active)):
                if not a:
                    continue
                r.step += 1
                rec = {"step": r.step}
                tc = r.cfg.train
                if r.step % tc.log_every == 0 or r.step == tc.steps:
                    m = jax.device_get(metrics) if m is None else m
                    now = time.perf_counter()
                    tps = (r.step - r.mark_step) * tokens_per_step / max(now - r.mark_time - r.eval_time, 1e-9)
                    r.last_loss = float(m["train_loss"][i])
                    rec.update(train_loss=r.last_loss, lr=float(m["lr"][i]), grad_norm=float(m["grad_norm"][i]),
                               tokens_per_s=tps, mfu=flops_lib.mfu(tps * fpt, peak, 1))
                    r.mark_time, r.mark_step, r.eval_time = now, r.step, 0.0
                if (tc.eval_every and r.step % tc.eval_every == 0) or r.step == tc.steps:
                    need_eval.append(i)
                records[i] = rec
            if need_eval:
                t0 = time.perf_counter()
                evals = _evaluate(evaluate, state.params, ds, cfg0, n)
                spent = time.perf_counter() - t0
                for i in need_eval:
                    runs[i].last_eval = evals[i]
                    records[i].update(evals[i])
                for i in records:
                    runs[i].eval_time += spent
            for i, rec in records.items():
                r = runs[i]
                if len(rec) > 1:
                    rec.update(tokens=r.step * tokens_per_step, flops=r.step * tokens_per_step * fpt,
                               wall_s=r.wall_before + time.perf_counter() - t_start)
                    r.logger.log(rec)
                if "train_loss" in rec and not math.isfinite(r.last_loss):  # this run stops; the others go on
                    announce(f"{r.workdir}: train loss {r.last_loss} at step {r.step}: the run diverged; stopping")
                    finish(i, "diverged")
                elif r.step == r.cfg.train.steps:
                    finish(i, "done")
                elif r.cfg.train.checkpoint_every and r.step % r.cfg.train.checkpoint_every == 0:
                    r.ckpt.save(r.step, _unstack(state, i))
            iteration += 1
            if preempt.reached(iteration) and any(r.summary is None for r in runs):
                status = "preempted"
                announce(f"vmapped group of {n}: SIGTERM received; saving checkpoints and exiting")
                break
    for i, r in enumerate(runs):
        if r.summary is None:
            finish(i, status)
    for r in runs:
        if wandb_mode(r.cfg.log.wandb) != "disabled":
            replay_wandb(r.cfg, r.cfg_dict, r.workdir, r.summary)
    return [r.summary for r in runs]


def replay_wandb(cfg, cfg_dict: dict, workdir: str, summary: dict) -> None:
    """Log a finished (vmapped) run's metrics.jsonl to wandb as if it had streamed them."""
    run = open_wandb(cfg, cfg_dict, workdir)
    for rec in read_metrics(workdir):
        run.log({k: v for k, v in rec.items() if k != "step" and isinstance(v, (int, float))}, step=rec["step"])
    for k, v in summary.items():
        if isinstance(v, (int, float, str)):
            run.summary[k] = v
    run.finish()
