"""pytorch-grad-cam's CAM family: Grad-CAM++, XGrad-CAM, HiRes-CAM, element-wise Grad-CAM,
Layer-CAM, Eigen-CAM, Eigen-Grad-CAM, Ablation-CAM and FullGrad, batched.

Every method builds channel maps ``M [N, h, w, K]`` at a layer from its activation ``A`` (and
the target's gradient ``G`` there), then reduces them to one map ``[N, h, w, 1]``: the sum over
channels, or with ``eigen_smooth`` the projection on their first principal component. The
formulas are those of grad-cam 1.5.7 (``pytorch_grad_cam/*.py``).

``postprocess=None`` (default) returns that raw layer-resolution map, resized with
``upsample="nearest"|"bilinear"`` as :func:`~jaxplain.attribution.cam.layer_gradcam` does, and a
tuple of maps for a tuple of layers. ``postprocess="pytorch_grad_cam"`` returns the library's
final map ``[N, H, W, 1]`` (``BaseCAM.compute_cam_per_layer`` and ``aggregate_multi_layers``):
per layer ``relu``, per-image min-max scaling ``(m - min) / (max - min + 1e-7)`` and OpenCV's
bilinear ``cv2.resize`` to the input (pixel centres at ``i + 0.5``, edges clamped: the
convention of ``F.interpolate(align_corners=False)``); then the layers' maps are averaged and
scaled again. ``aug_smooth`` averages the maps of the six test-time augmentations of
``BaseCAM`` (horizontal flip x brightness 0.9, 1, 1.1; each map flipped back), computed as one
batch of ``6 N`` images.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxplain.attribution._common import check_batch_size, check_choice, prepare, run, selected_output
from jaxplain.attribution._layers import layer_activation_of, layer_gradient_and_activation, tapped_forward
from jaxplain.attribution.tokens import RESHAPES, layer_map
from jaxplain.attribution.cam import require_channels_last, require_channels_last_inputs
from jaxplain.attribution.layer import prepare_layer
from jaxplain.image import interpolate
from jaxplain.model import require_structure
from jaxplain import program
from jaxplain.typing import Array, Target

POSTPROCESS = (None, "pytorch_grad_cam")
UPSAMPLE_MODES = (None, "nearest", "bilinear")
AUGMENTATION_FACTORS = (0.9, 1.0, 1.1)
"""ttach's ``Multiply`` factors in ``BaseCAM``'s default test-time augmentation (with and without a flip)."""

ABLATION_OFFSET = 1e7
"""Ablation-CAM's ablated value below the minimum when a layer's minimum is not 0 (``AblationLayer``)."""

OBJECTIVENESS_THRESHOLD = 0.01
"""``AblationLayer.objectiveness_mask_from_svd``'s threshold on the scaled |first principal component|."""

Layers = str | tuple[str, ...]


# --------------------------------------------------------------------------------------------
# shared pieces


def min_max_scale(maps: Array, axes: tuple[int, ...] = (1, 2)) -> Array:
    """``(m - min) / (max - min + 1e-7)`` over ``axes`` (pytorch-grad-cam's ``scale_cam_image``)."""
    shifted = maps - jnp.min(maps, axis=axes, keepdims=True)
    return shifted / (1e-7 + jnp.max(shifted, axis=axes, keepdims=True))


def cv2_resize(maps: Array, size: tuple[int, int]) -> Array:
    """NHWC ``maps`` resized to ``size = (H, W)`` as ``cv2.resize(..., INTER_LINEAR)`` resizes float maps.

    OpenCV samples ``(i + 0.5) * in / out - 0.5`` and clamps at the edges, the convention of
    ``F.interpolate(mode="bilinear", align_corners=False)`` (tested against ``cv2.resize``).
    """
    return maps if maps.shape[1:3] == tuple(size) else interpolate(maps, size, "bilinear")


def first_component(maps: Array) -> Array:
    """Projection of every pixel's channel vector on the first principal component: ``[N, h, w, K] -> [N, h, w, 1]``.

    pytorch-grad-cam's ``get_2d_projection``: NaN set to 0, channels centred over the pixels,
    ``centred @ V[0]`` with ``V[0]`` the first right singular vector. Its sign is arbitrary: on CPU
    JAX's SVD is LAPACK's, as NumPy's, and the tests find the same sign; another backend's solver
    may return the opposite one (and the ReLU'd map of its other side).
    """
    count, height, width, channels = maps.shape
    flat = maps.reshape(count, height * width, channels)
    flat = jnp.where(jnp.isnan(flat), 0.0, flat)
    centred = flat - jnp.mean(flat, axis=1, keepdims=True)
    _, _, vt = jnp.linalg.svd(centred, full_matrices=False)
    return jnp.einsum("npk,nk->np", centred, vt[:, 0, :]).reshape(count, height, width, 1)


