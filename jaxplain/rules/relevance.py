"""Relevance rules applied to the program's blocks (:mod:`jaxplain.program.blocks`).

A linear block computes ``y = S(a * L_K(x)) + c``: a linear operation ``L`` with the weight
``K`` it reads (a convolution or a contraction), the per-feature scale ``a`` of the affine
nodes after it (a batch norm folded in) and the offset ``c`` (its bias, the norm's shift), with
``S`` the shape-only reshapes between them. :func:`folded` rewrites it as
``forward(params, x) = S(L_{K'}(x)) + c`` with the folded weight ``K' = K * a`` (``a`` broadcast
along ``K``'s output-feature axis), which is what Zennit's ``MergeBatchNorm`` canonizer computes
for a ``BatchNorm2d`` after a ``Conv2d``, so every linear rule of :mod:`jaxplain.rules.lrp`
(Epsilon, ZPlus, AlphaBeta, Gamma, ZBox, Flat, WSquare) applies to ``{"kernel": K', "bias": c}``
as it does to a layer's own parameters. On the CPU backend a patch-embedding convolution (stride equal
to its kernel, unpadded) is computed there as one matrix product (:mod:`jaxplain.cpu.patch_conv`).

Other blocks (sums, pools, norms, products, activations) take the rules written for two-argument
calls, ``rule(block, call, *inputs)``, where ``call`` evaluates the block as traced.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.cpu import patch_conv
from jaxplain.program.blocks import Block
from jaxplain.program.interpret import UnitCall, bind
from jaxplain.rules import lrp
from jaxplain.typing import Array

Params = dict[str, Array]


def _live(graph, node) -> list[int]:
    return [a for a in node.ins if isinstance(a, int) and a in graph.depends]


def _feature_axes(node, weight_position: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(axes of the output, axes of the weight)`` that index the linear node's output features."""
    params = node.eqn.params
    if node.primitive == "conv_general_dilated":
        numbers = params["dimension_numbers"]
        return (numbers.out_spec[1],), (numbers.rhs_spec[0],)
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = params["dimension_numbers"]
    ranks = [len(var.aval.shape) for var in node.eqn.invars]
    contract = (lhs_contract, rhs_contract)[weight_position]
    batch = (lhs_batch, rhs_batch)[weight_position]
    if batch:
        raise ValueError(f"{node.describe()}: a contraction with batch dimensions on its weight cannot be folded")
    free = tuple(d for d in range(ranks[weight_position]) if d not in contract)
    other_free = ranks[1 - weight_position] - len((lhs_contract, rhs_contract)[1 - weight_position]) \
        - len((lhs_batch, rhs_batch)[1 - weight_position])
    start = len(lhs_batch) + (other_free if weight_position == 1 else 0)
    return tuple(range(start, start + len(free))), free


