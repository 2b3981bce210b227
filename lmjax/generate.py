"""Generation for every model family behind one function:

    generate(bundle, prompts, max_new_tokens, key, *, temperature, top_k, top_p, min_p, end_token)

Shapes in names: B batch (prompts), P longest prompt, M max_new_tokens, N = P + M token buffer,
V vocab, W window, S cache slots.

Decisions:
- Batched prompts of different lengths are right-padded to P and each row keeps its own length;
  positions stay absolute per row (the KV cache keeps a per-row index, see
  lmjax.models.transformer), so a row's tokens and logits do not depend on the other rows.
- One jitted program per (family config, max_new_tokens, end token, top-k, which of top-p /
  min-p are on) and input shape (B, P): the prefill, then a ``lax.while_loop`` that samples one
  token per step for every row and stops at M tokens or when every row has produced
  ``end_token``. Temperature (0 included), top-p and min-p values are traced arguments, so
  changing them compiles nothing. Rows that are done keep
  running in lockstep; their outputs are masked (-1 in ``tokens_BM``).
- The first token of a prompt is only conditioned on: lmjax's models have no BOS token, so every
  prompt needs at least one token.
- Transformer (KV cache): prompts longer than the context keep their last ``context`` tokens.
  The cache has ``context`` slots. When a row's cache is full (its next token would sit at
  position ``context``), the window slides: the row's cache is rebuilt by a prefill of its last
  ``slide_keep`` tokens (default ``context - 1``) and decoding continues after them. With the
  default, every token beyond the context is drawn given exactly the last ``context`` tokens,
  the same distribution as recomputing a ``context``-token window each step (``use_cache=False``,
  nanoGPT's crop), but each such step then costs a prefill; a smaller ``slide_keep`` (e.g.
  ``context // 2``) rebuilds only every ``context - slide_keep`` steps, and tokens are then
  conditioned on between ``slide_keep + 1`` and ``context`` tokens. Learned positions cannot go
  past the context, so there is no cheaper exact slide. No slide code is compiled when
  P + M - 1 <= context.
- Recurrent models: the prompt is fed one token at a time from the zero state, a row's state
  freezing after its last prompt token; decoding carries the state (no length limit).
- Feed-forward LM: each step reads the last ``window`` tokens (pad embeddings before the start,
  as in training); no length limit.
- N-gram: a host loop over ``NGramLM.next_token_logprobs`` (the last order - 1 tokens), sampled
  with the same samplers (on log-probabilities, float32).
- ``temperature=0`` is greedy (argmax); see lmjax.sampling for the filters and their order.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lmjax import models, sampling
from lmjax.errors import ConfigError, DataError, RunDirError

RECURRENT = ("lstm", "gru", "rnn")


# ----------------------------------------------------------------------------------------------
# The model bundle: what generation and scoring need from a trained model.


@dataclasses.dataclass(frozen=True, eq=False)
class ModelBundle:
    """A model config (vocab_size resolved) with its weights and, optionally, its tokenizer.

    Neural families carry ``params`` (the flax parameter tree), the n-gram family ``ngram`` (a
    fitted lmjax.models.ngram.NGramLM). ``load_bundle(workdir)`` builds one from a run directory.
    """

    model_cfg: Any
    params: Any = None
    ngram: Any = None
    tokenizer: Any = None
    step: int | None = None
    workdir: str | None = None

    def __post_init__(self):
        self.model_cfg.validate()
        if self.model_cfg.vocab_size < 1:
            raise ConfigError("the bundle's model config needs vocab_size >= 1 (resolved from the tokenizer)")
        if self.family == "ngram":
            if self.ngram is None:
                raise ConfigError("an n-gram bundle needs ngram= (a fitted NGramLM)")
        elif self.params is None:
            raise ConfigError(f"a {self.family} bundle needs params=")

    @property
    def family(self) -> str:
        return self.model_cfg.family

    @property
    def vocab_size(self) -> int:
        return self.model_cfg.vocab_size

    @functools.cached_property
    def module(self):
        """The flax module (neural families only)."""
        return models.build(self.model_cfg)

    def encode(self, text: str, what: str = "text") -> np.ndarray:
        if self.tokenizer is None:
            raise ConfigError(f"{what} is a string but the bundle has no tokenizer; pass token ids")
        try:
            return np.asarray(self.tokenizer.encode(text), np.int32)
        except DataError as e:
            raise DataError(f"{what}: {e}") from None

    def decode(self, ids) -> str:
        if self.tokenizer is None:
            raise ConfigError("the bundle has no tokenizer to decode with")
        return self.tokenizer.decode(np.asarray(ids))


def _has_checkpoint(workdir: str) -> bool:
    from lmjax.train import rundir

    ckpt = os.path.join(workdir, rundir.CHECKPOINTS)
    return os.path.isdir(ckpt) and any(name.isdigit() for name in os.listdir(ckpt))


def load_bundle(workdir: str) -> ModelBundle:
    """The latest checkpoint (or fitted n-gram model) of a run directory, with its tokenizer."""
    from lmjax.data import tokenizers
    from lmjax.train import rundir

    if not os.path.isdir(workdir):
        raise RunDirError(f"run directory {workdir} does not exist")
    cfg = rundir.load_config(workdir)
    if cfg.model.family == "ngram":
        from lmjax.train.ngram_run import load_ngram

        lm = load_ngram(workdir)
        return ModelBundle(lm.cfg, ngram=lm, tokenizer=tokenizers.load(workdir), step=1, workdir=workdir)
    if not _has_checkpoint(workdir):
        raise RunDirError(f"{workdir} has no checkpoint (train it first with `lmjax train`)")
    from lmjax.train.loop import restore_params

    cfg, ds, _, params, step = restore_params(workdir, cfg)
    # One unsharded copy on the default device: generation runs on one device.
    params = jax.device_put(jax.device_get(params), jax.devices()[0])
    return ModelBundle(cfg.model, params=params, tokenizer=ds.tokenizer, step=step, workdir=workdir)


# ----------------------------------------------------------------------------------------------
# Inputs.


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def prompt_ids(bundle: ModelBundle, prompts) -> list[np.ndarray]:
    """Prompts as a list of 1-D int32 arrays: a str, a sequence of ids, or a list of either."""
    if isinstance(prompts, jax.Array):
        prompts = np.asarray(prompts)
    single = (isinstance(prompts, str) or (isinstance(prompts, np.ndarray) and prompts.ndim == 1)
              or (isinstance(prompts, Sequence) and len(prompts) > 0 and all(_is_int(x) for x in prompts)))
    if single:
        prompts = [prompts]
    if isinstance(prompts, np.ndarray) and prompts.ndim == 2:
        prompts = list(prompts)
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ConfigError("prompts must be a string, a sequence of token ids, or a non-empty list of them")
    out = []
    for i, p in enumerate(prompts):
        what = "prompt" if len(prompts) == 1 else f"prompt {i}"
        ids = bundle.encode(p, what) if isinstance(p, str) else check_ids(p, bundle.vocab_size, what)
        if ids.size == 0:
            raise ConfigError(f"{what} is empty: the models have no start token, give at least one token")
        out.append(ids)
    return out


def check_ids(ids, vocab_size: int, what: str) -> np.ndarray:
    x = np.asarray(ids)
    if x.ndim != 1:
        raise ConfigError(f"{what} must be a 1-D sequence of token ids, got shape {x.shape}")
    if x.size and not np.issubdtype(x.dtype, np.integer):
        raise ConfigError(f"{what} must hold integer token ids, got dtype {x.dtype}")
    if x.size and (x.min() < 0 or x.max() >= vocab_size):
        raise DataError(f"{what}: token ids must be in [0, {vocab_size}), got range [{x.min()}, {x.max()}]")
    return x.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """temperature (0 = greedy) -> top-k -> top-p -> min-p, as in lmjax.sampling.sample."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None

    def validate(self) -> SamplerSettings:
        sampling._check_temperature(self.temperature, allow_zero=True)
        if isinstance(self.temperature, jax.Array):
            raise ConfigError("temperature must be a Python number for generate()")
        if self.top_k is not None:
            sampling._check_top_k(self.top_k)
        for name, check in (("top_p", sampling._check_top_p), ("min_p", sampling._check_min_p)):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, numbers.Real) or isinstance(value, bool):
                    raise ConfigError(f"{name} must be a Python number, got {value!r}")
                check(value)
        return self

    @property
    def static(self) -> tuple:
        """What a compiled program depends on: top-k (an array shape) and which filters are on."""
        return (self.top_k, self.top_p is not None and self.top_p != 1, self.min_p is not None and self.min_p != 0)

    def knobs(self) -> tuple:
        """The traced values: temperature (0 = greedy), top-p, min-p."""
        return (np.float32(self.temperature), np.float32(1.0 if self.top_p is None else self.top_p),
                np.float32(0.0 if self.min_p is None else self.min_p))