def _reduce(channel_maps: Array, eigen_smooth: bool) -> Array:
    return first_component(channel_maps) if eigen_smooth else jnp.sum(channel_maps, axis=-1, keepdims=True)


def _spatial_sum(maps: Array) -> Array:
    return jnp.sum(maps, axis=(1, 2), keepdims=True)


def _grad_cam_plus_plus_maps(gradient: Array, activation: Array) -> Array:
    # Chattopadhay et al. 2018, eq. 19 with an exponential score: a = g^2 / (2 g^2 + sum(A) g^3).
    squared = gradient**2
    alpha = squared / (2 * squared + _spatial_sum(activation) * squared * gradient + 1e-6)
    alpha = jnp.where(gradient != 0, alpha, 0.0)
    return _spatial_sum(jax.nn.relu(gradient) * alpha) * activation


def _xgrad_cam_maps(gradient: Array, activation: Array) -> Array:
    # Fu et al. 2020: w = sum(G * A) / sum(A).
    return _spatial_sum(gradient * activation / (_spatial_sum(activation) + 1e-7)) * activation


CHANNEL_MAPS = {
    "grad_cam_plus_plus": _grad_cam_plus_plus_maps,
    "xgrad_cam": _xgrad_cam_maps,
    "hires_cam": lambda gradient, activation: gradient * activation,
    "grad_cam_element_wise": lambda gradient, activation: jax.nn.relu(gradient * activation),
    "layer_cam": lambda gradient, activation: jax.nn.relu(gradient) * activation,
    "eigen_grad_cam": lambda gradient, activation: gradient * activation,
}
ALWAYS_PROJECTED = ("eigen_cam", "eigen_grad_cam")


def _postprocessed(cams: tuple[Array, ...], size: tuple[int, int]) -> Array:
    """``BaseCAM``'s per-layer relu, scale and resize, then the mean over layers, scaled."""
    per_layer = [cv2_resize(min_max_scale(jax.nn.relu(cam)), size) for cam in cams]
    return min_max_scale(jnp.mean(jax.nn.relu(jnp.stack(per_layer)), axis=0))


def _finish(cams: tuple[Array, ...], layers: Layers, size: tuple[int, int], postprocess, upsample) -> Any:
    if postprocess == "pytorch_grad_cam":
        return _postprocessed(cams, size)
    if upsample is not None:
        cams = tuple(interpolate(cam, size, upsample) for cam in cams)
    return cams[0] if isinstance(layers, str) else cams


def _augmented(maps_of, inputs: Array, target: Array) -> Any:
    """``BaseCAM.forward_augmentation_smoothing``: the mean of the maps of six augmented batches,
    evaluated as one batch of ``6 N`` images, each map flipped back where its input was flipped."""
    count = inputs.shape[0]
    batches = [
        factor * (jnp.flip(inputs, axis=2) if flip else inputs) for flip in (False, True) for factor in AUGMENTATION_FACTORS
    ]
    maps = maps_of(jnp.concatenate(batches), jnp.tile(target, len(batches)))

    def mean_over_augmentations(leaf):
        groups = leaf.reshape((len(batches), count) + leaf.shape[1:])
        half = len(AUGMENTATION_FACTORS)
        return jnp.mean(jnp.concatenate([groups[:half], jnp.flip(groups[half:], axis=3)]), axis=0)

    return jax.tree_util.tree_map(mean_over_augmentations, maps)


def _check_options(method: str, postprocess, upsample, batch_size=None) -> None:
    check_choice("postprocess", postprocess, POSTPROCESS, method=method)
    check_choice("upsample", upsample, UPSAMPLE_MODES, method=method)
    check_batch_size(batch_size, method=method)
    if postprocess is not None and upsample is not None:
        raise ValueError(
            f"{method}: upsample applies to the raw map; postprocess={postprocess!r} already resizes to the input"
        )


def _as_tuple(layers: Layers) -> tuple[str, ...]:
    return (layers,) if isinstance(layers, str) else layers


# --------------------------------------------------------------------------------------------
# gradient- and activation-weighted CAMs


