"""Decoder-only Transformer (pre-norm), a pure flax.linen module.

Shapes in names: B batch, T time, D d_model, H heads, K head dim, F d_ff, V vocab, L layers,
S cache slots (= context).

Decoding with a KV cache (``decode=True``, linen style): every Attention keeps a "cache" variable
collection {cached_key (B, S, H, K), cached_value (B, S, H, K), cache_index (B,)} and the
Transformer its own cache_index (B,) for the position embeddings. A call with T tokens writes them
at slots cache_index_b .. cache_index_b + T - 1 of each row b, attends to the slots <= its own
position and advances every row's index by ``lengths_B`` (the valid tokens of a right-padded
prompt; default T). Prefill is the first such call on a fresh cache (``mutable=["cache"]``, no
"cache" given: the zero cache is created); each decoding step then feeds one token (T = 1).
Positions are absolute and per row: learned / sinusoidal embeddings are read at the row's index,
RoPE rotates q and k at it, so the logits equal a full forward pass of the unpadded row. Slots
past a right-padded row's length hold pad keys that are masked out and overwritten as it
decodes. The cache has exactly ``context`` slots: callers keep index + T <= context (see
lmjax.generate for what happens beyond the context). The training path (decode=False) is
unchanged and creates no cache.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.errors import ConfigError
from lmjax.models import layers
from lmjax.models.layers import Dense, Embed, Norm, constrain


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    family: str = "transformer"
    vocab_size: int = 0  # 0: set from the tokenizer when the run starts
    vocab_multiple: int = 1  # pad the vocab tables to a multiple (sharding, matmul tiles); see layers.vocab_rows
    context: int = 64  # T: training window and maximum position
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 0  # 0: 4 * d_model (GELU) or the 8/3 * d_model multiple of 8 (SwiGLU)
    positions: str = "learned"  # learned | sinusoidal | rope | none
    norm: str = "layernorm"  # layernorm | rmsnorm
    activation: str = "gelu"  # gelu | swiglu
    tied_embeddings: bool = True
    use_bias: bool = False
    dropout: float = 0.0
    rope_base: float = 10000.0
    init_std: float = 0.02
    dtype: str = "float32"  # compute dtype; parameters, softmax and loss stay float32
    remat: str = "none"  # none | full | save_dots
    scan_layers: bool = False

    @property
    def ff(self) -> int:
        if self.d_ff:
            return self.d_ff
        if self.activation == "swiglu":
            return 8 * ((8 * self.d_model // 3 + 7) // 8)
        return 4 * self.d_model

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def validate(self) -> None:
        for name in ("context", "d_model", "n_layers", "n_heads"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be > 0, got {getattr(self, name)}")
        layers.check_vocab(self)
        if self.d_ff < 0:
            raise ConfigError(f"model.d_ff must be >= 0, got {self.d_ff}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"model.n_heads={self.n_heads} does not divide model.d_model={self.d_model}")
        if self.positions == "rope" and self.head_dim % 2:
            raise ConfigError(f"rope needs an even head dim, got {self.head_dim}")
        choices = {"positions": ("learned", "sinusoidal", "rope", "none"), "norm": ("layernorm", "rmsnorm"),
                   "activation": ("gelu", "swiglu"), "remat": ("none", "full", "save_dots"),
                   "dtype": ("float32", "bfloat16", "float16")}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ConfigError(f"model.{name}={getattr(self, name)!r} is not one of {', '.join(valid)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


def rope(x_BTHK, base: float, positions_BT=None):
    """Rotary position embedding (Su et al. 2021), rotating the two halves of each head (NeoX style).

    Positions are 0..T-1, or the absolute ``positions_BT`` (int, per row) when given (decoding).
    """
    t, k = x_BTHK.shape[1], x_BTHK.shape[-1]
    inv_freq = 1.0 / (base ** (jnp.arange(0, k, 2, dtype=jnp.float32) / k))
    if positions_BT is None:
        angle_TK2 = jnp.arange(t, dtype=jnp.float32)[:, None] * inv_freq[None, :]
        cos, sin = jnp.cos(angle_TK2)[None, :, None, :], jnp.sin(angle_TK2)[None, :, None, :]
    else:
        angle_BTK2 = positions_BT.astype(jnp.float32)[..., None] * inv_freq
        cos, sin = jnp.cos(angle_BTK2)[:, :, None, :], jnp.sin(angle_BTK2)[:, :, None, :]
    x32 = x_BTHK.astype(jnp.float32)
    x1, x2 = x32[..., : k // 2], x32[..., k // 2:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTHK.dtype)


def causal_attention(q_BTHK, k_BSHK, v_BSHK, mask_TS=None, *, dropout_fn=None):
    """Scaled dot-product attention with the softmax in float32. Returns (out_BTHK, probs_BHTS).

    ``mask_TS`` (True = attend) may be any shape broadcastable to (B, H, T, S), e.g. a per-row
    (B, 1, T, S) mask when decoding; None is the causal mask aligned to the last query.
    """
    scale = q_BTHK.shape[-1] ** -0.5
    logits_BHTS = jnp.einsum("bthk,bshk->bhts", q_BTHK, k_BSHK).astype(jnp.float32) * scale
    if mask_TS is None:
        t, s = q_BTHK.shape[1], k_BSHK.shape[1]
        mask_TS = jnp.tril(jnp.ones((t, s), bool), k=s - t)
    logits_BHTS = jnp.where(mask_TS, logits_BHTS, jnp.finfo(jnp.float32).min)
    probs_BHTS = jax.nn.softmax(logits_BHTS, axis=-1)
    p = probs_BHTS if dropout_fn is None else dropout_fn(probs_BHTS)
    out_BTHK = jnp.einsum("bhts,bshk->bthk", p.astype(v_BSHK.dtype), v_BSHK)
    return out_BTHK, probs_BHTS


def _write_rows(cache_BSHK, new_BTHK, index_B):
    """cache[b, index_b : index_b + T] = new[b] for every row b."""
    return jax.vmap(lambda c, x, i: jax.lax.dynamic_update_slice(c, x, (i, 0, 0)))(cache_BSHK, new_BTHK, index_B)


def _cache_index(module: nn.Module, batch: int, t: int, lengths_B):
    """Absolute positions_BT of this call's t tokens; advances the module's cache_index by lengths_B (or t)."""
    index = module.variable("cache", "cache_index", lambda: jnp.zeros((batch,), jnp.int32))
    positions_BT = index.value[:, None] + jnp.arange(t, dtype=jnp.int32)[None, :]
    advance = t if lengths_B is None else jnp.asarray(lengths_B, jnp.int32)
    index.value = index.value + advance
    return positions_BT


class Attention(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x_BTD, *, train: bool = False, decode: bool = False, lengths_B=None):
        c = self.cfg
        dense = dict(use_bias=c.use_bias, dtype=c.dtype)
        qkv_BT3HK = Dense((3, c.n_heads, c.head_dim), ("embed", None, "heads", "kv"),
                          init_std=c.init_std, name="qkv", **dense)(x_BTD)
        q, k, v = (qkv_BT3HK[:, :, i] for i in range(3))
        drop = None
        if train and c.dropout > 0:
            drop = lambda p: nn.Dropout(c.dropout, deterministic=False)(p)  # noqa: E731
        if decode:
            b, t = x_BTD.shape[:2]
            cache_shape = (b, c.context, c.n_heads, c.head_dim)
            cached_key = self.variable("cache", "cached_key", jnp.zeros, cache_shape, k.dtype)
            cached_value = self.variable("cache", "cached_value", jnp.zeros, cache_shape, v.dtype)
            positions_BT = _cache_index(self, b, t, lengths_B)
            if c.positions == "rope":
                q, k = rope(q, c.rope_base, positions_BT), rope(k, c.rope_base, positions_BT)
            start_B = positions_BT[:, 0]
            cached_key.value = _write_rows(cached_key.value, k, start_B)
            cached_value.value = _write_rows(cached_value.value, v, start_B)
            mask_BTS = jnp.arange(c.context)[None, None, :] <= positions_BT[:, :, None]
            out_BTHK, probs_BHTT = causal_attention(q, cached_key.value, cached_value.value,
                                                    mask_BTS[:, None], dropout_fn=drop)
        else:
            if c.positions == "rope":
                q, k = rope(q, c.rope_base), rope(k, c.rope_base)
            out_BTHK, probs_BHTT = causal_attention(q, k, v, dropout_fn=drop)
        self.sow("intermediates", "attention_BHTT", probs_BHTT)
        return Dense((c.d_model,), ("heads", "kv", "embed"), n_in=2, name="out",
                     init_std=layers.residual_std(c.init_std, c.n_layers), **dense)(out_BTHK)


class MLP(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x_BTD):
        c = self.cfg
        dense = dict(use_bias=c.use_bias, dtype=c.dtype)
        if c.activation == "swiglu":
            gate_BTF = Dense((c.ff,), ("embed", "mlp"), init_std=c.init_std, name="gate", **dense)(x_BTD)
            up_BTF = Dense((c.ff,), ("embed", "mlp"), init_std=c.init_std, name="up", **dense)(x_BTD)
            h_BTF = nn.silu(gate_BTF) * up_BTF
        else:
            h_BTF = nn.gelu(Dense((c.ff,), ("embed", "mlp"), init_std=c.init_std, name="up", **dense)(x_BTD),
                            approximate=False)
        h_BTF = constrain(h_BTF, ("batch", "length", "mlp"))
        return Dense((c.d_model,), ("mlp", "embed"), init_std=layers.residual_std(c.init_std, c.n_layers),
                      name="down", **dense)(h_BTF)


class Block(nn.Module):
    cfg: TransformerConfig
    train: bool = False
    decode: bool = False

    @nn.compact
    def __call__(self, x_BTD, lengths_B=None):
        c = self.cfg
        drop = nn.Dropout(c.dropout, deterministic=not self.train)
        x_BTD = x_BTD + drop(Attention(c, name="attn")(Norm(c.norm, c.use_bias, name="norm_attn")(x_BTD),
                                                        train=self.train, decode=self.decode,
                                                        lengths_B=lengths_B))
        x_BTD = x_BTD + drop(MLP(c, name="mlp")(Norm(c.norm, c.use_bias, name="norm_mlp")(x_BTD)))
        x_BTD = constrain(x_BTD, ("batch", "length", "embed"))
        return x_BTD, None


_REMAT_POLICIES = {
    "full": None,
    "save_dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class Transformer(nn.Module):
    """tokens_BT (int32) -> logits_BTV (float32).

    With ``decode=True`` (apply with ``mutable=["cache"]``) it runs on the KV cache described in
    the module docstring; ``lengths_B`` gives the valid tokens per row of a right-padded prefill.
    """

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, tokens_BT, *, train: bool = False, decode: bool = False, lengths_B=None):
        c = self.cfg
        b, t = tokens_BT.shape
        embed = Embed(layers.vocab_rows(c), c.d_model, c.init_std, c.dtype, name="embed")
        x_BTD = embed(tokens_BT)
        positions_BT = _cache_index(self, b, t, lengths_B) if decode else None
        if c.positions == "learned":
            pos_TD = layers.param(self, "pos_embed", layers.normal(c.init_std), (c.context, c.d_model),
                                  (None, "embed"))
            pos = pos_TD[:t] if positions_BT is None else jnp.take(pos_TD, positions_BT, axis=0)
            x_BTD = x_BTD + pos.astype(x_BTD.dtype)
        elif c.positions == "sinusoidal":
            x_BTD = x_BTD * jnp.sqrt(float(c.d_model)).astype(x_BTD.dtype)
            if positions_BT is None:
                x_BTD = x_BTD + layers.sinusoidal_table(t, c.d_model).astype(x_BTD.dtype)
            else:
                table_SD = layers.sinusoidal_table(c.context, c.d_model)
                x_BTD = x_BTD + jnp.take(table_SD, positions_BT, axis=0).astype(x_BTD.dtype)
        x_BTD = nn.Dropout(c.dropout, deterministic=not train)(x_BTD)
        x_BTD = constrain(x_BTD, ("batch", "length", "embed"))

        block = Block
        if c.remat != "none" and not decode:  # decoding takes no gradients
            block = nn.remat(Block, policy=_REMAT_POLICIES[c.remat], static_argnums=())
        if c.scan_layers:
            stack = nn.scan(block, variable_axes={"params": 0, "intermediates": 0, "cache": 0},
                            split_rngs={"params": True, "dropout": True}, length=c.n_layers,
                            in_axes=nn.broadcast, metadata_params={nn.PARTITION_NAME: "layers"})
            x_BTD, _ = stack(c, train, decode, name="layers")(x_BTD, lengths_B)
        else:
            for i in range(c.n_layers):
                x_BTD, _ = block(c, train, decode, name=f"layer_{i}")(x_BTD, lengths_B)
        x_BTD = Norm(c.norm, c.use_bias, name="norm_out")(x_BTD)
        if c.tied_embeddings:
            logits_BTV = embed.attend(x_BTD)
        else:
            logits_BTV = Dense((layers.vocab_rows(c),), ("embed", "vocab"), use_bias=c.use_bias,
                               init_std=c.init_std, name="unembed")(x_BTD.astype(jnp.float32))
        return layers.real_vocab_logits(logits_BTV, c.vocab_size)


def param_counts(c: TransformerConfig) -> dict[str, int]:
    d, f, v, bias = c.d_model, c.ff, layers.vocab_rows(c), c.use_bias
    attn = d * 3 * d + (3 * d if bias else 0) + d * d + (d if bias else 0)
    n_in = 2 if c.activation == "swiglu" else 1
    mlp = n_in * (d * f + (f if bias else 0)) + f * d + (d if bias else 0)
    norm = layers.norm_param_count(c.norm, bias, d)
    per_layer = attn + mlp + 2 * norm
    non_embedding = c.n_layers * per_layer + norm
    embedding = v * d + (c.context * d if c.positions == "learned" else 0)
    embedding += layers.output_head_params(d, v, c.tied_embeddings, bias)
    return {"total": embedding + non_embedding, "embedding": embedding, "non_embedding": non_embedding}


def flops_per_token(c: TransformerConfig) -> float:
    """Training FLOPs per token: 3 x forward (backward = 2 x forward).

    Forward counts dense matmuls only: 2 x (matmul weights of all layers) + 2 D V for the logits
    + 4 T D per layer for attention scores and values. Causal attention is NOT halved: the full
    T x T score matrix is computed (and counted by XLA). Norms, softmax, activations and the
    optimizer update are left out (a few percent at these sizes).
    """
    d, f = c.d_model, c.ff
    n_in = 2 if c.activation == "swiglu" else 1
    matmul_per_layer = 4 * d * d + (n_in + 1) * d * f
    forward = 2 * c.n_layers * matmul_per_layer + 2 * d * layers.vocab_rows(c) + 4 * c.n_layers * c.context * d
    return 3.0 * forward
