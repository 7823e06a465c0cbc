"""The program-level engine: one traced graph per model structure and input shape.

Every structure-dependent method (guided backprop, deconvolution, DeepLift, the layer and
CAM methods) reads the model through :func:`graph_of`, the typed, named graph of the
program JAX traces (:mod:`jaxplain.program.graph`), and runs it through
:func:`jaxplain.program.interpret.evaluate` with its rules and taps. The same code
serves Flax linen (``jx.Model``, bound modules), Flax NNX, Equinox, plain functions
(``jx.Model.from_function``) and converted torch models.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax

from jaxplain.model import FunctionModel, Model, as_model
from jaxplain.forms import ProgramModel, module_scoped, scoping
from jaxplain.program import blocks as _blocks
from jaxplain.program.graph import Graph, Unit, trace
from jaxplain.program.interpret import (NodeRuleMap, RuleMap, Tap, UnitRuleMap, UnitRules, evaluate, no_node_rules,
                                        no_rules, offset, region)
from jaxplain.typing import Array

StructuredModel = Model | ProgramModel

_GRAPHS: dict[Any, Graph] = {}
_GRAPH_LIMIT = 256


def _apply_and_params(model: StructuredModel) -> tuple[Callable[[Any, Array], Array], Any, int, Any]:
    if isinstance(model, Model):
        module, kwargs = model.module, dict(model.call_kwargs)

        def apply(variables, inputs):
            return module.apply(variables, inputs, **kwargs)

        return apply, model.variables, 1, None
    return model.apply, model.params, 0, scoping if module_scoped(model.apply) else None


def structured(model: Any, method: str) -> StructuredModel:
    """The model as a form whose program the engine can read.

    Raises:
        TypeError: for a bare callable closing over its weights (pass
            ``jx.Model.from_function(fn, params)`` instead).
    """
    if isinstance(model, FunctionModel) or not isinstance(model, (Model, ProgramModel)):
        model = as_model(model)
    if isinstance(model, FunctionModel):
        raise TypeError(
            f"{method} reads the model's layers, so it needs the weights as arguments: pass "
            "jx.Model.from_function(fn, params) for a function fn(params, x), a jx.Model, an NNX or an Equinox module"
        )
    return model


def graph_of(model: StructuredModel, inputs: Array) -> Graph:
    """The traced graph of ``model`` on inputs shaped like ``inputs`` (cached by structure and shape).

    Args:
        model: a structured model (``jx.Model`` or :class:`~jaxplain.forms.ProgramModel`).
        inputs: an array or tracer; only its shape and dtype are used.

    Returns:
        The :class:`~jaxplain.program.graph.Graph`.
    """
    leaves, structure = jax.tree_util.tree_flatten(model)
    key = (structure, tuple((leaf.shape, leaf.dtype) for leaf in leaves), tuple(inputs.shape), inputs.dtype)
    graph = _GRAPHS.get(key)
    if graph is None:
        apply, params, strip, naming = _apply_and_params(model)
        params = jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), params)
        graph = trace(apply, params, inputs, strip=strip, naming=naming)
        if len(_GRAPHS) >= _GRAPH_LIMIT:
            _GRAPHS.clear()
        _GRAPHS[key] = graph
    return graph


_BLOCKS: dict[tuple[int, bool], tuple[Graph, "_blocks.Blocks"]] = {}


def blocks_of(model: StructuredModel, inputs: Array, *, merge: bool = True) -> "_blocks.Blocks":
    """The relevance blocks of ``model``'s program (:mod:`jaxplain.program.blocks`), cached with its graph.

    Args:
        model: a structured model.
        inputs: an array or tracer; only its shape and dtype are used.
        merge: fold inference batch norms into the linear layer they read.

    Returns:
        The :class:`~jaxplain.program.blocks.Blocks`.

    Example:
        >>> import jax.numpy as jnp, jaxplain as jx
        >>> model = structured(jx.demo.load_model(), "example")
        >>> blocks_of(model, jnp.zeros((1, 16, 16, 3))).nonnegative[:2]
        ('features.4', 'features.8')
    """
    graph = graph_of(model, inputs)
    cached = _BLOCKS.get((id(graph), merge))
    if cached is None or cached[0] is not graph:
        if len(_BLOCKS) >= _GRAPH_LIMIT:
            _BLOCKS.clear()
        cached = (graph, _blocks.analyse(graph, merge=merge))
        _BLOCKS[(id(graph), merge)] = cached
    return cached[1]


def params_of(model: StructuredModel) -> Any:
    return model.variables if isinstance(model, Model) else model.params


def _units_of(model: StructuredModel, inputs: Array, blocks: bool | None) -> Any:
    return None if blocks is None else blocks_of(model, inputs, merge=blocks).blocks


def forward(model: StructuredModel, rules: RuleMap = no_rules, *,
            node_rules: NodeRuleMap = no_node_rules, blocks: bool | None = None) -> Callable[[Array], Array]:
    """``model``'s forward function with ``rules`` on its units (and ``node_rules`` on its linear nodes).

    ``blocks`` puts the rules on the relevance blocks (:func:`blocks_of`) instead of the graph's
    units: True with batch norms folded into their linear layers, False with them left apart.
    """

    def run(inputs: Array) -> Array:
        return evaluate(graph_of(model, inputs), params_of(model), inputs, rules=rules, node_rules=node_rules,
                        units=_units_of(model, inputs, blocks))[0]

    return run


def tapped(model: StructuredModel, names: Sequence[str], *, to_input: bool = False, rules: RuleMap = no_rules,
           method: str = "layer", node_rules: NodeRuleMap = no_node_rules, blocks: bool | None = None,
           ) -> Callable[[Array, Sequence[Any]], tuple[Array, list[Any]]]:
    """``f(inputs, deltas) -> (outputs, activations)`` with ``deltas[i]`` added at layer ``names[i]``
    (or, for a callable ``deltas[i]``, the layer's value replaced by ``deltas[i](value)``); ``blocks`` as
    in :func:`forward`."""

    def run(inputs: Array, deltas: Sequence[Any]) -> tuple[Array, list[Any]]:
        graph = graph_of(model, inputs)
        taps = [Tap(region(graph, name, method=method), to_input, delta) for name, delta in zip(names, deltas)]
        return evaluate(graph, params_of(model), inputs, rules=rules, taps=taps, node_rules=node_rules,
                        units=_units_of(model, inputs, blocks))

    return run


def bias_layers(model: StructuredModel, inputs: Array) -> tuple[str, ...]:
    """The layers that add a bias (convolutions with one, inference batch norms), in execution order."""
    return tuple(graph_of(model, inputs).bias_layers())


def biases(model: StructuredModel, names: Sequence[str], inputs: Array) -> tuple[Array, ...]:
    """Each layer's output at zero input (its bias, broadcast to the output), from the model's traced weights."""
    graph = graph_of(model, inputs)
    return tuple(offset(graph, params_of(model), region(graph, name, method="biases"))[0] for name in names)


def require_units(model: StructuredModel, inputs: Array, rules: RuleMap, *, method: str,
                  linear_ok: bool = False) -> None:
    """Raise unless ``rules`` apply to at least one unit of the model's program.

    Args:
        model: the structured model.
        inputs: a batch (its shape and dtype).
        rules: the method's rule map.
        method: the method's name, for the message.
        linear_ok: accept a program with no non-linearity at all (DeepLift is then exact as it is).

    Raises:
        ValueError: naming the non-linearities found, when none is one the method's rules cover.
    """
    graph = graph_of(model, inputs)
    units = [unit for unit in graph.unit_list() if unit.kind != "statistic"]
    if any(rules(unit) is not None for unit in units):
        return
    nonlinear = units or any(node.kind in ("product", "other", "custom", "reduce") and node.primitive != "reduce_sum"
                             for node in graph.nodes)
    if linear_ok and not nonlinear:
        return
    found = ", ".join(dict.fromkeys(unit.describe() for unit in units)) or "none"
    what = getattr(rules, "covers", "non-linearities")
    raise ValueError(
        f"{method}: its rules act on {what}, and the model's program has none (non-linearities found: {found}); "
        "the result would be the plain gradient"
    )


def layers(model: Any, inputs: Array) -> list[str]:
    """The dotted layer paths of ``model``, in execution order, as ``layer=`` takes them.

    Linen module names (``"block.conv2"``), NNX attributes, Equinox fields (``"layers.2"``),
    the parameter paths of a plain function's operations, and torch module paths of a
    converted model.

    Args:
        model: any structured model form (``jx.Model``, bound linen, NNX, Equinox,
            ``jx.Model.from_function``).
        inputs: a batch (only its shape and dtype are used).

    Returns:
        The paths, each prefix of a nested path included (``"block"``, ``"block.conv2"``).

    Example:
        >>> import jax.numpy as jnp, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> jx.layers(model, jnp.zeros((1, 64, 64, 3)))[:3]
        ['features', 'features.0', 'features.1']
    """
    model = structured(model, "layers")
    return graph_of(model, jax.numpy.asarray(inputs) if not hasattr(inputs, "shape") else inputs).layer_names()


__all__ = ["ProgramModel", "Unit", "UnitRuleMap", "UnitRules", "bias_layers", "biases", "blocks_of", "forward", "graph_of", "layers", "require_units", "structured", "tapped"]