def _as_maps(arrays: tuple[Array, ...], layers: tuple[str, ...], size: tuple[int, int], reshape, method) -> tuple:
    """Each layer's array as a channels-last map ``[N, h, w, K]`` (:func:`~jaxplain.attribution.attention.layer_map`)."""
    return tuple(layer_map(a, size, reshape, layer=name, method=method) for a, name in zip(arrays, layers))


def _cam_core(model, inputs, target, key, arrays, *, method, layer, eigen_smooth, postprocess, upsample, aug_smooth,
              reshape):
    layers = _as_tuple(layer)

    def maps_of(images, targets):
        size = images.shape[1:3]
        if method == "eigen_cam":
            activations = _as_maps(layer_activation_of(model, layers, images), layers, size, reshape, method)
            cams = tuple(first_component(a) for a in activations)
        else:
            gradients, activations = layer_gradient_and_activation(model, layers, images, targets)
            gradients = _as_maps(gradients, layers, size, reshape, method)
            activations = _as_maps(activations, layers, size, reshape, method)
            smooth = eigen_smooth or method in ALWAYS_PROJECTED
            cams = tuple(_reduce(CHANNEL_MAPS[method](g, a), smooth) for g, a in zip(gradients, activations))
        return _finish(cams, layer, inputs.shape[1:3], postprocess, upsample)

    return _augmented(maps_of, inputs, target) if aug_smooth else maps_of(inputs, target)


def _cam(method, model, inputs, target, layer, *, postprocess, upsample, aug_smooth, eigen_smooth=False, reshape=None):
    _check_options(method, postprocess, upsample)
    check_choice("reshape", reshape, RESHAPES, method=method)
    model, inputs, target, layer = prepare_layer(model, inputs, target, layer, method=method)
    if reshape is None:
        require_channels_last(model, method)
    else:
        require_channels_last_inputs(model, method)
    return run(
        _cam_core,
        model,
        inputs,
        target,
        method=method,
        layer=layer,
        eigen_smooth=bool(eigen_smooth),
        postprocess=postprocess,
        upsample=upsample,
        aug_smooth=bool(aug_smooth),
        reshape=reshape,
    )


_COMMON_ARGS = """
    Args:
        model: a ``jx.Model`` (the layer is named by its path).
        inputs: ``[N, H, W, C]`` float32, normalised.
        target: an int, an int array ``[N]`` (one class per image, as a list of
            ``ClassifierOutputTarget``), or ``None`` for the predicted classes.
        layer: a path such as ``"layer4"``, or a tuple of paths (pytorch-grad-cam's
            ``target_layers``).
        postprocess: ``None`` for the raw map, ``"pytorch_grad_cam"`` for the library's final map.
        upsample: ``None``, ``"nearest"`` or ``"bilinear"``: resize the raw map to the input.
        aug_smooth: average over BaseCAM's six test-time augmentations.
        reshape: None (the layer's own layout), ``"tokens"`` for a vision transformer's
            ``[N, T, D]`` block (the class token dropped, the patch grid read from the token
            count and the input size, as the documented ViT ``reshape_transform``), or
            ``"channels_last"`` for a ``[N, h, w, C]`` layer of a model whose layers are
            channels-first (a converted torchvision Swin's stages)."""

_RETURNS = """
    Returns:
        The raw map ``[N, h, w, 1]`` (``[N, H, W, 1]`` with ``upsample``; a tuple for a tuple of
        layers), or with ``postprocess="pytorch_grad_cam"`` the final map ``[N, H, W, 1]`` in [0, 1].
"""


def grad_cam_plus_plus(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    layer: Layers,
    postprocess: str | None = None,
    upsample: str | None = None,
    aug_smooth: bool = False,
    reshape: str | None = None,
    eigen_smooth: bool = False,
) -> Any:
    """Grad-CAM++ (Chattopadhay et al. 2018), as pytorch-grad-cam's ``GradCAMPlusPlus``.

    ``a = G^2 / (2 G^2 + sum_hw(A) G^3 + 1e-6)`` (0 where ``G = 0``),
    ``w_k = sum_hw relu(G) a``, map ``sum_k w_k A_k`` (grad_cam_plusplus.py).
    {args}
        eigen_smooth: project ``w_k A_k`` on its first principal component instead of summing.
    {returns}
    Example:
        >>> import jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.grad_cam_plus_plus(model, x, 0, layer="features.6", postprocess="pytorch_grad_cam").shape
        (2, 16, 16, 1)
    """
    return _cam("grad_cam_plus_plus", model, inputs, target, layer, postprocess=postprocess, upsample=upsample,
                aug_smooth=aug_smooth, reshape=reshape, eigen_smooth=eigen_smooth)


