"""Incremental forward passes for local perturbations: recompute only what an occlusion window changes.

An occlusion window changes a small box of the input. Through a convolution, pooling or
element-wise layer the change stays inside a box that grows by the kernel's reach and shrinks
with the stride, so each such layer need only recompute that box, reading the unperturbed
("clean") activations of the one full forward pass around it. This is the exact incremental
inference of Krypton (Nakandala, Kumar and Papakonstantinou, SIGMOD 2019, "Incremental and
approximate inference for faster occlusion-based deep CNN explanations"); the result equals
the full forward pass up to float rounding.

How it runs: one clean forward pass records every module call's inputs. Each window's pass
then carries a :class:`Patch` (the box's values) through the same modules, intercepted with
``flax.linen.intercept_methods``: convolutions and max pooling compute their output box from
the input box merged into the clean input around it (``VALID`` on that slice), batch norms and
ReLUs map the box, residual sums re-box their operands to the union of their boxes.
Box sizes are static: every window's changed rows and columns are worked out in numpy from
the window positions (:class:`Span`), and a window's box start is a table lookup. Where a box
would cover most of a map, or a layer is not one of the above (pooling to a vector, flatten,
linear layers), the patch is pasted into the clean activation and the rest of the network runs
as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxplain.model import Model
from jaxplain.nets import layers, resnet, vgg
from jaxplain.typing import Array

ELEMENTWISE = (layers.BatchNorm2d, layers.ReLU)
CONTAINERS = (resnet.ResNet, resnet.Stage, resnet.BasicBlock, resnet.Bottleneck, resnet.Downsample, vgg.VGG,
              vgg.VGGFeatures)
"""Zoo modules whose ``__call__`` only chains module calls, so patches may flow through them."""
MAX_BOX_SHARE = 0.5
"""A box covering more than this share of its map is pasted back: recomputing it saves too little."""


@dataclass(frozen=True, eq=False)
class Span:
    """Along one spatial axis, for every window: the changed indices ``lo..hi`` and a box of static ``size``.

    ``extent`` is the axis length; a window whose change vanished (``lo > hi``) keeps a box of clean values.
    Spans compare and hash by value, so they can be static arguments of a compiled function.
    """

    lo: np.ndarray
    hi: np.ndarray
    size: int
    extent: int

    def __hash__(self) -> int:
        return hash((self.lo.tobytes(), self.hi.tobytes(), self.size, self.extent))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Span) and (self.size, self.extent) == (other.size, other.extent)
                and np.array_equal(self.lo, other.lo) and np.array_equal(self.hi, other.hi))

    @staticmethod
    def of(lo: np.ndarray, hi: np.ndarray, extent: int) -> "Span":
        lo, hi = np.maximum(lo, 0), np.minimum(hi, extent - 1)
        size = int(min(extent, max(1, int(np.max(hi - lo + 1)))))
        return Span(lo, hi, size, extent)

    @property
    def starts(self) -> np.ndarray:
        return np.clip(self.lo, 0, self.extent - self.size).astype(np.int32)

    def through_window(self, kernel: int, stride: int, pad_low: int, out_extent: int) -> "Span":
        """The span of a sliding-window layer's output (``kernel`` already dilated)."""
        lo = -((-(self.lo + pad_low - kernel + 1)) // stride)
        hi = (self.hi + pad_low) // stride
        return Span.of(lo, hi, out_extent)

    @staticmethod
    def union(spans: list["Span"]) -> "Span":
        return Span.of(np.min([s.lo for s in spans], axis=0), np.max([s.hi for s in spans], axis=0), spans[0].extent)


@dataclass(frozen=True)
class Patch:
    """A perturbed activation: ``values`` ``[N, rows.size, cols.size, C]`` at the box of window
    ``(row_index, col_index)``; everything outside the box equals the clean activation."""

    values: Array
    row_index: Array
    col_index: Array
    rows: Span
    cols: Span

    @property
    def start(self) -> tuple[Array, Array]:
        return self.box_start(self.rows, self.cols)

    def box_start(self, rows: Span, cols: Span) -> tuple[Array, Array]:
        """Where this window's box of ``rows`` and ``cols`` starts."""
        return jnp.asarray(rows.starts)[self.row_index], jnp.asarray(cols.starts)[self.col_index]

    def with_box(self, values: Array, rows: Span, cols: Span) -> "Patch":
        return Patch(values, self.row_index, self.col_index, rows, cols)


def paste(patch: Patch, clean: Array) -> Array:
    """The full perturbed activation: the clean one with the patch's box written in."""
    top, left = patch.start
    return lax.dynamic_update_slice(clean, patch.values.astype(clean.dtype), (0, top, left, 0))


def region(patch: Patch, clean: Array, top: Array, left: Array, height: int, width: int,
           pads: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0)), pad_value: float = 0.0) -> Array:
    """Rows ``top..top+height`` and columns ``left..left+width`` of the perturbed activation padded by ``pads``
    (coordinates in the padded map): the patch where its box lies, the clean values elsewhere."""
    padded = jnp.pad(clean, ((0, 0), *pads, (0, 0)), constant_values=pad_value)
    slab = lax.dynamic_slice(padded, (0, top, left, 0), (clean.shape[0], height, width, clean.shape[-1]))
    box_top, box_left = patch.start
    rows = top - pads[0][0] + jnp.arange(height) - box_top
    cols = left - pads[1][0] + jnp.arange(width) - box_left
    inside = ((rows >= 0) & (rows < patch.rows.size))[:, None] & ((cols >= 0) & (cols < patch.cols.size))[None, :]
    taken = jnp.take(jnp.take(patch.values, jnp.clip(rows, 0, patch.rows.size - 1), axis=1),
                     jnp.clip(cols, 0, patch.cols.size - 1), axis=2)
    return jnp.where(inside[None, :, :, None], taken.astype(slab.dtype), slab)


