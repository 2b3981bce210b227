"""Logit-level samplers: greedy, temperature, top-k, top-p (nucleus), min-p.

Every function takes batched logits (..., V), computes in float32 (bf16 is upcast) and is
jit-compatible. Processors return logits of the same shape with excluded tokens set to -inf, so
they compose: `sample` applies them in the fixed order

    temperature -> top-k -> top-p -> min-p -> jax.random.categorical

Each step sees the output of the previous one: top-p and min-p measure probabilities of the
tempered distribution renormalized over the tokens that survived the earlier filters.
`temperature=0` means greedy (argmax of the raw logits; filters cannot change the argmax).

Ties are broken deterministically towards the lower token id (as `argmax` and `lax.top_k` do):
top-k keeps exactly k tokens and top-p ranks tied tokens by id.

Python scalars are validated eagerly (ConfigError); jax arrays (e.g. a traced temperature) are
used as given. `top_k` must be a Python int: it sets an array shape.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp

from lmjax.errors import ConfigError

NEG_INF = -jnp.inf


def _f32(logits) -> jax.Array:
    logits = jnp.asarray(logits)
    return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


def _is_scalar(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_temperature(temperature, *, allow_zero: bool) -> None:
    if isinstance(temperature, bool) or not (
        _is_scalar(temperature) or isinstance(temperature, jax.Array)
    ):
        raise ConfigError(f"temperature must be a number, got {temperature!r}")
    if _is_scalar(temperature):
        ok = temperature >= 0 if allow_zero else temperature > 0
        if not ok:
            bound = ">= 0 (0 means greedy)" if allow_zero else "> 0"
            raise ConfigError(f"temperature must be {bound}, got {temperature!r}")


def _check_top_k(k) -> None:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ConfigError(f"top_k must be a Python int >= 1, got {k!r}")
    if k < 1:
        raise ConfigError(f"top_k must be >= 1, got {k!r}")


def _check_top_p(p) -> None:
    if _is_scalar(p):
        if not 0 < p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {p!r}")
    elif not isinstance(p, jax.Array):
        raise ConfigError(f"top_p must be a number in (0, 1], got {p!r}")


def _check_min_p(p) -> None:
    if _is_scalar(p):
        if not 0 <= p <= 1:
            raise ConfigError(f"min_p must be in [0, 1], got {p!r}")
    elif not isinstance(p, jax.Array):
        raise ConfigError(f"min_p must be a number in [0, 1], got {p!r}")


def greedy(logits) -> jax.Array:
    """Argmax over the last axis (the lowest id among ties), int32, shape (...)."""
    return jnp.argmax(jnp.asarray(logits), axis=-1).astype(jnp.int32)


def apply_temperature(logits, temperature) -> jax.Array:
    """logits / T for T > 0: T < 1 sharpens, T > 1 flattens; -inf stays -inf."""
    _check_temperature(temperature, allow_zero=False)
    return _f32(logits) / temperature


def top_k(logits, k: int) -> jax.Array:
    """Keep the k largest logits (exactly k; ties go to lower ids), the rest -inf.

    k >= V keeps everything.
    """
    _check_top_k(k)
    logits = _f32(logits)
    if k >= logits.shape[-1]:
        return logits
    return _top_k(logits, int(k))


@functools.partial(jax.jit, static_argnames="k")
def _top_k(logits, k):
    _, idx = jax.lax.top_k(logits, k)  # (..., k); among equal values the lower index first
    keep = jnp.put_along_axis(jnp.zeros(logits.shape, bool), idx, True, axis=-1, inplace=False)
    return jnp.where(keep, logits, NEG_INF)


def top_p(logits, p) -> jax.Array:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability sum reaches p.

    Tokens are ranked by logit, ties by lower id; token at rank r is kept iff the probability
    mass of ranks < r is below p. The argmax is always kept; p = 1 keeps every token.
    """
    _check_top_p(p)
    return _top_p(_f32(logits), p)


@jax.jit
def _top_p(logits, p):
    order = jnp.argsort(logits, axis=-1, descending=True, stable=True)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs  # exclusive cumsum
    keep_sorted = (mass_before < p) | (p >= 1)
    keep_sorted = keep_sorted.at[..., 0].set(True)
    keep = jnp.put_along_axis(
        jnp.zeros(logits.shape, bool), order, keep_sorted, axis=-1, inplace=False
    )
    return jnp.where(keep, logits, NEG_INF)


def min_p(logits, p) -> jax.Array:
    """Keep tokens whose probability is at least p times the largest probability.

    p = 0 keeps everything, p = 1 keeps only the tokens tied with the argmax.
    """
    _check_min_p(p)
    return _min_p(_f32(logits), p)


@jax.jit
def _min_p(logits, p):
    top = jnp.max(logits, axis=-1, keepdims=True)
    # prob_i / prob_max = exp(l_i - l_max) >= p  <=>  l_i - l_max >= log p  (log 0 = -inf).
    keep = (logits - top >= jnp.log(jnp.asarray(p, logits.dtype))) | (logits == top)
    return jnp.where(keep, logits, NEG_INF)


# Aliases: `process_logits` and `sample` take keyword arguments with the filters' names.
_top_k_filter, _top_p_filter, _min_p_filter = top_k, top_p, min_p


def process_logits(
    logits, *, temperature=1.0, top_k: int | None = None, top_p=None, min_p=None
) -> jax.Array:
    """The logits `sample` draws from (temperature > 0): temperature -> top-k -> top-p -> min-p.

    Filters that are off (None, top_p = 1, min_p = 0, top_k >= V) are skipped when the value is a
    Python number.
    """
    _check_temperature(temperature, allow_zero=False)
    out = _f32(logits)
    if not (_is_scalar(temperature) and temperature == 1):
        out = apply_temperature(out, temperature)
    if top_k is not None:
        out = _top_k_filter(out, top_k)
    if top_p is not None and not (_is_scalar(top_p) and top_p == 1):
        out = _top_p_filter(out, top_p)
    if min_p is not None and not (_is_scalar(min_p) and min_p == 0):
        out = _min_p_filter(out, min_p)
    return out


def sample(
    key, logits, *, temperature=1.0, top_k: int | None = None, top_p=None, min_p=None
) -> jax.Array:
    """Draw token ids (int32, shape (...)) from logits (..., V).

    Order: temperature -> top-k -> top-p -> min-p, then `jax.random.categorical`.
    temperature = 0 is greedy; a traced temperature array selects greedy where it is 0.
    Under `jax.jit`, pass `top_k` as a static argument.
    """
    _check_temperature(temperature, allow_zero=True)
    if top_k is not None:
        _check_top_k(top_k)
    if top_p is not None:
        _check_top_p(top_p)
    if min_p is not None:
        _check_min_p(min_p)
    logits = _f32(logits)
    if _is_scalar(temperature):
        if temperature == 0:
            return greedy(logits)
        processed = process_logits(
            logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p
        )
        return jax.random.categorical(key, processed, axis=-1).astype(jnp.int32)
    # Traced temperature: sample with T where T > 0, greedy where T == 0.
    t = jnp.asarray(temperature, logits.dtype)
    safe_t = jnp.where(t > 0, t, 1.0)
    if t.ndim:  # a per-row temperature (...,) broadcasts over the vocabulary axis
        safe_t = safe_t[..., None]
    processed = process_logits(
        logits / safe_t, temperature=1.0, top_k=top_k, top_p=top_p, min_p=min_p
    )
    drawn = jax.random.categorical(key, processed, axis=-1).astype(jnp.int32)
    return jnp.where(t > 0, drawn, greedy(logits))