def xgrad_cam(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    layer: Layers,
    postprocess: str | None = None,
    upsample: str | None = None,
    aug_smooth: bool = False,
    reshape: str | None = None,
    eigen_smooth: bool = False,
) -> Any:
    """XGrad-CAM (Fu et al. 2020), as pytorch-grad-cam's ``XGradCAM``.

    ``w_k = sum_hw(G_k A_k) / (sum_hw(A_k) + 1e-7)``, map ``sum_k w_k A_k`` (xgrad_cam.py).
    {args}
        eigen_smooth: project ``w_k A_k`` on its first principal component instead of summing.
    {returns}
    Example:
        >>> import jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.xgrad_cam(model, x, 0, layer="features.6").shape  # the layer's 4 x 4 map
        (2, 4, 4, 1)
    """
    return _cam("xgrad_cam", model, inputs, target, layer, postprocess=postprocess, upsample=upsample,
                aug_smooth=aug_smooth, reshape=reshape, eigen_smooth=eigen_smooth)


def hires_cam(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    layer: Layers,
    postprocess: str | None = None,
    upsample: str | None = None,
    aug_smooth: bool = False,
    reshape: str | None = None,
    eigen_smooth: bool = False,
) -> Any:
    """HiResCAM (Draelos and Carin 2020), as pytorch-grad-cam's ``HiResCAM``: map ``sum_k G_k A_k``.
    {args}
        eigen_smooth: project ``G_k A_k`` on its first principal component instead of summing.
    {returns}
    Example:
        >>> import jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.hires_cam(model, x, 0, layer="features.6").shape
        (2, 4, 4, 1)
    """
    return _cam("hires_cam", model, inputs, target, layer, postprocess=postprocess, upsample=upsample,
                aug_smooth=aug_smooth, reshape=reshape, eigen_smooth=eigen_smooth)


def grad_cam_element_wise(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    layer: Layers,
    postprocess: str | None = None,
    upsample: str | None = None,
    aug_smooth: bool = False,
    reshape: str | None = None,
    eigen_smooth: bool = False,
) -> Any:
    """Element-wise Grad-CAM, as pytorch-grad-cam's ``GradCAMElementWise``: map ``sum_k relu(G_k A_k)``.
    {args}
        eigen_smooth: project ``relu(G_k A_k)`` on its first principal component instead of summing.
    {returns}
    Example:
        >>> import jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.grad_cam_element_wise(model, x, 0, layer="features.6").shape
        (2, 4, 4, 1)
    """
    return _cam("grad_cam_element_wise", model, inputs, target, layer, postprocess=postprocess, upsample=upsample,
                aug_smooth=aug_smooth, reshape=reshape, eigen_smooth=eigen_smooth)


def layer_cam(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    layer: Layers,
    postprocess: str | None = None,
    upsample: str | None = None,
    aug_smooth: bool = False,
    reshape: str | None = None,
    eigen_smooth: bool = False,
) -> Any:
    """Layer-CAM (Jiang et al. 2021), as pytorch-grad-cam's ``LayerCAM``: map ``sum_k relu(G_k) A_k``.
    {args}
        eigen_smooth: project ``relu(G_k) A_k`` on its first principal component instead of summing.
    {returns}
    Example:
        >>> import jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.layer_cam(model, x, 0, layer=("features.3", "features.6"), postprocess="pytorch_grad_cam").shape
        (2, 16, 16, 1)
    """
    return _cam("layer_cam", model, inputs, target, layer, postprocess=postprocess, upsample=upsample,
                aug_smooth=aug_smooth, reshape=reshape, eigen_smooth=eigen_smooth)


def eigen_cam(
    model: Any,
    inputs: Array,
    target: Target = None,
    *,
    layer: Layers,
    postprocess: str | None = None,
    upsample: str | None = None,
    aug_smooth: bool = False,
    reshape: str | None = None,
) -> Any:
    """Eigen-CAM (Muhammad and Yeasin 2020), as pytorch-grad-cam's ``EigenCAM``.

    The activation's projection on its first principal component (eigen_cam.py); no gradient,
    so ``target`` is not used (pass ``None``).
    {args}
    {returns}
    Example:
        >>> import jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.eigen_cam(model, x, None, layer="features.6").shape
        (2, 4, 4, 1)
    """
    return _cam("eigen_cam", model, inputs, target, layer, postprocess=postprocess, upsample=upsample,
                aug_smooth=aug_smooth, reshape=reshape)


