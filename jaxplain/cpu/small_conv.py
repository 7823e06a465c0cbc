"""Convolutions XLA CPU runs in a slow generic loop, computed as products over gathered patches.

Two cases, both one to two orders of magnitude slower than XLA CPU's convolution kernels,
forward and backward (benchmarks/XLA_CPU_NOTES.md, sections 4 and 7):

- a feature map with fewer pixels than the kernel has taps (a 3x3 convolution on ResNet's
  ``layer4`` at 2x2, from 64 px inputs; CIFAR-sized inputs): XLA's algebraic simplifier
  swaps the operands (the activation becomes the "kernel") and the swapped convolution loops;
- float64: the fast kernels take float32 and float16 only (a 3x3, 256-channel convolution on a
  2x8x12 map: 334 ms against 2.8 ms), while float64 matrix products are fast.

On the CPU backend, :func:`conv2d` computes those as one matrix product over explicitly
gathered, zero-padded patches, keeping only the kernel taps that ever touch the map; every
other convolution, and every convolution on another backend, is ``lax.conv_general_dilated``.

The product is wrapped in a ``jit`` call whose name records the convolution
(:data:`MARK`, strides, padding), and the program engine reads it back as the convolution
it computes (:func:`convolution_equation`): rules see a convolution node, not a product over
padded patches, so a rule that replaces the layer's input (Flat's ones, ZBox's bounds) has it
zero-padded as the convolution pads it. Where the engine evaluates a convolution node, the same
two cases take the patches path again (:func:`by_patches`).
"""

from __future__ import annotations

import ast
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxplain.cpu import on_cpu

Padding = tuple[tuple[int, int], tuple[int, int]]

MARK = "jaxplain_patches_conv2d"
"""Name prefix of the ``jit`` call holding a convolution computed by patches; its strides and padding follow."""

DIMENSIONS = ("NHWC", "HWIO", "NHWC")
NHWC_NUMBERS = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), DIMENSIONS)


def _live_taps(size: int, kernel: int, stride: int, low: int, out: int) -> range:
    """Kernel offsets that read at least one real (unpadded) pixel for some output position (an interval)."""
    live = [a for a in range(kernel) if any(0 <= i * stride + a - low < size for i in range(out))]
    return range(live[0], live[-1] + 1)


def is_smaller_than_kernel(input_shape: tuple[int, ...], kernel_shape: tuple[int, ...]) -> bool:
    """Whether XLA would swap the operands: fewer map pixels than kernel taps."""
    return input_shape[1] * input_shape[2] < kernel_shape[0] * kernel_shape[1]


def routes(input_shape: tuple[int, ...], kernel_shape: tuple[int, ...], dtype: Any) -> bool:
    """Whether an ungrouped, undilated NHWC x HWIO convolution is computed by patches here (see the module docstring).

    Args:
        input_shape: ``[N, H, W, C]``.
        kernel_shape: ``[kh, kw, C, O]``.
        dtype: the input's dtype.

    Returns:
        True on the CPU backend for a map smaller than the kernel or a float64 input.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> routes((1, 2, 2, 8), (3, 3, 8, 8), jnp.float32) == (jax.default_backend() == "cpu")
        True
        >>> routes((1, 8, 8, 8), (3, 3, 8, 8), jnp.float32)
        False
    """
    return on_cpu() and (is_smaller_than_kernel(input_shape, kernel_shape) or np.dtype(dtype) == np.float64)


def patches_conv2d(inputs: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding) -> jax.Array:
    """An NHWC x HWIO convolution (no groups, no dilation) as gathered patches times the kernel.

    The patches are one gather from the zero-padded input (its input gradient one scatter-add):
    XLA compiles that in a third of the time of one strided slice per kernel tap and a
    concatenation, and runs it as fast.

    Args:
        inputs: ``[N, H, W, C]``.
        kernel: ``[kh, kw, C, O]``.
        strides: per spatial axis.
        padding: ``((low, high), (low, high))``, lows non-negative.

    Returns:
        ``[N, H', W', O]``.

    Example:
        >>> import jax.numpy as jnp
        >>> patches_conv2d(jnp.ones((1, 2, 2, 3)), jnp.ones((3, 3, 3, 4)), (1, 1), ((1, 1), (1, 1)))[0, 0, 0].tolist()
        [12.0, 12.0, 12.0, 12.0]
    """
    n, height, width, channels = inputs.shape
    kh, kw, _, out_channels = kernel.shape
    (sh, sw), ((low_h, high_h), (low_w, high_w)) = strides, padding
    out_h = (height + low_h + high_h - kh) // sh + 1
    out_w = (width + low_w + high_w - kw) // sw + 1
    rows = _live_taps(height, kh, sh, low_h, out_h)
    cols = _live_taps(width, kw, sw, low_w, out_w)
    padded = jnp.pad(inputs, ((0, 0), (low_h, max(high_h, 0)), (low_w, max(high_w, 0)), (0, 0)))
    row_index = np.arange(out_h)[:, None] * sh + np.arange(rows.start, rows.stop)[None, :]
    col_index = np.arange(out_w)[:, None] * sw + np.arange(cols.start, cols.stop)[None, :]
    patches = padded[:, row_index[:, None, :, None], col_index[None, :, None, :], :]
    patches = patches.reshape(n * out_h * out_w, len(rows) * len(cols) * channels)
    weights = kernel[rows.start : rows.stop, cols.start : cols.stop].reshape(-1, out_channels)
    return (patches @ weights.astype(inputs.dtype)).reshape(n, out_h, out_w, out_channels)


