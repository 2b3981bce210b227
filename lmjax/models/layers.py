"""Layers shared by the model families: embeddings, norms, output head, initializers.

Every parameter carries logical axis names (``vocab``, ``embed``, ``mlp``, ``heads``, ``kv``,
``hidden``); lmjax.parallel maps them to mesh axes, so no model ever names a mesh axis.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.errors import ConfigError

Dtype = jnp.dtype


def dtype_of(name: str):
    try:
        return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[name]
    except KeyError:
        raise ConfigError(f"unknown dtype {name!r}; valid: float32, bfloat16, float16") from None


def normal(std: float):
    return nn.initializers.normal(stddev=std)


def param(module: nn.Module, name: str, init, shape, axes, dtype=jnp.float32):
    """A float32 parameter with logical axis names."""
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def constrain(x, axes):
    """Sharding constraint by logical names (a no-op outside a mesh with rules)."""
    return nn.with_logical_constraint(x, axes)


class Embed(nn.Module):
    """Token embedding table E_VD; ``attend`` gives tied output logits x_BTD @ E_VD^T."""

    vocab_size: int
    d_model: int
    init_std: float = 0.02
    dtype: str = "float32"

    def setup(self):
        self.embedding_VD = param(self, "embedding", normal(self.init_std),
                                  (self.vocab_size, self.d_model), ("vocab", "embed"))

    def __call__(self, tokens_BT):
        return jnp.take(self.embedding_VD, tokens_BT, axis=0).astype(dtype_of(self.dtype))

    def attend(self, x_BTD):
        # Logits in float32 whatever the compute dtype.
        x_ND = x_BTD.reshape(-1, x_BTD.shape[-1]).astype(jnp.float32)  # 2-D: see Dense
        return (x_ND @ self.embedding_VD.T).reshape(*x_BTD.shape[:-1], self.vocab_size)


class Dense(nn.Module):
    """x @ W (+ b) with logical axes on W; W has shape in_shape + out_shape."""

    out_shape: tuple[int, ...]
    axes: tuple  # logical names of W (inputs then outputs)
    use_bias: bool = False
    init_std: float = 0.02
    dtype: str = "float32"
    n_in: int = 1  # number of trailing input dims contracted

    @nn.compact
    def __call__(self, x):
        in_shape = x.shape[-self.n_in:]
        w = param(self, "kernel", normal(self.init_std), tuple(in_shape) + tuple(self.out_shape), self.axes)
        dt = dtype_of(self.dtype)
        # A 2-D matmul: XLA:CPU runs dots with several contracting/batch dims (the weight gradient
        # of a 3-D einsum) far slower than (rows, in) @ (in, out).
        lead = x.shape[: x.ndim - self.n_in]
        x2 = x.reshape(-1, math.prod(in_shape)).astype(dt)
        y = (x2 @ w.reshape(math.prod(in_shape), -1).astype(dt)).reshape(*lead, *self.out_shape)
        if self.use_bias:
            b = param(self, "bias", nn.initializers.zeros, tuple(self.out_shape), self.axes[self.n_in:])
            y = y + b.astype(dt)
        return y


class Norm(nn.Module):
    """Pre-norm: LayerNorm (optional bias) or RMSNorm; statistics in float32."""

    kind: str = "layernorm"
    use_bias: bool = False
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        x32 = x.astype(jnp.float32)
        if self.kind == "layernorm":
            x32 = x32 - x32.mean(-1, keepdims=True)
        elif self.kind != "rmsnorm":
            raise ConfigError(f"unknown norm {self.kind!r}; valid: layernorm, rmsnorm")
        y = x32 * jax.lax.rsqrt((x32 * x32).mean(-1, keepdims=True) + self.eps)
        y = y * param(self, "scale", nn.initializers.ones, (d,), ("embed",))
        if self.use_bias and self.kind == "layernorm":
            y = y + param(self, "bias", nn.initializers.zeros, (d,), ("embed",))
        return y.astype(x.dtype)


def norm_param_count(kind: str, use_bias: bool, d: int) -> int:
    return d * (2 if (use_bias and kind == "layernorm") else 1)


def vocab_rows(cfg) -> int:
    """Rows of a model's embedding and output tables: ``vocab_size`` rounded up to a multiple of
    ``vocab_multiple``, so that the vocab axis splits over a mesh axis (65 characters do not split
    over 2 devices, 72 rows do) and the output matmul gets aligned tiles. The padded rows are never
    read as inputs and their logits are cut off (``real_vocab_logits``): they get no gradient and
    the model's distribution stays over the real vocabulary."""
    return -(-cfg.vocab_size // cfg.vocab_multiple) * cfg.vocab_multiple


def check_vocab(cfg) -> None:
    if cfg.vocab_size < 0:
        raise ConfigError(f"model.vocab_size must be >= 0, got {cfg.vocab_size}")
    if cfg.vocab_multiple < 1:
        raise ConfigError(f"model.vocab_multiple must be >= 1, got {cfg.vocab_multiple}")


def real_vocab_logits(logits_BTV, vocab_size: int):
    """float32 logits, vocab-sharded at the padded width, then cut to the real vocabulary."""
    logits_BTV = constrain(logits_BTV.astype(jnp.float32), ("batch", "length", "vocab"))
    return logits_BTV if logits_BTV.shape[-1] == vocab_size else logits_BTV[..., :vocab_size]


def output_head_params(d: int, v: int, tied: bool, use_bias: bool) -> int:
    """Parameters of the output layer beyond the (possibly tied) embedding table."""
    return 0 if tied else d * v + (v if use_bias else 0)


def sinusoidal_table(length: int, d: int):
    """Vaswani et al. (2017): PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(...)."""
    pos = jnp.arange(length, dtype=jnp.float32)[:, None]
    i = jnp.arange(0, d, 2, dtype=jnp.float32)[None, :]
    angle = pos / jnp.power(10000.0, i / d)
    pe = jnp.zeros((length, d), jnp.float32)
    pe = pe.at[:, 0::2].set(jnp.sin(angle))
    return pe.at[:, 1::2].set(jnp.cos(angle[:, : d // 2]))


def residual_std(init_std: float, n_layers: int) -> float:
    """GPT-2 scaling of residual output projections: std / sqrt(2 L)."""
    return init_std / math.sqrt(2 * n_layers)
