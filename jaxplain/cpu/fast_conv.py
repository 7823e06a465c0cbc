"""Convolutions whose input gradient keeps XLA CPU's fast kernels inside a loop body.

Inside a ``lax.scan`` body, XLA CPU runs the input gradient of a convolution (a
convolution with the kernel reversed, in ``01oi`` layout) as a generic convolution,
2-5x slower than the kernels it gets outside loops (benchmarks/XLA_CPU_NOTES.md,
section 4; with XLA's own convolutions, which jaxplain uses on CPU since it keeps
YNNPACK for dots only, IG-20 in chunks of 5 on a ResNet-18, 128 px, batch 4 still took
4.5 s without the rule and 2.1 s with it). The rule here
recomputes that gradient as an ordinary ``HWIO`` convolution of the output gradient
with an explicitly flipped and transposed kernel, kept materialised by an
``optimization_barrier``; the forward pass and every value are unchanged. It applies
to every ungrouped, undilated NHWC/HWIO convolution node of the program engine outside
``small_conv``'s patches path (maps smaller than the kernel, float64), in any model form
(:func:`node_rules`), on the CPU backend only.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxplain.cpu import on_cpu
from jaxplain.cpu.small_conv import DIMENSIONS, NHWC_NUMBERS, routes
from jaxplain.typing import Array


def input_gradient(
    cotangent: Array,
    kernel: Array,
    strides: tuple[int, int],
    padding: tuple[tuple[int, int], ...],
    size: tuple[int, int],
) -> Array:
    """d<cotangent, conv(x, kernel)>/dx for an input of spatial ``size``, as one forward-layout convolution."""
    transposed = lax.optimization_barrier(jnp.transpose(jnp.flip(kernel, (0, 1)), (0, 1, 3, 2)))
    pads = []
    for extent, k, stride, (low, high), out in zip(size, kernel.shape[:2], strides, padding, cotangent.shape[1:3]):
        rest = extent + low + high - k - (out - 1) * stride
        pads.append((k - 1 - low, k - 1 - high + rest))
    return lax.conv_general_dilated(
        cotangent, transposed.astype(cotangent.dtype), (1, 1), pads, lhs_dilation=strides, dimension_numbers=DIMENSIONS
    )


def _eligible_node(node: Any) -> bool:
    params = node.eqn.params
    if node.primitive != "conv_general_dilated" or params["dimension_numbers"] != NHWC_NUMBERS:
        return False
    if params["feature_group_count"] != 1 or params["batch_group_count"] != 1:
        return False
    if tuple(params["lhs_dilation"]) != (1, 1) or tuple(params["rhs_dilation"]) != (1, 1):
        return False
    lhs, rhs = (var.aval for var in node.eqn.invars)
    return not routes(lhs.shape, rhs.shape, lhs.dtype)


def _fast_node(node: Any, values: list[Array]) -> list[Array]:
    from jaxplain.program.interpret import bind

    params = node.eqn.params
    strides, padding = tuple(params["window_strides"]), tuple(tuple(p) for p in params["padding"])

    @jax.custom_vjp
    def conv(x, kernel):
        return bind(node, [x, kernel])[0]

    def forward(x, kernel):
        return conv(x, kernel), (x, kernel)

    def backward(residuals, cotangent):
        x, kernel = residuals
        _, kernel_vjp = jax.vjp(lambda k: bind(node, [x, k])[0], kernel)
        return input_gradient(cotangent, kernel, strides, padding, x.shape[1:3]), kernel_vjp(cotangent)[0]

    conv.defvjp(forward, backward)
    return [conv(*values)]


def node_rules(node: Any) -> Callable[[Any, list[Array]], list[Array]] | None:
    """The program engine's node rule map: :func:`input_gradient` for NHWC convolutions, on CPU only."""
    if not on_cpu() or not _eligible_node(node):
        return None
    return _fast_node
