"""Primitive layers with PyTorch semantics, NHWC layout, inference only.

Every operation a rule or a layer method may need to see is its own module:
convolutions, dense layers, batch norm, activations, pooling, residual sums and
concatenations. Each call site in a network is a separate module instance, so a
rule attached to one ReLU never leaks onto another (torchvision reuses
``self.relu``; the zoo does not).

Linear-type layers (:class:`Conv2d`, :class:`Linear`) expose ``forward(params, x)``,
a pure function of explicit parameters, so modified-backward rules (LRP, excitation
backprop) can evaluate the same layer with modified weights.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxplain.cpu import small_conv
from jaxplain.cpu.max_pool import max_pool

Params = dict[str, jax.Array]


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


def host_uniform(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype, low: float, high: float) -> jax.Array:
    """Uniform values in ``[low, high)`` drawn on the host by numpy's Philox generator keyed by ``key``.

    Same key, same values, on every backend. An initialiser built on it compiles to one host
    call, where ``jax.random.uniform`` compiles one threefry kernel per parameter (XLA CPU
    spends ~0.1 s on each). Initialising DenseNet-121 at 32 px took 50 s that way and takes
    9.5 s now, most of it compiling Flax's key derivation.
    """
    dtype = jnp.dtype(dtype)

    def draw(key_data: np.ndarray) -> np.ndarray:
        generator = np.random.Generator(np.random.Philox(key=np.asarray(key_data, np.uint64)))
        return generator.uniform(low, high, shape).astype(dtype)

    return jax.pure_callback(draw, jax.ShapeDtypeStruct(shape, dtype), jax.random.key_data(key),
                             vmap_method="sequential")


def _torch_uniform(fan_in: int):
    """PyTorch's default (kaiming-uniform, a=sqrt(5)) init for weights and biases."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        return host_uniform(key, shape, dtype, -bound, bound)

    return init


class LinearLayer:
    """Marker for layers computing ``x -> W x + b``; rules may call ``forward``."""

    def forward(self, params: Params, inputs: jax.Array) -> jax.Array:
        raise NotImplementedError


class Conv2d(nn.Module, LinearLayer):
    """``torch.nn.Conv2d``: kernel stored HWIO (``[kh, kw, in/groups, out]``)."""

    layer_kind = "convolution"

    out_channels: int
    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    dilation: int | tuple[int, int] = 1
    groups: int = 1
    use_bias: bool = True

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        kh, kw = _pair(self.kernel_size)
        in_per_group = inputs.shape[-1] // self.groups
        init = _torch_uniform(in_per_group * kh * kw)
        params = {"kernel": self.param("kernel", init, (kh, kw, in_per_group, self.out_channels))}
        if self.use_bias:
            params["bias"] = self.param("bias", init, (self.out_channels,))
        return self.forward(params, inputs)

    @nn.nowrap
    def forward(self, params: Params, inputs: jax.Array) -> jax.Array:
        """The convolution with explicit parameters (same hyper-parameters)."""
        ph, pw = _pair(self.padding)
        out = small_conv.conv2d(
            inputs, params["kernel"], _pair(self.stride), ((ph, ph), (pw, pw)), _pair(self.dilation), self.groups
        )
        if "bias" in params:
            out = out + params["bias"].astype(inputs.dtype)
        return out


class Linear(nn.Module, LinearLayer):
    """``torch.nn.Linear``: kernel stored ``[in, out]``."""

    layer_kind = "dense"

    out_features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        init = _torch_uniform(inputs.shape[-1])
        params = {"kernel": self.param("kernel", init, (inputs.shape[-1], self.out_features))}
        if self.use_bias:
            params["bias"] = self.param("bias", init, (self.out_features,))
        return self.forward(params, inputs)

    @nn.nowrap
    def forward(self, params: Params, inputs: jax.Array) -> jax.Array:
        """The affine map with explicit parameters."""
        out = inputs @ params["kernel"].astype(inputs.dtype)
        if "bias" in params:
            out = out + params["bias"].astype(inputs.dtype)
        return out


class BatchNorm2d(nn.Module):
    """``torch.nn.BatchNorm2d`` in eval mode: running statistics in ``batch_stats``."""

    layer_kind = "batch_norm"

    eps: float = 1e-5

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        channels = inputs.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,)).value
        var = self.variable("batch_stats", "var", jnp.ones, (channels,)).value
        factor = scale * lax.rsqrt(var + self.eps)
        return inputs * factor.astype(inputs.dtype) + (bias - mean * factor).astype(inputs.dtype)


class ReLU(nn.Module):
    """``torch.nn.ReLU`` (gradient 0 at 0, as torch)."""

    layer_kind = "activation"
    nonnegative_output = True

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        return jax.nn.relu(inputs)


class ReLU6(nn.Module):
    """``torch.nn.ReLU6``: gradient 1 strictly inside (0, 6), as torch's hardtanh."""

    layer_kind = "activation"
    nonnegative_output = True

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        inside = (inputs > 0) & (inputs < 6)
        return jnp.where(inside, inputs, jnp.where(inputs >= 6, 6.0, 0.0).astype(inputs.dtype))


class Identity(nn.Module):
    """A no-op (``torch.nn.Dropout`` at inference, ``torch.nn.Identity``)."""

    layer_kind = "structural"

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        return inputs


Dropout = Identity


class Add(nn.Module):
    """A residual sum ``a + b``, a module so LRP can split relevance across terms."""

    layer_kind = "sum"

    @nn.compact
    def __call__(self, first: jax.Array, second: jax.Array) -> jax.Array:
        return first + second


class Concat(nn.Module):
    """Channel concatenation (DenseNet, SqueezeNet fire modules)."""

    layer_kind = "structural"

    @nn.compact
    def __call__(self, *inputs: jax.Array) -> jax.Array:
        return jnp.concatenate(inputs, axis=-1)


