"""A small batched L-BFGS for many tiny problems at once (jit + vmap friendly).

Each problem has a handful of parameters; thousands of them (grid starts, bootstrap resamples)
run in one `lax.while_loop`. To keep the vectorized loop free of nested line-search loops, the
line search is folded into the outer iteration: every iteration evaluates exactly one trial
point per problem; an Armijo-accepted trial updates the L-BFGS memory, a rejected one shrinks
the step (safeguarded quadratic interpolation) for the next iteration. Finished problems are
frozen with `jnp.where`, so the loop runs until all are done or `max_iter` is reached.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

C1 = 1e-4  # Armijo constant
PATIENCE = 3  # converged after this many consecutive accepted steps that barely decrease f


class State(NamedTuple):
    x: jnp.ndarray  # (P,) current iterate
    f: jnp.ndarray  # () objective at x
    g: jnp.ndarray  # (P,) gradient at x
    d: jnp.ndarray  # (P,) search direction
    t: jnp.ndarray  # () trial step length
    s_MP: jnp.ndarray  # (M, P) memory of steps, oldest first, zeros when empty
    y_MP: jnp.ndarray  # (M, P) memory of gradient changes
    rho_M: jnp.ndarray  # (M,) 1 / (s . y), 0 for empty slots
    it: jnp.ndarray  # () objective evaluations so far
    n_small: jnp.ndarray  # () consecutive accepted steps with a relative decrease below ftol
    done: jnp.ndarray  # () bool


def _direction(g, s_MP, y_MP, rho_M):
    """-H g by the two-loop recursion (as scans: small programs compile fast); empty slots
    (rho = 0) are no-ops."""

    def back(q, sy):
        s, y, rho = sy
        a = rho * jnp.dot(s, q)
        return q - a * y, a

    q, a_M = jax.lax.scan(back, g, (s_MP, y_MP, rho_M), reverse=True)
    sy, yy = jnp.dot(s_MP[-1], y_MP[-1]), jnp.dot(y_MP[-1], y_MP[-1])
    gamma = jnp.where(rho_M[-1] > 0, sy / jnp.where(yy > 0, yy, 1.0), 1.0)

    def fwd(r, sya):
        s, y, rho, a = sya
        return r + s * (a - rho * jnp.dot(y, r)), None

    r, _ = jax.lax.scan(fwd, gamma * q, (s_MP, y_MP, rho_M, a_M))
    return -r


def _first_step(g):
    return jnp.minimum(1.0, 1.0 / jnp.maximum(jnp.linalg.norm(g), jnp.finfo(g.dtype).tiny))


def init(fun: Callable, x0, memory: int) -> State:
    """State at x0 for one problem; `fun(x) -> (f, g)`."""
    f, g = fun(x0)
    bad = ~jnp.isfinite(f) | ~jnp.all(jnp.isfinite(g))
    p = x0.shape[0]
    z = jnp.zeros((memory, p), x0.dtype)
    return State(
        x=x0,
        f=jnp.where(bad, jnp.inf, f),
        g=jnp.where(bad, 0.0, g),
        d=jnp.where(bad, 0.0, -g),
        t=_first_step(g),
        s_MP=z,
        y_MP=z,
        rho_M=jnp.zeros((memory,), x0.dtype),
        it=jnp.ones((), jnp.int32),
        n_small=jnp.zeros((), jnp.int32),
        done=bad,
    )


def step(fun: Callable, st: State, ftol, gtol) -> State:
    """One trial evaluation for one problem."""
    xt = st.x + st.t * st.d
    ft, gt = fun(xt)
    gd = jnp.dot(st.g, st.d)
    finite = jnp.isfinite(ft) & jnp.all(jnp.isfinite(gt))
    accept = finite & (ft <= st.f + C1 * st.t * gd)

    # Accepted: push (s, y) if the curvature is positive, then the next direction.
    s, y = xt - st.x, gt - st.g
    sy = jnp.dot(s, y)
    push = sy > 1e-12 * jnp.dot(y, y)
    s_MP = jnp.where(push, jnp.concatenate([st.s_MP[1:], s[None]]), st.s_MP)
    y_MP = jnp.where(push, jnp.concatenate([st.y_MP[1:], y[None]]), st.y_MP)
    rho_M = jnp.where(push, jnp.concatenate([st.rho_M[1:], (1.0 / jnp.where(push, sy, 1.0))[None]]), st.rho_M)
    d = _direction(gt, s_MP, y_MP, rho_M)
    descent = jnp.dot(d, gt) < 0
    d = jnp.where(descent, d, -gt)
    s_MP, y_MP = jnp.where(descent, s_MP, 0.0), jnp.where(descent, y_MP, 0.0)
    rho_M = jnp.where(descent, rho_M, 0.0)
    t_acc = jnp.where(rho_M[-1] > 0, 1.0, _first_step(gt))
    small_f = (st.f - ft) <= ftol * jnp.abs(ft)
    n_small = jnp.where(small_f, st.n_small + 1, 0)
    done_acc = (n_small >= PATIENCE) | (jnp.max(jnp.abs(gt)) <= gtol)

    # Rejected: shrink the step (quadratic interpolation, kept within [0.1 t, 0.5 t]).
    denom = 2.0 * (ft - st.f - gd * st.t)
    t_quad = jnp.where(denom > 0, -gd * st.t**2 / jnp.where(denom > 0, denom, 1.0), 0.5 * st.t)
    t_rej = jnp.where(finite, jnp.clip(t_quad, 0.1 * st.t, 0.5 * st.t), 0.1 * st.t)
    eps = jnp.finfo(st.x.dtype).eps
    stuck = t_rej * jnp.linalg.norm(st.d) <= eps * (1.0 + jnp.linalg.norm(st.x))

    new = State(
        x=jnp.where(accept, xt, st.x),
        f=jnp.where(accept, ft, st.f),
        g=jnp.where(accept, gt, st.g),
        d=jnp.where(accept, d, st.d),
        t=jnp.where(accept, t_acc, t_rej),
        s_MP=jnp.where(accept, s_MP, st.s_MP),
        y_MP=jnp.where(accept, y_MP, st.y_MP),
        rho_M=jnp.where(accept, rho_M, st.rho_M),
        it=st.it + 1,
        n_small=jnp.where(accept, n_small, st.n_small),
        done=jnp.where(accept, done_acc, stuck),
    )
    # Finished problems stay frozen.
    return jax.tree.map(lambda a, b: jnp.where(st.done, a, b), st, new)


def minimize_batched(fun: Callable, x0_SP, args, *, memory: int, max_iter: int, ftol, gtol) -> State:
    """Minimize `fun(x, *args) -> (f, g)` for every row of x0_SP.

    `args` is a tuple whose leaves all have a leading batch axis S (use jnp.broadcast_to for
    shared data, or close over it in `fun`). Returns the batched final State.
    """

    def one_init(x0, a):
        return init(lambda x: fun(x, *a), x0, memory)

    def one_step(st, a):
        return step(lambda x: fun(x, *a), st, ftol, gtol)

    st = jax.vmap(one_init)(x0_SP, args)

    def cond(st):
        return (jnp.max(st.it) < max_iter) & ~jnp.all(st.done)

    def body(st):
        return jax.vmap(one_step)(st, args)

    return jax.lax.while_loop(cond, body, st)
