"""Attribution maps as pictures: Captum's ``visualize_image_attr`` modes as arrays and PIL images.

Host-side output code, so plain numpy: attributions may arrive as jax or numpy arrays
and leave as numpy float arrays in [0, 1] (``[H, W, 3]``, or ``[H, W, 4]`` for
``alpha_scaling``) that :func:`to_pil` turns into PIL images. Colour maps come from
matplotlib (``matplotlib.colormaps``); no figure is ever made.

The pixel values are those Captum's ``captum.attr.visualization.visualize_image_attr``
draws with matplotlib at one screen pixel per image pixel:

* attributions are summed over the channel axis, signs are selected, and the result is
  scaled by the value below which ``100 - outlier_perc`` percent of the total
  magnitude lies (:func:`normalize_attribution`);
* images are read as 8-bit levels: uint8 as they are, floats in [0, 1] as
  ``trunc(255 * x)``, like Captum;
* ``blended_heat_map`` lays the heat map, at opacity ``alpha_overlay``, over the
  channel mean of the image drawn with the ``gray`` colour map stretched from its
  minimum to its maximum (matplotlib's default normalisation, which Captum relies on).

Where Captum fails or draws something odd, this module chooses instead: an all-zero
selection (for example ``sign="negative"`` on a map with no negative value) normalises
to zeros rather than failing Captum's assertion; single-channel images are drawn grey,
not in matplotlib's default ``viridis``; a uint8 image whose maximum is at most 1 is
taken as 8-bit levels rather than rescaled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import Colormap, LinearSegmentedColormap
from PIL import Image, ImageDraw, ImageFont

SIGNS = ("positive", "absolute_value", "negative", "all")
"""Which attributions to show: Captum's ``VisualizeSign`` names."""

METHODS = ("heat_map", "blended_heat_map", "original_image", "masked_image", "alpha_scaling")
"""How to show them: Captum's ``ImageVisualizationMethod`` names."""

_DEFAULT_CMAPS = {"positive": "Greens", "negative": "Reds", "absolute_value": "Blues"}
_UNSIGNED_ONLY = ("masked_image", "alpha_scaling")


def _check_sign(sign: str) -> None:
    if sign not in SIGNS:
        raise ValueError(f"unknown sign {sign!r}; expected one of {SIGNS}")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def _finite_float(attribution: Any) -> np.ndarray:
    array = np.asarray(attribution)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError("attribution contains NaN or infinite values")
    return array


def _magnitude_threshold(magnitudes: np.ndarray, percentile: float) -> Any:
    """Smallest sorted magnitude at which the running sum reaches ``percentile`` % of the total."""
    ordered = np.sort(magnitudes.ravel())
    running = np.cumsum(ordered)
    index = int(np.searchsorted(running, running[-1] * (percentile / 100.0), side="left"))
    return ordered[min(index, ordered.size - 1)]


def normalize_attribution(
    attribution: Any,
    sign: str = "absolute_value",
    outlier_perc: float = 2,
    reduce_channels: bool = True,
) -> np.ndarray:
    """Attribution scaled to [0, 1] (or [-1, 1] for ``sign="all"``) with outliers saturated.

    Source: Captum's ``_normalize_attr`` (``captum/attr/_utils/visualization.py``),
    together with the channel sum ``visualize_image_attr`` does before it.

    The chosen sign is kept (``positive``: ``max(a, 0)``; ``negative``: ``-min(a, 0)``,
    so negative evidence maps to [0, 1] as in Captum; ``absolute_value``: ``|a|``;
    ``all``: ``a``). The result is divided by the smallest magnitude ``t`` such that the
    magnitudes up to ``t`` make up ``100 - outlier_perc`` percent of the total, then
    clipped, so the largest ``outlier_perc`` percent of the mass saturates at 1.

    Args:
        attribution: ``[H, W]`` or ``[H, W, C]`` attribution (numpy or jax).
        sign: one of :data:`SIGNS`.
        outlier_perc: percent of the total magnitude allowed to saturate, in [0, 100].
        reduce_channels: sum a trailing channel axis first (Captum always does);
            ``False`` normalises ``[H, W, C]`` jointly and keeps its shape.

    Returns:
        ``[H, W]`` (or ``[H, W, C]`` without channel reduction) array of the input's
        float dtype; zeros when the selected sign has no nonzero value.

    Raises:
        ValueError: bad shape, unknown sign, ``outlier_perc`` outside [0, 100], or
            non-finite attributions.

    Example:
        >>> normalize_attribution(np.array([[-2.0, 1.0], [0.5, 0.5]]), sign="all", outlier_perc=0).tolist()
        [[-1.0, 0.5], [0.25, 0.25]]
    """
    _check_sign(sign)
    if not 0 <= outlier_perc <= 100:
        raise ValueError(f"outlier_perc must lie in [0, 100], got {outlier_perc}")
    values = _finite_float(attribution)
    if values.ndim not in (2, 3):
        raise ValueError(f"attribution must be [H, W] or [H, W, C], got shape {values.shape}")
    if reduce_channels and values.ndim == 3:
        values = values.sum(axis=2)
    if sign == "positive":
        values = np.maximum(values, 0)
    elif sign == "negative":
        values = -np.minimum(values, 0)
    elif sign == "absolute_value":
        values = np.abs(values)
    threshold = _magnitude_threshold(np.abs(values), 100.0 - outlier_perc)
    if threshold == 0:
        return np.zeros_like(values)
    return np.clip(values / threshold, -1, 1)


