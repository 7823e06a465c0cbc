"""CaBRNet's post-processing of attribution maps, in JAX (``cabrnet/core/visualization/postprocess.py``).

In order: optionally times the input, a polarity filter, the mean over channels, a Gaussian
filter, a resize to the image size, optionally a min-max normalisation. The Gaussian filter is
SciPy's ``gaussian_filter`` (CaBRNet passes its ``gaussian_ksize`` as the *sigma*; mode
``reflect``, truncate 4) and the resize OpenCV's ``INTER_CUBIC`` (Keys' cubic with ``a = -0.75``,
half-pixel centres, replicated border, no antialiasing); both are separable linear maps, built
here as small matrices once per shape.
"""

from __future__ import annotations

from functools import lru_cache

import jax.numpy as jnp
import numpy as np

from jaxplain.typing import Array

POLARITIES = (None, "positive", "negative", "absolute")


def _reflect(index: np.ndarray, size: int) -> np.ndarray:
    """SciPy's ``reflect`` mode (``d c b a | a b c d | d c b a``), any distance from the edge."""
    index = np.mod(index, 2 * size)
    return np.where(index >= size, 2 * size - 1 - index, index)


@lru_cache(maxsize=64)
def gaussian_matrix(size: int, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """``[size, size]`` matrix of ``scipy.ndimage.gaussian_filter1d(., sigma, mode="reflect", truncate=4)``."""
    radius = int(truncate * float(sigma) + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * offsets.astype(np.float64) ** 2 / float(sigma) ** 2)
    weights /= weights.sum()
    matrix = np.zeros((size, size), np.float64)
    rows = np.arange(size)[:, None]
    np.add.at(matrix, (np.broadcast_to(rows, (size, offsets.size)), _reflect(rows + offsets, size)),
              np.broadcast_to(weights, (size, offsets.size)))
    return matrix.astype(np.float32)


@lru_cache(maxsize=64)
def cubic_matrix(size: int, out: int, a: float = -0.75) -> np.ndarray:
    """``[out, size]`` matrix of OpenCV's ``INTER_CUBIC`` along one axis (identity when ``out == size``)."""
    if out == size:
        return np.eye(size, dtype=np.float32)
    position = (np.arange(out) + 0.5) * (size / out) - 0.5
    start = np.floor(position).astype(int)
    t = position - start
    weights = np.stack([
        ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
        ((a + 2) * t - (a + 3)) * t * t + 1,
        ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
    ], axis=1)
    weights = np.concatenate([weights, 1 - weights.sum(axis=1, keepdims=True)], axis=1)
    columns = np.clip(start[:, None] + np.arange(-1, 3), 0, size - 1)
    matrix = np.zeros((out, size), np.float64)
    np.add.at(matrix, (np.broadcast_to(np.arange(out)[:, None], columns.shape), columns), weights)
    return matrix.astype(np.float32)


def polarity_filter(array: Array, polarity: str | None) -> Array:
    """``positive``: ``max(0, x)``; ``negative``: ``|min(0, x)|``; ``absolute``: ``|x|``; ``None``: ``x``."""
    if polarity == "positive":
        return jnp.maximum(array, 0)
    if polarity == "negative":
        return jnp.abs(jnp.minimum(array, 0))
    if polarity == "absolute":
        return jnp.abs(array)
    return array


def normalize_min_max(maps: Array) -> Array:
    """Each ``[H, W]`` map (last two axes) scaled to ``[0, 1]``; a constant map becomes zeros."""
    low = jnp.min(maps, axis=(-2, -1), keepdims=True)
    high = jnp.max(maps, axis=(-2, -1), keepdims=True)
    span = high - low
    return jnp.where(span > 0, (maps - low) / jnp.where(span > 0, span, 1), 0.0)


def post_process(attribution: Array, inputs: Array, *, polarity: str | None, gaussian_ksize: float | None,
                 normalize: bool, grads_x_input: bool, image_size: tuple[int, int] | None) -> Array:
    """CaBRNet's ``post_process`` on ``[N, K, H, W, C]`` attributions of ``[N, H, W, C]`` inputs: ``[N, K, H', W']``.

    ``image_size``: ``(height, width)`` of the displayed image (CaBRNet resizes to the raw image);
    ``None`` keeps the input's size (OpenCV's resize to the same size is the identity).
    """
    if grads_x_input:
        attribution = attribution * inputs[:, None]
    maps = jnp.mean(polarity_filter(attribution, polarity), axis=-1)
    height, width = maps.shape[-2:]
    rows = np.eye(height, dtype=np.float32)
    cols = np.eye(width, dtype=np.float32)
    if gaussian_ksize:
        rows, cols = gaussian_matrix(height, float(gaussian_ksize)), gaussian_matrix(width, float(gaussian_ksize))
    out_height, out_width = image_size or (height, width)
    rows = cubic_matrix(height, out_height) @ rows
    cols = cubic_matrix(width, out_width) @ cols
    maps = jnp.einsum("oh,nkhw,pw->nkop", jnp.asarray(rows), maps, jnp.asarray(cols),
                      precision="highest")
    return normalize_min_max(maps) if normalize else maps
