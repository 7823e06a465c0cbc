"""Convolutions whose input gradient keeps XLA CPU's fast kernels inside a loop body.

Inside a ``lax.scan`` body, XLA CPU runs the input gradient of a convolution (a
convolution with the kernel reversed, in ``01oi`` layout) as a generic convolution,
2-5x slower than the YNNPACK kernels it gets outside loops (the transposed kernel is
then hoisted and materialised; benchmarks/XLA_CPU_NOTES.md, section 4). The rule here
recomputes that gradient as an ordinary ``HWIO`` convolution of the output gradient
with an explicitly flipped and transposed kernel, kept materialised by an
``optimization_barrier``; the forward pass and every value are unchanged. It applies
to ungrouped, undilated ``Conv2d`` layers outside ``small_conv``'s patches path.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxplain.nets.layers import Conv2d, _pair
from jaxplain.nets.small_conv import is_smaller_than_kernel
from jaxplain.typing import Array

DIMENSIONS = ("NHWC", "HWIO", "NHWC")


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


def fast_input_gradient(module: Conv2d, params: dict[str, Array], inputs: Array) -> Array:
    """``module.forward(params, inputs)`` with :func:`input_gradient` as its input VJP."""
    ph, pw = _pair(module.padding)
    padding, strides = ((ph, ph), (pw, pw)), _pair(module.stride)

    @jax.custom_vjp
    def conv(p, x):
        return module.forward(p, x)

    def forward(p, x):
        return module.forward(p, x), (p, x)

    def backward(residuals, cotangent):
        p, x = residuals
        _, param_vjp = jax.vjp(lambda q: module.forward(q, x), p)
        return param_vjp(cotangent)[0], input_gradient(cotangent, p["kernel"], strides, padding, x.shape[1:3])

    conv.defvjp(forward, backward)
    return conv(params, inputs)


def eligible(module: Any, inputs: Array) -> bool:
    """Whether :func:`fast_input_gradient` handles this call."""
    if not isinstance(module, Conv2d) or module.groups != 1 or _pair(module.dilation) != (1, 1):
        return False
    kh, kw = _pair(module.kernel_size)
    return not is_smaller_than_kernel(inputs.shape, (kh, kw))


def conv_rules(module: Any, path: tuple[str, ...]) -> Callable[..., Array] | None:
    """A rule map giving every ``Conv2d`` call :func:`fast_input_gradient` where it applies."""
    if not isinstance(module, Conv2d):
        return None

    def rule(module: Conv2d, call: Callable[..., Array], inputs: Array) -> Array:
        if not eligible(module, inputs):
            return call(inputs)
        return fast_input_gradient(module, module.variables["params"], inputs)

    return rule
