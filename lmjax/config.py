"""Typed, frozen configs: loading configs/*.py, dotted overrides, validation, JSON round trip.

A config file defines ``get_config() -> Config``. The model field holds the family's own
dataclass (lmjax.models registry), so a model only ever receives its own config.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import os
import types
import typing
from typing import Any

from lmjax import models
from lmjax.errors import ConfigError
from lmjax.models.transformer import TransformerConfig


@dataclasses.dataclass(frozen=True)
class DataConfig:
    source: str = "shakespeare"  # shakespeare | files:<glob> | tfds:<name>
    tokenizer: str = "char"  # byte | char | bpe | sentencepiece
    bpe_vocab_size: int = 1024  # target vocabulary of a trained BPE tokenizer
    spm_model: str = ""  # path to a SentencePiece .model file
    val_fraction: float = 0.1  # the last fraction of the text is validation
    train_tokens: int = 0  # > 0: unique training tokens (a prefix of the split), repeated as needed
    tfds_split: str = "train"
    tfds_data_dir: str = ""
    tfds_text_key: str = "text"
    cache_dir: str = ""  # "" -> $LMJAX_CACHE/data (default ~/.cache/lmjax/data)
    stateful: bool = False  # recurrent truncated BPTT: each batch row is a contiguous stream


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3  # peak learning rate
    schedule: str = "cosine"  # cosine | constant | wsd
    warmup_steps: int = 100
    decay_steps: int = 0  # cosine: step at which the floor is reached (0 -> train.steps)
    min_lr: float = 1e-4  # floor of the cosine / WSD decay
    wsd_decay_fraction: float = 0.2  # WSD: the last fraction of training decays linearly
    b1: float = 0.9
    b2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.1
    decay_embeddings: bool = True  # norms and biases are never decayed
    clip_norm: float = 1.0  # global-norm clipping; 0 disables


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 12  # global batch, in sequences
    seed: int = 0
    log_every: int = 50
    eval_every: int = 500  # 0: only at the end
    eval_batches: int = 0  # 0: the whole validation split
    eval_batch_size: int = 64
    checkpoint_every: int = 500  # 0: only at the end (and on SIGTERM)
    keep_checkpoints: int = 2
    peak_flops: float = 0.0  # per-device peak FLOP/s for MFU; 0 measures this machine's fp32 matmul peak
    grad_accum: int = 1  # microbatches per optimizer step


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    shape: tuple = (-1, 1, 1)  # (data, fsdp, tensor); one -1 takes the remaining devices
    rules: str = "fsdp_tp"  # dp | fsdp | fsdp_tp (see lmjax.parallel.RULES)


@dataclasses.dataclass(frozen=True)
class LogConfig:
    wandb: str = "auto"  # auto (online with an API key, else offline) | online | offline | disabled
    wandb_project: str = "lmjax"
    wandb_group: str = ""
    progress: bool = True  # terminal progress bar


@dataclasses.dataclass(frozen=True)
class Config:
    model: Any = TransformerConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    mesh: MeshConfig = MeshConfig()
    log: LogConfig = LogConfig()
    name: str = ""

    def validate(self) -> "Config":
        self.model.validate()
        t, o, d = self.train, self.optim, self.data
        for name in ("steps", "batch_size", "log_every", "eval_batch_size", "keep_checkpoints", "grad_accum"):
            if getattr(t, name) <= 0:
                raise ConfigError(f"train.{name} must be > 0, got {getattr(t, name)}")
        for name in ("eval_every", "eval_batches", "checkpoint_every", "peak_flops"):
            if getattr(t, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(t, name)}")
        if t.batch_size % t.grad_accum:
            raise ConfigError(f"train.grad_accum={t.grad_accum} does not divide train.batch_size={t.batch_size}")
        if o.schedule not in ("cosine", "constant", "wsd"):
            raise ConfigError(f"optim.schedule={o.schedule!r} is not one of cosine, constant, wsd")
        if o.lr <= 0 or o.min_lr < 0 or o.warmup_steps < 0 or o.clip_norm < 0 or o.weight_decay < 0:
            raise ConfigError("optim: lr must be > 0 and min_lr, warmup_steps, clip_norm, weight_decay >= 0")
        if not 0.0 < o.wsd_decay_fraction <= 1.0:
            raise ConfigError(f"optim.wsd_decay_fraction must be in (0, 1], got {o.wsd_decay_fraction}")
        if not 0.0 < d.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
        if d.tokenizer not in ("byte", "char", "bpe", "sentencepiece"):
            raise ConfigError(f"data.tokenizer={d.tokenizer!r} is not one of byte, char, bpe, sentencepiece")
        if d.train_tokens < 0:
            raise ConfigError(f"data.train_tokens must be >= 0, got {d.train_tokens}")
        if len(self.mesh.shape) != 3:
            raise ConfigError(f"mesh.shape must have 3 entries (data, fsdp, tensor), got {self.mesh.shape}")
        if self.log.wandb not in ("auto", "online", "offline", "disabled"):
            raise ConfigError(f"log.wandb={self.log.wandb!r} is not one of auto, online, offline, disabled")
        return self


# Sections that may change between a run and its resumption without changing its trajectory.
RESUME_NEUTRAL = ("log", "mesh", "name", "data.cache_dir", "train.checkpoint_every", "train.keep_checkpoints",
                  "train.peak_flops", "train.log_every", "train.eval_every", "train.eval_batches",
                  "train.eval_batch_size")

# Fields added after runs and sweeps were first written, with the default that keeps the old
# behaviour. At that default they are not part of a run's trajectory (``trajectory_dict``), so a
# run whose config.json predates them still resumes, and sweep run names (lmjax.sweep.grid.run_name)
# stay the same: upgrading lmjax does not rename, and so re-train, the runs of an existing sweep.
# A new field with a behaviour-preserving default belongs here.
ADDED_FIELDS = {"model.vocab_multiple": 1}


def to_dict(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(d: dict) -> Config:
    d = dict(d)
    kwargs = {}
    for f in dataclasses.fields(Config):
        if f.name not in d:
            continue
        v = d.pop(f.name)
        if f.name == "model":
            if not isinstance(v, dict):
                raise ConfigError(f"config.model must be a mapping, got {v!r}")
            kwargs["model"] = _build(models.config_class(v.get("family", "transformer")), v, "model")
        elif dataclasses.is_dataclass(f.default):
            kwargs[f.name] = _build(type(f.default), v, f.name)
        else:
            kwargs[f.name] = v
    if d:
        raise ConfigError(f"unknown config key(s): {', '.join(sorted(d))}")
    return Config(**kwargs)


def _build(cls, values: dict, prefix: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown config key(s) in {prefix}: {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(v, hints[k], f"{prefix}.{k}") for k, v in values.items()})


def _coerce(value, typ, key: str):
    """Convert a parsed value to the field's type, or raise ConfigError naming the key."""
    if typ is Any:
        return value
    origin = typing.get_origin(typ) or typ
    if origin is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif origin is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif origin is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif origin is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list):
        if isinstance(value, (list, tuple)):
            return tuple(value)
    elif origin in (typing.Union, types.UnionType):
        return value
    raise ConfigError(f"config.{key}: expected {getattr(origin, '__name__', origin)}, got {value!r}")


