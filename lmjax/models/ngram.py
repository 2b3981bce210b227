"""Interpolated modified Kneser-Ney n-gram LM (Chen & Goodman 1998), counted with numpy.

Not trained by gradient descent: `NGramLM.fit` counts a 1-D array of token ids once.

The model, for order n and vocabulary size V, level k = 1..n (a k-gram is a context h of k-1
tokens followed by a word w):

    p_k(w | h) = max(c_k(hw) - D_k(c_k(hw)), 0) / c_k(h.) + gamma_k(h) * p_{k-1}(w | h')
    gamma_k(h) = (D_k1 N1(h.) + D_k2 N2(h.) + D_k3+ N3+(h.)) / c_k(h.)
    p_0(w)     = 1 / V

where h' drops the first token of h, c_k(h.) = sum_w c_k(hw), and Nj(h.) is the number of words
w with c_k(hw) = j (N3+: >= 3). Counts c_k are raw counts at the top level k = n and
continuation counts below it: c_k(g) = N1+(.g), the number of distinct tokens seen right before g
in the corpus (the corpus start is not a token, so it adds nothing). A context with c_k(h.) = 0,
seen or not, backs off fully: gamma = 1, no discounted mass. Every token has p > 0.

Discounts per level from the count-of-counts n1..n4 of that level's counts c_k:

    Y = n1 / (n1 + 2 n2),  D1 = 1 - 2 Y n2/n1,  D2 = 2 - 3 Y n3/n2,  D3+ = 3 - 4 Y n4/n3

A discount whose formula divides by zero or is not > 0 falls back to KenLM's defaults
(0.5, 1.0, 1.5); this only matters on tiny corpora. D_j <= j always, so p stays normalized.

Scoring position i uses the context tokens[max(0, i-n+1):i]: near the start a shorter context
starts the recursion at a lower level (no invented BOS token).

Storage: level k keeps its distinct k-grams as sorted int64 keys, key = id_{k-1}(prefix) * V + w,
where id_{k-1} is the index of the (k-1)-gram prefix in level k-1's sorted keys (id_0 = 0). Keys
stay below (number of distinct (k-1)-grams) * V, so any order and vocabulary fit in int64;
lookups are np.searchsorted, and a context's continuations form one contiguous slice.
"""

from __future__ import annotations

import dataclasses
import numbers
import os

import numpy as np

from lmjax.errors import ConfigError

FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
_FORMAT = "lmjax.ngram.v1"


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class NGramConfig:
    family: str = "ngram"
    vocab_size: int = 0  # 0 = set from the tokenizer by the harness
    context: int = 64  # window length used by the harness for by-position eval; unused by counting
    order: int = 5

    def validate(self) -> None:
        if self.family != "ngram":
            raise ConfigError(f"NGramConfig.family must be 'ngram', got {self.family!r}")
        if not _is_int(self.order) or self.order < 1:
            raise ConfigError(f"ngram order must be an int >= 1, got {self.order!r}")
        if not _is_int(self.vocab_size) or self.vocab_size < 0:
            raise ConfigError(f"ngram vocab_size must be an int >= 0, got {self.vocab_size!r}")
        if not _is_int(self.context) or self.context <= 0:
            raise ConfigError(f"ngram context must be an int > 0, got {self.context!r}")


def modified_kn_discounts(counts: np.ndarray) -> np.ndarray:
    """(D1, D2, D3+) from the count-of-counts of `counts` (Chen & Goodman), with fallbacks."""
    counts = np.asarray(counts)
    n1, n2, n3, n4 = (int(np.count_nonzero(counts == j)) for j in (1, 2, 3, 4))
    y = n1 / (n1 + 2 * n2) if n1 + 2 * n2 > 0 else None
    estimates = [
        1 - 2 * y * n2 / n1 if y is not None and n1 > 0 else None,
        2 - 3 * y * n3 / n2 if y is not None and n2 > 0 else None,
        3 - 4 * y * n4 / n3 if y is not None and n3 > 0 else None,
    ]
    return np.array(
        [d if d is not None and d > 0 else fb for d, fb in zip(estimates, FALLBACK_DISCOUNTS)],
        dtype=np.float64,
    )