def _sliding(patch: Patch, clean: Array, kernel: tuple[int, int], stride: tuple[int, int],
             pads: tuple[tuple[int, int], tuple[int, int]], out_shape: tuple[int, int], pad_value: float,
             window_op: Callable[[Array], Array]) -> Patch | None:
    """A sliding-window layer on the patch: ``window_op`` runs ``VALID`` on the merged input slice."""
    rows = patch.rows.through_window(kernel[0], stride[0], pads[0][0], out_shape[0])
    cols = patch.cols.through_window(kernel[1], stride[1], pads[1][0], out_shape[1])
    if rows.size * cols.size > MAX_BOX_SHARE * out_shape[0] * out_shape[1]:
        return None
    top, left = patch.box_start(rows, cols)
    height, width = (rows.size - 1) * stride[0] + kernel[0], (cols.size - 1) * stride[1] + kernel[1]
    merged = region(patch, clean, top * stride[0], left * stride[1], height, width, pads, pad_value)
    return patch.with_box(window_op(merged), rows, cols)


def _conv(module: layers.Conv2d, patch: Patch, clean: Array) -> Patch | None:
    (kh, kw), (sh, sw) = layers._pair(module.kernel_size), layers._pair(module.stride)
    (ph, pw), (dh, dw) = layers._pair(module.padding), layers._pair(module.dilation)
    kernel = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    out_shape = ((clean.shape[1] + 2 * ph - kernel[0]) // sh + 1, (clean.shape[2] + 2 * pw - kernel[1]) // sw + 1)
    unpadded, params = module.clone(parent=None, padding=0), module.variables["params"]
    convolve = lambda merged: unpadded.forward(params, merged)
    return _sliding(patch, clean, kernel, (sh, sw), ((ph, ph), (pw, pw)), out_shape, 0.0, convolve)


def _max_pool(module: layers.MaxPool2d, patch: Patch, clean: Array) -> Patch | None:
    stride = module.kernel_size if module.stride is None else module.stride
    window, strides, pads = layers._window_shapes(clean, module.kernel_size, stride, module.padding,
                                                  module.ceil_mode)
    out_shape = tuple((clean.shape[1 + axis] + sum(pads[axis]) - window[axis]) // strides[axis] + 1
                      for axis in range(2))
    pool = lambda merged: layers.max_pool(merged, window, strides, ((0, 0), (0, 0)))
    return _sliding(patch, clean, window, strides, pads, out_shape, -jnp.inf, pool)


def _add(call: Callable, patches: list[Patch], cleans: list[Array]) -> Patch | None:
    """A residual sum of patches: every operand re-boxed to the union of their boxes."""
    rows, cols = Span.union([p.rows for p in patches]), Span.union([p.cols for p in patches])
    if rows.size * cols.size > MAX_BOX_SHARE * rows.extent * cols.extent:
        return None
    top, left = patches[0].box_start(rows, cols)
    values = [region(p, c, top, left, rows.size, cols.size) for p, c in zip(patches, cleans)]
    return patches[0].with_box(call(*values), rows, cols)


def _on_patches(module: nn.Module, call: Callable, patches: list[Patch], cleans: list[Array]) -> Patch | None:
    """The layer's output patch, or None where it must run on the pasted full activation."""
    if isinstance(module, ELEMENTWISE):
        return patches[0].with_box(call(patches[0].values), patches[0].rows, patches[0].cols)
    if isinstance(module, layers.Conv2d):
        return _conv(module, patches[0], cleans[0])
    if isinstance(module, layers.MaxPool2d):
        return _max_pool(module, patches[0], cleans[0])
    if isinstance(module, layers.Add):
        return _add(call, patches, cleans)
    return None


class _Incremental:
    """The interceptor of one window's pass: patches through the supported layers and the zoo blocks
    that chain them, pasted into the clean activation everywhere else."""

    def __init__(self, cleans: list[tuple[Any, ...]]):
        self.cleans = cleans
        self.calls = 0

    def __call__(self, next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        cleans = self.cleans[self.calls]
        self.calls += 1
        patched = [isinstance(a, Patch) for a in args]
        if not any(patched) or isinstance(context.module, CONTAINERS):
            return next_fun(*args, **kwargs)
        call = lambda *values: next_fun(*values, **kwargs)
        result = _on_patches(context.module, call, list(args), list(cleans)) if all(patched) else None
        if result is None:
            return call(*[paste(a, c) if p else a for a, c, p in zip(args, cleans, patched)])
        return result


def record_clean(model: Model, inputs: Array) -> tuple[Array, list[tuple[Any, ...]]]:
    """The model's output and the inputs of every module call, in call order, of one clean pass."""
    cleans: list[tuple[Any, ...]] = []

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name == "__call__":
            cleans.append(args)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        output = model.module.apply(model.variables, inputs)
    return output, cleans


def window_spans(starts: np.ndarray, window: int, extent: int) -> Span:
    """The input span of windows of ``window`` elements at ``starts`` (cropped at the end, as Captum)."""
    return Span.of(starts, np.minimum(starts + window, extent) - 1, extent)


def group_spans(mask: np.ndarray, count: int) -> tuple[Span, Span]:
    """The rows and columns each of ``count`` groups of an ``[N, H, W, C]`` id mask spans (over examples and channels)."""
    rows = np.broadcast_to(np.arange(mask.shape[1])[None, :, None, None], mask.shape).ravel()
    cols = np.broadcast_to(np.arange(mask.shape[2])[None, None, :, None], mask.shape).ravel()
    ids = mask.ravel()
    spans = []
    for positions, extent in ((rows, mask.shape[1]), (cols, mask.shape[2])):
        lo, hi = np.full(count, extent), np.full(count, -1)
        np.minimum.at(lo, ids, positions)
        np.maximum.at(hi, ids, positions)
        spans.append(Span.of(lo, hi, extent))
    return spans[0], spans[1]


def patched_forward(model: Model, cleans: list[tuple[Any, ...]], patch: Patch) -> Array:
    """The model's output for the input whose only change is ``patch`` (see the module docstring)."""
    with nn.intercept_methods(_Incremental(cleans)):
        output = model.module.apply(model.variables, patch)
    if isinstance(output, Patch):
        raise ValueError("incremental evaluation needs a model whose output is not a spatial map")
    return output


def supports(model: Any) -> bool:
    """Whether ``model``'s architecture is one whose blocks only chain module calls (ResNet, VGG)."""
    return isinstance(model, Model) and isinstance(model.module, CONTAINERS)
