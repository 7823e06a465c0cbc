"""Incremental forward passes for local perturbations: recompute only what an occlusion window changes.

An occlusion window changes a small box of the input. Through a convolution, pooling or
element-wise operation the change stays inside a box that grows by the kernel's reach and
shrinks with the stride, so each such operation need only recompute that box, reading the
unperturbed ("clean") activations of the one full forward pass around it. This is the exact
incremental inference of Krypton (Nakandala, Kumar and Papakonstantinou, SIGMOD 2019,
"Incremental and approximate inference for faster occlusion-based deep CNN explanations");
the result equals the full forward pass up to float rounding.

How it runs, on the program JAX traces (:mod:`jaxplain.program.graph`), for any model form:
one clean evaluation of the graph keeps every value. Each window's pass then walks the same
nodes carrying a :class:`Patch` (the box's values, and which two axes are the spatial ones):

- a node none of whose operands changed keeps its clean value (nothing is recomputed);
- convolutions and window reductions (``reduce_window`` max and sum, and a ``custom_vjp``
  max pool) compute their output box from the input box merged into the clean input around
  it, ``VALID`` on that slice;
- element-wise operations (a ReLU, a batch norm's scale and shift, a residual sum, a gate)
  and concatenations along channels map the box, re-boxing their operands to the union of
  their boxes; an operand that did not change is sliced to the box;
- transposes carry the box to the permuted axes (a converted torch model's NCHW layers);
- anything else (pooling to a vector, reshapes, dense layers), and any box that would cover
  more than half its map, pastes the box into the clean value and runs as traced.

Box sizes are static: every window's changed rows and columns are worked out in numpy from
the window positions (:class:`Span`), and a window's box start is a table lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

from jaxplain import program
from jaxplain.cpu import small_conv
from jaxplain.program.graph import (
    ELEMENTWISE_BINARY,
    ELEMENTWISE_UNARY,
    INLINED,
    Graph,
    Node,
    body_primitives,
    pool_attributes,
)
from jaxplain.program.interpret import bind
from jaxplain.typing import Array

MAX_BOX_SHARE = 0.5
"""A box covering more than this share of its map is pasted back: recomputing it saves too little."""
ELEMENTWISE = ELEMENTWISE_UNARY | ELEMENTWISE_BINARY


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
        """The span of a sliding-window operation's output (``kernel`` already dilated)."""
        lo = -((-(self.lo + pad_low - kernel + 1)) // stride)
        hi = (self.hi + pad_low) // stride
        return Span.of(lo, hi, out_extent)

    @staticmethod
    def union(spans: Sequence["Span"]) -> "Span":
        return Span.of(np.min([s.lo for s in spans], axis=0), np.max([s.hi for s in spans], axis=0), spans[0].extent)


@dataclass(frozen=True)
class Patch:
    """A perturbed activation: ``values`` holds the box of window ``(row_index, col_index)`` along ``axes``
    (the activation's two spatial axes, rows then columns) and every other axis whole; everything outside
    the box equals the clean activation."""

    values: Array
    row_index: Array
    col_index: Array
    rows: Span
    cols: Span
    axes: tuple[int, int] = (1, 2)

    @property
    def spans(self) -> tuple[Span, Span]:
        return self.rows, self.cols

    def box_start(self, rows: Span, cols: Span) -> tuple[Array, Array]:
        """Where this window's box of ``rows`` and ``cols`` starts."""
        return jnp.asarray(rows.starts)[self.row_index], jnp.asarray(cols.starts)[self.col_index]

    def with_box(self, values: Array, rows: Span, cols: Span, axes: tuple[int, int] | None = None) -> "Patch":
        return Patch(values, self.row_index, self.col_index, rows, cols, self.axes if axes is None else axes)


def _start_indices(ndim: int, axes: tuple[int, int], starts: tuple[Any, Any]) -> list[Any]:
    indices: list[Any] = [0] * ndim
    indices[axes[0]], indices[axes[1]] = starts
    return indices


def box_slice(array: Array, axes: tuple[int, int], starts: tuple[Any, Any], sizes: tuple[int, int]) -> Array:
    """The box of ``sizes`` at ``starts`` along ``axes`` of ``array``, every other axis whole.

    Args:
        array: any array.
        axes: the two axes the box spans.
        starts: the box's first index along each (traced ints allowed).
        sizes: its static size along each.

    Returns:
        The slice.
    """
    shape = list(array.shape)
    shape[axes[0]], shape[axes[1]] = sizes
    return lax.dynamic_slice(array, _start_indices(array.ndim, axes, starts), shape)


def paste(patch: Patch, clean: Array) -> Array:
    """The full perturbed activation: the clean one with the patch's box written in."""
    start = patch.box_start(patch.rows, patch.cols)
    return lax.dynamic_update_slice(clean, patch.values.astype(clean.dtype), _start_indices(clean.ndim, patch.axes,
                                                                                             start))


def region(patch: Patch, clean: Array, starts: tuple[Any, Any], sizes: tuple[int, int],
           pads: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0)), pad_value: float = 0.0) -> Array:
    """The perturbed activation padded by ``pads`` on the patch's axes, cut to ``sizes`` at ``starts``
    (coordinates in the padded map): the patch where its box lies, the clean values elsewhere."""
    axes = patch.axes
    widths = [(0, 0)] * clean.ndim
    widths[axes[0]], widths[axes[1]] = pads
    padded = jnp.pad(clean, widths, constant_values=pad_value)
    slab = box_slice(padded, axes, starts, sizes)
    box = patch.box_start(patch.rows, patch.cols)
    offsets = [starts[i] - pads[i][0] + jnp.arange(sizes[i]) - box[i] for i in range(2)]
    inside = [(o >= 0) & (o < span.size) for o, span in zip(offsets, patch.spans)]
    taken = patch.values
    for axis, o, span in zip(axes, offsets, patch.spans):
        taken = jnp.take(taken, jnp.clip(o, 0, span.size - 1), axis=axis)
    along = [[1] * clean.ndim for _ in axes]
    along[0][axes[0]], along[1][axes[1]] = sizes
    mask = inside[0].reshape(along[0]) & inside[1].reshape(along[1])
    return jnp.where(mask, taken.astype(slab.dtype), slab)


