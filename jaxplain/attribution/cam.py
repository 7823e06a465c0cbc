"""Class activation maps: Grad-CAM, guided Grad-CAM, Score-CAM."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxplain.attribution._common import check_batch_size, check_choice, run, target_gradient
from jaxplain.attribution._layers import layer_activation_of, layer_gradient_and_activation
from jaxplain.attribution.layer import prepare_layer
from jaxplain.attribution.tokens import RESHAPES, layer_map
from jaxplain.image import interpolate
from jaxplain import program
from jaxplain.rules.guided import GUIDED_BACKPROP
from jaxplain.typing import Array, Target

UPSAMPLE_MODES = (None, "nearest", "bilinear")
GRADCAM_FLAVOURS = ("captum", "torchray")


def channel_axis(model: Any) -> int:
    """Where the model's images keep their channels (``-1`` NHWC unless the model says otherwise)."""
    return getattr(model, "channel_axis", -1)


def layer_channel_axis(model: Any) -> int:
    """Where the model's layers keep their channels (``-1`` unless the model says otherwise)."""
    return getattr(model, "layer_channel_axis", -1)


def _gradcam(gradient: Array, activation: Array, *, relu: bool, sum_channels: bool, axis: int = -1,
             layer_axis: int = -1) -> Array:
    if activation.ndim > 2:
        gradient, activation = jnp.moveaxis(gradient, layer_axis, -1), jnp.moveaxis(activation, layer_axis, -1)
    spatial = tuple(range(1, activation.ndim - 1))
    weights = jnp.mean(gradient, axis=spatial, keepdims=True) if spatial else gradient
    cam = weights * activation
    if sum_channels:
        cam = jnp.sum(cam, axis=-1, keepdims=True)
    cam = jax.nn.relu(cam) if relu else cam
    return jnp.moveaxis(cam, -1, axis) if cam.ndim > 2 else cam


def _upsample(cam: Array, size: tuple[int, int], mode: str | None, axis: int = -1) -> Array:
    if mode is None:
        return cam
    return jnp.moveaxis(interpolate(jnp.moveaxis(cam, axis, -1), size, mode), -1, axis)


def require_channels_last(model: Any, method: str) -> None:
    """Raise unless the model's inputs and layers keep their channels last (NHWC)."""
    if channel_axis(model) != -1 or layer_channel_axis(model) != -1:
        raise ValueError(f"{method} reads channels-last (NHWC) layers; this model keeps channels on axis "
                         f"{channel_axis(model)} of its inputs and {layer_channel_axis(model)} of its layers "
                         "(layer_gradcam takes either)")


def require_channels_last_inputs(model: Any, method: str) -> None:
    """Raise unless the model's inputs keep their channels last (NHWC), whatever its layers do."""
    if channel_axis(model) != -1:
        raise ValueError(f"{method} reads channels-last (NHWC) inputs; this model keeps them on axis {channel_axis(model)}")


def _spatial_size(inputs: Array, axis: int) -> tuple[int, int]:
    return tuple(jnp.moveaxis(inputs, axis, -1).shape[1:3])


def _layer_gradcam_core(model, inputs, target, key, arrays, *, layer, to_input, relu, sum_channels, upsample, reshape):
    gradient, activation = layer_gradient_and_activation(model, layer, inputs, target, attribute_to_layer_input=to_input)
    axis, layer_axis = channel_axis(model), layer_channel_axis(model)
    if reshape is not None:
        size = _spatial_size(inputs, axis)
        gradient, activation = (layer_map(a, size, reshape, layer=layer, method="layer_gradcam")
                                for a in (gradient, activation))
        layer_axis = -1
    cam = _gradcam(gradient, activation, relu=relu, sum_channels=sum_channels, axis=axis, layer_axis=layer_axis)
    return _upsample(cam, _spatial_size(inputs, axis), upsample, axis)


