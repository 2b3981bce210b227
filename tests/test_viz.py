"""lmjax.viz plots (headless) and notebooks/sampling.ipynb executed end to end."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import metrics, viz
from lmjax.errors import ConfigError
from lmjax.generate import ModelBundle
from lmjax.models.transformer import Transformer, TransformerConfig

LOGITS = np.array([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])


def test_tempered_probs_and_entropy_fall_with_temperature():
    temps = [4.0, 2.0, 1.0, 0.5, 0.25]
    probs = viz.tempered_probs(LOGITS, temps)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    ref = np.exp(LOGITS / 0.5) / np.exp(LOGITS / 0.5).sum()
    np.testing.assert_allclose(probs[3], ref, rtol=1e-5)
    assert np.all(np.diff(metrics.entropy(probs)) < 0)


def test_temperature_plot(tmp_path):
    fig = viz.temperature_plot(LOGITS, (0.5, 1.0, 2.0), labels=list("abcdef"))
    bars, curve = fig.axes
    assert len(bars.patches) == 3 * 6  # one bar per token per temperature
    heights = np.array([p.get_height() for p in bars.patches]).reshape(3, 6)
    np.testing.assert_allclose(heights.sum(1), 1.0, rtol=1e-6)
    assert heights[0, 0] > heights[1, 0] > heights[2, 0]  # the top token loses mass as T rises
    y = curve.lines[0].get_ydata()
    assert np.all(np.diff(y) > 0)  # entropy against T rises
    path = viz.save(fig, tmp_path, "t")
    assert os.path.getsize(path) > 1000


def test_truncation_plot_marks_the_kept_sets():
    fig = viz.truncation_plot(LOGITS, top_k=2, top_p=0.8, labels=list("abcdef"))
    k_ax, p_ax = fig.axes
    assert "keeps 2 tokens" in k_ax.get_title()
    p = np.exp(LOGITS) / np.exp(LOGITS).sum()
    n_p = int(np.searchsorted(np.cumsum(p), 0.8) + 1)  # the minimal nucleus
    assert f"keeps {n_p} tokens" in p_ax.get_title()
    renorm = p_ax.lines[0].get_ydata()
    assert renorm.sum() == pytest.approx(1.0) and np.count_nonzero(renorm) == n_p


def test_attention_weights_and_plot():
    cfg = TransformerConfig(vocab_size=11, context=8, d_model=16, n_layers=2, n_heads=2, scan_layers=True)
    shapes = jax.eval_shape(Transformer(cfg).init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    rng = np.random.default_rng(0)  # host-drawn weights: no init program to compile
    params = jax.tree.map(lambda a: rng.normal(0.0, 0.3, a.shape).astype(np.float32), nn.meta.unbox(shapes))
    bundle = ModelBundle(cfg, params=params)
    att = viz.attention_weights(bundle, [1, 2, 3, 4, 5])
    assert att.shape == (2, 2, 5, 5)
    np.testing.assert_allclose(att.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(att, k=1) == 0)  # causal
    fig = viz.attention_plot(att, list("abcde"))
    assert sum(1 for ax in fig.axes if ax.images) == 4  # layers x heads heatmaps
    with pytest.raises(ConfigError, match="context"):
        viz.attention_weights(bundle, list(range(9)))


def test_loss_by_position_plot_and_bad_input():
    fig = viz.loss_by_position_plot({"a": [3.0, 2.5, 2.2], "b": [3.0, 2.8, 2.7]})
    assert len(fig.axes[0].lines) == 2
    with pytest.raises(ConfigError):
        viz.loss_by_position_plot({})
    with pytest.raises(ConfigError, match="labels"):
        viz.temperature_plot(LOGITS, labels=["a"])
    with pytest.raises(ConfigError, match="temperature"):
        viz.temperature_plot(LOGITS, (0.0, 1.0))


def test_sampling_notebook_runs(tmp_path, monkeypatch, run_notebook):
    monkeypatch.setenv("LMJAX_NOTEBOOK_OUT", str(tmp_path))
    # The kernel runs as on a laptop: one CPU device, not the 8 forced devices of this process
    # (sharding tiny training steps 8 ways on 2 cores only adds collectives and compile time).
    monkeypatch.setenv("XLA_FLAGS", "")
    result = run_notebook("sampling.ipynb")
    assert len(result["plots"]) == 4 and all(os.path.getsize(p) > 1000 for p in result["plots"])
    assert np.all(np.diff(result["entropies"]) > 0)  # temperatures listed in increasing order
    assert result["attention_shape"] == [2, 2, 17, 17]
    assert set(result["scores"]) == {"transformer", "lstm", "3-gram"}
    assert all(s < 0 for s in result["scores"].values())
    # Everything scores better than a uniform guess over the 65 characters at the last position.
    assert all(last < np.log(65) for _, last in result["loss_by_position"].values())