@functools.lru_cache(maxsize=None)
def _marked(strides: tuple[int, int], padding: Padding):
    def convolution(inputs, kernel):
        return patches_conv2d(inputs, kernel, strides, padding)

    convolution.__name__ = f"{MARK}{(strides, padding)!r}"
    return jax.jit(convolution)


def _lax_conv(inputs: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding) -> jax.Array:
    return lax.conv_general_dilated(inputs, kernel, window_strides=strides, padding=padding,
                                    dimension_numbers=DIMENSIONS)


def convolution_equation(eqn: Any) -> Any | None:
    """The convolution a marked patches call computes, as a ``conv_general_dilated`` equation over its variables.

    Args:
        eqn: a jaxpr equation.

    Returns:
        For a ``jit`` call made by :func:`conv2d`'s patches path, the equation of
        ``lax.conv_general_dilated`` with its strides and padding, on the call's input and output
        variables (its source and context kept); None for any other equation.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x, k = jnp.ones((1, 2, 2, 3), jnp.float32), jnp.ones((3, 3, 3, 4), jnp.float32)
        >>> jaxpr = jax.make_jaxpr(lambda x, k: conv2d(x, k, (1, 1), ((1, 1), (1, 1))))(x, k).jaxpr
        >>> found = convolution_equation(jaxpr.eqns[0])
        >>> found.primitive.name if jax.default_backend() == "cpu" else "conv_general_dilated"
        'conv_general_dilated'
    """
    name = str(eqn.params.get("name", "")) if eqn.primitive.name in ("jit", "pjit") else ""
    if not name.startswith(MARK):
        return None
    strides, padding = ast.literal_eval(name[len(MARK):])
    lhs, rhs = (var.aval for var in eqn.invars)
    jaxpr = jax.make_jaxpr(functools.partial(_lax_conv, strides=strides, padding=padding))(
        jax.ShapeDtypeStruct(lhs.shape, lhs.dtype), jax.ShapeDtypeStruct(rhs.shape, rhs.dtype)).jaxpr
    (convolution,) = jaxpr.eqns
    return convolution.replace(invars=list(eqn.invars), outvars=list(eqn.outvars), source_info=eqn.source_info,
                               ctx=eqn.ctx)


def by_patches(values: list[Any], params: dict[str, Any]) -> jax.Array | None:
    """A ``conv_general_dilated`` with ``params`` on ``values``, by patches where :func:`routes` says so; else None.

    Args:
        values: the input and the kernel.
        params: the equation's parameters.

    Returns:
        The convolution's output, or None where it is not an ungrouped, undilated NHWC x HWIO
        convolution that this backend computes by patches.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x, k = jnp.ones((1, 2, 2, 3)), jnp.ones((3, 3, 3, 4))
        >>> eqn = jax.make_jaxpr(lambda x, k: _lax_conv(x, k, (1, 1), ((1, 1), (1, 1))))(x, k).jaxpr.eqns[0]
        >>> out = by_patches([x, k], eqn.params)
        >>> float(out[0, 0, 0, 0]) if out is not None else 12.0
        12.0
    """
    inputs, kernel = values
    if (params["dimension_numbers"] != NHWC_NUMBERS or params["feature_group_count"] != 1
            or params["batch_group_count"] != 1 or tuple(params["lhs_dilation"]) != (1, 1)
            or tuple(params["rhs_dilation"]) != (1, 1) or params.get("preferred_element_type") is not None
            or any(low < 0 or high < 0 for low, high in params["padding"])
            or not routes(np.shape(inputs), np.shape(kernel), jnp.result_type(inputs))):
        return None
    padding = tuple((int(low), int(high)) for low, high in params["padding"])
    strides = tuple(int(s) for s in params["window_strides"])
    return _marked(strides, padding)(inputs, jnp.asarray(kernel).astype(jnp.result_type(inputs)))


def conv2d(
    inputs: jax.Array,
    kernel: jax.Array,
    strides: tuple[int, int],
    padding: Padding,
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> jax.Array:
    """``lax.conv_general_dilated`` (NHWC, HWIO), by patches on CPU where :func:`routes` says so.

    Args:
        inputs: ``[N, H, W, C]``.
        kernel: ``[kh, kw, C / groups, O]``.
        strides: per spatial axis.
        padding: ``((low, high), (low, high))``.
        dilation: the kernel's dilation.
        groups: feature groups.

    Returns:
        ``[N, H', W', O]``, in the input's dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> conv2d(jnp.ones((1, 2, 2, 3)), jnp.ones((3, 3, 3, 4)), (1, 1), ((1, 1), (1, 1)))[0, 0, 0].tolist()
        [12.0, 12.0, 12.0, 12.0]
    """
    if groups == 1 and dilation == (1, 1) and routes(inputs.shape, kernel.shape, inputs.dtype):
        strides = tuple(int(s) for s in strides)
        padding = tuple((int(low), int(high)) for low, high in padding)
        return _marked(strides, padding)(inputs, kernel.astype(inputs.dtype))
    return lax.conv_general_dilated(
        inputs,
        kernel.astype(inputs.dtype),
        window_strides=strides,
        padding=padding,
        rhs_dilation=dilation,
        dimension_numbers=DIMENSIONS,
        feature_group_count=groups,
    )