@dataclass(frozen=True)
class Clean:
    """One clean evaluation of a model's program: the graph and every value it computed."""

    graph: Graph
    env: dict[int, Any]


def record_clean(model: Any, inputs: Array) -> tuple[Array, Clean]:
    """The model's output and every value of one clean evaluation of its program.

    Args:
        model: a structured model (:func:`jaxplain.program.structured`).
        inputs: the batch.

    Returns:
        ``(output, clean)``.
    """
    graph = program.graph_of(model, inputs)
    env: dict[int, Any] = dict(graph.consts)
    env.update(zip(graph.param_ids, jax.tree_util.tree_leaves(program.params_of(model))))
    env.update(zip(graph.input_ids, jax.tree_util.tree_leaves(inputs)))
    for node in graph.nodes:
        env.update(zip(node.outs, bind(node, [_value(env, a) for a in node.ins])))
    return _outputs(graph, env), Clean(graph, env)


def _value(env: dict[int, Any], atom: Any) -> Any:
    return atom.val if isinstance(atom, jcore.Literal) else env[atom]


def _outputs(graph: Graph, env: dict[int, Any]) -> Any:
    return jax.tree_util.tree_unflatten(graph.out_tree, [_value(env, a) for a in graph.output_ids])


def _too_big(rows: Span, cols: Span) -> bool:
    return rows.size * cols.size > MAX_BOX_SHARE * rows.extent * cols.extent


def _union_box(patches: list[Patch]) -> tuple[Span, Span] | None:
    if len({p.axes for p in patches}) != 1 or len({(p.rows.extent, p.cols.extent) for p in patches}) != 1:
        return None
    if len(patches) == 1:
        return patches[0].spans
    rows, cols = Span.union([p.rows for p in patches]), Span.union([p.cols for p in patches])
    return None if _too_big(rows, cols) else (rows, cols)


def _boxed_operands(node: Node, changed: dict[int, Any], env: dict[int, Any], shape: tuple[int, ...],
                    skip_axis: int | None = None) -> tuple[list[Any], Patch, Span, Span] | None:
    """The node's operands cut to one common box (None if some operand cannot be), with a patch and the box."""
    patches = [changed[a] for a in node.ins if isinstance(a, int) and isinstance(changed.get(a), Patch)]
    box = _union_box(patches) if patches else None
    if box is None:
        return None
    rows, cols = box
    first = patches[0]
    starts = first.box_start(rows, cols)
    operands = []
    for atom in node.ins:
        current = changed.get(atom) if isinstance(atom, int) else None
        value = _value(env, atom)
        if isinstance(current, Patch):
            operands.append(current.values if current.spans == box else region(current, value, starts,
                                                                                 (rows.size, cols.size)))
            continue
        if current is not None:
            return None
        full = tuple(np.shape(value))
        if full == ():
            operands.append(value)
            continue
        if len(full) != len(shape) or not all(f in (s, 1) or i == skip_axis for i, (f, s) in enumerate(zip(full,
                                                                                                          shape))):
            return None
        cut = [full[a] == shape[a] and shape[a] > 1 for a in first.axes]
        if all(cut):
            value = box_slice(value, first.axes, starts, (rows.size, cols.size))
        elif any(cut):
            return None
        operands.append(value)
    return operands, first, rows, cols


