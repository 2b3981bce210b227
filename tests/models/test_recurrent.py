"""Recurrent LMs (RNN, GRU, LSTM): numpy references, causality, carried state, counts, FLOPs, ladders."""

import functools
import importlib.util
import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmjax import models
from lmjax.errors import ConfigError
from lmjax.models import layers, recurrent
from lmjax.models.recurrent import RecurrentConfig, RecurrentLM
from lmjax.parallel import RULES

FAMILIES = ("rnn", "gru", "lstm")
ROOT = pathlib.Path(__file__).resolve().parents[2]
# Tiny test programs: LLVM's optimization level 0 halves XLA's CPU compile time; the HLO passes
# (and so the numbers and XLA's cost analysis) are unchanged.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def small(family, **kw):
    base = dict(family=family, vocab_size=11, context=6, d_embed=8, d_hidden=12, n_layers=2)
    return RecurrentConfig(**{**base, **kw})


def abstract_variables(cfg, batch=2):
    tokens_BT = jax.ShapeDtypeStruct((batch, cfg.context), jnp.int32)
    return jax.eval_shape(RecurrentLM(cfg).init, jax.random.PRNGKey(0), tokens_BT)


def init(cfg, batch=2, seed=0, scale=0.5):
    """Parameters ~ N(0, scale^2) from numpy (gates far from init, biases non-zero) and random tokens.

    Filling the abstract tree from numpy avoids compiling jax.random for every parameter shape, the
    slowest part of these tests on a CPU; test_real_init_and_bfloat16_compute covers the initializers.
    """
    rng = np.random.default_rng(seed)
    leaves, treedef = jax.tree.flatten(nn.meta.unbox(abstract_variables(cfg, batch)))
    variables = jax.tree.unflatten(treedef, [jnp.asarray(rng.normal(0, scale, x.shape), jnp.float32)
                                             for x in leaves])
    tokens_BT = jnp.asarray(rng.integers(0, cfg.vocab_size, (batch, cfg.context)), jnp.int32)
    return variables, tokens_BT


# ---------------------------------------------------------------- numpy float64 reference


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_cell(family, x, state, w_in, w_rec, b, forget_bias):
    """One step, gate by gate, from the fused (D, G, H) / (H, G, H) / (G, H) weights."""
    h = state["h"]

    def gate(k):
        return x @ w_in[:, k, :] + h @ w_rec[:, k, :] + b[k]

    if family == "rnn":
        h_new = np.tanh(gate(0))
        return {"h": h_new}
    if family == "gru":
        r = _sigmoid(gate(0))
        z = _sigmoid(gate(1))
        n = np.tanh(x @ w_in[:, 2, :] + b[2] + r * (h @ w_rec[:, 2, :]))
        return {"h": (1 - z) * n + z * h}
    i, f, g, o = _sigmoid(gate(0)), _sigmoid(gate(1) + forget_bias), np.tanh(gate(2)), _sigmoid(gate(3))
    c = f * state["c"] + i * g
    return {"h": o * np.tanh(c), "c": c}


def random_carry(cfg, batch=2, seed=1):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda z: jnp.asarray(rng.normal(0, 0.5, z.shape), jnp.float32),
                        recurrent.initial_carry(cfg, batch))


def np_forward(cfg, params, tokens_BT, carry):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = p["embed"]["embedding"][np.asarray(tokens_BT)]
    carry = [dict((k, np.asarray(v, np.float64)) for k, v in layer.items()) for layer in carry]
    for i in range(cfg.n_layers):
        lp = p[f"layer_{i}"]
        outs = []
        for t in range(x.shape[1]):
            carry[i] = np_cell(cfg.family, x[:, t], carry[i], lp["input"]["kernel"], lp["recurrent_kernel"],
                               lp["input"]["bias"], cfg.forget_bias)
            outs.append(carry[i]["h"])
        x = np.stack(outs, axis=1)
        if cfg.layer_norm:
            x = x - x.mean(-1, keepdims=True)
            x = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * p[f"norm_{i}"]["scale"]
    if cfg.has_proj:
        x = x @ p["proj"]["kernel"]
    head = p["embed"]["embedding"].T if cfg.tied_embeddings else p["unembed"]["kernel"]
    return x @ head, carry


