"""TorchRay's backprop saliency family: gradient, deconvnet, guided backprop, excitation backprop
(plain and contrastive) and linear approximation, with its probe, resize and smoothing options.

Common scheme (torchray/attribution/common.py, ``saliency``): back-propagate a one-hot
gradient at the target under a set of modified backward rules, read the
pseudo-gradient at ``saliency_layer`` (the input when ``None``, else the layer's
output), reduce it over channels, optionally resize it (``F.interpolate``,
``align_corners=False``) and smooth it (a Gaussian with ``sigma = smooth * max(h, w)``,
``ceil(4 sigma)`` taps, replicate padding: torchray/utils.py ``imsmooth``). Maps are
``[N, h, w, 1]``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import program
from jaxplain.attribution._common import check_choice, prepare, run
from jaxplain.attribution._layers import check_layer, zeros_like_activation
from jaxplain.image import interpolate
from jaxplain.model import require_structure
from jaxplain.program.blocks import LINEAR_KINDS
from jaxplain.rules import excitation
from jaxplain.rules.guided import DECONVOLUTION, GUIDED_BACKPROP_TORCHRAY
from jaxplain.typing import Array, Target

RESIZE_MODES = ("bilinear", "nearest")
Resize = bool | tuple[int, int]


def gaussian_smooth(maps: Array, sigma: float) -> Array:
    """TorchRay's ``imsmooth`` on NHWC maps: separable Gaussian, ``ceil(4 sigma)`` taps each side, replicate padding.

    Args:
        maps: ``[N, H, W, C]``.
        sigma: the Gaussian's standard deviation in pixels.

    Returns:
        The smoothed maps, ``[N, H, W, C]``.

    Example:
        >>> import jax.numpy as jnp
        >>> smoothed = gaussian_smooth(jnp.zeros((1, 9, 9, 1)).at[0, 4, 4, 0].set(1.0), 1.0)
        >>> round(float(smoothed.sum()), 4), bool(smoothed[0, 4, 4, 0] < 1)
        (1.0, True)
    """
    width = math.ceil(4 * sigma)
    taps = np.arange(-width, width + 1, dtype=np.float32) / (np.float32(math.sqrt(2)) * np.float32(sigma)
                                                              + np.float32(1.1920929e-07))
    kernel = np.exp(-taps * taps)
    kernel = jnp.asarray(kernel / kernel.sum(), maps.dtype)
    padded = jnp.pad(maps, ((0, 0), (width, width), (width, width), (0, 0)), mode="edge")
    rows = jax.vmap(lambda k, shift: k * jax.lax.dynamic_slice_in_dim(padded, shift, maps.shape[1], axis=1),
                    in_axes=(0, 0))(kernel, jnp.arange(2 * width + 1)).sum(0)
    return jax.vmap(lambda k, shift: k * jax.lax.dynamic_slice_in_dim(rows, shift, maps.shape[2], axis=2),
                    in_axes=(0, 0))(kernel, jnp.arange(2 * width + 1)).sum(0)


def _finish(maps: Array, inputs: Array, resize: Resize, resize_mode: str, smooth: float) -> Array:
    if resize is not False:
        size = inputs.shape[1:3] if resize is True else (resize[1], resize[0])
        maps = interpolate(maps, tuple(size), mode=resize_mode, align_corners=False)
    if smooth > 0:
        maps = gaussian_smooth(maps, smooth * max(maps.shape[1:3]))
    return maps


def _probe_gradient(model: Any, inputs: Array, target: Array, layer: str | None, rules: Any, *,
                    blocks: bool | None = None, contrast: tuple[str, Array] | None = None) -> tuple[Array, Array]:
    """``(pseudo-gradient, activation)`` at ``layer`` (the input when None) for a one-hot seed at the target.

    ``rules`` act on the graph's units, or on its relevance blocks with ``blocks`` set
    (:func:`jaxplain.program.forward`); ``contrast = (layer, value)`` subtracts ``value`` from the
    cotangent reaching that layer's output (TorchRay's contrast probe).
    """
    rules = rules or program.no_rules
    if layer is None and contrast is None:
        outputs, pullback = jax.vjp(program.forward(model, rules, blocks=blocks), inputs)
        seed = jax.nn.one_hot(target, outputs.shape[-1], dtype=outputs.dtype)
        return pullback(seed)[0], inputs
    names = (layer,) if contrast is None else (layer, contrast[0])
    fixed = () if contrast is None else (lambda value: _minus_cotangent(value, contrast[1]),)
    tapped = program.tapped(model, names, rules=rules, blocks=blocks)

    def probe(delta):
        outputs, activations = tapped(inputs, (delta,) + fixed)
        return outputs, activations[0]

    (outputs, activation), pullback = jax.vjp(probe, zeros_like_activation(model, layer, inputs))
    seed = jax.nn.one_hot(target, outputs.shape[-1], dtype=outputs.dtype)
    return pullback((seed, jnp.zeros_like(activation)))[0], activation


REDUCTIONS: dict[str, Callable[[Array, Array], Array]] = {
    "max_abs": lambda gradient, activation: jnp.max(jnp.abs(gradient), axis=-1, keepdims=True),
    "sum": lambda gradient, activation: jnp.sum(gradient, axis=-1, keepdims=True),
    "linear_approx": lambda gradient, activation: jnp.sum(gradient * activation, axis=-1, keepdims=True),
}


def _saliency_core(model, inputs, target, key, arrays, *, rules, blocks, layer, reduction, resize, resize_mode, smooth):
    gradient, activation = _probe_gradient(model, inputs, target, layer, rules, blocks=blocks)
    return _finish(REDUCTIONS[reduction](gradient, activation), inputs, resize, resize_mode, smooth)


def _check_options(resize: Any, resize_mode: str, smooth: float, method: str) -> Resize:
    check_choice("resize_mode", resize_mode, RESIZE_MODES, method=method)
    if smooth < 0:
        raise ValueError(f"{method}: smooth must be >= 0, got {smooth}")
    if isinstance(resize, bool):
        return resize
    if isinstance(resize, (tuple, list)) and len(resize) == 2 and all(isinstance(v, int) and v > 0 for v in resize):
        return (int(resize[0]), int(resize[1]))
    raise ValueError(f"{method}: resize must be True, False or a (width, height) pair, got {resize!r}")


def _prepared(model: Any, inputs: Array, target: Target, layers: tuple[str | None, ...], method: str):
    model, inputs, target = prepare(model, inputs, target, method=method)
    model = require_structure(model, method)
    for layer in layers:
        if layer is not None:
            check_layer(model, inputs, layer, method=method)
    return model, inputs, target


def _saliency(method: str, rules: Any, reduction: str, model: Any, inputs: Array, target: Target,
              saliency_layer: str | None, resize: Any, resize_mode: str, smooth: float,
              blocks: bool | None = None) -> Array:
    resize = _check_options(resize, resize_mode, smooth, method)
    model, inputs, target = _prepared(model, inputs, target, (saliency_layer,), method)
    axis = getattr(model, "channel_axis" if saliency_layer is None else "layer_channel_axis", -1)
    if axis != -1:
        raise ValueError(f"{method} reduces over the last (channel) axis of NHWC maps; this model keeps the channels "
                         f"of its {'inputs' if saliency_layer is None else 'layers'} on axis {axis}")
    if blocks is not None:
        excitation.check_blocks(program.blocks_of(model, inputs, merge=blocks), method=method)
    elif rules is not None:
        program.require_units(model, inputs, rules, method=method)
    return run(_saliency_core, model, inputs, target, rules=rules, blocks=blocks, layer=saliency_layer,
               reduction=reduction, resize=resize, resize_mode=resize_mode, smooth=float(smooth))


def torchray_gradient(model: Any, inputs: Array, target: Target, *, saliency_layer: str | None = None,
                      resize: Resize = False, resize_mode: str = "bilinear", smooth: float = 0.0) -> Array:
    """TorchRay's ``gradient``: ``max_c |dF_t/dA|`` at ``saliency_layer`` (Simonyan et al. 2014).

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        saliency_layer: the layer's path (None: the input).
        resize: False (the layer's size), True (the input's size) or a ``(width, height)`` pair.
        resize_mode: ``"bilinear"`` or ``"nearest"`` (TorchRay's ``resize_mode``).
        smooth: Gaussian smoothing, its sigma a fraction of the map's larger side (0: none).

    Returns:
        ``[N, h, w, 1]`` maps (the input's size with ``resize``).

    Raises:
        ValueError: an unknown layer, ``resize_mode`` or resize, a negative ``smooth``, a bad target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.torchray_gradient(model, x, 0).shape
        (2, 16, 16, 1)
        >>> jx.torchray_gradient(model, x, 0, saliency_layer="features.6").shape
        (2, 4, 4, 1)
    """
    return _saliency("torchray_gradient", None, "max_abs", model, inputs, target, saliency_layer, resize,
                     resize_mode, smooth)


def torchray_deconvnet(model: Any, inputs: Array, target: Target, *, saliency_layer: str | None = None,
                       resize: Resize = False, resize_mode: str = "bilinear", smooth: float = 0.0) -> Array:
    """TorchRay's ``deconvnet`` (Zeiler & Fergus 2014): ReLUs pass back ``relu(g)``; ``max_c |g|``.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        saliency_layer: the layer's path (None: the input).
        resize: False (the layer's size), True (the input's size) or a ``(width, height)`` pair.
        resize_mode: ``"bilinear"`` or ``"nearest"`` (TorchRay's ``resize_mode``).
        smooth: Gaussian smoothing, its sigma a fraction of the map's larger side (0: none).

    Returns:
        ``[N, h, w, 1]`` maps (the input's size with ``resize``).

    Raises:
        ValueError: an unknown layer, ``resize_mode`` or resize, a negative ``smooth``, a bad target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.torchray_deconvnet(model, x, 0, saliency_layer="features.6", resize=True).shape
        (2, 16, 16, 1)
    """
    return _saliency("torchray_deconvnet", DECONVOLUTION, "max_abs", model, inputs, target, saliency_layer, resize,
                     resize_mode, smooth)


def torchray_guided_backprop(model: Any, inputs: Array, target: Target, *, saliency_layer: str | None = None,
                             resize: Resize = False, resize_mode: str = "bilinear", smooth: float = 0.0) -> Array:
    """TorchRay's ``guided_backprop`` (Springenberg et al. 2015): ``relu(g) [x >= 0]`` at ReLUs; ``max_c |g|``.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        saliency_layer: the layer's path (None: the input).
        resize: False (the layer's size), True (the input's size) or a ``(width, height)`` pair.
        resize_mode: ``"bilinear"`` or ``"nearest"`` (TorchRay's ``resize_mode``).
        smooth: Gaussian smoothing, its sigma a fraction of the map's larger side (0: none).

    Returns:
        ``[N, h, w, 1]`` maps (the input's size with ``resize``).

    Raises:
        ValueError: an unknown layer, ``resize_mode`` or resize, a negative ``smooth``, a bad target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.torchray_guided_backprop(model, x, 0, smooth=0.05).shape
        (2, 16, 16, 1)
    """
    return _saliency("torchray_guided_backprop", GUIDED_BACKPROP_TORCHRAY, "max_abs", model, inputs, target,
                     saliency_layer, resize, resize_mode, smooth)


def linear_approx(model: Any, inputs: Array, target: Target, *, saliency_layer: str, resize: Resize = False,
                  resize_mode: str = "bilinear", smooth: float = 0.0) -> Array:
    """TorchRay's ``linear_approx``: ``sum_c A * dF_t/dA`` at ``saliency_layer`` (torchray/attribution/linear_approx.py).

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        saliency_layer: the layer's path.
        resize: False (the layer's size), True (the input's size) or a ``(width, height)`` pair.
        resize_mode: ``"bilinear"`` or ``"nearest"`` (TorchRay's ``resize_mode``).
        smooth: Gaussian smoothing, its sigma a fraction of the map's larger side (0: none).

    Returns:
        ``[N, h, w, 1]`` maps (the input's size with ``resize``).

    Raises:
        ValueError: an unknown layer, ``resize_mode`` or resize, a negative ``smooth``, a bad target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.linear_approx(model, x, 0, saliency_layer="features.6").shape
        (2, 4, 4, 1)
    """
    return _saliency("linear_approx", None, "linear_approx", model, inputs, target, saliency_layer, resize,
                     resize_mode, smooth)


def excitation_backprop(model: Any, inputs: Array, target: Target, *, saliency_layer: str | None = None,
                        resize: Resize = False, resize_mode: str = "bilinear", smooth: float = 0.0,
                        split_residuals: bool = True) -> Array:
    """Excitation backprop (Zhang et al. 2016), TorchRay's ``excitation_backprop``: ``sum_c`` of the
    excitation at ``saliency_layer`` (a plain channel sum, as TorchRay's code; its docstring's clamp is not applied).

    ``split_residuals=True`` splits residual sums in proportion (TorchRay after ``update_resnet``);
    ``False`` gives them their gradient (TorchRay on an unmodified torchvision ResNet).

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        saliency_layer: the layer's path (None: the input).
        resize: False (the layer's size), True (the input's size) or a ``(width, height)`` pair.
        resize_mode: ``"bilinear"`` or ``"nearest"`` (TorchRay's ``resize_mode``).
        smooth: Gaussian smoothing, its sigma a fraction of the map's larger side (0: none).
        split_residuals: split residual sums in proportion (see above).

    Returns:
        ``[N, h, w, 1]`` maps (the input's size with ``resize``).

    Raises:
        ValueError: an unknown layer, ``resize_mode`` or resize, a negative ``smooth``, a bad target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.excitation_backprop(model, x, 0, saliency_layer="features.6", resize=True).shape
        (2, 16, 16, 1)
    """
    return _saliency("excitation_backprop", excitation.ExcitationRules(split_residuals), "sum", model, inputs, target,
                     saliency_layer, resize, resize_mode, smooth, blocks=False)


def _minus_cotangent(value: Array, contrast: Array) -> Array:
    """``value`` whose cotangent has ``contrast`` subtracted (TorchRay's contrast probe)."""

    @jax.custom_vjp
    def identity(value, contrast):
        return value

    identity.defvjp(lambda v, c: (v, c), lambda c, g: (g - c, jnp.zeros_like(c)))
    return identity(value, contrast)


def _contrastive_core(model, inputs, target, key, arrays, *, saliency_layer, contrast_layer, classifier_layer,
                      split_residuals, resize, resize_mode):
    flipped = excitation.ExcitationRules(split_residuals, negated=classifier_layer)
    contrast, _ = _probe_gradient(model, inputs, target, contrast_layer, flipped, blocks=False)
    gradient, _ = _probe_gradient(model, inputs, target, saliency_layer, excitation.ExcitationRules(split_residuals),
                                  blocks=False, contrast=(contrast_layer, contrast))
    maps = jnp.maximum(jnp.sum(gradient, axis=-1, keepdims=True), 0)
    return _finish(maps, inputs, resize, resize_mode, 0.0)


def contrastive_excitation_backprop(model: Any, inputs: Array, target: Target, *, saliency_layer: str,
                                    contrast_layer: str, classifier_layer: str | None = None,
                                    resize: Resize = False, resize_mode: str = "bilinear",
                                    split_residuals: bool = True) -> Array:
    """Contrastive excitation backprop (Zhang et al. 2016), TorchRay's ``contrastive_excitation_backprop``.

    Pass 1 back-propagates the excitation with the classifier's weights negated and
    records it at the output of ``contrast_layer``; pass 2 back-propagates with the
    true weights, subtracts that contrast where it meets ``contrast_layer``'s output,
    and returns ``max(sum_c, 0)`` at ``saliency_layer``. ``classifier_layer`` defaults
    to the last linear layer (convolution or dense) of the forward pass.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        saliency_layer: the layer whose map is returned.
        contrast_layer: the layer where the contrast is subtracted (above ``saliency_layer``).
        classifier_layer: the layer whose weights are negated (None: the last linear layer).
        resize: False (the layer's size), True (the input's size) or a ``(width, height)`` pair.
        resize_mode: ``"bilinear"`` or ``"nearest"`` (TorchRay's ``resize_mode``).
        split_residuals: split residual sums in proportion, as :func:`excitation_backprop`.

    Returns:
        ``[N, h, w, 1]`` non-negative maps (the input's size with ``resize``).

    Raises:
        ValueError: unknown layers, ``resize_mode`` or resize, a bad target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.contrastive_excitation_backprop(model, x, 0, saliency_layer="features.6",
        ...                                    contrast_layer="features.13").shape
        (2, 4, 4, 1)
    """
    method = "contrastive_excitation_backprop"
    resize = _check_options(resize, resize_mode, 0.0, method)
    model, inputs, target = _prepared(model, inputs, target, (saliency_layer, contrast_layer, classifier_layer), method)
    axis = getattr(model, "layer_channel_axis", -1)
    if axis != -1:
        raise ValueError(f"{method} reduces over the last (channel) axis of NHWC maps; this model keeps the "
                         f"channels of its layers on axis {axis}")
    view = program.blocks_of(model, inputs, merge=False)
    excitation.check_blocks(view, method=method)
    linear = [block.name for block in view.blocks if block.kind in LINEAR_KINDS]
    if classifier_layer is None:
        classifier_layer = linear[-1]
    elif classifier_layer not in linear:
        raise ValueError(f"{method}: classifier_layer {classifier_layer!r} is not a convolution or dense layer; "
                         f"those are {', '.join(map(repr, linear[-3:]))} (the last three)")
    return run(_contrastive_core, model, inputs, target, saliency_layer=saliency_layer, contrast_layer=contrast_layer,
               classifier_layer=classifier_layer, split_residuals=split_residuals, resize=resize,
               resize_mode=resize_mode)
