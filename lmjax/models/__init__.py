"""Model families and the registry: build(cfg) -> module, counts per family.

Each family module defines a frozen ``Config`` dataclass (with a ``family`` field), a flax.linen
module taking only that dataclass, ``param_counts(cfg)`` and ``flops_per_token(cfg)``.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from lmjax.errors import ConfigError

# family name -> (module path, config class name, model class name)
_FAMILIES: dict[str, tuple[str, str, str]] = {
    "transformer": ("lmjax.models.transformer", "TransformerConfig", "Transformer"),
    "lstm": ("lmjax.models.recurrent", "RecurrentConfig", "RecurrentLM"),
    "gru": ("lmjax.models.recurrent", "RecurrentConfig", "RecurrentLM"),
    "rnn": ("lmjax.models.recurrent", "RecurrentConfig", "RecurrentLM"),
    "ffnn": ("lmjax.models.ffnn", "FFNNConfig", "FFNN"),
    "ngram": ("lmjax.models.ngram", "NGramConfig", "NGramLM"),
}

FAMILIES = tuple(_FAMILIES)
NEURAL_FAMILIES = tuple(f for f in FAMILIES if f != "ngram")


def family_module(family: str):
    if family not in _FAMILIES:
        raise ConfigError(f"unknown model family {family!r}; valid families: {', '.join(FAMILIES)}")
    return importlib.import_module(_FAMILIES[family][0])


def config_class(family: str) -> type:
    return getattr(family_module(family), _FAMILIES[family][1])


def config_from_dict(d: dict[str, Any]):
    """Rebuild a model config from its config.json form (needs the ``family`` key)."""
    d = dict(d)
    family = d.get("family", "transformer")
    cls = config_class(family)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown model config key(s) for family {family!r}: {', '.join(unknown)}")
    return cls(**d)


def build(cfg):
    """The flax module (or the n-gram class) for a model config."""
    cfg.validate()
    mod = family_module(cfg.family)
    return getattr(mod, _FAMILIES[cfg.family][2])(cfg) if cfg.family != "ngram" else getattr(mod, "NGramLM")


def param_counts(cfg) -> dict[str, int]:
    """Exact analytic counts: total, embedding, non_embedding (Kaplan et al. 2020 convention)."""
    return family_module(cfg.family).param_counts(cfg)


def flops_per_token(cfg) -> float:
    """Training FLOPs per token (forward + backward) for the family; see lmjax.flops."""
    return family_module(cfg.family).flops_per_token(cfg)
