"""lmjax.sampling: filters against brute-force numpy references, sampling against softmax."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from lmjax import sampling
from lmjax.errors import ConfigError


def _softmax64(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _kept(processed):
    return np.isfinite(np.asarray(processed))


def test_greedy_equals_argmax_including_ties():
    rng = np.random.default_rng(0)
    for shape in [(7,), (4, 7), (2, 3, 7)]:
        logits = rng.normal(size=shape).astype(np.float32)
        got = sampling.greedy(logits)
        assert got.shape == shape[:-1] and got.dtype == jnp.int32
        np.testing.assert_array_equal(got, np.argmax(logits, axis=-1))
    # Ties resolve to the lowest id, as numpy's argmax does.
    tied = np.array([[0.0, 2.0, 2.0, 1.0], [3.0, 3.0, 3.0, 3.0]], np.float32)
    np.testing.assert_array_equal(sampling.greedy(tied), [1, 0])


def test_top_p_keeps_the_minimal_set_brute_force():
    """Against an enumeration of all subsets: the smallest set reaching p, the most likely one."""
    rng = np.random.default_rng(1)
    R, V = 300, 8
    logits = (rng.normal(size=(R, V)) * rng.uniform(0.3, 3.0, size=(R, 1))).astype(np.float32)
    ps = rng.uniform(0.05, 0.999, size=R)
    probs = _softmax64(logits)
    subsets = np.array(list(itertools.product([False, True], repeat=V)))  # (2^V, V)
    sizes = subsets.sum(1)
    checked = 0
    for r in range(R):
        cum = np.cumsum(np.sort(probs[r])[::-1])
        if np.min(np.abs(cum - ps[r])) < 1e-5:  # too close to call in float32
            continue
        mass = subsets @ probs[r]
        ok = mass >= ps[r]
        smallest = sizes[ok].min()
        cands = np.nonzero(ok & (sizes == smallest))[0]
        expected = subsets[cands[np.argmax(mass[cands])]]
        got = _kept(sampling.top_p(logits[r], float(ps[r])))
        np.testing.assert_array_equal(got, expected, err_msg=f"row {r}, p={ps[r]}")
        checked += 1
    assert checked > 250
    # Batched call agrees with the row-by-row calls for the same p.
    batched = _kept(sampling.top_p(logits, 0.7))
    rowwise = np.stack([_kept(sampling.top_p(row, 0.7)) for row in logits[:5]])
    np.testing.assert_array_equal(batched[:5], rowwise)


def test_top_p_edges_and_ties():
    logits = jnp.array([[1.0, 3.0, 2.0, 0.0]])
    # Tiny p keeps only the argmax; p = 1 keeps everything.
    np.testing.assert_array_equal(_kept(sampling.top_p(logits, 1e-6)), [[0, 1, 0, 0]])
    np.testing.assert_array_equal(_kept(sampling.top_p(logits, 1.0)), [[1, 1, 1, 1]])
    # Four tied tokens, p = 0.5: two of them are needed; the lower ids win.
    tied = jnp.zeros((1, 4))
    np.testing.assert_array_equal(_kept(sampling.top_p(tied, 0.5)), [[1, 1, 0, 0]])
    # Values of kept tokens are unchanged.
    out = np.asarray(sampling.top_p(logits, 0.9))
    np.testing.assert_array_equal(out[_kept(out)], np.asarray(logits)[_kept(out)])


def test_top_k_keeps_exactly_k():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(50, 12)).astype(np.float32)  # continuous: no ties
    for k in [1, 3, 11, 12, 20]:
        kept = _kept(sampling.top_k(logits, k))
        assert (kept.sum(-1) == min(k, 12)).all()
        kth = np.sort(logits, axis=-1)[:, ::-1][:, min(k, 12) - 1 : min(k, 12)]
        np.testing.assert_array_equal(kept, logits >= kth)
    # With ties still exactly k, lower ids first.
    tied = jnp.array([1.0, 2.0, 2.0, 2.0, 0.0])
    np.testing.assert_array_equal(_kept(sampling.top_k(tied, 2)), [0, 1, 1, 0, 0])


def test_min_p_against_reference():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(40, 9)).astype(np.float32) * 2
    for p in [0.0, 0.05, 0.3, 0.9, 1.0]:
        probs = _softmax64(logits)
        expected = probs >= p * probs.max(-1, keepdims=True)
        ratio = probs / (p * probs.max(-1, keepdims=True) + 1e-300)
        clear = np.abs(ratio - 1) > 1e-4  # skip float32 boundary cases
        kept = _kept(sampling.min_p(logits, p))
        np.testing.assert_array_equal(kept[clear], expected[clear])
        assert kept[np.arange(40), logits.argmax(-1)].all()


def test_temperature_sharpens_entropy_monotonically():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(5, 16)).astype(np.float32)
    temps = [8.0, 4.0, 2.0, 1.0, 0.7, 0.5, 0.3, 0.2, 0.1]
    ents = []
    for t in temps:
        tempered = sampling.apply_temperature(logits, t)
        p = _softmax64(np.asarray(tempered))
        ent = -(p * np.log(np.where(p > 0, p, 1))).sum(-1)
        ref = _softmax64(logits.astype(np.float64) / t)
        np.testing.assert_allclose(p, ref, rtol=1e-5, atol=1e-7)
        ents.append(ent)
    ents = np.array(ents)  # (len(temps), 5)
    assert (np.diff(ents, axis=0) < 0).all()
    assert (ents[0] < math.log(16)).all() and (ents[-1] > 0).all()


def _draw(key, logits, n, **kw):
    fn = jax.jit(
        lambda k, lg: sampling.sample(k, jnp.broadcast_to(lg, (n, lg.shape[-1])), **kw)
    )
    return np.asarray(fn(key, logits))


def test_sampling_matches_softmax_chi_squared():
    logits = jnp.array([1.0, 0.2, -0.5, 2.0, 0.0, -1.5, 0.7, 1.3])
    V, n = logits.shape[0], 40_000
    draws = _draw(jax.random.key(0), logits, n, temperature=1.0, top_k=V, top_p=1.0)
    counts = np.bincount(draws, minlength=V)
    expected = n * _softmax64(np.asarray(logits))
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    # A wrong distribution (uniform) is rejected by the same test: it has power.
    assert stats.chisquare(counts, np.full(V, n / V)).pvalue < 1e-6


def test_sampling_with_filters_matches_renormalized_softmax():
    """temperature -> top-k -> top-p: draws follow softmax(logits / T) renormalized on the kept set."""
    logits = np.array([2.0, 1.5, 1.0, 0.5, 0.0, -1.0], np.float32)
    T, n = 1.5, 40_000
    # top_k=4 drops ids 4, 5; on the tempered top-4 probabilities (about .39, .28, .20, .14)
    # top_p = 0.8 keeps the first three.
    p4 = _softmax64(logits[:4] / T)
    assert p4[:2].sum() < 0.8 < p4[:3].sum() - 1e-3
    draws = _draw(jax.random.key(1), jnp.asarray(logits), n, temperature=T, top_k=4, top_p=0.8)
    counts = np.bincount(draws, minlength=6)
    assert counts[3:].sum() == 0
    expected = n * _softmax64(logits[:3] / T)
    assert stats.chisquare(counts[:3], expected).pvalue > 1e-3


def test_filter_order_temperature_first():
    # At T = 1 top_p = 0.6 needs two tokens; at T = 0.25 the argmax alone holds > 0.6.
    logits = jnp.array([1.0, 0.8, 0.0])
    assert _kept(sampling.process_logits(logits, top_p=0.6)).sum() == 2
    assert _kept(sampling.process_logits(logits, temperature=0.25, top_p=0.6)).sum() == 1
    # min-p after top-k: p(1) / p(0) = exp(-0.2) = 0.8187 decides whether token 1 stays.
    np.testing.assert_array_equal(_kept(sampling.process_logits(logits, top_k=2, min_p=0.81)), [1, 1, 0])
    np.testing.assert_array_equal(_kept(sampling.process_logits(logits, top_k=2, min_p=0.83)), [1, 0, 0])


def test_temperature_zero_is_greedy_also_traced():
    rng = np.random.default_rng(5)
    logits = jnp.asarray(rng.normal(size=(6, 10)), jnp.float32)
    for seed in range(3):
        got = sampling.sample(jax.random.key(seed), logits, temperature=0.0, top_p=0.5)
        np.testing.assert_array_equal(got, np.argmax(np.asarray(logits), -1))
    fn = jax.jit(sampling.sample, static_argnames=("top_k",))
    t = jnp.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])  # per-row temperature
    got = np.asarray(fn(jax.random.key(0), logits, temperature=t, top_k=1))
    # top_k=1 makes every row deterministic: all rows give the argmax.
    np.testing.assert_array_equal(got, np.argmax(np.asarray(logits), -1))
    assert got.dtype == np.int32


@pytest.mark.parametrize(
    "kw, word",
    [
        (dict(temperature=-0.5), "temperature"),
        (dict(temperature="hot"), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=0), "top_k"),
        (dict(top_k=2.5), "top_k"),
        (dict(min_p=-0.1), "min_p"),
        (dict(min_p=1.01), "min_p"),
    ],
)
def test_bad_arguments_raise_config_error(kw, word):
    with pytest.raises(ConfigError, match=word):
        sampling.sample(jax.random.key(0), jnp.zeros(4), **kw)


def test_bad_processor_arguments():
    with pytest.raises(ConfigError, match="temperature"):
        sampling.apply_temperature(jnp.zeros(3), 0.0)
    with pytest.raises(ConfigError, match="top_k"):
        sampling.top_k(jnp.zeros(3), -1)
    with pytest.raises(ConfigError, match="top_p"):
        sampling.top_p(jnp.zeros(3), -0.2)
    with pytest.raises(ConfigError, match="min_p"):
        sampling.min_p(jnp.zeros(3), 2.0)
