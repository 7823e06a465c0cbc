"""Plain and modified gradients: saliency, input x gradient, guided backprop, deconvolution."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxplain.attribution._common import check_choice, prepare, run, target_gradient
from jaxplain import program
from jaxplain.rules.guided import DECONVOLUTION, GUIDED_BACKPROP, GUIDED_BACKPROP_TORCHRAY
from jaxplain.typing import Array, Target


def gradient_to_saliency(gradient: Array) -> Array:
    """``max_c |g|`` keeping a channel axis of 1 (TorchRay's ``gradient_to_saliency``).

    Args:
        gradient: ``[..., C]``.

    Returns:
        ``[..., 1]``.

    Example:
        >>> import jax.numpy as jnp
        >>> gradient_to_saliency(jnp.array([[1.0, -3.0, 2.0]])).tolist()
        [[3.0]]
    """
    return jnp.max(jnp.abs(gradient), axis=-1, keepdims=True)


def _saliency_core(model, inputs, target, key, arrays, *, abs: bool, take_max: bool):
    gradient = target_gradient(model, inputs, target)
    if take_max:
        return gradient_to_saliency(gradient)
    return jnp.abs(gradient) if abs else gradient


def saliency(model: Any, inputs: Array, target: Target, *, abs: bool = True, take_max: bool = False) -> Array:
    """Gradient of the target output with respect to the input (Simonyan et al. 2014).

    Captum's ``Saliency`` (captum/attr/_core/saliency.py): ``|dF_t/dx|`` by default.

    Args:
        model: a ``jx.Model``, a bound Flax module or any JAX function ``[N, ...] -> [N, K]``.
        inputs: ``[N, H, W, C]`` (any ``[N, ...]`` for a plain function).
        target: an int, an int array ``[N]``, or None for the predicted class.
        abs: return ``|g|`` (Captum's default) rather than the signed gradient.
        take_max: return ``max_c |g|`` with one channel (the paper's map; xdeep, TorchRay).

    Returns:
        The attribution, shaped like ``inputs`` (one channel with ``take_max``).

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.saliency(model, x, 0).shape, jx.saliency(model, x, 0, take_max=True).shape
        ((2, 16, 16, 3), (2, 16, 16, 1))
    """
    model, inputs, target = prepare(model, inputs, target, method="saliency")
    return run(_saliency_core, model, inputs, target, abs=abs, take_max=take_max)


def _input_x_gradient_core(model, inputs, target, key, arrays):
    return inputs * target_gradient(model, inputs, target)


def input_x_gradient(model: Any, inputs: Array, target: Target) -> Array:
    """``x * dF_t/dx`` (Shrikumar et al. 2016; Captum's ``InputXGradient``).

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).

    Returns:
        The attribution, shaped like ``inputs``.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.input_x_gradient(model, x, 0).shape
        (2, 16, 16, 3)
    """
    model, inputs, target = prepare(model, inputs, target, method="input_x_gradient")
    return run(_input_x_gradient_core, model, inputs, target)


_GUIDED_FLAVOURS = {"captum": GUIDED_BACKPROP, "torchray": GUIDED_BACKPROP_TORCHRAY}


def _modified_gradient_core(model, inputs, target, key, arrays, *, rules, to_saliency: bool):
    gradient = target_gradient(program.forward(model, rules), inputs, target)
    return gradient_to_saliency(gradient) if to_saliency else gradient


def guided_backprop(
    model: Any, inputs: Array, target: Target, *, flavour: str = "captum", gradient_to_saliency: bool = False
) -> Array:
    """Guided backpropagation (Springenberg et al. 2015).

    Every ReLU of the model's program (``jax.nn.relu``, ``nn.relu``, ``max(x, 0)``, a
    ReLU module) passes back ``relu(g) * [x > 0]``; everything else keeps its gradient.
    Captum's ``GuidedBackprop`` by default (signed, per channel); TorchRay's flavour also
    lets ``x == 0`` pass, and ``gradient_to_saliency=True`` returns its ``max_c |g|`` map.
    ReLU6 (MobileNetV2) is left alone, as Captum hooks ``nn.ReLU`` only.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        flavour: ``"captum"`` or ``"torchray"``.
        gradient_to_saliency: return TorchRay's ``max_c |g|`` map, one channel.

    Returns:
        The attribution, shaped like ``inputs`` (one channel with ``gradient_to_saliency``).

    Raises:
        TypeError: for a bare function closing over its weights (use ``jx.Model.from_function``).
        ValueError: when the model's program has no ReLU (the answer would be the gradient).

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.guided_backprop(model, x, 0).shape
        (2, 16, 16, 3)
    """
    check_choice("flavour", flavour, tuple(_GUIDED_FLAVOURS), method="guided_backprop")
    model, inputs, target = prepare(model, inputs, target, method="guided_backprop")
    model = program.structured(model, "guided_backprop")
    program.require_units(model, inputs, _GUIDED_FLAVOURS[flavour], method="guided_backprop")
    return run(
        _modified_gradient_core,
        model,
        inputs,
        target,
        rules=_GUIDED_FLAVOURS[flavour],
        to_saliency=gradient_to_saliency,
    )


def deconvolution(model: Any, inputs: Array, target: Target, *, gradient_to_saliency: bool = False) -> Array:
    """Deconvnet attribution (Zeiler & Fergus 2014): ReLUs pass back ``relu(g)``.

    Captum's ``Deconvolution`` (signed, per channel); ``gradient_to_saliency=True`` gives
    TorchRay's ``max_c |g|`` map.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        gradient_to_saliency: return TorchRay's ``max_c |g|`` map, one channel.

    Returns:
        The attribution, shaped like ``inputs`` (one channel with ``gradient_to_saliency``).

    Raises:
        TypeError: for a bare function closing over its weights (use ``jx.Model.from_function``).
        ValueError: when the model's program has no ReLU (the answer would be the gradient).

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.deconvolution(model, x, 0, gradient_to_saliency=True).shape
        (2, 16, 16, 1)
    """
    model, inputs, target = prepare(model, inputs, target, method="deconvolution")
    model = program.structured(model, "deconvolution")
    program.require_units(model, inputs, DECONVOLUTION, method="deconvolution")
    return run(
        _modified_gradient_core, model, inputs, target, rules=DECONVOLUTION, to_saliency=gradient_to_saliency
    )


