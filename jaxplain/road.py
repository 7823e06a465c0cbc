"""ROAD: RemOve And Debias (Rong et al. 2022), as pytorch-grad-cam's ``metrics/road.py``.

The pixels a map ranks most (MoRF) or least (LeRF) relevant are replaced by a noisy linear
imputation of their neighbours, and the change of the target score is measured. Re-exported
by :mod:`jaxplain.metrics`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxplain.attribution._common import check_batch_size, check_choice, map_over, prepare, run, selected_output
from jaxplain.typing import Array, Target

ORDERS = ("morf", "lerf", "combined")
SCORES = ("logits", "softmax")
PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
"""pytorch-grad-cam's default percentiles (``ROADMostRelevantFirstAverage``)."""

NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
              ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))
"""The imputation's neighbour weights ``((dy, dx), w)``: 1/6 along the axes, 1/12 on the diagonals."""


def _neighbour_sum(images: Array) -> Array:
    """``sum_(d, w) w * images[y + dy, x + dx]`` over :data:`NEIGHBOURS`, zero outside the image; NHWC."""
    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    height, width = images.shape[1:3]
    return sum(weight * padded[:, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width] for (dy, dx), weight in NEIGHBOURS)


def _conjugate_gradient(apply, rhs: Array, diagonal: Array, *, tol: float, maxiter: int) -> Array:
    """Jacobi-preconditioned conjugate gradients, one system per image and channel of ``rhs`` (NHWC)."""

    def dot(a, b):
        return jnp.sum(a * b, axis=(1, 2), keepdims=True)

    solution = jnp.zeros_like(rhs)
    residual = rhs
    preconditioned = residual / diagonal
    rz = dot(residual, preconditioned)
    limit = tol**2 * dot(rhs, rhs)

    def unfinished(state):
        step, _, residual, _, _ = state
        return (step < maxiter) & jnp.any(dot(residual, residual) > limit)

    def iterate(state):
        step, solution, residual, direction, rz = state
        product = apply(direction)
        curvature = dot(direction, product)
        alpha = jnp.where(curvature > 0, rz / jnp.where(curvature > 0, curvature, 1.0), 0.0)
        solution = solution + alpha * direction
        residual = residual - alpha * product
        preconditioned = residual / diagonal
        rz_next = dot(residual, preconditioned)
        beta = jnp.where(rz > 0, rz_next / jnp.where(rz > 0, rz, 1.0), 0.0)
        return step + 1, solution, residual, preconditioned + beta * direction, rz_next

    state = (jnp.int32(0), solution, residual, preconditioned, rz)
    return jax.lax.while_loop(unfinished, iterate, state)[1]


def noisy_linear_imputation(
    images: Array, keep: Array, noise: Array | None = None, *, tol: float = 1e-6, maxiter: int | None = None
) -> Array:
    """Replace the pixels where ``keep`` is False by the linear imputation of their neighbours, plus ``noise``.

    Each imputed pixel equals the weighted mean of its in-image neighbours (:data:`NEIGHBOURS`),
    known or imputed: pytorch-grad-cam's ``NoisyLinearImputer`` (from Rong et al.'s
    ``imputations.py``), whose sparse system is solved here by conjugate gradients (one per
    image and channel, to a relative residual of ``tol``) instead of ``spsolve``. Every region of
    imputed pixels needs a known pixel next to it (an image with no known pixel has no solution).

    Args:
        images: ``[N, H, W, C]``.
        keep: ``[N, H, W]`` booleans, True where the pixel is kept.
        noise: ``[N, H, W, C]`` added at the imputed pixels (pytorch-grad-cam: ``0.01 * randn``), or None.
        tol: relative residual at which the solver stops.
        maxiter: iteration cap, by default ``4 * H * W``.

    Returns:
        ``[N, H, W, C]`` images with the imputed pixels replaced.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.ones((1, 8, 8, 3))
        >>> keep = jnp.arange(64).reshape(1, 8, 8) % 3 > 0
        >>> filled = noisy_linear_imputation(x, keep, jnp.zeros_like(x))
        >>> bool(jnp.allclose(filled, 1.0, atol=1e-4))  # a constant image is filled with its constant
        True
    """
    missing = ~keep[..., None]
    diagonal = jnp.where(missing, _neighbour_sum(jnp.ones_like(images[..., :1])), 1.0)
    rhs = jnp.where(missing, _neighbour_sum(jnp.where(missing, 0.0, images)), 0.0)

    def apply(field):
        return jnp.where(missing, diagonal * field - _neighbour_sum(jnp.where(missing, field, 0.0)), field)

    maxiter = 4 * images.shape[1] * images.shape[2] if maxiter is None else maxiter
    filled = _conjugate_gradient(apply, rhs, diagonal, tol=tol, maxiter=maxiter)
    if noise is not None:
        filled = filled + noise
    return jnp.where(missing, filled, images)


def _percentile(values: Array, q: float) -> Array:
    """``np.percentile(values, q)`` per row of ``[N, P]`` (linear, with NumPy's two-sided interpolation)."""
    ordered = jnp.sort(values, axis=-1)
    position = q / 100 * (values.shape[-1] - 1)
    below = int(position)
    above = min(below + 1, values.shape[-1] - 1)
    fraction = position - below
    low, high = ordered[:, below], ordered[:, above]
    return low + (high - low) * fraction if fraction < 0.5 else high - (high - low) * (1 - fraction)


