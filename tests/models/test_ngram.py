"""Interpolated modified Kneser-Ney: hand computations, an independent dict-based reference,
normalization, vectorized scoring = looped scoring, persistence, validation."""

import math
from collections import Counter

import numpy as np
import pytest

from lmjax.errors import ConfigError
from lmjax.models import ngram
from lmjax.models.ngram import NGramConfig, NGramLM

# The tiny corpus of the hand computations: a=0, b=1, c=2, d=3; e=4 never occurs (V = 5).
#   position: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17
#   token:    a d d a a d a c c d c  d  d  a  b  d  a  d
TINY = np.array([0, 3, 3, 0, 0, 3, 0, 2, 2, 3, 2, 3, 3, 0, 1, 3, 0, 3])
A, B, C, D, E = range(5)


def _fit(tokens, order, V):
    return NGramLM.fit(np.asarray(tokens), NGramConfig(vocab_size=V, order=order))


def _probs(model, contexts):
    return np.exp(model.next_token_logprobs([np.asarray(c, np.int64) for c in contexts]))


# ---------------------------------------------------------------------------------------------
# Hand computations (Chen & Goodman formulas, counts read off the corpus above).


def _unigram_continuation_probs():
    """p1 for orders >= 2: continuation counts N1+(. w) = distinct left neighbours.

    Bigram types: ad dd da aa ac cc cd dc ab bd (10). Left neighbours: a <- {d, a} = 2,
    b <- {a} = 1, c <- {a, c, d} = 3, d <- {a, d, c, b} = 4; total 10.
    Count-of-counts n1..n4 = 1, 1, 1, 1: Y = 1/3, D1 = 1 - 2/3 = 1/3, D2 = 2 - 3 * (1/3) = 1,
    D3+ = 3 - 4 * (1/3) = 5/3.  gamma = (1/3 + 1 + 5/3 * 2) / 10 = 7/15.
    """
    gamma = (1 / 3 * 1 + 1 * 1 + 5 / 3 * 2) / 10
    assert gamma == pytest.approx(7 / 15)
    return np.array(
        [
            (2 - 1) / 10 + gamma / 5,  # a: count 2, D2
            (1 - 1 / 3) / 10 + gamma / 5,  # b: count 1, D1
            (3 - 5 / 3) / 10 + gamma / 5,  # c: count 3, D3+
            (4 - 5 / 3) / 10 + gamma / 5,  # d: count 4, D3+
            gamma / 5,  # e: unseen
        ]
    )


def test_hand_computed_order_1():
    # Raw counts: a 6, b 1, c 3, d 8 (18 tokens). n1 = 1, n2 = 0, n3 = 1, n4 = 0:
    # Y = 1, D1 = 1 - 0 = 1, D2 falls back (n2 = 0) to 1.0, D3+ = 3 - 4 * 1 * 0 / 1 = 3.
    gamma = (1 * 1 + 3 * 3) / 18  # one count-1 token, three count>=3 tokens
    expected = np.array([(6 - 3) / 18, (1 - 1) / 18, (3 - 3) / 18, (8 - 3) / 18, 0]) + gamma / 5
    m = _fit(TINY, 1, 5)
    np.testing.assert_allclose(m.discounts, [[1.0, 1.0, 3.0]], rtol=1e-14)
    np.testing.assert_allclose(_probs(m, [[]])[0], expected, rtol=1e-12)
    # Order 1 ignores the context.
    np.testing.assert_allclose(_probs(m, [[A, B]])[0], expected, rtol=1e-12)


