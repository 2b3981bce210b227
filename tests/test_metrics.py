"""lmjax.metrics against float64 numpy references, identities and closed forms."""

import math

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmjax import metrics
from lmjax.errors import ConfigError


def _ref_entropy(p):
    p = np.asarray(p, np.float64)
    return -sum(pi * math.log(pi) for pi in p if pi > 0)


def _ref_cross_entropy(p, q):
    total = 0.0
    for pi, qi in zip(np.asarray(p, np.float64), np.asarray(q, np.float64)):
        if pi > 0:
            total -= pi * math.log(qi) if qi > 0 else -math.inf
    return total


def _ref_log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


# Distributions with some exact zeros: nonnegative weights, normalized.
_weights = hnp.arrays(
    np.float64,
    st.integers(2, 12),
    elements=st.one_of(st.just(0.0), st.floats(1e-3, 10.0)),
).filter(lambda w: w.sum() > 0)


def _normalize(w):
    return w / w.sum()


@settings(max_examples=60, deadline=None)
@given(_weights, st.data())
def test_cross_entropy_is_entropy_plus_kl(w_p, data):
    p = _normalize(w_p)
    w_q = data.draw(hnp.arrays(np.float64, p.shape, elements=st.floats(1e-3, 10.0)))
    q = _normalize(w_q)  # q > 0 everywhere: every term finite
    h_pq = metrics.cross_entropy(p, q)
    h_p = metrics.entropy(p)
    kl = metrics.kl_divergence(p, q)
    assert isinstance(h_pq, np.floating) and h_pq.dtype == np.float64
    np.testing.assert_allclose(h_pq, h_p + kl, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_p, _ref_entropy(p), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_pq, _ref_cross_entropy(p, q), rtol=1e-12, atol=1e-12)
    assert kl >= -1e-12


def test_jnp_path_matches_numpy_float64_under_jit():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(7), size=50)
    p[::3, 2] = 0.0  # exact zeros in p
    p /= p.sum(-1, keepdims=True)
    q = rng.dirichlet(np.ones(7), size=50)

    @jax.jit
    def all_three(p, q):
        return metrics.entropy(p), metrics.cross_entropy(p, q), metrics.kl_divergence(p, q)

    h_p, h_pq, kl = all_three(jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32))
    ref_h = np.array([_ref_entropy(r) for r in p])
    ref_hpq = np.array([_ref_cross_entropy(a, b) for a, b in zip(p, q)])
    np.testing.assert_allclose(h_p, ref_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_pq, ref_hpq, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kl, ref_hpq - ref_h, rtol=1e-4, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(_weights)
def test_kl_nonnegative_and_zero_on_self(w):
    p = _normalize(w)
    rng = np.random.default_rng(int(w.size))
    q = _normalize(rng.random(p.size) + 1e-3)
    assert metrics.kl_divergence(p, q) >= 0
    assert abs(metrics.kl_divergence(p, p)) < 1e-12
    assert metrics.entropy(p) >= 0
    assert metrics.entropy(p) <= math.log(p.size) + 1e-12


@pytest.mark.parametrize("V", [1, 2, 7, 256])
def test_uniform_entropy_is_log_v(V):
    p = np.full(V, 1.0 / V)
    np.testing.assert_allclose(metrics.entropy(p), math.log(V), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(metrics.entropy(p, base="bits"), math.log2(V), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        metrics.entropy_from_logits(jnp.zeros(V)), math.log(V), rtol=1e-6, atol=1e-6
    )


def test_zero_probabilities():
    p = np.array([0.5, 0.5, 0.0])
    # 0 log 0 = 0: entropy of a 2-point uniform, no nan.
    assert metrics.entropy(p) == pytest.approx(math.log(2), abs=1e-15)
    assert float(metrics.entropy(jnp.asarray(p))) == pytest.approx(math.log(2), abs=1e-6)
    # q = 0 where p = 0: finite.
    q = np.array([0.25, 0.75, 0.0])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert metrics.kl_divergence(p, q) == pytest.approx(expected, abs=1e-15)
    # q = 0 where p > 0: +inf, for numpy and jnp, and under jit.
    q = np.array([1.0, 0.0, 0.0])
    assert metrics.kl_divergence(p, q) == math.inf
    assert metrics.cross_entropy(p, q) == math.inf
    assert float(metrics.kl_divergence(jnp.asarray(p), jnp.asarray(q))) == math.inf
    assert float(jax.jit(metrics.cross_entropy)(jnp.asarray(p), jnp.asarray(q))) == math.inf
    # One-hot p: zero entropy, and no nan anywhere in a batch with zeros.
    batch = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(metrics.entropy(batch), [0.0, 0.0])
    assert not np.isnan(np.asarray(metrics.entropy(jnp.asarray(batch)))).any()


def test_gradient_of_entropy_is_finite_at_zeros():
    g = jax.grad(lambda p: metrics.entropy(p))(jnp.array([0.5, 0.5, 0.0]))
    assert np.isfinite(np.asarray(g)).all()


def test_batched_last_axis_and_jit():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=(3, 4))
    q = rng.dirichlet(np.ones(5), size=(3, 4))
    got = jax.jit(metrics.kl_divergence)(jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32))
    assert got.shape == (3, 4)
    ref = np.sum(p * np.log(p / q), axis=-1)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(metrics.kl_divergence(p, q, base="bits"), ref / math.log(2), rtol=1e-12)


