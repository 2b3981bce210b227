"""AdamW with warmup + cosine / constant / warmup-stable-decay schedules, clipping, decay masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def schedule(o, total_steps: int) -> optax.Schedule:
    """Learning rate as a function of the step (0-based update count)."""
    warm = o.warmup_steps
    if o.schedule == "constant":
        if warm == 0:
            return optax.constant_schedule(o.lr)
        return optax.join_schedules([optax.linear_schedule(0.0, o.lr, warm), optax.constant_schedule(o.lr)], [warm])
    if o.schedule == "cosine":
        decay_steps = o.decay_steps or total_steps

        def cosine(step):
            # nanoGPT's get_lr: linear warmup, cosine to min_lr at decay_steps, then the floor.
            step = jnp.asarray(step, jnp.float32)
            warm_lr = o.lr * (step + 1) / max(warm, 1)
            ratio = jnp.clip((step - warm) / max(decay_steps - warm, 1), 0.0, 1.0)
            cos_lr = o.min_lr + 0.5 * (1.0 + jnp.cos(jnp.pi * ratio)) * (o.lr - o.min_lr)
            return jnp.where(step < warm, warm_lr, cos_lr)

        return cosine
    # WSD: warmup, stable at lr, then linear decay to min_lr over the last fraction of training
    decay_start = int(round(total_steps * (1.0 - o.wsd_decay_fraction)))

    def wsd(step):
        step = jnp.asarray(step, jnp.float32)
        warm_lr = o.lr * (step + 1) / max(warm, 1)
        frac = jnp.clip((step - decay_start) / max(total_steps - decay_start, 1), 0.0, 1.0)
        return jnp.where(step < warm, warm_lr, o.lr + frac * (o.min_lr - o.lr))

    return wsd


EMBEDDING_NAMES = ("embedding", "pos_embed")


def decay_mask(params, decay_embeddings: bool):
    """True for parameters that get weight decay: matrices, never norms or biases (1-D)."""

    def rule(path, leaf):
        names = [str(getattr(k, "key", k)) for k in path]
        if leaf.ndim < 2 or names[-1] in ("bias", "scale"):
            return False
        if any(n in EMBEDDING_NAMES for n in names):
            return decay_embeddings
        return True

    return jax.tree_util.tree_map_with_path(rule, params)


def make_optimizer(o, total_steps: int):
    """(optax transformation, schedule)."""
    lr = schedule(o, total_steps)
    parts = []
    if o.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(o.clip_norm))
    parts.append(optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                             mask=lambda p: decay_mask(p, o.decay_embeddings)))
    return optax.chain(*parts), lr