def _elementwise(node: Node, changed: dict[int, Any], env: dict[int, Any]) -> list[Any] | None:
    shape = tuple(node.eqn.outvars[0].aval.shape)
    boxed = _boxed_operands(node, changed, env, shape)
    if boxed is None:
        return None
    operands, first, rows, cols = boxed
    return [first.with_box(out, rows, cols) for out in bind(node, operands)]


def _primitives(body: Any) -> list[str]:
    return [p for p in body_primitives(getattr(body, "jaxpr", body)) if not p.startswith("fn:")]


def _run_body(jaxpr: Any, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
    """An element-wise jaxpr on arguments of another shape: each equation bound anew, nested calls inlined."""
    local = dict(zip(jaxpr.constvars, consts)) | dict(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        values = [a.val if isinstance(a, jcore.Literal) else local[a] for a in eqn.invars]
        inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
        if eqn.primitive.name in INLINED and inner is not None:
            out = _run_body(getattr(inner, "jaxpr", inner), getattr(inner, "consts", ()), values)
        else:
            with eqn.ctx.manager:
                out = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
            out = out if eqn.primitive.multiple_results else [out]
        local.update(zip(eqn.outvars, out))
    return [a.val if isinstance(a, jcore.Literal) else local[a] for a in jaxpr.outvars]


def _custom_elementwise(node: Node, changed: dict[int, Any], env: dict[int, Any]) -> list[Any] | None:
    """A ``custom_jvp``/``custom_vjp`` call whose body is element-wise (``jax.nn.relu``): its body on the box."""
    body = node.eqn.params.get("call_jaxpr", node.eqn.params.get("fun_jaxpr"))
    if body is None or not all(p in ELEMENTWISE for p in _primitives(body)):
        return None
    shape = tuple(node.eqn.outvars[0].aval.shape)
    if any(tuple(v.aval.shape) != shape for v in node.eqn.outvars):
        return None
    boxed = _boxed_operands(node, changed, env, shape)
    if boxed is None:
        return None
    operands, first, rows, cols = boxed
    outs = _run_body(getattr(body, "jaxpr", body), getattr(body, "consts", ()), operands)
    return [first.with_box(out, rows, cols) for out in outs]


def _sliding(patch: Patch, clean: Array, kernels: Sequence[int], strides: Sequence[int],
             pads: Sequence[tuple[int, int]], out_axes: tuple[int, int], out_shape: Sequence[int], pad_value: float,
             window_op) -> Patch | None:
    """A sliding-window operation on the patch: ``window_op`` runs ``VALID`` on the merged input slice."""
    spans = [span.through_window(k, s, p[0], o) for span, k, s, p, o in zip(patch.spans, kernels, strides, pads,
                                                                             out_shape)]
    if _too_big(*spans):
        return None
    top, left = patch.box_start(*spans)
    sizes = tuple((span.size - 1) * s + k for span, s, k in zip(spans, strides, kernels))
    merged = region(patch, clean, (top * strides[0], left * strides[1]), sizes, tuple(pads), pad_value)
    return patch.with_box(window_op(merged), spans[0], spans[1], out_axes)


def _custom_pool(node: Node) -> dict[str, Any] | None:
    """A ``custom_vjp`` call whose body is one ``reduce_window`` max (the zoo's max pool): its window."""
    body = node.eqn.params.get("call_jaxpr", node.eqn.params.get("fun_jaxpr"))
    if body is None or _primitives(body) != ["reduce_window_max"]:
        return None
    return pool_attributes(node) or None


def _convolution(node: Node, changed: dict[int, Any], env: dict[int, Any]) -> list[Any] | None:
    lhs, rhs = node.ins
    patch = changed.get(lhs) if isinstance(lhs, int) else None
    if not isinstance(patch, Patch) or (isinstance(rhs, int) and rhs in changed):
        return None
    params = dict(node.eqn.params)
    numbers = params["dimension_numbers"]
    spatial = tuple(numbers.lhs_spec[2:])
    if (len(spatial) != 2 or spatial != patch.axes or any(d != 1 for d in params["lhs_dilation"])
            or params.get("batch_group_count", 1) != 1):
        return None
    kernel_shape = np.shape(_value(env, rhs))
    kernels = [(kernel_shape[numbers.rhs_spec[2 + i]] - 1) * params["rhs_dilation"][i] + 1 for i in range(2)]
    out_shape = node.eqn.outvars[0].aval.shape
    out_axes = tuple(numbers.out_spec[2:])
    params["padding"] = ((0, 0), (0, 0))
    kernel = _value(env, rhs)

    def convolve(merged):
        routed = small_conv.by_patches([merged, kernel], params)
        return node.eqn.primitive.bind(merged, kernel, **params) if routed is None else routed

    out = _sliding(patch, _value(env, lhs), kernels, params["window_strides"], node.eqn.params["padding"],
                   out_axes, [out_shape[a] for a in out_axes], 0.0, convolve)
    return None if out is None else [out]


def _window_reduction(node: Node, changed: dict[int, Any], env: dict[int, Any]) -> list[Any] | None:
    """``reduce_window`` max or sum over the patch's axes only (and a ``custom_vjp`` max pool)."""
    if node.primitive in ("reduce_window_max", "reduce_window_sum"):
        params = node.eqn.params
        window, strides, pads = params["window_dimensions"], params["window_strides"], params["padding"]
        if any(d != 1 for d in tuple(params["base_dilation"]) + tuple(params["window_dilation"])):
            return None
        maximum = node.primitive == "reduce_window_max"
    else:
        attributes = _custom_pool(node)
        if attributes is None:
            return None
        window, strides, pads, maximum = attributes["window"], attributes["strides"], attributes["padding"], True
    live = [a for a in node.ins if isinstance(a, int) and a in changed]
    patch = changed[live[0]] if len(live) == 1 else None
    if not isinstance(patch, Patch) or len(window) != patch.values.ndim:
        return None
    if any((window[a], strides[a], tuple(pads[a])) != (1, 1, (0, 0)) for a in range(len(window)) if a not in
           patch.axes):
        return None
    axes = patch.axes
    init, combine = (-jnp.inf, lax.max) if maximum else (0.0, lax.add)
    dtype = node.eqn.outvars[0].aval.dtype

    def reduce(merged):
        return lax.reduce_window(merged, jnp.array(init, dtype), combine, tuple(window), tuple(strides), "VALID")

    out_shape = node.eqn.outvars[0].aval.shape
    out = _sliding(patch, _value(env, live[0]), [window[a] for a in axes], [strides[a] for a in axes],
                   [tuple(pads[a]) for a in axes], axes, [out_shape[a] for a in axes], init, reduce)
    return None if out is None else [out]


def _concatenate(node: Node, changed: dict[int, Any], env: dict[int, Any]) -> list[Any] | None:
    dimension = node.eqn.params["dimension"]
    patches = [changed[a] for a in node.ins if isinstance(a, int) and isinstance(changed.get(a), Patch)]
    if not patches or dimension in patches[0].axes:
        return None
    shape = tuple(node.eqn.outvars[0].aval.shape)
    boxed = _boxed_operands(node, changed, env, shape, skip_axis=dimension)
    if boxed is None:
        return None
    operands, first, rows, cols = boxed
    return [first.with_box(out, rows, cols) for out in bind(node, operands)]


def _transpose(node: Node, changed: dict[int, Any], env: dict[int, Any]) -> list[Any] | None:
    patch = changed[node.ins[0]]
    if not isinstance(patch, Patch):
        return None
    permutation = tuple(node.eqn.params["permutation"])
    axes = (permutation.index(patch.axes[0]), permutation.index(patch.axes[1]))
    return [patch.with_box(jnp.transpose(patch.values, permutation), patch.rows, patch.cols, axes)]


def _unit_axes(node: Node, changed: dict[int, Any], env: dict[int, Any]) -> list[Any] | None:
    """A reshape, squeeze or ``broadcast_in_dim`` that only adds or drops axes of length 1 (an Equinox model's
    per-example ``vmap``): the box, with its axes renumbered."""
    patch = changed.get(node.ins[0]) if isinstance(node.ins[0], int) else None
    if not isinstance(patch, Patch) or any(isinstance(a, int) and a in changed for a in node.ins[1:]):
        return None
    before, after = tuple(node.eqn.invars[0].aval.shape), tuple(node.eqn.outvars[0].aval.shape)
    kept_in = [axis for axis, size in enumerate(before) if size != 1]
    kept_out = [axis for axis, size in enumerate(after) if size != 1]
    if [before[a] for a in kept_in] != [after[a] for a in kept_out] or not set(patch.axes) <= set(kept_in):
        return None
    renumber = dict(zip(kept_in, kept_out))
    axes = (renumber[patch.axes[0]], renumber[patch.axes[1]])
    shape = list(after)
    shape[axes[0]], shape[axes[1]] = patch.rows.size, patch.cols.size
    return [patch.with_box(jnp.reshape(patch.values, shape), patch.rows, patch.cols, axes)]


def _on_patches(node: Node, changed: dict[int, Any], env: dict[int, Any]) -> list[Any] | None:
    """The node's outputs, patches where its change stays boxed; None where it must run on pasted values."""
    primitive = node.primitive
    if primitive in ELEMENTWISE:
        return _elementwise(node, changed, env)
    if primitive == "conv_general_dilated":
        return _convolution(node, changed, env)
    if primitive in ("reduce_window_max", "reduce_window_sum"):
        return _window_reduction(node, changed, env)
    if primitive == "concatenate":
        return _concatenate(node, changed, env)
    if primitive == "transpose":
        return _transpose(node, changed, env)
    if primitive in ("reshape", "squeeze", "broadcast_in_dim", "expand_dims"):
        return _unit_axes(node, changed, env)
    if node.kind == "custom" or primitive in ("custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"):
        if _custom_pool(node) is not None:
            return _window_reduction(node, changed, env)
        return _custom_elementwise(node, changed, env)
    return None


def patched_forward(clean: Clean, patch: Patch) -> Any:
    """The model's output for the input whose only change is ``patch`` (see the module docstring).

    Args:
        clean: the clean evaluation (:func:`record_clean`).
        patch: the input's changed box.

    Returns:
        The outputs, as the model returns them.
    """
    graph, env = clean.graph, clean.env
    changed: dict[int, Any] = {graph.input_ids[0]: patch}

    def full(atom: Any) -> Any:
        current = changed.get(atom) if isinstance(atom, int) else None
        if current is None:
            return _value(env, atom)
        return paste(current, env[atom]) if isinstance(current, Patch) else current

    for node in graph.nodes:
        if not any(isinstance(a, int) and a in changed for a in node.ins):
            continue
        results = _on_patches(node, changed, env)
        if results is None:
            results = bind(node, [full(a) for a in node.ins])
        changed.update(zip(node.outs, results))
    return jax.tree_util.tree_unflatten(graph.out_tree, [full(a) for a in graph.output_ids])


def window_spans(starts: np.ndarray, window: int, extent: int) -> Span:
    """The input span of windows of ``window`` elements at ``starts`` (cropped at the end, as Captum)."""
    return Span.of(starts, np.minimum(starts + window, extent) - 1, extent)


def group_spans(mask: np.ndarray, count: int, axes: tuple[int, int] = (1, 2)) -> tuple[Span, Span]:
    """The extents along ``axes`` of each of ``count`` groups of an id mask (over every other axis)."""
    ids = mask.ravel()
    spans = []
    for axis in axes:
        shape = [1] * mask.ndim
        shape[axis] = mask.shape[axis]
        positions = np.broadcast_to(np.arange(mask.shape[axis]).reshape(shape), mask.shape).ravel()
        lo, hi = np.full(count, mask.shape[axis]), np.full(count, -1)
        np.minimum.at(lo, ids, positions)
        np.maximum.at(hi, ids, positions)
        spans.append(Span.of(lo, hi, mask.shape[axis]))
    return spans[0], spans[1]


def spatial_axes(model: Any, inputs: Array) -> tuple[int, int] | None:
    """The two spatial axes of an image batch for ``model`` (``(1, 2)`` NHWC, ``(2, 3)`` channels-first),
    or None where incremental passes do not apply (not 4-d inputs, a model without weights as arguments)."""
    if inputs.ndim != 4:
        return None
    try:
        program.structured(model, "incremental")
    except TypeError:
        return None
    return (2, 3) if getattr(model, "channel_axis", -1) == 1 else (1, 2)