def test_hand_computed_order_2():
    # Bigram raw counts: ad 3, dd 2, da 4, aa 1, ac 1, cc 1, cd 2, dc 1, ab 1, bd 1 (17).
    # n1 = 6, n2 = 2, n3 = 1, n4 = 1: Y = 6/10, D1 = 1 - 2*.6*2/6 = .6,
    # D2 = 2 - 3*.6*1/2 = 1.1, D3+ = 3 - 4*.6*1/1 = .6.
    D1, D2, D3 = 0.6, 1.1, 0.6
    p1 = _unigram_continuation_probs()
    one_hot = np.eye(5)

    def level2(counts, n1, n2, n3):
        total = sum(counts.values())
        gamma = (D1 * n1 + D2 * n2 + D3 * n3) / total
        disc = {1: D1, 2: D2}
        alpha = sum((c - disc.get(c, D3)) / total * one_hot[w] for w, c in counts.items())
        return alpha + gamma * p1

    expected = {
        A: level2({A: 1, B: 1, C: 1, D: 3}, 3, 0, 1),
        B: level2({D: 1}, 1, 0, 0),
        C: level2({C: 1, D: 2}, 1, 1, 0),
        D: level2({A: 4, C: 1, D: 2}, 1, 1, 1),
    }
    # Spelled out once: p(d | a) = (3 - .6)/6 + (.6*3 + .6*1)/6 * p1(d).
    assert expected[A][D] == pytest.approx(2.4 / 6 + 2.4 / 6 * ((4 - 5 / 3) / 10 + 7 / 75))
    m = _fit(TINY, 2, 5)
    np.testing.assert_allclose(m.discounts[1], [D1, D2, D3], rtol=1e-12)
    np.testing.assert_allclose(m.discounts[0], [1 / 3, 1, 5 / 3], rtol=1e-12)
    got = _probs(m, [[A], [B], [C], [D], [E], []])
    for i, h in enumerate([A, B, C, D]):
        np.testing.assert_allclose(got[i], expected[h], rtol=1e-12)
    # An unseen context (e) and the empty context both give the unigram level.
    np.testing.assert_allclose(got[4], p1, rtol=1e-12)
    np.testing.assert_allclose(got[5], p1, rtol=1e-12)
    # Only the last order-1 = 1 token of a longer context matters.
    np.testing.assert_allclose(_probs(m, [[B, C, A]])[0], expected[A], rtol=1e-12)


