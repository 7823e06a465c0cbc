"""Layer-wise relevance propagation (Bach et al. 2015) under a composite of rules.

The model runs once with each layer's rule (``jaxplain.rules.lrp``) wrapped around
it; the backward pass seeded at the target carries relevance instead of gradient, so
the "gradient" at the input is the input relevance. Rules per layer come from a
composite (``jaxplain.rules.composites``), batch norms folded into their linear layers
first. Zennit computes the same (zennit/attribution.py, with ``attr_output`` set to
the target output); Captum's ``LRP`` starts from the target logit as well.
"""

from __future__ import annotations

from typing import Any

import jax

from jaxplain.attribution._common import check_choice, prepare, run, traced_once
from jaxplain.model import Model, require_linen
from jaxplain.nets import layers
from jaxplain.rules import composites as composites_module
from jaxplain.rules.composites import Composite
from jaxplain.rules.engine import forward_with_rules, module_calls
from jaxplain.typing import Array, Target

INITIAL_RELEVANCE = ("output", "one_hot")

HANDLED = (
    composites_module.LINEAR
    + composites_module.ACTIVATION
    + composites_module.SUM
    + composites_module.AVG_POOL
    + composites_module.BATCH_NORM
    + (layers.MaxPool2d, layers.Flatten, layers.Identity, layers.Concat, layers.Softmax)
)
"""Leaf layers with a relevance rule or whose gradient routes relevance correctly."""


def _leaf_calls(model: Model, inputs: Array) -> list[tuple[str, Any]]:
    calls = [(".".join(path), module) for path, module in module_calls(model, inputs) if path]
    paths = [path for path, _ in calls]
    return [(path, module) for path, module in calls if not any(other.startswith(path + ".") for other in paths)]


def _check_layers(composite: Composite, calls: list[tuple[str, Any]], first_path: str | None) -> None:
    for path, module in calls:
        if not isinstance(module, HANDLED) and composite.rule_for(module, path, first_path) is None:
            raise ValueError(
                f"lrp: no relevance rule for layer {path!r} ({type(module).__name__}); give it one with "
                f"name_map=(({path!r},), rule) or layer_map=(({type(module).__name__},), rule)"
            )


def _lrp_core(model, inputs, target, key, arrays, *, composite, initial, first_path, pairs, nonnegative):
    rules = composites_module.rule_map(composite, model, first_path, pairs, nonnegative)
    outputs, pullback = jax.vjp(forward_with_rules(model, rules), inputs)
    seed = jax.nn.one_hot(target, outputs.shape[-1], dtype=outputs.dtype)
    if initial == "output":
        seed = seed * outputs
    return pullback(seed)[0]


def lrp(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    composite: Composite | str = "epsilon_plus_flat",
    initial_relevance: str = "output",
    **composite_options: Any,
) -> Array:
    """Input relevance ``[N, H, W, C]`` of the target output under ``composite``.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        composite: a :class:`~jaxplain.rules.composites.Composite` (``jx.composites.EpsilonPlusFlat()``)
            or a preset's snake_case name (``"epsilon_gamma_box"``) with its arguments as keywords
            (``low=..., high=...``).
        initial_relevance: ``"output"`` starts from the target output, so input relevance sums to about
            the target logit (Captum's convention, Zennit with ``attr_output=output * one_hot``);
            ``"one_hot"`` starts from 1 at the target (Zennit's one-hot ``attr_output``).
        **composite_options: the arguments of a composite given by name.

    Returns:
        ``[N, H, W, C]`` input relevance.

    Raises:
        TypeError: for a bare function (rules need the layers).
        ValueError: for a layer with parameters or an unknown type that no rule covers, naming it.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> relevance = jx.lrp(model, x, 0, composite="epsilon_gamma_box", low=-3.0, high=3.0)
        >>> relevance.shape
        (2, 16, 16, 3)
    """
    check_choice("initial_relevance", initial_relevance, INITIAL_RELEVANCE, method="lrp")
    chosen = composites_module.get(composite, **composite_options)
    model, inputs, target = prepare(model, inputs, target, method="lrp")
    model = require_linen(model, "lrp")
    calls = traced_once("leaf_calls", model, inputs, lambda: _leaf_calls(model, inputs))
    first_path = chosen.first_layer(calls)
    _check_layers(chosen, calls, first_path)
    pairs = traced_once("batch_norm_pairs", model, inputs, lambda: composites_module.batch_norm_pairs(model, inputs))
    nonnegative = traced_once("nonnegative_inputs", model, inputs,
                              lambda: composites_module.nonnegative_inputs(model, inputs))
    return run(_lrp_core, model, inputs, target, composite=chosen, initial=initial_relevance,
               first_path=first_path, pairs=pairs, nonnegative=nonnegative)

