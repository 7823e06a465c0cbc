"""DeepLift, DeepLiftShap and LayerDeepLift (Shrikumar et al. 2017; Lundberg & Lee 2017).

The model runs once on ``[x; x']`` with the rescale rules of
:mod:`jaxplain.rules.deeplift`; the gradient of ``F_t`` summed over both halves is
DeepLift's multiplier ``m`` and the attribution is ``(x - x') * m``
(captum/attr/_core/deep_lift.py, captum/attr/_core/layer/layer_deep_lift.py).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxplain.attribution._common import (
    broadcast_baselines,
    check_batch_size,
    check_choice,
    prepare,
    run,
    selected_output,
    sum_over,
)
from jaxplain.attribution._layers import check_layer, layer_gradient_and_activation
from jaxplain import program
from jaxplain.program.graph import Unit
from jaxplain.program.interpret import UnitRuleMap
from jaxplain.rules.deeplift import FLAVOURS, deeplift_rules
from jaxplain.typing import Array, Target


def _gap(outputs: Array, target: Array) -> Array:
    """``F_t(x) - F_t(x')`` from the outputs of the stacked batch."""
    selected = selected_output(outputs, target)
    first, second = jnp.split(selected, 2)
    return first - second


def _per_example_sum(tree: Any) -> Array:
    return sum(jnp.sum(leaf.reshape(leaf.shape[0], -1), axis=1) for leaf in jax.tree_util.tree_leaves(tree))


def _deeplift_pair(model, inputs, baselines, target, eps: float, flavour: str, multiply_by_inputs: bool):
    """``(attributions, F_t(x) - F_t(x'))`` for one baseline per example."""
    targets = jnp.concatenate([target, target])
    forward = program.forward(model, deeplift_rules(eps, flavour))

    def objective(x):
        outputs = forward(jnp.concatenate([x, baselines]))
        return jnp.sum(selected_output(outputs, targets)), outputs

    multipliers, outputs = jax.grad(objective, has_aux=True)(inputs)
    attributions = (inputs - baselines) * multipliers if multiply_by_inputs else multipliers
    return attributions, _gap(outputs, targets)


def _deeplift_core(model, inputs, target, key, arrays, *, eps, flavour, multiply_by_inputs, with_delta):
    attributions, gap = _deeplift_pair(model, inputs, arrays["baselines"], target, eps, flavour, multiply_by_inputs)
    if not with_delta:
        return attributions
    return attributions, _per_example_sum(attributions) - gap


def deeplift(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    baselines: Any = None,
    eps: float = 1e-10,
    multiply_by_inputs: bool = True,
    return_convergence_delta: bool = False,
    flavour: str = "rescale",
) -> Array | tuple[Array, Array]:
    """DeepLift with the rescale rule (Shrikumar et al. 2017; Captum's ``DeepLift``).

    ``(x - x') * m``, where ``m`` is the gradient of ``F_t`` through the network run
    on ``[x; x']`` with every nonlinearity's derivative replaced by
    ``(y - y') / (x - x')`` at its call site (captum/attr/_core/deep_lift.py); the
    attributions sum to ``F_t(x) - F_t(x')`` on any network without softmax.

    Args:
        model: any structured model form (``jx.Model``, NNX, Equinox, ``jx.Model.from_function``);
            the rules act on the non-linearities and max pools of its traced program.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        baselines: None (zeros), a scalar, per-channel ``[C]``, ``[1, ...]`` or ``[N, ...]``.
        eps: below this ``|x - x'|`` a layer keeps its ordinary derivative (Captum's 1e-10).
        multiply_by_inputs: return ``(x - x') * m`` (Captum's default) rather than ``m``.
        return_convergence_delta: also return ``sum(attr) - (F_t(x) - F_t(x'))`` per example.
        flavour: ``"rescale"`` (default: every layer applies its own rule, so the
            attributions sum to the output difference) or ``"captum"`` for Captum's
            numbers, which break that sum: a max pool right after a ReLU passes back
            its ordinary gradient (a clash of Captum's hooks), overlapping pooling
            windows keep one share, ReLU6 is left alone and the softmax mean spans the
            batch (see ``jaxplain.rules.deeplift.CaptumRules``).

    Returns:
        ``[N, H, W, C]`` attributions, and with ``return_convergence_delta`` the ``[N]`` gaps.

    Raises:
        TypeError: for a bare function closing over its weights (use ``jx.Model.from_function``).
        ValueError: when the program has no non-linearity the rules cover (the answer would be
            input x gradient).

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> attributions, delta = jx.deeplift(model, x, 0, return_convergence_delta=True)
        >>> attributions.shape, bool((abs(delta) < 1e-3).all())  # summation to delta
        ((2, 16, 16, 3), True)
    """
    check_choice("flavour", flavour, FLAVOURS, method="deeplift")
    model, inputs, target = prepare(model, inputs, target, method="deeplift")
    model = program.structured(model, "deeplift")
    program.require_units(model, inputs, deeplift_rules(eps, flavour), method="deeplift", linear_ok=True)
    baselines = broadcast_baselines(baselines, inputs, method="deeplift")
    return run(
        _deeplift_core,
        model,
        inputs,
        target,
        arrays={"baselines": baselines},
        eps=float(eps),
        flavour=flavour,
        multiply_by_inputs=multiply_by_inputs,
        with_delta=return_convergence_delta,
    )


def _deeplift_shap_core(
    model, inputs, target, key, arrays, *, eps, flavour, multiply_by_inputs, with_delta, batch_size
):
    distribution = arrays["baselines"]
    count = distribution.shape[0]

    def one_baseline(item):
        index, baseline = item
        baselines = jnp.broadcast_to(baseline, inputs.shape)
        attributions, gap = _deeplift_pair(model, inputs, baselines, target, eps, flavour, multiply_by_inputs)
        if not with_delta:
            return attributions
        delta = _per_example_sum(attributions) - gap
        return attributions, delta[:, None] * jax.nn.one_hot(index, count, dtype=delta.dtype)

    total = sum_over(one_baseline, (jnp.arange(count), distribution), batch_size)
    if not with_delta:
        return total / count
    attributions, deltas = total
    return attributions / count, deltas


def deeplift_shap(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    baselines: Any,
    batch_size: int | None = None,
    eps: float = 1e-10,
    multiply_by_inputs: bool = True,
    return_convergence_delta: bool = False,
    flavour: str = "rescale",
) -> Array | tuple[Array, Array]:
    """DeepLiftShap: DeepLift averaged over a baseline distribution (Captum's ``DeepLiftShap``).

    ``mean_j deeplift(x_i; baseline b_j)`` over every pair (captum/attr/_core/deep_lift.py,
    ``DeepLiftShap``); the baseline axis is one vmapped pass, or ``batch_size``
    baselines at a time. With ``flavour="captum"`` Captum's whole-batch quirks (softmax
    mean, max-pool fallback row) act within each baseline's batch.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        baselines: a distribution ``[B, H, W, C]`` with ``B > 1``.
        batch_size: baselines evaluated at once (None: all).
        eps, multiply_by_inputs, flavour: as :func:`deeplift`.
        return_convergence_delta: also return the delta of every pair, ``[N, B]``
            (Captum returns it flat, ``reshape(N, B)``).

    Returns:
        ``[N, H, W, C]`` attributions, and with ``return_convergence_delta`` the ``[N, B]`` gaps.

    Raises:
        TypeError: for a bare function.
        ValueError: when ``baselines`` is not a distribution of at least two rows.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.deeplift_shap(model, x, 0, baselines=jax.numpy.zeros((3, 16, 16, 3))).shape
        (2, 16, 16, 3)
    """
    check_choice("flavour", flavour, FLAVOURS, method="deeplift_shap")
    check_batch_size(batch_size, method="deeplift_shap")
    model, inputs, target = prepare(model, inputs, target, method="deeplift_shap")
    model = program.structured(model, "deeplift_shap")
    program.require_units(model, inputs, deeplift_rules(eps, flavour), method="deeplift_shap", linear_ok=True)
    if not hasattr(baselines, "shape"):
        raise ValueError("deeplift_shap: baselines must be an array [B, H, W, C] with B > 1")
    baselines = jnp.asarray(baselines, inputs.dtype)
    if baselines.ndim != inputs.ndim or baselines.shape[1:] != inputs.shape[1:] or baselines.shape[0] < 2:
        raise ValueError(
            f"deeplift_shap: baselines must be a distribution [B, {', '.join(map(str, inputs.shape[1:]))}] "
            f"with B > 1, got {baselines.shape}; for a single baseline use deeplift"
        )
    return run(
        _deeplift_shap_core,
        model,
        inputs,
        target,
        arrays={"baselines": baselines},
        eps=float(eps),
        flavour=flavour,
        multiply_by_inputs=multiply_by_inputs,
        with_delta=return_convergence_delta,
        batch_size=batch_size,
    )


class _Skipping(UnitRuleMap):
    """``rules`` except on the unit that is ``layer`` itself (a ReLU layer), which keeps its ordinary gradient.

    Captum takes the gradient at a clone of the layer's input, made after its hooks
    (captum/_utils/gradient.py, ``_forward_layer_distributed_eval``), so the layer's
    own rule never reaches it.
    """

    def __init__(self, layer: str, rules: UnitRuleMap):
        self.layer, self.rules = layer, rules

    def __call__(self, unit: Unit) -> Any:
        if unit.name == self.layer:
            return None
        return self.rules(unit)


def _layer_deeplift_core(
    model, inputs, target, key, arrays, *, layer, attribute_to_layer_input, eps, flavour, multiply_by_inputs, with_delta
):
    stacked = jnp.concatenate([inputs, arrays["baselines"]])
    targets = jnp.concatenate([target, target])
    rules = deeplift_rules(eps, flavour)
    if flavour == "captum" and attribute_to_layer_input:
        rules = _Skipping(layer, rules)
    gradients, activations = layer_gradient_and_activation(
        model, layer, stacked, targets, attribute_to_layer_input=attribute_to_layer_input, rules=rules
    )

    def attribution(gradient, activation):
        multiplier = jnp.split(gradient, 2)[0]
        if not multiply_by_inputs:
            return multiplier
        first, second = jnp.split(activation, 2)
        return (first - second) * multiplier

    attributions = jax.tree_util.tree_map(attribution, gradients, activations)
    if not with_delta:
        return attributions
    return attributions, _per_example_sum(attributions) - _gap(model(stacked), targets)


def layer_deeplift(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    layer: str,
    baselines: Any = None,
    attribute_to_layer_input: bool = False,
    multiply_by_inputs: bool = True,
    return_convergence_delta: bool = False,
    eps: float = 1e-10,
    flavour: str = "rescale",
) -> Any:
    """DeepLift at a layer: ``(a(x) - a(x')) * m_a`` (Captum's ``LayerDeepLift``).

    ``a`` is the output of the module at ``layer`` (or its input, a tuple for several
    inputs, with ``attribute_to_layer_input``), ``m_a`` DeepLift's multiplier there
    (captum/attr/_core/layer/layer_deep_lift.py). The attributions sum to
    ``F_t(x) - F_t(x')`` like :func:`deeplift`'s. With ``attribute_to_layer_input``
    the layer's own rule gives the multiplier at its input; Captum skips it (it takes
    the gradient at a clone of the input), which ``flavour="captum"`` reproduces.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        layer: the module's path, as torchvision names it (``"layer4"``, ``"features.8"``).
        baselines, eps, multiply_by_inputs, return_convergence_delta, flavour: as :func:`deeplift`.
        attribute_to_layer_input: attribute to the layer's input rather than its output.

    Returns:
        Attributions shaped like the activation ``[N, h, w, c]`` (and the delta ``[N]``).

    Raises:
        TypeError: for a bare function.
        ValueError: for an unknown layer (naming close valid paths) or one called twice.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.layer_deeplift(model, x, 0, layer="features.6").shape
        (2, 4, 4, 32)
    """
    check_choice("flavour", flavour, FLAVOURS, method="layer_deeplift")
    model, inputs, target = prepare(model, inputs, target, method="layer_deeplift")
    model = program.structured(model, "layer_deeplift")
    program.require_units(model, inputs, deeplift_rules(eps, flavour), method="layer_deeplift", linear_ok=True)
    check_layer(model, inputs, layer, method="layer_deeplift")
    baselines = broadcast_baselines(baselines, inputs, method="layer_deeplift")
    return run(
        _layer_deeplift_core,
        model,
        inputs,
        target,
        arrays={"baselines": baselines},
        layer=layer,
        attribute_to_layer_input=attribute_to_layer_input,
        eps=float(eps),
        flavour=flavour,
        multiply_by_inputs=multiply_by_inputs,
        with_delta=return_convergence_delta,
    )
