"""lmjax.generate and the Transformer KV cache: cached decoding equals full forward passes."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from lmjax import generate as gen_lib, models
from lmjax.errors import ConfigError, DataError
from lmjax.generate import ModelBundle, generate
from lmjax.models.ffnn import FFNNConfig
from lmjax.models.ngram import NGramConfig, NGramLM
from lmjax.models.recurrent import RecurrentConfig
from lmjax.models.transformer import Transformer, TransformerConfig

V = 23
PROMPTS = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]


def tf_cfg(**kw):
    base = dict(vocab_size=V, context=8, d_model=16, n_layers=2, n_heads=2, init_std=0.3)
    return TransformerConfig(**{**base, **kw})


def numpy_params(model, context, seed=0, std=0.3):
    """Random N(0, std^2) parameters drawn on the host: no init program to compile (its PRNG is
    most of a tiny model's compile time on CPU)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, context), jnp.int32))["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: rng.normal(0.0, std, a.shape).astype(np.float32), nn.meta.unbox(shapes))


def bundle_for(cfg, seed=0):
    return ModelBundle(cfg, params=numpy_params(models.build(cfg), cfg.context, seed))


_FULL = {}


def full_logits(bundle, seq):
    """One jitted forward pass; inputs right-padded to 32 tokens (the models are causal)."""
    if id(bundle) not in _FULL:
        _FULL[id(bundle)] = jax.jit(lambda x: bundle.module.apply({"params": bundle.params}, x)[0])
    x = np.zeros((1, 32), np.int32)
    x[0, :len(seq)] = seq
    return np.asarray(_FULL[id(bundle)](x))[:len(seq)]


@pytest.mark.parametrize("cfg", [  # learned positions: the generation tests below
    tf_cfg(positions="rope", scan_layers=True, remat="full"),
    tf_cfg(positions="sinusoidal", norm="rmsnorm", activation="swiglu", use_bias=True, tied_embeddings=False),
], ids=["rope-scan-remat", "sinusoidal-swiglu-untied"])
def test_kv_cache_logits_equal_full_forward_every_step(cfg):
    """Ragged prefill (right-padded, per-row lengths) then one token per step: every step's logits
    equal the full forward pass at that position within 1e-5 (float32)."""
    model = Transformer(cfg)
    params = numpy_params(model, cfg.context)
    tokens_BT = np.random.default_rng(1).integers(0, V, size=(3, cfg.context)).astype(np.int32)
    full_BTV = np.asarray(jax.jit(model.apply)({"params": params}, tokens_BT))
    lengths_B = jnp.array([3, 5, 1])
    prompt_BP = jnp.where(jnp.arange(5)[None] < lengths_B[:, None], tokens_BT[:, :5], 0)

    @jax.jit
    def prefill(p, x, lengths):
        return model.apply({"params": p}, x, decode=True, lengths_B=lengths, mutable=["cache"])

    @jax.jit
    def step(p, cache, tok_B):
        return model.apply({"params": p, "cache": cache}, tok_B[:, None], decode=True, mutable=["cache"])

    logits_BPV, v = prefill(params, prompt_BP, lengths_B)
    for b, n in enumerate([3, 5, 1]):
        np.testing.assert_allclose(logits_BPV[b, :n], full_BTV[b, :n], atol=1e-5, rtol=0)
    cache = v["cache"]
    rows = np.arange(3)
    for s in range(cfg.context - 5):
        pos_B = np.asarray(lengths_B) + s
        logits_B1V, v = step(params, cache, tokens_BT[rows, pos_B])
        cache = v["cache"]
        np.testing.assert_allclose(logits_B1V[:, 0], full_BTV[rows, pos_B], atol=1e-5, rtol=0)
    index = cache["cache_index"]
    np.testing.assert_array_equal(index, np.asarray(lengths_B) + cfg.context - 5)


def test_training_path_has_no_cache_and_unchanged_params():
    cfg = tf_cfg(scan_layers=True)
    model = Transformer(cfg)
    v = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    assert set(v) == {"params"}
    _, state = jax.eval_shape(lambda v, x: model.apply(v, x, mutable=True), v, jnp.zeros((2, 8), jnp.int32))
    assert "cache" not in state
    cached = jax.eval_shape(lambda v, x: model.apply(v, x, decode=True, mutable=["cache"])[1], v,
                            jnp.zeros((2, 3), jnp.int32))["cache"]
    assert cached["layers"]["attn"]["cached_key"].shape == (2, 2, 8, 2, 8)  # (L, B, S, H, K)


def family_bundle(family):
    if family == "transformer":
        cfg = tf_cfg(context=32)
    elif family == "ffnn":
        cfg = FFNNConfig(vocab_size=V, context=16, window=3, d_embed=8, d_hidden=16, init_std=0.3)
    else:
        cfg = RecurrentConfig(family=family, vocab_size=V, context=8, d_embed=16, d_hidden=24, n_layers=2,
                              init_std=0.3)
    return bundle_for(cfg)


@pytest.mark.parametrize("family", ["transformer", "lstm", "gru", "ffnn"])
def test_generation_logits_equal_full_forward(family):
    """Generated tokens' logits (cache / carried state / window) equal one forward pass over the
    prompt + generated sequence (recurrent: the full scan from the zero state): batched prompts of
    different lengths, each row checked on its own."""
    bundle = family_bundle(family)
    g = generate(bundle, PROMPTS, 20, jax.random.key(3), temperature=1.0, return_logits=True)
    assert g.tokens_BM.shape == (3, 20) and (g.lengths_B == 20).all()
    for b, prompt in enumerate(PROMPTS):
        seq = np.concatenate([prompt, g.tokens_BM[b]])
        ref = full_logits(bundle, seq[:-1])[len(prompt) - 1:]
        np.testing.assert_allclose(g.logits_BMV[b], ref, atol=1e-5, rtol=0)
    # The same key gives the same sample (from the same compiled program); another key another.
    same = generate(bundle, PROMPTS, 20, jax.random.key(3), temperature=1.0, return_logits=True)
    np.testing.assert_array_equal(same.tokens_BM, g.tokens_BM)
    other = generate(bundle, PROMPTS, 20, jax.random.key(4), temperature=1.0, return_logits=True)
    assert not np.array_equal(other.tokens_BM, g.tokens_BM)


def test_recurrent_prefill_state_equals_the_full_scan():
    """The carried state after a ragged prefill equals RecurrentLM's final carry on each unpadded row."""
    bundle = family_bundle("lstm")
    cfg = bundle.model_cfg
    prefill, _ = gen_lib._recurrent(bundle.module, cfg, 5)
    buffer_BN = np.zeros((3, 7), np.int32)
    for b, p in enumerate(PROMPTS):
        buffer_BN[b, :len(p)] = p
    last_BV, carry = jax.jit(prefill)(bundle.params, buffer_BN, np.array([3, 1, 5], np.int32))
    for b, p in enumerate(PROMPTS):
        logits, ref = bundle.module.apply({"params": bundle.params}, jnp.asarray([p]), return_carry=True)
        np.testing.assert_allclose(last_BV[b], logits[0, -1], atol=1e-5, rtol=0)
        for layer, ref_layer in zip(carry, ref):
            for name in ("h", "c"):
                np.testing.assert_allclose(layer[name][b], ref_layer[name][0], atol=1e-5, rtol=0)


def test_text_prompts_with_a_tokenizer():
    from lmjax.data.tokenizers import CharTokenizer

    tok = CharTokenizer("abcdefghijklmnopqrstuvw")
    bundle = dataclasses.replace(family_bundle("ffnn"), tokenizer=tok)
    g = generate(bundle, ["abc", "d", "efghi"], 20, jax.random.key(3), temperature=1.0, return_logits=True)
    assert [len(t) for t in g.texts(tok)] == [20, 20, 20]
    with pytest.raises(DataError, match="prompt 1: .*outside the character vocabulary"):
        generate(bundle, ["abc", "abz"], 5, 0)


LONG_PROMPTS = [list(range(1, 12)), [4], [5, 6, 7, 8, 9]]  # 11 tokens > context 8


@pytest.mark.parametrize("scan", [False, True])
def test_sliding_window_default_equals_recomputing_the_window(scan):
    """Beyond the context, the cache slides (rebuilt from the last context - 1 tokens): the same
    logits as recomputing the last-context-tokens window each step (prompts longer than the
    context too)."""
    bundle = bundle_for(tf_cfg(context=8, scan_layers=scan))
    cached = generate(bundle, LONG_PROMPTS, 14, jax.random.key(0), return_logits=True)
    recomputed = generate(bundle, LONG_PROMPTS, 14, jax.random.key(0), use_cache=False, return_logits=True)
    np.testing.assert_array_equal(cached.tokens_BM, recomputed.tokens_BM)
    np.testing.assert_allclose(cached.logits_BMV, recomputed.logits_BMV, atol=1e-5, rtol=0)


def test_sliding_with_a_smaller_keep_follows_its_definition():
    """slide_keep=k: when the cache is full it restarts from the last k tokens before the new one."""
    cfg = tf_cfg(context=8)
    bundle = bundle_for(cfg)
    prompts, k, m = [[1, 2, 3, 4, 5, 6], [7, 8]], 3, 16
    g = generate(bundle, prompts, m, jax.random.key(5), slide_keep=k, return_logits=True)

    @jax.jit
    def last_logits(x_1C, n):
        return bundle.module.apply({"params": bundle.params}, x_1C)[0, n - 1]

    for b, p in enumerate(prompts):
        history = list(p)
        window = list(p)
        for i in range(m):
            if i > 0:
                if len(window) == cfg.context:
                    window = window[-k:]  # the k tokens before the newest one
                window.append(history[-1])
            x = np.zeros((1, cfg.context), np.int32)
            x[0, :len(window)] = window
            np.testing.assert_allclose(g.logits_BMV[b, i], last_logits(x, len(window)), atol=1e-5, rtol=0)
            history.append(int(g.tokens_BM[b, i]))


def test_end_token_stops_rows_and_the_loop():
    """With the same key, a row's tokens up to its end token are those of the run without one."""
    bundle = bundle_for(tf_cfg(context=8))
    free = generate(bundle, LONG_PROMPTS, 14, jax.random.key(0), return_logits=True)
    end = int(free.tokens_BM[0, 2])
    g = generate(bundle, LONG_PROMPTS, 14, jax.random.key(0), end_token=end, return_logits=True)
    for b in range(3):
        row = free.tokens_BM[b]
        hits = np.nonzero(row == end)[0]
        n = hits[0] + 1 if hits.size else 14
        assert g.lengths_B[b] == n
        np.testing.assert_array_equal(g.tokens_BM[b, :n], row[:n])
        assert (g.tokens_BM[b, n:] == -1).all()
    assert g.rows()[0][-1] == end


def test_compiled_once_per_shape():
    """One program per (B, P, M) and filter set: prompts, keys and temperatures (greedy included)
    reuse it."""
    bundle = bundle_for(tf_cfg(context=8))
    generate(bundle, LONG_PROMPTS, 14, jax.random.key(0), return_logits=True)
    before = gen_lib._program.cache_info()
    other = [[3] * 11, [2, 2], [1]]  # the same (B, P, M); other tokens and lengths
    greedy = generate(bundle, other, 14, jax.random.key(1), temperature=0, return_logits=True)
    generate(bundle, other, 14, jax.random.key(2), temperature=0.7, return_logits=True)
    after = gen_lib._program.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 2
    program = gen_lib._program(bundle.model_cfg, 8, 14, (None, False, False), None, True, 7, True)  # P: cropped to 8
    assert program._cache_size() == 1
    np.testing.assert_array_equal(greedy.tokens_BM, greedy.logits_BMV.argmax(-1))


def test_first_token_follows_softmax_of_the_model():
    """Chi-squared on the first generated token of 4000 rows with top-k = V, top-p = 1, T = 1."""
    bundle = bundle_for(tf_cfg(context=8, init_std=0.5), seed=2)
    n = 4000
    g = generate(bundle, [[3, 1]] * n, 1, jax.random.key(0), temperature=1.0, top_k=V, top_p=1.0,
                 return_logits=True)
    logits = g.logits_BMV[0, 0].astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    counts = np.bincount(g.tokens_BM[:, 0], minlength=V)
    keep = p * n >= 5  # pool rare tokens for the test
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(p[keep] * n, p[~keep].sum() * n)
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    assert stats.chisquare(obs, exp).pvalue > 1e-3
    assert stats.chisquare(obs, np.full(len(obs), n / len(obs))).pvalue < 1e-6


def test_ngram_generation_is_greedy_argmax_and_samples():
    rng = np.random.default_rng(0)
    text = np.tile(rng.integers(0, 7, size=40), 20)
    lm = NGramLM.fit(text, NGramConfig(vocab_size=7, order=3))
    bundle = ModelBundle(lm.cfg, ngram=lm)
    g = generate(bundle, [[1, 2], [3]], 8, 0, temperature=0, return_logits=True)
    for b, p in enumerate([[1, 2], [3]]):
        seq = list(p)
        for i in range(8):
            logp = lm.next_token_logprobs([np.array(seq[-2:])])[0]
            np.testing.assert_allclose(g.logits_BMV[b, i], logp, rtol=1e-6)
            assert g.tokens_BM[b, i] == np.argmax(logp)
            seq.append(int(np.argmax(logp)))
    s = generate(bundle, [[1, 2]], 30, jax.random.key(1), top_p=0.9, end_token=int(g.tokens_BM[0, 3]))
    assert 1 <= s.lengths_B[0] <= 30 and s.tokens_BM.dtype == np.int32


@pytest.mark.parametrize("kw, match", [
    (dict(temperature=-1.0), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_k=0), "top_k"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(prompts=[[1], []]), "prompt 1 is empty"),
    (dict(prompts=[[1, 99]]), r"token ids must be in \[0, 23\)"),
    (dict(prompts="abc"), "no tokenizer"),
    (dict(end_token=23), "end_token"),
    (dict(slide_keep=8), "slide_keep"),
])
def test_bad_input_raises_one_clear_error(kw, match):
    bundle = bundle_for(tf_cfg())
    args = {"prompts": PROMPTS, "max_new_tokens": 4, **kw}
    with pytest.raises((ConfigError, DataError), match=match):
        generate(bundle, args.pop("prompts"), args.pop("max_new_tokens"), 0, **args)