def _road_core(model, inputs, target, key, arrays, *, percentiles, orders, scores, batch_size, tol):
    cams, noise = arrays["cams"], arrays["noise"]
    count = inputs.shape[0]
    flat = cams.reshape(count, -1)

    def select(outputs):
        return selected_output(jax.nn.softmax(outputs, axis=-1) if scores == "softmax" else outputs, target)

    # Every (order, percentile) is one element of a vmapped axis: one imputation, one forward pass.
    keeps = []
    for order in orders:
        ranked = flat if order == "morf" else 1 - flat
        keeps += [(ranked < _percentile(ranked, q)[:, None]).reshape(cams.shape) for q in percentiles]
    noise = noise.reshape((-1,) + inputs.shape)
    imputed = jax.vmap(lambda keep, z: noisy_linear_imputation(inputs, keep, z, tol=tol))(jnp.stack(keeps), noise)
    changed = map_over(lambda images: select(model(images)), jnp.concatenate([inputs[None], imputed]), batch_size)
    means = jnp.mean((changed[1:] - changed[0]).reshape(len(orders), len(percentiles), count), axis=1)
    return means[0] if len(orders) == 1 else (means[1] - means[0]) / 2


def road(
    model: Any,
    inputs: Array,
    cams: Array,
    target: Target,
    *,
    order: str = "morf",
    percentiles: tuple[float, ...] = PERCENTILES,
    key: Array | None = None,
    noise_std: float = 0.01,
    noise: Array | None = None,
    scores: str = "logits",
    batch_size: int | None = None,
    tol: float = 1e-6,
) -> Array:
    """ROAD (Rong et al. 2022): the target score's change when pixels are removed and imputed.

    For each percentile ``q`` the pixels whose map value is at least the ``q``-th percentile of
    the image's map (MoRF), or whose ``1 - map`` is (LeRF), are replaced by
    :func:`noisy_linear_imputation` with ``noise_std * z`` noise; the result is the mean over the
    percentiles of ``score(imputed) - score(x)``. ``order="combined"`` gives
    ``(LeRF - MoRF) / 2`` (pytorch-grad-cam's ``ROADMostRelevantFirstAverage``,
    ``ROADLeastRelevantFirstAverage`` and ``ROADCombined``; one percentile is its
    ``ROADMostRelevantFirst(q)``). Maps are expected in [0, 1], as a CAM's final map.

    Args:
        model: a ``jx.Model`` or any JAX function ``[N, H, W, C] -> [N, K]``.
        inputs: ``[N, H, W, C]`` normalised images.
        cams: ``[N, H, W]`` or ``[N, H, W, 1]`` maps.
        target: an int, an int array ``[N]``, or ``None`` for the predicted classes.
        order: ``"morf"``, ``"lerf"`` or ``"combined"``.
        percentiles: the percentiles ``q`` (0 to 100).
        key: draws ``z = jax.random.normal(key, (R, P, N, H, W, C))``, ``R`` = 1, or 2 for
            ``"combined"`` (MoRF first), ``P`` = len(percentiles); needed unless ``noise_std`` is 0
            or ``noise`` is given.
        noise_std: the noise's standard deviation (pytorch-grad-cam: 0.01).
        noise: your own standard normal draws ``z`` of that shape (only imputed pixels use them).
        scores: ``"logits"`` (pytorch-grad-cam's ``ClassifierOutputTarget``) or ``"softmax"``.
        batch_size: imputed batches of ``N`` images per forward pass (``None``: all ``R * P``).
        tol: relative residual of the imputation's solver.

    Returns:
        ``[N]`` score changes (negative: the score dropped).

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> cams = jx.grad_cam_plus_plus(model, x, 0, layer="features.6", postprocess="pytorch_grad_cam")
        >>> jx.metrics.road(model, x, cams, 0, order="combined", key=jax.random.PRNGKey(0)).shape
        (2,)
    """
    check_choice("order", order, ORDERS, method="road")
    check_choice("scores", scores, SCORES, method="road")
    check_batch_size(batch_size, method="road")
    model, inputs, target = prepare(model, inputs, target, method="road")
    cams = jnp.asarray(cams, inputs.dtype)
    if cams.ndim == 4 and cams.shape[-1] == 1:
        cams = cams[..., 0]
    if cams.shape != inputs.shape[:3]:
        raise ValueError(
            f"road: cams must be [N, H, W] or [N, H, W, 1] matching the inputs' {list(inputs.shape[:3])}, got {cams.shape}"
        )
    percentiles = tuple(float(q) for q in percentiles)
    if not percentiles or not all(0 <= q <= 100 for q in percentiles):
        raise ValueError(f"road: percentiles must be a non-empty sequence of numbers in [0, 100], got {percentiles}")
    orders = ("morf", "lerf") if order == "combined" else (order,)
    shape = (len(orders), len(percentiles)) + inputs.shape
    if noise is not None:
        noise = jnp.asarray(noise, inputs.dtype)
        if noise.shape != shape:
            raise ValueError(
                f"road: noise must have shape {shape} (orders, percentiles, N, H, W, C), got {noise.shape}"
            )
    elif noise_std == 0:
        noise = jnp.zeros(shape, inputs.dtype)
    elif key is None:
        raise ValueError("road is stochastic (noise_std > 0): pass key=jax.random.PRNGKey(...) or noise=...")
    else:
        noise = jax.random.normal(key, shape, inputs.dtype)
    return run(
        _road_core,
        model,
        inputs,
        target,
        arrays={"cams": cams, "noise": noise_std * noise},
        percentiles=percentiles,
        orders=orders,
        scores=scores,
        batch_size=batch_size,
        tol=float(tol),
    )