@pytest.mark.parametrize("family", FAMILIES)
def test_cells_match_numpy_float64(family):
    cfg = small(family, context=3, tied_embeddings=False, forget_bias=0.7, layer_norm=family == "gru")
    variables, tokens_BT = init(cfg)
    carry = random_carry(cfg)
    # Three steps through two layers, the first one from a non-zero state.
    apply = jit(RecurrentLM(cfg).apply, static_argnames="return_carry")
    logits, final = apply(variables, tokens_BT, carry=carry, return_carry=True)
    ref_logits, ref_final = np_forward(cfg, variables["params"], tokens_BT, carry)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=1e-5, atol=1e-5)
    for layer, ref in zip(final, ref_final):
        assert set(layer) == set(ref)
        for k in layer:
            np.testing.assert_allclose(np.asarray(layer[k]), ref[k], rtol=1e-5, atol=1e-5)


def test_tied_projection_matches_numpy():
    cfg = small("lstm", context=3, d_embed=8, d_hidden=12)  # tied, d_hidden != d_embed -> projection
    assert cfg.has_proj and cfg.d_out == 8
    variables, tokens_BT = init(cfg)
    ref, _ = np_forward(cfg, variables["params"], tokens_BT, recurrent.initial_carry(cfg, 2))
    logits = jit(RecurrentLM(cfg).apply)(variables, tokens_BT)
    np.testing.assert_allclose(np.asarray(logits), ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- causality, carry, modes


def logits_of_embedding_delta(model, variables, tokens_BT):
    """f(delta_BTD) = logits with delta added to the token embeddings (to take gradients per position)."""

    def f(delta_BTD):
        def add_delta(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if isinstance(context.module, layers.Embed) and context.method_name == "__call__":
                out = out + delta_BTD
            return out

        with nn.intercept_methods(add_delta):
            return model.apply(variables, tokens_BT)

    return f


@pytest.mark.parametrize("family", FAMILIES)
def test_causality_through_gradients(family):
    cfg = small(family, layer_norm=family == "gru", context=5)
    variables, tokens_BT = init(cfg, scale=0.3)
    f = logits_of_embedding_delta(RecurrentLM(cfg), variables, tokens_BT)
    zeros = jnp.zeros((2, cfg.context, cfg.d_embed))
    jac = jit(jax.jacrev(lambda d: f(d).sum(-1)))(zeros)  # (B, T, B, S, D)
    dep = np.abs(np.asarray(jac)).max(-1) > 0  # does logit (b, t) depend on the input at (b2, s)?
    t_idx, s_idx = np.arange(cfg.context)[:, None], np.arange(cfg.context)[None, :]
    for b in range(2):
        for b2 in range(2):
            expected = (s_idx <= t_idx) if b == b2 else np.zeros_like(s_idx <= t_idx)
            np.testing.assert_array_equal(dep[b, :, b2, :], expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_carry_two_halves_equal_whole(family):
    cfg = small(family)
    variables, tokens_BT = init(cfg)
    model = RecurrentLM(cfg)
    half = cfg.context // 2

    @jit
    def run(variables, tokens_BT):
        whole, final = model.apply(variables, tokens_BT, return_carry=True)
        first, mid = model.apply(variables, tokens_BT[:, :half], return_carry=True)
        second, final2 = model.apply(variables, tokens_BT[:, half:], carry=mid, return_carry=True)
        zero = model.apply(variables, tokens_BT, carry=recurrent.initial_carry(cfg, tokens_BT.shape[0]))
        return whole, final, jnp.concatenate([first, second], 1), final2, zero

    whole, final, halves, final2, zero = run(variables, tokens_BT)
    np.testing.assert_allclose(halves, whole, atol=1e-5, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), final, final2)
    np.testing.assert_allclose(zero, whole, rtol=1e-5, atol=1e-5)  # carry=None is the zero state
    assert jax.tree.structure(final) == jax.tree.structure(recurrent.initial_carry(cfg, 2))
    assert all(x.shape == (2, cfg.d_hidden) and x.dtype == jnp.float32 for x in jax.tree.leaves(final))


def test_jit_equals_eager_and_dropout_modes():
    cfg = small("rnn", dropout=0.5, scan_unroll=2)
    variables, tokens_BT = init(cfg)
    model = RecurrentLM(cfg)
    eager = model.apply(variables, tokens_BT)
    assert eager.dtype == jnp.float32 and eager.shape == (2, cfg.context, cfg.vocab_size)

    @jit
    def run(variables, tokens_BT, key):
        test = model.apply(variables, tokens_BT)
        train = model.apply(variables, tokens_BT, train=True, rngs={"dropout": key})
        return test, train

    jitted, a = run(variables, tokens_BT, jax.random.key(3, impl="unsafe_rbg"))
    np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-5)
    assert not np.allclose(a, eager)
    np.testing.assert_array_equal(a, run(variables, tokens_BT, jax.random.key(3, impl="unsafe_rbg"))[1])


def test_real_init_and_bfloat16_compute():
    cfg = small("rnn", dtype="bfloat16", dropout=0.1)
    tokens_BT = jnp.zeros((2, cfg.context), jnp.int32)

    @jit
    def run(key, tokens_BT):
        variables = RecurrentLM(cfg).init({"params": key, "dropout": key}, tokens_BT)
        logits, carry = RecurrentLM(cfg).apply(variables, tokens_BT, return_carry=True)
        ref = RecurrentLM(small("rnn")).apply(variables, tokens_BT)
        return nn.meta.unbox(variables)["params"], logits, carry, ref

    # An rbg key: XLA compiles the default threefry generator for every parameter shape slowly on CPU.
    params, logits, carry, ref = run(jax.random.key(0, impl="unsafe_rbg"), tokens_BT)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    assert float(jnp.abs(params["layer_0"]["input"]["bias"]).max()) == 0.0
    std = float(params["layer_1"]["recurrent_kernel"].std())
    assert 0.5 < std * math.sqrt(cfg.d_hidden) < 1.5  # N(0, 1 / fan_in)
    assert logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(carry))
    np.testing.assert_allclose(logits, ref, atol=2e-2)