def _colormap(sign: str, cmap: str | Colormap | None) -> tuple[Colormap, float]:
    """The colour map and the value drawn at its low end (Captum's ``vmin``; ``vmax`` is 1)."""
    if cmap is None:
        if sign == "all":
            return LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"]), -1.0
        cmap = _DEFAULT_CMAPS[sign]
    if isinstance(cmap, str):
        try:
            cmap = matplotlib.colormaps[cmap]
        except KeyError:
            raise ValueError(f"unknown matplotlib colour map {cmap!r}") from None
    return cmap, (-1.0 if sign == "all" else 0.0)


def _colour(normalized: np.ndarray, sign: str, cmap: str | Colormap | None) -> np.ndarray:
    """RGBA ``[H, W, 4]`` of normalised attributions under the sign's colour map."""
    colormap, vmin = _colormap(sign, cmap)
    return colormap((normalized - vmin) / (1.0 - vmin))


def _looks_channels_first(shape: tuple[int, ...]) -> bool:
    return len(shape) >= 3 and shape[-1] > 4 and shape[-3] <= 4


def _heat_map(attribution: np.ndarray, sign: str, cmap: str | Colormap | None, outlier_perc: float) -> np.ndarray:
    normalized = normalize_attribution(attribution, sign, outlier_perc)
    return _colour(normalized, sign, cmap)[..., :3].astype(np.float32)


def heatmap(
    attribution: Any,
    *,
    sign: str = "absolute_value",
    cmap: str | Colormap | None = None,
    outlier_perc: float = 2,
) -> np.ndarray:
    """Attribution as an RGB heat map in [0, 1].

    Source: Captum's ``visualize_image_attr(attr, method="heat_map")``, with its default
    colour maps: ``Greens`` for ``positive``, ``Reds`` for ``negative``, ``Blues`` for
    ``absolute_value`` (all over [0, 1]) and a red-white-green map over [-1, 1] for
    ``all``.

    Args:
        attribution: ``[H, W]``, ``[H, W, C]`` or a batch ``[N, H, W, C]`` (a batch of
            two-dimensional maps is ``[N, H, W, 1]``); channels are summed.
        sign: one of :data:`SIGNS`.
        cmap: a matplotlib colour map or its name, instead of the sign's default.
        outlier_perc: see :func:`normalize_attribution`.

    Returns:
        float32 ``[H, W, 3]``, or ``[N, H, W, 3]`` for a batch.

    Raises:
        ValueError: bad shape (channels-first arrays included), unknown sign or colour
            map, or non-finite attributions.

    Example:
        >>> heatmap(np.random.default_rng(0).normal(size=(8, 8, 3)), sign="all").shape
        (8, 8, 3)
    """
    _check_sign(sign)
    values = np.asarray(attribution)
    if values.ndim not in (2, 3, 4) or _looks_channels_first(values.shape):
        raise ValueError(
            f"attribution must be [H, W], [H, W, C] or [N, H, W, C] with channels last, got shape {values.shape}"
        )
    if values.ndim == 4:
        return np.stack([_heat_map(a, sign, cmap, outlier_perc) for a in values])
    return _heat_map(values, sign, cmap, outlier_perc)


