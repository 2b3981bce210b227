"""Plots of what a language model's distribution looks like and how the sampling knobs reshape it.

matplotlib without pyplot state (Figure objects rendered with the Agg canvas), so everything
works headless. Every plot function returns a Figure; `save(fig, out_dir, name)` writes a PNG.

- `temperature_plot`: softmax(logits / T) at several temperatures, and the entropy against T.
- `truncation_plot`: which tokens top-k and top-p keep of a next-token distribution, and the
  renormalized distribution that is sampled.
- `attention_plot`: attention weights per layer and head for a prompt (heatmaps), from
  `attention_weights(bundle, prompt)` (the Transformer sows ``attention_BHTT``).
- `loss_by_position_plot`: loss at each context position, one curve per model.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lmjax import metrics, sampling
from lmjax.errors import ConfigError


def save(fig: Figure, out_dir: str | os.PathLike, name: str) -> str:
    """Write fig as out_dir/name.png; returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(os.fspath(out_dir), f"{name}.png")
    fig.savefig(path, dpi=100)
    return path


def _figure(nrows: int = 1, ncols: int = 1, width: float = 5.0, height: float = 3.8):
    fig = Figure(figsize=(width * ncols, height * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _softmax(logits) -> np.ndarray:
    x = np.asarray(logits, np.float64)
    x = x - np.max(x, axis=-1, keepdims=True)
    e = np.where(np.isfinite(x), np.exp(x), 0.0)
    return e / e.sum(axis=-1, keepdims=True)


def _check_logits(logits) -> np.ndarray:
    x = np.asarray(logits, np.float64)
    if x.ndim != 1 or x.size < 2 or not np.isfinite(x).any():
        raise ConfigError(f"logits must be a 1-D array of at least 2 values, got shape {x.shape}")
    return x


def _labels(labels, v: int) -> list[str]:
    if labels is None:
        return [str(i) for i in range(v)]
    # Characters as they read in a table: "\n" as \n, a space as an open box.
    labels = [("\u2423" if s == " " else repr(s)[1:-1]) if isinstance(s, str) else str(s) for s in labels]
    if len(labels) != v:
        raise ConfigError(f"got {len(labels)} labels for {v} logits")
    return labels


def tempered_probs(logits, temperatures: Sequence[float]) -> np.ndarray:
    """(len(temperatures), V) softmax(logits / T), via lmjax.sampling.apply_temperature."""
    x = jnp.asarray(_check_logits(logits), jnp.float32)
    return np.stack([_softmax(sampling.apply_temperature(x, float(t))) for t in temperatures])


def temperature_plot(logits, temperatures: Sequence[float] = (0.5, 1.0, 2.0), *, labels=None,
                     max_tokens: int = 20, title: str = "") -> Figure:
    """Left: softmax(logits / T) for each T over the most likely tokens (sorted by logit).
    Right: the entropy (nats) of softmax(logits / T) against T on a log axis."""
    x = _check_logits(logits)
    labels = _labels(labels, x.size)
    probs_TV = tempered_probs(x, temperatures)
    order = np.argsort(-x, kind="stable")[:max_tokens]
    fig, axes = _figure(1, 2)
    ax = axes[0, 0]
    k = len(order)
    width = 0.8 / len(temperatures)
    for i, (t, p) in enumerate(zip(temperatures, probs_TV)):
        ax.bar(np.arange(k) + (i - (len(temperatures) - 1) / 2) * width, p[order], width,
               label=f"T = {t:g} (H = {metrics.entropy(p):.2f} nats)")
    ax.set_xticks(np.arange(k), [labels[j] for j in order], rotation=90 if k > 10 else 0)
    ax.set_ylabel("probability")
    ax.set_xlabel(f"token (top {k} of {x.size} by logit)")
    ax.legend(fontsize="small")
    ax.set_title(title or "softmax(logits / T)")
    ax = axes[0, 1]
    grid = np.geomspace(min(0.05, min(temperatures)), max(10.0, max(temperatures)), 60)
    ax.plot(grid, metrics.entropy(tempered_probs(x, grid)), color="k", lw=1.2)
    for t, p in zip(temperatures, probs_TV):
        ax.plot([t], [metrics.entropy(p)], "o")
    ax.axhline(np.log(x.size), ls="--", color="gray", lw=0.8, label=f"log V = {np.log(x.size):.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("entropy (nats)")
    ax.legend(fontsize="small")
    ax.set_title("entropy falls as T falls")
    fig.tight_layout()
    return fig


def truncation_plot(logits, *, top_k: int = 10, top_p: float = 0.9, temperature: float = 1.0, labels=None,
                    max_tokens: int = 30, title: str = "") -> Figure:
    """The next-token distribution (after temperature) sorted by probability, with the tokens
    top-k and top-p keep highlighted, the cumulative probability against the top-p threshold, and
    the renormalized distributions each filter samples from."""
    x = _check_logits(logits)
    labels = _labels(labels, x.size)
    xt = jnp.asarray(x, jnp.float32)
    tempered = np.asarray(sampling.apply_temperature(xt, temperature), np.float64)
    p = _softmax(tempered)
    kept = {f"top-k (k = {top_k})": np.isfinite(np.asarray(sampling.top_k(tempered, top_k))),
            f"top-p (p = {top_p:g})": np.isfinite(np.asarray(sampling.top_p(tempered, top_p)))}
    order = np.argsort(-p, kind="stable")[:max_tokens]
    k = len(order)
    fig, axes = _figure(1, 2)
    for ax, (name, keep) in zip(axes[0], kept.items()):
        renorm = np.where(keep, p, 0.0) / np.sum(np.where(keep, p, 0.0))
        ax.bar(np.arange(k), p[order], 0.8, color=np.where(keep[order], "tab:blue", "lightgray"),
               label="p (kept in colour)")
        ax.step(np.arange(k), renorm[order], where="mid", color="tab:red", lw=1.2, label="renormalized")
        ax.plot(np.arange(k), np.cumsum(p[order]), color="k", lw=1, ls=":", label="cumulative p")
        if name.startswith("top-p"):
            ax.axhline(top_p, color="gray", lw=0.8, ls="--")
        ax.set_xticks(np.arange(k), [labels[j] for j in order], rotation=90 if k > 10 else 0)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(f"token (top {k} of {x.size})")
        ax.set_ylabel("probability")
        h, h_kept = metrics.entropy(p), metrics.entropy(renorm)
        ax.set_title(f"{name}: keeps {int(keep.sum())} tokens, H {h:.2f} -> {h_kept:.2f} nats", fontsize="medium")
        ax.legend(fontsize="small", loc="center right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def attention_weights(bundle, prompt) -> np.ndarray:
    """(L, H, T, T) float32 attention probabilities of a Transformer bundle on one prompt (a string
    with the bundle's tokenizer, or token ids), at most ``context`` tokens."""
    from lmjax.generate import prompt_ids

    if bundle.family != "transformer":
        raise ConfigError(f"attention weights need a transformer, not a {bundle.family!r} model")
    (ids,) = prompt_ids(bundle, [prompt])
    cfg = bundle.model_cfg
    if ids.size > cfg.context:
        raise ConfigError(f"the prompt has {ids.size} tokens; the model's context is {cfg.context}")
    return np.asarray(_attention_fn(cfg)(bundle.params, jnp.asarray(ids[None])))[:, 0]


@functools.lru_cache(maxsize=16)
def _attention_fn(cfg):
    from lmjax import models

    model = models.build(cfg)

    def fn(params, tokens_1T):
        _, v = model.apply({"params": params}, tokens_1T, mutable=["intermediates"])
        inter = v["intermediates"]
        if cfg.scan_layers:
            return inter["layers"]["attn"]["attention_BHTT"][0]
        return jnp.stack([inter[f"layer_{i}"]["attn"]["attention_BHTT"][0] for i in range(cfg.n_layers)])

    return jax.jit(fn)


def attention_plot(weights, tokens: Sequence[str] | None = None, *, layers: Sequence[int] | None = None,
                   title: str = "") -> Figure:
    """Heatmaps of attention weights: one row per layer, one column per head. ``weights`` is
    (L, H, T, T) or (H, T, T) (rows: queries, columns: keys; each row sums to 1)."""
    w = np.asarray(weights, np.float32)
    if w.ndim == 3:
        w = w[None]
    if w.ndim != 4 or w.shape[-1] != w.shape[-2]:
        raise ConfigError(f"weights must be (L, H, T, T) or (H, T, T), got shape {np.shape(weights)}")
    layer_ids = list(range(w.shape[0])) if layers is None else list(layers)
    n_l, n_h, t = len(layer_ids), w.shape[1], w.shape[-1]
    labels = _labels(tokens, t) if tokens is not None else None
    size = min(3.2, max(2.2, 0.18 * t))
    fig, axes = _figure(n_l, n_h, width=size, height=size)
    image = None
    for r, layer in enumerate(layer_ids):
        for h in range(n_h):
            ax = axes[r, h]
            image = ax.imshow(w[layer, h], vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
            ax.set_title(f"layer {layer} head {h}", fontsize="small")
            if labels is not None and t <= 40:
                ax.set_xticks(np.arange(t), labels, fontsize=6, rotation=90)
                ax.set_yticks(np.arange(t), labels, fontsize=6)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
    fig.subplots_adjust(left=0.06, right=0.9, bottom=0.1, top=0.9, wspace=0.35, hspace=0.45)
    fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, label="attention weight")
    fig.suptitle(title or "attention weights (rows: queries, columns: keys)")
    return fig


def loss_by_position_plot(curves: Mapping[str, Sequence[float]], *, title: str = "") -> Figure:
    """Loss (nats) at each context position, one curve per model (Kaplan et al. 2020, fig. 20)."""
    if not curves:
        raise ConfigError("loss_by_position_plot needs at least one curve")
    fig, axes = _figure(1, 1, width=6.0, height=4.0)
    ax = axes[0, 0]
    for name, losses in curves.items():
        y = np.asarray(losses, np.float64)
        ax.plot(np.arange(1, y.size + 1), y, marker="." if y.size <= 64 else None, lw=1.2, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("tokens of context seen (position + 1)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title or "loss by context position")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
