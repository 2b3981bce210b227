"""Scoring text under a model: the chain rule, token by token.

    log p(x_s..x_L | x_1..x_{s-1}) = sum_{t=s..L} log p(x_t | x_<t)

lmjax's models have no BOS token, so the first token of a text is only conditioned on: `score`
returns log p(x_2..x_L | x_1), or, with ``context``, log p(text | context) for every token of the
text. Units: ``*_nats`` (natural log), bits per byte over the UTF-8 bytes of the scored tokens.

Each token is conditioned on what the model sees when it generates (lmjax.generate):
- Transformer: the last ``context`` tokens. A text longer than the context is scored in windows of
  ``context`` inputs advanced by ``stride`` tokens; each window scores only the targets the previous
  one did not. The default stride 1 is exact (every token sees min(t, context) tokens, as in
  sampling); a larger stride is faster and conditions each token on at least context - stride tokens.
- Feed-forward LM: its ``window`` tokens; the default stride (context - window + 1) is exact.
- Recurrent: the whole text, carrying the state across chunks of ``context`` tokens (exact).
- N-gram: the last order - 1 tokens (exact).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import numpy as np

from lmjax import metrics, models
from lmjax.errors import ConfigError
from lmjax.generate import RECURRENT, ModelBundle, check_ids, generate

_MAX_WINDOWS = 32  # windows per forward pass when scoring with a window model


@dataclasses.dataclass(frozen=True)
class Score:
    """Per-token conditional log-probabilities of tokens[start:] and their summaries."""

    tokens: np.ndarray  # all token ids: context (or the first token) + scored tokens
    start: int  # index of the first scored token
    logprobs_nats: np.ndarray  # log p(tokens[t] | tokens[:t]) for t = start..L-1, float64
    pieces: list[str] | None = None  # the text of each scored token (with a tokenizer)
    n_bytes: int | None = None  # UTF-8 bytes of the scored text (with a tokenizer)

    @property
    def scored_tokens(self) -> np.ndarray:
        return self.tokens[self.start:]

    @property
    def n_scored(self) -> int:
        return int(self.logprobs_nats.size)

    @property
    def probs(self) -> np.ndarray:
        return np.exp(self.logprobs_nats)

    @property
    def total_logprob_nats(self) -> float:
        return float(self.logprobs_nats.sum())

    @property
    def cross_entropy_nats(self) -> float:
        """Mean negative log-probability per scored token."""
        return -self.total_logprob_nats / self.n_scored

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.cross_entropy_nats, 700.0))

    @property
    def bits_per_byte(self) -> float | None:
        if not self.n_bytes:
            return None
        return -self.total_logprob_nats / math.log(2) / self.n_bytes

    def to_dict(self) -> dict:
        rows = []
        for i, (tok, lp) in enumerate(zip(self.scored_tokens.tolist(), self.logprobs_nats.tolist())):
            row = {"position": self.start + i, "id": tok, "logprob_nats": lp, "prob": math.exp(lp)}
            if self.pieces is not None:
                row["token"] = self.pieces[i]
            rows.append(row)
        return {"n_tokens": int(self.tokens.size), "n_scored": self.n_scored, "start": self.start,
                "total_logprob_nats": self.total_logprob_nats, "cross_entropy_nats": self.cross_entropy_nats,
                "perplexity": self.perplexity, "bits_per_byte": self.bits_per_byte, "n_bytes": self.n_bytes,
                "tokens": rows}


# ----------------------------------------------------------------------------------------------
# Per-family log-probabilities.


@functools.lru_cache(maxsize=32)
def _window_fn(cfg):
    model = models.build(cfg)

    def fn(params, x_WC, y_WC):
        return metrics.token_logprobs(model.apply({"params": params}, x_WC), y_WC)

    return jax.jit(fn)


@functools.lru_cache(maxsize=32)
def _chunk_fn(cfg):
    model = models.build(cfg)

    def fn(params, x_1C, y_1C, carry):
        logits, carry = model.apply({"params": params}, x_1C, carry=carry, return_carry=True)
        return metrics.token_logprobs(logits, y_1C), carry

    return jax.jit(fn)


def _default_stride(cfg) -> int:
    return cfg.context - cfg.window + 1 if cfg.family == "ffnn" else 1


def _windowed_logprobs(bundle: ModelBundle, ids: np.ndarray, stride: int) -> np.ndarray:
    """log p(ids[t] | window) for t = 1..L-1 with windows of ``context`` inputs every ``stride``."""
    c = bundle.model_cfg.context
    n_targets = ids.size - 1
    t = np.arange(1, ids.size)
    # Target t goes to the first window whose inputs reach t - 1: window j covers targets a_j+1 .. a_j+c.
    win = np.where(t <= c, 0, -(-(t - c) // stride))
    n_win = int(win[-1]) + 1
    starts = np.arange(n_win) * stride
    padded = np.zeros(starts[-1] + c + 1, np.int32)
    padded[:ids.size] = ids
    idx = starts[:, None] + np.arange(c)[None, :]
    x_WC, y_WC = padded[idx], padded[idx + 1]
    fn = _window_fn(bundle.model_cfg)
    out = []
    for lo in range(0, n_win, _MAX_WINDOWS):
        x, y = x_WC[lo:lo + _MAX_WINDOWS], y_WC[lo:lo + _MAX_WINDOWS]
        rows = 1 << max(0, (len(x) - 1).bit_length())  # pad to a power of two: few compiled shapes
        x = np.pad(x, ((0, rows - len(x)), (0, 0)))
        y = np.pad(y, ((0, rows - len(y)), (0, 0)))
        out.append(np.asarray(fn(bundle.params, x, y))[:min(_MAX_WINDOWS, n_win - lo)])
    logp_WC = np.concatenate(out)
    assert logp_WC.shape[0] == n_win and n_targets == t.size
    return logp_WC[win, t - 1 - starts[win]].astype(np.float64)


def _recurrent_logprobs(bundle: ModelBundle, ids: np.ndarray) -> np.ndarray:
    from lmjax.models.recurrent import initial_carry

    cfg = bundle.model_cfg
    c = cfg.context
    n = ids.size - 1
    n_chunks = -(-n // c)
    padded = np.zeros(n_chunks * c + 1, np.int32)
    padded[:ids.size] = ids
    fn = _chunk_fn(cfg)
    carry = initial_carry(cfg, 1)
    out = []
    for k in range(n_chunks):
        x, y = padded[None, k * c:(k + 1) * c], padded[None, k * c + 1:(k + 1) * c + 1]
        lp, carry = fn(bundle.params, x, y, carry)
        out.append(np.asarray(lp)[0])
    return np.concatenate(out)[:n].astype(np.float64)


def token_logprobs(bundle: ModelBundle, tokens, *, start: int = 1, stride: int | None = None) -> np.ndarray:
    """log p(tokens[t] | tokens[:t]) in nats for t = start..L-1 (float64), as the model sees them.

    ``start`` >= 1 (the first token has no prediction). ``stride``: see the module docstring
    (Transformer and feed-forward LM only; None is exact).
    """
    ids = check_ids(tokens, bundle.vocab_size, "tokens")
    if isinstance(start, bool) or not isinstance(start, int) or not 1 <= start <= ids.size - 1:
        raise ConfigError(f"start must be an int in [1, {ids.size - 1}] for {ids.size} tokens "
                          f"(at least 2 tokens are needed: the first is only conditioned on), got {start!r}")
    cfg = bundle.model_cfg
    if stride is not None:
        if bundle.family not in ("transformer", "ffnn"):
            raise ConfigError(f"stride applies to window models (transformer, ffnn), not {bundle.family!r}")
        if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= cfg.context:
            raise ConfigError(f"stride must be an int in [1, context = {cfg.context}], got {stride!r}")
    if bundle.family == "ngram":
        return bundle.ngram.sequence_logprobs(ids.astype(np.int64), start=start)
    if bundle.family in RECURRENT:
        return _recurrent_logprobs(bundle, ids)[start - 1:]
    return _windowed_logprobs(bundle, ids, stride or _default_stride(cfg))[start - 1:]


def score(bundle: ModelBundle, text, *, context=None, stride: int | None = None) -> Score:
    """Score ``text`` (a string with the bundle's tokenizer, or token ids).

    Without ``context`` the first token is conditioned on and the rest scored; with ``context``
    (string or ids, at least one token) every token of ``text`` is scored given the context.
    """
    text_ids = bundle.encode(text, "text") if isinstance(text, str) else check_ids(text, bundle.vocab_size, "text")
    if context is None:
        ids, start = text_ids, 1
        if ids.size < 2:
            raise ConfigError(f"text has {ids.size} token(s); scoring needs at least 2 "
                              "(the first token is only conditioned on), or pass a context")
    else:
        ctx = bundle.encode(context, "context") if isinstance(context, str) else check_ids(
            context, bundle.vocab_size, "context")
        if ctx.size == 0 or text_ids.size == 0:
            raise ConfigError("context and text need at least one token each")
        ids, start = np.concatenate([ctx, text_ids]).astype(np.int32), ctx.size
    logprobs = token_logprobs(bundle, ids, start=start, stride=stride)
    pieces = n_bytes = None
    if bundle.tokenizer is not None:
        scored = ids[start:]
        pieces = [bundle.decode(scored[i:i + 1]) for i in range(scored.size)]
        n_bytes = len(bundle.decode(scored).encode("utf-8"))
    return Score(ids, start, logprobs, pieces, n_bytes)


def next_token_logprobs(bundle: ModelBundle, prompt) -> np.ndarray:
    """(V,) log p(next token | prompt) in nats, float64, as generate() sees it."""
    g = generate(bundle, [prompt] if not isinstance(prompt, str) else prompt, 1, 0, temperature=0,
                 return_logits=True)
    logits = np.asarray(g.logits_BMV[0, 0], np.float64)
    return logits - np.logaddexp.reduce(logits)


def loss_by_position(bundle: ModelBundle, windows_BT) -> np.ndarray:
    """Mean loss (nats) at each position of (B, T) windows: entry t is -log p(x_{t+1} | x_0..x_t)
    within the window (T - 1 values, the zero state / no context before the window start)."""
    x = np.asarray(windows_BT)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ConfigError(f"windows must be a (B, T) array with T >= 2, got shape {x.shape}")
    check_ids(x.reshape(-1), bundle.vocab_size, "windows")
    if bundle.family == "ngram":
        return -bundle.ngram.window_logprobs(x.astype(np.int64)).mean(0)
    if x.shape[1] - 1 > bundle.model_cfg.context and bundle.family == "transformer":
        raise ConfigError(f"windows of {x.shape[1]} tokens exceed the context + 1 ({bundle.model_cfg.context + 1})")
    fn = _window_fn(bundle.model_cfg)
    return -np.asarray(fn(bundle.params, x[:, :-1].astype(np.int32), x[:, 1:].astype(np.int32))).mean(0)