# ---------------------------------------------------------------- counts and axes

COUNT_CONFIGS = [
    small("lstm"),  # tied, automatic projection (12 -> 8)
    small("lstm", d_embed=12),  # tied, no projection
    small("gru", tied_embeddings=False),  # untied, head reads h
    small("gru", tied_embeddings=False, d_proj=5, layer_norm=True),
    small("rnn", n_layers=3, d_proj=8),  # tied through an explicit projection
    small("rnn", n_layers=1, layer_norm=True, tied_embeddings=False, d_hidden=7),
    small("gru", tied_embeddings=False, vocab_multiple=8),  # 16 rows in the embedding and the head
]


@pytest.mark.parametrize("cfg", COUNT_CONFIGS, ids=lambda c: f"{c.family}-L{c.n_layers}-tied{c.tied_embeddings}"
                         f"-proj{c.d_proj}-ln{c.layer_norm}")
def test_param_counts_match_tree(cfg):
    params = nn.meta.unbox(abstract_variables(cfg))["params"]
    counts = recurrent.param_counts(cfg)
    assert counts == models.param_counts(cfg)
    assert counts["total"] == sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    embedding = math.prod(params["embed"]["embedding"].shape)
    embedding += math.prod(params["unembed"]["kernel"].shape) if "unembed" in params else 0
    assert counts["embedding"] == embedding
    assert counts["total"] == counts["embedding"] + counts["non_embedding"]
    assert ("proj" in params) == cfg.has_proj