def layer_gradcam(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    layer: str,
    relu_attributions: bool = False,
    attribute_to_layer_input: bool = False,
    attr_dim_summation: bool = True,
    upsample: str | None = None,
    flavour: str = "captum",
    reshape: str | None = None,
) -> Array:
    """Grad-CAM (Selvaraju et al. 2017) at ``layer``.

    The map keeps the model's image layout: ``[N, h, w, 1]`` for NHWC inputs, ``[N, 1, h, w]`` for a
    channels-first model (``channel_axis=1``), whatever layout its layers use inside.

    ``w_c = mean_hw dF_t/dA_c``; the map is ``sum_c w_c A_c`` with one channel
    ``[N, h, w, 1]`` (captum/attr/_core/layer/grad_cam.py; Captum applies no ReLU by
    default). ``upsample="nearest"|"bilinear"`` resizes it to the input's size as
    ``F.interpolate`` does. ``flavour="torchray"`` gives TorchRay's ``grad_cam``:
    ReLU applied, and bilinear resizing when ``upsample`` is set.

    A vision transformer's block gives tokens ``[N, T, D]``: ``reshape="tokens"`` drops the
    class token and reads the patch grid from the token count and the input size
    (:func:`jaxplain.attribution.tokens.token_grid`), as pytorch-grad-cam's documented ViT
    ``reshape_transform`` does by hand; ``reshape="channels_last"`` reads a ``[N, h, w, C]``
    layer of a model whose layers are otherwise channels-first (a converted torchvision
    Swin's stages). Either way the map is ``[N, h, w, 1]`` over the patch grid.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        layer: the layer's path (``"layer4"``, ``"features.6"``).
        relu_attributions: apply a ReLU to the map (Captum's option; the paper's Grad-CAM).
        attribute_to_layer_input: use the layer's input instead of its output.
        attr_dim_summation: sum the weighted channels (else ``[N, h, w, C]``).
        upsample: None (the layer's size), ``"nearest"`` or ``"bilinear"`` (the input's size).
        flavour: ``"captum"`` or ``"torchray"``.
        reshape: None (the layer's own layout), ``"tokens"`` or ``"channels_last"``.

    Returns:
        ``[N, h, w, 1]`` at the layer's size, or ``[N, H, W, 1]`` with ``upsample``.

    Raises:
        ValueError: an unknown layer (the valid paths near it are named), ``upsample``,
            ``flavour`` or ``reshape``, a bad target, a layer that ``reshape`` cannot read as a
            map (``"tokens"`` on a 4-d map, a token sequence without it).

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.layer_gradcam(model, x, 0, layer="features.6").shape  # the layer's 4 x 4 map
        (2, 4, 4, 1)
        >>> jx.layer_gradcam(model, x, 0, layer="features.6", relu_attributions=True, upsample="bilinear").shape
        (2, 16, 16, 1)
    """
    check_choice("upsample", upsample, UPSAMPLE_MODES, method="layer_gradcam")
    check_choice("flavour", flavour, GRADCAM_FLAVOURS, method="layer_gradcam")
    check_choice("reshape", reshape, RESHAPES, method="layer_gradcam")
    model, inputs, target, layer = prepare_layer(model, inputs, target, layer, method="layer_gradcam", several=False)
    if reshape is not None:
        require_channels_last_inputs(model, "layer_gradcam")
    if flavour == "torchray":
        relu_attributions, upsample = True, (None if upsample is None else "bilinear")
    return run(
        _layer_gradcam_core,
        model,
        inputs,
        target,
        layer=layer,
        to_input=attribute_to_layer_input,
        relu=relu_attributions,
        sum_channels=attr_dim_summation,
        upsample=upsample,
        reshape=reshape,
    )


def _guided_gradcam_core(model, inputs, target, key, arrays, *, layer, to_input, mode):
    gradient, activation = layer_gradient_and_activation(model, layer, inputs, target, attribute_to_layer_input=to_input)
    cam = interpolate(_gradcam(gradient, activation, relu=True, sum_channels=True), inputs.shape[1:3], mode)
    guided = target_gradient(program.forward(model, GUIDED_BACKPROP), inputs, target)
    return guided * cam


