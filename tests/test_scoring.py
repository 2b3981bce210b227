"""lmjax.scoring: chain-rule log-probabilities per family against direct forward passes."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import models
from lmjax.data.tokenizers import CharTokenizer
from lmjax.errors import ConfigError, DataError
from lmjax.generate import ModelBundle, generate
from lmjax.models.ffnn import FFNNConfig
from lmjax.models.ngram import NGramConfig, NGramLM
from lmjax.models.recurrent import RecurrentConfig
from lmjax.models.transformer import TransformerConfig
from lmjax.scoring import loss_by_position, next_token_logprobs, score, token_logprobs

TOK = CharTokenizer("\n !',.:?abcdefghilmnoqrstuw")
V = TOK.vocab_size
C = 8


def _bundle(cfg):
    """Random N(0, 0.3^2) parameters drawn on the host (no init program to compile)."""
    model = models.build(cfg)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, cfg.context), jnp.int32))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: rng.normal(0.0, 0.3, a.shape).astype(np.float32), nn.meta.unbox(shapes))
    return ModelBundle(cfg, params=params, tokenizer=TOK)


BUNDLES = {}


def bundle(family):
    if family not in BUNDLES:
        if family == "transformer":
            cfg = TransformerConfig(vocab_size=V, context=C, d_model=16, n_layers=2, n_heads=2, init_std=0.3,
                                    positions="rope")
        elif family == "ffnn":
            cfg = FFNNConfig(vocab_size=V, context=C, window=3, d_embed=8, d_hidden=16, init_std=0.3)
        elif family == "lstm":
            cfg = RecurrentConfig(family="lstm", vocab_size=V, context=C, d_embed=8, d_hidden=16, init_std=0.3)
        else:
            text = TOK.encode("to be, or not to be: that is the question.\nwhether 'tis nobler in the mind\n" * 3)
            lm = NGramLM.fit(text, NGramConfig(vocab_size=V, order=3))
            BUNDLES[family] = ModelBundle(lm.cfg, ngram=lm, tokenizer=TOK)
            return BUNDLES[family]
        BUNDLES[family] = _bundle(cfg)
    return BUNDLES[family]


JITTED = {}


def logp_of(bundle, ids_T):
    """log p(ids[t] | ids[:t]) for t = 1..T-1 from one forward pass (T - 1 <= context for windows).

    Inputs are right-padded to a multiple of the context so that few shapes compile (causal models).
    """
    if id(bundle) not in JITTED:
        JITTED[id(bundle)] = jax.jit(lambda x: jax.nn.log_softmax(
            bundle.module.apply({"params": bundle.params}, x)[0], -1))
    n = len(ids_T) - 1
    x = np.zeros((1, -(-n // C) * C), np.int32)
    x[0, :n] = ids_T[:-1]
    logp = np.asarray(JITTED[id(bundle)](x), np.float64)
    return logp[np.arange(n), ids_T[1:]]


TEXT = "to be, or not to be: that is the question."  # 43 characters: longer than the context


@pytest.mark.parametrize("family", ["transformer", "ffnn", "lstm"])
def test_short_text_equals_one_forward_pass(family):
    b = bundle(family)
    ids = TOK.encode(TEXT[:C + 1])
    np.testing.assert_allclose(token_logprobs(b, ids), logp_of(b, ids), atol=1e-5)


def test_transformer_long_text_default_stride_is_exact_sliding():
    """Every token t is conditioned on exactly the last min(t, context) tokens (as generation does)."""
    b = bundle("transformer")
    ids = TOK.encode(TEXT)
    got = token_logprobs(b, ids)
    ref = [logp_of(b, ids[max(0, t - C):t + 1])[-1] for t in range(1, ids.size)]
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # A stride of the whole context: independent windows of C inputs each.
    fast = token_logprobs(b, ids, stride=C)
    chunks = np.concatenate([logp_of(b, ids[a:a + C + 1]) for a in range(0, ids.size - 1, C)])
    np.testing.assert_allclose(fast, chunks, atol=1e-5)
    half = token_logprobs(b, ids, stride=C // 2)
    assert half.shape == got.shape and np.all(np.isfinite(half))


def test_ffnn_and_lstm_long_texts_are_exact():
    ids = TOK.encode(TEXT)
    for family in ("ffnn", "lstm"):  # both read any length in one pass: no window limit
        b = bundle(family)
        np.testing.assert_allclose(token_logprobs(b, ids), logp_of(b, ids), atol=1e-5, err_msg=family)


def test_ngram_equals_sequence_logprobs():
    b = bundle("ngram")
    ids = TOK.encode(TEXT)
    np.testing.assert_array_equal(token_logprobs(b, ids, start=3), b.ngram.sequence_logprobs(ids, start=3))


@pytest.mark.parametrize("family", ["transformer", "ngram"])
def test_chain_rule_probabilities_sum_to_one(family):
    """sum over all two-token continuations x, y of p(x | ctx) p(y | ctx x) = 1."""
    b = bundle(family)
    ctx = TOK.encode("to b")
    first = np.exp(next_token_logprobs(b, ctx))
    assert first.sum() == pytest.approx(1.0, abs=1e-5)
    x = np.repeat(np.arange(V), V)
    y = np.tile(np.arange(V), V)
    pairs = np.concatenate([np.tile(ctx, (V * V, 1)), x[:, None], y[:, None]], 1)
    if family == "ngram":
        lp = b.ngram.window_logprobs(pairs)[:, -2:].sum(1)
    else:
        logits = jax.jit(b.module.apply)({"params": b.params}, jnp.asarray(pairs[:, :-1]))
        logp = np.asarray(jax.nn.log_softmax(logits, -1), np.float64)
        lp = logp[np.arange(V * V), -2, x] + logp[np.arange(V * V), -1, y]
    assert np.exp(lp).sum() == pytest.approx(1.0, abs=1e-4)
    # score() of one pair agrees with the enumeration
    s = score(b, "e!", context="to b")
    assert s.total_logprob_nats == pytest.approx(lp[TOK.encode("e")[0] * V + TOK.encode("!")[0]], abs=1e-5)


def test_score_summaries_and_units():
    b = bundle("lstm")
    s = score(b, TEXT)
    assert s.start == 1 and s.n_scored == len(TEXT) - 1
    assert s.pieces == list(TEXT[1:])
    assert s.total_logprob_nats == pytest.approx(s.logprobs_nats.sum())
    assert s.cross_entropy_nats == pytest.approx(-s.logprobs_nats.mean())
    assert s.perplexity == pytest.approx(math.exp(s.cross_entropy_nats))
    assert s.n_bytes == len(TEXT) - 1
    assert s.bits_per_byte == pytest.approx(s.cross_entropy_nats / math.log(2))  # one byte per char
    d = s.to_dict()
    assert d["tokens"][0] == {"position": 1, "id": int(TOK.encode("o")[0]), "token": "o",
                              "logprob_nats": pytest.approx(s.logprobs_nats[0]),
                              "prob": pytest.approx(math.exp(s.logprobs_nats[0]))}
    # With a context every text token is scored, given the context.
    c = score(b, TEXT[5:], context=TEXT[:5])
    np.testing.assert_allclose(c.logprobs_nats, s.logprobs_nats[4:], atol=1e-6)


def test_generation_and_scoring_agree_beyond_the_context():
    """The log-probability of a sampled continuation, from generate()'s logits, equals its score."""
    b = bundle("transformer")
    prompt = TOK.encode("to be")
    g = generate(b, [prompt], 12, jax.random.key(0), return_logits=True)
    logp = jax.nn.log_softmax(g.logits_BMV[0], -1)
    from_gen = float(np.sum(np.asarray(logp)[np.arange(12), g.tokens_BM[0]]))
    assert score(b, g.tokens_BM[0], context=prompt).total_logprob_nats == pytest.approx(from_gen, abs=1e-4)


def test_loss_by_position():
    rng = np.random.default_rng(0)
    windows = rng.integers(0, V, size=(6, C + 1))
    for family in ("transformer", "ngram"):
        b = bundle(family)
        got = loss_by_position(b, windows)
        assert got.shape == (C,)
        if family == "transformer":
            ref = -np.mean([logp_of(b, w) for w in windows], 0)
        else:
            ref = -b.ngram.window_logprobs(windows).mean(0)
        np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("call, match", [
    (lambda b: score(b, "t"), "at least 2"),
    (lambda b: score(b, "tx"), "outside the character vocabulary"),
    (lambda b: score(b, "to", context=""), "at least one token"),
    (lambda b: token_logprobs(b, [1, 2, V]), r"token ids must be in \[0"),
    (lambda b: token_logprobs(b, [1, 2, 3], stride=0), "stride"),
    (lambda b: token_logprobs(b, [1, 2, 3], start=3), "start"),
    (lambda b: token_logprobs(bundle("lstm"), [1, 2, 3], stride=2), "stride applies to window models"),
])
def test_bad_input(call, match):
    with pytest.raises((ConfigError, DataError), match=match):
        call(bundle("transformer"))