def test_hand_computed_order_3():
    # Trigrams: dda twice, 14 others once (add daa aad ada dac acc ccd cdc dcd cdd dab abd bda dad).
    # Level 3: n1 = 14, n2 = 1, n3 = n4 = 0: Y = 14/16, D1 = 1 - 2*Y*1/14 = .875,
    # D2 = 2 - 3*Y*0/1 = 2, D3+ falls back (n3 = 0) to 1.5.
    # Level 2 continuation counts N1+(. xy): ad {a,d} 2, dd {a,c} 2, da {d,a,b} 3, aa 1, ac 1,
    # cc 1, cd {c,d} 2, dc 1, ab 1, bd 1 (the corpus start is no left neighbour).
    # n1 = 6, n2 = 3, n3 = 1, n4 = 0: Y = 1/2, D1 = 1 - 2*.5*3/6 = .5, D2 = 2 - 3*.5*1/3 = 1.5,
    # D3+ = 3 - 0 = 3.
    p1 = _unigram_continuation_probs()
    # p2(. | a): continuations aa 1, ab 1, ac 1, ad 2 (total 5); gamma = (.5*3 + 1.5*1)/5 = .6.
    p2_a = np.array([(1 - 0.5) / 5, (1 - 0.5) / 5, (1 - 0.5) / 5, (2 - 1.5) / 5, 0]) + 0.6 * p1
    # p3(. | d a): trigrams daa, dab, dac, dad once each (total 4); gamma = .875*4/4.
    p3_da = np.array([1, 1, 1, 1, 0]) * (1 - 0.875) / 4 + 0.875 * p2_a
    # p3(. | d d): dda twice; D2 = 2 takes it all: gamma = 2*1/2 = 1 and p3 = p2(. | d).
    # p2(. | d): continuations da 3, dc 1, dd 2 (total 6); gamma = (.5*1 + 1.5*1 + 3*1)/6.
    p2_d = np.array([(3 - 3) / 6, 0, (1 - 0.5) / 6, (2 - 1.5) / 6, 0]) + 5 / 6 * p1

    m = _fit(TINY, 3, 5)
    np.testing.assert_allclose(m.discounts[2], [0.875, 2.0, 1.5], rtol=1e-12)
    np.testing.assert_allclose(m.discounts[1], [0.5, 1.5, 3.0], rtol=1e-12)
    got = _probs(m, [[D, A], [E, A], [A], [D, D], [C, B, D, A]])
    np.testing.assert_allclose(got[0], p3_da, rtol=1e-12)
    np.testing.assert_allclose(got[1], p2_a, rtol=1e-12)  # unseen context "e a" backs off
    np.testing.assert_allclose(got[2], p2_a, rtol=1e-12)  # short context: level 2 (continuation)
    np.testing.assert_allclose(got[3], p2_d, rtol=1e-12)
    np.testing.assert_allclose(got[4], p3_da, rtol=1e-12)
    # Sequence scoring of "a d d a": position 1 (d after a) uses the short context [a];
    # position 2 uses "a d" (trigrams add, ada once each: gamma = .875), position 3 uses "d d".
    p3_ad_d = (1 - 0.875) / 2 + 0.875 * p2_d[D]
    lp = m.sequence_logprobs(TINY[:4], start=1)
    np.testing.assert_allclose(np.exp(lp), [p2_a[D], p3_ad_d, p2_d[A]], rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# An independent, loop-and-dict implementation of the same model.


def _ref_discounts(values):
    n = [sum(1 for v in values if v == j) for j in (1, 2, 3, 4)]
    out = []
    for j, fallback in zip((1, 2, 3), (0.5, 1.0, 1.5)):
        d = None
        if n[0] + 2 * n[1] > 0 and n[j - 1] > 0:
            y = n[0] / (n[0] + 2 * n[1])
            d = j - (j + 1) * y * n[j] / n[j - 1]
        out.append(d if d is not None and d > 0 else fallback)
    return out


class _RefKN:
    def __init__(self, tokens, V, order):
        tokens = [int(t) for t in tokens]
        self.V, self.order = V, order
        grams = {
            k: Counter(tuple(tokens[i : i + k]) for i in range(len(tokens) - k + 1))
            for k in range(1, order + 1)
        }
        self.counts = {}
        for k in range(1, order + 1):
            if k == order:
                self.counts[k] = dict(grams[k])
            else:
                left = {}
                for g in grams[k + 1]:
                    left.setdefault(g[1:], set()).add(g[0])
                self.counts[k] = {g: len(s) for g, s in left.items()}
        self.disc = {k: _ref_discounts(self.counts[k].values()) for k in self.counts}

    def prob(self, w, h):
        h = tuple(h)[max(0, len(h) - (self.order - 1)) :]
        return self._p(w, h)

    def _p(self, w, h):
        k = len(h) + 1
        lower = self._p(w, h[1:]) if k > 1 else 1.0 / self.V
        c = self.counts[k]
        row = {v: c.get(h + (v,), 0) for v in range(self.V)}
        total = sum(row.values())
        if total == 0:
            return lower
        d1, d2, d3 = self.disc[k]
        disc = lambda x: 0 if x == 0 else d1 if x == 1 else d2 if x == 2 else d3  # noqa: E731
        gamma = sum(disc(x) for x in row.values()) / total
        return max(row[w] - disc(row[w]), 0) / total + gamma * lower


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_independent_reference(order, seed):
    rng = np.random.default_rng(seed)
    V = 6
    # Skewed token distribution over ids 0..4 (id 5 never occurs), short: fallbacks get exercised.
    n_tokens = [15, 60, 300][seed]
    tokens = rng.choice(5, size=n_tokens, p=[0.4, 0.25, 0.2, 0.1, 0.05])
    ref = _RefKN(tokens, V, order)
    m = _fit(tokens, order, V)
    for k in range(1, order + 1):
        np.testing.assert_allclose(m.discounts[k - 1], ref.disc[k], rtol=1e-12)
    contexts = [tokens[i : i + L] for i, L in zip(rng.integers(0, n_tokens - 5, 12), rng.integers(0, 5, 12))]
    contexts += [np.array([5]), np.array([5, 0, 1]), np.array([], np.int64)]
    got = _probs(m, contexts)
    for b, h in enumerate(contexts):
        np.testing.assert_allclose(got[b], [ref.prob(w, h) for w in range(V)], rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Properties.


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_normalized_for_seen_and_unseen_contexts(order):
    rng = np.random.default_rng(10 + order)
    V = 12
    tokens = rng.choice(9, size=2000, p=np.arange(9, 0, -1) / 45)  # ids 9..11 never occur
    m = _fit(tokens, order, V)
    contexts = [tokens[i : i + L] for i, L in zip(rng.integers(0, 1990, 40), rng.integers(0, 7, 40))]
    contexts += [rng.integers(0, V, L) for L in range(0, 7)]  # random: mostly unseen
    contexts += [np.array([9, 10, 11]), np.array([11]), np.array([0, 11, 0])]
    lp = m.next_token_logprobs(contexts)
    assert lp.shape == (len(contexts), V) and lp.dtype == np.float64
    assert np.isfinite(lp).all()
    np.testing.assert_allclose(np.exp(lp).sum(-1), 1.0, rtol=0, atol=1e-12)
    # The 2-D array form gives the same rows as the list form.
    arr = np.stack([c for c in contexts if len(c) == 3])
    np.testing.assert_array_equal(m.next_token_logprobs(arr), m.next_token_logprobs(list(arr)))


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_sequence_and_window_logprobs_equal_looped_next_token(order):
    rng = np.random.default_rng(20 + order)
    V = 7
    train = rng.choice(6, size=3000, p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
    m = _fit(train, order, V)
    seq = np.concatenate([train[100:130], rng.integers(0, V, 20)])  # seen, then novel
    for start in [0, 1, 4]:
        lp = m.sequence_logprobs(seq, start=start)
        looped = m.next_token_logprobs([seq[max(0, i - order + 1) : i] for i in range(start, seq.size)])
        np.testing.assert_allclose(lp, looped[np.arange(lp.size), seq[start:]], rtol=1e-12)
    windows = np.stack([seq[0:9], seq[20:29], seq[35:44]])
    wl = m.window_logprobs(windows)
    assert wl.shape == (3, 8)
    for b in range(3):
        np.testing.assert_allclose(wl[b], m.sequence_logprobs(windows[b], start=1), rtol=1e-12)
    assert m.sequence_logprobs(seq, start=seq.size).shape == (0,)


def test_more_context_helps_on_real_text():
    """On Tiny Shakespeare characters the held-out loss drops from order 1 to 3 and is < log V."""
    from importlib import resources

    text = resources.files("lmjax.data").joinpath("tinyshakespeare.txt").read_bytes()[:120_000]
    data = np.frombuffer(text, np.uint8)
    train, val = data[:100_000], data[100_000:]
    losses = [-_fit(train, order, 256).sequence_logprobs(val).mean() for order in (1, 2, 3)]
    assert losses[0] < math.log(256)
    assert losses[0] > losses[1] > losses[2]


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    m = NGramLM.fit(rng.integers(0, 20, 500), NGramConfig(vocab_size=23, order=4, context=16))
    path = tmp_path / "model.ngram"  # no .npz suffix: saved at exactly this path
    m.save(path)
    assert path.exists()
    m2 = NGramLM.load(path)
    assert m2.cfg == m.cfg and m2.num_ngrams == m.num_ngrams
    seq = rng.integers(0, 23, 50)
    np.testing.assert_array_equal(m2.sequence_logprobs(seq), m.sequence_logprobs(seq))
    np.testing.assert_array_equal(m2.discounts, m.discounts)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(2))
    with pytest.raises(ConfigError, match="not an lmjax n-gram"):
        NGramLM.load(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        NGramLM.load(tmp_path / "missing.npz")


def test_num_ngrams_counts_distinct_grams():
    m = _fit(TINY, 3, 5)
    # 4 distinct unigrams, 10 distinct bigrams, 15 distinct trigrams.
    assert m.num_ngrams == 4 + 10 + 15


def test_no_int64_overflow_with_large_vocab_and_order():
    V = 1_000_003  # V**6 would overflow base-V int64 keys
    tokens = np.random.default_rng(6).integers(V - 40, V, 400)
    m = _fit(tokens, 6, V)
    lp = m.sequence_logprobs(tokens[:60])
    assert np.isfinite(lp).all() and (lp < 0).all()
    # Training text repeated verbatim scores better than the uniform 1/V.
    assert lp.mean() > -math.log(V) + 5


@pytest.mark.parametrize(
    "kw, word",
    [
        (dict(order=0), "order"),
        (dict(order=-2), "order"),
        (dict(order=2.0), "order"),
        (dict(vocab_size=-1), "vocab_size"),
        (dict(context=0), "context"),
        (dict(family="lstm"), "family"),
    ],
)
def test_bad_config_raises(kw, word):
    cfg = NGramConfig(**{"vocab_size": 5, **kw})
    with pytest.raises(ConfigError, match=word):
        cfg.validate()
    with pytest.raises(ConfigError, match=word):
        NGramLM.fit(TINY, cfg)


def test_bad_tokens_raise():
    with pytest.raises(ConfigError, match="vocab_size must be set"):
        NGramLM.fit(TINY, NGramConfig(vocab_size=0, order=2))
    with pytest.raises(ConfigError, match=r"\[0, 3\)"):
        NGramLM.fit(TINY, NGramConfig(vocab_size=3, order=2))
    with pytest.raises(ConfigError, match="integer"):
        NGramLM.fit(TINY.astype(float), NGramConfig(vocab_size=5, order=2))
    m = _fit(TINY, 2, 5)
    with pytest.raises(ConfigError, match="context 1"):
        m.next_token_logprobs([np.array([0]), np.array([7])])
    with pytest.raises(ConfigError, match="2-D"):
        m.next_token_logprobs(np.array([0, 1]))
    with pytest.raises(ConfigError, match="start"):
        m.sequence_logprobs(TINY, start=-1)
    with pytest.raises(ConfigError, match="windows_BT"):
        m.window_logprobs(TINY)


def test_modified_kn_discounts_formula():
    # n1..n4 = 4, 3, 2, 1: Y = 4/10; D1 = 1 - 2*.4*3/4 = .4, D2 = 2 - 3*.4*2/3 = 1.2,
    # D3+ = 3 - 4*.4*1/2 = 2.2.
    counts = np.array([1] * 4 + [2] * 3 + [3] * 2 + [4] + [9, 0])
    np.testing.assert_allclose(ngram.modified_kn_discounts(counts), [0.4, 1.2, 2.2], rtol=1e-14)
