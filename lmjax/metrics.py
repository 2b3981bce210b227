"""Information-theoretic metrics on probability and logit arrays, over the last axis.

Two families:

- On probabilities (`entropy`, `cross_entropy`, `kl_divergence`): numpy in -> numpy out (float64
  stays float64, handy for n-gram models and references); jax arrays or tracers in -> jnp out, so
  they work under `jax.jit`. Zero probabilities are handled exactly: 0 log 0 = 0, and the
  cross-entropy / KL are +inf where p > 0 and q = 0.
- On logits (`entropy_from_logits`, `cross_entropy_from_logits`, `token_logprobs`): always jnp,
  computed in at least float32 with a stable log-softmax (bf16 logits are upcast), jit-compatible.

Conversions between units: `perplexity`, `nats_to_bits`, `bits_to_nats`, `bits_per_byte`.
`base` is "nats" (natural log) or "bits" (log base 2).
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from lmjax.errors import ConfigError

LN2 = math.log(2.0)
_BASES = {"nats": 1.0, "bits": LN2}


def _scale(base: str) -> float:
    """Divisor that turns nats into `base` units."""
    if not isinstance(base, str) or base not in _BASES:
        raise ConfigError(f"base must be 'nats' or 'bits', got {base!r}")
    return _BASES[base]


def _is_jax(*xs) -> bool:
    return any(isinstance(x, jax.Array) for x in xs)


def _np_float(x) -> np.ndarray:
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def _xlogy_np(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x * log(y) with 0 * log(anything) = 0 (numpy, no warnings)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, y)))


def _xlogy_jnp(x: jax.Array, y: jax.Array) -> jax.Array:
    """x * log(y) with 0 * log(anything) = 0; the double `where` keeps gradients finite."""
    return jnp.where(x == 0, 0.0, x * jnp.log(jnp.where(x == 0, 1.0, y)))


@jax.jit
def _entropy_jnp(p, scale):
    return -jnp.sum(_xlogy_jnp(p, p), axis=-1) / scale


@jax.jit
def _cross_entropy_jnp(p, q, scale):
    return -jnp.sum(_xlogy_jnp(p, q), axis=-1) / scale


@jax.jit
def _kl_jnp(p, q, scale):
    return jnp.sum(_xlogy_jnp(p, p) - _xlogy_jnp(p, q), axis=-1) / scale


def entropy(p, base: str = "nats"):
    """H(p) = -sum_i p_i log p_i over the last axis."""
    scale = _scale(base)
    if _is_jax(p):
        return _entropy_jnp(p, scale)
    p = _np_float(p)
    return -np.sum(_xlogy_np(p, p), axis=-1) / scale


def cross_entropy(p, q, base: str = "nats"):
    """H(p, q) = -sum_i p_i log q_i over the last axis (+inf where p_i > 0 and q_i = 0)."""
    scale = _scale(base)
    if _is_jax(p, q):
        return _cross_entropy_jnp(p, q, scale)
    p, q = _np_float(p), _np_float(q)
    return -np.sum(_xlogy_np(p, q), axis=-1) / scale


def kl_divergence(p, q, base: str = "nats"):
    """KL(p || q) = sum_i p_i (log p_i - log q_i) over the last axis.

    Terms with p_i = 0 are 0; a term with p_i > 0 and q_i = 0 makes the result +inf. Rounding can
    make the result a few ulps negative when p == q; it is not clipped.
    """
    scale = _scale(base)
    if _is_jax(p, q):
        return _kl_jnp(p, q, scale)
    p, q = _np_float(p), _np_float(q)
    return np.sum(_xlogy_np(p, p) - _xlogy_np(p, q), axis=-1) / scale


def _upcast(logits) -> jax.Array:
    """Logits as a jnp array of at least float32 (bf16/f16 are upcast, f64 kept if enabled)."""
    logits = jnp.asarray(logits)
    return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


@jax.jit
def _entropy_from_logits(logits, scale):
    logp = jax.nn.log_softmax(_upcast(logits), axis=-1)
    p = jnp.exp(logp)
    # p * logp with p = 0 (logp = -inf) is 0, not nan.
    return -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1) / scale


def entropy_from_logits(logits, base: str = "nats") -> jax.Array:
    """Entropy of softmax(logits) over the last axis; -inf logits are zero-probability tokens."""
    return _entropy_from_logits(logits, _scale(base))


@jax.jit
def _token_logprobs(logits, targets):
    logp = jax.nn.log_softmax(_upcast(logits), axis=-1)
    return jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


def token_logprobs(logits, targets) -> jax.Array:
    """Per-token log-probabilities in nats, log softmax(logits)[..., targets]: shape (...)."""
    if jnp.shape(logits)[:-1] != jnp.shape(targets):
        raise ConfigError(
            f"token_logprobs: logits shape {jnp.shape(logits)} does not match targets shape "
            f"{jnp.shape(targets)} (expected logits (..., V) with targets (...))"
        )
    return _token_logprobs(logits, targets)


def cross_entropy_from_logits(logits_BTV, targets_BT, mask_BT=None) -> jax.Array:
    """Mean next-token cross-entropy in nats: -sum(w * log p(target)) / sum(w).

    `mask_BT` is an optional weight (bool or float) per token; None weighs every token 1.
    All-zero weights give 0.0 (nothing to average) rather than nan.
    """
    if jnp.shape(logits_BTV)[:-1] != jnp.shape(targets_BT):
        raise ConfigError(
            f"cross_entropy_from_logits: logits shape {jnp.shape(logits_BTV)} does not match "
            f"targets shape {jnp.shape(targets_BT)}"
        )
    if mask_BT is not None and jnp.shape(mask_BT) != jnp.shape(targets_BT):
        raise ConfigError(
            f"cross_entropy_from_logits: mask shape {jnp.shape(mask_BT)} does not match targets "
            f"shape {jnp.shape(targets_BT)}"
        )
    return _cross_entropy_from_logits(logits_BTV, targets_BT, mask_BT)


@jax.jit
def _cross_entropy_from_logits(logits_BTV, targets_BT, mask_BT):
    nll = -_token_logprobs(logits_BTV, targets_BT)
    if mask_BT is None:
        return jnp.mean(nll)
    w = jnp.asarray(mask_BT).astype(nll.dtype)
    total = jnp.sum(w)
    # where(w == 0) keeps 0 * inf (a masked token with -inf log-prob) out of the sum.
    num = jnp.sum(jnp.where(w == 0, 0.0, w * nll))
    return jnp.where(total > 0, num / jnp.where(total > 0, total, 1.0), 0.0)


# ----------------------------------------------------------------------------------------------
# Unit conversions: work on Python floats, numpy and jnp alike.


def _xp(x):
    return jnp if _is_jax(x) else np


def perplexity(loss_nats):
    """exp(loss in nats per token)."""
    return _xp(loss_nats).exp(loss_nats)


def nats_to_bits(x_nats):
    return x_nats / LN2


def bits_to_nats(x_bits):
    return x_bits * LN2


def bits_per_byte(loss_nats_per_token, bytes_per_token):
    """Bits per byte: loss_nats_per_token / ln 2 / bytes_per_token.

    `bytes_per_token` is the tokenizer's own mean UTF-8 bytes per token on the evaluated split.
    """
    if isinstance(bytes_per_token, numbers.Real) and not bytes_per_token > 0:
        raise ConfigError(f"bytes_per_token must be > 0, got {bytes_per_token!r}")
    return loss_nats_per_token / LN2 / bytes_per_token
