"""Image resampling with PyTorch's exact index conventions, as separable linear maps.

Each mode is a static ``[out, in]`` matrix per spatial axis, applied with one einsum:
cheap, differentiable, vmappable, and equal to ``torch.nn.functional.interpolate``.
"""

from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

MODES = ("nearest", "bilinear")


@lru_cache(maxsize=None)
def interpolation_matrix(size_in: int, size_out: int, mode: str, align_corners: bool = False) -> np.ndarray:
    """``[size_out, size_in]`` weights of ``F.interpolate`` along one axis.

    ``nearest``: source ``floor(i * in / out)`` (torch's legacy nearest). ``bilinear``:
    source ``(i + 0.5) * in / out - 0.5`` clamped at 0, or ``i * (in - 1) / (out - 1)``
    with ``align_corners`` (aten/src/ATen/native/UpSample.h).
    """
    matrix = np.zeros((size_out, size_in), np.float32)
    scale = size_in / size_out
    for i in range(size_out):
        if mode == "nearest":
            matrix[i, min(int(np.floor(i * scale)), size_in - 1)] = 1.0
            continue
        if align_corners:
            source = i * (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
        else:
            source = max((i + 0.5) * scale - 0.5, 0.0)
        low = min(int(np.floor(source)), size_in - 1)
        high = min(low + 1, size_in - 1)
        weight = source - low
        matrix[i, low] += 1.0 - weight
        matrix[i, high] += weight
    return matrix


def interpolate(images: jax.Array, size: tuple[int, int], mode: str = "nearest", align_corners: bool = False) -> jax.Array:
    """Resize NHWC ``images`` to ``size = (H, W)`` as ``torch.nn.functional.interpolate`` does."""
    if mode not in MODES:
        raise ValueError(f"interpolate: mode {mode!r} is not one of {MODES}")
    rows = jnp.asarray(interpolation_matrix(images.shape[1], size[0], mode, align_corners), images.dtype)
    cols = jnp.asarray(interpolation_matrix(images.shape[2], size[1], mode, align_corners), images.dtype)
    return jnp.einsum("oh,nhwc,pw->nopc", rows, images, cols)
