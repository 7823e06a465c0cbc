"""Max pooling with torch's first-maximum gradient, placed without XLA's select-and-scatter.

Kept on every backend, unlike the other modules of :mod:`jaxplain.cpu`: the gradient going to
the first maximum of a window is torch's semantics (its parity matters wherever ties occur,
such as windows of ReLU zeros), not only a speed-up. The speed-up is XLA CPU's: the placement
is one strided comparison and one interior-padded placement per window offset, with which
ResNet-18's input gradient ran 16% faster than with select-and-scatter
(``benchmarks/XLA_CPU_NOTES.md``, section 3).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(inputs: jax.Array, window: tuple[int, int], strides: tuple[int, int], pads) -> jax.Array:
    """Max pooling whose gradient goes to the first maximum of each window (torch's choice).

    The backward pass places the cotangent with one strided comparison and one
    interior-padded placement per window offset instead of XLA's select-and-scatter,
    with which ResNet-18's input gradient ran 16% slower on CPU
    (``benchmarks/XLA_CPU_NOTES.md``, section 3).
    """
    return lax.reduce_window(
        inputs,
        -jnp.inf,
        lax.max,
        (1, *window, 1),
        (1, *strides, 1),
        ((0, 0), *pads, (0, 0)),
    )


def _max_pool_fwd(inputs, window, strides, pads):
    out = max_pool(inputs, window, strides, pads)
    return out, (inputs, out)


def _max_pool_bwd(window, strides, pads, residuals, cotangent):
    inputs, out = residuals
    (pad_h, pad_w), (sh, sw) = pads, strides
    border = ((0, 0, 0), (*pad_h, 0), (*pad_w, 0), (0, 0, 0))
    padded = lax.pad(inputs, jnp.array(-jnp.inf, inputs.dtype), border)
    height, width = padded.shape[1], padded.shape[2]
    out_h, out_w = out.shape[1], out.shape[2]
    taken = jnp.zeros(out.shape, bool)
    grad = jnp.zeros(padded.shape, cotangent.dtype)
    zero = jnp.zeros((), cotangent.dtype)
    for di in range(window[0]):
        for dj in range(window[1]):
            limit = (padded.shape[0], di + (out_h - 1) * sh + 1, dj + (out_w - 1) * sw + 1, padded.shape[3])
            candidates = lax.slice(padded, (0, di, dj, 0), limit, (1, sh, sw, 1))
            hit = (candidates == out) & ~taken
            taken = taken | hit
            placed = lax.pad(
                jnp.where(hit, cotangent, zero),
                zero,
                ((0, 0, 0), (di, height - limit[1], sh - 1), (dj, width - limit[2], sw - 1), (0, 0, 0)),
            )
            grad = grad + placed
    return (lax.pad(grad, zero, tuple((-low, -high, 0) for low, high, _ in border)),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
