"""The same 20 steps on 1 device and on 8 devices with several (data, fsdp, tensor) meshes."""

import dataclasses
import re

import jax
import numpy as np
import pytest

from lmjax import config as config_lib, models, parallel
from lmjax.data.batches import train_batch
from lmjax.errors import ConfigError
from lmjax.train.optim import make_optimizer
from lmjax.train.step import make_steps

STEPS = 20


def tiny_cfg():
    cfg = config_lib.load_config_file("configs/train/shakespeare_char.py")
    cfg = config_lib.apply_overrides(cfg, {
        "model.vocab_size": 256, "model.d_model": 64, "model.n_heads": 8, "model.n_layers": 2,
        "model.context": 32, "train.batch_size": 16, "optim.warmup_steps": 5, "train.steps": STEPS})
    return cfg


def run(cfg, shape, tokens):
    devices = jax.devices()[: int(np.prod(shape))]
    mesh = parallel.make_mesh(shape, devices)
    tx, lr = make_optimizer(cfg.optim, cfg.train.steps)
    steps = make_steps(models.build(cfg.model), tx, lr, cfg, mesh)
    state = steps.init(jax.random.key(0))
    losses = []
    for i in range(STEPS):
        rows = train_batch(tokens, seed=0, step=i, batch_size=16, seq_len=cfg.model.context)
        state, m = steps.train(state, parallel.put_batch(rows, mesh))
        losses.append(m["train_loss"])
    return np.asarray(jax.device_get(losses)), state


@pytest.fixture(scope="module")
def tokens():
    from lmjax.data.sources import embedded_text

    return np.frombuffer(embedded_text()[:200_000].encode(), np.uint8).astype(np.int32)


@pytest.fixture(scope="module")
def reference(tokens):
    return run(tiny_cfg(), (1, 1, 1), tokens)[0]


@pytest.mark.parametrize("shape", [(8, 1, 1), (1, 8, 1), (2, 2, 2), (1, 1, 8)])
def test_sharded_losses_match_one_device(shape, tokens, reference):
    losses, state = run(tiny_cfg(), shape, tokens)
    assert losses[-1] < losses[0] - 0.5  # it trains
    np.testing.assert_allclose(losses, reference, rtol=1e-5)
    # parameters really are sharded as the rules say (fsdp_tp: mlp over tensor, embed over fsdp)
    spec = state.params["layer_0"]["mlp"]["up"]["kernel"].sharding.spec
    assert tuple(spec) == ("fsdp", "tensor")
    kernel = state.params["layer_0"]["mlp"]["up"]["kernel"]
    expected_shard = (64 // shape[1], 256 // shape[2])
    assert kernel.addressable_shards[0].data.shape == expected_shard


def test_mesh_errors_are_clear():
    with pytest.raises(ConfigError, match="has 6 devices but 8 are available"):
        parallel.make_mesh((3, 2, 1))
    cfg = dataclasses.replace(tiny_cfg(), model=dataclasses.replace(tiny_cfg().model, vocab_size=65))
    tx, lr = make_optimizer(cfg.optim, 10)
    with pytest.raises(ConfigError, match=r"embed/embedding .*65 is not divisible by mesh axes tensor of size 8 "
                                          r"\(pad it: --config.model.vocab_multiple=8\)"):
        make_steps(models.build(cfg.model), tx, lr, cfg, parallel.make_mesh((1, 1, 8)))
    with pytest.raises(ConfigError, match="not divisible by data x fsdp"):
        parallel.check_batch(12, parallel.make_mesh((8, 1, 1)))


def test_accumulating_on_a_data_parallel_mesh_moves_no_batch_rows():
    """Microbatch i takes rows i, i + accum, ... so each device keeps its own rows; the only
    collective is the gradient all-reduce (a contiguous split needed collective-permutes and
    all-gathers of the batch)."""
    cfg = config_lib.apply_overrides(tiny_cfg(), {"model.n_layers": 1, "train.grad_accum": 2})
    mesh = parallel.make_mesh((8, 1, 1), jax.devices())
    tx, lr = make_optimizer(cfg.optim, cfg.train.steps)
    steps = make_steps(models.build(cfg.model), tx, lr, cfg, mesh)
    batch = parallel.put_batch(np.zeros((16, cfg.model.context + 1), np.int32), mesh)
    hlo = steps.train.lower(steps.init(jax.random.key(0)), batch).compile().as_text()
    ops = set(re.findall(r"\b(all-to-all|collective-permute|all-gather|all-reduce)(?:-start)?\(", hlo))
    assert ops == {"all-reduce"}, ops


def test_a_padded_character_vocabulary_splits_over_tensor(tokens):
    """65 characters do not split over 8 devices; padded to 72 rows they do, and the run matches
    one device."""
    chars = np.unique(tokens)[:65]
    ids = np.searchsorted(chars, np.clip(tokens, chars[0], chars[-1])).astype(np.int32)
    cfg = config_lib.apply_overrides(tiny_cfg(), {"model.vocab_size": 65, "model.vocab_multiple": 8})
    one, _ = run(cfg, (1, 1, 1), ids)
    many, state = run(cfg, (1, 1, 8), ids)
    assert many[-1] < many[0] - 0.5
    np.testing.assert_allclose(many, one, rtol=1e-5)
    table = state.params["embed"]["embedding"]
    assert table.shape == (72, 64) and table.addressable_shards[0].data.shape == (9, 64)
