"""grads_and_loss: accumulating microbatches gives the full batch's loss and gradient."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from lmjax import config as config_lib, models
from lmjax.train.step import grads_and_loss


@pytest.mark.parametrize("accum", [2, 3, 6])
def test_accumulated_microbatches_give_the_full_batch_gradient(accum):
    cfg = config_lib.apply_overrides(config_lib.Config(), {
        "model.vocab_size": 32, "model.d_model": 16, "model.n_heads": 2, "model.n_layers": 2, "model.context": 8})
    model = models.build(cfg.model)
    windows = np.random.default_rng(0).integers(0, 32, (6, 9)).astype(np.int32)
    params = nn.meta.unbox(model.init(jax.random.key(0), windows[:, :-1])["params"])
    rng = jax.random.key(1)
    loss1, grads1, _ = jax.jit(lambda p: grads_and_loss(model, p, windows, rng))(params)
    loss_k, grads_k, _ = jax.jit(lambda p: grads_and_loss(model, p, windows, rng, accum=accum))(params)
    np.testing.assert_allclose(loss_k, loss1, rtol=1e-6)
    for g_k, g1 in zip(jax.tree.leaves(grads_k), jax.tree.leaves(grads1)):
        np.testing.assert_allclose(g_k, g1, rtol=1e-5, atol=1e-7)
    # a nonzero gradient on every parameter: the comparison is not vacuous
    assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(grads1))