def _sample(static: tuple, knobs, key, logits_BV):
    """lmjax.sampling.sample with traced temperature / top-p / min-p (a temperature of 0 is greedy)."""
    top_k, use_top_p, use_min_p = static
    temperature, top_p, min_p = knobs
    return sampling.sample(key, logits_BV, temperature=temperature, top_k=top_k,
                           top_p=top_p if use_top_p else None, min_p=min_p if use_min_p else None)


@dataclasses.dataclass(frozen=True)
class Generation:
    """Generated tokens: row b is tokens_BM[b, :lengths_B[b]] (the end token included), -1 after.

    ``logits_BMV`` (with return_logits=True) holds the logits each token was drawn from, before
    temperature and filters (log-probabilities for the n-gram model); rows past their end hold
    the logits of the masked lockstep steps.
    """

    tokens_BM: np.ndarray
    lengths_B: np.ndarray
    prompts: list[np.ndarray]
    logits_BMV: np.ndarray | None = None

    def rows(self) -> list[np.ndarray]:
        return [self.tokens_BM[b, :n] for b, n in enumerate(self.lengths_B)]

    def texts(self, tokenizer) -> list[str]:
        """The decoded continuations (without the prompts)."""
        return [tokenizer.decode(r) for r in self.rows()]


# ----------------------------------------------------------------------------------------------
# The decode loop shared by the neural families.


