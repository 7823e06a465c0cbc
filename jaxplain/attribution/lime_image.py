"""The ``lime`` package's image explainer (lime/lime_image.py, lime_base.py), batched.

Superpixels come from scikit-image (quickshift with LIME's settings by default) on the
host; everything after, the perturbed images, the model's scores, the cosine-kernel
weights, feature selection and the weighted ridge fits for every label, is one
jit-compiled program over the whole batch. LIME explains one image at a time.
Images with different numbers of superpixels share one padded segment axis: padded
segments own no pixel and are excluded from distances and fits.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.attribution import linear
from jaxplain.attribution._common import check_batch_size, check_choice, map_over, prepare, require_key, run
from jaxplain.attribution.surrogate import check_samples
from jaxplain.model import Model
from jaxplain.typing import Array, Target

SEGMENTATIONS = ("quickshift", "slic", "felzenszwalb")
QUICKSHIFT_DEFAULTS = {"kernel_size": 4, "max_dist": 200, "ratio": 0.2}
FEATURE_SELECTIONS = ("auto", "highest_weights", "forward_selection", "none")
SCORES = ("softmax", "sigmoid", "logits")


class LimeImageExplanation(NamedTuple):
    """What ``lime_image`` found for every image and explained label.

    Attributes:
        segments: ``[N, H, W]`` superpixel ids ``0 .. S_n - 1``.
        labels: ``[N, L]`` explained labels (top labels first, as LIME's ``top_labels``).
        weights: ``[N, L, S]`` ridge coefficient of each superpixel (0 where not selected or padded).
        intercept: ``[N, L]``.
        score: ``[N, L]`` weighted R^2 of the surrogate on the samples.
        local_pred: ``[N, L]`` the surrogate's prediction for the unperturbed image.

    Example:
        >>> import jax.numpy as jnp
        >>> found = LimeImageExplanation(segments=jnp.array([[[0, 1]]]), labels=jnp.array([[3]]),
        ...                              weights=jnp.array([[[0.5, -1.0]]]), intercept=jnp.zeros((1, 1)),
        ...                              score=jnp.ones((1, 1)), local_pred=jnp.zeros((1, 1)))
        >>> found.heatmap().tolist()
        [[[[0.5, -1.0]]]]
    """

    segments: Array
    labels: Array
    weights: Array
    intercept: Array
    score: Array
    local_pred: Array

    def heatmap(self) -> Array:
        """``[N, L, H, W]``: each pixel carries its superpixel's weight."""
        return jax.vmap(lambda w, s: w[:, s])(self.weights, self.segments)


def segment_images(
    images: Any, *, algorithm: str = "quickshift", seed: int = 0, options: dict[str, Any] | None = None
) -> np.ndarray:
    """``[N, H, W]`` superpixels of ``[N, H, W, 3]`` images by scikit-image, ids made contiguous from 0.

    ``quickshift`` uses LIME's settings (``kernel_size=4, max_dist=200, ratio=0.2``) and
    ``rng=seed`` (LIME passes ``random_seed``, which scikit-image >= 0.19 renamed ``rng``:
    LIME's wrapper drops it, so LIME's quickshift always runs with scikit-image's
    default ``rng=42``); ``slic`` and ``felzenszwalb`` scikit-image's defaults;
    ``options`` override them.

    Args:
        images: ``[N, H, W, 3]`` images in their display range (not normalised).
        algorithm: one of ``"quickshift"``, ``"slic"``, ``"felzenszwalb"``.
        seed: quickshift's ``rng``.
        options: keyword arguments for the scikit-image function.

    Returns:
        int32 ``[N, H, W]`` superpixel ids, ``0 .. S_n - 1`` in each image.

    Raises:
        ValueError: an unknown ``algorithm``.

    Example:
        >>> import jaxplain as jx
        >>> images = jx.demo.load_samples().images[:1, ::4, ::4] / 255.0
        >>> segment_images(images, algorithm="slic", options={"n_segments": 4}).shape
        (1, 16, 16)
    """
    import skimage.segmentation

    check_choice("segmentation", algorithm, SEGMENTATIONS, method="lime_image")
    images = np.asarray(images, np.float64)
    settings = dict(QUICKSHIFT_DEFAULTS, rng=seed) if algorithm == "quickshift" else {}
    settings.update(options or {})
    function = getattr(skimage.segmentation, algorithm)
    return contiguous_ids([function(image, **settings) for image in images])


def contiguous_ids(segments: Any) -> np.ndarray:
    """``[N, H, W]`` int32 superpixel ids renumbered ``0 .. S_n - 1`` per image.

    Args:
        segments: ``[N, H, W]`` integer ids (any values, such as SLIC's from 1).

    Returns:
        int32 ``[N, H, W]``, each image's ids in increasing order of the old ones.

    Example:
        >>> contiguous_ids([[[1, 5], [5, 9]]]).tolist()
        [[[0, 1], [1, 2]]]
    """
    return np.stack([np.unique(s, return_inverse=True)[1].reshape(np.shape(s)) for s in segments]).astype(np.int32)


def _segment_means(image: Array, segments: Array, count: int) -> Array:
    """Every pixel replaced by its superpixel's per-channel mean (LIME's ``hide_color=None``)."""
    flat = segments.reshape(-1)
    sums = jax.ops.segment_sum(image.reshape(-1, image.shape[-1]), flat, count)
    sizes = jax.ops.segment_sum(jnp.ones_like(flat, image.dtype), flat, count)
    return (sums / jnp.maximum(sizes, 1)[:, None])[segments]


def _cosine_distance_to_ones(samples: Array, valid: Array) -> Array:
    """sklearn's cosine distance of each sample row to the all-ones row, on valid columns."""
    rows = jnp.where(valid[None], samples, 0.0)
    norms = jnp.sqrt(jnp.sum(rows * rows, axis=-1)) * jnp.sqrt(jnp.sum(valid))
    cosine = jnp.where(norms > 0, jnp.sum(rows, axis=-1) / jnp.where(norms > 0, norms, 1.0), 0.0)
    return jnp.clip(1.0 - cosine, 0.0, 2.0)


def _select(X, y, w, valid, *, method: str, num_features: int) -> Array:
    """The active superpixels for one label (lime_base ``feature_selection``)."""
    if method == "none":
        return valid
    if method == "highest_weights":
        coef = linear.ridge(X, y, w, 0.01, valid).coef
        order = jnp.argsort(jnp.where(valid, -jnp.abs(coef), jnp.inf))
        rank = jnp.argsort(order)
        return valid & (rank < num_features)

    def add_best(_, used):
        def score_with(j):
            active = used.at[j].set(True)
            fit = linear.ridge(X, y, w, 0.0, active)
            return linear.weighted_r2(fit, jnp.where(active[None], X, 0.0), y, w)

        scores = jax.vmap(score_with)(jnp.arange(X.shape[1]))
        scores = jnp.where(valid & ~used, scores, -jnp.inf)
        return jnp.where(jnp.any(valid & ~used), used.at[jnp.argmax(scores)].set(True), used)

    return jax.lax.fori_loop(0, num_features, add_best, jnp.zeros_like(valid))


def _explain_label(X, y, w, valid, *, selection: str, num_features: int):
    active = _select(X, y, w, valid, method=selection, num_features=num_features)
    fit = linear.ridge(X, y, w, 1.0, active)
    masked = jnp.where(active[None], X, 0.0)
    return fit.coef, fit.intercept, linear.weighted_r2(fit, masked, y, w), fit.intercept + jnp.sum(fit.coef)


def _lime_image_core(
    model, inputs, target, key, arrays, *, num_segments, num_samples, top_labels, scores, kernel_width, selection,
    num_features, batch_size
):
    segments, valid, fudged = arrays["segments"], arrays["valid"], arrays["fudged"]
    samples = arrays.get("samples")
    batch = inputs.shape[0]
    if samples is None:
        samples = jax.random.bernoulli(key, 0.5, (batch, num_samples, num_segments)).astype(jnp.int32)
        samples = samples.at[:, 0].set(1)
    samples = samples.astype(inputs.dtype)
    squash = {"softmax": jax.nn.softmax, "sigmoid": jax.nn.sigmoid, "logits": lambda z: z}[scores]

    def predict(rows):
        keep = jax.vmap(lambda row, s: row[s])(rows, segments)[..., None] > 0
        return squash(model(jnp.where(keep, inputs, fudged)))

    predictions = jnp.swapaxes(map_over(predict, jnp.swapaxes(samples, 0, 1), batch_size), 0, 1)
    if top_labels:
        labels = jnp.argsort(predictions[:, 0], axis=-1)[:, ::-1][:, :top_labels]
    else:
        labels = target[:, None]
    outputs = jnp.take_along_axis(predictions, labels[:, None, :], axis=2)
    distances = jax.vmap(_cosine_distance_to_ones)(samples, valid)
    weights = jnp.sqrt(jnp.exp(-(distances**2) / kernel_width**2))
    per_label = jax.vmap(
        lambda X, Y, w, v: jax.vmap(
            lambda y: _explain_label(X, y, w, v, selection=selection, num_features=num_features)
        )(Y.T),
    )
    coef, intercept, r2, local = per_label(samples, outputs, weights, valid)
    return LimeImageExplanation(segments, labels, coef, intercept, r2, local)


def lime_image(
    model: Any,
    inputs: Array,
    target: Target = None,
    *,
    key: Array | None = None,
    top_labels: int | None = 5,
    num_samples: int = 1000,
    hide_color: float | None = None,
    kernel_width: float = 0.25,
    num_features: int = 100000,
    feature_selection: str = "auto",
    segments: Any = None,
    segmentation: str = "quickshift",
    segmentation_options: dict[str, Any] | None = None,
    samples: Any = None,
    scores: str = "softmax",
    batch_size: int | None = 10,
) -> LimeImageExplanation:
    """LIME's image explainer (``LimeImageExplainer.explain_instance``; Ribeiro et al. 2016), on a batch.

    Superpixels (``segments`` given, or scikit-image's ``segmentation`` of the images,
    un-normalised with the model's mean and std when it has them) are switched off at
    random (row 0 keeps all); an off superpixel shows its mean colour
    (``hide_color=None``) or ``hide_color`` (in the inputs' space). Sample weights are
    ``sqrt(exp(-d^2 / kernel_width^2))`` with ``d`` the cosine distance between the binary
    row and the all-ones row; per label a weighted ridge (``alpha=1``) is fitted on the
    superpixels ``feature_selection`` keeps (``"auto"``: forward selection for
    ``num_features <= 6``, else the highest weights of a ridge with ``alpha=0.01``).

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` images, normalised as the model expects.
        target: labels to explain (int or ``[N]``); None explains the ``top_labels``
            highest-scoring labels of each image, as LIME does by default.
        key: PRNG key for the samples and quickshift's seed (unless ``samples`` and ``segments`` are given).
        top_labels: how many top labels to explain when ``target`` is None.
        num_samples: perturbed samples per image, the unperturbed first.
        hide_color: the value of an off superpixel (None: its mean colour).
        kernel_width: width of the sample-weight kernel.
        num_features: how many superpixels the surrogate may use.
        feature_selection: ``"auto"``, ``"highest_weights"``, ``"forward_selection"`` or ``"none"``.
        segments: ``[N, H, W]`` integer superpixel ids to use instead of segmenting.
        segmentation: the scikit-image algorithm (:func:`segment_images`).
        segmentation_options: its keyword arguments.
        samples: binary ``[num_samples, S]`` or ``[N, num_samples, S]`` rows to use instead.
        scores: what LIME's ``classifier_fn`` returns: ``"softmax"`` probabilities (LIME's
            usual setting), ``"sigmoid"`` or raw ``"logits"``.
        batch_size: samples per forward pass for every image (LIME's 10; None for all at once).

    Returns:
        A :class:`LimeImageExplanation`; :func:`image_and_mask` draws it as LIME does.

    Raises:
        ValueError: inputs that are not images, segments of another shape, no key where
            one is needed, unknown choices, bad ``top_labels``, samples or target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> quadrants = (jax.numpy.arange(16)[:, None] // 8) * 2 + jax.numpy.arange(16) // 8
        >>> segments = jax.numpy.broadcast_to(quadrants, (2, 16, 16))  # 4 superpixels per image
        >>> found = jx.lime_image(model, x, 0, key=jax.random.PRNGKey(0), segments=segments, num_samples=16,
        ...                       feature_selection="none", batch_size=8)
        >>> found.weights.shape, found.heatmap().shape
        ((2, 1, 4), (2, 1, 16, 16))
    """
    check_choice("feature_selection", feature_selection, FEATURE_SELECTIONS, method="lime_image")
    check_choice("scores", scores, SCORES, method="lime_image")
    check_batch_size(batch_size, method="lime_image")
    model, inputs, labels = prepare(model, inputs, target if target is not None else 0, method="lime_image")
    if inputs.ndim != 4:
        raise ValueError(f"lime_image: inputs must be images [N, H, W, C], got shape {inputs.shape}")
    if target is not None:
        top_labels = None
    elif not isinstance(top_labels, int) or top_labels < 1:
        raise ValueError(f"lime_image: with target=None, top_labels must be a positive int, got {top_labels!r}")
    if samples is None or segments is None:
        key = require_key(key, method="lime_image")
    segments = _segments(model, inputs, segments, key, segmentation, segmentation_options)
    counts = segments.reshape(segments.shape[0], -1).max(axis=1) + 1
    num_segments = int(counts.max())
    valid = jnp.arange(num_segments)[None, :] < jnp.asarray(counts)[:, None]
    segments = jnp.asarray(segments)
    if hide_color is None:
        fudged = jax.vmap(lambda image, s: _segment_means(image, s, num_segments))(inputs, segments)
    else:
        fudged = jnp.full_like(inputs, hide_color)
    arrays = {"segments": segments, "valid": valid, "fudged": fudged}
    if samples is not None:
        arrays["samples"], num_samples = check_samples(samples, inputs.shape[0], num_segments, method="lime_image")
    if feature_selection == "auto":
        feature_selection = "forward_selection" if num_features <= 6 else "highest_weights"
    if feature_selection == "highest_weights" and num_features >= num_segments:
        feature_selection = "none"
    return run(
        _lime_image_core, model, inputs, labels, key=key, arrays=arrays, num_segments=num_segments,
        num_samples=int(num_samples), top_labels=top_labels, scores=scores, kernel_width=float(kernel_width),
        selection=feature_selection, num_features=int(num_features), batch_size=batch_size,
    )


def _segments(model, inputs, segments, key, algorithm, options) -> np.ndarray:
    if segments is not None:
        segments = np.asarray(segments)
        if segments.shape != inputs.shape[:3] or not np.issubdtype(segments.dtype, np.integer):
            raise ValueError(f"lime_image: segments must be integer ids of shape {inputs.shape[:3]}, got {segments.dtype} {segments.shape}")
        return contiguous_ids(segments)
    images = np.asarray(inputs)
    if isinstance(model, Model) and model.mean is not None and model.std is not None:
        images = images * np.asarray(model.std) + np.asarray(model.mean)
    seed = int(jax.random.randint(key, (), 0, 1000))
    return segment_images(images, algorithm=algorithm, seed=seed, options=options)


def image_and_mask(
    explanation: LimeImageExplanation,
    images: Array,
    label_rank: int = 0,
    *,
    positive_only: bool = True,
    negative_only: bool = False,
    hide_rest: bool = False,
    num_features: int = 5,
    min_weight: float = 0.0,
) -> tuple[Array, Array]:
    """LIME's ``ImageExplanation.get_image_and_mask`` for the ``label_rank``-th explained label of every image.

    Keeps the ``num_features`` superpixels of largest weight (positive, negative, or both
    signed in the mask), greys out (zeros) the rest with ``hide_rest``; in the signed mode
    the kept superpixels get their first (negative) or second (positive) channel set to
    the image's maximum, as LIME draws them.

    Args:
        explanation: what :func:`lime_image` returned.
        images: ``[N, H, W, C]`` images to draw on (LIME's: the unnormalised ones).
        label_rank: which explained label (0: the first, the top label with ``top_labels``).
        positive_only: keep superpixels of positive weight only (LIME's default).
        negative_only: keep superpixels of negative weight only.
        hide_rest: zero the superpixels not kept.
        num_features: how many superpixels to keep.
        min_weight: the smallest weight magnitude kept.

    Returns:
        ``(images [N, H, W, C], mask [N, H, W])``: the drawn images and the kept
        superpixels (1, or -1 for negative ones in the signed mode).

    Example:
        >>> import jax.numpy as jnp
        >>> found = LimeImageExplanation(segments=jnp.array([[[0, 1]]]), labels=jnp.array([[3]]),
        ...                              weights=jnp.array([[[0.5, -1.0]]]), intercept=jnp.zeros((1, 1)),
        ...                              score=jnp.ones((1, 1)), local_pred=jnp.zeros((1, 1)))
        >>> drawn, mask = image_and_mask(found, jnp.ones((1, 1, 2, 3)), num_features=1)
        >>> mask.tolist()
        [[[1, 0]]]
    """
    weights = explanation.weights[:, label_rank]
    magnitude = jnp.abs(weights)
    if positive_only or negative_only:
        eligible = (weights > 0) & (weights > min_weight) if positive_only else (weights < 0) & (magnitude > min_weight)
    else:
        eligible = (weights != 0) & (magnitude >= min_weight)
    order = jnp.argsort(-magnitude, axis=1)
    ranked_eligible = jnp.take_along_axis(eligible, order, axis=1)
    position = jnp.cumsum(ranked_eligible, axis=1) - 1
    if positive_only or negative_only:
        chosen_sorted = ranked_eligible & (position < num_features)
    else:
        chosen_sorted = ranked_eligible & (jnp.arange(weights.shape[1])[None] < num_features)
    chosen = jnp.zeros_like(eligible).at[jnp.arange(weights.shape[0])[:, None], order].set(chosen_sorted)
    pixels = jax.vmap(lambda c, s: c[s])(chosen, explanation.segments)
    images = jnp.asarray(images)
    shown = jnp.where(pixels[..., None], images, 0.0 if hide_rest else images)
    if positive_only or negative_only:
        return shown, pixels.astype(jnp.int32)
    signs = jax.vmap(lambda w, s: jnp.sign(w)[s])(weights, explanation.segments)
    mask = jnp.where(pixels, signs, 0).astype(jnp.int32)
    channel = jnp.where(signs > 0, 1, 0)
    peak = jnp.max(images, axis=(1, 2, 3), keepdims=True)[..., 0]
    for c in (0, 1):
        paint = pixels & (channel == c)
        shown = shown.at[..., c].set(jnp.where(paint, peak, shown[..., c]))
    return shown, mask
