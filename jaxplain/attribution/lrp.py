"""Layer-wise relevance propagation (Bach et al. 2015) under a composite of rules.

The model's traced program runs once with each layer's rule (``jaxplain.rules.lrp``)
wrapped around it; the backward pass seeded at the target carries relevance instead of
gradient, so the "gradient" at the input is the input relevance. Layers are the program's
blocks (:mod:`jaxplain.program.blocks`: convolutions, dense layers, sums, pools, norms...,
found the same way in every model form); rules per layer come from a composite
(``jaxplain.rules.composites``), batch norms folded into their linear layers first. Zennit computes the same (zennit/attribution.py, with ``attr_output`` set to
the target output); Captum's ``LRP`` starts from the target logit as well.
"""

from __future__ import annotations

from typing import Any

import jax

from jaxplain import program
from jaxplain.attribution._common import check_choice, prepare, run
from jaxplain.program.blocks import LINEAR_KINDS, Blocks, unclassified
from jaxplain.program.interpret import evaluate
from jaxplain.rules import composites as composites_module
from jaxplain.rules import lrp as lrp_rules
from jaxplain.rules.composites import Composite
from jaxplain.rules.relevance import OnBlock, with_channel_axis
from jaxplain.typing import Array, Target

INITIAL_RELEVANCE = ("output", "one_hot")


PADDING_SENSITIVE = (lrp_rules.Flat, lrp_rules.WSquare, lrp_rules.ZBox)
"""Linear rules whose terms do not vanish at a zero input, so a convolution's padding must not count as input."""


def _padded_patches(graph: Any, linear: Any) -> bool:
    """Whether the linear node is a product over patches gathered, through shape-only operations, from a padded
    input (a convolution written as a product by hand; ``jaxplain.cpu.small_conv``'s own patches path is read back
    as a convolution node and never reaches this)."""
    if linear.primitive != "dot_general":
        return False
    pending = [a for a in linear.ins if isinstance(a, int) and a in graph.depends]
    seen = set()
    while pending:
        value = pending.pop()
        if value in seen or value not in graph.producer:
            continue
        seen.add(value)
        node = graph.nodes[graph.producer[value]]
        if node.primitive == "pad":
            return True
        if node.kind == "structural":
            pending.extend(a for a in node.ins if isinstance(a, int) and a in graph.depends)
    return False


def check_rules(composite: Composite, view: Blocks, first_path: str | None, graph: Any, *, method: str) -> None:
    """Raise unless every block that needs a rule gets one and every operation is classified.

    Raises:
        ValueError: naming the operation, its layer path and what to do.
    """
    for node in unclassified(graph, view):
        raise ValueError(
            f"{method}: no relevance rule can reach the operation {node.describe()} (kind {node.kind!r}): "
            "LRP would pass its plain gradient; give its layer a rule with name_map=((path,), rule) "
            "or write it with operations LRP knows"
        )
    for block in view.blocks:
        rule = composite.rule_for(block.kind, block.name, first_path)
        if rule is None and block.kind not in composites_module.GRADIENT_OK:
            where = repr(block.name) if block.name else "the top level"
            raise ValueError(
                f"{method}: the composite has no rule for the {block.kind} layer at {where}; give it one with "
                f"name_map=(({block.name!r},), rule) or layer_map=((\"{block.kind}\",), rule)"
                + (" (composite=\"attn_lrp\" has rules for it)" if block.kind in ("softmax", "product", "norm")
                   else "")
            )
        if isinstance(rule, lrp_rules.LinearRule) and block.kind not in LINEAR_KINDS:
            raise TypeError(f"{method}: {type(rule).__name__} applies to convolution and dense layers, "
                            f"not to the {block.kind} layer at {block.name!r}")
        if isinstance(rule, PADDING_SENSITIVE) and _padded_patches(graph, graph.nodes[block.attributes["linear"]]):
            raise ValueError(
                f"{method}: {type(rule).__name__} at {block.name!r} replaces the convolution's input by ones or "
                "bounds, but this layer is a product over gathered, zero-padded patches, so its padded taps would count "
                "as inputs; write it as a convolution (lax.conv_general_dilated, or a framework's Conv layer) or give "
                "the layer an input-proportional rule (Epsilon, ZPlus, Gamma, AlphaBeta)"
            )


def block_rules(composite: Composite, view: Blocks, first_path: str | None, channel_axis: int):
    """The unit rule map of ``composite`` over ``view``'s blocks."""
    nonnegative = set(view.nonnegative)

    def choose(block):
        rule = composite.rule_for(block.kind, block.name, first_path)
        if isinstance(rule, lrp_rules.LinearRule):
            return OnBlock(with_channel_axis(rule, channel_axis), block.name in nonnegative)
        return rule

    return choose


def _lrp_core(model, inputs, target, key, arrays, *, composite, initial, first_path, channel_axis):
    graph = program.graph_of(model, inputs)
    view = program.blocks_of(model, inputs, merge=composite.merge_batch_norm)
    rules = block_rules(composite, view, first_path, channel_axis)

    def forward(x):
        return evaluate(graph, program.params_of(model), x, rules=rules, units=view.blocks)[0]

    outputs, pullback = jax.vjp(forward, inputs)
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
    """Input relevance of the target output under ``composite``, on any model form.

    The layers are read from the model's traced program, so Flax linen (zoo layers or
    ``nn.Conv``/``nn.BatchNorm``/``nn.relu``), NNX, Equinox, plain functions
    (``jx.Model.from_function``) and converted torch models get the same rules: convolutions and
    dense layers by kind, inference batch norms folded into the layer they read, inline residual
    sums and means split in proportion.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, ...]`` inputs in the model's own layout, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        composite: a :class:`~jaxplain.rules.composites.Composite` (``jx.composites.EpsilonPlusFlat()``)
            or a preset's snake_case name (``"epsilon_gamma_box"``) with its arguments as keywords
            (``low=..., high=...``).
        initial_relevance: ``"output"`` starts from the target output, so input relevance sums to about
            the target logit (Captum's convention, Zennit with ``attr_output=output * one_hot``);
            ``"one_hot"`` starts from 1 at the target (Zennit's one-hot ``attr_output``).
        **composite_options: the arguments of a composite given by name.

    Returns:
        The input relevance, shaped like ``inputs``.

    Raises:
        TypeError: for a bare function closing over its weights (use ``jx.Model.from_function``),
            or a linear rule given to a layer that is not linear.
        ValueError: naming the operation and its layer path, for a layer kind the composite gives
            no rule (a gate, a softmax, a LayerNorm under a CNN composite) and for an operation no
            rule can reach (a ``reduce_max``).

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
    model = program.structured(model, "lrp")
    view = program.blocks_of(model, inputs, merge=chosen.merge_batch_norm)
    first_path = chosen.first_layer([(block.name, block.kind) for block in view.blocks])
    check_rules(chosen, view, first_path, program.graph_of(model, inputs), method="lrp")
    return run(_lrp_core, model, inputs, target, composite=chosen, initial=initial_relevance,
               first_path=first_path, channel_axis=model.layer_channel_axis)
