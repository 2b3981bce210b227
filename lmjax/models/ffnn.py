"""Bengio et al. (2003) feed-forward neural language model, a pure flax.linen module.

Shapes in names: B batch, T time, W window, D d_embed, H d_hidden, V vocab, L hidden layers,
P width fed to the softmax (D with the automatic projection, else H).

For every position t the model reads the W tokens tokens_BT[:, t-W+1 : t+1] (the current token and
the W-1 before it; ``window`` = n - 1 of an n-gram model) and predicts the token after tokens_BT[:, t],
the same next-token contract as the Transformer:

    x_BTWD = the W shared embeddings of the window, x_BTWD[:, t, k] = E[tokens_BT[:, t - W + 1 + k]]
    h = tanh(x_BT(WD) @ K_1[W, D, H] + d_1);  h = tanh(h @ K_l[H, H] + d_l) for l = 2..L
    logits_BTV = (h @ Proj[H, D]) @ E^T  (tied)   or   h @ U[P, V]  (untied)
                 + x_BT(WD) @ Direct[W, D, V]  (with ``direct``: Bengio's input-to-output matrix)

Decisions:
- Padding. Window slots before the start of the T-token input (k < W-1-t) hold a dedicated,
  learned pad embedding pad_D (one vector shared by all slots, counted as an embedding parameter),
  not zeros: a zero vector would make "no token here" look like an input with no signal, while a
  learned vector lets the model tell the window start apart. Every window therefore has W slots, so
  each position costs the same FLOPs.
- Projection and tying. Tied output needs the last hidden width to be D: with d_hidden != d_embed a
  linear projection H -> D (no bias, non-embedding) is added automatically; untied output reads h
  directly (U is P x V with P = H).
- No output bias (Bengio's b) and no bias on the projection, as in the Transformer with use_bias=False;
  each tanh layer has its bias d_l.
- Dropout on the concatenated window embeddings and after every tanh layer.
- Initialization: the embedding table, pad vector, untied head and direct matrix ~ N(0, init_std^2);
  hidden kernels and the projection ~ N(0, 1 / fan_in); biases 0.
- Logical axes: the window axis is None, the contracted model dim ``embed``, the hidden dim ``mlp``:
  K_1 (None, embed, mlp), K_l (embed, mlp), d (mlp,), Proj (mlp, embed), U (embed, vocab),
  Direct (None, embed, vocab), pad (embed,).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from lmjax.errors import ConfigError
from lmjax.models import layers
from lmjax.models.layers import Dense, Embed, constrain


@dataclasses.dataclass(frozen=True)
class FFNNConfig:
    family: str = "ffnn"
    vocab_size: int = 0  # 0: set from the tokenizer when the run starts
    vocab_multiple: int = 1  # pad the vocab tables to a multiple (sharding, matmul tiles); see layers.vocab_rows
    context: int = 64  # T: training window (positions per example)
    window: int = 4  # W = n - 1: tokens each prediction reads (the current one and W - 1 before it)
    d_embed: int = 64
    d_hidden: int = 256
    n_layers: int = 1  # tanh hidden layers
    direct: bool = False  # Bengio's direct input-to-output connections
    tied_embeddings: bool = False  # Bengio's model is untied
    dropout: float = 0.0
    init_std: float = 0.02  # tables (embedding, pad, untied head, direct); hidden kernels 1/sqrt(fan_in)
    dtype: str = "float32"  # compute dtype; parameters and logits stay float32

    @property
    def has_proj(self) -> bool:
        return self.tied_embeddings and self.d_hidden != self.d_embed

    @property
    def d_out(self) -> int:
        """P: the width the softmax reads."""
        return self.d_embed if self.tied_embeddings else self.d_hidden

    def validate(self) -> None:
        if self.family != "ffnn":
            raise ConfigError(f"model.family={self.family!r} is not 'ffnn'")
        for name in ("context", "window", "d_embed", "d_hidden", "n_layers"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be > 0, got {getattr(self, name)}")
        layers.check_vocab(self)
        if self.window > self.context:
            raise ConfigError(f"model.window={self.window} is longer than model.context={self.context}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if not self.init_std > 0:
            raise ConfigError(f"model.init_std must be > 0, got {self.init_std}")
        layers.dtype_of(self.dtype)


def windows(x_BTD, pad_D, w: int):
    """x_BTWD[:, t, k] = x_BTD[:, t - w + 1 + k], or pad_D where that index is < 0."""
    b, t, d = x_BTD.shape
    pad_BWD = jnp.broadcast_to(pad_D.astype(x_BTD.dtype), (b, w - 1, d))
    padded_BSD = jnp.concatenate([pad_BWD, x_BTD], axis=1)  # S = T + W - 1
    return jnp.stack([padded_BSD[:, k:k + t] for k in range(w)], axis=2)


class FFNN(nn.Module):
    """tokens_BT (int32) -> logits_BTV (float32); position t sees tokens t-W+1..t only."""

    cfg: FFNNConfig

    @nn.compact
    def __call__(self, tokens_BT, *, train: bool = False):
        c = self.cfg
        drop = nn.Dropout(c.dropout, deterministic=not train)
        embed = Embed(layers.vocab_rows(c), c.d_embed, c.init_std, c.dtype, name="embed")
        x_BTD = constrain(embed(tokens_BT), ("batch", "length", "embed"))
        pad_D = layers.param(self, "pad_embed", layers.normal(c.init_std), (c.d_embed,), ("embed",))
        x_BTWD = drop(windows(x_BTD, pad_D, c.window))
        fan_in = c.window * c.d_embed
        h = Dense((c.d_hidden,), (None, "embed", "mlp"), n_in=2, use_bias=True, init_std=fan_in ** -0.5,
                  dtype=c.dtype, name="hidden_0")(x_BTWD)
        h = constrain(drop(jnp.tanh(h)), ("batch", "length", "mlp"))
        for i in range(1, c.n_layers):
            h = Dense((c.d_hidden,), ("embed", "mlp"), use_bias=True, init_std=c.d_hidden ** -0.5,
                      dtype=c.dtype, name=f"hidden_{i}")(h)
            h = constrain(drop(jnp.tanh(h)), ("batch", "length", "mlp"))
        if c.has_proj:
            h = Dense((c.d_embed,), ("mlp", "embed"), init_std=c.d_hidden ** -0.5, dtype=c.dtype, name="proj")(h)
            h = constrain(h, ("batch", "length", "embed"))
        if c.tied_embeddings:
            logits_BTV = embed.attend(h)
        else:
            logits_BTV = Dense((layers.vocab_rows(c),), ("embed", "vocab"), init_std=c.init_std,
                               name="unembed")(h.astype(jnp.float32))
        if c.direct:
            logits_BTV = logits_BTV + Dense((layers.vocab_rows(c),), (None, "embed", "vocab"), n_in=2,
                                            init_std=c.init_std, name="direct")(x_BTWD.astype(jnp.float32))
        return layers.real_vocab_logits(logits_BTV, c.vocab_size)


def param_counts(c: FFNNConfig) -> dict[str, int]:
    """Exact counts. Embedding = token table + pad vector + untied head + direct matrix (all
    vocab-sized tables or their padding row); hidden layers and the projection are non-embedding."""
    w, d, h, v = c.window, c.d_embed, c.d_hidden, layers.vocab_rows(c)
    non_embedding = w * d * h + h + (c.n_layers - 1) * (h * h + h)
    non_embedding += h * d if c.has_proj else 0
    embedding = v * d + d + layers.output_head_params(c.d_out, v, c.tied_embeddings, use_bias=False)
    embedding += w * d * v if c.direct else 0
    return {"total": embedding + non_embedding, "embedding": embedding, "non_embedding": non_embedding}


def flops_per_token(c: FFNNConfig) -> float:
    """Training FLOPs per token: 3 x forward (backward = 2 x forward).

    Forward counts dense matmuls only, 2 FLOPs per multiply-add: the first hidden layer 2 W D H
    (padded slots included: every window has W slots), the other layers 2 H H each, the projection
    2 H D, the logits 2 P V and the direct connections 2 W D V. tanh, biases, dropout, the window
    gather, the softmax and the optimizer are left out.
    """
    w, d, h, v = c.window, c.d_embed, c.d_hidden, layers.vocab_rows(c)
    forward = 2 * w * d * h + 2 * (c.n_layers - 1) * h * h
    forward += 2 * h * d if c.has_proj else 0
    forward += 2 * c.d_out * v
    forward += 2 * w * d * v if c.direct else 0
    return 3.0 * forward