def folded(block: Block, call: UnitCall) -> tuple[Callable[[Params, Array], Array], Params]:
    """A linear block as ``forward(params, x)`` and its folded ``{"kernel", "bias"}`` (see the module docstring).

    Args:
        block: a ``"convolution"`` or ``"dense"`` block.
        call: the block's call (its graph and constant operands).

    Returns:
        ``(forward, params)``; ``params`` has no ``"bias"`` when the block adds nothing.

    Raises:
        ValueError: when an affine scale after the linear operation varies along more than its
            output features, so it cannot be folded into the weight.

    Example:
        >>> import jax.numpy as jnp, jaxplain as jx
        >>> from jaxplain import program
        >>> from jaxplain.program.interpret import evaluate
        >>> demo = jx.demo.load_model()
        >>> model, x = program.structured(demo, "example"), jnp.ones((1, 16, 16, 3))
        >>> def refolded(block, call, value):
        ...     forward, params = folded(block, call)
        ...     return forward(params, value)
        >>> rules = lambda block: refolded if block.kind in ("convolution", "dense") else None
        >>> graph, view = program.graph_of(model, x), program.blocks_of(model, x)
        >>> out = evaluate(graph, program.params_of(model), x, rules=rules, units=view.blocks)[0]
        >>> bool(jnp.allclose(out, demo(x), atol=1e-4))
        True
    """
    graph = call.graph
    linear = graph.nodes[block.attributes["linear"]]
    live = _live(graph, linear)[0]
    weight_position = next(i for i, a in enumerate(linear.ins) if a != live)
    kernel = call.value(linear.ins[weight_position])
    chain = [graph.nodes[i] for i in block.nodes[1:]]
    out_aval = linear.eqn.outvars[0].aval

    def apply_linear(weight: Array, x: Array) -> Array:
        values = [None, None]
        values[weight_position], values[1 - weight_position] = weight, x
        if weight_position == 1 and patch_conv.uses_product(linear):
            return patch_conv.conv_as_product(linear, *values)
        return bind(linear, values)[0]

    def run_chain(y: Array, affine: bool = True) -> Array:
        value = linear.outs[0]
        for node in chain:
            if node.kind == "affine" and not affine:
                value = node.outs[0]
                continue
            args = [y if a == value else call.value(a) for a in node.ins]
            y = bind(node, args)[0]
            value = node.outs[0]
        return y

    def forward(params: Params, x: Array) -> Array:
        out = run_chain(apply_linear(params["kernel"], x), affine=False)
        return out + params["bias"] if "bias" in params else out

    affine = [node for node in chain if node.kind == "affine"]
    if not affine:
        return forward, {"kernel": kernel}
    zeros = jnp.zeros(out_aval.shape, out_aval.dtype)
    bias = run_chain(zeros)
    scaling = [node for node in affine if node.primitive in ("mul", "div")
               or (node.primitive == "sub" and node.ins[1] in graph.depends)]
    if scaling:
        out_axes, weight_axes = _feature_axes(linear, weight_position)
        features = int(np.prod([out_aval.shape[a] for a in out_axes]))
        for node in scaling:
            operand = next(a for a in node.ins if not (isinstance(a, int) and a in graph.depends))
            size = int(np.prod(np.shape(call.value(operand))))
            if size not in (1, features):
                raise ValueError(f"lrp: the affine {node.primitive} in {node.name!r} scales more than the output "
                                 f"features of {linear.describe()}, so it cannot be folded into its weight; "
                                 "pass merge_batch_norm=False or give the layer a rule by name")
        _, pullback = jax.vjp(run_chain, zeros)
        scale = pullback(jnp.ones_like(bias))[0]
        index = tuple(slice(None) if axis in out_axes else 0 for axis in range(scale.ndim))
        per_feature = scale[index]
        shape = [1] * kernel.ndim
        for axis, size in zip(weight_axes, per_feature.shape):
            shape[axis] = size
        kernel = kernel * per_feature.reshape(shape).astype(kernel.dtype)
    return forward, {"kernel": kernel, "bias": bias}


def with_channel_axis(rule: Any, axis: int) -> Any:
    """``rule`` with per-channel bounds read along ``axis`` (ZBox on a channels-first input).

    Example:
        >>> with_channel_axis(lrp.ZBox((-1.0, -2.0, -3.0), (1.0, 2.0, 3.0)), 1).channel_axis
        1
    """
    if isinstance(rule, lrp.ZBox) and axis not in (-1, None):
        return dataclasses.replace(rule, channel_axis=axis)
    return rule


@dataclasses.dataclass(frozen=True)
class OnBlock:
    """A linear rule applied to a folded linear block (its input non-negative where promised).

    The forward pass is the block as traced; the folded weight enters only the rule's modified
    weights. A patch-embedding convolution computed as a product on the CPU
    (:mod:`jaxplain.cpu.patch_conv`) keeps the product in its forward pass too.
    """

    rule: lrp.LinearRule
    nonnegative_input: bool = False

    def __call__(self, block: Block, call: UnitCall, x: Array) -> Array:
        forward, params = folded(block, call)
        linear = call.graph.nodes[block.attributes["linear"]]
        if isinstance(self.rule, lrp.Flat) and _channel_uniform(block, call):
            return _flat_by_window_sums(self.rule, linear, forward, params, x)
        primal = None if patch_conv.uses_product(linear) else call
        return lrp.relevance_layer(self.rule, forward, params, x, self.nonnegative_input, primal=primal)