def _image_levels(image: Any) -> np.ndarray:
    """Captum's 8-bit view of an image: uint8 as it is, floats in [0, 1] as ``trunc(255 x)``."""
    array = np.asarray(image)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError("integer images must hold 8-bit levels in [0, 255]")
        return array.astype(np.float64)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {array.dtype}")
    if not np.all(np.isfinite(array)) or array.min(initial=0) < 0 or array.max(initial=0) > 1:
        raise ValueError("float images must lie in [0, 1]; pass uint8 for levels in [0, 255]")
    return np.clip(np.trunc(array.astype(np.float64) * 255), 0, 255)


def _rgb(levels: np.ndarray) -> np.ndarray:
    return np.broadcast_to(levels, levels.shape[:-1] + (3,)) / 255.0


def _overlay_one(
    levels: np.ndarray,
    attribution: np.ndarray,
    method: str,
    sign: str,
    cmap: str | Colormap | None,
    alpha_overlay: float,
    outlier_perc: float,
) -> np.ndarray:
    if method == "original_image":
        return _rgb(levels).astype(np.float32)
    normalized = normalize_attribution(attribution, sign, outlier_perc)
    if method == "heat_map":
        return _colour(normalized, sign, cmap)[..., :3].astype(np.float32)
    if method == "blended_heat_map":
        gray = levels.mean(axis=2)
        low, high = gray.min(), gray.max()
        stretched = (gray - low) / (high - low) if high > low else np.zeros_like(gray)
        base = matplotlib.colormaps["gray"](stretched)[..., :3]
        heat = _colour(normalized, sign, cmap)
        opacity = alpha_overlay * heat[..., 3:]
        return (opacity * heat[..., :3] + (1 - opacity) * base).astype(np.float32)
    if method == "masked_image":
        return _rgb(np.clip(np.trunc(levels * normalized[..., None]), 0, 255)).astype(np.float32)
    alpha = np.clip(np.trunc(normalized * 255), 0, 255)[..., None]
    return np.concatenate([_rgb(levels), alpha / 255.0], axis=-1).astype(np.float32)


def overlay(
    image: Any,
    attribution: Any,
    *,
    method: str = "blended_heat_map",
    sign: str = "absolute_value",
    cmap: str | Colormap | None = None,
    alpha_overlay: float = 0.5,
    outlier_perc: float = 2,
) -> np.ndarray:
    """Attribution drawn with its image, in one of Captum's five image modes.

    Source: Captum's ``visualize_image_attr(attr, original_image, method, sign)``:

    * ``heat_map``: the heat map of :func:`heatmap` (the image only fixes the shape);
    * ``blended_heat_map``: that heat map at opacity ``alpha_overlay`` over the image's
      channel mean in grey, stretched from its darkest to its brightest pixel;
    * ``masked_image``: the image multiplied by the normalised attribution;
    * ``alpha_scaling``: the image with the normalised attribution as its alpha
      channel, returned as RGBA ``[..., 4]`` so no background is imposed (Captum's
      figure shows it over white; :func:`grid` composes it over white too);
    * ``original_image``: the image alone.

    ``masked_image`` and ``alpha_scaling`` need one-signed values, so Captum (and this
    function) refuse them with ``sign="all"``.

    Args:
        image: ``[H, W, C]`` or a batch ``[N, H, W, C]``, ``C`` 1 or 3, channels last;
            uint8 levels or floats in [0, 1].
        attribution: ``[H, W]`` or ``[H, W, C]`` for one image, ``[N, H, W]`` or
            ``[N, H, W, C]`` for a batch; channels are summed.
        method: one of :data:`METHODS`.
        sign: one of :data:`SIGNS`.
        cmap: a matplotlib colour map or its name for the heat-map modes.
        alpha_overlay: opacity of the heat map in ``blended_heat_map``, in [0, 1].
        outlier_perc: see :func:`normalize_attribution`.

    Returns:
        float32 ``[H, W, 3]`` in [0, 1] (``[H, W, 4]`` for ``alpha_scaling``), with a
        leading ``N`` for a batch.

    Raises:
        ValueError: channels-first or otherwise malformed shapes, image and attribution
            of different height or width, unknown method, sign or colour map, a sign
            the method rejects, ``alpha_overlay`` outside [0, 1], images out of range,
            or non-finite attributions.

    Example:
        >>> import jaxplain as jx
        >>> images = jx.demo.load_samples().images[:2]  # uint8 [2, 64, 64, 3]
        >>> maps = np.random.default_rng(0).normal(size=(2, 64, 64, 1))
        >>> overlay(images, maps, sign="all").shape
        (2, 64, 64, 3)
    """
    _check_method(method)
    _check_sign(sign)
    if sign == "all" and method in _UNSIGNED_ONLY:
        raise ValueError(f"method {method!r} cannot show both signs; choose another sign than 'all'")
    if not 0 <= alpha_overlay <= 1:
        raise ValueError(f"alpha_overlay must lie in [0, 1], got {alpha_overlay}")
    levels = _image_levels(image)
    if levels.ndim not in (3, 4) or levels.shape[-1] not in (1, 3):
        hint = (
            " (it looks channels-first; move channels last)" if levels.ndim >= 3 and levels.shape[-3] in (1, 3) else ""
        )
        raise ValueError(f"image must be [H, W, C] or [N, H, W, C] with C 1 or 3, got shape {levels.shape}{hint}")
    batched = levels.ndim == 4
    values = _finite_float(attribution)
    spatial = levels.shape[:-1]
    if values.ndim not in (len(spatial), len(spatial) + 1) or values.shape[: len(spatial)] != spatial:
        raise ValueError(
            f"attribution of shape {values.shape} does not match image of shape {levels.shape}: "
            "expected the image's leading (N,) H, W, then at most one channel axis, channels last"
        )
    if batched:
        return np.stack(
            [_overlay_one(i, a, method, sign, cmap, alpha_overlay, outlier_perc) for i, a in zip(levels, values)]
        )
    return _overlay_one(levels, values, method, sign, cmap, alpha_overlay, outlier_perc)