@pytest.mark.parametrize("cfg", COUNT_CONFIGS[2:4], ids=["untied", "untied-proj-ln"])
def test_every_parameter_has_logical_axes(cfg):
    specs = jax.tree.leaves(nn.get_partition_spec(abstract_variables(cfg)),
                            is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    known = {name for name, _ in RULES["fsdp_tp"]}
    boxed = jax.tree.leaves(abstract_variables(cfg), is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert all(isinstance(x, nn.LogicallyPartitioned) for x in boxed)
    for spec in specs:
        names = [n for n in spec if n is not None]
        assert names, f"a parameter without logical axes: {spec}"
        assert set(names) <= known and len(set(names)) == len(names), spec
    for rules in RULES.values():  # every rule table maps them (flax rejects repeated names)
        for spec in specs:
            nn.logical_to_mesh_axes(tuple(spec), rules)


# XLA's count of jax.grad(loss) on a fully unrolled window, against 3 x the forward matmuls times
# B T. XLA also counts what flops_per_token leaves out: gate nonlinearities and the elementwise
# state update (~G H per token per layer, and their gradients), bias adds, LayerNorm, the
# log-softmax and cross-entropy (~V per token), and the sum over time steps of the per-step
# W_rec gradients ((T - 1) G H^2 adds per layer and window, i.e. ~G H^2 / B per token: hence a
# batch of 16). The loss is differentiated w.r.t. the initial state too, so that the gradient
# into h_0 (one H G H matmul per layer and window, dead code when the carry is a constant) is
# computed, as flops_per_token assumes. Measured ours / XLA: rnn 0.995, gru 0.983, lstm 0.983.
FLOP_CONFIGS = [
    RecurrentConfig(family="rnn", vocab_size=256, context=2, d_embed=128, d_hidden=256, n_layers=2),
    RecurrentConfig(family="gru", vocab_size=256, context=2, d_embed=128, d_hidden=256, n_layers=1,
                    tied_embeddings=False, layer_norm=True),
    RecurrentConfig(family="lstm", vocab_size=256, context=2, d_embed=128, d_hidden=256, n_layers=1, d_proj=128),
]


@pytest.mark.parametrize("cfg", FLOP_CONFIGS, ids=lambda c: c.family)
def test_flops_per_token_matches_xla(cfg):
    # XLA's cost analysis counts a while-loop body once, so unroll the scan over the whole window.
    cfg = RecurrentConfig(**{**cfg.__dict__, "scan_unroll": cfg.context})
    model = RecurrentLM(cfg)
    batch = 16
    tokens_BT = jnp.zeros((batch, cfg.context), jnp.int32)
    params = nn.meta.unbox(abstract_variables(cfg, batch))["params"]

    def loss(p, tokens_BT, carry):
        logits_BTV = model.apply({"params": p}, tokens_BT, carry=carry)
        return optax.softmax_cross_entropy_with_integer_labels(logits_BTV, tokens_BT).mean()

    grad = jit(jax.grad(loss, argnums=(0, 2)))
    carry = recurrent.initial_carry(cfg, batch)
    xla_flops = grad.lower(params, tokens_BT, carry).compile().cost_analysis()["flops"]
    ours = recurrent.flops_per_token(cfg) * batch * cfg.context
    assert ours == models.flops_per_token(cfg) * batch * cfg.context
    assert abs(ours / xla_flops - 1) < 0.05, (ours, xla_flops, ours / xla_flops)


# ---------------------------------------------------------------- validation, registry, ladders


@pytest.mark.parametrize("bad", [
    dict(family="transformer"), dict(family="lstmp"), dict(d_hidden=0), dict(d_embed=-1), dict(n_layers=0),
    dict(context=0), dict(vocab_size=-1), dict(d_proj=-2), dict(dropout=1.0), dict(dropout=-0.1),
    dict(d_proj=16, d_embed=8, tied_embeddings=True), dict(dtype="float64"), dict(scan_unroll=0),
])
def test_validate_rejects(bad):
    with pytest.raises(ConfigError):
        RecurrentConfig(**bad).validate()


def test_validate_accepts_and_registry_builds():
    for family in FAMILIES:
        cfg = small(family, tied_embeddings=False, d_proj=16)
        cfg.validate()
        assert isinstance(models.build(cfg), RecurrentLM)
        assert models.config_from_dict(cfg.__dict__) == cfg


def load_ladder(name):
    spec = importlib.util.spec_from_file_location(f"ladder_{name}", ROOT / "configs" / "models" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ladder()


def check_ladder(configs, family):
    assert 6 <= len(configs) <= 8
    sizes = [models.param_counts(c)["non_embedding"] for c in configs]
    for c in configs:
        c.validate()
        assert c.family == family and c.vocab_size == 0 and c.context == 64
    assert all(a < b for a, b in zip(sizes, sizes[1:])), sizes
    assert 0.5e4 <= sizes[0] <= 2e4 and 0.5e7 <= sizes[-1] <= 2e7, sizes
    steps = [b / a for a, b in zip(sizes, sizes[1:])]
    assert max(steps) / min(steps) < 2, steps  # roughly geometric


@pytest.mark.parametrize("family", FAMILIES)
def test_ladder(family):
    check_ladder(load_ladder(family), family)