def _channel_uniform(block: Block, call: UnitCall) -> bool:
    """Whether the block is an ungrouped convolution of its input, followed by affine nodes only.

    Flat's all-ones weights then give every output channel the same fan-in and every input channel
    the same share, so its relevance can be computed on one channel (:func:`_flat_by_window_sums`).
    """
    graph = call.graph
    linear = graph.nodes[block.attributes["linear"]]
    if linear.primitive != "conv_general_dilated" or linear.ins[0] != _live(graph, linear)[0]:
        return False
    params = linear.eqn.params
    if params["feature_group_count"] != 1 or params["batch_group_count"] != 1:
        return False
    if any(low < 0 or high < 0 for low, high in params["padding"]):
        return False
    return all(graph.nodes[i].kind == "affine" for i in block.nodes[1:])


def _taps_in_bounds(size: int, kernel: int, stride: int, padding: tuple[int, int], base: int, dilation: int,
                    out: int) -> np.ndarray:
    """Per output position along one axis, how many kernel taps land on a real input element.

    The input is dilated by ``base`` (its holes are not real), padded by ``padding``, and read by
    ``kernel`` taps ``dilation`` apart every ``stride`` positions, as in ``lax.conv_general_dilated``.
    """
    position = (np.arange(out)[:, None] * stride + np.arange(kernel)[None, :] * dilation) - padding[0]
    real = (position >= 0) & (position <= (size - 1) * base) & (position % base == 0)
    return real.sum(axis=1)


def _fan_in(linear, kernel_shape: tuple[int, ...], value_shape: tuple[int, ...],
            dtype: Any) -> tuple[np.ndarray, Callable[[Array], Array]]:
    """Fan-in of the convolution ``linear`` with all-ones weights, and the pullback of its window sum.

    Returns ``(counts, spread)``: ``counts`` is the number of real input taps at every output position,
    laid out as the output with unit batch and feature axes (a constant computed from the shapes,
    separable as the product of each spatial axis' count); ``spread`` maps a one-channel cotangent of
    the output to the input, the transpose of the window sum of ``lax.reduce_window`` (window,
    strides, padding, input and kernel dilation as the convolution's), on the input's layout.
    """
    params = linear.eqn.params
    numbers = params["dimension_numbers"]
    lhs, rhs, out = numbers.lhs_spec, numbers.rhs_spec, numbers.out_spec
    out_shape = linear.eqn.outvars[0].aval.shape
    rank = len(lhs)
    window, strides, base, dilation, padding = [1] * rank, [1] * rank, [1] * rank, [1] * rank, [(0, 0)] * rank
    counts = np.ones([1] * rank, np.int64)
    for k, axis in enumerate(lhs[2:]):
        window[axis] = kernel_shape[rhs[2 + k]]
        strides[axis] = params["window_strides"][k]
        base[axis] = params["lhs_dilation"][k]
        dilation[axis] = params["rhs_dilation"][k]
        padding[axis] = tuple(params["padding"][k])
        along = _taps_in_bounds(value_shape[axis], window[axis], strides[axis], padding[axis], base[axis],
                                dilation[axis], out_shape[out[2 + k]])
        shape = [1] * rank
        shape[out[2 + k]] = along.shape[0]
        counts = counts * along.reshape(shape)
    order = [0] * rank
    for k in range(rank):
        order[out[k]] = lhs[k]
    one_channel = list(value_shape)
    one_channel[lhs[1]] = 1

    def window_sum(ones: Array) -> Array:
        summed = jax.lax.reduce_window(ones, np.zeros((), dtype), jax.lax.add, window, strides, padding, base, dilation)
        return jnp.transpose(summed, order)

    transpose = jax.linear_transpose(window_sum, jax.ShapeDtypeStruct(tuple(one_channel), dtype))
    return counts, lambda cotangent: transpose(cotangent)[0]


