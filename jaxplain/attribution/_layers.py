"""Access to one layer: its activation, and gradients with respect to it.

A *tap* is a rule placed on the module at a path. It records the module's output
(or its inputs, with ``attribute_to_layer_input``) and adds a zero perturbation
``delta`` to it; the gradient of the target with respect to ``delta`` is the gradient
with respect to the activation. Any other rule map (guided backprop, DeepLift) stays
active around the tap, including on the tapped module itself.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxplain.attribution._common import traced_once
from jaxplain.model import Model
from jaxplain.rules.engine import RuleMap, forward_with_rules, module_calls
from jaxplain.typing import Array


def _no_rules(module, path):
    return None


Layers = str | tuple[str, ...]


def layer_tuple(layer: Layers) -> tuple[str, ...]:
    """One path or several paths, as a tuple."""
    return (layer,) if isinstance(layer, str) else tuple(layer)


def check_layer(model: Model, inputs: Array, layer: Layers, *, method: str) -> None:
    """Raise a ``ValueError`` naming the closest valid paths when a layer is unknown or reused."""
    if not isinstance(layer, (str, tuple, list)) or not layer or not all(isinstance(n, str) for n in layer_tuple(layer)):
        raise TypeError(f"{method}: layer must be a dotted path such as 'layer4' (or a tuple of them), got {layer!r}")
    names = traced_once(
        "layer_names", model, inputs, lambda: [".".join(path) for path, _ in module_calls(model, inputs) if path]
    )
    for name in layer_tuple(layer):
        count = names.count(name)
        if count == 0:
            close = difflib.get_close_matches(name, names, n=8, cutoff=0.5)
            near = [n for n in names if n.startswith(name.rsplit(".", 1)[0] + ".")][:8] if "." in name else []
            suggestions = list(dict.fromkeys(close + near)) or names[:12]
            raise ValueError(f"{method}: unknown layer {name!r}; valid paths near it: {', '.join(suggestions)}")
        if count > 1:
            raise ValueError(f"{method}: layer {name!r} is called {count} times in one forward pass; pick one call site")


def tapped_forward(
    model: Model, layer: Layers, *, attribute_to_layer_input: bool = False, rules: RuleMap = _no_rules
) -> Callable[[Array, Any], tuple[Array, Any]]:
    """``f(inputs, delta) -> (outputs, activation)`` with ``delta`` added at ``layer``.

    ``activation`` is the layer's output (or the tuple of its inputs, or the single
    input when there is one) before ``delta`` is added; ``delta`` has its structure.
    With a tuple of layers, ``activation`` and ``delta`` are tuples in that order.
    """
    names = layer_tuple(layer)

    def forward(inputs: Array, delta: Any) -> tuple[Array, Any]:
        captured: dict[str, Any] = {}
        deltas = dict(zip(names, (delta,) if isinstance(layer, str) else delta))

        def rule_map(module, path):
            inner = rules(module, path)
            name = ".".join(path)
            if name not in deltas:
                return inner

            def tap(module, call, *args):
                run = (lambda *a: inner(module, call, *a)) if inner is not None else call
                if attribute_to_layer_input:
                    captured[name] = args[0] if len(args) == 1 else args
                    shifted = _shift(captured[name], deltas[name])
                    return run(*((shifted,) if len(args) == 1 else shifted))
                captured[name] = run(*args)
                return _shift(captured[name], deltas[name])

            return tap

        outputs = forward_with_rules(model, rule_map)(inputs)
        activations = tuple(captured[name] for name in names)
        return outputs, activations[0] if isinstance(layer, str) else activations

    return forward


def _shift(activation: Any, delta: Any) -> Any:
    """``activation + delta`` leaf by leaf; a scalar ``delta`` is added to every leaf."""
    if isinstance(delta, (int, float)):
        return jax.tree_util.tree_map(lambda leaf: leaf + delta, activation)
    return jax.tree_util.tree_map(jnp.add, activation, delta)


def activation_shape(model: Model, layer: Layers, inputs: Array, attribute_to_layer_input: bool = False) -> Any:
    """Shapes (``jax.ShapeDtypeStruct``) of the activation at ``layer``."""
    forward = tapped_forward(model, layer, attribute_to_layer_input=attribute_to_layer_input)
    zero = 0.0 if isinstance(layer, str) else (0.0,) * len(layer)
    return jax.eval_shape(lambda x: forward(x, zero)[1], inputs)


def zeros_like_activation(model: Model, layer: Layers, inputs: Array, attribute_to_layer_input: bool = False) -> Any:
    shapes = activation_shape(model, layer, inputs, attribute_to_layer_input)
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def layer_gradient_and_activation(
    model: Model,
    layer: Layers,
    inputs: Array,
    target: Array,
    *,
    attribute_to_layer_input: bool = False,
    rules: RuleMap = _no_rules,
) -> tuple[Any, Any]:
    """``(dF_t/dA, A)`` at ``layer`` for every row."""
    forward = tapped_forward(model, layer, attribute_to_layer_input=attribute_to_layer_input, rules=rules)
    delta = zeros_like_activation(model, layer, inputs, attribute_to_layer_input)

    def selected(d):
        outputs, activation = forward(inputs, d)
        return jnp.sum(jnp.take_along_axis(outputs, target[:, None], axis=1)), activation

    return jax.grad(selected, has_aux=True)(delta)


def layer_activation_of(model: Model, layer: Layers, inputs: Array, attribute_to_layer_input: bool = False) -> Any:
    """The activation at ``layer`` (no gradient)."""
    forward = tapped_forward(model, layer, attribute_to_layer_input=attribute_to_layer_input)
    return forward(inputs, zeros_like_activation(model, layer, inputs, attribute_to_layer_input))[1]
