"""Path methods: integrated gradients, GradientSHAP, and the completeness check."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.attribution._common import (
    broadcast_baselines,
    check_batch_size,
    check_choice,
    prepare,
    require_key,
    run,
    loop_forward,
    selected_output,
    sum_over,
    target_gradient,
)
from jaxplain.typing import Array, Target

PATH_METHODS = (
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
    "riemann_trapezoid_captum",
)


@lru_cache(maxsize=None)
def path_points(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, step sizes)`` of Captum's approximation methods, ascending alphas.

    Source: captum/attr/_utils/approximation_methods.py. Gauss-Legendre maps the
    nodes of ``numpy.polynomial.legendre.leggauss(n)`` from [-1, 1] to [0, 1].
    ``riemann_trapezoid`` is the trapezoid rule (step ``1/(n-1)``, halved ends), exact
    on linear paths; Captum's ``riemann_trapezoid`` uses step ``1/n`` with halved ends,
    whose weights sum to ``1 - 1/n`` (a completeness gap of ``1/n``): it is available
    as ``riemann_trapezoid_captum`` to reproduce Captum's numbers.
    """
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return 0.5 * (nodes + 1.0), 0.5 * weights
    if n_steps < 2:
        raise ValueError(f"{method} needs n_steps > 1")
    steps = np.full(n_steps, 1.0 / n_steps)
    if method == "riemann_left":
        return np.linspace(0.0, 1.0 - 1.0 / n_steps, n_steps), steps
    if method == "riemann_right":
        return np.linspace(1.0 / n_steps, 1.0, n_steps), steps
    if method == "riemann_middle":
        return np.linspace(0.5 / n_steps, 1.0 - 0.5 / n_steps, n_steps), steps
    if method == "riemann_trapezoid":
        steps = np.full(n_steps, 1.0 / (n_steps - 1))
    steps[0] /= 2.0
    steps[-1] /= 2.0
    return np.linspace(0.0, 1.0, n_steps), steps


def _integrated_gradients_core(
    model, inputs, target, key, arrays, *, n_steps, method, batch_size, multiply_by_inputs, with_delta
):
    baselines = arrays["baselines"]
    alphas, steps = path_points(method, n_steps)
    difference = inputs - baselines
    forward = loop_forward(model, batch_size if batch_size is not None and batch_size < n_steps else None)

    def weighted_gradient(point):
        alpha, step = point
        return step * target_gradient(forward, baselines + alpha * difference, target)

    integral = sum_over(weighted_gradient, (jnp.asarray(alphas, inputs.dtype), jnp.asarray(steps, inputs.dtype)), batch_size)
    attributions = difference * integral if multiply_by_inputs else integral
    if not with_delta:
        return attributions
    return attributions, _delta(model, attributions, inputs, baselines, target)


def _delta(model, attributions, inputs, baselines, target):
    gap = selected_output(model(inputs), target) - selected_output(model(baselines), target)
    return jnp.sum(attributions.reshape(attributions.shape[0], -1), axis=1) - gap


def integrated_gradients(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    baselines: Any = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    batch_size: int | None = None,
    multiply_by_inputs: bool = True,
    return_convergence_delta: bool = False,
) -> Array | tuple[Array, Array]:
    """Integrated gradients (Sundararajan et al. 2017), as Captum computes them.

    ``(x - x') * sum_k w_k dF_t/dx (x' + a_k (x - x'))`` with Captum's quadrature
    (captum/attr/_core/integrated_gradients.py); all ``n_steps`` points are one
    vmapped pass, or ``batch_size`` points at a time.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        baselines: None (zeros), a scalar, per-channel ``[C]``, ``[1, ...]`` or ``[N, ...]``.
        n_steps: number of quadrature points.
        method: ``"gausslegendre"``, ``"riemann_left|right|middle|trapezoid"``, or
            ``"riemann_trapezoid_captum"`` (Captum's biased trapezoid weights; see
            :func:`path_points`).
        batch_size: quadrature points evaluated at once (None: all).
        multiply_by_inputs: multiply the path integral by ``x - x'`` (Captum's default).
        return_convergence_delta: also return ``sum(attr) - (F_t(x) - F_t(x'))`` per example.

    Returns:
        ``[N, H, W, C]`` attributions, and with ``return_convergence_delta`` the ``[N]`` gaps.

    Raises:
        ValueError: unknown ``method``, ``n_steps`` below 1, a bad ``batch_size``,
            baselines or target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> attributions, delta = jx.integrated_gradients(model, x, 0, n_steps=16, return_convergence_delta=True)
        >>> attributions.shape, delta.shape
        ((2, 16, 16, 3), (2,))
    """
    check_choice("method", method, PATH_METHODS, method="integrated_gradients")
    check_batch_size(batch_size, method="integrated_gradients")
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"integrated_gradients: n_steps must be a positive int, got {n_steps!r}")
    model, inputs, target = prepare(model, inputs, target, method="integrated_gradients")
    baselines = broadcast_baselines(baselines, inputs, method="integrated_gradients")
    return run(
        _integrated_gradients_core,
        model,
        inputs,
        target,
        arrays={"baselines": baselines},
        n_steps=n_steps,
        method=method,
        batch_size=batch_size,
        multiply_by_inputs=multiply_by_inputs,
        with_delta=return_convergence_delta,
    )