def test_logit_functions_against_float64_reference():
    rng = np.random.default_rng(1)
    B, T, V = 2, 5, 11
    logits_BTV = rng.normal(size=(B, T, V)) * 3
    targets_BT = rng.integers(0, V, size=(B, T))
    ref_logp = _ref_log_softmax(logits_BTV)
    ref_tok = np.take_along_axis(ref_logp, targets_BT[..., None], -1)[..., 0]

    tok = metrics.token_logprobs(jnp.asarray(logits_BTV, jnp.float32), targets_BT)
    assert tok.shape == (B, T) and tok.dtype == jnp.float32
    np.testing.assert_allclose(tok, ref_tok, rtol=1e-5, atol=1e-5)

    loss = metrics.cross_entropy_from_logits(jnp.asarray(logits_BTV, jnp.float32), targets_BT)
    np.testing.assert_allclose(loss, -ref_tok.mean(), rtol=1e-5)

    mask_BT = rng.random((B, T)) < 0.5
    mask_BT[0, 0] = True
    masked = jax.jit(metrics.cross_entropy_from_logits)(
        jnp.asarray(logits_BTV, jnp.float32), targets_BT, mask_BT
    )
    np.testing.assert_allclose(masked, -ref_tok[mask_BT].mean(), rtol=1e-5)

    weights_BT = rng.random((B, T))
    weighted = metrics.cross_entropy_from_logits(logits_BTV, targets_BT, weights_BT)
    np.testing.assert_allclose(weighted, -(ref_tok * weights_BT).sum() / weights_BT.sum(), rtol=1e-5)

    ent = metrics.entropy_from_logits(logits_BTV)
    np.testing.assert_allclose(ent, -(np.exp(ref_logp) * ref_logp).sum(-1), rtol=1e-5, atol=1e-5)


def test_logits_stable_for_huge_values_bf16_and_neg_inf():
    logits = jnp.array([[1000.0, 0.0, -1000.0]])
    lp = metrics.token_logprobs(logits, jnp.array([0]))
    assert np.isfinite(np.asarray(lp)).all() and abs(float(lp[0])) < 1e-6
    # bf16 input is computed in float32.
    x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 9)), jnp.bfloat16)
    got = metrics.token_logprobs(x, jnp.arange(4))
    assert got.dtype == jnp.float32
    ref = _ref_log_softmax(np.asarray(x.astype(jnp.float32)))[np.arange(4), np.arange(4)]
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    # -inf logits are zero-probability tokens: entropy stays finite, their log-prob is -inf.
    masked = jnp.array([0.0, 0.0, -jnp.inf])
    assert float(metrics.entropy_from_logits(masked)) == pytest.approx(math.log(2), abs=1e-6)
    assert float(metrics.token_logprobs(masked, jnp.array(2))) == -math.inf
    # A masked-out -inf token does not poison the mean.
    loss = metrics.cross_entropy_from_logits(masked[None, None], jnp.array([[2]]), jnp.array([[0.0]]))
    assert float(loss) == 0.0


def test_conversions():
    assert metrics.perplexity(math.log(50.0)) == pytest.approx(50.0, rel=1e-12)
    assert float(metrics.perplexity(jnp.float32(math.log(7.0)))) == pytest.approx(7.0, rel=1e-6)
    assert metrics.nats_to_bits(math.log(8.0)) == pytest.approx(3.0, rel=1e-12)
    assert metrics.bits_to_nats(1.0) == pytest.approx(math.log(2), rel=1e-12)
    # 2.0 nats/token with 4 bytes per token: 2 / ln 2 / 4 bits per byte.
    assert metrics.bits_per_byte(2.0, 4.0) == pytest.approx(2.0 / 0.6931471805599453 / 4.0, rel=1e-12)
    np.testing.assert_allclose(
        metrics.bits_per_byte(np.array([1.0, 3.0]), 2.0), np.array([1.0, 3.0]) / math.log(2) / 2
    )


def test_bad_inputs_raise_config_error():
    with pytest.raises(ConfigError, match="base"):
        metrics.entropy(np.array([1.0]), base="dits")
    with pytest.raises(ConfigError, match="bytes_per_token"):
        metrics.bits_per_byte(1.0, 0.0)
    with pytest.raises(ConfigError, match="shape"):
        metrics.token_logprobs(jnp.zeros((2, 3, 5)), jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ConfigError, match="mask"):
        metrics.cross_entropy_from_logits(
            jnp.zeros((2, 3, 5)), jnp.zeros((2, 3), jnp.int32), jnp.ones((3, 2))
        )