def _decode_loop(prefill, step, sample, params, buffer_BN, lengths_B, key, *, max_new: int, end_token,
                 return_logits: bool, vocab_size: int):
    """prefill(params, buffer_BN, lengths_B) -> (logits_BV, state);
    step(params, state, tok_B, buffer_BN, cur_B) -> (logits_BV, state), where tok_B (the last drawn
    token, not yet fed) sits in buffer_BN at cur_B - 1; sample(key, logits_BV) -> tok_B.

    One sampling site and one model step in the loop body (the step is skipped at i = 0, where the
    prefill's logits are used): each extra call site of the sampler or the PRNG costs compile time.
    """
    b = buffer_BN.shape[0]
    rows_B = jnp.arange(b)
    logits_BV, state = prefill(params, buffer_BN, lengths_B)
    keys_M = jax.random.split(key, max_new)

    def cond(c):
        i, done_B = c[0], c[4]
        return (i < max_new) & ~jnp.all(done_B)

    def body(c):
        i, buffer_BN, cur_B, logits_BV, done_B, out_BM, n_B, state, seen_BMV = c
        logits_BV, state = jax.lax.cond(
            i > 0, lambda s: step(params, s, buffer_BN[rows_B, cur_B - 1], buffer_BN, cur_B),
            lambda s: (logits_BV, s), state)
        tok_B = sample(keys_M[i], logits_BV)
        active_B = ~done_B
        out_BM = out_BM.at[:, i].set(jnp.where(active_B, tok_B, -1))
        buffer_BN = buffer_BN.at[rows_B, cur_B].set(tok_B)
        n_B = n_B + active_B
        if end_token is not None:
            done_B = done_B | (tok_B == end_token)
        if seen_BMV is not None:
            seen_BMV = seen_BMV.at[:, i].set(logits_BV)
        return i + 1, buffer_BN, cur_B + 1, logits_BV, done_B, out_BM, n_B, state, seen_BMV

    seen_BMV = jnp.zeros((b, max_new, vocab_size), jnp.float32) if return_logits else None
    init = (jnp.int32(0), buffer_BN, lengths_B, logits_BV, jnp.zeros((b,), bool),
            jnp.full((b, max_new), -1, jnp.int32), jnp.zeros((b,), jnp.int32), state, seen_BMV)
    final = jax.lax.while_loop(cond, body, init)
    return final[5], final[6], final[8]


def _windowed(apply_fn, width: int):
    """prefill/step that recompute the logits from the last ``width`` tokens of each row."""

    def logits_at(params, buffer_BN, cur_B):
        b, n = buffer_BN.shape
        w = min(width, n)
        start_B = jnp.maximum(cur_B - w, 0)
        x_BW = jnp.take_along_axis(buffer_BN, start_B[:, None] + jnp.arange(w)[None, :], axis=1)
        logits_BWV = apply_fn(params, x_BW)
        return logits_BWV[jnp.arange(b), cur_B - 1 - start_B]

    def prefill(params, buffer_BN, lengths_B):
        return logits_at(params, buffer_BN, lengths_B), None

    def step(params, state, tok_B, buffer_BN, cur_B):
        return logits_at(params, buffer_BN, cur_B), state

    return prefill, step


