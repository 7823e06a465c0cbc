"""JAX implementations of the ATen ops that exported classifiers use, in torch's layouts.

``OPS`` maps an op name as ``str(torch_op)`` prints it (``"aten.convolution.default"``) or
a Python operator (``"operator.getitem"``) to a function of the same arguments. Tensors are
channels-first as in torch; non-linearities are ``jax.nn``'s (``jax.nn.relu``,
``jax.nn.gelu``, ``jax.nn.sigmoid``) so that programs reading the jaxpr recognise them.
Semantics follow the ATen reference (``torch/_refs`` and ``aten/src/ATen/native``):
padding, ceil-mode pooling, ``count_include_pad``, Python-style slicing, squeeze of
non-unit dimensions as a no-op.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxplain.typing import Array

_DTYPES = {
    "float16": jnp.float16,
    "bfloat16": jnp.bfloat16,
    "float32": jnp.float32,
    "float64": jnp.float64,
    "int8": jnp.int8,
    "uint8": jnp.uint8,
    "int16": jnp.int16,
    "int32": jnp.int32,
    "int64": jnp.int64,
    "bool": jnp.bool_,
}


def jax_dtype(name: str) -> Any:
    """The JAX dtype for a torch dtype name, canonicalised (``int64`` is ``int32`` without x64)."""
    if name not in _DTYPES:
        raise ValueError(f"torch dtype {name!r} has no JAX equivalent here; known: {', '.join(_DTYPES)}")
    return jax.dtypes.canonicalize_dtype(_DTYPES[name])


def _axis(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def _axes(dims: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    if dims is None or (not isinstance(dims, int) and len(dims) == 0):
        return tuple(range(ndim))
    dims = (dims,) if isinstance(dims, int) else dims
    return tuple(_axis(d, ndim) for d in dims)


def _channel_shape(vector: Array, ndim: int) -> Array:
    return vector.reshape((1, -1) + (1,) * (ndim - 2))


_CONV_DIMENSIONS = {3: ("NCH", "OIH", "NCH"), 4: ("NCHW", "OIHW", "NCHW"), 5: ("NCDHW", "OIDHW", "NCDHW")}


def convolution(
    x: Array,
    weight: Array,
    bias: Array | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    transposed: bool,
    output_padding: Sequence[int],
    groups: int,
) -> Array:
    """``aten.convolution``: torch layouts (NCHW input, OIHW kernel), symmetric padding."""
    if transposed:
        raise ValueError("aten.convolution: transposed convolutions are not implemented")
    if x.ndim not in _CONV_DIMENSIONS:
        raise ValueError(f"aten.convolution: input of rank {x.ndim}; 1-3 spatial dimensions are supported")
    spatial = x.ndim - 2
    out = lax.conv_general_dilated(
        x,
        weight,
        window_strides=tuple(stride) * (spatial // len(stride)),
        padding=[(p, p) for p in tuple(padding) * (spatial // len(padding))],
        rhs_dilation=tuple(dilation) * (spatial // len(dilation)),
        feature_group_count=groups,
        dimension_numbers=_CONV_DIMENSIONS[x.ndim],
    )
    return out if bias is None else out + _channel_shape(bias, x.ndim)


def addmm(bias: Array, a: Array, b: Array, *, beta: float = 1, alpha: float = 1) -> Array:
    """``beta * bias + alpha * a @ b``."""
    product = a @ b
    product = product if alpha == 1 else alpha * product
    return product + (bias if beta == 1 else beta * bias)


def linear(x: Array, weight: Array, bias: Array | None = None) -> Array:
    """``x @ weight.T + bias`` with torch's ``(out, in)`` weight."""
    out = x @ weight.T
    return out if bias is None else out + bias


def batch_norm_no_training(
    x: Array, weight: Array | None, bias: Array | None, mean: Array, var: Array, momentum: float, eps: float
) -> tuple[Array, None, None]:
    """``aten._native_batch_norm_legit_no_training``: normalise axis 1 with the running statistics."""
    out = (x - _channel_shape(mean, x.ndim)) * _channel_shape(lax.rsqrt(var + eps), x.ndim)
    if weight is not None:
        out = out * _channel_shape(weight, x.ndim)
    if bias is not None:
        out = out + _channel_shape(bias, x.ndim)
    return out, None, None