def eigen_grad_cam(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    layer: Layers,
    postprocess: str | None = None,
    upsample: str | None = None,
    aug_smooth: bool = False,
    reshape: str | None = None,
) -> Any:
    """Eigen-Grad-CAM, as pytorch-grad-cam's ``EigenGradCAM``: ``G A`` projected on its first principal component.
    {args}
    {returns}
    Example:
        >>> import jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.eigen_grad_cam(model, x, 0, layer="features.6").shape
        (2, 4, 4, 1)
    """
    return _cam("eigen_grad_cam", model, inputs, target, layer, postprocess=postprocess, upsample=upsample,
                aug_smooth=aug_smooth, reshape=reshape)


for _function in (
    grad_cam_plus_plus, xgrad_cam, hires_cam, grad_cam_element_wise, layer_cam, eigen_cam, eigen_grad_cam
):
    _function.__doc__ = _function.__doc__.format(args=_COMMON_ARGS, returns=_RETURNS)


# --------------------------------------------------------------------------------------------
# Ablation-CAM


def _channels_to_ablate(activation: Array, ratio: float) -> Array:
    """``[N, M]``: the channels ablated on each image (``AblationLayer.activations_to_be_ablated``).

    Every channel for ``ratio = 1``. Otherwise each channel ``A_k`` is scored by
    ``sum(mask * n_k) / sum(n_k)``, with ``n_k = |A_k|`` min-max scaled (no epsilon) and ``mask``
    the pixels where the |first principal component| of the activation, min-max scaled, exceeds
    0.01; the ``int(K * ratio)`` highest-scoring channels and the ``int(K * ratio)``
    lowest-scoring ones are ablated. A constant channel scores NaN, which ranks above every
    score (NumPy's and JAX's sorts both put NaN last). Ties go by channel index (a stable sort).
    """
    count, channels = activation.shape[0], activation.shape[-1]
    if ratio == 1.0:
        return jnp.broadcast_to(jnp.arange(channels), (count, channels))
    projection = jnp.abs(first_component(activation))
    projection = projection - jnp.min(projection, axis=(1, 2), keepdims=True)
    mask = projection / jnp.max(projection, axis=(1, 2), keepdims=True) > OBJECTIVENESS_THRESHOLD
    magnitude = jnp.abs(activation)
    magnitude = magnitude - jnp.min(magnitude, axis=(1, 2), keepdims=True)
    magnitude = magnitude / jnp.max(magnitude, axis=(1, 2), keepdims=True)
    inside = jnp.sum(jnp.where(mask, magnitude, 0.0), axis=(1, 2))
    outside = jnp.sum(jnp.where(mask, 0.0, magnitude), axis=(1, 2))
    # A channel with nothing outside the mask scores exactly 1 (a tie NumPy keeps), whatever
    # order XLA sums in.
    scores = jnp.where(outside == 0, 1.0, inside / (inside + outside))
    order = jnp.argsort(scores, axis=-1)
    kept = int(channels * ratio)
    return jnp.concatenate([order[:, ::-1][:, :kept], order[:, :kept]], axis=-1)


