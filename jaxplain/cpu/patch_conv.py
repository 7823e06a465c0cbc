"""Patch-embedding convolutions (stride equal to the kernel, no padding) as one matrix product.

A ViT's patch embedding is a convolution whose windows tile the image without overlap. Its
input gradient, as XLA CPU computes it (a convolution with the cotangent dilated by the
stride and padded by almost the whole image), runs at a few GFLOP/s: on a ViT-B/16 at 224 px
it was the single largest op of an input gradient (66 ms of 1.2 s at batch 2) and took
twice that in AttnLRP, whose Gamma rule pulls back through it twice. The same convolution
is a reshape of the input into its patches and one product with the kernel, whose pullback
is a product and the inverse reshape. :func:`conv_as_product` computes it that way for a
convolution node whose windows tile its input (any dimension numbers and spatial rank,
ungrouped, undilated, unpadded); the values are the convolution's up to summation order.
The relevance rules use it for linear blocks on the CPU backend only
(:func:`jaxplain.rules.relevance.folded`).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import lax

from jaxplain.cpu import on_cpu
from jaxplain.typing import Array


def is_patch_conv(node: Any) -> bool:
    """Whether ``node`` is a convolution whose windows tile its input: stride = kernel, no padding or dilation.

    Args:
        node: a program-graph node (:class:`jaxplain.program.graph.Node`).

    Returns:
        True for an ungrouped ``conv_general_dilated`` with ``window_strides`` equal to its
        kernel's spatial size, zero padding and no dilation.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxplain import program
        >>> from jaxplain.model import Model
        >>> conv = lambda p, x: jax.lax.conv_general_dilated(x, p["k"], (4, 4), "VALID",
        ...                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
        >>> model = Model.from_function(conv, {"k": jnp.ones((4, 4, 3, 8))})
        >>> graph = program.graph_of(model, jnp.ones((1, 16, 16, 3)))
        >>> [is_patch_conv(n) for n in graph.nodes if n.primitive == "conv_general_dilated"]
        [True]
    """
    if node.primitive != "conv_general_dilated":
        return False
    params = node.eqn.params
    numbers = params["dimension_numbers"]
    kernel_shape = node.eqn.invars[1].aval.shape
    window = tuple(kernel_shape[d] for d in numbers.rhs_spec[2:])
    return (params["feature_group_count"] == 1 and params["batch_group_count"] == 1
            and tuple(params["window_strides"]) == window
            and all(tuple(p) == (0, 0) for p in params["padding"])
            and all(d == 1 for d in (*params["lhs_dilation"], *params["rhs_dilation"])))


def conv_as_product(node: Any, x: Array, kernel: Array) -> Array:
    """The patch convolution ``node`` applied to ``(x, kernel)`` as patches times the kernel.

    The input, cropped to whole windows as a ``VALID`` convolution reads it, is reshaped to
    ``[N, C, o_1, k_1, o_2, k_2, ...]`` and contracted with the kernel over ``C`` and the
    ``k_i``; the result is laid out as the node's output.

    Args:
        node: a node for which :func:`is_patch_conv` holds.
        x: its input, in the node's input layout.
        kernel: its kernel, in the node's kernel layout.

    Returns:
        ``lax.conv_general_dilated`` of the node on ``(x, kernel)``, up to summation order.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxplain import program
        >>> from jaxplain.model import Model
        >>> conv = lambda p, x: jax.lax.conv_general_dilated(x, p["k"], (4, 4), "VALID",
        ...                                                  dimension_numbers=("NCHW", "OIHW", "NCHW"))
        >>> k, x = jnp.ones((8, 3, 4, 4)), jnp.arange(2 * 3 * 18 * 17.0).reshape(2, 3, 18, 17)
        >>> graph = program.graph_of(Model.from_function(conv, {"k": k}), x)
        >>> node = next(n for n in graph.nodes if n.primitive == "conv_general_dilated")
        >>> bool(jnp.allclose(conv_as_product(node, x, k), conv({"k": k}, x), rtol=1e-6))
        True
    """
    numbers = node.eqn.params["dimension_numbers"]
    lhs, rhs, out = numbers.lhs_spec, numbers.rhs_spec, numbers.out_spec
    canonical = jnp.transpose(x, lhs)
    weights = jnp.transpose(kernel, rhs).astype(x.dtype)
    window = weights.shape[2:]
    counts = tuple(size // k for size, k in zip(canonical.shape[2:], window))
    canonical = canonical[(slice(None), slice(None)) + tuple(slice(0, o * k) for o, k in zip(counts, window))]
    split = canonical.shape[:2] + tuple(d for pair in zip(counts, window) for d in pair)
    patches = canonical.reshape(split)
    spatial = len(window)
    contract = ((1, *range(3, 3 + 2 * spatial, 2)), (1, *range(2, 2 + spatial)))
    product = lax.dot_general(patches, weights, (contract, ((), ())))
    result = jnp.moveaxis(product, -1, 1)
    inverse = [0] * result.ndim
    for canonical_axis, out_axis in enumerate(out):
        inverse[out_axis] = canonical_axis
    return jnp.transpose(result, inverse)


def uses_product(node: Any) -> bool:
    """Whether the relevance rules compute ``node`` by :func:`conv_as_product`: a patch convolution, on CPU.

    Args:
        node: a program-graph node.

    Returns:
        ``on_cpu() and is_patch_conv(node)``, read when the program is traced.

    Example:
        >>> class Node: primitive = "dot_general"
        >>> uses_product(Node())
        False
    """
    return on_cpu() and is_patch_conv(node)
