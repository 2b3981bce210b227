"""Grid points, deterministic run names, Cartesian grids and IsoFLOP designs.

A grid point is a full ``Config`` plus its grid coordinates (what the sweep varied: family, size,
tokens, seed, lr, ...). The run's name, and so its directory, is a pure function of the config:
readable parts (family, size, steps, lr, seed) plus a short hash of every trajectory-relevant
field, so a re-launch of the same (or an extended) grid finds the runs it already trained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

from lmjax import config as config_lib, models
from lmjax.config import Config
from lmjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point: the run's config and its coordinates in the grid."""

    config: Config
    coords: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return run_name(self.config)


# ----------------------------------------------------------------------------- names

def trajectory_dict(cfg: Config) -> dict:
    """The config as a dict of what defines the run's trajectory (config.trajectory_dict)."""
    return config_lib.trajectory_dict(config_lib.to_dict(cfg))


def config_hash(cfg: Config, n: int = 8) -> str:
    blob = json.dumps(trajectory_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def size_tag(model) -> str:
    """Short shape tag of a model config: d64L2 (Transformer), h128L2 (recurrent), ..."""
    fields = {f.name for f in dataclasses.fields(model)}
    if "d_model" in fields:
        return f"d{model.d_model}L{model.n_layers}"
    if model.family == "ffnn":
        return f"e{model.d_embed}h{model.d_hidden}L{model.n_layers}w{model.window}"
    if "d_hidden" in fields:
        return f"h{model.d_hidden}L{model.n_layers}"
    if "order" in fields:
        return f"n{model.order}"
    return "m"


def _num(x: float) -> str:
    return f"{x:.3g}".replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")


def run_name(cfg: Config) -> str:
    """family-size-t<steps>[-u<unique tokens>]-lr<lr>-s<seed>-<hash>: deterministic from the config."""
    parts = [cfg.model.family, size_tag(cfg.model)]
    if cfg.model.family != "ngram":
        parts.append(f"t{cfg.train.steps}")
    if cfg.data.train_tokens:
        parts.append(f"u{cfg.data.train_tokens}")
    if cfg.model.family != "ngram":
        parts += [f"lr{_num(cfg.optim.lr)}", f"s{cfg.train.seed}"]
    return "-".join(parts) + "-" + config_hash(cfg)


# ----------------------------------------------------------------------------- helpers

def tokens_per_step(cfg: Config) -> int:
    """Training tokens per optimizer step, exactly as the loop counts them."""
    return cfg.train.batch_size * cfg.model.context


def with_vocab(cfg: Config) -> Config:
    """Fill model.vocab_size from the data's tokenizer (needed for exact FLOPs of the output layer)."""
    if cfg.model.vocab_size:
        return cfg
    from lmjax.data.dataset import load_dataset

    vocab = load_dataset(cfg.data).vocab_size
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab))


def _steps_for_tokens(cfg: Config, tokens: int) -> int:
    return max(1, int(round(tokens / tokens_per_step(cfg))))


def _as_list(value, model) -> list:
    if value is None:
        return [None]
    if callable(value):
        value = value(model)
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _set(cfg: Config, key: str, value) -> Config:
    return config_lib.override(cfg, key, value)


def _with_seed_and_lr(cfg: Config, coords: dict, seed, lr) -> Config:
    """Set the seed and learning rate of a grid point (None: keep the base's), recording them in coords."""
    if seed is not None:
        cfg = _set(cfg, "train.seed", seed)
        coords["seed"] = seed
    if lr is not None:
        cfg = _set(cfg, "optim.lr", float(lr))
        coords["lr"] = float(lr)
    return cfg