def _ablation_weights(
    model, layer: str, inputs: Array, target: Array, activation: Array, batch_size, ratio: float
) -> Array:
    """``w_k = (y - y_k) / y``: the target score's relative drop when channel ``k`` is ablated, ``[N, K]``.

    The ablated channels (:func:`_channels_to_ablate`; the others keep ``y_k = y``, weight 0) are
    set to 0 (or to the image's minimum minus 1e7 when that minimum is not 0) by adding
    ``value - A_k`` at the layer. They go through in chunks of ``batch_size`` (``lax.map``), each
    chunk one vmapped pass of ``N * batch_size`` ablated images (the j-th ablated channel of
    every image together); the layers before the tapped one do not depend on the ablation and
    are computed once per chunk.
    """
    forward = tapped_forward(model, layer)
    original = selected_output(forward(inputs, 0.0)[0], target)
    count, channels = activation.shape[0], activation.shape[-1]
    chosen = _channels_to_ablate(activation, ratio)
    slots = chosen.shape[1]
    if slots == 0:
        return jnp.zeros((count, channels), inputs.dtype)
    low = jnp.min(activation, axis=(1, 2, 3), keepdims=True)
    value = jnp.where(low == 0, 0.0, low - ABLATION_OFFSET)
    chunk = slots if batch_size is None else min(batch_size, slots)
    chunks = -(-slots // chunk)
    padded = jnp.pad(chosen, ((0, 0), (0, chunks * chunk - slots)))

    def ablated_score(slot):
        channel = padded[:, slot][:, None, None, None]
        delta = jnp.where(jnp.arange(channels) == channel, value - activation, 0.0)
        return selected_output(forward(inputs, delta)[0], target)

    slot_indices = jnp.arange(chunks * chunk).reshape(chunks, chunk)
    scores = jax.lax.map(jax.vmap(ablated_score), slot_indices).reshape(chunks * chunk, count)[:slots]
    ablated = jnp.broadcast_to(original[:, None], (count, channels))
    ablated = ablated.at[jnp.arange(count)[:, None], chosen].set(scores.T)
    return (original[:, None] - ablated) / original[:, None]


def _check_ratio(ratio: Any) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (0 < ratio <= 0.5 or ratio == 1):
        raise ValueError(
            f"ablation_cam: ratio_channels_to_ablate must be in (0, 0.5] or 1.0, got {ratio!r}. pytorch-grad-cam "
            "ablates the int(K * ratio) highest-ranked and as many lowest-ranked channels; above 0.5 the two "
            "sets overlap, and its score assembly (assemble_ablation_scores) then gives every channel after the "
            "first one ablated twice its unablated score (weight 0), a map that is not Ablation-CAM"
        )


def _ablation_cam_core(
    model, inputs, target, key, arrays, *, layer, eigen_smooth, postprocess, upsample, aug_smooth, batch_size, ratio
):
    layers = _as_tuple(layer)

    def maps_of(images, targets):
        activations = layer_activation_of(model, layers, images)
        cams = tuple(
            _reduce(_ablation_weights(model, name, images, targets, a, batch_size, ratio)[:, None, None, :] * a,
                    eigen_smooth)
            for name, a in zip(layers, activations)
        )
        return _finish(cams, layer, inputs.shape[1:3], postprocess, upsample)

    return _augmented(maps_of, inputs, target) if aug_smooth else maps_of(inputs, target)


def ablation_cam(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    layer: Layers,
    batch_size: int | None = 32,
    ratio_channels_to_ablate: float = 1.0,
    postprocess: str | None = None,
    upsample: str | None = None,
    aug_smooth: bool = False,
    eigen_smooth: bool = False,
) -> Any:
    """Ablation-CAM (Desai and Ramaswamy 2020), as pytorch-grad-cam's ``AblationCAM``.

    ``w_k = (y_t - y_t^(k)) / y_t`` with ``y_t^(k)`` the target logit when channel ``k`` of the
    layer is ablated (set to 0; to the image's minimum minus 1e7 when the layer's minimum on the
    image is not 0), map ``sum_k w_k A_k`` (ablation_cam.py, ablation_layer.py).
    pytorch-grad-cam loops over images and over chunks of channels; here every chunk is one
    vmapped pass over all images.
    Where the minimum is not 0, pytorch-grad-cam reads the minimum after writing the previous
    channel of the chunk, so its k-th ablated channel in a chunk gets ``min - k * 1e7``; here
    every channel gets ``min - 1e7`` (chunking does not change the result).

    ``ratio_channels_to_ablate < 1`` is the library's experimental shortcut: per image, each
    channel is scored by the share of its scaled magnitude ``|A_k|`` inside the mask where the
    activation's |first principal component|, min-max scaled, exceeds 0.01; only the
    ``int(K * ratio)`` highest- and the ``int(K * ratio)`` lowest-scoring channels are ablated
    (constant channels score NaN and rank highest), and every other channel keeps the original
    score, so its weight is 0. Ratios in ``(0.5, 1)`` raise a ``ValueError``: there the two sets
    overlap, and pytorch-grad-cam's score assembly gives every channel after the first one
    ablated twice weight 0, a map that is not Ablation-CAM. Channels with equal scores are
    ranked by index here; NumPy's unstable sort may rank them otherwise.
    {args}
        batch_size: channels per pass (``None``: all at once); memory grows with ``N * batch_size``.
        ratio_channels_to_ablate: ``1.0`` (every channel) or a share in ``(0, 0.5]``, as above.
        eigen_smooth: project ``w_k A_k`` on its first principal component instead of summing.
    {returns}
    Example:
        >>> import jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.ablation_cam(model, x, 0, layer="features.6", batch_size=16).shape
        (2, 4, 4, 1)
        >>> jx.ablation_cam(model, x, 0, layer="features.6", ratio_channels_to_ablate=0.25).shape
        (2, 4, 4, 1)
    """
    _check_options("ablation_cam", postprocess, upsample, batch_size)
    _check_ratio(ratio_channels_to_ablate)
    model, inputs, target, layer = prepare_layer(model, inputs, target, layer, method="ablation_cam")
    require_channels_last(model, "ablation_cam")
    return run(
        _ablation_cam_core,
        model,
        inputs,
        target,
        layer=layer,
        eigen_smooth=bool(eigen_smooth),
        postprocess=postprocess,
        upsample=upsample,
        aug_smooth=bool(aug_smooth),
        batch_size=batch_size,
        ratio=float(ratio_channels_to_ablate),
    )


ablation_cam.__doc__ = ablation_cam.__doc__.format(args=_COMMON_ARGS, returns=_RETURNS)


# --------------------------------------------------------------------------------------------
# Score-CAM (score_cam's flavour="pytorch_grad_cam")

SCORE_CAM_EPSILON = 1e-8
"""``ScoreCAM``'s epsilon in the masks' min-max scaling ``(u - min) / (max - min + 1e-8)``."""


def _score_cam_weights(model, inputs: Array, target: Array, activation: Array, batch_size) -> Array:
    """``w_k = softmax_k(y_t(x * M_k))``, ``[N, K]``: pytorch-grad-cam's ``ScoreCAM.get_cam_weights``.

    ``M_k`` is channel ``k`` resized to the input as ``UpsamplingBilinear2d`` resizes
    (``align_corners=True``) and scaled ``(u - min) / (max - min + 1e-8)`` per image (a constant
    channel gives a zero mask, which is scored too); ``y_t`` is the target logit and the softmax
    runs over the channels. The channels go through in chunks of ``batch_size`` (``lax.map``),
    each chunk one vmapped pass of ``N * batch_size`` masked images.
    """
    count, channels = activation.shape[0], activation.shape[-1]
    size = inputs.shape[1:3]
    chunk = channels if batch_size is None else min(batch_size, channels)
    chunks = -(-channels // chunk)

    def masked_score(channel):
        upsampled = interpolate(jax.lax.dynamic_index_in_dim(activation, channel, axis=-1), size, "bilinear",
                                align_corners=True)
        low = jnp.min(upsampled, axis=(1, 2, 3), keepdims=True)
        high = jnp.max(upsampled, axis=(1, 2, 3), keepdims=True)
        return selected_output(model(inputs * ((upsampled - low) / (high - low + SCORE_CAM_EPSILON))), target)

    indices = jnp.minimum(jnp.arange(chunks * chunk), channels - 1).reshape(chunks, chunk)
    scores = jax.lax.map(jax.vmap(masked_score), indices).reshape(chunks * chunk, count)[:channels]
    return jax.nn.softmax(scores.T, axis=-1)


def _score_cam_core(model, inputs, target, key, arrays, *, layer, batch_size, eigen_smooth, postprocess, aug_smooth):
    """The core of ``score_cam(flavour="pytorch_grad_cam")``: ``sum_k w_k A_k`` at the layer (``BaseCAM``).

    With ``eigen_smooth`` the weighted channels are projected on their first principal
    component; ``postprocess`` and ``aug_smooth`` as in the rest of the family.
    """

    def maps_of(images, targets):
        activation = layer_activation_of(model, layer, images)
        weights = _score_cam_weights(model, images, targets, activation, batch_size)
        cam = _reduce(weights[:, None, None, :] * activation, eigen_smooth)
        return _finish((cam,), layer, images.shape[1:3], postprocess, None)

    return _augmented(maps_of, inputs, target) if aug_smooth else maps_of(inputs, target)


# --------------------------------------------------------------------------------------------
# FullGrad


def _biased_layers(model: Any, inputs: Array) -> tuple[tuple[str, ...], tuple[Array, ...]]:
    """Every 2-D convolution with a bias and every batch norm, with its effective bias, in call order.

    FullGrad's bias layers (pytorch-grad-cam's ``FullGrad``: ``Conv2d`` with a bias and
    ``BatchNorm2d``), found on the model's traced program (:meth:`jaxplain.program.graph.Graph.bias_layers`);
    a layer's bias is its output at zero input, so a batch norm's is ``beta - mean * gamma / sqrt(var + eps)``.

    Returns:
        ``(paths, biases)``: the dotted paths and each layer's bias, broadcast to its output.
    """
    paths = program.bias_layers(model, inputs)
    return paths, program.biases(model, paths, inputs)


def _full_grad_components(model, inputs: Array, target: Array) -> Array:
    """``[N, H, W, C + L]``: the input channels of ``|x dF/dx|`` and, per bias layer, the sum over
    its channels of ``|b dF/dA|``, each channel min-max scaled, resized with ``cv2_resize``."""
    paths, biases = _biased_layers(model, inputs)
    if not paths:
        raise ValueError("full_grad: the model has no convolution with a bias and no batch norm")
    forward = tapped_forward(model, paths)
    shapes = jax.eval_shape(lambda x: forward(x, (0.0,) * len(paths))[1], inputs)
    zeros = tuple(jnp.zeros(s.shape, s.dtype) for s in shapes)

    def score(x, deltas):
        return jnp.sum(selected_output(forward(x, deltas)[0], target))

    input_gradient, layer_gradients = jax.grad(score, argnums=(0, 1))(inputs, zeros)
    size = inputs.shape[1:3]
    parts = [cv2_resize(min_max_scale(jnp.abs(input_gradient * inputs)), size)]
    for bias, gradient in zip(biases, layer_gradients):
        # resize is linear: resizing the channel sum equals summing the resized channels.
        summed = jnp.sum(min_max_scale(jnp.abs(bias * gradient)), axis=-1, keepdims=True)
        parts.append(cv2_resize(summed, size))
    return jnp.concatenate(parts, axis=-1)


def _full_grad_core(model, inputs, target, key, arrays, *, eigen_smooth, postprocess, aug_smooth):
    def maps_of(images, targets):
        components = _full_grad_components(model, images, targets)
        if eigen_smooth:
            height, width = images.shape[1:3]
            small = cv2_resize(min_max_scale(components), (height // 8, width // 8))
            cam = cv2_resize(min_max_scale(first_component(small)), (height, width))
        else:
            cam = jnp.sum(components, axis=-1, keepdims=True)
        return min_max_scale(cam) if postprocess == "pytorch_grad_cam" else cam

    return _augmented(maps_of, inputs, target) if aug_smooth else maps_of(inputs, target)


def full_grad(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    postprocess: str | None = None,
    aug_smooth: bool = False,
    eigen_smooth: bool = False,
) -> Array:
    """FullGrad (Srinivas and Fleuret 2019), as pytorch-grad-cam's ``FullGrad``.

    The sum of ``scale(|x dF_t/dx|)`` over the input channels and of ``scale(|b_l dF_t/dA_l|)``
    over the channels of every bias layer ``l`` (2-D convolutions with a bias, batch norms with
    their effective bias), each channel min-max scaled and resized to the input with OpenCV's
    bilinear resize (fullgrad_cam.py). There is no target layer: every bias layer is used, and
    all gradients come from one backward pass.

    Args:
        model: a ``jx.Model``.
        inputs: ``[N, H, W, C]`` float32, normalised.
        target: an int, an int array ``[N]``, or ``None`` for the predicted classes.
        postprocess: ``None`` for the summed map, ``"pytorch_grad_cam"`` to min-max scale it
            (the library's final map).
        aug_smooth: average over BaseCAM's six test-time augmentations.
        eigen_smooth: pytorch-grad-cam's variant: the scaled components resized to an eighth of
            the input, projected on their first principal component, scaled and resized back.

    Returns:
        ``[N, H, W, 1]``.

    Example:
        >>> import jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.full_grad(model, x, 0, postprocess="pytorch_grad_cam").shape
        (2, 16, 16, 1)
    """
    check_choice("postprocess", postprocess, POSTPROCESS, method="full_grad")
    model, inputs, target = prepare(model, inputs, target, method="full_grad")
    model = require_structure(model, "full_grad")
    require_channels_last(model, "full_grad")
    if eigen_smooth and min(inputs.shape[1:3]) < 8:
        raise ValueError("full_grad: eigen_smooth resizes to an eighth of the input, which needs at least 8x8 pixels")
    return run(_full_grad_core, model, inputs, target, eigen_smooth=bool(eigen_smooth), postprocess=postprocess,
               aug_smooth=bool(aug_smooth))