def _count(tokens: np.ndarray, V: int, order: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Sorted gram keys and KN counts (raw at the top level, continuation below) per level."""
    N = tokens.size
    keys, raw, first, ids = [], [], [], []
    prev_ids = np.zeros(N + 1, np.int64)  # id of the empty gram at every start position
    for k in range(1, order + 1):
        m = N - k + 1  # number of k-gram positions
        if m <= 0:
            keys.append(np.zeros(0, np.int64))
            raw.append(np.zeros(0, np.int64))
            first.append(np.zeros(0, np.int64))
            ids.append(np.zeros(0, np.int64))
            prev_ids = ids[-1]
            continue
        key = prev_ids[:m] * V + tokens[k - 1 :]
        uniq, first_pos, inv = np.unique(key, return_index=True, return_inverse=True)
        keys.append(uniq)
        raw.append(np.bincount(inv, minlength=uniq.size).astype(np.int64))
        first.append(first_pos)
        ids.append(inv.reshape(-1))
        prev_ids = ids[-1]
    counts = []
    for k in range(1, order + 1):
        if k == order:
            counts.append(raw[k - 1])
            continue
        # Each distinct (k+1)-gram at position i contributes one left extension to its suffix,
        # the k-gram at position i+1.
        suffix_ids = ids[k - 1][first[k] + 1]
        counts.append(np.bincount(suffix_ids, minlength=keys[k - 1].size).astype(np.int64))
    return keys, counts


class NGramLM:
    """A fitted interpolated modified Kneser-Ney model. Build with `fit` or `load`."""

    def __init__(self, cfg: NGramConfig, keys: list[np.ndarray], counts: list[np.ndarray]):
        cfg.validate()
        if cfg.vocab_size < 1:
            raise ConfigError("ngram vocab_size must be set (>= 1) before fitting")
        if len(keys) != cfg.order or len(counts) != cfg.order:
            raise ConfigError(f"ngram tables: expected {cfg.order} levels, got {len(keys)}")
        self.cfg = cfg
        self._keys = [np.asarray(k, np.int64) for k in keys]
        self._counts = [np.asarray(c, np.int64) for c in counts]
        self._derive()

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def fit(cls, tokens: np.ndarray, cfg: NGramConfig) -> NGramLM:
        cfg.validate()
        if cfg.vocab_size < 1:
            raise ConfigError("ngram vocab_size must be set (>= 1) before fitting")
        tokens = _check_tokens(tokens, cfg.vocab_size, "fit tokens", ndim=1)
        keys, counts = _count(tokens, cfg.vocab_size, cfg.order)
        return cls(cfg, keys, counts)

    def _derive(self) -> None:
        """Per level: discounts, alpha per gram (discounted count / total), gamma per context."""
        V = self.cfg.vocab_size
        self._alpha, self._gamma, disc = [], [], []
        for k in range(1, self.cfg.order + 1):
            keys, c = self._keys[k - 1], self._counts[k - 1]
            if keys.shape != c.shape:
                raise ConfigError(f"ngram tables: level {k} keys and counts differ in length")
            n_ctx = 1 if k == 1 else self._keys[k - 2].size
            prefix = keys // V
            d = modified_kn_discounts(c)
            d_c = np.select([c >= 3, c == 2, c == 1], [d[2], d[1], d[0]], 0.0)
            total = np.bincount(prefix, weights=c, minlength=n_ctx)
            held = np.bincount(prefix, weights=d_c, minlength=n_ctx)
            with np.errstate(divide="ignore", invalid="ignore"):
                self._alpha.append(np.where(c > 0, (c - d_c) / total[prefix], 0.0))
                self._gamma.append(np.where(total > 0, held / total, 1.0))
            disc.append(d)
        self._discounts = np.array(disc).reshape(self.cfg.order, 3)

    # -- inspection -------------------------------------------------------------------------

    @property
    def num_ngrams(self) -> int:
        """Distinct n-grams stored over all orders (the model's "size")."""
        return int(sum(k.size for k in self._keys))

    @property
    def discounts(self) -> np.ndarray:
        """(order, 3) array: (D1, D2, D3+) per level k = 1..order."""
        return self._discounts.copy()

    # -- lookups ----------------------------------------------------------------------------

    def _find(self, k: int, key: np.ndarray) -> np.ndarray:
        """Index of each key in level k's table, -1 where absent (negative keys are absent)."""
        table = self._keys[k - 1]
        if table.size == 0:
            return np.full(key.shape, -1, np.int64)
        pos = np.minimum(np.searchsorted(table, key), table.size - 1)
        return np.where((table[pos] == key) & (key >= 0), pos, -1)

    def _extend(self, k: int, prev_ids: np.ndarray, tok: np.ndarray) -> np.ndarray:
        """Ids at level k of (gram with id prev_ids at level k-1) + tok; -1 propagates."""
        V = self.cfg.vocab_size
        return self._find(k, np.where((prev_ids >= 0) & (tok >= 0), prev_ids * V + tok, -1))

    # -- scoring ----------------------------------------------------------------------------

    def next_token_logprobs(self, contexts: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """(B, V) float64 log p(w | context) for each context; only the last order-1 tokens count.

        `contexts` is a list of 1-D token arrays (any lengths, also 0) or a 2-D (B, L) array.
        """
        V, n = self.cfg.vocab_size, self.cfg.order
        m = n - 1
        ctx_BM, len_B = _pad_contexts(contexts, V, m)
        B = ctx_BM.shape[0]
        p_BV = np.full((B, V), 1.0 / V)
        for k in range(1, n + 1):
            # Context of level k: the last k-1 tokens, i.e. columns m-k+1 .. m-1.
            ctx_id = np.zeros(B, np.int64)
            for j, col in enumerate(range(m - k + 1, m), start=1):
                ctx_id = self._extend(j, ctx_id, ctx_BM[:, col])
            valid = len_B >= k - 1
            ctx_id = np.where(valid, ctx_id, -1)
            safe = np.maximum(ctx_id, 0)
            gamma = np.where(ctx_id >= 0, self._gamma[k - 1][safe], 1.0)
            alpha_BV = self._alpha_rows(k, ctx_id)
            p_BV = np.where(valid[:, None], alpha_BV + gamma[:, None] * p_BV, p_BV)
        return np.log(p_BV)

    def _alpha_rows(self, k: int, ctx_id: np.ndarray) -> np.ndarray:
        """Dense (B, V) alpha_k(h w) for contexts with level-(k-1) ids ctx_id (-1: all zero)."""
        V = self.cfg.vocab_size
        keys, alpha = self._keys[k - 1], self._alpha[k - 1]
        out = np.zeros((ctx_id.size, V))
        lo = np.searchsorted(keys, ctx_id * V)
        hi = np.searchsorted(keys, ctx_id * V + V)
        lengths = np.where(ctx_id >= 0, hi - lo, 0)
        total = int(lengths.sum())
        if total:
            rows = np.repeat(np.arange(ctx_id.size), lengths)
            starts = np.cumsum(lengths) - lengths
            idx = np.arange(total) - np.repeat(starts, lengths) + np.repeat(lo, lengths)
            out[rows, keys[idx] % V] = alpha[idx]
        return out

    def _score(self, x_BT: np.ndarray, start: int) -> np.ndarray:
        """(B, T-start) log p(x_t | x_{max(0,t-n+1)..t-1}) within each row, t = start..T-1."""
        V, n = self.cfg.vocab_size, self.cfg.order
        B, T = x_BT.shape
        # gram_ids[k][:, s] = id at level k of x[:, s:s+k] (or -1); level 0 is the empty gram.
        gram_ids = [np.zeros((B, T + 1), np.int64)]
        for k in range(1, min(n, T) + 1):
            m = T - k + 1
            gram_ids.append(self._extend(k, gram_ids[k - 1][:, :m], x_BT[:, k - 1 :]))
        t = np.arange(start, T)
        p = np.full((B, t.size), 1.0 / V)
        for k in range(1, min(n, T) + 1):
            cols = np.nonzero(t >= k - 1)[0]  # positions whose context reaches k-1 tokens back
            if cols.size == 0:
                break
            s = t[cols] - (k - 1)
            ctx = gram_ids[k - 1][:, s]
            gram = gram_ids[k][:, s]
            gamma = np.where(ctx >= 0, self._gamma[k - 1][np.maximum(ctx, 0)], 1.0)
            alpha = np.where(gram >= 0, self._alpha[k - 1][np.maximum(gram, 0)], 0.0)
            p[:, cols] = alpha + gamma * p[:, cols]
        return np.log(p)

    def sequence_logprobs(self, tokens: np.ndarray, start: int = 1) -> np.ndarray:
        """log p(tokens[i] | tokens[max(0, i-order+1):i]) for i in [start, len), float64."""
        x = _check_tokens(tokens, self.cfg.vocab_size, "sequence tokens", ndim=1)
        if not _is_int(start) or not 0 <= start <= x.size:
            raise ConfigError(f"start must be an int in [0, {x.size}], got {start!r}")
        return self._score(x[None, :], start)[0]

    def window_logprobs(self, windows_BT: np.ndarray) -> np.ndarray:
        """(B, T-1): log p(x_t | x_{max(0,t-order+1)..t-1}) for t = 1..T-1, using each row only."""
        x = _check_tokens(windows_BT, self.cfg.vocab_size, "windows_BT", ndim=2)
        if x.shape[1] < 1:
            raise ConfigError(f"windows_BT must have at least one column, got shape {x.shape}")
        return self._score(x, 1)

    # -- persistence ------------------------------------------------------------------------

    def save(self, path) -> None:
        """Write one .npz file at exactly `path`."""
        arrays = {
            "format": np.array(_FORMAT),
            "family": np.array(self.cfg.family),
            "vocab_size": np.array(self.cfg.vocab_size, np.int64),
            "context": np.array(self.cfg.context, np.int64),
            "order": np.array(self.cfg.order, np.int64),
        }
        for k in range(1, self.cfg.order + 1):
            arrays[f"keys_{k}"] = self._keys[k - 1]
            arrays[f"counts_{k}"] = self._counts[k - 1]
        with open(os.fspath(path), "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path) -> NGramLM:
        """Read a model written by `save`."""
        name = os.fspath(path)
        try:
            with np.load(name, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read n-gram model {name}: {e}") from e
        if "format" not in arrays or str(arrays["format"]) != _FORMAT:
            raise ConfigError(f"{name} is not an lmjax n-gram model file ({_FORMAT})")
        try:
            cfg = NGramConfig(
                family=str(arrays["family"]),
                vocab_size=int(arrays["vocab_size"]),
                context=int(arrays["context"]),
                order=int(arrays["order"]),
            )
            keys = [arrays[f"keys_{k}"] for k in range(1, cfg.order + 1)]
            counts = [arrays[f"counts_{k}"] for k in range(1, cfg.order + 1)]
        except KeyError as e:
            raise ConfigError(f"n-gram model file {name} lacks the array {e}") from e
        return cls(cfg, keys, counts)


def _check_tokens(tokens, V: int, what: str, ndim: int) -> np.ndarray:
    x = np.asarray(tokens)
    if x.ndim != ndim:
        raise ConfigError(f"{what} must be a {ndim}-D integer array, got shape {x.shape}")
    if x.size == 0:
        return x.astype(np.int64)
    if not np.issubdtype(x.dtype, np.integer):
        raise ConfigError(f"{what} must hold integer token ids, got dtype {x.dtype}")
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi >= V:
        raise ConfigError(f"{what}: token ids must be in [0, {V}), got range [{lo}, {hi}]")
    return x.astype(np.int64)


def _pad_contexts(contexts, V: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Last m tokens of each context, left-padded with -1, and the kept lengths."""
    if isinstance(contexts, np.ndarray):
        if contexts.ndim != 2:
            raise ConfigError(
                "contexts must be a 2-D (B, L) array or a list of 1-D arrays, "
                f"got shape {contexts.shape}"
            )
        x = _check_tokens(contexts, V, "contexts", ndim=2)
        keep = x[:, max(0, x.shape[1] - m) :]
        out = np.full((x.shape[0], m), -1, np.int64)
        if keep.shape[1]:
            out[:, m - keep.shape[1] :] = keep
        return out, np.full(x.shape[0], keep.shape[1], np.int64)
    rows = list(contexts)
    out = np.full((len(rows), m), -1, np.int64)
    lengths = np.zeros(len(rows), np.int64)
    for b, row in enumerate(rows):
        r = _check_tokens(row, V, f"context {b}", ndim=1)
        keep = r[max(0, r.size - m) :]
        if keep.size:
            out[b, m - keep.size :] = keep
        lengths[b] = keep.size
    return out, lengths


def param_counts(cfg: NGramConfig) -> dict[str, int]:
    """An n-gram model has no trained parameters; its size is NGramLM.num_ngrams (data-dependent)."""
    return {"total": 0, "embedding": 0, "non_embedding": 0}


def flops_per_token(cfg: NGramConfig) -> float:
    """Counting is not floating-point training: 0 FLOPs per token by this project's convention."""
    return 0.0