def _convergence_delta_core(model, inputs, target, key, arrays):
    return _delta(model, arrays["attributions"], inputs, arrays["baselines"], target)


def convergence_delta(
    model: Any, attributions: Array, inputs: Array, target: Target, *, baselines: Any = None
) -> Array:
    """Completeness gap ``sum(attr_i) - (F_t(x_i) - F_t(x'_i))`` per example.

    Captum's ``compute_convergence_delta`` (captum/attr/_utils/attribution.py).

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        attributions: ``[N, H, W, C]``, of the inputs' shape.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        baselines: the baselines the attributions were computed from (None: zeros), as in
            :func:`integrated_gradients`.

    Returns:
        ``[N]`` gaps (0 for a complete attribution).

    Raises:
        ValueError: attributions and inputs of different shapes, bad baselines or target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.convergence_delta(model, jax.numpy.zeros_like(x), x, 0).shape
        (2,)
    """
    model, inputs, target = prepare(model, inputs, target, method="convergence_delta")
    attributions = jnp.asarray(attributions)
    if attributions.shape != inputs.shape:
        raise ValueError(f"convergence_delta: attributions {attributions.shape} and inputs {inputs.shape} differ")
    baselines = broadcast_baselines(baselines, inputs, method="convergence_delta")
    return run(_convergence_delta_core, model, inputs, target, arrays={"attributions": attributions, "baselines": baselines})


def gradient_shap_draw(sample_key: Array, inputs: Array, baselines: Array, stdevs: float) -> tuple[Array, Array, Array]:
    """One GradientSHAP draw ``(x~, b, a)``: the key splits into (pick, noise, alpha) keys."""
    pick_key, noise_key, alpha_key = jax.random.split(sample_key, 3)
    chosen = baselines[jax.random.randint(pick_key, (inputs.shape[0],), 0, baselines.shape[0])]
    noisy = inputs + stdevs * jax.random.normal(noise_key, inputs.shape, inputs.dtype)
    alpha = jax.random.uniform(alpha_key, (inputs.shape[0],) + (1,) * (inputs.ndim - 1), inputs.dtype)
    return noisy, chosen, alpha


def _gradient_shap_core(model, inputs, target, key, arrays, *, n_samples, stdevs, batch_size, multiply_by_inputs):
    baselines = arrays["baselines"]
    forward = loop_forward(model, batch_size if batch_size is not None and batch_size < n_samples else None)

    def sample(sample_key):
        noisy, chosen, alpha = gradient_shap_draw(sample_key, inputs, baselines, stdevs)
        gradient = target_gradient(forward, alpha * noisy + (1.0 - alpha) * chosen, target)
        return (noisy - chosen) * gradient if multiply_by_inputs else gradient

    return sum_over(sample, jax.random.split(key, n_samples), batch_size) / n_samples


def gradient_shap(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    baselines: Any,
    key: Array,
    n_samples: int = 5,
    stdevs: float = 0.0,
    batch_size: int | None = None,
    multiply_by_inputs: bool = True,
) -> Array:
    """GradientSHAP (Lundberg & Lee 2017; Captum's ``GradientShap``).

    For each of ``n_samples`` draws: a baseline ``b`` picked uniformly from
    ``baselines`` per example, ``x~ = x + N(0, stdevs^2)``, ``a ~ U(0, 1)`` per example;
    the sample's attribution is ``(x~ - b) * dF_t/dx (a x~ + (1 - a) b)``; the result is
    their mean (captum/attr/_core/gradient_shap.py). Draw ``i`` uses
    ``jax.random.split(key, n_samples)[i]``, split again into (pick, noise, alpha) keys.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        baselines: a distribution of baselines ``[B, ...]`` (one row per reference input).
        key: PRNG key; the same key gives the same result.
        n_samples: number of draws per example.
        stdevs: std of the Gaussian noise added to the inputs.
        batch_size: draws evaluated at once (None: all).
        multiply_by_inputs: multiply each sample's gradient by ``x~ - b`` (Captum's default).

    Returns:
        ``[N, H, W, C]`` attributions.

    Raises:
        ValueError: baselines not ``[B, ...]`` of the inputs' example shape, no key, a bad
            ``batch_size`` or target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> baselines = jax.numpy.zeros((3, 16, 16, 3))
        >>> jx.gradient_shap(model, x, 0, baselines=baselines, key=jax.random.PRNGKey(0), n_samples=2).shape
        (2, 16, 16, 3)
    """
    check_batch_size(batch_size, method="gradient_shap")
    model, inputs, target = prepare(model, inputs, target, method="gradient_shap")
    key = require_key(key, method="gradient_shap")
    baselines = jnp.asarray(baselines, inputs.dtype)
    if baselines.ndim != inputs.ndim or baselines.shape[1:] != inputs.shape[1:]:
        raise ValueError(
            f"gradient_shap: baselines must be a distribution [B, {', '.join(map(str, inputs.shape[1:]))}], "
            f"got {baselines.shape}"
        )
    return run(
        _gradient_shap_core,
        model,
        inputs,
        target,
        key=key,
        arrays={"baselines": baselines},
        n_samples=n_samples,
        stdevs=float(stdevs),
        batch_size=batch_size,
        multiply_by_inputs=multiply_by_inputs,
    )