def _select_rows(mask_B, new, old, scanned: bool):
    """Per-row choice between two caches; caches under a scanned stack have the batch on axis 1."""

    def pick(path, a, b):
        axis = 1 if scanned and any(getattr(k, "key", None) == "layers" for k in path) else 0
        shape = [1] * a.ndim
        shape[axis] = a.shape[axis]
        return jnp.where(mask_B.reshape(shape), a, b)

    return jax.tree_util.tree_map_with_path(pick, new, old)


def _transformer_cached(model, cfg, prompt_len: int, keep: int, may_slide: bool):
    def prefill(params, buffer_BN, lengths_B):
        logits_BPV, v = model.apply({"params": params}, buffer_BN[:, :prompt_len], decode=True,
                                    lengths_B=lengths_B, mutable=["cache"])
        return logits_BPV[jnp.arange(buffer_BN.shape[0]), lengths_B - 1], v["cache"]

    def rebuild(params, cache, buffer_BN, cur_B, full_B):
        # The keep tokens before the current one (at cur_B - 1); rows that are not full are not used.
        start_B = jnp.maximum(cur_B - 1 - keep, 0)
        x_BK = jnp.take_along_axis(buffer_BN, start_B[:, None] + jnp.arange(keep)[None, :], axis=1)
        _, v = model.apply({"params": params}, x_BK, decode=True, mutable=["cache"])
        return _select_rows(full_B, v["cache"], cache, cfg.scan_layers)

    def step(params, cache, tok_B, buffer_BN, cur_B):
        if may_slide:
            full_B = cache["cache_index"] >= cfg.context
            cache = jax.lax.cond(jnp.any(full_B), lambda c: rebuild(params, c, buffer_BN, cur_B, full_B),
                                 lambda c: c, cache)
        logits_B1V, v = model.apply({"params": params, "cache": cache}, tok_B[:, None], decode=True,
                                    mutable=["cache"])
        return logits_B1V[:, 0], v["cache"]

    return prefill, step


def _recurrent(model, cfg, prompt_len: int):
    from lmjax.models.recurrent import initial_carry

    def prefill(params, buffer_BN, lengths_B):
        b = buffer_BN.shape[0]

        def feed(c, xs):
            carry, last_BV = c
            tok_B, t = xs
            logits_B1V, new = model.apply({"params": params}, tok_B[:, None], carry=carry, return_carry=True)
            valid_B = t < lengths_B
            carry = jax.tree.map(lambda n, o: jnp.where(valid_B[:, None], n, o), new, carry)
            last_BV = jnp.where((t == lengths_B - 1)[:, None], logits_B1V[:, 0], last_BV)
            return (carry, last_BV), None

        init = (initial_carry(cfg, b), jnp.zeros((b, cfg.vocab_size), jnp.float32))
        xs = (buffer_BN[:, :prompt_len].T, jnp.arange(prompt_len))
        (carry, last_BV), _ = jax.lax.scan(feed, init, xs)
        return last_BV, carry

    def step(params, carry, tok_B, buffer_BN, cur_B):
        logits_B1V, carry = model.apply({"params": params}, tok_B[:, None], carry=carry, return_carry=True)
        return logits_B1V[:, 0], carry

    return prefill, step


@functools.lru_cache(maxsize=64)
def _program(cfg, prompt_len: int, max_new: int, sampler_static: tuple, end_token, use_cache: bool,
             keep: int, return_logits: bool):
    """The jitted generation program for one configuration (jit then caches one per batch size)."""
    model = models.build(cfg)
    family = cfg.family
    if family == "transformer" and use_cache:
        may_slide = prompt_len + max_new - 1 > cfg.context
        prefill, step = _transformer_cached(model, cfg, prompt_len, keep, may_slide)
    elif family == "transformer":
        prefill, step = _windowed(lambda p, x: model.apply({"params": p}, x), cfg.context)
    elif family == "ffnn":
        prefill, step = _windowed(lambda p, x: model.apply({"params": p}, x), cfg.window)
    elif family in RECURRENT:
        prefill, step = _recurrent(model, cfg, prompt_len)
    else:
        raise ConfigError(f"no jitted generation for family {family!r}")

    def run(params, buffer_BN, lengths_B, key, knobs):
        sample = functools.partial(_sample, sampler_static, knobs)
        return _decode_loop(prefill, step, sample, params, buffer_BN, lengths_B, key, max_new=max_new,
                            end_token=end_token, return_logits=return_logits, vocab_size=cfg.vocab_size)

    return jax.jit(run)