def batch_norm(
    x: Array,
    weight: Array | None,
    bias: Array | None,
    mean: Array,
    var: Array,
    training: bool,
    momentum: float,
    eps: float,
    *args: Any,
) -> Array:
    """``aten.batch_norm`` in inference mode."""
    if training:
        raise ValueError("aten.batch_norm in training mode: convert the model in eval mode")
    return batch_norm_no_training(x, weight, bias, mean, var, momentum, eps)[0]


def native_layer_norm(
    x: Array, normalized_shape: Sequence[int], weight: Array | None, bias: Array | None, eps: float
) -> tuple[Array, Array, Array]:
    """``aten.native_layer_norm``: (normalised, mean, 1/std) over the trailing dimensions."""
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    rstd = lax.rsqrt(jnp.mean(centred * centred, axis=axes, keepdims=True) + eps)
    out = centred * rstd
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out, mean, rstd


def layer_norm(x: Array, normalized_shape: Sequence[int], weight=None, bias=None, eps: float = 1e-5, *args) -> Array:
    """``aten.layer_norm``."""
    return native_layer_norm(x, normalized_shape, weight, bias, eps)[0]


def native_group_norm(
    x: Array, weight: Array | None, bias: Array | None, n: int, c: int, hw: int, groups: int, eps: float
) -> tuple[Array, Array, Array]:
    """``aten.native_group_norm``: (normalised, mean, 1/std) per sample and channel group."""
    grouped = x.reshape((x.shape[0], groups, -1))
    mean = jnp.mean(grouped, axis=-1, keepdims=True)
    centred = grouped - mean
    rstd = lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + eps)
    out = (centred * rstd).reshape(x.shape)
    if weight is not None:
        out = out * _channel_shape(weight, x.ndim)
    if bias is not None:
        out = out + _channel_shape(bias, x.ndim)
    return out, mean[..., 0], rstd[..., 0]