def _flat_by_window_sums(rule: lrp.Flat, linear, forward: Callable[[Params, Array], Array], params: Params,
                         x: Array) -> Array:
    """Flat on a channel-uniform convolution block, computed from window sums on one channel.

    With unit weights on a unit input, output channel ``o`` at position ``p`` sums ``I`` input channels
    over the ``n(p)`` in-bounds taps: ``z = I n(p)`` for every ``o``, and input ``(q, i)`` receives
    ``sum_o sum_{p sees q} R[p, o] / stab(I n(p))``, the same for every ``i``. So ``n`` is the fan-in
    (:func:`_fan_in`, from the shapes alone) and the sum over ``p`` a transposed window sum of
    ``sum_o R / stab(I n)`` on one channel, instead of an ``I x O``-channel convolution and its input
    gradient (on a ResNet's 7x7 stem at 224 px, the costliest convolution of the network). The numbers
    are Flat's (:class:`jaxplain.rules.lrp.Flat`), summed in another order.
    """
    numbers = linear.eqn.params["dimension_numbers"]
    in_axis, out_axis = numbers.lhs_spec[1], numbers.out_spec[1]

    def backward(args, output, relevance):
        layer_params, value = args
        counts, spread = _fan_in(linear, params["kernel"].shape, value.shape, value.dtype)
        ratio = relevance / lrp.stabilize(jnp.asarray(value.shape[in_axis] * counts, relevance.dtype), rule.stabilizer)
        shares = spread(jnp.sum(ratio, axis=out_axis, keepdims=True).astype(value.dtype))
        return jax.tree_util.tree_map(jnp.zeros_like, layer_params), jnp.broadcast_to(shares, value.shape)

    return lrp.with_backward(forward, (params, x), backward)


def _statistics(block: Block, call: UnitCall) -> set[int]:
    """Values of a norm block computed from its statistics (the variance and what follows from it)."""
    graph = call.graph
    members = set(block.nodes)
    found = {unit.output for unit in graph.units.values() if unit.kind == "statistic" and set(unit.nodes) <= members}
    for index in block.nodes:
        node = graph.nodes[index]
        if any(isinstance(a, int) and a in found for a in node.ins):
            found.update(node.outs)
    return found


def _detached_call(block: Block, call: UnitCall) -> Callable[[Array], Array]:
    """The norm block with its statistics treated as constants where they meet the normalised input."""
    graph = call.graph
    statistics = _statistics(block, call)

    def run(x: Array) -> Array:
        local = {block.input: x}
        for index in block.nodes:
            node = graph.nodes[index]
            live = [a for a in node.ins if isinstance(a, int) and a in graph.depends]
            joins = any(a in statistics for a in live) and any(a not in statistics for a in live)
            args = []
            for a in node.ins:
                value = local[a] if isinstance(a, int) and a in local else call.value(a)
                args.append(jax.lax.stop_gradient(value) if joins and isinstance(a, int) and a in statistics else value)
            for out, result in zip(node.outs, bind(node, args)):
                local[out] = result
        return local[block.output]

    return run


@dataclasses.dataclass(frozen=True)
class IdentityNorm:
    """AttnLRP's identity rule on LayerNorm and RMSNorm (Achtibat et al. 2024, eq. 9 for normalisations).

    The norm is linearised with its standard deviation held constant, as LXT's ``layer_norm_forward``
    and ``rms_norm_forward`` stop the gradient through it; relevance then follows that linear map,
    ``R_in = x * J~^T (R / stab(y))``, its shift absorbing its share as a bias does.
    """

    stabilizer: float = 1e-12

    def __call__(self, block: Block, call: UnitCall, x: Array) -> Array:
        detached = _detached_call(block, call)

        def backward(args, output, relevance):
            (value,) = args
            _, pullback = jax.vjp(detached, value)
            return (value * pullback(relevance / lrp.stabilize(output, self.stabilizer))[0],)

        return lrp.with_backward(call, (x,), backward)