def to_pil(array: Any) -> Image.Image:
    """One image array as a PIL image: float in [0, 1] (rounded to 8 bits) or uint8.

    Source: none in Captum, which stops at matplotlib figures; this is the array to
    picture step of its ``visualize_image_attr``.

    Args:
        array: ``[H, W]`` or ``[H, W, 1]`` (mode ``L``), ``[H, W, 3]`` (``RGB``) or
            ``[H, W, 4]`` (``RGBA``).

    Returns:
        The PIL image.

    Raises:
        ValueError: another shape (iterate over a batch yourself), floats outside
            [0, 1] or non-finite, integers outside [0, 255], or another dtype.

    Example:
        >>> picture = to_pil(np.ones((4, 6, 3)))
        >>> picture.size, picture.mode
        ((6, 4), 'RGB')
    """
    pixels = np.asarray(array)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] not in (3, 4)):
        raise ValueError(f"to_pil takes one [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] image, got shape {pixels.shape}")
    if np.issubdtype(pixels.dtype, np.floating):
        if not np.all(np.isfinite(pixels)) or pixels.min(initial=0) < 0 or pixels.max(initial=0) > 1:
            raise ValueError("float images must lie in [0, 1]")
        pixels = np.round(pixels * 255.0).astype(np.uint8)
    elif np.issubdtype(pixels.dtype, np.integer):
        if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
            raise ValueError("integer images must hold levels in [0, 255]")
        pixels = pixels.astype(np.uint8)
    else:
        raise ValueError(f"to_pil takes float or integer arrays, got dtype {pixels.dtype}")
    return Image.fromarray(pixels)