def guided_gradcam(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    layer: str,
    interpolate_mode: str = "nearest",
    attribute_to_layer_input: bool = False,
) -> Array:
    """Guided Grad-CAM: guided backprop times the ReLU'd Grad-CAM upsampled to the input.

    Captum's ``GuidedGradCam`` (captum/attr/_core/guided_grad_cam.py): the one-channel
    map is broadcast over the input's channels.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        layer: the Grad-CAM layer's path.
        interpolate_mode: ``"nearest"`` (Captum's) or ``"bilinear"`` upsampling of the map.
        attribute_to_layer_input: use the layer's input instead of its output.

    Returns:
        ``[N, H, W, C]``, the inputs' shape.

    Raises:
        ValueError: an unknown layer or ``interpolate_mode``, a bad target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.guided_gradcam(model, x, 0, layer="features.6").shape
        (2, 16, 16, 3)
    """
    check_choice("interpolate_mode", interpolate_mode, UPSAMPLE_MODES[1:], method="guided_gradcam")
    model, inputs, target, layer = prepare_layer(model, inputs, target, layer, method="guided_gradcam", several=False)
    require_channels_last(model, "guided_gradcam")
    return run(_guided_gradcam_core, model, inputs, target, layer=layer, to_input=attribute_to_layer_input, mode=interpolate_mode)


def _min_max(maps: Array, axes: tuple[int, ...]) -> tuple[Array, Array]:
    low = jnp.min(maps, axis=axes, keepdims=True)
    high = jnp.max(maps, axis=axes, keepdims=True)
    return maps - low, high - low


def _score_cam_core(model, inputs, target, key, arrays, *, layer, batch_size, flavour):
    activation = layer_activation_of(model, layer, inputs)
    count, size, channels = inputs.shape[0], inputs.shape[1:3], activation.shape[-1]
    # Only (image, channel) pairs whose map varies are scored (a constant map weighs 0), packed
    # across the batch: the forward passes skip the dead channels of every image.
    varies = (jnp.max(activation, axis=(1, 2)) > jnp.min(activation, axis=(1, 2))).reshape(-1)
    pairs = count * channels
    chunk = min(pairs, count * (batch_size or channels))
    order = jnp.argsort(~varies, stable=True)
    order = jnp.pad(order, (0, -pairs % chunk))
    n_varying = jnp.sum(varies)
    at_layer_resolution = flavour == "pytorch_cnn_visualizations"

    def add_chunk(state):
        step, cam = state
        start = step * chunk
        pair = jax.lax.dynamic_slice(order, (start,), (chunk,))
        image, channel = pair // channels, pair % channels
        low_res = activation[image, :, :, channel][..., None]
        upsampled = interpolate(low_res, size, "bilinear")
        shifted, spread = _min_max(upsampled, (1, 2, 3))
        mask = shifted / jnp.where(spread == 0, 1.0, spread)
        probabilities = jax.nn.softmax(model(inputs[image] * mask), axis=-1)
        scored = (start + jnp.arange(chunk) < n_varying) & (spread[:, 0, 0, 0] > 0)
        score = jnp.where(scored, probabilities[jnp.arange(chunk), target[image]], 0.0)
        owner = jax.nn.one_hot(image, count, dtype=cam.dtype)
        weighted = low_res if at_layer_resolution else upsampled
        return step + 1, cam + jnp.einsum("kn,khwc->nhwc", owner * score[:, None], weighted)

    cam_shape = (count, *(activation.shape[1:3] if at_layer_resolution else size), 1)
    _, cam = jax.lax.while_loop(
        lambda state: state[0] * chunk < n_varying, add_chunk, (jnp.int32(0), jnp.zeros(cam_shape, inputs.dtype))
    )
    if at_layer_resolution:
        cam = interpolate(cam + 1.0, size, "bilinear")
    shifted, spread = _min_max(jax.nn.relu(cam), (1, 2, 3))
    return shifted / jnp.where(spread == 0, 1.0, spread)


SCORE_CAM_FLAVOURS = ("paper", "pytorch_cnn_visualizations", "pytorch_grad_cam")
SCORE_CAM_POSTPROCESS = (None, "pytorch_grad_cam")