def _parse_literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as rope or files:*.txt


def override(cfg: Config, key: str, raw) -> Config:
    """Return cfg with the dotted ``key`` (e.g. ``model.d_model``) set; raw strings are parsed."""
    value = _parse_literal(raw) if isinstance(raw, str) else raw
    parts = key.split(".")
    if parts == ["model", "family"]:
        return _switch_family(cfg, str(value))
    return _set(cfg, parts, value, key, raw)


def _set(obj, parts, value, key, raw=None):
    if not dataclasses.is_dataclass(obj):
        raise ConfigError(f"unknown config key {key!r}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if parts[0] not in fields:
        valid = ", ".join(sorted(fields))
        raise ConfigError(f"unknown config key {key!r} ({parts[0]!r} is not one of: {valid})")
    if len(parts) == 1:
        typ = typing.get_type_hints(type(obj))[parts[0]]
        if typ is str and isinstance(raw, str) and not isinstance(value, str):
            value = raw  # a str field takes the text as written: --config.name=2024
        if dataclasses.is_dataclass(getattr(obj, parts[0])):
            raise ConfigError(f"config key {key!r} is a section; set one of its fields")
        return dataclasses.replace(obj, **{parts[0]: _coerce(value, typ, key)})
    child = _set(getattr(obj, parts[0]), parts[1:], value, key, raw)
    return dataclasses.replace(obj, **{parts[0]: child})


def _switch_family(cfg: Config, family: str) -> Config:
    cls = models.config_class(family)
    names = {f.name for f in dataclasses.fields(cls)}
    keep = {k: v for k, v in dataclasses.asdict(cfg.model).items() if k in names and k in ("vocab_size", "context")}
    return dataclasses.replace(cfg, model=cls(family=family, **keep))


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    for key, raw in overrides.items():
        cfg = override(cfg, key, raw)
    return cfg


def load_python_file(path: str, kind: str):
    """Import a Python file (a config or sweep file) as a fresh module; ``kind`` names it in errors."""
    if not os.path.isfile(path):
        raise ConfigError(f"{kind} file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"_lmjax_{kind}_{abs(hash(os.path.abspath(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config_file(path: str) -> Config:
    module = load_python_file(path, "config")
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} defines no get_config()")
    cfg = module.get_config()
    if not isinstance(cfg, Config):
        raise ConfigError(f"get_config() in {path} must return lmjax.config.Config, got {type(cfg).__name__}")
    return cfg


def diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        name = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff(va, vb, name + ".")
        elif va != vb:
            out.append(name)
    return out


def trajectory_dict(d: dict) -> dict:
    """A copy of a config dict with only what defines a run's trajectory: without the
    RESUME_NEUTRAL keys, and without ADDED_FIELDS at their defaults."""
    d = json.loads(json.dumps(d))

    def parent(key):
        *path, leaf = key.split(".")
        node = d
        for p in path:
            node = node.get(p, {})
        return node, leaf

    for key in RESUME_NEUTRAL:
        node, leaf = parent(key)
        node.pop(leaf, None)
    for key, default in ADDED_FIELDS.items():
        node, leaf = parent(key)
        if leaf in node and node[leaf] == default:
            del node[leaf]
    return d


def trajectory_diff(old: dict, new: dict) -> list[str]:
    """Differences that would change a run's trajectory (see trajectory_dict)."""
    return diff(trajectory_dict(old), trajectory_dict(new))
