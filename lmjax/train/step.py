"""Pure train and eval steps, and their jitted, sharded versions.

train_step(state, batch) -> (state, metrics) and eval_step(params, batch, mask) -> sums are
pure functions; ``compile_steps`` jits them with explicit NamedShardings on the mesh and
donates the state buffers. Nothing here syncs with the host.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from lmjax import parallel
from lmjax.errors import ConfigError


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # number of optimizer updates done
    params: Any
    opt_state: Any
    carry: Any = None  # recurrent state carried across windows (stateful truncated BPTT), else None


def token_losses(logits_BTV, targets_BT):
    """Per-token cross-entropy in nats (float32)."""
    logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]


def loss_sums(model, params, windows_BT1, mask_BT=None, *, train=False, rng=None, carry=None):
    """(sum of token losses, number of tokens) over a batch of windows (inputs + shifted targets).

    With ``carry`` (recurrent models), returns (sum, count, final carry) instead.
    """
    inputs_BT, targets_BT = windows_BT1[:, :-1], windows_BT1[:, 1:]
    rngs = {"dropout": rng} if rng is not None else None
    if carry is None:
        logits_BTV = model.apply({"params": params}, inputs_BT, train=train, rngs=rngs)
    else:
        logits_BTV, carry = model.apply({"params": params}, inputs_BT, train=train, rngs=rngs, carry=carry,
                                        return_carry=True)
    losses_BT = token_losses(logits_BTV, targets_BT)
    if mask_BT is None:
        mask_BT = jnp.ones_like(losses_BT)
    sums = (losses_BT * mask_BT).sum(), mask_BT.sum()
    return sums if carry is None else (*sums, carry)


def grads_and_loss(model, params, windows_BT1, rng, carry=None, accum: int = 1):
    """(mean train loss, grads, new carry) of a batch, over `accum` equal microbatches.

    Accumulating is the same gradient in less memory. On a CPU it can also be faster: the baby
    Transformer's step at batch 12 needs ~50 MiB of buffers and outgrows a 32 MiB L3 cache, so
    two microbatches of 6 (~28 MiB) run 1.1-1.35x faster (benchmarks/bench_train_throughput.py).

    ``carry`` (recurrent state, stateful runs) is threaded through and cut from the gradient
    (truncated BPTT); it is not supported with accumulation.
    """
    def loss_fn(p, w):
        if carry is None:
            total, count = loss_sums(model, p, w, train=True, rng=rng)
            return total / count, None
        total, count, new_carry = loss_sums(model, p, w, train=True, rng=rng, carry=carry)
        return total / count, jax.lax.stop_gradient(new_carry)  # truncated BPTT

    if accum == 1:
        (loss, new_carry), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, windows_BT1)
        return loss, grads, new_carry
    # Microbatch i takes rows i, i + accum, ...: a batch split over data-parallel devices stays on
    # its devices (a contiguous split would move half the rows of every microbatch).
    micro = windows_BT1.reshape(-1, accum, windows_BT1.shape[-1]).swapaxes(0, 1)

    def body(acc, w):
        loss_acc, grads_acc = acc
        (loss, _), g = jax.value_and_grad(loss_fn, has_aux=True)(params, w)
        return (loss_acc + loss, jax.tree.map(jnp.add, grads_acc, g)), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    (loss_sum, grads_sum), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros), micro)
    # equal-sized microbatches without padding: the token-weighted mean is the plain mean
    return loss_sum / accum, jax.tree.map(lambda g: g / accum, grads_sum), None


def is_stateful(cfg) -> bool:
    if not cfg.data.stateful:
        return False
    if cfg.model.family not in ("lstm", "gru", "rnn"):
        raise ConfigError(f"data.stateful needs a recurrent model (lstm, gru, rnn), not {cfg.model.family!r}")
    if cfg.train.grad_accum != 1:
        raise ConfigError("data.stateful does not combine with train.grad_accum > 1")
    return True


@dataclasses.dataclass(frozen=True)
class OnMesh:
    """A jitted function called (and lowered) with its mesh set, so logical constraints resolve."""

    mesh: jax.sharding.Mesh
    fn: Callable

    def __call__(self, *args):
        with jax.set_mesh(self.mesh):
            return self.fn(*args)

    def lower(self, *args):
        with jax.set_mesh(self.mesh):
            return self.fn.lower(*args)


@dataclasses.dataclass(frozen=True)
class Steps:
    """The compiled steps and everything needed to place data for them."""

    mesh: jax.sharding.Mesh
    rules: tuple
    state_sharding: Any
    init: Callable  # rng -> TrainState (created sharded)
    train: Callable  # (state, windows) -> (state, metrics)
    eval: Callable  # (params, windows, mask) -> (loss_sum, count)
    abstract_state: Any
    eval_stream: Callable | None = None  # (params, windows, mask, carry) -> (sum, count, carry)


def make_steps(model, tx, lr_schedule, cfg, mesh) -> Steps:
    """Build the sharded init / train / eval functions for a neural model."""
    rule_table = parallel.rules(cfg.mesh.rules)
    seed, accum = cfg.train.seed, cfg.train.grad_accum
    dummy_BT = jnp.zeros((1, cfg.model.context), jnp.int32)
    base_dropout_key = jax.random.fold_in(jax.random.key(seed), 1)

    def boxed_params(rng):
        return model.init({"params": rng, "dropout": rng}, dummy_BT, train=False)["params"]

    stateful = is_stateful(cfg)

    def init_state(rng):
        params = nn.meta.unbox(boxed_params(rng))
        carry = None
        if stateful:
            from lmjax.models.recurrent import initial_carry

            carry = initial_carry(cfg.model, cfg.train.batch_size)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), carry=carry)

    boxed = jax.eval_shape(boxed_params, jax.random.key(0))
    param_sh = parallel.logical_shardings(boxed, mesh, rule_table)
    abstract = jax.eval_shape(init_state, jax.random.key(0))
    repl = parallel.replicated(mesh)
    opt_sh = optax.tree_utils.tree_map_params(tx, lambda _, s: s, abstract.opt_state, param_sh,
                                              transform_non_params=lambda _: repl)
    carry_sh = jax.tree.map(lambda a: parallel.batch_sharding(mesh, a.ndim), abstract.carry)
    state_sh = TrainState(step=repl, params=param_sh, opt_state=opt_sh, carry=carry_sh)
    batch_sh = parallel.batch_sharding(mesh)

    def with_rules(fn):
        def wrapped(*args):
            with nn.logical_axis_rules(rule_table):
                return fn(*args)
        return wrapped

    def train_step(state: TrainState, windows_BT1):
        rng = jax.random.fold_in(base_dropout_key, state.step)
        loss, grads, carry = grads_and_loss(model, state.params, windows_BT1, rng, state.carry, accum)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"train_loss": loss, "grad_norm": optax.global_norm(grads), "lr": lr_schedule(state.step)}
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state, carry=carry), metrics

    def eval_step(params, windows_BT1, mask_BT):
        return loss_sums(model, params, windows_BT1, mask_BT, train=False)

    def eval_stream_step(params, windows_BT1, mask_BT, carry):
        return loss_sums(model, params, windows_BT1, mask_BT, train=False, carry=carry)

    init = OnMesh(mesh, jax.jit(init_state, out_shardings=state_sh))
    train = OnMesh(mesh, jax.jit(with_rules(train_step), in_shardings=(state_sh, batch_sh),
                                 out_shardings=(state_sh, repl), donate_argnums=0))
    evaluate = OnMesh(mesh, jax.jit(with_rules(eval_step), in_shardings=(param_sh, batch_sh, batch_sh),
                                    out_shardings=(repl, repl)))
    evaluate_stream = None
    if stateful:
        evaluate_stream = OnMesh(mesh, jax.jit(with_rules(eval_stream_step)))
    return Steps(mesh, rule_table, state_sh, init, train, evaluate, abstract, evaluate_stream)
