"""Scale-out paths on 8 CPU devices: FSDP / FSDP+TP presets for two families, gradient
accumulation, and checkpoints restored onto a different mesh and device count."""

import dataclasses

import jax
import numpy as np
import pytest

from lmjax import config as config_lib, models, parallel
from lmjax.data.batches import train_batch
from lmjax.models.recurrent import RecurrentConfig
from lmjax.train.checkpoint import Checkpointer
from lmjax.train.optim import make_optimizer
from lmjax.train.step import make_steps

# Minutes of compiles on 2 cores: part of `make test-slow` (issue 5's acceptance tests).
pytestmark = pytest.mark.slow

TOKENS = np.random.default_rng(0).integers(0, 256, 50_000).astype(np.int32)
TOKENS[1::2] = (TOKENS[::2][: len(TOKENS[1::2])] * 7 + 3) % 256  # learnable structure


def cfg_for(model, rules="fsdp_tp", accum=1, steps=20):
    cfg = config_lib.load_config_file("configs/train/shakespeare_char.py")
    cfg = dataclasses.replace(cfg, model=model)
    return config_lib.apply_overrides(cfg, {
        "train.batch_size": 16, "train.steps": steps, "optim.warmup_steps": 3, "mesh.rules": rules,
        "train.grad_accum": accum})


def transformer():
    return config_lib.apply_overrides(config_lib.Config(), {
        "model.vocab_size": 256, "model.d_model": 32, "model.n_heads": 4, "model.n_layers": 2,
        "model.context": 16}).model


def lstm():
    return RecurrentConfig(family="lstm", vocab_size=256, context=16, d_embed=32, d_hidden=32, n_layers=2)


def build(cfg, shape):
    mesh = parallel.make_mesh(shape, jax.devices()[: int(np.prod(shape))])
    tx, lr = make_optimizer(cfg.optim, cfg.train.steps)
    return make_steps(models.build(cfg.model), tx, lr, cfg, mesh)


def train(steps, state, start, n, cfg):
    losses = []
    for i in range(start, start + n):
        rows = train_batch(TOKENS, seed=0, step=i, batch_size=16, seq_len=cfg.model.context)
        state, m = steps.train(state, parallel.put_batch(rows, steps.mesh))
        losses.append(m["train_loss"])
    return state, np.asarray(jax.device_get(losses))


def losses_on(cfg, shape, n=20):
    steps = build(cfg, shape)
    return train(steps, steps.init(jax.random.key(0)), 0, n, cfg)[1]


@pytest.mark.parametrize("family, rules, shape", [
    ("transformer", "fsdp", (1, 8, 1)), ("lstm", "fsdp", (1, 8, 1)), ("lstm", "fsdp_tp", (2, 2, 2)),
    ("lstm", "dp", (8, 1, 1)),
])
def test_presets_match_one_device(family, rules, shape):
    model = transformer() if family == "transformer" else lstm()
    one = losses_on(cfg_for(model, rules), (1, 1, 1))
    many = losses_on(cfg_for(model, rules), shape)
    assert one[-1] < one[0]
    np.testing.assert_allclose(many, one, rtol=1e-5)


def test_parameters_are_created_sharded():
    steps = build(cfg_for(lstm(), "fsdp"), (1, 8, 1))
    state = steps.init(jax.random.key(0))
    leaves = jax.tree_util.tree_leaves_with_path(state.params)
    sharded = [p for p, a in leaves if a.ndim >= 2 and a.addressable_shards[0].data.shape != a.shape]
    assert sharded, "no parameter is split over the fsdp axis"
    # optimizer moments follow their parameters' shardings
    mu = jax.tree.leaves(state.opt_state)
    assert any(a.ndim >= 2 and a.addressable_shards[0].data.shape != a.shape for a in mu)


def test_gradient_accumulation_matches_full_batch():
    full = losses_on(cfg_for(transformer(), accum=1, steps=5), (2, 2, 2), n=5)
    accum = losses_on(cfg_for(transformer(), accum=4, steps=5), (2, 2, 2), n=5)
    np.testing.assert_allclose(accum, full, rtol=1e-5)


def test_checkpoint_from_fsdp_restores_on_other_meshes(tmp_path):
    cfg = cfg_for(transformer(), "fsdp", steps=10)
    src = build(cfg, (1, 8, 1))
    state, _ = train(src, src.init(jax.random.key(0)), 0, 5, cfg)
    ckpt = Checkpointer(str(tmp_path / "ckpt"), async_save=False)
    ckpt.save(5, state, wait=True)
    _, expected = train(src, state, 5, 5, cfg)
    for shape, rules in (((1, 1, 1), "fsdp"), ((2, 2, 2), "fsdp_tp")):
        dst = build(dataclasses.replace(cfg, mesh=dataclasses.replace(cfg.mesh, rules=rules)), shape)
        restored = ckpt.restore(dst.abstract_state, dst.state_sharding, 5)
        assert int(restored.step) == 5
        _, got = train(dst, restored, 5, 5, cfg)
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    ckpt.close()
