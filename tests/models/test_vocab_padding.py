"""model.vocab_multiple: vocab tables padded to a multiple, logits and gradients as without padding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import models
from lmjax.errors import ConfigError
from lmjax.models.ffnn import FFNNConfig
from lmjax.models.recurrent import RecurrentConfig
from lmjax.models.transformer import TransformerConfig
from lmjax.train.step import loss_sums

V = 65  # Tiny Shakespeare's characters: prime to every mesh axis size > 1
PADDED = {
    "transformer-tied": TransformerConfig(vocab_size=V, vocab_multiple=8, d_model=16, n_heads=2, n_layers=1,
                                          context=8),
    "transformer-untied-bias": TransformerConfig(vocab_size=V, vocab_multiple=8, d_model=16, n_heads=2, n_layers=1,
                                                 context=8, tied_embeddings=False, use_bias=True),
    "lstm-untied": RecurrentConfig(family="lstm", vocab_size=V, vocab_multiple=8, context=8, d_embed=16,
                                   d_hidden=16, n_layers=1, tied_embeddings=False),
    "ffnn-direct": FFNNConfig(vocab_size=V, vocab_multiple=8, context=8, window=3, d_embed=8, d_hidden=16,
                              direct=True),
}
# every parameter with a vocab axis: (path, axis of the vocab rows)
VOCAB_TABLES = {("embed", "embedding"): 0, ("unembed", "kernel"): -1, ("unembed", "bias"): 0,
                ("direct", "kernel"): -1}


def vocab_tables(params):
    for (module, name), axis in VOCAB_TABLES.items():
        if module in params and name in params[module]:
            yield (module, name), axis


@pytest.mark.parametrize("name", PADDED)
def test_padded_model_is_the_unpadded_model_with_extra_rows(name):
    cfg = PADDED[name]
    windows = np.random.default_rng(0).integers(0, V, (3, cfg.context + 1)).astype(np.int32)
    model = models.build(cfg)
    params = nn.meta.unbox(model.init(jax.random.key(0), windows[:, :-1])["params"])
    for (module, table), axis in vocab_tables(params):
        assert params[module][table].shape[axis] == 72

    logits = model.apply({"params": params}, windows[:, :-1])
    assert logits.shape == (3, cfg.context, V)
    # the same weights without the padded rows, in the unpadded model: the same logits
    cut = jax.tree.map(lambda a: a, params)
    for (module, table), axis in vocab_tables(params):
        cut[module][table] = jnp.take(params[module][table], jnp.arange(V), axis=axis)
    unpadded = models.build(type(cfg)(**{**cfg.__dict__, "vocab_multiple": 1}))
    np.testing.assert_allclose(unpadded.apply({"params": cut}, windows[:, :-1]), logits, rtol=1e-5, atol=1e-6)

    # padded rows get exactly zero gradient; the real rows do not
    grads = jax.grad(lambda p: loss_sums(model, p, windows)[0])(params)
    for (module, table), axis in vocab_tables(grads):
        g = np.moveaxis(np.asarray(grads[module][table]), axis, 0)
        assert np.all(g[V:] == 0), (module, table)
        assert np.abs(g[:V]).max() > 0, (module, table)


def test_bad_vocab_multiple_is_one_clear_error():
    with pytest.raises(ConfigError, match="model.vocab_multiple must be >= 1, got 0"):
        models.build(TransformerConfig(vocab_size=V, vocab_multiple=0))
