"""Transformer against float64 numpy references: attention, positions, loss, counts, FLOPs, causality."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import models
from lmjax.models.layers import sinusoidal_table
from lmjax.models.transformer import Transformer, TransformerConfig, causal_attention, rope
from lmjax.train.step import loss_sums, token_losses


def init(cfg, T=None, seed=0):
    model = Transformer(cfg)
    x = jnp.zeros((2, T or cfg.context), jnp.int32)
    boxed = model.init(jax.random.key(seed), x)["params"]
    return model, boxed, nn.meta.unbox(boxed)


def np_softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def test_attention_matches_float64_numpy():
    rng = np.random.default_rng(0)
    B, T, H, K = 2, 7, 3, 5
    q, k, v = (rng.normal(size=(B, T, H, K)) for _ in range(3))
    out, probs = causal_attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)))
    s = np.einsum("bthk,bshk->bhts", q, k) / np.sqrt(K)
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    p = np_softmax(s)
    ref = np.einsum("bhts,bshk->bthk", p, v)
    np.testing.assert_allclose(np.asarray(probs), p, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)
    assert np.allclose(np.asarray(probs).sum(-1), 1.0, atol=1e-6)


def test_sinusoidal_matches_vaswani_formula():
    T, D = 11, 8
    pe = np.asarray(sinusoidal_table(T, D))
    ref = np.zeros((T, D))
    for t in range(T):
        for i in range(D // 2):
            ref[t, 2 * i] = np.sin(t / 10000 ** (2 * i / D))
            ref[t, 2 * i + 1] = np.cos(t / 10000 ** (2 * i / D))
    np.testing.assert_allclose(pe, ref, atol=1e-5)


def test_rope_matches_numpy_rotation_and_is_relative():
    rng = np.random.default_rng(1)
    B, T, H, K = 1, 9, 2, 6
    x = rng.normal(size=(B, T, H, K))
    got = np.asarray(rope(jnp.asarray(x, jnp.float32), 10000.0))
    ref = np.empty_like(x)
    half = K // 2
    for t in range(T):
        for j in range(half):
            theta = t / 10000 ** (2 * j / K)
            a, b = x[:, t, :, j], x[:, t, :, j + half]
            ref[:, t, :, j] = a * np.cos(theta) - b * np.sin(theta)
            ref[:, t, :, j + half] = b * np.cos(theta) + a * np.sin(theta)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # Relative: <rope(q)_t, rope(k)_s> depends on t - s only.
    q = np.tile(rng.normal(size=(1, 1, 1, K)), (1, T, 1, 1))
    k = np.tile(rng.normal(size=(1, 1, 1, K)), (1, T, 1, 1))
    rq, rk = (np.asarray(rope(jnp.asarray(a, jnp.float32), 10000.0))[0, :, 0] for a in (q, k))
    assert abs(rq[5] @ rk[3] - rq[7] @ rk[5]) < 1e-4
    assert abs(rq[5] @ rk[3] - rq[5] @ rk[1]) > 1e-3


def test_loss_matches_float64_numpy():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 5, 11)) * 3
    targets = rng.integers(0, 11, size=(3, 5))
    got = np.asarray(token_losses(jnp.asarray(logits, jnp.float32), jnp.asarray(targets)))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ref = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_forward_matches_numpy_reference_model():
    """A whole 1-layer forward pass re-implemented in float64 numpy from the parameter tree."""
    cfg = TransformerConfig(vocab_size=13, context=6, d_model=8, n_layers=1, n_heads=2, use_bias=True,
                            tied_embeddings=False, positions="learned")
    model, _, p = init(cfg, seed=3)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64) + 0.0, p)
    p = jax.tree.map(lambda a: a + np.random.default_rng(4).normal(size=a.shape) * 0.1, p)  # non-trivial biases
    tokens = np.random.default_rng(5).integers(0, 13, size=(2, 6))
    got = np.asarray(model.apply({"params": jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p)},
                                 jnp.asarray(tokens)))

    def ln(x, q):
        x = x - x.mean(-1, keepdims=True)
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * q["scale"] + q["bias"]

    def gelu(x):
        from math import erf
        return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))

    L = p["layer_0"]
    x = p["embed"]["embedding"][tokens] + p["pos_embed"][:6]
    h = ln(x, L["norm_attn"])
    qkv = np.einsum("btd,dchk->btchk", h, L["attn"]["qkv"]["kernel"]) + L["attn"]["qkv"]["bias"]
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    s = np.einsum("bthk,bshk->bhts", q, k) / np.sqrt(4)
    s = np.where(np.tril(np.ones((6, 6), bool)), s, -np.inf)
    a = np.einsum("bhts,bshk->bthk", np_softmax(s), v)
    x = x + np.einsum("bthk,hkd->btd", a, L["attn"]["out"]["kernel"]) + L["attn"]["out"]["bias"]
    h = ln(x, L["norm_mlp"])
    m = gelu(h @ L["mlp"]["up"]["kernel"] + L["mlp"]["up"]["bias"])
    x = x + m @ L["mlp"]["down"]["kernel"] + L["mlp"]["down"]["bias"]
    ref = ln(x, p["norm_out"]) @ p["unembed"]["kernel"] + p["unembed"]["bias"]
    np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rope"])
def test_causality_through_gradients(positions):
    """The output at position t has zero gradient with respect to the inputs after t."""
    V, T, D = 17, 8, 16
    cfg = TransformerConfig(vocab_size=V, context=T, d_model=D, n_layers=2, n_heads=2, positions=positions)
    _, _, p = init(cfg)
    tokens = jax.random.randint(jax.random.key(2), (T,), 0, V)
    emb = p["embed"]["embedding"]
    # Give every position its own embedding row (ids V..V+T-1) plus a perturbation we differentiate.
    wide = Transformer(dataclasses.replace(cfg, vocab_size=V + T))

    def out_at(perturb_TD, t):
        table = jnp.concatenate([emb, emb[tokens] + perturb_TD], 0)
        logits = wide.apply({"params": {**p, "embed": {"embedding": table}}}, (V + jnp.arange(T))[None])
        return logits[0, t, :V].sum()

    for t in (0, 3, 7):
        g = np.abs(np.asarray(jax.grad(out_at)(jnp.zeros((T, D)), t))).sum(-1)
        assert np.all(g[t + 1:] == 0.0), (t, g)
        assert np.all(g[: t + 1] > 0.0), (t, g)


def test_jit_and_eager_agree():
    cfg = TransformerConfig(vocab_size=19, context=8, d_model=16, n_layers=2, n_heads=4, positions="rope",
                            norm="rmsnorm", activation="swiglu")
    model, _, p = init(cfg)
    w = jax.random.randint(jax.random.key(3), (2, 9), 0, 19)
    with jax.disable_jit():
        eager = loss_sums(model, p, w)
    jitted = jax.jit(lambda p, w: loss_sums(model, p, w))(p, w)
    np.testing.assert_allclose(float(eager[0]), float(jitted[0]), rtol=1e-5)


CONFIGS = [
    TransformerConfig(vocab_size=65),
    TransformerConfig(vocab_size=65, use_bias=True, tied_embeddings=False, norm="layernorm"),
    TransformerConfig(vocab_size=50, activation="swiglu", norm="rmsnorm", positions="rope", n_layers=3),
    TransformerConfig(vocab_size=50, positions="sinusoidal", d_ff=100, use_bias=True, scan_layers=True),
    TransformerConfig(vocab_size=65, vocab_multiple=8, use_bias=True, tied_embeddings=False),  # 72 rows
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=range(len(CONFIGS)))
def test_param_counts_match_tree(cfg):
    _, boxed, p = init(cfg, T=8)
    counts = models.param_counts(cfg)
    assert counts["total"] == sum(a.size for a in jax.tree.leaves(p))
    emb = p["embed"]["embedding"].size + (p["pos_embed"].size if "pos_embed" in p else 0)
    emb += sum(a.size for a in jax.tree.leaves(p.get("unembed", {})))
    assert counts["embedding"] == emb
    assert counts["non_embedding"] == counts["total"] - emb
    # every parameter names its logical axes
    specs = jax.tree.leaves(nn.get_partition_spec(boxed), is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec))
    assert len(specs) == len(jax.tree.leaves(p))
    assert all(any(a is not None for a in s) for s in specs)


@pytest.mark.parametrize("cfg", [TransformerConfig(vocab_size=256, d_model=256, n_heads=4, n_layers=1, context=64),
                                 TransformerConfig(vocab_size=512, d_model=192, n_heads=3, context=128, n_layers=1, activation="swiglu", positions="rope",
                                                   tied_embeddings=False),
                                 TransformerConfig(vocab_size=200, vocab_multiple=128, d_model=256, n_heads=4, n_layers=1,
                                                   context=64)])  # 256 rows: the padded logits are computed
def test_flops_per_token_matches_xla_cost_analysis(cfg):
    model, _, p = init(cfg)
    B = 4
    w = jnp.zeros((B, cfg.context + 1), jnp.int32)
    compiled = jax.jit(jax.grad(lambda p, w: loss_sums(model, p, w)[0])).lower(p, w).compile()
    cost = compiled.cost_analysis()
    xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
    ours = models.flops_per_token(cfg) * B * cfg.context
    # XLA also counts elementwise work (norms, softmax, GELU): a few percent above the matmuls.
    assert 0.95 < xla / ours < 1.05, (xla, ours, xla / ours)


@pytest.mark.parametrize("bad, msg", [
    (dict(n_heads=3), "does not divide"), (dict(d_model=0), "d_model must be > 0"),
    (dict(positions="alibi"), "positions"), (dict(dropout=1.5), "dropout"),
])
def test_bad_configs_raise_one_clear_error(bad, msg):
    from lmjax.errors import ConfigError

    with pytest.raises(ConfigError, match=msg):
        TransformerConfig(vocab_size=10, **bad).validate()


def test_remat_and_scan_give_the_same_gradients():
    base = TransformerConfig(vocab_size=23, context=8, d_model=16, n_layers=2, n_heads=2)
    w = jax.random.randint(jax.random.key(4), (2, 9), 0, 23)
    _, _, p = init(base)
    ref_loss, ref_g = jax.jit(jax.value_and_grad(lambda p: loss_sums(Transformer(base), p, w)[0]))(p)
    for remat in ("full", "save_dots"):
        cfg = dataclasses.replace(base, remat=remat)
        loss, g = jax.jit(jax.value_and_grad(lambda p: loss_sums(Transformer(cfg), p, w)[0]))(p)
        np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref_g)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # scan over layers: stack the per-layer parameters and get the same loss
    scan_cfg = dataclasses.replace(base, scan_layers=True, remat="full")
    stacked = {k: v for k, v in p.items() if not k.startswith("layer_")}
    stacked["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *[p[f"layer_{i}"] for i in range(2)])
    loss = loss_sums(Transformer(scan_cfg), stacked, w)[0]
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    cfg = TransformerConfig(vocab_size=23, context=8, d_model=16, n_layers=1, n_heads=2, dtype="bfloat16")
    model, _, p = init(cfg)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(p))
    w = jax.random.randint(jax.random.key(5), (2, 9), 0, 23)
    logits = model.apply({"params": p}, w[:, :-1])
    assert logits.dtype == jnp.float32
    ref = Transformer(dataclasses.replace(cfg, dtype="float32")).apply({"params": p}, w[:, :-1])
    assert np.abs(np.asarray(logits) - np.asarray(ref)).max() < 0.05  # bf16 rounding only


def test_transformer_ladder_spans_1e4_to_1e7_geometrically():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ladder_transformer", "configs/models/transformer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    configs = module.ladder()
    sizes = [models.param_counts(c)["non_embedding"] for c in configs]
    for c in configs:
        c.validate()
    assert all(a < b for a, b in zip(sizes, sizes[1:])), sizes
    assert 0.5e4 <= sizes[0] <= 2e4 and 0.5e7 <= sizes[-1] <= 2e7, sizes
    ratios = [b / a for a, b in zip(sizes, sizes[1:])]
    assert max(ratios) / min(ratios) < 2, ratios
