"""Quality metrics of explanations: completeness, deletion/insertion, pointing game, sanity checks.

Every metric returns one value per image (``[N]``) and is jit-compiled; the deletion and
insertion curves evaluate all their steps as one vmapped axis (``batch_size`` chunks it
through ``lax.map``), and the randomisation sanity check recomputes the explanation once
per randomised layer (one compilation serves every set of weights).

Conventions shared by the map-based metrics:

* An attribution ``[N, H, W, C]`` is reduced to a map ``[N, H, W]`` by summing over
  channels; ``[N, H, W]`` maps are taken as they are.
* Masks are boolean (or 0/1) ``[N, H, W]`` or ``[N, H, W, 1]`` arrays.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.attribution._common import (
    broadcast_baselines,
    check_batch_size,
    check_choice,
    is_concrete,
    map_over,
    prepare,
    run,
    selected_output,
    traced_once,
)
from jaxplain.attribution._prototype_post import gaussian_matrix
from jaxplain.attribution.path import convergence_delta
from jaxplain.model import Model, as_model
from jaxplain.road import noisy_linear_imputation, road  # noqa: F401  (ROAD lives in its own file)
from jaxplain.typing import Array, Target

SCORES = ("softmax", "logits")
SUBSTRATES = ("zeros", "blur")
ORDERS = ("cascading", "independent")
SIMILARITIES = ("spearman", "ssim")

RISE_BLUR_SIZE = 11
"""Side of the Gaussian kernel of the insertion substrate (RISE's ``evaluation.py``: ``klen=11``)."""

RISE_BLUR_SIGMA = 5.0
"""Sigma of that kernel (RISE's ``nsig=5``)."""


# --------------------------------------------------------------------------------------------
# completeness


def completeness(model: Any, attributions: Array, inputs: Array, target: Target, *, baselines: Any = None) -> Array:
    """Completeness gap ``|sum_i attr_i - (F_t(x) - F_t(x'))|`` per example.

    The completeness axiom of integrated gradients (Sundararajan et al. 2017, Prop. 1;
    "summation to delta" in DeepLift, Shrikumar et al. 2017): attributions against the
    baseline ``x'`` should add up to the change of the target output. This is the
    absolute value of :func:`jaxplain.convergence_delta` (Captum's
    ``compute_convergence_delta``), whose sign tells over- from under-attribution.

    Args:
        model: a ``jx.Model``, a bound Flax module or a JAX function ``[N, ...] -> [N, K]``.
        attributions: shaped like ``inputs``.
        inputs: the explained inputs.
        target: an int, an int array ``[N]``, or None for the predicted class.
        baselines: the reference ``x'``: None (zeros), scalar, ``[C]``, ``[1, ...]`` or ``[N, ...]``.

    Returns:
        ``[N]`` non-negative gaps; 0 means the attributions are complete.

    Raises:
        ValueError: attributions and inputs of different shapes, bad baselines or target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> attributions = jx.integrated_gradients(model, x, 0, n_steps=32)
        >>> gap = jx.metrics.completeness(model, attributions, x, 0)
        >>> change = jx.metrics.completeness(model, 0 * attributions, x, 0)  # |F(x) - F(0)|
        >>> bool((gap < 0.1 * change).all())
        True
    """
    return jnp.abs(convergence_delta(model, attributions, inputs, target, baselines=baselines))


# --------------------------------------------------------------------------------------------
# shared checks


def _finite(array: Array, name: str, method: str) -> None:
    if is_concrete(array) and not bool(jnp.all(jnp.isfinite(array))):
        raise ValueError(f"{method}: {name} contain NaN or inf")


def _saliency_map(attributions: Any, spatial: tuple[int, ...] | None, *, method: str) -> Array:
    """``[N, H, W]`` map: the channel sum of ``[N, H, W, C]`` attributions, or ``[N, H, W]`` as is."""
    attributions = jnp.asarray(attributions)
    if attributions.ndim not in (3, 4):
        raise ValueError(
            f"{method}: attributions must be NHWC [N, H, W, C] or a map [N, H, W], got shape {attributions.shape}"
        )
    if not jnp.issubdtype(attributions.dtype, jnp.floating):
        attributions = attributions.astype(jnp.float32)
    _finite(attributions, "attributions", method)
    if spatial is not None and attributions.shape[:3] != spatial:
        hint = ""
        if attributions.ndim == 4 and attributions.shape[2:] == spatial[1:] and attributions.shape[1] in (1, 3):
            hint = "; this looks like NCHW, pass attributions.transpose(0, 2, 3, 1)"
        raise ValueError(
            f"{method}: attributions of shape {attributions.shape} do not match [N, H, W] = {list(spatial)}{hint}"
        )
    return attributions.sum(axis=-1) if attributions.ndim == 4 else attributions


def _check_masks(masks: Any, spatial: tuple[int, ...], *, method: str) -> Array:
    masks = jnp.asarray(masks)
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if masks.shape != spatial:
        raise ValueError(
            f"{method}: masks must be [N, H, W] or [N, H, W, 1] matching the attributions' {list(spatial)}, "
            f"got shape {tuple(jnp.shape(masks))}"
        )
    if masks.dtype != jnp.bool_:
        _finite(masks, "masks", method)
        if is_concrete(masks) and not bool(jnp.all((masks == 0) | (masks == 1))):
            raise ValueError(f"{method}: masks must be boolean or 0/1")
        masks = masks != 0
    return masks


# --------------------------------------------------------------------------------------------
# deletion and insertion


def gaussian_blur(images: Array, size: int = RISE_BLUR_SIZE, sigma: float = RISE_BLUR_SIGMA) -> Array:
    """The RISE authors' blur of NHWC images: a ``size x size`` Gaussian, zero padding.

    RISE's ``evaluation.py`` (Petsiuk et al. 2018) builds the kernel as
    ``scipy.ndimage.gaussian_filter`` of a centred Dirac on a ``size x size`` grid
    (``mode="reflect"``, so the truncated tails fold back and the kernel sums to 1) and
    convolves every channel with ``padding=size // 2`` zeros, which darkens the border.

    Args:
        images: ``[N, H, W, C]``.
        size: side of the kernel (odd).
        sigma: its standard deviation in pixels.

    Returns:
        The blurred images, ``[N, H, W, C]``.

    Example:
        >>> import jax.numpy as jnp
        >>> blurred = gaussian_blur(jnp.ones((1, 16, 16, 1)))
        >>> round(float(blurred[0, 8, 8, 0]), 4), bool(blurred[0, 0, 0, 0] < 0.5)  # the border darkens
        (1.0, True)
    """
    taps = jnp.asarray(gaussian_matrix(size, float(sigma))[:, size // 2], images.dtype)
    kernel = jnp.tile((taps[:, None] * taps[None, :])[:, :, None, None], (1, 1, 1, images.shape[-1]))
    pad = size // 2
    return jax.lax.conv_general_dilated(
        images,
        kernel,
        window_strides=(1, 1),
        padding=((pad, size - 1 - pad), (pad, size - 1 - pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=images.shape[-1],
        precision=jax.lax.Precision.HIGHEST,
    )


def pixel_ranks(saliency: Array) -> Array:
    """``[N, H*W]`` position of every pixel in the descending order of ``saliency`` ``[N, H, W]``.

    Ties keep the row-major (raster) order: among equal values the pixel with the lower
    flat index ``h * W + w`` comes first (a stable sort of ``-saliency``; ``-0.0`` and
    ``0.0`` are equal). The rank is the inverse permutation of that order.

    Args:
        saliency: ``[N, H, W]`` maps.

    Returns:
        int ``[N, H*W]`` ranks (0: the most salient pixel).

    Example:
        >>> import jax.numpy as jnp
        >>> pixel_ranks(jnp.array([[[0.1, 0.9], [0.5, 0.5]]])).tolist()
        [[3, 0, 1, 2]]
    """
    flat = saliency.reshape(saliency.shape[0], -1)
    order = jnp.argsort(-flat + 0.0, axis=1, stable=True)
    positions = jnp.broadcast_to(jnp.arange(flat.shape[1]), flat.shape)
    return jnp.zeros_like(order).at[jnp.arange(flat.shape[0])[:, None], order].set(positions)


def step_counts(pixels: int, steps: int | None, pixels_per_step: int | None) -> tuple[int, ...]:
    """Pixels changed after each step, from 0 to ``pixels`` (``steps + 1`` points).

    With ``pixels_per_step=p`` (RISE's ``step``): ``min(i p, pixels)`` for
    ``i = 0 .. ceil(pixels / p)``. Otherwise ``floor(i pixels / steps)`` for ``i = 0 .. steps``.

    Args:
        pixels: how many pixels the image has.
        steps: the number of steps (used when ``pixels_per_step`` is None).
        pixels_per_step: pixels changed per step.

    Returns:
        The counts, from 0 to ``pixels``.

    Example:
        >>> step_counts(10, 4, None), step_counts(10, None, 4)
        ((0, 2, 5, 7, 10), (0, 4, 8, 10))
    """
    if pixels_per_step is not None:
        count = -(-pixels // pixels_per_step)
        return tuple(min(i * pixels_per_step, pixels) for i in range(count + 1))
    return tuple(i * pixels // steps for i in range(steps + 1))


def _causal_core(model, inputs, target, key, arrays, *, insertion, counts, scores, batch_size, substrate, blur):
    n, height, width, _ = inputs.shape
    if substrate == "blur":
        start = gaussian_blur(inputs, *blur)
    elif substrate == "zeros":
        start = jnp.zeros_like(inputs)
    else:
        start = arrays["substrate"]
    ranks = pixel_ranks(arrays["saliency"]).reshape(n, height, width, 1)
    before, after = (start, inputs) if insertion else (inputs, start)

    def score(count):
        outputs = model(jnp.where(ranks < count, after, before))
        if scores == "softmax":
            outputs = jax.nn.softmax(outputs, axis=-1)
        return selected_output(outputs, target)

    curves = map_over(score, jnp.asarray(counts, jnp.int32), batch_size).T
    fractions = jnp.asarray(counts, inputs.dtype) / (height * width)
    return jnp.trapezoid(curves, fractions, axis=1), curves


def _causal_metric(
    name, model, inputs, attributions, target, *, insertion, steps, pixels_per_step, substrate, scores,
    batch_size, blur_size, blur_sigma, return_curves,
):
    check_choice("scores", scores, SCORES, method=name)
    check_batch_size(batch_size, method=name)
    model, inputs, target = prepare(model, inputs, target, method=name)
    if inputs.ndim != 4:
        raise ValueError(f"{name}: inputs must be NHWC [N, H, W, C], got shape {tuple(inputs.shape)}")
    saliency = _saliency_map(attributions, tuple(inputs.shape[:3]), method=name)
    pixels = inputs.shape[1] * inputs.shape[2]
    if pixels_per_step is not None:
        if not isinstance(pixels_per_step, int) or pixels_per_step < 1:
            raise ValueError(f"{name}: pixels_per_step must be None or a positive int, got {pixels_per_step!r}")
    elif not isinstance(steps, int) or not 1 <= steps <= pixels:
        raise ValueError(f"{name}: steps must be an int in [1, {pixels}] (the pixel count), got {steps!r}")
    if not isinstance(blur_size, int) or blur_size < 1 or not blur_sigma > 0:
        raise ValueError(f"{name}: blur_size must be a positive int and blur_sigma positive")
    arrays = {"saliency": saliency}
    if isinstance(substrate, str):
        check_choice("substrate", substrate, SUBSTRATES, method=name)
    else:
        arrays["substrate"] = broadcast_baselines(substrate, inputs, method=name)
        _finite(arrays["substrate"], "substrate", name)
        substrate = "array"
    auc, curves = run(
        _causal_core,
        model,
        inputs,
        target,
        arrays=arrays,
        insertion=insertion,
        counts=step_counts(pixels, steps, pixels_per_step),
        scores=scores,
        batch_size=batch_size,
        substrate=substrate,
        blur=(blur_size, float(blur_sigma)),
    )
    return (auc, curves) if return_curves else auc


_CAUSAL_DOC = """

    The pixels (``H x W`` positions, all channels together) are ordered by the
    attribution summed over channels, most relevant first; ties keep raster order
    (:func:`pixel_ranks`). Step ``i`` {action} the first ``c_i`` pixels of that order
    (:func:`step_counts`), and the curve is the target's score at every step,
    ``c_0 = 0`` to ``c_last = H W``. All steps are one vmapped axis. The area is the
    trapezoid rule over the fraction of pixels changed, ``c_i / (H W)``, so it lies in
    [0, 1] for probabilities; with equal steps it equals the RISE authors'
    ``auc(arr) = (sum(arr) - arr[0] / 2 - arr[-1] / 2) / (len(arr) - 1)``.

    Args:
        model: a ``jx.Model``, a bound Flax module or a JAX function ``[N, H, W, C] -> [N, K]``.
        inputs: ``[N, H, W, C]`` (NHWC).
        attributions: ``[N, H, W, C]`` or a map ``[N, H, W]``.
        target: an int, an int array ``[N]``, or None for the predicted class.
        steps: number of steps (``steps + 1`` curve points); ignored with ``pixels_per_step``.
        pixels_per_step: pixels changed per step, as RISE's ``step`` (the last step may be
            smaller); the number of steps is then ``ceil(H W / pixels_per_step)``.
        substrate: {substrate}
        scores: ``"softmax"`` (the class probability, as RISE) or ``"logits"`` (raw outputs;
            the area is then not bounded by [0, 1]).
        batch_size: steps evaluated at once (None: all in one vmapped pass).
        blur_size: side of the Gaussian kernel of the ``"blur"`` substrate (RISE: 11).
        blur_sigma: its sigma in pixels (RISE: 5; see :func:`gaussian_blur`).
        return_curves: also return the curves ``[N, steps + 1]``.

    Returns:
        ``[N]`` areas, or ``(areas, curves)``.

    Raises:
        ValueError: attributions of another size, an unknown substrate or score, bad steps,
            batch size or target.

    Example:
{example}
    """


def deletion_auc(
    model: Any,
    inputs: Array,
    attributions: Array,
    target: Target,
    *,
    steps: int = 100,
    pixels_per_step: int | None = None,
    substrate: str | Array = "zeros",
    scores: str = "softmax",
    batch_size: int | None = None,
    blur_size: int = RISE_BLUR_SIZE,
    blur_sigma: float = RISE_BLUR_SIGMA,
    return_curves: bool = False,
) -> Array | tuple[Array, Array]:
    """Deletion metric (Petsiuk et al. 2018, RISE, Sec. 4.1): lower is better."""
    return _causal_metric(
        "deletion_auc", model, inputs, attributions, target, insertion=False, steps=steps,
        pixels_per_step=pixels_per_step, substrate=substrate, scores=scores, batch_size=batch_size,
        blur_size=blur_size, blur_sigma=blur_sigma, return_curves=return_curves,
    )


def insertion_auc(
    model: Any,
    inputs: Array,
    attributions: Array,
    target: Target,
    *,
    steps: int = 100,
    pixels_per_step: int | None = None,
    substrate: str | Array = "blur",
    scores: str = "softmax",
    batch_size: int | None = None,
    blur_size: int = RISE_BLUR_SIZE,
    blur_sigma: float = RISE_BLUR_SIGMA,
    return_curves: bool = False,
) -> Array | tuple[Array, Array]:
    """Insertion metric (Petsiuk et al. 2018, RISE, Sec. 4.1): higher is better."""
    return _causal_metric(
        "insertion_auc", model, inputs, attributions, target, insertion=True, steps=steps,
        pixels_per_step=pixels_per_step, substrate=substrate, scores=scores, batch_size=batch_size,
        blur_size=blur_size, blur_sigma=blur_sigma, return_curves=return_curves,
    )


deletion_auc.__doc__ += _CAUSAL_DOC.format(
    action="sets to the substrate",
    substrate='what deleted pixels become: ``"zeros"`` (RISE\'s deletion), ``"blur"`` (the '
    "blurred image), or a baseline array broadcastable to ``inputs``.",
    example="""        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> saliency = jx.saliency(model, x, 0)
        >>> areas, curves = jx.metrics.deletion_auc(model, x, saliency, 0, steps=4, return_curves=True)
        >>> areas.shape, curves.shape
        ((2,), (2, 5))""",
)
insertion_auc.__doc__ += _CAUSAL_DOC.format(
    action="copies from the image into the substrate",
    substrate='the image pixels are inserted into: ``"blur"`` (RISE\'s insertion, see '
    ':func:`gaussian_blur`), ``"zeros"``, or a baseline array broadcastable to ``inputs``.',
    example="""        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> saliency = jx.saliency(model, x, 0)
        >>> areas = jx.metrics.insertion_auc(model, x, saliency, 0, steps=4)
        >>> bool(((areas >= 0) & (areas <= 1)).all())
        True""",
)


# --------------------------------------------------------------------------------------------
# localisation


@partial(jax.jit, static_argnames="tolerance")
def _pointing_core(saliency: Array, masks: Array, *, tolerance: int) -> Array:
    offsets = np.arange(-tolerance, tolerance + 1)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= tolerance**2).astype(np.float32)
    near = jax.lax.conv_general_dilated(
        masks[..., None].astype(jnp.float32),
        jnp.asarray(disk)[:, :, None, None],
        window_strides=(1, 1),
        padding=((tolerance, tolerance), (tolerance, tolerance)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )[..., 0] > 0.5
    maxima = saliency == saliency.max(axis=(1, 2), keepdims=True)
    return jnp.all(jnp.where(maxima, near, True), axis=(1, 2))


def pointing_game(attributions: Array, masks: Array, *, tolerance: int = 15) -> Array:
    """Pointing game (Zhang et al. 2016, "Top-down neural attention by excitation backprop").

    A hit when the maximum of the map lies within ``tolerance`` pixels (Euclidean
    distance ``<= tolerance``) of the object mask, i.e. inside the mask dilated by a
    disk of that radius; the paper uses 15 pixels. TorchRay's ``PointingGame`` accepts
    distances ``< tolerance``; the two differ only at exactly that distance.

    When several pixels share the maximum, the map points at all of them, and it is a
    hit only if every one of them lies in the dilated mask: a flat map does not score
    by luck. An empty mask is always a miss.

    Args:
        attributions: ``[N, H, W, C]`` (summed over channels) or a map ``[N, H, W]``.
        masks: boolean ``[N, H, W]`` or ``[N, H, W, 1]`` object masks.
        tolerance: the radius in pixels (0: the maximum must be on the mask).

    Returns:
        ``[N]`` booleans.

    Example:
        >>> import jax.numpy as jnp
        >>> maps = jnp.zeros((2, 8, 8)).at[0, 1, 1].set(1.0).at[1, 6, 6].set(1.0)
        >>> masks = jnp.zeros((2, 8, 8), bool).at[:, :3, :3].set(True)
        >>> pointing_game(maps, masks, tolerance=0).tolist()
        [True, False]
    """
    saliency = _saliency_map(attributions, None, method="pointing_game")
    masks = _check_masks(masks, tuple(saliency.shape), method="pointing_game")
    if not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"pointing_game: tolerance must be a non-negative int, got {tolerance!r}")
    return _pointing_core(saliency, masks, tolerance=tolerance)


@jax.jit
def _energy_core(saliency: Array, masks: Array) -> Array:
    positive = jnp.maximum(saliency, 0.0)
    total = positive.sum(axis=(1, 2))
    inside = jnp.where(masks, positive, 0.0).sum(axis=(1, 2))
    return jnp.where(total > 0, inside / jnp.where(total > 0, total, 1.0), 0.0)


def mask_energy(attributions: Array, masks: Array) -> Array:
    """Energy-based pointing game (Wang et al. 2020, Score-CAM, Sec. 5.2).

    ``sum_{mask} L+ / sum L+``: the share of the map's positive mass ``L+ = max(L, 0)``
    inside the mask (the paper uses the bounding box); a map with no positive mass scores 0.

    Args:
        attributions: ``[N, H, W, C]`` (summed over channels) or a map ``[N, H, W]``.
        masks: boolean ``[N, H, W]`` or ``[N, H, W, 1]``.

    Returns:
        ``[N]`` values in [0, 1]; a uniform map scores the mask's area fraction.

    Example:
        >>> import jax.numpy as jnp
        >>> masks = jnp.zeros((1, 4, 4), bool).at[:, :2, :].set(True)  # the top half
        >>> mask_energy(jnp.ones((1, 4, 4)), masks).tolist()
        [0.5]
    """
    saliency = _saliency_map(attributions, None, method="mask_energy")
    return _energy_core(saliency, _check_masks(masks, tuple(saliency.shape), method="mask_energy"))


# --------------------------------------------------------------------------------------------
# model-parameter randomisation


def _average_ranks(values: Array) -> Array:
    """1-based ranks of a vector, ties sharing their average rank (SciPy's ``rankdata``)."""
    values = values + 0.0
    ordered = jnp.sort(values)
    below = jnp.searchsorted(ordered, values, side="left")
    up_to = jnp.searchsorted(ordered, values, side="right")
    return (below + up_to + 1) / 2.0


@jax.jit
def _spearman_core(a: Array, b: Array) -> Array:
    def row(x, y):
        rx, ry = _average_ranks(x), _average_ranks(y)
        rx, ry = rx - rx.mean(), ry - ry.mean()
        return jnp.sum(rx * ry) / jnp.sqrt(jnp.sum(rx * rx) * jnp.sum(ry * ry))

    return jax.vmap(row)(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1))


def spearman(a: Array, b: Array) -> Array:
    """Spearman rank correlation (Spearman 1904) of ``a[i]`` and ``b[i]``, flattened, per row.

    The Pearson correlation of the ranks; tied values share their average rank, found
    from the sorted row by two binary searches (the first and one past the last position
    of the value), which equals ``scipy.stats.spearmanr``. A constant row gives NaN, as SciPy.

    Args:
        a: ``[N, ...]`` values.
        b: ``[N, ...]`` values of the same shape.

    Returns:
        ``[N]`` correlations in [-1, 1].

    Example:
        >>> import jax.numpy as jnp
        >>> spearman(jnp.array([[1.0, 2.0, 3.0]]), jnp.array([[10.0, 20.0, 0.0]])).tolist()
        [-0.5]
    """
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"spearman: expected two arrays of one shape [N, ...], got {a.shape} and {b.shape}")
    _finite(a, "a", "spearman")
    _finite(b, "b", "spearman")
    return _spearman_core(a, b)


def _ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from skimage.metrics import structural_similarity

    values = []
    for x, y in zip(a, b):
        data_range = float(max(x.max(), y.max()) - min(x.min(), y.min())) or 1.0
        values.append(structural_similarity(x, y, data_range=data_range))
    return np.asarray(values, np.float32)


def _param_layers(params: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of the dicts that hold arrays directly (one per parameterised module), in dict order."""
    own = any(not isinstance(value, dict) for value in params.values())
    found = [prefix] if own else []
    for name, value in params.items():
        if isinstance(value, dict):
            found += _param_layers(value, prefix + (str(name),))
    return found


def _subtree(params: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        params = params[part]
    return params


def _replace(params: Any, path: tuple[str, ...], value: Any) -> Any:
    if not path:
        return value
    return {**params, path[0]: _replace(params[path[0]], path[1:], value)}


def _resolve_layers(params: Any, layers: Any, *, method: str) -> list[tuple[str, ...]]:
    """Named layers as paths of parameterised modules; ``ValueError`` naming unknown ones."""
    available = _param_layers(params)
    if isinstance(layers, str):
        layers = [layers]
    resolved, unknown = [], []
    for name in layers:
        path = tuple(name.split(".")) if isinstance(name, str) and name else None
        inside = [layer for layer in available if path and layer[: len(path)] == path]
        if not inside:
            unknown.append(name)
        resolved += [layer for layer in inside if layer not in resolved]
    if unknown:
        names = ", ".join(".".join(layer) for layer in available)
        raise ValueError(f"{method}: unknown layer(s) {unknown!r}; parameterised layers are: {names}")
    return resolved


@jax.jit
def _redraw(params: Any, key: Array) -> Any:
    """Fresh values for every parameterised module of ``params`` (see :func:`randomize_parameters`)."""
    leaves, structure = jax.tree_util.tree_flatten(params)
    sizes = [int(np.prod(jnp.shape(leaf))) for leaf in leaves]
    draws = jax.random.uniform(key, (sum(sizes),), jnp.float32, -1.0, 1.0)
    ends = np.cumsum(sizes)
    fresh = jax.tree_util.tree_unflatten(
        structure,
        [draws[end - size : end].reshape(jnp.shape(leaf)).astype(jnp.result_type(leaf))
         for leaf, size, end in zip(leaves, sizes, ends)],
    )
    for path in _param_layers(params):
        module = _subtree(fresh, path)
        weights = [leaf for leaf in jax.tree_util.tree_leaves(_subtree(params, path)) if jnp.ndim(leaf) >= 2]
        bound = 1.0 / float(np.sqrt(np.prod(weights[0].shape[:-1]))) if weights else 1.0
        fresh = _replace(fresh, path, jax.tree_util.tree_map(lambda leaf: bound * leaf, module))
    return fresh


def randomize_parameters(params: Any, layers: Any, key: Array) -> Any:
    """``params`` with the named layers re-initialised at random (a pure function).

    Every parameterised module at or below a named path (``"fc"``, ``"layer4"``,
    ``"layer3.1.conv2"``) is redrawn from PyTorch's default initialisation of
    ``Conv``/``Linear``, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for the kernel and the
    bias alike, with ``fan_in`` the product of all but the last axis of its first
    array with two or more axes (HWIO and ``(in, out)`` layouts); a module with only
    vectors (a normalisation's scale and bias) is drawn from ``U(-1, 1)``. The values
    come from one ``U(-1, 1)`` draw of ``key`` over all parameters (in tree-flatten
    order), so a layer gets the same weights whichever other layers are randomised
    with it, and the draw is compiled once per architecture: same key, same result.
    Buffers outside ``params`` (BatchNorm statistics) are left alone.

    Args:
        params: the nested parameter dict (``model.variables["params"]``).
        layers: a dotted path or a sequence of them.
        key: a ``jax.random`` key.

    Returns:
        The parameters, those of the named layers redrawn, the others unchanged.

    Raises:
        ValueError: for a path that holds no parameters.

    Example:
        >>> import jax, jaxplain as jx
        >>> params = jx.demo.load_model().variables["params"]
        >>> changed = randomize_parameters(params, "classifier", jax.random.PRNGKey(0))
        >>> bool((changed["classifier"]["kernel"] != params["classifier"]["kernel"]).all())
        True
    """
    paths = _resolve_layers(params, layers, method="randomize_parameters")
    fresh = _redraw(params, key)
    for path in paths:
        params = _replace(params, path, _subtree(fresh, path))
    return params


def _forward_order(model: Model, inputs: Array) -> tuple[tuple[str, ...], ...]:
    """Parameterised layer paths in the order the traced program first reads their parameters."""

    def compute():
        from jaxplain import program

        seen: list[tuple[str, ...]] = []
        for node in program.graph_of(model, inputs).nodes:
            for path in node.params_read:
                parts = tuple(path.split("."))
                if parts[0] == "params" and parts[1:-1] not in seen:
                    seen.append(parts[1:-1])
        return tuple(seen)

    return traced_once("forward_order", model, inputs, compute)


def randomisation_sanity(
    method: Callable[..., Array],
    model: Any,
    inputs: Array,
    target: Target,
    *,
    key: Array,
    order: str = "cascading",
    layers: Any = None,
    similarity: str = "spearman",
    **method_options: Any,
) -> dict[str, Array]:
    """Model-parameter randomisation test (Adebayo et al. 2018, "Sanity checks for saliency maps").

    Layers are taken from the output back to the input (the order their modules are
    first called in the forward pass, reversed). ``"cascading"``: step ``k`` randomises
    the top ``k`` layers together; ``"independent"``: step ``k`` randomises layer ``k``
    alone. At every step ``method`` explains the randomised model (with the target
    resolved once on the original model) and the map is compared to the original one.
    Weights come from :func:`randomize_parameters`, so same key, same result.

    Similarity is computed per image on the absolute maps summed over channels
    (``sum_c |attr|``, the paper's visualisation): ``"spearman"`` is the rank
    correlation of :func:`spearman`; ``"ssim"`` is scikit-image's
    ``structural_similarity`` (Wang et al. 2004) with the data range of the two maps.
    An explanation that ignores the weights keeps similarity 1.

    Args:
        method: any explainer ``method(model, inputs, target, **options)``; bind a
            stochastic method's key with ``functools.partial(method, key=...)``.
        model: a ``jx.Model`` (its ``variables["params"]`` are randomised).
        inputs: ``[N, H, W, C]``.
        target: an int, an int array ``[N]``, or None for the original model's prediction.
        key: the randomisation key.
        order: ``"cascading"`` or ``"independent"``.
        layers: dotted paths of the layers to randomise (a path covers every
            parameterised module below it); default: every parameterised module.
        similarity: ``"spearman"`` or ``"ssim"``.
        **method_options: passed on to ``method``.

    Returns:
        ``{layer name: [N] similarity}``, one entry per step, top layer first.

    Raises:
        TypeError: for a model without parameters to randomise (a bare function).
        ValueError: for unknown layers, orders or similarities, and the usual input checks.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> steps = jx.metrics.randomisation_sanity(jx.saliency, model, x, 0, key=jax.random.PRNGKey(0),
        ...                                         layers=("classifier", "features.0"))
        >>> list(steps), steps["classifier"].shape
        (['classifier', 'features.0'], (2,))
    """
    check_choice("order", order, ORDERS, method="randomisation_sanity")
    check_choice("similarity", similarity, SIMILARITIES, method="randomisation_sanity")
    if key is None:
        raise ValueError("randomisation_sanity: pass key=jax.random.PRNGKey(...) for the random weights")
    model = as_model(model)
    if not isinstance(model, Model) or "params" not in model.variables:
        raise TypeError("randomisation_sanity needs a jaxplain.Model with variables['params'], not a bare function")
    model, inputs, target = prepare(model, inputs, target, method="randomisation_sanity")
    params = model.variables["params"]
    if layers is None:
        layers = [".".join(path) for path in _param_layers(params)]
    chosen = _resolve_layers(params, layers, method="randomisation_sanity")
    called = _forward_order(model, inputs)
    rank = {path: index for index, path in enumerate(called)}
    top_down = sorted(chosen, key=lambda path: rank.get(path, len(rank)), reverse=True)

    def absolute_map(explained_model):
        explanation = jnp.abs(jnp.asarray(method(explained_model, inputs, target, **method_options)))
        return explanation.reshape(explanation.shape[:3] + (-1,)).sum(-1)

    reference = absolute_map(model)
    fresh = _redraw(params, key)
    results: dict[str, Array] = {}
    for index, path in enumerate(top_down):
        randomised = params
        for layer in top_down[: index + 1] if order == "cascading" else [path]:
            randomised = _replace(randomised, layer, _subtree(fresh, layer))
        maps = absolute_map(model.replace_variables({**model.variables, "params": randomised}))
        if similarity == "spearman":
            results[".".join(path)] = _spearman_core(reference, maps)
        else:
            results[".".join(path)] = jnp.asarray(_ssim(np.asarray(reference), np.asarray(maps)))
    return results