class Flatten(nn.Module):
    """``torch.flatten(x, 1)`` of the NCHW tensor, so a converted ``Linear`` needs no permutation."""

    layer_kind = "structural"

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        return jnp.transpose(inputs, (0, 3, 1, 2)).reshape(inputs.shape[0], -1)


def _pool_padding(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> tuple[int, int]:
    """Low/high padding reproducing torch's output size, ``ceil_mode`` included."""
    span = size + 2 * pad - kernel
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + pad:
            out -= 1
    else:
        out = span // stride + 1
    if out < 1:
        raise ValueError(f"pooling window {kernel} with padding {pad} does not fit a dimension of size {size}")
    return pad, (out - 1) * stride + kernel - size - pad


def _window_shapes(inputs, kernel_size, stride, padding, ceil_mode):
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    pads = (_pool_padding(inputs.shape[1], kh, sh, ph, ceil_mode), _pool_padding(inputs.shape[2], kw, sw, pw, ceil_mode))
    return (kh, kw), (sh, sw), pads


class MaxPool2d(nn.Module):
    """``torch.nn.MaxPool2d`` (padding with -inf, ``ceil_mode``); first-maximum gradient."""

    layer_kind = "max_pool"

    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] | None = None
    padding: int | tuple[int, int] = 0
    ceil_mode: bool = False

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        stride = self.kernel_size if self.stride is None else self.stride
        window, strides, pads = _window_shapes(inputs, self.kernel_size, stride, self.padding, self.ceil_mode)
        return max_pool(inputs, window, strides, pads)


class AvgPool2d(nn.Module):
    """``torch.nn.AvgPool2d`` with ``count_include_pad`` and ``ceil_mode``."""

    layer_kind = "avg_pool"

    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] | None = None
    padding: int | tuple[int, int] = 0
    ceil_mode: bool = False
    count_include_pad: bool = True

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        stride = self.kernel_size if self.stride is None else self.stride
        window, strides, pads = _window_shapes(inputs, self.kernel_size, stride, self.padding, self.ceil_mode)
        dims, step = (1, *window, 1), (1, *strides, 1)
        summed = lax.reduce_window(inputs, 0.0, lax.add, dims, step, ((0, 0), *pads, (0, 0)))
        # torch divides by the window clipped to the explicitly padded input (or the
        # true input without count_include_pad), never counting ceil_mode overhang.
        ph, pw = _pair(self.padding)
        valid = jnp.ones((1, inputs.shape[1], inputs.shape[2], 1), inputs.dtype)
        if self.count_include_pad:
            valid = jnp.pad(valid, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=1.0)
            pads = ((0, pads[0][1] - ph), (0, pads[1][1] - pw))
        counts = lax.reduce_window(valid, 0.0, lax.add, dims, step, ((0, 0), *pads, (0, 0)))
        return summed / counts


def _adaptive_matrix(size: int, out: int) -> np.ndarray:
    """Row ``i`` averages ``[floor(i*size/out), ceil((i+1)*size/out))``, torch's bins."""
    matrix = np.zeros((out, size), np.float32)
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class AdaptiveAvgPool2d(nn.Module):
    """``torch.nn.AdaptiveAvgPool2d``: a fixed linear map per spatial axis."""

    layer_kind = "avg_pool"

    output_size: int | tuple[int, int]

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        out_h, out_w = _pair(self.output_size)
        if (out_h, out_w) == (1, 1):
            return jnp.mean(inputs, axis=(1, 2), keepdims=True)
        rows = jnp.asarray(_adaptive_matrix(inputs.shape[1], out_h), inputs.dtype)
        cols = jnp.asarray(_adaptive_matrix(inputs.shape[2], out_w), inputs.dtype)
        return jnp.einsum("oh,nhwc,pw->nopc", rows, inputs, cols)


class LeakyReLU(nn.Module):
    """``torch.nn.LeakyReLU``: gradient ``negative_slope`` at 0, as torch."""

    layer_kind = "activation"

    negative_slope: float = 0.01

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        return jnp.where(inputs > 0, inputs, self.negative_slope * inputs)


class ELU(nn.Module):
    """``torch.nn.ELU``: ``alpha * (exp(x) - 1)`` for ``x <= 0``; gradient ``alpha`` at 0, as torch."""

    layer_kind = "activation"

    alpha: float = 1.0

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        negative = self.alpha * jnp.expm1(jnp.where(inputs > 0, 0.0, inputs))
        return jnp.where(inputs > 0, inputs, negative)


class Sigmoid(nn.Module):
    """``torch.nn.Sigmoid``."""

    layer_kind = "activation"
    nonnegative_output = True

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        return jax.nn.sigmoid(inputs)


class Tanh(nn.Module):
    """``torch.nn.Tanh``."""

    layer_kind = "activation"

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        return jnp.tanh(inputs)


class Softplus(nn.Module):
    """``torch.nn.Softplus``: ``log(1 + exp(beta x)) / beta``, the identity where ``beta x > threshold``."""

    layer_kind = "activation"
    nonnegative_output = True

    beta: float = 1.0
    threshold: float = 20.0

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        scaled = self.beta * inputs
        above = scaled > self.threshold
        smooth = jnp.log1p(jnp.exp(jnp.where(above, 0.0, scaled))) / self.beta
        return jnp.where(above, inputs, smooth)


class Softmax(nn.Module):
    """``torch.nn.Softmax`` over ``axis`` of the NHWC (or ``[N, K]``) tensor."""

    layer_kind = "softmax"
    nonnegative_output = True

    axis: int = -1

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        return jax.nn.softmax(inputs, axis=self.axis)
