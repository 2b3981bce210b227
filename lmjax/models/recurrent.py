"""Recurrent language models: Elman RNN (tanh), GRU and LSTM, one pure flax.linen module.

Shapes in names: B batch, T time, V vocab, D d_embed, H d_hidden, G gates (RNN 1, GRU 3, LSTM 4),
P width fed to the softmax (d_proj, or the automatic projection, or H), L layers.

    tokens_BT -> Embed -> [dropout -> cell layer (-> LayerNorm)] x L -> dropout
              -> (projection H -> P) -> tied (E^T) or untied softmax -> logits_BTV (float32)

Each cell layer computes the input part of all gate pre-activations for the whole window with one
matmul (x_BTD @ W_in[D, G, H] + b[G, H]) and then runs only the recurrent matmul h @ W_rec[H, G, H]
sequentially with ``jax.lax.scan``. Gate order and equations (sigma = logistic sigmoid):

    rnn  (G=1):  h' = tanh(a)                                   a = x W_in + b + h W_rec
    gru  (G=3):  r = sigma(a_r), z = sigma(a_z)                 a_g = x W_in[:, g] + b[g]   (g = r, z, n)
                 n = tanh(a_n + r * (h W_rec[:, n]))                  (+ h W_rec[:, g] for g = r, z)
                 h' = (1 - z) * n + z * h
    lstm (G=4):  i = sigma(a_i), f = sigma(a_f + forget_bias), g = tanh(a_g), o = sigma(a_o)
                 c' = f * c + i * g,  h' = o * tanh(c')

The GRU applies the reset gate after the recurrent matmul (the cuDNN / PyTorch form without the
second bias), so all three recurrent gate matmuls are one fused matmul. The LSTM forget bias is a
constant added to the forget pre-activation (Jozefowicz et al. 2015, TensorFlow's BasicLSTMCell),
not an initial value of b, so weight decay cannot erode it.

Decisions:
- Projection and tying. ``d_proj > 0`` adds a linear projection H -> d_proj (no bias) before the
  softmax; tying then needs d_proj == d_embed (else ConfigError). With ``d_proj == 0``, a tied model
  whose d_hidden != d_embed gets an automatic linear projection H -> D (counted, like d_proj, as a
  non-embedding parameter); an untied model feeds h straight to its V x H head.
- Dropout (Zaremba et al. 2014) on non-recurrent connections only: the input of every layer and
  the output of the last layer; never on the recurrent state.
- ``layer_norm`` normalizes each layer's output sequence (LayerNorm, scale only, statistics in
  float32) before it feeds the next layer or the head. It does not normalize inside the
  recurrence (Ba et al. 2016 is not implemented).
- State: zero at the start of every window unless ``carry`` is given. The carry (see
  ``initial_carry``) is a tuple with one dict per layer, ``{"h": h_BH}`` (plus ``"c": c_BH`` for the
  LSTM), always float32. For truncated backprop through time across windows, pass
  ``jax.lax.stop_gradient(carry)``.
- Initialization: an untied head (and a tied table) ~ N(0, init_std^2), an untied input table ~
  N(0, embed_init_std^2) (1.0: inputs of unit scale, as PyTorch / Flax embeddings); the cell kernels and
  the projection ~ N(0, 1 / fan_in) (LeCun normal, a fan-in scale suits tanh/sigmoid cells); biases 0.
- Logical axes: the dimension a kernel contracts is ``embed`` (FSDP axis), the recurrent state
  dimension it produces is ``hidden``, the gate axis is None: W_in and W_rec (embed, None, hidden),
  b (None, hidden), projection (hidden, embed), untied head (embed, vocab).
- ``scan_unroll`` is passed to ``jax.lax.scan``: 1 keeps a rolled loop (fast compile); a value
  >= context unrolls the window fully (faster steps for small H, and the only form whose FLOPs
  XLA's cost analysis counts in full: it counts a while-loop body once).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.errors import ConfigError
from lmjax.models import layers
from lmjax.models.layers import Dense, Embed, constrain

N_GATES = {"rnn": 1, "gru": 3, "lstm": 4}


@dataclasses.dataclass(frozen=True)
class RecurrentConfig:
    family: str = "lstm"  # lstm | gru | rnn
    vocab_size: int = 0  # 0: set from the tokenizer when the run starts
    vocab_multiple: int = 1  # pad the vocab tables to a multiple (sharding, matmul tiles); see layers.vocab_rows
    context: int = 64  # T: training window (backprop through time covers one window)
    d_embed: int = 128
    d_hidden: int = 128
    n_layers: int = 2
    dropout: float = 0.0  # between layers (and on the embeddings and the last layer's output)
    forget_bias: float = 1.0  # LSTM only: constant added to the forget-gate pre-activation
    layer_norm: bool = False  # LayerNorm on each layer's output
    d_proj: int = 0  # > 0: linear projection H -> d_proj before the softmax
    tied_embeddings: bool = True
    init_std: float = 0.02  # untied head, and the embedding table when tied; cell kernels use 1/sqrt(fan_in)
    embed_init_std: float = 1.0  # an untied input embedding table (as PyTorch / Flax embeddings)
    dtype: str = "float32"  # compute dtype of the matmuls; parameters, state and logits stay float32
    scan_unroll: int = 1  # jax.lax.scan unroll; >= context unrolls the window fully

    @property
    def n_gates(self) -> int:
        return N_GATES[self.family]

    @property
    def has_proj(self) -> bool:
        """Whether a projection sits between the last layer and the softmax."""
        return self.d_proj > 0 or (self.tied_embeddings and self.d_hidden != self.d_embed)

    @property
    def d_out(self) -> int:
        """P: the width the softmax reads."""
        if self.d_proj > 0:
            return self.d_proj
        return self.d_embed if self.tied_embeddings else self.d_hidden

    def validate(self) -> None:
        if self.family not in N_GATES:
            raise ConfigError(f"model.family={self.family!r} is not a recurrent family; valid: lstm, gru, rnn")
        for name in ("context", "d_embed", "d_hidden", "n_layers", "scan_unroll"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be > 0, got {getattr(self, name)}")
        layers.check_vocab(self)
        if self.d_proj < 0:
            raise ConfigError(f"model.d_proj must be >= 0, got {self.d_proj}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.tied_embeddings and self.d_proj > 0 and self.d_proj != self.d_embed:
            raise ConfigError(f"tied embeddings need model.d_proj == model.d_embed (or d_proj=0), "
                              f"got d_proj={self.d_proj}, d_embed={self.d_embed}")
        if not math.isfinite(self.forget_bias) or not self.init_std > 0 or not self.embed_init_std > 0:
            raise ConfigError("model.forget_bias must be finite and model.init_std, model.embed_init_std > 0")
        layers.dtype_of(self.dtype)


def initial_carry(cfg: RecurrentConfig, batch_size: int) -> tuple[dict, ...]:
    """The zero state: one dict per layer, {"h": h_BH} (and "c": c_BH for the LSTM), float32."""
    zeros_BH = jnp.zeros((batch_size, cfg.d_hidden), jnp.float32)
    keys = ("h", "c") if cfg.family == "lstm" else ("h",)
    return tuple({k: zeros_BH for k in keys} for _ in range(cfg.n_layers))


def _recurrent(h_BH, w_HGH):
    """h @ W_rec for all gates, in W_rec's (compute) dtype, result float32.

    One 2-D matmul (B, H) @ (H, G H), as layers.Dense does: XLA:CPU runs dots with several
    contracting or output dims (and their weight gradients) far slower.
    """
    h, g, k = w_HGH.shape
    out_BF = h_BH.astype(w_HGH.dtype) @ w_HGH.reshape(h, g * k)
    return out_BF.reshape(h_BH.shape[0], g, k).astype(jnp.float32)


def _rnn_step(w_HGH, forget_bias, state, xw_BGH):
    del forget_bias
    h_BH = jnp.tanh(xw_BGH[:, 0] + _recurrent(state["h"], w_HGH)[:, 0])
    return {"h": h_BH}, h_BH


def _gru_step(w_HGH, forget_bias, state, xw_BGH):
    del forget_bias
    h_BH = state["h"]
    hw_BGH = _recurrent(h_BH, w_HGH)
    r_BH = jax.nn.sigmoid(xw_BGH[:, 0] + hw_BGH[:, 0])
    z_BH = jax.nn.sigmoid(xw_BGH[:, 1] + hw_BGH[:, 1])
    n_BH = jnp.tanh(xw_BGH[:, 2] + r_BH * hw_BGH[:, 2])
    h_BH = (1.0 - z_BH) * n_BH + z_BH * h_BH
    return {"h": h_BH}, h_BH


def _lstm_step(w_HGH, forget_bias, state, xw_BGH):
    a_BGH = xw_BGH + _recurrent(state["h"], w_HGH)
    i_BH = jax.nn.sigmoid(a_BGH[:, 0])
    f_BH = jax.nn.sigmoid(a_BGH[:, 1] + forget_bias)
    g_BH = jnp.tanh(a_BGH[:, 2])
    o_BH = jax.nn.sigmoid(a_BGH[:, 3])
    c_BH = f_BH * state["c"] + i_BH * g_BH
    h_BH = o_BH * jnp.tanh(c_BH)
    return {"h": h_BH, "c": c_BH}, h_BH


_STEPS = {"rnn": _rnn_step, "gru": _gru_step, "lstm": _lstm_step}


class HiddenNorm(nn.Module):
    """LayerNorm over the state dim (scale only, float32 statistics); its scale is on ``hidden``."""

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x_BTH):
        x32 = x_BTH.astype(jnp.float32)
        x32 = x32 - x32.mean(-1, keepdims=True)
        y = x32 * jax.lax.rsqrt((x32 * x32).mean(-1, keepdims=True) + self.eps)
        y = y * layers.param(self, "scale", nn.initializers.ones, (x_BTH.shape[-1],), ("hidden",))
        return y.astype(x_BTH.dtype)


class RecurrentLayer(nn.Module):
    """One cell run over the window: (x_BTD, state) -> (h_BTH, final state)."""

    cfg: RecurrentConfig

    @nn.compact
    def __call__(self, x_BTD, state):
        c = self.cfg
        g, h = c.n_gates, c.d_hidden
        d_in = x_BTD.shape[-1]
        xw_BTGH = Dense((g, h), ("embed", None, "hidden"), use_bias=True, init_std=d_in ** -0.5,
                        dtype=c.dtype, name="input")(x_BTD).astype(jnp.float32)
        w_HGH = layers.param(self, "recurrent_kernel", layers.normal(h ** -0.5), (h, g, h),
                             ("embed", None, "hidden"))
        step = functools.partial(_STEPS[c.family], w_HGH.astype(layers.dtype_of(c.dtype)), c.forget_bias)
        state, h_TBH = jax.lax.scan(step, state, jnp.swapaxes(xw_BTGH, 0, 1), unroll=c.scan_unroll)
        return jnp.swapaxes(h_TBH, 0, 1).astype(layers.dtype_of(c.dtype)), state


class RecurrentLM(nn.Module):
    """tokens_BT (int32) -> logits_BTV (float32); with return_carry, (logits_BTV, final carry)."""

    cfg: RecurrentConfig

    @nn.compact
    def __call__(self, tokens_BT, *, train: bool = False, carry=None, return_carry: bool = False):
        c = self.cfg
        if carry is None:
            carry = initial_carry(c, tokens_BT.shape[0])
        if len(carry) != c.n_layers:
            raise ConfigError(f"carry has {len(carry)} layers, the model has {c.n_layers}")
        embed_std = c.init_std if c.tied_embeddings else c.embed_init_std
        embed = Embed(layers.vocab_rows(c), c.d_embed, embed_std, c.dtype, name="embed")
        drop = nn.Dropout(c.dropout, deterministic=not train)
        x = constrain(embed(tokens_BT), ("batch", "length", "embed"))
        final = []
        for i in range(c.n_layers):
            x, state = RecurrentLayer(c, name=f"layer_{i}")(drop(x), carry[i])
            if c.layer_norm:
                x = HiddenNorm(name=f"norm_{i}")(x)
            x = constrain(x, ("batch", "length", "hidden"))
            final.append(state)
        x = drop(x)
        if c.has_proj:
            x = Dense((c.d_out,), ("hidden", "embed"), init_std=c.d_hidden ** -0.5, dtype=c.dtype,
                      name="proj")(x)
            x = constrain(x, ("batch", "length", "embed"))
        if c.tied_embeddings:
            logits_BTV = embed.attend(x)
        else:
            logits_BTV = Dense((layers.vocab_rows(c),), ("embed", "vocab"), init_std=c.init_std,
                               name="unembed")(x.astype(jnp.float32))
        logits_BTV = layers.real_vocab_logits(logits_BTV, c.vocab_size)
        return (logits_BTV, tuple(final)) if return_carry else logits_BTV


def _layer_inputs(c: RecurrentConfig) -> list[int]:
    return [c.d_embed] + [c.d_hidden] * (c.n_layers - 1)


def param_counts(c: RecurrentConfig) -> dict[str, int]:
    """Exact counts. Embedding = token table + untied head; the projection is non-embedding."""
    g, h, p, v = c.n_gates, c.d_hidden, c.d_out, layers.vocab_rows(c)
    non_embedding = sum(d_in * g * h + h * g * h + g * h for d_in in _layer_inputs(c))
    non_embedding += c.n_layers * h if c.layer_norm else 0
    non_embedding += h * p if c.has_proj else 0
    embedding = v * c.d_embed + layers.output_head_params(p, v, c.tied_embeddings, use_bias=False)
    return {"total": embedding + non_embedding, "embedding": embedding, "non_embedding": non_embedding}


def flops_per_token(c: RecurrentConfig) -> float:
    """Training FLOPs per token: 3 x forward (backward = 2 x forward).

    Forward counts dense matmuls only, 2 FLOPs per multiply-add: per layer the input matmul
    2 D_in G H and the recurrent matmul 2 H G H (run at every step, the first one on the initial
    state too), the projection 2 H P, and the logits 2 P V. Gate nonlinearities, the elementwise
    state update, biases, LayerNorm, dropout, the softmax and the optimizer are left out (a few
    percent when H and V are in the hundreds; the elementwise terms grow as G H, the matmuls as G H^2),
    and so is the sum over time of the per-step W_rec gradients (G H^2 per step and layer for the
    whole batch, i.e. G H^2 / B per token). The backward pass includes the gradient into the initial
    state (one recurrent matmul per layer and window, which XLA drops when the carry is a constant).
    """
    g, h = c.n_gates, c.d_hidden
    forward = sum(2 * d_in * g * h + 2 * h * g * h for d_in in _layer_inputs(c))
    forward += 2 * h * c.d_out if c.has_proj else 0
    forward += 2 * c.d_out * layers.vocab_rows(c)
    return 3.0 * forward