def _from_softmax(graph, value: int) -> bool:
    """Whether ``value`` is a softmax's output, through structural operations."""
    outputs = {unit.output for unit in graph.units.values() if unit.kind == "softmax"}
    while value not in outputs and value in graph.producer:
        node = graph.nodes[graph.producer[value]]
        live = _live(graph, node)
        if node.kind != "structural" and node.primitive != "select_n" or not live:
            return False
        value = [a for a in live if np.issubdtype(np.dtype(graph.aval(a).dtype), np.floating)][0]
    return value in outputs


@dataclasses.dataclass(frozen=True)
class Uniform:
    """AttnLRP's uniform rule on a product of activations (eq. 7): each factor gets ``1/n`` of the
    proportional split, ``R_i = x_i * J_i^T (R / stab(y)) / n`` (LXT's ``divide_gradient``).

    With ``constant_attention`` (CP-LRP, Ali et al. 2022), a factor that is an attention softmax's
    output is a constant: it gets no relevance and the other factor all of it.
    """

    stabilizer: float = 1e-12
    constant_attention: bool = False

    def __call__(self, block: Block, call: UnitCall, *args: Array) -> Array:
        constant = [self.constant_attention and _from_softmax(call.graph, value) for value in block.inputs]
        share = 1.0 if any(constant) else 1.0 / len(args)

        def backward(values, output, relevance):
            _, pullback = jax.vjp(call, *values)
            gradients = pullback(relevance / lrp.stabilize(output, self.stabilizer))
            return tuple(jnp.zeros_like(v) if fixed else share * v * g
                         for v, g, fixed in zip(values, gradients, constant))

        return lrp.with_backward(call, args, backward)


@dataclasses.dataclass(frozen=True)
class NormalisedSum:
    """Chefer et al.'s rule on a sum of activations (CVPR 2021, "Transformer Interpretability Beyond
    Attention Visualization", eq. 4-5; ``Add.relprop`` of the authors' ``layers_ours.py``).

    The proportional split ``a_k = x_k R / stab(sum_j x_j)`` is rescaled so that operand ``k``
    keeps the share ``|sum a_k| / sum_j |sum a_j|`` of the relevance ``sum R``:
    ``R_k = a_k |sum a_k| / (sum_j |sum a_j|) * sum R / sum a_k`` (zero where ``sum a_k`` is 0).
    The sums run over each example (every axis but the leading batch axis; the authors' code sums
    over its batch of one). An operand broadcast to the output (a ``[1, T, D]`` embedding) gets its
    share in the output's shape, summed back over the broadcast axes.
    """

    stabilizer: float = 1e-9

    def __call__(self, block: Block, call: UnitCall, *args: Array) -> Array:
        def backward(values, output, relevance):
            expanded = [jnp.broadcast_to(value, output.shape) for value in values]
            _, pullback = jax.vjp(call, *expanded)
            gradients = pullback(relevance / lrp.stabilize(output, self.stabilizer))
            shares = [value * gradient for value, gradient in zip(expanded, gradients)]
            axes = tuple(range(1, output.ndim))
            sums = [jnp.sum(share, axis=axes, keepdims=True) for share in shares]
            total = sum(jnp.abs(s) for s in sums)
            mass = jnp.sum(relevance, axis=axes, keepdims=True)
            results = []
            for value, share, s in zip(values, shares, sums):
                factor = jnp.where(s == 0, 0.0, jnp.abs(s) * mass / jnp.where(total == 0, 1.0, total)
                                   / jnp.where(s == 0, 1.0, s))
                _, reduce = jax.vjp(lambda v: jnp.broadcast_to(v, output.shape), value)
                results.append(reduce((share * factor).astype(output.dtype))[0])
            return tuple(results)

        if all(jnp.ndim(a) == 0 for a in args):
            raise ValueError(f"NormalisedSum needs batched operands; the sum at {block.name!r} is a scalar")
        return lrp.with_backward(call, args, backward)