def cartesian(base: Config, *, models_: Sequence | None = None, tokens: Sequence[int] = (),
              steps: Sequence[int] = (), seeds: Sequence[int] = (), lrs=None,
              axes: Mapping[str, Sequence] | None = None,
              adjust: Callable[[Config], Config] | None = None, **kwargs) -> list[Point]:
    """The Cartesian product model ladder x train tokens (or steps) x seed x lr x extra axes.

    models_ (or ``models=``): model configs, any mix of families (the family axis is the ladder's
    families). tokens: training tokens per run (steps = round(tokens / (batch x context)));
    steps: step counts instead. lrs: a list, or a function model_cfg -> lr or list of lrs (a
    per-size learning rate). axes: other dotted keys, e.g. {"optim.warmup_steps": [10, 100]}.
    adjust(cfg) -> cfg runs last on each point (e.g. warmup or eval frequency from the steps).
    """
    if "models" in kwargs:
        models_ = kwargs.pop("models")
    if kwargs:
        raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
    if tokens and steps:
        raise ConfigError("give tokens or steps, not both")
    ladder = list(models_) if models_ is not None else [base.model]
    axes = dict(axes or {})
    points = []
    for model in ladder:
        cfg_m = dataclasses.replace(base, model=model)
        counts = models.param_counts(model) if model.vocab_size else None
        data_axis = [("tokens", t) for t in tokens] or [("steps", s) for s in steps] or [(None, None)]
        for (dkey, dval), seed, lr, *extra in itertools.product(
                data_axis, list(seeds) or [None], _as_list(lrs, model), *axes.values()):
            cfg, coords = cfg_m, {"family": model.family, "size": size_tag(model)}
            if counts:
                coords["params_non_embedding"] = counts["non_embedding"]
            if dkey == "tokens":
                n = _steps_for_tokens(cfg, dval)
                cfg = _set(cfg, "train.steps", n)
                coords["tokens"] = n * tokens_per_step(cfg)
            elif dkey == "steps":
                cfg = _set(cfg, "train.steps", dval)
            coords["steps"] = cfg.train.steps
            cfg = _with_seed_and_lr(cfg, coords, seed, lr)
            for key, value in zip(axes, extra):
                cfg = _set(cfg, key, value)
                coords[key] = value
            if adjust is not None:
                cfg = adjust(cfg)
            points.append(Point(cfg, coords))
    return points


@dataclasses.dataclass(frozen=True)
class Rejected:
    budget: float
    model: Any
    reason: str


def isoflop(base: Config, *, budgets: Iterable[float], models_: Sequence | None = None, tol: float = 0.02,
            seeds: Sequence[int] = (), lrs=None, adjust: Callable[[Config], Config] | None = None,
            rejected: list | None = None, **kwargs) -> list[Point]:
    """IsoFLOP design: for each budget C and model N, steps = round(C / (FLOPs/token x tokens/step)).

    Uses the family's exact ``flops_per_token`` (the vocabulary comes from the data when the model
    config leaves it 0) and keeps a point only when the training FLOPs the loop will log,
    steps x batch x context x flops_per_token, are within ``tol`` of C. Points that cannot match
    (too few steps for the rounding, or not a single step) are left out; pass a list as
    ``rejected`` to get them with their reasons.
    """
    if "models" in kwargs:
        models_ = kwargs.pop("models")
    if kwargs:
        raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
    ladder = list(models_) if models_ is not None else [base.model]
    points = []
    for budget in budgets:
        for model in ladder:
            cfg = with_vocab(dataclasses.replace(base, model=model))
            fpt = models.flops_per_token(cfg.model)
            per_step = fpt * tokens_per_step(cfg)
            n = int(round(budget / per_step))
            achieved = n * per_step
            err = abs(achieved - budget) / budget
            if n < 1 or err > tol:
                reason = (f"budget {budget:.3g} FLOPs with {per_step:.3g} FLOPs/step gives {n} steps "
                          f"({achieved:.3g} FLOPs, off by {100 * err:.1f}% > {100 * tol:.0f}%)")
                if rejected is not None:
                    rejected.append(Rejected(budget, model, reason))
                continue
            cfg = _set(cfg, "train.steps", n)
            counts = models.param_counts(cfg.model)
            base_coords = {"family": model.family, "size": size_tag(model), "budget": float(budget),
                           "params_non_embedding": counts["non_embedding"], "steps": n,
                           "tokens": n * tokens_per_step(cfg)}
            for seed, lr in itertools.product(list(seeds) or [None], _as_list(lrs, cfg.model)):
                coords = dict(base_coords)
                c = _with_seed_and_lr(cfg, coords, seed, lr)
                if adjust is not None:
                    c = adjust(c)
                    if c.train.steps != n or tokens_per_step(c) * models.flops_per_token(c.model) != per_step:
                        raise ConfigError("isoflop: adjust() must not change the steps, batch, context or model")
                points.append(Point(c, coords))
    return points


def training_flops(cfg: Config) -> float:
    return cfg.train.steps * tokens_per_step(cfg) * models.flops_per_token(cfg.model)


def warmup_and_evals(warmup_fraction: float = 0.1, evals: int = 4, decay_to_end: bool = True,
                     checkpoints: int = 2) -> Callable[[Config], Config]:
    """An ``adjust`` helper: warmup and eval/checkpoint frequency as fractions of each run's steps."""

    def adjust(cfg: Config) -> Config:
        steps = cfg.train.steps
        every = max(1, math.ceil(steps / evals))
        train = dataclasses.replace(cfg.train, eval_every=every, log_every=min(cfg.train.log_every, every),
                                    checkpoint_every=max(1, math.ceil(steps / checkpoints)))
        optim = dataclasses.replace(cfg.optim, warmup_steps=int(round(warmup_fraction * steps)),
                                    decay_steps=steps if decay_to_end else cfg.optim.decay_steps)
        return dataclasses.replace(cfg, train=train, optim=optim)

    return adjust