def score_cam(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    layer: str,
    batch_size: int | None = 16,
    flavour: str = "paper",
    postprocess: str | None = None,
    aug_smooth: bool = False,
    eigen_smooth: bool = False,
) -> Array:
    """Score-CAM (Wang et al. 2020): channels weighted by the score of the input they mask.

    For each channel ``k`` of ``layer``: ``M_k`` = its activation upsampled (bilinear) to
    the input and min-max normalised per example; ``w_k = softmax(F(x * M_k))_t``
    (0 for a constant map); the map is ``relu(sum_k w_k upsample(A_k))``, min-max
    normalised to [0, 1], shape ``[N, H, W, 1]`` (the authors' implementation).

    ``flavour="pytorch_cnn_visualizations"`` reproduces that repository's variant:
    the weighted sum is taken at the layer's resolution and starts from ones
    (``1 + sum_k w_k A_k``, its ``np.ones`` initialisation), then ReLU, min-max and
    resize. Its uint8 quantisation and PIL antialiased resize are not reproduced:
    the resize here is bilinear.

    ``flavour="pytorch_grad_cam"`` is grad-cam 1.5.7's ``ScoreCAM`` (score_cam.py, base_cam.py):
    ``M_k`` resized with ``UpsamplingBilinear2d`` (``align_corners=True``) and scaled
    ``(u - min) / (max - min + 1e-8)``, every channel scored (a constant one by its zero mask)
    by the target logit, ``w = softmax_k(y_t(x * M_k))`` over the channels, and the raw map
    ``sum_k w_k A_k`` at the layer's resolution, ``[N, h, w, 1]``; ``postprocess="pytorch_grad_cam"``
    gives the library's final map (ReLU, min-max, OpenCV's bilinear resize to ``[N, H, W, 1]``),
    ``aug_smooth`` and ``eigen_smooth`` its options, as in
    :func:`~jaxplain.attribution.cam_family.grad_cam_plus_plus`. The channels go through in
    chunks of ``batch_size``, each one vmapped pass of ``N * batch_size`` masked images.

    In the other flavours, channels whose map is constant on an image (dead ReLU channels) weigh 0 and cost
    no forward pass (how many there are depends on the network: none on the shipped
    demo model, 2% on a random ResNet-18's ``layer4``): the varying
    (image, channel) pairs of the whole batch are packed into forward passes of
    ``N * batch_size`` masked images (``None``: all in one pass).

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        layer: the layer's path.
        batch_size: masked images per forward pass and image (``None``: all at once).
        flavour: ``"paper"``, ``"pytorch_cnn_visualizations"`` or ``"pytorch_grad_cam"``.
        postprocess: ``flavour="pytorch_grad_cam"`` only: ``None`` for the raw map,
            ``"pytorch_grad_cam"`` for the library's final map.
        aug_smooth: ``flavour="pytorch_grad_cam"`` only: average over BaseCAM's six test-time
            augmentations.
        eigen_smooth: ``flavour="pytorch_grad_cam"`` only: project ``w_k A_k`` on its first
            principal component instead of summing.

    Returns:
        ``[N, H, W, 1]`` maps in [0, 1]; with ``flavour="pytorch_grad_cam"`` the raw map
        ``[N, h, w, 1]``, or the final map ``[N, H, W, 1]`` in [0, 1] with ``postprocess``.

    Raises:
        ValueError: an unknown layer, ``flavour`` or ``postprocess``, a bad batch size or
            target, pytorch-grad-cam's options with another flavour.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> maps = jx.score_cam(model, x, 0, layer="features.6")
        >>> maps.shape, float(maps.max()) <= 1.0
        ((2, 16, 16, 1), True)
        >>> jx.score_cam(model, x, 0, layer="features.6", flavour="pytorch_grad_cam").shape  # raw map
        (2, 4, 4, 1)
    """
    check_batch_size(batch_size, method="score_cam")
    check_choice("flavour", flavour, SCORE_CAM_FLAVOURS, method="score_cam")
    check_choice("postprocess", postprocess, SCORE_CAM_POSTPROCESS, method="score_cam")
    if flavour != "pytorch_grad_cam" and (postprocess is not None or aug_smooth or eigen_smooth):
        raise ValueError(f"score_cam: postprocess, aug_smooth and eigen_smooth are pytorch-grad-cam's options "
                         f"(flavour='pytorch_grad_cam'); flavour={flavour!r} returns its own final map")
    model, inputs, target, layer = prepare_layer(model, inputs, target, layer, method="score_cam", several=False)
    require_channels_last(model, "score_cam")
    if flavour == "pytorch_grad_cam":
        from jaxplain.attribution import cam_family  # imported here: cam_family imports this module

        return run(cam_family._score_cam_core, model, inputs, target, layer=layer, batch_size=batch_size,
                   eigen_smooth=bool(eigen_smooth), postprocess=postprocess, aug_smooth=bool(aug_smooth))
    return run(_score_cam_core, model, inputs, target, layer=layer, batch_size=batch_size, flavour=flavour)