def resize_attribution(attribution: Any, size: tuple[int, int]) -> np.ndarray:
    """An attribution map resampled (bilinear, per channel) to ``size`` ``(H, W)``, as PIL resizes images.

    For drawing a map computed at a model's input size over the photo at its own size.

    Args:
        attribution: ``[h, w]`` or ``[h, w, C]`` (numpy or jax).
        size: ``(H, W)`` of the result.

    Returns:
        float32 ``[H, W]`` or ``[H, W, C]``.

    Raises:
        ValueError: another shape, a size below 1, or non-finite attributions.

    >>> resize_attribution(np.ones((4, 4, 1)), (6, 8)).shape
    (6, 8, 1)
    """
    values = _finite_float(attribution).astype(np.float32)
    if values.ndim not in (2, 3):
        raise ValueError(f"attribution must be [h, w] or [h, w, C], got shape {values.shape}")
    height, width = (int(n) for n in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {tuple(size)}")
    if values.shape[:2] == (height, width):
        return values
    channels = values[..., None] if values.ndim == 2 else values
    resized = np.stack([
        np.asarray(Image.fromarray(np.ascontiguousarray(channels[..., c]), mode="F").resize(
            (width, height), Image.Resampling.BILINEAR))
        for c in range(channels.shape[-1])
    ], axis=-1)
    return resized[..., 0] if values.ndim == 2 else resized


def value_range(attribution: Any, sign: str = "absolute_value", outlier_perc: float = 2) -> tuple[float, float]:
    """The channel-summed attribution values drawn at the low and the high end of the colour map.

    :func:`normalize_attribution` divides by a threshold ``t``, so the colour map spans
    ``(-t, t)`` for ``sign="all"``, ``(0, t)`` for ``positive`` (and ``|a|`` from 0 to
    ``t`` for ``absolute_value``), ``(0, -t)`` for ``negative``; values beyond saturate.

    Args:
        attribution: ``[H, W]`` or ``[H, W, C]``.
        sign: one of :data:`SIGNS`.
        outlier_perc: as in :func:`normalize_attribution`.

    Returns:
        ``(low end, high end)`` as floats.

    >>> value_range(np.array([[-2.0, 1.0], [0.5, 0.5]]), sign="all", outlier_perc=0)
    (-2.0, 2.0)
    """
    _check_sign(sign)
    values = _finite_float(attribution)
    if values.ndim == 3:
        values = values.sum(axis=2)
    selected = {"positive": np.maximum(values, 0), "negative": -np.minimum(values, 0),
                "absolute_value": np.abs(values), "all": values}[sign]
    threshold = float(_magnitude_threshold(np.abs(selected), 100.0 - outlier_perc))
    return {"all": (-threshold, threshold), "negative": (0.0, -threshold)}.get(sign, (0.0, threshold))


def with_colorbar(
    picture: Any,
    span: tuple[float, float],
    *,
    sign: str = "absolute_value",
    cmap: str | Colormap | None = None,
    width: int = 8,
) -> np.ndarray:
    """``picture`` with a vertical colour bar on its right, labelled with the values at its ends.

    The bar is the sign's colour map as :func:`overlay` draws it (high end at the top);
    the labels are ``span`` (from :func:`value_range`), written ``%.3g`` in PIL's
    default font.

    Args:
        picture: float ``[H, W, 3]`` in [0, 1], such as :func:`overlay` returns.
        span: ``(low end, high end)`` of the colour map, in attribution units.
        sign: the sign the picture was drawn with (one of :data:`SIGNS`).
        cmap: the colour map it was drawn with, if not the sign's default.
        width: width of the bar in pixels.

    Returns:
        float32 ``[H, W + bar and labels, 3]`` in [0, 1].

    Raises:
        ValueError: ``picture`` not ``[H, W, 3]``, ``width < 1``, unknown sign or colour map.

    >>> framed = with_colorbar(np.ones((32, 40, 3)), (0.0, 1.5))
    >>> framed.shape[0], framed.shape[1] > 40 + 2 + 8
    (32, True)
    """
    _check_sign(sign)
    pixels = np.asarray(picture, np.float32)
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise ValueError(f"picture must be [H, W, 3], got shape {pixels.shape}")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    height = pixels.shape[0]
    low_end = -1.0 if sign == "all" else 0.0
    ramp = np.linspace(1.0, low_end, height)[:, None]
    bar = np.repeat(_colour(ramp, sign, cmap)[..., :3], width, axis=1).astype(np.float32)
    labels = [f"{span[1]:.3g}", f"{span[0]:.3g}"]
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [measure.textbbox((0, 0), text, font=font) for text in labels]
    text_width = max(box[2] - box[0] for box in boxes) + 4
    panel = Image.new("RGB", (text_width, height), "white")
    draw = ImageDraw.Draw(panel)
    top, bottom = boxes
    draw.text((2 - top[0], -top[1]), labels[0], fill="black", font=font)
    draw.text((2 - bottom[0], height - (bottom[3] - bottom[1]) - bottom[1]), labels[1], fill="black", font=font)
    gap = np.ones((height, 2, 3), np.float32)
    return np.concatenate([pixels, gap, bar, np.asarray(panel, np.float32) / 255.0], axis=1)


def _over_white(tiles: np.ndarray) -> np.ndarray:
    if tiles.shape[-1] == 3:
        return tiles
    alpha = tiles[..., 3:]
    return tiles[..., :3] * alpha + (1 - alpha)


def grid(
    images: Any,
    attributions: Mapping[str, Any],
    *,
    method: str = "blended_heat_map",
    sign: str = "absolute_value",
    titles: bool = True,
    cmap: str | Colormap | None = None,
    alpha_overlay: float = 0.5,
    outlier_perc: float = 2,
    scale: int = 1,
    padding: int = 2,
) -> Image.Image:
    """A table of pictures: one row per image, the image then one column per attribution method.

    Source: Captum's ``visualize_image_attr_multiple`` (one image, several methods and
    signs in a matplotlib row), here for many images and many attribution methods at
    once, drawn straight into a PIL image.

    Each column is :func:`overlay` with the shared ``method`` and ``sign``
    (``alpha_scaling`` composed over white). With ``titles`` a header row carries
    ``"image"`` and the mapping's keys in PIL's default font; a column is widened,
    its tiles centred, when its title is wider than the tiles.

    Args:
        images: ``[N, H, W, C]`` (or one ``[H, W, C]``) as in :func:`overlay`.
        attributions: method name to attributions matching ``images`` as in
            :func:`overlay`; columns follow the mapping's order.
        method, sign, cmap, alpha_overlay, outlier_perc: as in :func:`overlay`.
        titles: draw the header row.
        scale: integer nearest-neighbour magnification of every tile.
        padding: white pixels between and around tiles.

    Returns:
        An RGB PIL image of width ``sum(column widths) + padding * (columns + 1)`` and
        height ``header + N * H * scale + padding * (N + 1)``.

    Raises:
        ValueError: no attributions, ``scale < 1`` or ``padding < 0``, and whatever
            :func:`overlay` rejects.

    Example:
        >>> import jaxplain as jx
        >>> images = jx.demo.load_samples().images[:2]
        >>> rng = np.random.default_rng(0)
        >>> sheet = grid(images, {"a": rng.normal(size=(2, 64, 64)), "b": rng.normal(size=(2, 64, 64))}, titles=False)
        >>> sheet.size  # three columns (the image, a, b) and two rows of 64 px, 2 px apart
        (200, 134)
    """
    if not attributions:
        raise ValueError("grid needs at least one attribution")
    if scale < 1 or padding < 0:
        raise ValueError(f"scale must be >= 1 and padding >= 0, got {scale} and {padding}")
    pictures = np.asarray(images)
    single = pictures.ndim == 3
    if single:
        pictures = pictures[None]
    columns = {"image": overlay(pictures, np.zeros(pictures.shape[:-1]), method="original_image")}
    for name, attribution in attributions.items():
        values = np.asarray(attribution)
        columns[name] = _over_white(
            overlay(
                pictures,
                values[None] if single else values,
                method=method,
                sign=sign,
                cmap=cmap,
                alpha_overlay=alpha_overlay,
                outlier_perc=outlier_perc,
            )
        )
    rows, height, width = pictures.shape[:3]
    tile_h, tile_w = height * scale, width * scale
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = {name: measure.textbbox((0, 0), name, font=font) for name in columns} if titles else {}
    widths = [max(tile_w, boxes[name][2] - boxes[name][0]) if titles else tile_w for name in columns]
    header = max(box[3] - box[1] for box in boxes.values()) + padding if titles else 0
    canvas = Image.new(
        "RGB", (sum(widths) + padding * (len(widths) + 1), header + rows * tile_h + padding * (rows + 1)), "white"
    )
    draw = ImageDraw.Draw(canvas)
    left = padding
    for (name, tiles), column_width in zip(columns.items(), widths):
        if titles:
            box = boxes[name]
            draw.text(
                (left + (column_width - (box[2] - box[0])) // 2 - box[0], padding - box[1]),
                name,
                fill="black",
                font=font,
            )
        offset = left + (column_width - tile_w) // 2
        for row, tile in enumerate(tiles):
            big = np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)
            canvas.paste(to_pil(np.clip(big, 0, 1)), (offset, header + padding + row * (tile_h + padding)))
        left += column_width + padding
    return canvas