def _crop(ids: list[np.ndarray], n: int) -> list[np.ndarray]:
    return [p[-n:] for p in ids]


@functools.lru_cache(maxsize=16)
def _jitted_sampler(sampler_static: tuple):
    return jax.jit(functools.partial(_sample, sampler_static))


def _ngram_generate(bundle, ids, max_new, key, sampler, end_token, return_logits):
    lm = bundle.ngram
    draw = functools.partial(_jitted_sampler(sampler.static), sampler.knobs())
    b = len(ids)
    rows = [list(p) for p in ids]
    out = np.full((b, max_new), -1, np.int32)
    n = np.zeros(b, np.int32)
    done = np.zeros(b, bool)
    seen = np.zeros((b, max_new, bundle.vocab_size), np.float32) if return_logits else None
    m = lm.cfg.order - 1
    for i in range(max_new):
        contexts = [np.asarray(r[len(r) - m:] if m else [], np.int64) for r in rows]
        logp_BV = lm.next_token_logprobs(contexts).astype(np.float32)
        key, sub = jax.random.split(key)
        tok = np.asarray(draw(sub, jnp.asarray(logp_BV)))
        if seen is not None:
            seen[:, i] = logp_BV
        out[:, i] = np.where(done, -1, tok)
        n += ~done
        for r, t in zip(rows, tok):
            r.append(int(t))
        if end_token is not None:
            done |= tok == end_token
            if done.all():
                break
    return out, n, seen


def generate(bundle: ModelBundle, prompts, max_new_tokens: int, key=0, *, temperature=1.0,
             top_k: int | None = None, top_p: float | None = None, min_p: float | None = None,
             end_token: int | None = None, use_cache: bool = True, slide_keep: int | None = None,
             return_logits: bool = False) -> Generation:
    """Sample up to ``max_new_tokens`` tokens after each prompt (see the module docstring).

    prompts: a string (needs the bundle's tokenizer), a sequence of token ids, or a list of them.
    key: a jax PRNG key or an int seed. Sampler settings as in lmjax.sampling.sample
    (temperature 0 = greedy); new temperature / top_p / min_p values reuse the compiled program,
    a new top_k (or switching a filter on) compiles another. ``end_token``: a row stops after producing it. ``use_cache``
    (Transformer): False recomputes a ``context``-token window each step (the reference and the
    benchmark baseline). ``slide_keep`` (Transformer with cache): tokens kept when the window
    slides, 1..context-1 (default context - 1, exact sliding).
    """
    sampler = SamplerSettings(temperature, top_k, top_p, min_p).validate()
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if end_token is not None:
        if not _is_int(end_token) or not 0 <= end_token < bundle.vocab_size:
            raise ConfigError(f"end_token must be a token id in [0, {bundle.vocab_size}), got {end_token!r}")
        end_token = int(end_token)
    if _is_int(key):
        key = jax.random.key(int(key))
    ids = prompt_ids(bundle, prompts)
    cfg = bundle.model_cfg
    if bundle.family == "ngram":
        out, n, seen = _ngram_generate(bundle, ids, max_new_tokens, key, sampler, end_token, return_logits)
        return Generation(out, n, ids, seen)
    keep = 0
    if bundle.family == "transformer":
        ids_in = _crop(ids, cfg.context)
        if use_cache:
            keep = cfg.context - 1 if slide_keep is None else slide_keep
            if not _is_int(keep) or not 1 <= keep <= cfg.context - 1:
                raise ConfigError(f"slide_keep must be an int in [1, context - 1 = {cfg.context - 1}], got {keep!r}")
    elif bundle.family == "ffnn":
        ids_in = _crop(ids, cfg.window)
    else:
        ids_in = ids
    lengths_B = np.array([len(p) for p in ids_in], np.int32)
    p_len = int(lengths_B.max())
    buffer_BN = np.zeros((len(ids_in), p_len + max_new_tokens), np.int32)
    for b, p in enumerate(ids_in):
        buffer_BN[b, :len(p)] = p
    program = _program(cfg, p_len, int(max_new_tokens), sampler.static, end_token, bool(use_cache), int(keep),
                       bool(return_logits))
    out, n, seen = jax.device_get(program(bundle.params, buffer_BN, lengths_B, key, sampler.knobs()))
    return Generation(np.asarray(out), np.asarray(n), ids, None if seen is None else np.asarray(seen))