def _window_padding(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> tuple[int, int]:
    """(low, high) padding of one spatial axis, with the extra high padding of ``ceil_mode``."""
    span = dilation * (kernel - 1) + 1
    if ceil_mode:
        out = -(-(size + 2 * pad - span) // stride) + 1
        if (out - 1) * stride >= size + pad:
            out -= 1
    else:
        out = (size + 2 * pad - span) // stride + 1
    return pad, (out - 1) * stride + span - size - pad


def _pool_arguments(x: Array, kernel, stride, padding, dilation, ceil_mode):
    spatial = len(kernel)
    stride = tuple(stride) if stride else tuple(kernel)
    padding = tuple(padding) * (spatial // len(padding)) if padding else (0,) * spatial
    dilation = tuple(dilation) * (spatial // len(dilation)) if dilation else (1,) * spatial
    sizes = x.shape[-spatial:]
    pads = [
        _window_padding(n, k, s, p, d, ceil_mode) for n, k, s, p, d in zip(sizes, kernel, stride, padding, dilation)
    ]
    lead = (1,) * (x.ndim - spatial)
    return (
        lead + tuple(kernel),
        lead + stride,
        [(0, 0)] * (x.ndim - spatial) + pads,
        lead + dilation,
        padding,
    )


def max_pool(
    x: Array,
    kernel: Sequence[int],
    stride: Sequence[int] = (),
    padding: Sequence[int] = (0,),
    dilation: Sequence[int] = (1,),
    ceil_mode: bool = False,
) -> Array:
    """``aten.max_pool2d``: ``-inf`` padding, dilation and ceil mode as torch."""
    window, strides, pads, dilations, _ = _pool_arguments(x, tuple(kernel), stride, padding, dilation, ceil_mode)
    return lax.reduce_window(x, -jnp.inf, lax.max, window, strides, pads, window_dilation=dilations)


def max_pool_with_indices(*args: Any, **kwargs: Any) -> tuple[Array, None]:
    """``aten.max_pool2d_with_indices``: the pooled values (the indices are not computed)."""
    return max_pool(*args, **kwargs), None


def avg_pool(
    x: Array,
    kernel: Sequence[int],
    stride: Sequence[int] = (),
    padding: Sequence[int] = (0,),
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Array:
    """``aten.avg_pool2d``: torch's divisor (padding counted unless ``count_include_pad=False``;
    the ceil-mode overhang never counted)."""
    kernel = tuple(kernel)
    window, strides, pads, _, padding = _pool_arguments(x, kernel, stride, padding, (1,), ceil_mode)
    total = lax.reduce_window(x, 0.0, lax.add, window, strides, pads)
    if divisor_override:
        return total / divisor_override
    spatial = len(kernel)
    ones = jnp.ones(x.shape[-spatial:], x.dtype)
    if count_include_pad:
        ones = jnp.pad(ones, [(p, p) for p in padding], constant_values=1.0)
        count_pads = [(0, high - low) for low, high in pads[-spatial:]]
    else:
        count_pads = pads[-spatial:]
    count = lax.reduce_window(ones, 0.0, lax.add, kernel, strides[-spatial:], count_pads)
    return total / count


def _adaptive(x: Array, output_size: Sequence[int], reduce: Callable[..., Array]) -> Array:
    spatial = len(output_size)
    for offset, out in enumerate(output_size):
        axis = x.ndim - spatial + offset
        size = x.shape[axis]
        out = size if out is None else out
        if size % out == 0:
            shape = x.shape[:axis] + (out, size // out) + x.shape[axis + 1 :]
            x = reduce(x.reshape(shape), axis=axis + 1)
            continue
        bins = [
            reduce(
                lax.slice_in_dim(x, (i * size) // out, -(-((i + 1) * size) // out), axis=axis), axis=axis, keepdims=True
            )
            for i in range(out)
        ]
        x = jnp.concatenate(bins, axis=axis)
    return x


def adaptive_avg_pool(x: Array, output_size: Sequence[int]) -> Array:
    """``aten._adaptive_avg_pool2d``: torch's bins ``[floor(i n / o), ceil((i + 1) n / o))``."""
    return _adaptive(x, output_size, jnp.mean)


def adaptive_max_pool(x: Array, output_size: Sequence[int]) -> tuple[Array, None]:
    """``aten.adaptive_max_pool2d``: the pooled values (the indices are not computed)."""
    return _adaptive(x, output_size, jnp.max), None


def _reduction(function: Callable[..., Array]) -> Callable[..., Array]:
    def reduce(x: Array, dim=None, keepdim: bool = False, *, dtype=None) -> Array:
        out = function(x, axis=_axes(dim, x.ndim), keepdims=keepdim)
        return out if dtype is None else out.astype(dtype)

    return reduce


def _reduction_with_indices(function: Callable[..., Array], arg: Callable[..., Array]) -> Callable[..., tuple]:
    def reduce(x: Array, dim: int, keepdim: bool = False) -> tuple[Array, Array]:
        axis = _axis(dim, x.ndim)
        return function(x, axis=axis, keepdims=keepdim), arg(x, axis=axis, keepdims=keepdim)

    return reduce


def var(x: Array, dim=None, *, correction: float | None = 1, keepdim: bool = False) -> Array:
    """``aten.var.correction``."""
    return jnp.var(x, axis=_axes(dim, x.ndim), ddof=1 if correction is None else correction, keepdims=keepdim)


def vector_norm(x: Array, ord: float = 2, dim=None, keepdim: bool = False, *, dtype=None) -> Array:
    """``aten.linalg_vector_norm``."""
    axes = _axes(dim, x.ndim)
    if ord == math.inf:
        out = jnp.max(jnp.abs(x), axis=axes, keepdims=keepdim)
    elif ord == 2:
        out = jnp.sqrt(jnp.sum(x * x, axis=axes, keepdims=keepdim))
    else:
        out = jnp.sum(jnp.abs(x) ** ord, axis=axes, keepdims=keepdim) ** (1.0 / ord)
    return out if dtype is None else out.astype(dtype)


def _shape(x: Array, shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(n) for n in shape)


def view(x: Array, shape: Sequence[int]) -> Array:
    """``aten.view`` / ``aten.reshape`` (``-1`` inferred)."""
    return jnp.reshape(x, _shape(x, shape))


def expand(x: Array, size: Sequence[int], *, implicit: bool = False) -> Array:
    """``aten.expand``: ``-1`` keeps a dimension; new dimensions lead."""
    lead = len(size) - x.ndim
    shape = tuple(x.shape[i - lead] if n == -1 else int(n) for i, n in enumerate(size))
    return jnp.broadcast_to(x, shape)


def squeeze(x: Array, dims=None) -> Array:
    """``aten.squeeze``: only dimensions of size 1 among ``dims`` go."""
    axes = _axes(dims, x.ndim)
    return jnp.squeeze(x, axis=tuple(a for a in axes if x.shape[a] == 1))


def unsqueeze(x: Array, dim: int) -> Array:
    """``aten.unsqueeze``."""
    return jnp.expand_dims(x, dim + x.ndim + 1 if dim < 0 else dim)


def slice_tensor(x: Array, dim: int = 0, start: int | None = None, end: int | None = None, step: int = 1) -> Array:
    """``aten.slice.Tensor`` with Python's clipping of ``start`` and ``end``."""
    axis = _axis(dim, x.ndim)
    return x[(slice(None),) * axis + (slice(start, end, step),)]


def slice_scatter(
    x: Array, source: Array, dim: int = 0, start: int | None = None, end: int | None = None, step: int = 1
) -> Array:
    """``aten.slice_scatter``: ``x`` with ``source`` written into the slice."""
    axis = _axis(dim, x.ndim)
    return x.at[(slice(None),) * axis + (slice(start, end, step),)].set(source)


def select_scatter(x: Array, source: Array, dim: int, index: int) -> Array:
    """``aten.select_scatter``."""
    axis = _axis(dim, x.ndim)
    return x.at[(slice(None),) * axis + (index,)].set(source)


def index_put(x: Array, indices: Sequence[Array | None], values: Array, accumulate: bool = False) -> Array:
    """``aten.index_put``: NumPy advanced indexing, set or (``accumulate``) added."""
    where_ = x.at[tuple(slice(None) if i is None else i for i in indices)]
    return where_.add(values) if accumulate else where_.set(values)


def select(x: Array, dim: int, index: int) -> Array:
    """``aten.select.int``."""
    axis = _axis(dim, x.ndim)
    return x[(slice(None),) * axis + (index,)]


def split_with_sizes(x: Array, sizes: Sequence[int], dim: int = 0) -> tuple[Array, ...]:
    """``aten.split_with_sizes``."""
    axis = _axis(dim, x.ndim)
    bounds = np.cumsum([0, *sizes])
    return tuple(lax.slice_in_dim(x, int(a), int(b), axis=axis) for a, b in zip(bounds[:-1], bounds[1:]))


def split(x: Array, size: int, dim: int = 0) -> tuple[Array, ...]:
    """``aten.split.Tensor``: chunks of ``size`` (the last may be smaller)."""
    n = x.shape[_axis(dim, x.ndim)]
    return split_with_sizes(x, [min(size, n - i) for i in range(0, n, size)], dim)


def unbind(x: Array, dim: int = 0) -> tuple[Array, ...]:
    """``aten.unbind.int``."""
    axis = _axis(dim, x.ndim)
    return tuple(select(x, axis, i) for i in range(x.shape[axis]))


def constant_pad_nd(x: Array, pad: Sequence[int], value: float = 0.0) -> Array:
    """``aten.constant_pad_nd``: pairs from the last dimension back; negative pads crop."""
    config = [(0, 0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        config[x.ndim - 1 - i] = (int(pad[2 * i]), int(pad[2 * i + 1]), 0)
    return lax.pad(x, jnp.asarray(value, x.dtype), config)


def as_strided(x: Array, size: Sequence[int], stride: Sequence[int], storage_offset: int | None = None) -> Array:
    """``aten.as_strided`` of a contiguous tensor: a gather from its row-major elements."""
    index = np.full(tuple(size), storage_offset or 0, dtype=np.int64)
    for axis, (n, s) in enumerate(zip(size, stride)):
        shape = [1] * len(size)
        shape[axis] = n
        index = index + np.arange(n).reshape(shape) * s
    return jnp.reshape(x, (-1,))[jnp.asarray(index, jnp.int32)]


def index(x: Array, indices: Sequence[Array | None]) -> Array:
    """``aten.index.Tensor``: NumPy's advanced indexing (None: the whole dimension)."""
    return x[tuple(slice(None) if i is None else i for i in indices)]


def index_select(x: Array, dim: int, index_: Array) -> Array:
    """``aten.index_select``."""
    return jnp.take(x, index_, axis=_axis(dim, x.ndim))


def gather(x: Array, dim: int, index_: Array, *, sparse_grad: bool = False) -> Array:
    """``aten.gather``."""
    return jnp.take_along_axis(x, index_, axis=_axis(dim, x.ndim))


def cat(tensors: Sequence[Array], dim: int = 0) -> Array:
    """``aten.cat``: empty 1-D tensors are skipped, as torch does."""
    tensors = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)]
    return jnp.concatenate(tensors, axis=_axis(dim, tensors[0].ndim))


def stack(tensors: Sequence[Array], dim: int = 0) -> Array:
    """``aten.stack``."""
    return jnp.stack(tensors, axis=_axis(dim, tensors[0].ndim + 1))


def repeat(x: Array, repeats: Sequence[int]) -> Array:
    """``aten.repeat``: new dimensions lead."""
    x = x.reshape((1,) * (len(repeats) - x.ndim) + x.shape)
    return jnp.tile(x, tuple(repeats))


def roll(x: Array, shifts: Sequence[int], dims: Sequence[int] = ()) -> Array:
    """``aten.roll`` (no dims: the flattened tensor)."""
    if not dims:
        return jnp.roll(x.reshape(-1), tuple(shifts)).reshape(x.shape)
    return jnp.roll(x, tuple(shifts), axis=tuple(dims))


def _creation_dtype(fill: Any, dtype: Any) -> Any:
    if dtype is not None:
        return dtype
    if isinstance(fill, bool):
        return jnp.bool_
    return jax.dtypes.canonicalize_dtype(jnp.int64) if isinstance(fill, int) else jnp.float32


def full(size: Sequence[int], fill_value: Any, *, dtype=None, **unused: Any) -> Array:
    """``aten.full``: torch's default dtype (float32 for a float, int64 for an int)."""
    return jnp.full(tuple(size), fill_value, _creation_dtype(fill_value, dtype))


def full_like(x: Array, fill_value: Any, *, dtype=None, **unused: Any) -> Array:
    """``aten.full_like``."""
    return jnp.full(x.shape, fill_value, x.dtype if dtype is None else dtype)


def scalar_tensor(value: Any, *, dtype=None, **unused: Any) -> Array:
    """``aten.scalar_tensor``."""
    return jnp.asarray(value, dtype or jnp.float32)


def arange(start: Any, end: Any = None, step: Any = 1, *, dtype=None, **unused: Any) -> Array:
    """``aten.arange`` (``start``, ``end``, ``step``)."""
    start, end = (0, start) if end is None else (start, end)
    floating = any(isinstance(v, float) for v in (start, end, step))
    return jnp.arange(start, end, step, dtype=dtype or (jnp.float32 if floating else _creation_dtype(1, None)))


def to_copy(x: Array, *, dtype=None, **unused: Any) -> Array:
    """``aten._to_copy``: a cast (device and layout arguments mean nothing here)."""
    return x if dtype is None else x.astype(dtype)


def identity(x: Array, *args: Any, **kwargs: Any) -> Array:
    """Ops that only copy, alias or lay out memory (``clone``, ``alias``, ``contiguous``)."""
    return x


def dropout(x: Array, p: float = 0.5, train: bool | None = False) -> Array:
    """``aten.dropout`` at inference: the identity."""
    if train:
        raise ValueError("aten.dropout in training mode: convert the model in eval mode")
    return x


def native_dropout(x: Array, p: float, train: bool | None) -> tuple[Array, Array]:
    """``aten.native_dropout`` at inference: ``(x, all-true mask)``."""
    return dropout(x, p, train), jnp.ones(x.shape, jnp.bool_)


def gelu(x: Array, *, approximate: str = "none") -> Array:
    """``aten.gelu``: exact (erf) or ``approximate="tanh"``, through ``jax.nn.gelu``."""
    return jax.nn.gelu(x, approximate=approximate == "tanh")


def softmax(x: Array, dim: int, half_to_float: bool = False) -> Array:
    """``aten._softmax``."""
    return jax.nn.softmax(x, axis=dim)


def log_softmax(x: Array, dim: int, half_to_float: bool = False) -> Array:
    """``aten._log_softmax``."""
    return jax.nn.log_softmax(x, axis=dim)


def softmax_int(x: Array, dim: int, dtype=None) -> Array:
    """``aten.softmax.int``."""
    return jax.nn.softmax(x if dtype is None else x.astype(dtype), axis=dim)


def clamp(x: Array, min: Any = None, max: Any = None) -> Array:
    """``aten.clamp``."""
    return jnp.clip(x, min, max)


def hardtanh(x: Array, min_val: float = -1.0, max_val: float = 1.0) -> Array:
    """``aten.hardtanh`` (ReLU6 is ``hardtanh(x, 0, 6)``)."""
    if min_val == 0.0 and max_val == 6.0:
        return jax.nn.relu6(x)
    return jnp.clip(x, min_val, max_val)


def softplus(x: Array, beta: float = 1.0, threshold: float = 20.0) -> Array:
    """``aten.softplus``: linear above ``threshold`` as torch."""
    scaled = x * beta
    return jnp.where(scaled > threshold, x, jax.nn.softplus(scaled) / beta)


def elu(x: Array, alpha: float = 1.0, scale: float = 1.0, input_scale: float = 1.0) -> Array:
    """``aten.elu``."""
    return scale * jnp.where(x > 0, x, alpha * jnp.expm1(x * input_scale))


def _binary(function: Callable[[Any, Any], Array]) -> Callable[..., Array]:
    def apply(a: Any, b: Any, *, alpha: Any = 1) -> Array:
        return function(a, b if alpha == 1 else alpha * b)

    return apply


def div(a: Any, b: Any, *, rounding_mode: str | None = None) -> Array:
    """``aten.div``: true division, or ``"trunc"`` / ``"floor"`` rounding."""
    if rounding_mode is None:
        return jnp.true_divide(a, b)
    if rounding_mode == "floor":
        return jnp.floor_divide(a, b)
    quotient = jnp.true_divide(a, b)
    return jnp.trunc(quotient).astype(jnp.result_type(a, b))


def where(condition: Array, a: Any, b: Any) -> Array:
    """``aten.where.self``."""
    return jnp.where(condition, a, b)


def masked_fill(x: Array, mask: Array, value: Any) -> Array:
    """``aten.masked_fill``."""
    return jnp.where(mask, jnp.asarray(value, x.dtype), x)


def copy(destination: Array, source: Array, non_blocking: bool = False) -> Array:
    """``aten.copy``: ``source`` broadcast and cast to ``destination``."""
    return jnp.broadcast_to(source, destination.shape).astype(destination.dtype)


def sym_size(x: Array, dim: int) -> int:
    """``aten.sym_size.int``: a static size at trace time."""
    return x.shape[dim]


def assertion(*args: Any, **kwargs: Any) -> None:
    """Runtime assertions ``torch.export`` records on symbolic sizes; shapes are static here."""


def permute(x: Array, dims: Sequence[int]) -> Array:
    """``aten.permute``."""
    return jnp.transpose(x, _axes(dims, x.ndim))


def transpose(x: Array, dim0: int, dim1: int) -> Array:
    """``aten.transpose.int``."""
    return jnp.swapaxes(x, dim0, dim1)


def flatten(x: Array, start_dim: int = 0, end_dim: int = -1) -> Array:
    """``aten.flatten.using_ints``."""
    start, end = _axis(start_dim, x.ndim), _axis(end_dim, x.ndim)
    return x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1 :])


def unflatten(x: Array, dim: int, sizes: Sequence[int]) -> Array:
    """``aten.unflatten.int``."""
    axis = _axis(dim, x.ndim)
    return x.reshape(x.shape[:axis] + tuple(sizes) + x.shape[axis + 1 :])


def _alias(*names: str, function: Callable[..., Any]) -> dict[str, Callable[..., Any]]:
    return {name: function for name in names}


def _unary(function: Callable[[Array], Array], *names: str) -> dict[str, Callable[..., Any]]:
    return {name: (lambda x, *_, f=function: f(x)) for name in names}


OPS: dict[str, Callable[..., Any]] = {
    **_alias("aten.convolution.default", function=convolution),
    "aten.conv2d.default": lambda x, w, b=None, stride=(1,), padding=(0,), dilation=(1,), groups=1: convolution(
        x, w, b, stride, padding, dilation, False, (0,), groups
    ),
    "aten.addmm.default": addmm,
    **_alias("aten.mm.default", "aten.bmm.default", "aten.matmul.default", function=jnp.matmul),
    "aten.linear.default": linear,
    "aten._native_batch_norm_legit_no_training.default": batch_norm_no_training,
    "aten.batch_norm.default": batch_norm,
    "aten.native_layer_norm.default": native_layer_norm,
    "aten.layer_norm.default": layer_norm,
    "aten.native_group_norm.default": native_group_norm,
    **_unary(jax.nn.relu, "aten.relu.default", "aten.relu_.default"),
    **_unary(jax.nn.sigmoid, "aten.sigmoid.default"),
    **_unary(jnp.tanh, "aten.tanh.default"),
    **_unary(jax.nn.silu, "aten.silu.default"),
    **_unary(jax.nn.hard_swish, "aten.hardswish.default"),
    **_unary(jax.nn.hard_sigmoid, "aten.hardsigmoid.default"),
    **_unary(jax.nn.mish, "aten.mish.default"),
    **_unary(jnp.exp, "aten.exp.default"),
    **_unary(jnp.log, "aten.log.default"),
    **_unary(jnp.log1p, "aten.log1p.default"),
    **_unary(jnp.expm1, "aten.expm1.default"),
    **_unary(jnp.sqrt, "aten.sqrt.default"),
    **_unary(lax.rsqrt, "aten.rsqrt.default"),
    **_unary(jnp.negative, "aten.neg.default"),
    **_unary(jnp.abs, "aten.abs.default"),
    **_unary(jnp.reciprocal, "aten.reciprocal.default"),
    **_unary(lax.erf, "aten.erf.default"),
    **_unary(jnp.sign, "aten.sign.default"),
    **_unary(jnp.sin, "aten.sin.default"),
    **_unary(jnp.cos, "aten.cos.default"),
    **_unary(jnp.floor, "aten.floor.default"),
    **_unary(jnp.ceil, "aten.ceil.default"),
    **_unary(jnp.round, "aten.round.default"),
    **_unary(jnp.trunc, "aten.trunc.default"),
    **_unary(jnp.logical_not, "aten.logical_not.default"),
    **_unary(jnp.bitwise_not, "aten.bitwise_not.default"),
    **_unary(jnp.isnan, "aten.isnan.default"),
    "aten.gelu.default": gelu,
    "aten.leaky_relu.default": lambda x, negative_slope=0.01: jax.nn.leaky_relu(x, negative_slope),
    "aten.elu.default": elu,
    "aten.softplus.default": softplus,
    "aten.hardtanh.default": hardtanh,
    "aten._softmax.default": softmax,
    "aten.softmax.int": softmax_int,
    "aten._log_softmax.default": log_softmax,
    **_alias("aten.clamp.default", "aten.clamp.Tensor", function=clamp),
    "aten.clamp_min.default": lambda x, m: jnp.maximum(x, m),
    "aten.clamp_max.default": lambda x, m: jnp.minimum(x, m),
    **_alias("aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor", "aten.pow.Scalar", function=jnp.power),
    **_alias("aten.add.Tensor", "aten.add.Scalar", function=_binary(jnp.add)),
    **_alias("aten.sub.Tensor", "aten.sub.Scalar", function=_binary(jnp.subtract)),
    "aten.rsub.Scalar": lambda a, b, alpha=1: jnp.subtract(b, a if alpha == 1 else alpha * a),
    **_alias("aten.mul.Tensor", "aten.mul.Scalar", function=jnp.multiply),
    **_alias("aten.div.Tensor", "aten.div.Scalar", "aten.div.Tensor_mode", "aten.div.Scalar_mode", function=div),
    **_alias("aten.remainder.Tensor", "aten.remainder.Scalar", function=jnp.remainder),
    **_alias("aten.fmod.Tensor", "aten.fmod.Scalar", function=jnp.fmod),
    "aten.floor_divide.default": jnp.floor_divide,
    "aten.maximum.default": jnp.maximum,
    "aten.minimum.default": jnp.minimum,
    **_alias("aten.eq.Tensor", "aten.eq.Scalar", function=jnp.equal),
    **_alias("aten.ne.Tensor", "aten.ne.Scalar", function=jnp.not_equal),
    **_alias("aten.lt.Tensor", "aten.lt.Scalar", function=jnp.less),
    **_alias("aten.le.Tensor", "aten.le.Scalar", function=jnp.less_equal),
    **_alias("aten.gt.Tensor", "aten.gt.Scalar", function=jnp.greater),
    **_alias("aten.ge.Tensor", "aten.ge.Scalar", function=jnp.greater_equal),
    "aten.logical_and.default": jnp.logical_and,
    "aten.logical_or.default": jnp.logical_or,
    "aten.bitwise_and.Tensor": jnp.bitwise_and,
    "aten.bitwise_or.Tensor": jnp.bitwise_or,
    "aten.where.self": where,
    **_alias("aten.masked_fill.Scalar", "aten.masked_fill.Tensor", function=masked_fill),
    **_alias("aten.mean.dim", "aten.mean.default", function=_reduction(jnp.mean)),
    **_alias("aten.sum.dim_IntList", "aten.sum.default", function=_reduction(jnp.sum)),
    **_alias("aten.amax.default", "aten.max.default", function=_reduction(jnp.max)),
    **_alias("aten.amin.default", "aten.min.default", function=_reduction(jnp.min)),
    **_alias("aten.any.dim", "aten.any.dims", "aten.any.default", function=_reduction(jnp.any)),
    **_alias("aten.all.dim", "aten.all.dims", "aten.all.default", function=_reduction(jnp.all)),
    "aten.prod.dim_int": _reduction(jnp.prod),
    "aten.max.dim": _reduction_with_indices(jnp.max, jnp.argmax),
    "aten.min.dim": _reduction_with_indices(jnp.min, jnp.argmin),
    "aten.var.correction": var,
    "aten.linalg_vector_norm.default": vector_norm,
    "aten.cumsum.default": lambda x, dim, dtype=None: jnp.cumsum(x, axis=dim, dtype=dtype),
    **_alias("aten.avg_pool1d.default", "aten.avg_pool2d.default", "aten.avg_pool3d.default", function=avg_pool),
    **_alias("aten.max_pool1d.default", "aten.max_pool2d.default", "aten.max_pool3d.default", function=max_pool),
    **_alias(
        "aten.max_pool2d_with_indices.default", "aten.max_pool3d_with_indices.default", function=max_pool_with_indices
    ),
    **_alias(
        "aten._adaptive_avg_pool2d.default",
        "aten.adaptive_avg_pool2d.default",
        "aten.adaptive_avg_pool1d.default",
        "aten._adaptive_avg_pool3d.default",
        function=adaptive_avg_pool,
    ),
    **_alias("aten.adaptive_max_pool2d.default", "aten.adaptive_max_pool1d.default", function=adaptive_max_pool),
    "aten.cat.default": cat,
    "aten.stack.default": stack,
    **_alias("aten.view.default", "aten._unsafe_view.default", "aten.reshape.default", function=view),
    "aten.permute.default": permute,
    "aten.transpose.int": transpose,
    "aten.t.default": lambda x: x.T,
    "aten.expand.default": expand,
    "aten.expand_as.default": lambda x, other: jnp.broadcast_to(x, other.shape),
    **_alias("aten.squeeze.dims", "aten.squeeze.dim", "aten.squeeze.default", function=squeeze),
    "aten.unsqueeze.default": unsqueeze,
    "aten.slice.Tensor": slice_tensor,
    "aten.select.int": select,
    "aten.slice_scatter.default": slice_scatter,
    "aten.select_scatter.default": select_scatter,
    "aten.index_put.default": index_put,
    "aten.split_with_sizes.default": split_with_sizes,
    "aten.split.Tensor": split,
    "aten.unbind.int": unbind,
    "aten.flatten.using_ints": flatten,
    "aten.unflatten.int": unflatten,
    "aten.constant_pad_nd.default": constant_pad_nd,
    "aten.as_strided.default": as_strided,
    "aten.index.Tensor": index,
    "aten.index_select.default": index_select,
    "aten.gather.default": gather,
    "aten.repeat.default": repeat,
    "aten.roll.default": roll,
    "aten.full.default": full,
    "aten.full_like.default": full_like,
    "aten.zeros_like.default": lambda x, **kw: full_like(x, 0, **kw),
    "aten.ones_like.default": lambda x, **kw: full_like(x, 1, **kw),
    "aten.zeros.default": lambda size, **kw: full(size, 0.0, **kw),
    "aten.ones.default": lambda size, **kw: full(size, 1.0, **kw),
    "aten.scalar_tensor.default": scalar_tensor,
    **_alias("aten.arange.start_step", "aten.arange.start", "aten.arange.default", function=arange),
    "aten._to_copy.default": to_copy,
    "aten.copy.default": copy,
    **_alias(
        "aten.clone.default",
        "aten.alias.default",
        "aten.contiguous.default",
        "aten.detach.default",
        "aten.lift_fresh_copy.default",
        function=identity,
    ),
    "aten.dropout.default": dropout,
    "aten.native_dropout.default": native_dropout,
    "aten.sym_size.int": sym_size,
    **_alias(
        "aten._assert_tensor_metadata.default",
        "aten._assert_scalar.default",
        "aten.sym_constrain_range_for_size.default",
        "aten._assert_async.msg",
        function=assertion,
    ),
    "operator.getitem": operator.getitem,
    "operator.add": operator.add,
    "operator.sub": operator.sub,
    "operator.mul": operator.mul,
    "operator.floordiv": operator.floordiv,
    "operator.truediv": operator.truediv,
    "operator.mod": operator.mod,
    "operator.neg": operator.neg,
    "operator.eq": operator.eq,
    "operator.ge": operator.ge,
    "operator.le": operator.le,
    "operator.gt": operator.gt,
    "operator.lt": operator.lt,
}
"""ATen op name -> JAX function of the same arguments."""

__all__ = ["OPS", "jax_dtype"]
