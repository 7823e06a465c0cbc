"""Layer methods: activations, gradients and path integrals at a named layer.

A layer is named by its path in the Flax module, as torchvision names it
(``"layer4"``, ``"layer3.1.conv2"``, ``"features.28"``). Layer attributions have the
layer's shape (NHWC for convolutional layers); with ``attribute_to_layer_input`` they
refer to the layer's input (a tuple when the module takes several, e.g. ``add``).
Methods whose result is per-element (activation, gradient x activation, internal
influence, conductance, layer GradientSHAP) take several layers at once,
``layer=("layer3", "layer4")``, and return a tuple in that order from one pass.
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
    require_key,
    run,
    sum_over,
)
from jaxplain.attribution._layers import (
    Layers,
    check_layer,
    layer_activation_of,
    layer_gradient_and_activation,
    tapped_forward,
)
from jaxplain.attribution.path import PATH_METHODS, gradient_shap_draw, path_points
from jaxplain.model import require_structure
from jaxplain.program.interpret import no_node_rules
from jaxplain.cpu.fast_conv import node_rules
from jaxplain.rules.guided import GUIDED_BACKPROP
from jaxplain.typing import Array, Target

tree_map = jax.tree_util.tree_map


def _loop_rules(batch_size: int | None, count: int) -> Any:
    """:mod:`~jaxplain.cpu.fast_conv`'s node rules when ``count`` points are chunked into a loop (same values,
    fast backward convolutions on XLA CPU; see ``loop_forward``), else none."""
    chunked = batch_size is not None and batch_size < count
    return node_rules if chunked else no_node_rules


def prepare_layer(model: Any, inputs: Array, target: Target, layer: Layers, *, method: str, several: bool = True):
    """``prepare`` plus the layer checks; returns the layer as a path or a tuple of paths."""
    if not several and not isinstance(layer, str):
        raise TypeError(f"{method}: layer must be one dotted path such as 'layer4', got {layer!r}")
    model, inputs, target = prepare(model, inputs, target, method=method)
    model = require_structure(model, method)
    check_layer(model, inputs, layer, method=method)
    return model, inputs, target, (layer if isinstance(layer, str) else tuple(layer))


def _layer_activation_core(model, inputs, target, key, arrays, *, layer, to_input):
    return layer_activation_of(model, layer, inputs, to_input)


def layer_activation(model: Any, inputs: Array, *, layer: Layers, attribute_to_layer_input: bool = False) -> Any:
    """The activation of ``layer`` (Captum's ``LayerActivation``); a tuple for a tuple of layers.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        layer: a layer's path (``"features.6"``), or a tuple of paths for one pass over several.
        attribute_to_layer_input: refer to the layer's input (a pair for an ``add``) instead of its output.

    Returns:
        An array of the layer's shape (NHWC), or a tuple for a tuple of layers.

    Raises:
        ValueError: an unknown layer (the valid paths near it are named), a bad target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> [a.shape for a in jx.layer_activation(model, x, layer=("features.2", "features.6"))]
        [(2, 8, 8, 16), (2, 4, 4, 32)]
    """
    model, inputs, target, layer = prepare_layer(model, inputs, 0, layer, method="layer_activation")
    return run(_layer_activation_core, model, inputs, target, layer=layer, to_input=attribute_to_layer_input)


def _layer_gradient_x_activation_core(model, inputs, target, key, arrays, *, layer, to_input, multiply):
    gradient, activation = layer_gradient_and_activation(model, layer, inputs, target, attribute_to_layer_input=to_input)
    return tree_map(jnp.multiply, gradient, activation) if multiply else gradient


def layer_gradient_x_activation(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    layer: Layers,
    attribute_to_layer_input: bool = False,
    multiply_by_inputs: bool = True,
) -> Any:
    """``dF_t/dA * A`` at ``layer`` (Captum's ``LayerGradientXActivation``).

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        layer: a layer's path (``"features.6"``), or a tuple of paths for one pass over several.
        attribute_to_layer_input: refer to the layer's input (a pair for an ``add``) instead of its output.
        multiply_by_inputs: multiply the gradient by the activation (else the layer gradient).

    Returns:
        An array of the layer's shape (NHWC), or a tuple for a tuple of layers.

    Raises:
        ValueError: an unknown layer (the valid paths near it are named), a bad target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.layer_gradient_x_activation(model, x, 0, layer="features.6").shape
        (2, 4, 4, 32)
    """
    model, inputs, target, layer = prepare_layer(model, inputs, target, layer, method="layer_gradient_x_activation")
    return run(
        _layer_gradient_x_activation_core,
        model,
        inputs,
        target,
        layer=layer,
        to_input=attribute_to_layer_input,
        multiply=multiply_by_inputs,
    )


def _path(inputs, baselines, alpha):
    return baselines + alpha * (inputs - baselines)


def _internal_influence_core(model, inputs, target, key, arrays, *, layer, to_input, n_steps, method, batch_size):
    baselines = arrays["baselines"]
    alphas, steps = path_points(method, n_steps)
    rules = _loop_rules(batch_size, n_steps)

    def step(alpha, size):
        gradient, _ = layer_gradient_and_activation(
            model, layer, _path(inputs, baselines, alpha), target, attribute_to_layer_input=to_input, node_rules=rules
        )
        return tree_map(lambda g: size * g, gradient)

    return sum_over(lambda p: step(*p), (jnp.asarray(alphas), jnp.asarray(steps)), batch_size)


def _check_path_options(n_steps: int, method: str, batch_size: int | None, *, name: str) -> None:
    check_choice("method", method, PATH_METHODS, method=name)
    check_batch_size(batch_size, method=name)
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"{name}: n_steps must be a positive int, got {n_steps!r}")


def internal_influence(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    layer: Layers,
    baselines: Any = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    batch_size: int | None = None,
    attribute_to_layer_input: bool = False,
) -> Any:
    """Internal influence (Leino et al. 2018; Captum's ``InternalInfluence``).

    ``sum_k w_k dF_t/dA (x' + a_k (x - x'))``: the layer gradient integrated along the
    input path (captum/attr/_core/layer/internal_influence.py).

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        layer: a layer's path (``"features.6"``), or a tuple of paths for one pass over several.
        baselines: the path's start (None: zeros), as in :func:`jaxplain.integrated_gradients`.
        n_steps: quadrature points.
        method: the quadrature, as in :func:`jaxplain.integrated_gradients`.
        batch_size: points evaluated at once (None: all).
        attribute_to_layer_input: refer to the layer's input (a pair for an ``add``) instead of its output.

    Returns:
        An array of the layer's shape (NHWC), or a tuple for a tuple of layers.

    Raises:
        ValueError: an unknown layer (the valid paths near it are named), a bad target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.internal_influence(model, x, 0, layer="features.6", n_steps=4).shape
        (2, 4, 4, 32)
    """
    _check_path_options(n_steps, method, batch_size, name="internal_influence")
    model, inputs, target, layer = prepare_layer(model, inputs, target, layer, method="internal_influence")
    return run(
        _internal_influence_core,
        model,
        inputs,
        target,
        arrays={"baselines": broadcast_baselines(baselines, inputs, method="internal_influence")},
        layer=layer,
        to_input=attribute_to_layer_input,
        n_steps=n_steps,
        method=method,
        batch_size=batch_size,
    )


def _layer_conductance_core(model, inputs, target, key, arrays, *, layer, to_input, n_steps, method, batch_size):
    baselines = arrays["baselines"]
    alphas, _ = path_points(method, n_steps + 1)
    rules = _loop_rules(batch_size, n_steps + 1)

    def point(alpha):
        return layer_gradient_and_activation(
            model, layer, _path(inputs, baselines, alpha), target, attribute_to_layer_input=to_input, node_rules=rules
        )

    gradients, activations = jax.lax.map(point, jnp.asarray(alphas), batch_size=batch_size)
    return tree_map(lambda g, a: jnp.sum(g[:-1] * (a[1:] - a[:-1]), axis=0), gradients, activations)


def layer_conductance(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    layer: Layers,
    baselines: Any = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    batch_size: int | None = None,
    attribute_to_layer_input: bool = False,
) -> Any:
    """Layer conductance (Dhamdhere et al. 2018; Captum's ``LayerConductance``).

    With ``n_steps + 1`` path points ``a_0 < ... < a_n``:
    ``sum_{k<n} (A(p_{k+1}) - A(p_k)) * dF_t/dA (p_k)``
    (captum/attr/_core/layer/layer_conductance.py). ``batch_size`` bounds how many
    points are evaluated at once; only layer-sized results are kept per point.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        layer: a layer's path (``"features.6"``), or a tuple of paths for one pass over several.
        baselines: the path's start (None: zeros), as in :func:`jaxplain.integrated_gradients`.
        n_steps: path steps.
        method: the quadrature, as in :func:`jaxplain.integrated_gradients`.
        batch_size: points evaluated at once (None: all).
        attribute_to_layer_input: refer to the layer's input (a pair for an ``add``) instead of its output.

    Returns:
        An array of the layer's shape (NHWC), or a tuple for a tuple of layers.

    Raises:
        ValueError: an unknown layer (the valid paths near it are named), a bad target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.layer_conductance(model, x, 0, layer="features.6", n_steps=4).shape
        (2, 4, 4, 32)
    """
    _check_path_options(n_steps, method, batch_size, name="layer_conductance")
    if method != "gausslegendre" and n_steps + 1 < 2:
        raise ValueError("layer_conductance: Riemann methods need n_steps >= 1")
    model, inputs, target, layer = prepare_layer(model, inputs, target, layer, method="layer_conductance")
    return run(
        _layer_conductance_core,
        model,
        inputs,
        target,
        arrays={"baselines": broadcast_baselines(baselines, inputs, method="layer_conductance")},
        layer=layer,
        to_input=attribute_to_layer_input,
        n_steps=n_steps,
        method=method,
        batch_size=batch_size,
    )


def _layer_gradient_shap_core(model, inputs, target, key, arrays, *, layer, to_input, n_samples, stdevs, batch_size, multiply):
    baselines = arrays["baselines"]
    rules = _loop_rules(batch_size, n_samples)

    def sample(sample_key):
        noisy, chosen, alpha = gradient_shap_draw(sample_key, inputs, baselines, stdevs)
        gradient, _ = layer_gradient_and_activation(
            model, layer, alpha * noisy + (1.0 - alpha) * chosen, target, attribute_to_layer_input=to_input,
            node_rules=rules,
        )
        if not multiply:
            return gradient
        difference = tree_map(
            jnp.subtract,
            layer_activation_of(model, layer, noisy, to_input),
            layer_activation_of(model, layer, chosen, to_input),
        )
        return tree_map(jnp.multiply, difference, gradient)

    total = jax.lax.map(sample, jax.random.split(key, n_samples), batch_size=batch_size)
    return tree_map(lambda s: jnp.mean(s, axis=0), total)


def layer_gradient_shap(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    layer: Layers,
    baselines: Any,
    key: Array,
    n_samples: int = 5,
    stdevs: float = 0.0,
    batch_size: int | None = None,
    attribute_to_layer_input: bool = False,
    multiply_by_inputs: bool = True,
) -> Any:
    """Layer GradientSHAP (Captum's ``LayerGradientShap``).

    Per draw: ``(A(x~) - A(b)) * dF_t/dA (a x~ + (1 - a) b)`` with the draws of
    :func:`jaxplain.gradient_shap` (same keys, same baselines, noise and alphas);
    the mean over ``n_samples`` draws (captum/attr/_core/layer/layer_gradient_shap.py).

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        layer: a layer's path (``"features.6"``), or a tuple of paths for one pass over several.
        baselines: a distribution of baselines ``[B, ...]``.
        key: PRNG key of the draws (required).
        n_samples: draws per example.
        stdevs: std of the Gaussian noise added to the inputs.
        batch_size: draws evaluated at once (None: all).
        attribute_to_layer_input: refer to the layer's input (a pair for an ``add``) instead of its output.
        multiply_by_inputs: multiply by ``A(x~) - A(b)`` (Captum's default).

    Returns:
        An array of the layer's shape (NHWC), or a tuple for a tuple of layers.

    Raises:
        ValueError: an unknown layer (the valid paths near it are named), a bad target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.layer_gradient_shap(model, x, 0, layer="features.6", baselines=jax.numpy.zeros((2, 16, 16, 3)),
        ...                        key=jax.random.PRNGKey(0), n_samples=2).shape
        (2, 4, 4, 32)
    """
    check_batch_size(batch_size, method="layer_gradient_shap")
    model, inputs, target, layer = prepare_layer(model, inputs, target, layer, method="layer_gradient_shap")
    key = require_key(key, method="layer_gradient_shap")
    baselines = jnp.asarray(baselines, inputs.dtype)
    if baselines.ndim != inputs.ndim or baselines.shape[1:] != inputs.shape[1:]:
        raise ValueError(f"layer_gradient_shap: baselines must be a distribution [B, *inputs.shape[1:]], got {baselines.shape}")
    return run(
        _layer_gradient_shap_core,
        model,
        inputs,
        target,
        key=key,
        arrays={"baselines": baselines},
        layer=layer,
        to_input=attribute_to_layer_input,
        n_samples=n_samples,
        stdevs=float(stdevs),
        batch_size=batch_size,
        multiply=multiply_by_inputs,
    )


def _layer_activation_guided_backprop_core(model, inputs, target, key, arrays, *, layer):
    forward = tapped_forward(model, layer, rules=GUIDED_BACKPROP)

    def objective(x):
        _, activation = forward(x, 0.0)
        channel = jnp.take_along_axis(activation, target.reshape((-1,) + (1,) * (activation.ndim - 1)), axis=-1)
        return jnp.sum(jnp.abs(channel))

    return jax.grad(objective)(inputs)


def layer_activation_guided_backprop(model: Any, inputs: Array, target: Target, *, layer: str) -> Array:
    """Guided backprop of ``sum |A[..., target]|``, one channel of ``layer`` per example.

    pytorch-cnn-visualizations' ``layer_activation_with_guided_backprop.py``: the
    "target" is a channel (filter) index of ``layer``, not a class.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: a channel of ``layer``: an int for every input or ``[N]`` ints.
        layer: the layer's path.

    Returns:
        The attribution, shaped like ``inputs``.

    Raises:
        ValueError: an unknown layer, a channel out of range, a model whose layers keep
            channels elsewhere than last.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.layer_activation_guided_backprop(model, x, 5, layer="features.6").shape
        (2, 16, 16, 3)
    """
    model, inputs, _, layer = prepare_layer(model, inputs, 0, layer, method="layer_activation_guided_backprop", several=False)
    if getattr(model, "layer_channel_axis", -1) != -1:
        raise ValueError("layer_activation_guided_backprop picks a channel on the last axis of the layer; this model "
                         f"keeps its layers' channels on axis {model.layer_channel_axis}")
    channels = jax.eval_shape(lambda x: layer_activation_of(model, layer, x), inputs).shape[-1]
    target = _channel_target(target, inputs.shape[0], channels)
    return run(_layer_activation_guided_backprop_core, model, inputs, target, layer=layer)


def _channel_target(target: Target, batch: int, channels: int) -> Array:
    target = jnp.broadcast_to(jnp.asarray(target), (batch,))
    if not jnp.issubdtype(target.dtype, jnp.integer):
        raise TypeError("layer_activation_guided_backprop: target must be an int channel index or an int array [N]")
    if int(target.min()) < 0 or int(target.max()) >= channels:
        raise ValueError(f"layer_activation_guided_backprop: channel {target.tolist()} out of range for {channels} channels")
    return target.astype(jnp.int32)

