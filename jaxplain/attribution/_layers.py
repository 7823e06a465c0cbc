"""Access to one layer: its activation, and gradients with respect to it.

A *tap* records a layer's output (or its inputs, with ``attribute_to_layer_input``) and
adds a perturbation ``delta`` to it; the gradient of the target with respect to a zero
``delta`` is the gradient with respect to the activation. Layers are regions of the
model's traced program (:mod:`jaxplain.program`), named by their dotted paths in every
model form. Rules over program units (guided backprop, DeepLift, LRP's blocks, excitation
backprop) stay active around the tap.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxplain import program
from jaxplain.program.interpret import no_node_rules, region
from jaxplain.typing import Array

Layers = str | tuple[str, ...]


def layer_tuple(layer: Layers) -> tuple[str, ...]:
    """One path or several paths, as a tuple."""
    return (layer,) if isinstance(layer, str) else tuple(layer)


def check_layer(model: Any, inputs: Array, layer: Layers, *, method: str) -> None:
    """Raise a ``ValueError`` naming the closest valid paths when a layer is unknown or reused."""
    if not isinstance(layer, (str, tuple, list)) or not layer or not all(isinstance(n, str) for n in layer_tuple(layer)):
        raise TypeError(f"{method}: layer must be a dotted path such as 'layer4' (or a tuple of them), got {layer!r}")
    graph = program.graph_of(program.structured(model, method), inputs)
    for name in layer_tuple(layer):
        region(graph, name, method=method)


def tapped_forward(
    model: Any, layer: Layers, *, attribute_to_layer_input: bool = False, rules: Any = None,
    node_rules: Any = no_node_rules,
) -> Callable[[Array, Any], tuple[Array, Any]]:
    """``f(inputs, delta) -> (outputs, activation)`` with ``delta`` added at ``layer``.

    ``activation`` is the layer's output (or the tuple of its inputs, or the single
    input when there is one) before ``delta`` is added; ``delta`` has its structure or
    is a scalar. With a tuple of layers, ``activation`` and ``delta`` are tuples in that
    order. ``rules`` is a unit rule map (:class:`~jaxplain.program.interpret.UnitRuleMap`); ``node_rules``
    replace single nodes (:func:`jaxplain.cpu.fast_conv.node_rules`).
    """
    names = layer_tuple(layer)
    tapped = program.tapped(model, names, to_input=attribute_to_layer_input,
                            rules=rules if rules is not None else program.no_rules, node_rules=node_rules)

    def forward(inputs: Array, delta: Any) -> tuple[Array, Any]:
        outputs, activations = tapped(inputs, (delta,) if isinstance(layer, str) else tuple(delta))
        return outputs, activations[0] if isinstance(layer, str) else tuple(activations)

    return forward


def activation_shape(model: Any, layer: Layers, inputs: Array, attribute_to_layer_input: bool = False) -> Any:
    """Shapes (``jax.ShapeDtypeStruct``) of the activation at ``layer``."""
    forward = tapped_forward(model, layer, attribute_to_layer_input=attribute_to_layer_input)
    zero = 0.0 if isinstance(layer, str) else (0.0,) * len(layer)
    return jax.eval_shape(lambda x: forward(x, zero)[1], inputs)


def zeros_like_activation(model: Any, layer: Layers, inputs: Array, attribute_to_layer_input: bool = False) -> Any:
    shapes = activation_shape(model, layer, inputs, attribute_to_layer_input)
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def layer_gradient_and_activation(
    model: Any,
    layer: Layers,
    inputs: Array,
    target: Array,
    *,
    attribute_to_layer_input: bool = False,
    rules: Any = None,
    node_rules: Any = no_node_rules,
) -> tuple[Any, Any]:
    """``(dF_t/dA, A)`` at ``layer`` for every row."""
    forward = tapped_forward(model, layer, attribute_to_layer_input=attribute_to_layer_input, rules=rules,
                             node_rules=node_rules)
    delta = zeros_like_activation(model, layer, inputs, attribute_to_layer_input)

    def selected(d):
        outputs, activation = forward(inputs, d)
        return jnp.sum(jnp.take_along_axis(outputs, target[:, None], axis=1)), activation

    return jax.grad(selected, has_aux=True)(delta)


def layer_activation_of(model: Any, layer: Layers, inputs: Array, attribute_to_layer_input: bool = False) -> Any:
    """The activation at ``layer`` (no gradient)."""
    forward = tapped_forward(model, layer, attribute_to_layer_input=attribute_to_layer_input)
    return forward(inputs, zeros_like_activation(model, layer, inputs, attribute_to_layer_input))[1]
