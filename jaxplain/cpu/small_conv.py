"""Convolutions over feature maps smaller than their kernel, without XLA CPU's slow path.

When a feature map has fewer pixels than the kernel has taps (a 3x3 convolution on
ResNet's ``layer4`` at 2x2, from 64 px inputs; ``layer3``/``layer4`` of CIFAR-sized
inputs), XLA's algebraic simplifier swaps the convolution's operands (the activation
becomes the "kernel"), and XLA CPU runs the swapped convolution in a generic loop
that is one to two orders of magnitude slower than its YNNPACK kernels, forward and
backward (see benchmarks/XLA_CPU_NOTES.md). On the CPU backend, :func:`conv2d` computes
such convolutions as one matrix product over explicitly gathered patches, keeping only the
kernel taps that ever touch the map; every other convolution, and every convolution on
another backend, is ``lax.conv_general_dilated`` unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxplain.cpu import on_cpu

Padding = tuple[tuple[int, int], tuple[int, int]]


def _live_taps(size: int, kernel: int, stride: int, low: int, out: int) -> range:
    """Kernel offsets that read at least one real (unpadded) pixel for some output position (an interval)."""
    live = [a for a in range(kernel) if any(0 <= i * stride + a - low < size for i in range(out))]
    return range(live[0], live[-1] + 1)


def is_smaller_than_kernel(input_shape: tuple[int, ...], kernel_shape: tuple[int, ...]) -> bool:
    """Whether XLA would swap the operands: fewer map pixels than kernel taps."""
    return input_shape[1] * input_shape[2] < kernel_shape[0] * kernel_shape[1]


def patches_conv2d(inputs: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding) -> jax.Array:
    """An NHWC x HWIO convolution (no groups, no dilation) as gathered patches times the kernel."""
    n, height, width, channels = inputs.shape
    kh, kw, _, out_channels = kernel.shape
    (sh, sw), ((low_h, high_h), (low_w, high_w)) = strides, padding
    out_h = (height + low_h + high_h - kh) // sh + 1
    out_w = (width + low_w + high_w - kw) // sw + 1
    rows = _live_taps(height, kh, sh, low_h, out_h)
    cols = _live_taps(width, kw, sw, low_w, out_w)
    padded = jnp.pad(inputs, ((0, 0), (low_h, max(high_h, 0)), (low_w, max(high_w, 0)), (0, 0)))
    taps = [
        lax.slice(padded, (0, a, b, 0), (n, a + (out_h - 1) * sh + 1, b + (out_w - 1) * sw + 1, channels), (1, sh, sw, 1))
        for a in rows
        for b in cols
    ]
    patches = jnp.concatenate(taps, axis=-1).reshape(n * out_h * out_w, len(taps) * channels)
    weights = kernel[rows.start : rows.stop, cols.start : cols.stop].reshape(len(taps) * channels, out_channels)
    return (patches @ weights.astype(inputs.dtype)).reshape(n, out_h, out_w, out_channels)


def conv2d(
    inputs: jax.Array,
    kernel: jax.Array,
    strides: tuple[int, int],
    padding: Padding,
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> jax.Array:
    """``lax.conv_general_dilated`` (NHWC, HWIO), by patches when the map is smaller than the kernel on CPU."""
    if on_cpu() and groups == 1 and dilation == (1, 1) and is_smaller_than_kernel(inputs.shape, kernel.shape):
        return patches_conv2d(inputs, kernel, strides, padding)
    return lax.conv_general_dilated(
        inputs,
        kernel.astype(inputs.dtype),
        window_strides=strides,
        padding=padding,
        rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )
