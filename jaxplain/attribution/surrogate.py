"""Surrogate methods: Captum's ``Lime`` and ``KernelShap``.

Both sample binary vectors over feature groups, evaluate the model on the matching
perturbed inputs (one vmapped axis, ``batch_size`` samples of every image per forward
pass), weight each sample, and fit a linear model per image in JAX (``linear.py``).
Captum explains one example at a time; here the whole batch is one program.
Sources: captum/attr/_core/lime.py and kernel_shap.py.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.attribution import linear
from jaxplain.attribution._common import broadcast_baselines, check_choice, map_over, prepare, require_key, run
from jaxplain.attribution.perturbation import (
    coalition_inputs,
    target_scores,
    feature_groups,
    resolve_batch_size,
    spread_over_groups,
)
from jaxplain.typing import Array, Target

INTERPRETABLE_MODELS = ("lasso", "ridge", "linear_regression")
DISTANCE_MODES = ("cosine", "euclidean")
KERNEL_SHAP_ENDPOINT_WEIGHT = 1e6
"""Captum's stand-in for the infinite Shapley-kernel weight of the empty and full coalitions."""


def sample_scores(model, inputs: Array, target: Array, baselines: Array, mask: Array, samples: Array, batch_size):
    """Target outputs ``[N, S]`` and perturbed inputs' flat views for ``samples [N, S, M]``."""

    def evaluate(present):
        perturbed = coalition_inputs(inputs, baselines, mask, present)
        return target_scores(model, perturbed, target), perturbed.reshape(perturbed.shape[0], -1)

    scores, flats = map_over(evaluate, jnp.swapaxes(samples, 0, 1), batch_size)
    return scores.T, jnp.swapaxes(flats, 0, 1)


def exp_kernel_similarity(original: Array, perturbed: Array, *, distance_mode: str, kernel_width: float) -> Array:
    """``exp(-d^2 / (2 width^2))`` of each perturbed input's distance to the original (Captum's
    ``get_exp_kernel_similarity_function``): ``d = 1 - cos`` or the Euclidean norm, on flat inputs."""
    if distance_mode == "cosine":
        norms = jnp.maximum(jnp.linalg.norm(original) * jnp.linalg.norm(perturbed, axis=-1), 1e-8)
        distance = 1.0 - perturbed @ original / norms
    else:
        distance = jnp.linalg.norm(perturbed - original, axis=-1)
    return jnp.exp(-(distance**2) / (2 * kernel_width**2))


def _fit(interpretable_model: str, alpha: float):
    if interpretable_model == "lasso":
        return lambda X, y, w: linear.lasso(X, y, w, alpha)
    if interpretable_model == "ridge":
        return lambda X, y, w: linear.ridge(X, y, w, alpha)
    return linear.least_squares


def _lime_core(
    model, inputs, target, key, arrays, *, num_features, n_samples, interpretable_model, alpha, distance_mode,
    kernel_width, return_input_shape, batch_size
):
    mask, baselines = arrays["feature_mask"], arrays["baselines"]
    samples = arrays.get("samples")
    if samples is None:
        samples = jax.random.bernoulli(key, 0.5, (inputs.shape[0], n_samples, num_features))
    samples = samples.astype(inputs.dtype)
    scores, flats = sample_scores(model, inputs, target, baselines, mask, samples, batch_size)
    similarity = jax.vmap(
        lambda x, perturbed: exp_kernel_similarity(x, perturbed, distance_mode=distance_mode, kernel_width=kernel_width)
    )(inputs.reshape(inputs.shape[0], -1), flats)
    coef = jax.vmap(_fit(interpretable_model, alpha))(samples, scores, similarity).coef
    return spread_over_groups(coef, mask) if return_input_shape else coef


def check_samples(samples: Any, batch: int, count: int, *, method: str) -> tuple[Array, int]:
    """Binary ``[S, M]`` or ``[N, S, M]`` samples as int32 ``[N, S, M]``, and ``S``."""
    samples = jnp.asarray(samples)
    if samples.ndim == 2:
        samples = jnp.broadcast_to(samples[None], (batch,) + samples.shape)
    if samples.ndim != 3 or samples.shape[0] != batch or samples.shape[2] != count:
        raise ValueError(f"{method}: samples must have shape [n_samples, {count}] or [{batch}, n_samples, {count}], got {samples.shape}")
    if not bool(jnp.all((samples == 0) | (samples == 1))):
        raise ValueError(f"{method}: samples must be binary (0 = group at baseline, 1 = group kept)")
    return samples.astype(jnp.int32), samples.shape[1]


def lime(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    key: Array | None = None,
    baselines: Any = None,
    feature_mask: Any = None,
    n_samples: int = 25,
    interpretable_model: str = "lasso",
    alpha: float = 0.01,
    distance_mode: str = "cosine",
    kernel_width: float = 1.0,
    samples: Any = None,
    return_input_shape: bool = True,
    batch_size: int | None = None,
    perturbations_per_eval: int | None = None,
) -> Array:
    """LIME with Captum's defaults (captum/attr/_core/lime.py ``Lime``; Ribeiro et al. 2016).

    ``n_samples`` Bernoulli(0.5) vectors over the feature groups; a kept group keeps
    the input, a dropped one takes ``baselines``; each sample is weighted by
    ``exp(-d^2 / (2 kernel_width^2))`` with ``d = 1 - cos(x, x_perturbed)`` in input
    space, and a weighted Lasso (``alpha=0.01``, sklearn's objective) is fitted per
    image. Its coefficients are the attribution.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        key: PRNG key for the samples (required unless ``samples`` is given).
        baselines: the value of a dropped group (0 by default; scalar, per-channel ``[C]``
            or input-shaped).
        feature_mask: integer group ids broadcastable to ``inputs`` (every scalar by
            default); shifted to start at 0 as Captum does.
        n_samples: perturbed samples per image.
        interpretable_model: ``"lasso"`` (Captum's default), ``"ridge"`` or
            ``"linear_regression"`` (minimum-norm weighted least squares).
        alpha: the Lasso's or ridge's regularisation strength (sklearn's).
        distance_mode: ``"cosine"`` (Captum's default) or ``"euclidean"``.
        kernel_width: width of the exponential similarity kernel.
        samples: binary ``[n_samples, M]`` or ``[N, n_samples, M]`` to use instead of random ones.
        return_input_shape: spread each group's coefficient over its elements (else ``[N, M]``).
        batch_size: samples per forward pass (None: all at once); alias ``perturbations_per_eval``.
        perturbations_per_eval: Captum's name for ``batch_size`` (pass one of them).

    Returns:
        The coefficients spread over the inputs' shape, or ``[N, M]`` with
        ``return_input_shape=False``.

    Raises:
        ValueError: neither ``key`` nor ``samples``, samples of the wrong shape, an unknown
            ``interpretable_model`` or ``distance_mode``, bad mask, baselines or target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> quadrants = (jax.numpy.arange(16)[:, None] // 8) * 2 + jax.numpy.arange(16) // 8  # 4 groups, [H, W]
        >>> coefficients = jx.lime(model, x, 0, key=jax.random.PRNGKey(0), feature_mask=quadrants, n_samples=16,
        ...                        return_input_shape=False)
        >>> coefficients.shape
        (2, 4)
    """
    return _surrogate(
        "lime", model, inputs, target, key=key, baselines=baselines, feature_mask=feature_mask, n_samples=n_samples,
        samples=samples, batch_size=resolve_batch_size(batch_size, perturbations_per_eval, method="lime"),
        interpretable_model=interpretable_model, alpha=float(alpha), distance_mode=distance_mode,
        kernel_width=float(kernel_width), return_input_shape=return_input_shape,
    )


def kernel_shap_samples(key: Array, batch: int, n_samples: int, num_features: int) -> Array:
    """Captum's KernelShap samples: all-ones, all-zeros, then ``k ~ (M-1)/(k(M-k))`` ones at random places."""
    sizes = jnp.arange(1, num_features)
    log_probs = jnp.log((num_features - 1) / (sizes * (num_features - sizes)))
    size_key, order_key = jax.random.split(key)
    count = max(n_samples - 2, 0)
    chosen = jax.random.categorical(size_key, log_probs, shape=(batch, count)) + 1
    noise = jax.random.uniform(order_key, (batch, count, num_features))
    ranks = jnp.argsort(jnp.argsort(noise, axis=-1), axis=-1)
    random_rows = (ranks < chosen[..., None]).astype(jnp.int32)
    ends = jnp.stack([jnp.ones(num_features, jnp.int32), jnp.zeros(num_features, jnp.int32)])
    ends = jnp.broadcast_to(ends, (batch, 2, num_features))
    return jnp.concatenate([ends, random_rows], axis=1)[:, :n_samples]


def _kernel_shap_core(model, inputs, target, key, arrays, *, num_features, n_samples, return_input_shape, batch_size):
    mask, baselines = arrays["feature_mask"], arrays["baselines"]
    samples = arrays.get("samples")
    if samples is None:
        samples = kernel_shap_samples(key, inputs.shape[0], n_samples, num_features)
    scores, _ = sample_scores(model, inputs, target, baselines, mask, samples, batch_size)
    kept = jnp.sum(samples, axis=-1)
    weights = jnp.where((kept == 0) | (kept == num_features), KERNEL_SHAP_ENDPOINT_WEIGHT, 1.0).astype(inputs.dtype)
    coef = jax.vmap(linear.least_squares)(samples.astype(inputs.dtype), scores, weights).coef
    return spread_over_groups(coef, mask) if return_input_shape else coef


def kernel_shap(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    key: Array | None = None,
    baselines: Any = None,
    feature_mask: Any = None,
    n_samples: int = 25,
    samples: Any = None,
    return_input_shape: bool = True,
    batch_size: int | None = None,
    perturbations_per_eval: int | None = None,
) -> Array:
    """Kernel SHAP as Captum samples and fits it (captum/attr/_core/kernel_shap.py; Lundberg and Lee 2017).

    The first samples are the full and the empty coalition (weight 1e6, Captum's stand-in
    for infinity); then each sample keeps ``k`` groups, ``k`` drawn with probability
    proportional to ``(M-1)/(k(M-k))``, at random places (weight 1), which applies the
    Shapley kernel by sampling. A weighted least-squares fit (sklearn ``LinearRegression``,
    minimum norm when underdetermined) per image gives the attribution.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        key: PRNG key (required unless ``samples`` is given).
        baselines: the value of an absent group, as in :func:`lime`.
        feature_mask: integer group ids broadcastable to ``inputs``, as in :func:`lime`.
        n_samples: coalitions per image, the two ends included.
        samples: binary ``[n_samples, M]`` or ``[N, n_samples, M]`` coalitions to use instead.
        return_input_shape: spread each group's value over its elements (else ``[N, M]``).
        batch_size: coalitions per forward pass (None: all at once).
        perturbations_per_eval: Captum's name for ``batch_size`` (pass one of them).

    Returns:
        The Shapley value estimates spread over the inputs' shape, or ``[N, M]``.

    Raises:
        ValueError: as :func:`lime`.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> quadrants = (jax.numpy.arange(16)[:, None] // 8) * 2 + jax.numpy.arange(16) // 8  # 4 groups, [H, W]
        >>> values = jx.kernel_shap(model, x, 0, key=jax.random.PRNGKey(0), feature_mask=quadrants, n_samples=16,
        ...                         return_input_shape=False)
        >>> gap = model(x)[:, 0] - model(jax.numpy.zeros_like(x))[:, 0]  # the end weights pin the sum
        >>> bool(jax.numpy.allclose(values.sum(axis=1), gap, rtol=1e-3, atol=1e-3))
        True
    """
    return _surrogate(
        "kernel_shap", model, inputs, target, key=key, baselines=baselines, feature_mask=feature_mask,
        n_samples=n_samples, samples=samples,
        batch_size=resolve_batch_size(batch_size, perturbations_per_eval, method="kernel_shap"),
        return_input_shape=return_input_shape,
    )


def _surrogate(method, model, inputs, target, *, key, baselines, feature_mask, n_samples, samples, batch_size, **static):
    if method == "lime":
        check_choice("interpretable_model", static["interpretable_model"], INTERPRETABLE_MODELS, method=method)
        check_choice("distance_mode", static["distance_mode"], DISTANCE_MODES, method=method)
    model, inputs, target = prepare(model, inputs, target, method=method)
    mask, count = feature_groups(feature_mask, inputs, method=method, shift_to_zero=True)
    arrays = {"feature_mask": mask, "baselines": broadcast_baselines(baselines, inputs, method=method)}
    if samples is not None:
        arrays["samples"], n_samples = check_samples(samples, inputs.shape[0], count, method=method)
    else:
        key = require_key(key, method=method)
    if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"{method}: n_samples must be a positive int, got {n_samples!r}")
    core = _lime_core if method == "lime" else _kernel_shap_core
    return run(
        core, model, inputs, target, key=key, arrays=arrays, num_features=count, n_samples=int(n_samples),
        batch_size=batch_size, **static,
    )
